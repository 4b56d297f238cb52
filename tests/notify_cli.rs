//! Notifications end to end (issue 14, part 2): the real daemon, a config
//! with `[notify.NAME]` webhook targets, and a webhook receiver this test
//! starts on 127.0.0.1 that records every request it is sent.

mod support;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::*;

const LONG: Duration = Duration::from_secs(30);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A webhook receiver: answers the statuses queued (then 200), records
/// every request.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(statuses: &[u16]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let queue = Arc::new(Mutex::new(statuses.iter().copied().collect::<VecDeque<u16>>()));
        let sink = got.clone();
        thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut headers = Vec::new();
                let mut length = 0;
                let mut line = String::new();
                let _ = reader.read_line(&mut line); // the request line
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                        if k == "content-length" {
                            length = v.parse().unwrap_or(0);
                        }
                        headers.push((k, v));
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let status = queue.lock().expect("queue").pop_front().unwrap_or(200);
                sink.lock().expect("got").push(Received { headers, body: String::from_utf8_lossy(&body).into() });
                let _ = write!(stream, "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Receiver { addr, got }
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().expect("got").clone()
    }

    fn events(&self) -> Vec<String> {
        self.got().iter().map(|r| r.json()["event"].as_str().unwrap_or("?").to_string()).collect()
    }
}

/// A config folder with `config.toml` holding `text`.
fn config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("config dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path.display().to_string())
}

/// A job that fails its first `fails` runs and succeeds after (a counter
/// file beside it), telling `ops`.
fn flaky_job(counter: &std::path::Path, fails: u32, extra: &str) -> String {
    format!(
        "notify = [\"ops\"]\n{extra}\n[[step]]\nname = \"try\"\nshell = \"n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -gt {fails} ]\"\n",
        c = counter.display()
    )
}

/// Triggers `job` and waits until it has finished `n` runs in all.
fn trigger_and_wait(d: &Daemon, job: &str, n: usize) -> i64 {
    let (code, body) = http(d.api(), "POST", &format!("/jobs/{job}/trigger"), &[], "");
    assert_eq!(code, 201, "{body}");
    let run: Value = serde_json::from_str(&body).expect("json");
    assert!(d.wait_for_n(LONG, n, |l| is(l, job, "run finished")), "run {n} of {job} never finished: {}", d.dump());
    run["run_id"].as_i64().expect("run id")
}

fn delivered(d: &Daemon, n: usize) {
    assert!(d.wait_for_n(LONG, n, |l| l["message"] == "notification delivered"), "{}", d.dump());
}

#[test]
fn a_job_failing_3_times_then_succeeding_sends_exactly_one_failure_and_one_recovery() {
    let hook = Receiver::start(&[]);
    let (_c, path) = config(&format!("[notify.ops]\nwebhook = \"http://{}/hook\"\n", hook.addr));
    let d = Daemon::start(&[], &["--config", &path], &[]);
    let counter = d.state.path().join("count");
    d.drop_file("flaky.toml", &flaky_job(&counter, 3, ""));
    assert!(d.wait_for(LONG, |l| finished(l, "flaky.toml", "failed")), "{}", d.dump());
    for n in 2..=5 {
        trigger_and_wait(&d, "flaky.toml", n);
    }
    delivered(&d, 2);
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    let lines: Vec<_> = lines.iter().filter(|l| l["message"] == "notification delivered").collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(hook.events(), ["failure", "recovery"], "{:?}", hook.got());
    let failure = hook.got()[0].json();
    assert_eq!(failure["job"], "flaky.toml");
    assert_eq!(failure["status"], "failed");
    assert_eq!(failure["failures"], 1);
    let run_id = failure["run_id"].as_i64().expect("run id");
    assert_eq!(failure["run_url"], format!("/runs/{run_id}"), "the payload links to the run");
}

#[test]
fn with_notify_after_2_the_failure_comes_at_the_second_consecutive_failure() {
    let hook = Receiver::start(&[]);
    let (_c, path) = config(&format!("[notify.ops]\nwebhook = \"http://{}/hook\"\n", hook.addr));
    let d = Daemon::start(&[], &["--config", &path], &[]);
    let counter = d.state.path().join("count");
    d.drop_file("flaky.toml", &flaky_job(&counter, 3, "notify_after = 2"));
    assert!(d.wait_for(LONG, |l| finished(l, "flaky.toml", "failed")), "{}", d.dump());
    let second = trigger_and_wait(&d, "flaky.toml", 2);
    delivered(&d, 1);
    for n in 3..=4 {
        trigger_and_wait(&d, "flaky.toml", n);
    }
    delivered(&d, 2);
    d.stop();
    assert_eq!(hook.events(), ["failure", "recovery"], "{:?}", hook.got());
    let failure = hook.got()[0].json();
    assert_eq!((failure["run_id"].as_i64(), failure["failures"].as_u64()), (Some(second), Some(2)));
}

