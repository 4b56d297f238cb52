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

/// One message the SMTP sink accepted.
#[derive(Debug, Clone)]
struct Mail {
    /// `MAIL FROM:<...>`'s address.
    from: String,
    /// Each `RCPT TO:<...>`'s address.
    to: Vec<String>,
    /// The `AUTH PLAIN` credentials (user, password), when the client sent them.
    auth: Option<(String, String)>,
    /// The message as sent after `DATA` (dots unstuffed), `\r\n` line ends.
    data: String,
}

impl Mail {
    /// A header's value (unfolded), by name, from the message's header block.
    fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.split("\r\n").find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// The body: what follows the header block.
    fn body(&self) -> String {
        self.data.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
    }
}

/// An SMTP server on 127.0.0.1 (a thread, one connection at a time) that
/// speaks the plain-text subset a relay needs — 220, EHLO (with AUTH PLAIN),
/// AUTH, MAIL FROM, RCPT TO, DATA (354, up to `.`), RSET, QUIT — and keeps
/// every message it accepted. The first `temporary` MAIL FROMs are answered
/// `451` (try again later), as a busy relay does.
struct SmtpSink {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    fn start(temporary: u32) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        thread::spawn(move || {
            let mut temporary = temporary;
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(LONG));
                let mut out = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                let mut read = |line: &mut String| {
                    line.clear();
                    reader.read_line(line).unwrap_or(0) > 0
                };
                let _ = out.write_all(b"220 sink.test ESMTP ready\r\n");
                let (mut from, mut to, mut auth) = (String::new(), Vec::new(), None);
                while read(&mut line) {
                    let command = line.trim_end().to_string();
                    let upper = command.to_ascii_uppercase();
                    let reply: String = if upper.starts_with("EHLO") {
                        "250-sink.test greets you\r\n250-8BITMIME\r\n250 AUTH PLAIN\r\n".into()
                    } else if upper.starts_with("HELO") {
                        "250 sink.test\r\n".into()
                    } else if let Some(plain) = upper.strip_prefix("AUTH PLAIN ").map(|_| &command[11..]) {
                        auth = decode_plain(plain);
                        "235 2.7.0 accepted\r\n".into()
                    } else if upper.starts_with("MAIL FROM:") {
                        if temporary > 0 {
                            temporary -= 1;
                            "451 4.3.0 busy, try again later\r\n".into()
                        } else {
                            from = address(&command);
                            to.clear();
                            "250 2.1.0 ok\r\n".into()
                        }
                    } else if upper.starts_with("RCPT TO:") {
                        to.push(address(&command));
                        "250 2.1.5 ok\r\n".into()
                    } else if upper == "DATA" {
                        let _ = out.write_all(b"354 end with <CRLF>.<CRLF>\r\n");
                        let mut data = String::new();
                        while read(&mut line) && line != ".\r\n" {
                            data.push_str(line.strip_prefix('.').unwrap_or(&line));
                        }
                        let mail = Mail { from: from.clone(), to: to.clone(), auth: auth.clone(), data };
                        sink.lock().expect("got").push(mail);
                        "250 2.0.0 queued\r\n".into()
                    } else if upper == "RSET" || upper == "NOOP" {
                        "250 2.0.0 ok\r\n".into()
                    } else if upper == "QUIT" {
                        let _ = out.write_all(b"221 2.0.0 bye\r\n");
                        break;
                    } else {
                        "502 5.5.1 not implemented\r\n".into()
                    };
                    let _ = out.write_all(reply.as_bytes());
                }
            }
        });
        SmtpSink { addr, got }
    }

    fn got(&self) -> Vec<Mail> {
        self.got.lock().expect("got").clone()
    }
}

/// The address in `MAIL FROM:<a@b>` or `RCPT TO:<a@b> ...`.
fn address(command: &str) -> String {
    let start = command.find('<').map_or(0, |i| i + 1);
    let end = command[start..].find('>').map_or(command.len(), |i| start + i);
    command[start..end].to_string()
}

/// `AUTH PLAIN`'s base64 of `\0user\0password`.
fn decode_plain(b64: &str) -> Option<(String, String)> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut bytes = Vec::new();
    for c in b64.trim().bytes().take_while(|c| *c != b'=') {
        bits = (bits << 6) | alphabet.iter().position(|a| *a == c)? as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            bytes.push((bits >> n) as u8);
        }
    }
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split('\0').skip(1);
    Some((parts.next()?.to_string(), parts.next()?.to_string()))
}

/// A config with `[notify.mail]` sending to `sink` in the clear (a relay on
/// this machine), logging in as `gatherd` with the secret `smtp` (from
/// `$SMTP_PASSWORD`).
fn mail_config(sink: &SmtpSink) -> (tempfile::TempDir, String) {
    config(&format!(
        "[secrets]\nsmtp = {{ env = \"SMTP_PASSWORD\" }}\n\n[notify.mail]\nretry_delay = \"50ms\"\n\
         email = {{ host = \"127.0.0.1\", port = {}, tls = \"none\", from = \"gatherd@example.org\", \
         to = [\"ops@example.org\", \"oncall@example.org\"], username = \"gatherd\", password_secret = \"smtp\" }}\n",
        sink.addr.port()
    ))
}

