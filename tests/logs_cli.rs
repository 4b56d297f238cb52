//! `gatherd logs RUN [--step NAME] [--follow] [--json]` and `gatherd trigger
//! --wait [--follow]` against the real daemon (issue 13): every line a run
//! printed as `TIME STEP STREAM TEXT`, the backlog then live lines exactly
//! once, one last line saying how the run ended, the exit status following
//! the run; from the database when no daemon answers.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::*;

const LONG: Duration = Duration::from_secs(30);

/// A Rhai job (run only when triggered) that prints two lines, waits until
/// the file `go` exists, then prints two more.
fn waiting_job(go: &Path) -> String {
    format!(
        r#"
const schedule = "0 0 3 1 1 *";
print("early 1");
print("early 2");
await_step(exec(["sh", "-c", "while [ ! -e {go} ]; do sleep 0.05; done"]).named("wait"));
print("late 1");
print("late 2");
"#,
        go = go.display()
    )
}

/// Triggers `job` and returns its run id.
fn trigger(d: &Daemon, job: &str) -> i64 {
    let (status, body) = http(d.api(), "POST", &format!("/jobs/{job}/trigger"), &[], "");
    assert_eq!(status, 201, "{body}");
    serde_json::from_str::<Value>(&body).expect("JSON")["run_id"].as_i64().expect("a run id")
}