#[test]
fn a_target_answering_500_twice_then_200_gets_it_on_the_third_attempt_all_recorded() {
    let hook = Receiver::start(&[500, 500]);
    let (_c, path) = config(&format!(
        "[notify.ops]\nwebhook = \"http://{}/hook\"\nretry_delay = \"50ms\"\nsigning_secret = \"k\"\n",
        hook.addr
    ));
    let d = Daemon::start(&[], &["--config", &path], &[]);
    let counter = d.state.path().join("count");
    d.drop_file("flaky.toml", &flaky_job(&counter, 1, ""));
    assert!(d.wait_for(LONG, |l| finished(l, "flaky.toml", "failed")), "{}", d.dump());
    delivered(&d, 1);
    assert_eq!(hook.events(), ["failure", "failure", "failure"], "one notification, three attempts");
    assert!(hook.got()[2].headers.iter().any(|(k, v)| k == "x-gatherd-signature" && v.starts_with("sha256=")));
    let (code, body) = http(d.api(), "GET", "/notifications", &[], "");
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).expect("json");
    let n = &list["notifications"][0];
    assert_eq!((n["target"].as_str(), n["event"].as_str()), (Some("ops"), Some("failure")), "{list}");
    assert_eq!((n["status"].as_str(), n["attempts"].as_u64()), (Some("delivered"), Some(3)), "{list}");
    assert!(n["error"].as_str().is_some_and(|e| e.contains("500")), "the last failed attempt's error: {list}");
    let run_id = n["run_id"].as_i64().expect("a run");
    let (_, run) = http(d.api(), "GET", &format!("/runs/{run_id}"), &[], "");
    let run: Value = serde_json::from_str(&run).expect("json");
    assert_eq!(run["notifications"][0]["status"], "delivered", "{run}");
    let (_, metrics) = http(d.api(), "GET", "/metrics", &[], "");
    assert!(metrics.contains("gatherd_notifications_total{target=\"ops\",status=\"delivered\"} 1"), "{metrics}");
}

#[test]
fn a_daemon_restarted_mid_streak_does_not_send_the_failure_again() {
    let hook = Receiver::start(&[]);
    let (_c, path) = config(&format!("[notify.ops]\nwebhook = \"http://{}/hook\"\n", hook.addr));
    let d = Daemon::start(&[], &["--config", &path], &[]);
    let counter = d.state.path().join("count");
    d.drop_file("flaky.toml", &flaky_job(&counter, 2, ""));
    assert!(d.wait_for(LONG, |l| finished(l, "flaky.toml", "failed")), "{}", d.dump());
    delivered(&d, 1);
    let (jobs, state) = d.end_with(Signal::SIGTERM);
    let d = Daemon::start_with(jobs, state, &["--config", &path], &[]);
    trigger_and_wait(&d, "flaky.toml", 1); // the second failure
    trigger_and_wait(&d, "flaky.toml", 2); // the success
    delivered(&d, 1);
    d.stop();
    assert_eq!(hook.events(), ["failure", "recovery"], "{:?}", hook.got());
}