const SMTP_PASSWORD: &str = "smtp-hunter2";

#[test]
fn a_failing_job_with_an_email_target_sends_one_mail_with_the_subject_the_link_and_the_error() {
    let sink = SmtpSink::start(0);
    let (_c, path) = mail_config(&sink);
    let d = Daemon::start(&[], &["--config", &path], &[("SMTP_PASSWORD", SMTP_PASSWORD)]);
    // The error carries the secret (stderr), which the mail must show masked.
    let job = "notify = [\"mail\"]\n[[step]]\nname = \"dump\"\nshell = \"echo disk full at {{ secrets.smtp }} >&2; exit 3\"\n";
    d.drop_file("backup.toml", job);
    assert!(d.wait_for(LONG, |l| finished(l, "backup.toml", "failed")), "{}", d.dump());
    delivered(&d, 1);
    let (_, notifications) = http(d.api(), "GET", "/notifications", &[], "");
    let notifications: Value = serde_json::from_str(&notifications).expect("json");
    let run_id = notifications["notifications"][0]["run_id"].as_i64().expect("a run");
    let (_, run) = http(d.api(), "GET", &format!("/runs/{run_id}"), &[], "");
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    let got = sink.got();
    assert_eq!(got.len(), 1, "exactly one message: {got:?}");
    let mail = &got[0];
    assert_eq!(mail.from, "gatherd@example.org");
    assert_eq!(mail.to, ["ops@example.org", "oncall@example.org"]);
    assert_eq!(mail.auth, Some(("gatherd".to_string(), SMTP_PASSWORD.to_string())), "logged in with the secret");
    assert_eq!(mail.header("From").as_deref(), Some("gatherd@example.org"));
    assert_eq!(mail.header("To").as_deref(), Some("ops@example.org, oncall@example.org"));
    assert_eq!(mail.header("Subject"), Some(format!("[gatherd] backup.toml failed (run {run_id})")), "{mail:?}");
    let body = mail.body();
    let run: Value = serde_json::from_str(&run).expect("json");
    let error = run["error"].as_str().unwrap_or_else(|| panic!("the run's error: {run}"));
    assert!(body.contains(error), "the run's error {error:?} in the body:\n{body}");
    assert!(body.contains(&format!("/runs/{run_id}")), "the link to the run in the body:\n{body}");
    assert!(body.contains("backup.toml failed"), "the message in the body:\n{body}");
    assert!(body.contains("disk full at ********"), "the stderr in the error, masked:\n{body}");
    assert!(!mail.data.contains(SMTP_PASSWORD), "the secret is nowhere in the mail:\n{}", mail.data);
    assert!(!lines.iter().any(|l| l.to_string().contains(SMTP_PASSWORD)), "the password is in no log line");
}

#[test]
fn an_smtp_relay_answering_451_first_gets_the_mail_on_the_second_attempt_both_recorded() {
    let sink = SmtpSink::start(1);
    let (_c, path) = mail_config(&sink);
    let d = Daemon::start(&[], &["--config", &path], &[("SMTP_PASSWORD", SMTP_PASSWORD)]);
    let job = "notify = [\"mail\"]\n[[step]]\nname = \"no\"\nshell = \"exit 1\"\n";
    d.drop_file("fails.toml", job);
    assert!(d.wait_for(LONG, |l| finished(l, "fails.toml", "failed")), "{}", d.dump());
    delivered(&d, 1);
    let (_, body) = http(d.api(), "GET", "/notifications", &[], "");
    d.stop();
    assert_eq!(sink.got().len(), 1, "{:?}", sink.got());
    let list: Value = serde_json::from_str(&body).expect("json");
    let n = &list["notifications"][0];
    assert_eq!((n["target"].as_str(), n["event"].as_str()), (Some("mail"), Some("failure")), "{list}");
    assert_eq!((n["status"].as_str(), n["attempts"].as_u64()), (Some("delivered"), Some(2)), "{list}");
    assert!(n["error"].as_str().is_some_and(|e| e.contains("451")), "the first attempt's error: {list}");
}

#[test]
fn notify_test_sends_a_test_mail_through_the_relay() {
    let sink = SmtpSink::start(0);
    let (_c, path) = mail_config(&sink);
    let out = gatherd()
        .args(["notify", "test", "mail", "--config", &path])
        .env("SMTP_PASSWORD", SMTP_PASSWORD)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "delivered a test notification to mail\n");
    let got = sink.got();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].header("Subject").as_deref(), Some("[gatherd] test notification to mail"));
    assert!(got[0].body().contains("this target works"), "{}", got[0].body());
}

#[test]
fn a_starttls_target_never_falls_back_to_plain_text_with_a_relay_that_does_not_offer_it() {
    let sink = SmtpSink::start(0);
    let (_c, path) = config(&format!(
        "[notify.mail]\nemail = {{ host = \"127.0.0.1\", port = {}, from = \"gatherd@example.org\", to = [\"ops@example.org\"] }}\n",
        sink.addr.port()
    ));
    let out = gatherd().args(["notify", "test", "mail", "--config", &path]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the test notification to `mail` was not delivered") && stderr.contains(&sink.addr.to_string()),
        "{stderr}"
    );
    assert!(sink.got().is_empty(), "nothing sent in the clear: {:?}", sink.got());
}