/// Starts `gatherd ARGS --addr API` with stdout and stderr piped; its stdout
/// lines arrive on the receiver as they are printed.
fn spawn_cli(d: &Daemon, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = gatherd()
        .args(args)
        .args(["--addr", &d.api().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gatherd starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The next `n` lines from `rx` (each within LONG).
fn take(rx: &mpsc::Receiver<String>, n: usize) -> Vec<String> {
    (0..n).map(|i| rx.recv_timeout(LONG).unwrap_or_else(|e| panic!("line {i} of {n} never came: {e}"))).collect()
}

/// `HH:MM:SS.mmm`.
fn is_clock(time: &str) -> bool {
    let b = time.as_bytes();
    b.len() == 12
        && [2, 5].iter().all(|&i| b[i] == b':')
        && b[8] == b'.'
        && b.iter().enumerate().all(|(i, c)| [2, 5, 8].contains(&i) || c.is_ascii_digit())
}

/// A `TIME STEP STREAM TEXT` line split into (step, stream, text), checking TIME.
fn fields(line: &str) -> (String, String, String) {
    let parts: Vec<&str> = line.splitn(4, ' ').collect();
    assert!(parts.len() == 4 && is_clock(parts[0]), "not TIME(HH:MM:SS.mmm) STEP STREAM TEXT: {line:?}");
    (parts[1].to_string(), parts[2].to_string(), parts[3].to_string())
}

#[test]
fn logs_follow_attached_mid_run_prints_the_earlier_lines_then_the_rest_exactly_once() {
    let scratch = tempfile::tempdir().expect("temp");
    let go = scratch.path().join("go");
    let d = Daemon::start(&[("wait.rhai", &waiting_job(&go))], &[], &[]);
    let run = trigger(&d, "wait.rhai");
    // The first lines are printed (and so recorded) before the follower attaches.
    assert!(d.wait_for(LONG, |l| l["text"] == "early 2"), "{}", d.dump());
    let (mut child, rx) = spawn_cli(&d, &["logs", &run.to_string(), "--follow"]);
    let backlog = take(&rx, 2);
    std::fs::write(&go, "").expect("go");
    let rest: Vec<String> = rx.iter().collect();
    let status = child.wait().expect("exits");

    let lines: Vec<String> = backlog.into_iter().chain(rest).collect();
    let (end, printed) = lines.split_last().expect("lines");
    let got: Vec<(String, String, String)> = printed.iter().map(|l| fields(l)).collect();
    let want: Vec<(String, String, String)> = ["early 1", "early 2", "late 1", "late 2"]
        .iter()
        .map(|t| ("main".to_string(), "print".to_string(), t.to_string()))
        .collect();
    assert_eq!(got, want, "every line once, in order: {lines:#?}");
    assert!(end.starts_with(&format!("run {run} succeeded")), "the last line says how the run ended: {end:?}");
    assert_eq!(status.code(), Some(0), "the exit status follows the run");
}

#[test]
fn logs_without_follow_reads_the_daemon_then_the_database_with_step_json_and_the_runs_exit_status() {
    let d = Daemon::start(
        &[(
            "fails.rhai",
            r#"
const schedule = "0 0 3 1 1 *";
print("before");
await_step(exec(["sh", "-c", "exit 0"]).named("quick"));
print("about to fail");
throw "it broke";
"#,
        )],
        &[],
        &[],
    );
    let run = trigger(&d, "fails.rhai");
    assert!(d.wait_for(LONG, |l| finished(l, "fails.rhai", "failed")), "{}", d.dump());
    let id = run.to_string();
    let logs = |args: &[&str]| gatherd().arg("logs").arg(&id).args(args).output().expect("runs");

    let through_daemon = logs(&["--addr", &d.api().to_string()]);
    let text = String::from_utf8_lossy(&through_daemon.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    let (end, printed) = lines.split_last().expect("lines");
    let got: Vec<(String, String, String)> = printed.iter().map(|l| fields(l)).collect();
    assert_eq!(
        got,
        [
            ("main".to_string(), "print".to_string(), "before".to_string()),
            ("main".to_string(), "print".to_string(), "about to fail".to_string())
        ],
        "{text}"
    );
    assert!(end.starts_with(&format!("run {run} failed")) && end.contains("it broke"), "{end:?}");
    assert_eq!(through_daemon.status.code(), Some(1), "a failed run's logs exit 1");

    // JSON lines, as the API's, filtered by step.
    let json = logs(&["--addr", &d.api().to_string(), "--json", "--step", "main"]);
    let objects: Vec<Value> =
        String::from_utf8_lossy(&json.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert_eq!(objects[0]["text"], "before");
    assert!(objects[0]["seq"].as_u64().is_some() && objects[0]["at_ms"].as_u64().is_some(), "{objects:?}");
    let none = logs(&["--addr", &d.api().to_string(), "--step", "quick"]);
    let text = String::from_utf8_lossy(&none.stdout).to_string();
    assert_eq!(text.lines().count(), 1, "only the end line: {text}");

    // No daemon: the database says the same, --follow included (the run is over).
    let (_jobs, state) = d.end_with(nix::sys::signal::Signal::SIGTERM);
    let state = state.path().to_str().expect("utf-8").to_string();
    let from_db = logs(&["--state", &state]);
    assert_eq!(String::from_utf8_lossy(&from_db.stdout), String::from_utf8_lossy(&through_daemon.stdout));
    assert_eq!(from_db.status.code(), Some(1));
    let followed = logs(&["--state", &state, "--follow"]);
    assert_eq!(String::from_utf8_lossy(&followed.stdout), String::from_utf8_lossy(&through_daemon.stdout));
    assert_eq!(followed.status.code(), Some(1), "{}", String::from_utf8_lossy(&followed.stderr));
}

#[test]
fn trigger_wait_follow_prints_the_lines_as_they_come_then_the_run() {
    let scratch = tempfile::tempdir().expect("temp");
    let go = scratch.path().join("go");
    let d = Daemon::start(&[("wait.rhai", &waiting_job(&go))], &[], &[]);
    let (mut child, rx) = spawn_cli(&d, &["trigger", "wait.rhai", "--wait", "--follow"]);
    // The run waits for `go`: these lines came while it was going.
    let early: Vec<(String, String, String)> = take(&rx, 2).iter().map(|l| fields(l)).collect();
    let want = |texts: &[&str]| -> Vec<(String, String, String)> {
        texts.iter().map(|t| ("main".to_string(), "print".to_string(), t.to_string())).collect()
    };
    assert_eq!(early, want(&["early 1", "early 2"]));
    std::fs::write(&go, "").expect("go");
    let late: Vec<(String, String, String)> = take(&rx, 2).iter().map(|l| fields(l)).collect();
    assert_eq!(late, want(&["late 1", "late 2"]));
    let report: Vec<String> = rx.iter().collect();
    let status = child.wait().expect("exits");
    assert!(report.iter().any(|l| l.contains("wait")), "then the run as `gatherd run` shows it: {report:#?}");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn ctrl_c_on_trigger_wait_says_the_run_goes_on_and_how_to_cancel_it() {
    let scratch = tempfile::tempdir().expect("temp");
    let go = scratch.path().join("go");
    let d = Daemon::start(&[("wait.rhai", &waiting_job(&go))], &[], &[]);
    let (mut child, _stdout) = spawn_cli(&d, &["trigger", "wait.rhai", "--wait"]);
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    // It says it waits once it listens for Ctrl-C.
    let mut waiting = String::new();
    stderr.read_line(&mut waiting).expect("a line");
    assert!(waiting.contains("waiting for it"), "{waiting:?}");
    let run: i64 = waiting.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("the run's id");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let status = child.wait().expect("exits");
    let mut said = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut said).expect("stderr");
    assert_eq!(status.code(), Some(130), "{said}");
    assert!(
        said.contains(&format!("run {run} goes on in the daemon")) && said.contains(&format!("gatherd cancel {run}")),
        "{said:?}"
    );
    let (code, body) = http(d.api(), "GET", &format!("/runs/{run}"), &[], "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("JSON")["status"], "running", "the run goes on");
    std::fs::write(&go, "").expect("go");
    assert!(d.wait_for(LONG, |l| finished(l, "wait.rhai", "succeeded")), "{}", d.dump());
}

#[test]
fn without_a_daemon_a_run_left_running_is_printed_but_following_it_is_refused_with_why() {
    let scratch = tempfile::tempdir().expect("temp");
    let go = scratch.path().join("go");
    let d = Daemon::start(&[("wait.rhai", &waiting_job(&go))], &[], &[]);
    let run = trigger(&d, "wait.rhai").to_string();
    assert!(d.wait_for(LONG, |l| l["text"] == "early 2"), "{}", d.dump());
    let state = d.state.path().to_str().expect("utf-8").to_string();
    let logs = |args: &[&str]| gatherd().arg("logs").arg(&run).args(["--state", &state]).args(args).output();
    // The writer commits within its batch window: wait for both lines.
    assert!(
        eventually(LONG, || logs(&[]).is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("early 2"))),
        "the lines never reached the history"
    );
    let (_jobs, _state) = d.end_with(nix::sys::signal::Signal::SIGKILL);
    let printed = logs(&[]).expect("runs");
    let text = String::from_utf8_lossy(&printed.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[2], format!("run {run} is still running (--follow to follow it)"));
    assert_eq!(printed.status.code(), Some(0));
    let followed = logs(&["--follow"]).expect("runs");
    let why = String::from_utf8_lossy(&followed.stderr).to_string();
    assert_eq!(followed.status.code(), Some(1), "{why}");
    assert!(why.contains(&format!("run {run} is still running, and following it needs the daemon")), "{why}");
    assert!(followed.stdout.is_empty(), "nothing half-printed: {}", String::from_utf8_lossy(&followed.stdout));
}

/// More lines than two of the API's pages (10,000 each): `logs` through the
/// daemon pages through them and prints every one, once, in order.
#[test]
fn logs_through_the_daemon_pages_through_a_run_longer_than_a_page() {
    let d = Daemon::start(
        &[(
            "chatty.rhai",
            "const schedule = \"0 0 3 1 1 *\";\nawait_step(exec([\"seq\", \"1\", \"25003\"]).named(\"count\"));\n",
        )],
        &[],
        &[],
    );
    let run = trigger(&d, "chatty.rhai");
    assert!(d.wait_for(LONG, |l| finished(l, "chatty.rhai", "succeeded")), "{}", d.dump());
    // The run's end reaches its history through the batched writer, a
    // moment after the daemon logs it: read once the history says it ended.
    let read = || gatherd().args(["logs", &run.to_string(), "--addr", &d.api().to_string()]).output().expect("runs");
    let mut out = read();
    assert!(
        eventually(LONG, || {
            out = read();
            !String::from_utf8_lossy(&out.stdout).ends_with("still running (--follow to follow it)\n")
        }),
        "the run's end never reached its history"
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    let (end, printed) = lines.split_last().expect("lines");
    let numbers: Vec<String> = printed.iter().map(|l| fields(l).2).collect();
    let expected: Vec<String> = (1..=25003).map(|n| n.to_string()).collect();
    assert_eq!(numbers.len(), expected.len(), "every line once: {}", String::from_utf8_lossy(&out.stderr));
    assert!(numbers == expected, "in order, no gap, no repeat");
    assert!(end.starts_with(&format!("run {run} succeeded")), "{end:?}");
    assert_eq!(out.status.code(), Some(0));
}

/// `logs --utc` shows TIME in UTC, whatever `TZ` says; without it TIME is
/// the reader's local time (here Asia/Tokyo, UTC+9 all year).
#[test]
fn logs_utc_shows_the_time_in_utc_and_without_it_the_local_time() {
    let d = Daemon::start(&[], &[], &[]);
    d.drop_file("say.rhai", "print(\"hello\");\n");
    assert!(d.wait_for(LONG, |l| finished(l, "say.rhai", "succeeded")), "{}", d.dump());
    let run = d.lines().iter().find(|l| is(l, "say.rhai", "run finished")).and_then(|l| l["run_id"].as_i64());
    let run = run.expect("a run id").to_string();
    let time = |utc: bool| {
        let mut cmd = gatherd();
        cmd.args(["logs", &run, "--addr", &d.api().to_string()]).env("TZ", "Asia/Tokyo");
        if utc {
            cmd.arg("--utc");
        }
        let out = cmd.output().expect("logs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let first = stdout.lines().next().unwrap_or_default().to_string();
        let hour: u32 = first.get(..2).and_then(|h| h.parse().ok()).unwrap_or_else(|| panic!("no TIME: {stdout}"));
        hour
    };
    let (utc, tokyo) = (time(true), time(false));
    assert_eq!((utc + 9) % 24, tokyo, "UTC {utc}h, Tokyo {tokyo}h");
}