#[test]
fn a_dead_man_job_whose_last_success_is_older_than_its_window_at_start_is_stale_once_until_it_succeeds() {
    let hook = Receiver::start(&[]);
    let (_c, path) = config(&format!("[notify.ops]\nwebhook = \"http://{}/hook\"\n", hook.addr));
    let window = Duration::from_secs(5);
    let job = "expect_success_within = \"5s\"\nnotify = [\"ops\"]\n[[step]]\nname = \"ok\"\nsleep = \"1ms\"\n";
    let d = Daemon::start(&[("dm.toml", job)], &["--config", &path], &[]);
    assert!(d.wait_for(LONG, |l| finished(l, "dm.toml", "succeeded")), "{}", d.dump());
    let succeeded = std::time::Instant::now();
    let (jobs, state) = d.end_with(Signal::SIGTERM);
    assert!(succeeded.elapsed() < window, "too slow a box to stop the daemon within the window");
    assert!(hook.got().is_empty(), "nothing is stale yet: {:?}", hook.got());
    // The window passes while no daemon runs.
    thread::sleep(window.saturating_sub(succeeded.elapsed()) + Duration::from_millis(200));
    let d = Daemon::start_with(jobs, state, &["--config", &path], &[]);
    let (_, metrics) = http(d.api(), "GET", "/metrics", &[], "");
    assert!(
        metrics.contains("gatherd_last_success_timestamp_seconds{job=\"dm.toml\"}"),
        "the last success is read from the history at start: {metrics}"
    );
    delivered(&d, 1);
    d.barrier();
    let (jobs, state) = d.end_with(Signal::SIGTERM);
    assert_eq!(hook.events(), ["stale"], "{:?}", hook.got());
    assert_eq!(hook.got()[0].json()["job"], "dm.toml");
    // Told once: a restart with still no success sends nothing more...
    let d = Daemon::start_with(jobs, state, &["--config", &path], &[]);
    d.barrier();
    assert_eq!(hook.events(), ["stale"], "{:?}", hook.got());
    // ...and the next success clears it.
    trigger_and_wait(&d, "dm.toml", 1);
    delivered(&d, 1);
    d.stop();
    assert_eq!(hook.events(), ["stale", "recovery"], "{:?}", hook.got());
}

#[test]
fn a_command_target_gets_the_event_as_json_on_stdin_and_as_variables() {
    let out = tempfile::tempdir().expect("out dir");
    let file = out.path().join("event");
    let script = format!("cat > {0}.json && echo \"$GATHERD_EVENT $GATHERD_JOB\" > {0}", file.display());
    let (_c, path) = config(&format!("[notify.script]\ncommand = [\"sh\", \"-c\", {}]\n", toml_string(&script)));
    let d = Daemon::start(&[], &["--config", &path], &[]);
    let job = "notify = [\"script\"]\n[[step]]\nname = \"no\"\nshell = \"exit 1\"\n";
    d.drop_file("fails.toml", job);
    assert!(d.wait_for(LONG, |l| finished(l, "fails.toml", "failed")), "{}", d.dump());
    delivered(&d, 1);
    d.stop();
    assert_eq!(std::fs::read_to_string(&file).expect("variables"), "failure fails.toml\n");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(file.with_extension("json")).expect("stdin"))
        .expect("JSON on stdin");
    assert_eq!((json["event"].as_str(), json["status"].as_str()), (Some("failure"), Some("failed")));
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string")
}

#[test]
fn notify_test_sends_a_test_notification_straight_from_the_config_and_says_why_when_it_fails() {
    let hook = Receiver::start(&[]);
    let broken = Receiver::start(&[503]);
    let (_c, path) = config(&format!(
        "[notify.ops]\nwebhook = \"http://{}/hook\"\n[notify.down]\nwebhook = \"http://{}/hook\"\n",
        hook.addr, broken.addr
    ));
    let out = gatherd().args(["notify", "test", "ops", "--config", &path]).output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "delivered a test notification to ops\n");
    assert_eq!(hook.events(), ["test"]);
    assert_eq!(hook.got()[0].json()["target"], "ops");
    let out = gatherd().args(["notify", "test", "down", "--config", &path]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the test notification to `down` was not delivered") && stderr.contains("503"), "{stderr}");
    let out = gatherd().args(["notify", "test", "nope", "--config", &path]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no target `[notify.nope]` in the config (targets: down, ops)"), "{stderr}");
}

/// Notifications of one job to one target are delivered in order: a
/// `recovery` waits for the `failure` it ends, even while that one is
/// being retried (an endpoint down at the failure, back by the recovery).
#[test]
fn a_recovery_never_overtakes_the_failure_being_retried() {
    let hook = Receiver::start(&[500]);
    let (_c, path) = config(&format!("[notify.ops]\nwebhook = \"http://{}/hook\"\nretry_delay = \"2s\"\n", hook.addr));
    let d = Daemon::start(&[], &["--config", &path], &[]);
    let counter = d.state.path().join("count");
    d.drop_file("flaky.toml", &flaky_job(&counter, 1, ""));
    assert!(d.wait_for(LONG, |l| finished(l, "flaky.toml", "failed")), "{}", d.dump());
    assert!(eventually(LONG, || !hook.got().is_empty()), "the failure's first attempt");
    // The second run succeeds while the failure waits for its retry. (Its
    // trigger may find the first run's task still pruning: ask again.)
    let mut answer = (0, String::new());
    assert!(
        eventually(LONG, || {
            answer = http(d.api(), "POST", "/jobs/flaky.toml/trigger", &[], "");
            answer.0 != 409
        }),
        "{}",
        answer.1
    );
    assert_eq!(answer.0, 201, "{}", answer.1);
    assert!(d.wait_for(LONG, |l| finished(l, "flaky.toml", "succeeded")), "{}", d.dump());
    delivered(&d, 2);
    assert_eq!(hook.events(), ["failure", "failure", "recovery"], "in order, the failure retried first");
}

/// What a target answers is recorded, logged and served masked: a command
/// that echoes a secret on stderr leaves `********` in `/notifications`
/// and the log, never the value.
#[test]
fn a_targets_answer_quoting_a_secret_is_masked_where_it_is_kept() {
    const VALUE: &str = "tok-9f8e7d6c5b4a";
    let (_c, path) = config(&format!(
        "[secrets]\ntok = {{ env = \"NOTIFY_TEST_TOK\" }}\n[notify.ops]\ncommand = [\"sh\", \"-c\", \"echo token {VALUE} >&2; exit 1\"]\nretry_delay = \"50ms\"\nretry_for = \"120ms\"\n"
    ));
    let d = Daemon::start(&[], &["--config", &path], &[("NOTIFY_TEST_TOK", VALUE)]);
    let counter = d.state.path().join("count");
    d.drop_file("flaky.toml", &flaky_job(&counter, 1, ""));
    assert!(d.wait_for(LONG, |l| l["message"] == "notification not delivered; given up"), "{}", d.dump());
    let (code, body) = http(d.api(), "GET", "/notifications", &[], "");
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains(VALUE) && body.contains("token ********"), "{body}");
    assert!(!d.dump().contains(VALUE), "the log holds the secret: {}", d.dump());
}

