//! Queued runs and pause/resume end to end: the real binary on temp
//! folders, steered through its CLI and control API, observed through its
//! JSON log lines. Real time with generous bounds (a noisy 2-core box).

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const LONG: Duration = Duration::from_secs(20);

/// Two jobs sharing the semaphore `backup` (count 1): `holder.toml` holds it
/// for five minutes, `waits.toml` is quick. Neither fires on its own.
const HOLDER: &str = "schedule = \"0 0 3 1 1 *\"\nsemaphore = \"backup\"\n[[step]]\nname = \"t\"\nsleep = \"300s\"\n";
const WAITS: &str = "schedule = \"0 0 3 1 1 *\"\nsemaphore = \"backup\"\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\n";

/// `gatherd ARGS --addr API`, killed if it has not returned within `limit`:
/// its output, or `None` when it had to be killed.
fn cli_within(api: Api, args: &[&str], limit: Duration) -> Option<std::process::Output> {
    let mut child = gatherd()
        .args(args)
        .args(["--addr", &api.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gatherd starts");
    let asked = Instant::now();
    while asked.elapsed() < limit {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("its output"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// `gatherd ARGS --addr API`, which must succeed; its stdout.
fn cli(api: Api, args: &[&str]) -> String {
    let out = cli_within(api, args, LONG).unwrap_or_else(|| panic!("gatherd {args:?} did not return"));
    assert_eq!(out.status.code(), Some(0), "gatherd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The daemon's job `name` as `gatherd jobs --json` lists it.
fn job(api: Api, name: &str) -> Value {
    let jobs: Value = serde_json::from_str(&cli(api, &["jobs", "--json"])).expect("JSON");
    jobs["jobs"].as_array().and_then(|j| j.iter().find(|j| j["job"] == name)).cloned().expect("the job is listed")
}

/// Run `id` as `gatherd runs --json` lists it.
fn run(api: Api, job: &str, id: i64) -> Value {
    let runs: Value = serde_json::from_str(&cli(api, &["runs", "--job", job, "--json"])).expect("JSON");
    runs.as_array().and_then(|r| r.iter().find(|r| r["id"] == id)).cloned().expect("the run is listed")
}

/// The `run_id` a `run started` line of `job` names.
fn started(line: &Value, job: &str) -> Option<i64> {
    is(line, job, "run started").then(|| line["run_id"].as_i64()).flatten()
}

/// The id `gatherd trigger JOB` printed: `queued run N of JOB: …` or
/// `started run N of JOB`.
fn id_in(text: &str) -> i64 {
    text.split_whitespace().nth(2).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no run id in {text:?}"))
}

#[test]
fn a_trigger_blocked_by_a_semaphore_returns_at_once_queued_then_runs_when_the_semaphore_frees() {
    let dir = tempfile::tempdir().expect("temp");
    let config = write(dir.path(), "config.toml", "[semaphores]\nbackup = 1\n");
    let d = Daemon::start(
        &[("holder.toml", HOLDER), ("waits.toml", WAITS)],
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    let api = d.api();
    let holder = id_in(&cli(api, &["trigger", "holder.toml"]));
    assert!(d.wait_for(LONG, |l| started(l, "holder.toml") == Some(holder)), "{}", d.dump());

    let asked = Instant::now();
    let out = cli_within(api, &["trigger", "waits.toml"], Duration::from_secs(10))
        .expect("`gatherd trigger` of a job blocked by its semaphore returns at once, not when the semaphore frees");
    let took = asked.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("queued run "), "{text}");
    let waits = id_in(&text);
    // Generous (a CLI process on a loaded box); the paused-clock test in
    // src/daemon/tests.rs asserts 100 ms.
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // Queued, everywhere: the history, the job table, the metrics.
    assert_eq!(run(api, "waits.toml", waits)["status"], "queued");
    let listed = job(api, "waits.toml");
    assert_eq!((&listed["running"], &listed["queued"]), (&serde_json::json!([]), &serde_json::json!([waits])));
    let table = cli(api, &["jobs"]);
    assert!(table.lines().any(|l| l.starts_with("waits.toml") && l.contains("0 +1 queued")), "{table}");
    let (status, metrics) = http(api, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    assert!(metrics.contains("gatherd_runs_queued 1\n"), "{metrics}");
    // Through the API: 202 with the id and the state.
    let (status, body) = http(api, "POST", "/jobs/waits.toml/trigger", &[], "");
    assert_eq!(status, 409, "overlap = \"skip\": a run of it is already queued: {body}");

    // The semaphore frees: the queued run starts and succeeds.
    cli(api, &["cancel", &holder.to_string()]);
    assert!(d.wait_for(LONG, |l| finished(l, "waits.toml", "succeeded")), "{}", d.dump());
    assert_eq!(d.count(|l| started(l, "waits.toml") == Some(waits)), 1, "{}", d.dump());
    assert_eq!(run(api, "waits.toml", waits)["status"], "succeeded");
}

#[test]
fn a_queued_run_cancelled_never_starts_and_the_api_answers_202_queued() {
    let dir = tempfile::tempdir().expect("temp");
    let config = write(dir.path(), "config.toml", "[semaphores]\nbackup = 1\n");
    let d = Daemon::start(
        &[("holder.toml", HOLDER), ("waits.toml", WAITS)],
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    let api = d.api();
    let holder = id_in(&cli(api, &["trigger", "holder.toml"]));
    assert!(d.wait_for(LONG, |l| started(l, "holder.toml") == Some(holder)), "{}", d.dump());
    let (status, body) = http(api, "POST", "/jobs/waits.toml/trigger", &[], "");
    assert_eq!(status, 202, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["status"], "queued", "{answer}");
    let waits = answer["run_id"].as_i64().expect("a run id");

    let cancelled = cli(api, &["cancel", &waits.to_string()]);
    assert!(cancelled.contains(&format!("cancelling run {waits}")), "{cancelled}");
    assert!(d.wait_for(LONG, |l| finished(l, "waits.toml", "cancelled")), "{}", d.dump());
    let row = run(api, "waits.toml", waits);
    assert_eq!(row["status"], "cancelled");
    assert_eq!(row["error"], "cancelled while queued: it never started");
    assert_eq!(job(api, "waits.toml")["queued"], serde_json::json!([]), "its place is given up");

    // The semaphore frees: nothing of it starts. (The barrier is a run
    // started and finished after the holder's end.)
    cli(api, &["cancel", &holder.to_string()]);
    assert!(d.wait_for(LONG, |l| finished(l, "holder.toml", "cancelled")), "{}", d.dump());
    d.barrier();
    assert_eq!(d.count(|l| is(l, "waits.toml", "run started")), 0, "a cancelled queued run started: {}", d.dump());
}

/// `job`'s runs as `gatherd runs --json` lists them (status, error,
/// fire_time), oldest first.
fn runs_of(api: Api, job: &str) -> Vec<(String, String, chrono::DateTime<chrono::Utc>)> {
    let runs: Value =
        serde_json::from_str(&cli(api, &["runs", "--job", job, "--limit", "1000", "--json"])).expect("JSON");
    let mut rows: Vec<_> = runs
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| {
            let fire_time = r["fire_time"].as_str().and_then(|t| t.parse().ok()).expect("a fire time");
            (r["status"].as_str().unwrap_or("").to_string(), r["error"].as_str().unwrap_or("").to_string(), fire_time)
        })
        .collect();
    rows.reverse();
    rows
}

/// Waits until `job` has at least `n` fires recorded `missed` because it is
/// paused, fired after `after`, and none of its runs fired after `after` ran.
fn paused_fires_after(api: Api, job: &str, after: chrono::DateTime<chrono::Utc>, n: usize) {
    let paused_fire =
        |(status, error, _): &(String, String, _)| status == "missed" && error == "missed: the job is paused";
    assert!(
        eventually(LONG, || runs_of(api, job).iter().filter(|r| r.2 > after && paused_fire(r)).count() >= n),
        "no {n} paused fires of {job}: {:?}",
        runs_of(api, job)
    );
    let ran: Vec<_> = runs_of(api, job).into_iter().filter(|r| r.2 > after && !paused_fire(r)).collect();
    assert!(ran.is_empty(), "{job} ran while paused: {ran:?}");
}

#[test]
fn a_pause_survives_a_restart_does_not_cancel_a_run_in_flight_and_records_the_fires_missed() {
    let dir = tempfile::tempdir().expect("temp");
    let config = write(dir.path(), "config.toml", "shutdown_grace = \"1s\"\n");
    let config = config.to_str().expect("utf-8").to_string();
    let slow = "schedule = \"0 0 3 1 1 *\"\n[[step]]\nname = \"t\"\nsleep = \"300s\"\n";
    let tick = "every = \"1s\"\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\n";
    let d = Daemon::start(&[("slow.toml", slow), ("tick.toml", tick)], &["--config", &config], &[]);
    let api = d.api();
    let run = id_in(&cli(api, &["trigger", "slow.toml"]));
    assert!(d.wait_for(LONG, |l| started(l, "slow.toml") == Some(run)), "{}", d.dump());

    let said = cli(api, &["pause", "slow.toml"]);
    assert!(said.starts_with("paused slow.toml"), "{said}");
    cli(api, &["pause", "tick.toml"]);
    let paused = chrono::Utc::now();
    d.barrier();
    assert_eq!(d.count(|l| is(l, "slow.toml", "run finished")), 0, "pausing cancelled the run: {}", d.dump());
    let listed = job(api, "slow.toml");
    assert_eq!((&listed["paused"], &listed["running"]), (&Value::Bool(true), &serde_json::json!([run])));
    let table = cli(api, &["jobs"]);
    assert!(table.lines().any(|l| l.starts_with("tick.toml") && l.contains("paused")), "{table}");
    paused_fires_after(api, "tick.toml", paused, 2);
    // A manual trigger is explicit: it runs.
    let manual = id_in(&cli(api, &["trigger", "tick.toml"]));
    assert!(d.wait_for(LONG, |l| started(l, "tick.toml") == Some(manual)), "{}", d.dump());

    // Restarted: still paused.
    let (jobs, state) = d.end_with(nix::sys::signal::Signal::SIGTERM);
    let d = Daemon::start_with(jobs, state, &["--config", &config], &[]);
    let api = d.api();
    let restarted = chrono::Utc::now();
    assert_eq!(job(api, "slow.toml")["paused"], true, "the pause is forgotten after a restart");
    assert_eq!(job(api, "tick.toml")["paused"], true);
    paused_fires_after(api, "tick.toml", restarted, 2);

    // Resumed: it fires again, from its next slot.
    assert_eq!(cli(api, &["resume", "tick.toml"]).trim(), "resumed tick.toml");
    assert_eq!(job(api, "tick.toml")["paused"], false);
    assert!(d.wait_for(LONG, |l| finished(l, "tick.toml", "succeeded")), "{}", d.dump());
    let (status, body) = http(api, "POST", "/jobs/nope.toml/pause", &[], "");
    assert_eq!(status, 404, "{body}");
}