/// `gatherd check --config FILE JOBS` refuses a job naming a target the
/// config lacks, at the name, with a did-you-mean: a typo found when the
/// job is checked, not when the alert it should have sent is lost.
#[test]
fn check_with_a_config_rejects_a_job_naming_an_unknown_target_at_its_place() {
    let (dir, path) = config("[notify.ops]\nwebhook = \"http://127.0.0.1:9/hook\"\n");
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).expect("mkdir");
    std::fs::write(jobs.join("ok.toml"), "notify = [\"ops\"]\n[[step]]\nname = \"s\"\nshell = \"true\"\n").expect("w");
    std::fs::write(jobs.join("bad.toml"), "notify = [\"opss\"]\n[[step]]\nname = \"s\"\nshell = \"true\"\n")
        .expect("w");
    let out = gatherd().arg("check").arg("--config").arg(&path).arg(&jobs).output().expect("check");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("ok.toml") && stdout.contains("invalid ") && stdout.contains("bad.toml"), "{stdout}");
    assert!(stderr.contains("unknown notification target `opss`") && stderr.contains("bad.toml:1:12"), "{stderr}");
    assert!(stderr.contains("did you mean `ops`?"), "{stderr}");
}

/// `invalid` is told once per mistake: a restart, which reads every job
/// file anew, does not page again for a file still invalid the same way.
#[test]
fn an_invalid_file_is_told_once_not_again_at_every_restart() {
    let hook = Receiver::start(&[]);
    let (_c, path) = config(&format!(
        "default_notify = [\"ops\"]\ndefault_notify_on = [\"invalid\", \"failure\"]\n[notify.ops]\nwebhook = \"http://{}/hook\"\n",
        hook.addr
    ));
    let d = Daemon::start(&[("bad.toml", "[[step]]\nname = \"s\"\nshel = \"true\"\n")], &["--config", &path], &[]);
    delivered(&d, 1);
    let (jobs, state) = d.end_with(Signal::SIGTERM);
    let d = Daemon::start_with(jobs, state, &["--config", &path], &[]);
    assert!(d.wait_for(LONG, |l| l["message"] == "invalid job file"), "{}", d.dump());
    // A later notification, handled after the scan's: once it is delivered,
    // the invalid file's second reading has been dealt with.
    d.drop_file("other.toml", "[[step]]\nname = \"s\"\nshell = \"exit 1\"\n");
    delivered(&d, 1);
    let mut events = hook.events();
    events.sort();
    assert_eq!(events, ["failure", "invalid"], "the restart told `invalid` again");
}
