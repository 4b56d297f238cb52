//! `gatherd daemon` end to end: the real binary on temp folders, observed
//! through its JSON log lines. These tests wait on real time with generous
//! bounds (this is a noisy 2-core box): they check what happens, never how fast.

mod support;

use std::io::Write;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;

const LONG: Duration = Duration::from_secs(20);

/// A job that appends `word` to `out` in the jobs folder's parent-less temp file.
fn append_job(out: &std::path::Path, word: &str) -> String {
    format!("[[step]]\nname = \"mark\"\nshell = \"echo {word} >> {}\"\n", out.display())
}

#[test]
fn a_file_dropped_by_rename_runs_once() {
    let d = Daemon::start(&[], &[], &[]);
    let out = d.state.path().join("out.txt");
    d.drop_file("hello.toml", &append_job(&out, "hello"));
    assert!(d.wait_for(LONG, |l| finished(l, "hello.toml", "succeeded")), "{}", d.dump());
    d.barrier();
    assert_eq!(d.count(|l| is(l, "hello.toml", "run started")), 1, "{}", d.dump());
    assert_eq!(std::fs::read_to_string(&out).expect("ran"), "hello\n");
}

#[test]
fn a_file_written_slowly_runs_once_with_its_full_content() {
    let d = Daemon::start(&[], &[], &[]);
    let out = d.state.path().join("out.txt");
    let path = d.jobs.path().join("slow.toml");
    let mut f = std::fs::File::create(&path).expect("create");
    // The pauses are the scenario: a writer that takes its time.
    f.write_all(b"[[step]]\nname = \"mark\"\n").expect("part 1");
    f.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(700));
    f.write_all(b"# still writing\n").expect("part 2");
    f.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(700));
    f.write_all(format!("shell = \"echo complete >> {}\"\n", out.display()).as_bytes()).expect("part 3");
    drop(f);
    assert!(d.wait_for(LONG, |l| finished(l, "slow.toml", "succeeded")), "{}", d.dump());
    d.barrier();
    assert_eq!(d.count(|l| is(l, "slow.toml", "run started")), 1, "{}", d.dump());
    assert_eq!(
        d.count(|l| l["job"] == "slow.toml" && l["level"] == "WARN"),
        0,
        "acted on a partial file: {}",
        d.dump()
    );
    assert_eq!(std::fs::read_to_string(&out).expect("ran"), "complete\n");
}

#[test]
fn changed_content_runs_again_and_an_identical_save_does_not() {
    let d = Daemon::start(&[], &[], &[]);
    let out = d.state.path().join("out.txt");
    d.drop_file("job.toml", &append_job(&out, "one"));
    assert!(d.wait_for(LONG, |l| finished(l, "job.toml", "succeeded")), "{}", d.dump());
    // Saved again, unchanged: no run.
    d.drop_file("job.toml", &append_job(&out, "one"));
    d.barrier();
    assert_eq!(d.count(|l| is(l, "job.toml", "run started")), 1, "{}", d.dump());
    d.drop_file("job.toml", &append_job(&out, "two"));
    assert!(d.wait_for_n(LONG, 2, |l| finished(l, "job.toml", "succeeded")), "{}", d.dump());
    assert_eq!(std::fs::read_to_string(&out).expect("ran"), "one\ntwo\n");
}

#[test]
fn an_invalid_file_is_reported_and_the_others_keep_running_until_it_is_fixed() {
    let d = Daemon::start(&[("tick.toml", "every = \"300ms\"\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\n")], &[], &[]);
    d.drop_file("bad.toml", "[[step]]\nname = \"a\"\nslep = \"1s\"\n");
    assert!(
        d.wait_for(LONG, |l| l["job"] == "bad.toml"
            && l["message"] == "invalid job file"
            && l["diagnostic"].as_str().is_some_and(|m| m.contains("bad.toml:3:1") && m.contains("slep"))),
        "{}",
        d.dump()
    );
    let ticks = d.count(|l| finished(l, "tick.toml", "succeeded"));
    assert!(
        d.wait_for_n(LONG, ticks + 2, |l| finished(l, "tick.toml", "succeeded")),
        "other jobs stopped: {}",
        d.dump()
    );
    d.drop_file("bad.toml", "[[step]]\nname = \"a\"\nsleep = \"10ms\"\n");
    assert!(d.wait_for(LONG, |l| finished(l, "bad.toml", "succeeded")), "{}", d.dump());
}

#[test]
fn an_invalid_edit_keeps_the_last_valid_schedule() {
    let d = Daemon::start(&[("tick.toml", "every = \"300ms\"\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\n")], &[], &[]);
    assert!(d.wait_for(LONG, |l| finished(l, "tick.toml", "succeeded")), "{}", d.dump());
    d.drop_file("tick.toml", "every = \"300ms\"\n[[step]]\nname = \"t\"\nslep = \"10ms\"\n");
    assert!(d.wait_for(LONG, |l| is(
        l,
        "tick.toml",
        "keeping the last valid version until the file is fixed or removed"
    )));
    let ticks = d.count(|l| finished(l, "tick.toml", "succeeded"));
    assert!(d.wait_for_n(LONG, ticks + 2, |l| finished(l, "tick.toml", "succeeded")), "{}", d.dump());
}

#[test]
fn a_cron_job_fires_every_second_and_stops_when_removed() {
    let every_second = "schedule = \"*/1 * * * * *\"\noverlap = \"allow\"\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\n";
    // `clock.toml` fires on the same seconds: the test's clock, in events.
    let d = Daemon::start(&[("cron.toml", every_second), ("clock.toml", every_second)], &[], &[]);
    assert!(d.wait_for(LONG, |l| finished(l, "cron.toml", "succeeded")), "{}", d.dump());
    let before = d.count(|l| is(l, "cron.toml", "run started"));
    assert!(d.wait_for_n(LONG, before + 3, |l| is(l, "cron.toml", "run started")), "{}", d.dump());
    // Every second: the fires' nominal times are whole seconds one apart
    // (never two in a second, none left out), unless the daemon says it fell
    // behind and skipped slots; and no run starts before its second has come
    // (a few ms of leeway for the two clocks read), so fires keep to real time.
    let fired = d.count(|l| is(l, "cron.toml", "run started"));
    let mut times = Vec::new();
    assert!(
        eventually(LONG, || {
            times = fire_times(d.state.path(), "cron.toml");
            times.len() >= fired
        }),
        "runs missing from the history: {times:?}"
    );
    let fell_behind = d.count(|l| is(l, "cron.toml", "fell behind the schedule; skipping to the next slot")) > 0;
    for (fire, start) in &times {
        assert!(*start - *fire > -chrono::TimeDelta::milliseconds(50), "started before its time: {times:?}");
    }
    let fires: Vec<_> = times.iter().map(|(fire, _)| *fire).collect();
    for pair in fires.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(pair[0].timestamp_subsec_micros() == 0 && gap.subsec_nanos() == 0, "off the grid: {times:?}");
        assert!(gap.num_seconds() >= 1, "fired twice in a second: {times:?}");
        assert!(gap.num_seconds() == 1 || fell_behind, "left out a second: {times:?}\n{}", d.dump());
    }
    // A slow version: the run in flight when the file goes is cancelled.
    d.drop_file("cron.toml", "schedule = \"*/1 * * * * *\"\n[[step]]\nname = \"t\"\nsleep = \"30s\"\n");
    let started = d.count(|l| is(l, "cron.toml", "run started"));
    assert!(d.wait_for_n(LONG, started + 1, |l| is(l, "cron.toml", "run started")), "{}", d.dump());
    std::fs::remove_file(d.jobs.path().join("cron.toml")).expect("remove");
    assert!(d.wait_for(LONG, |l| finished(l, "cron.toml", "cancelled")), "{}", d.dump());
    let after = d.count(|l| is(l, "cron.toml", "run started"));
    // Time passes by the clock job: of its runs logged from now on, the first
    // may be of a second before the removal; the fourth is of a second at
    // least two later. Then the barrier lets every fire of that second in.
    let ticks = d.count(|l| is(l, "clock.toml", "run started"));
    assert!(d.wait_for_n(LONG, ticks + 4, |l| is(l, "clock.toml", "run started")), "{}", d.dump());
    d.barrier();
    assert_eq!(d.count(|l| is(l, "cron.toml", "run started")), after, "still firing after removal: {}", d.dump());
}

/// The nominal fire time and the start of each of `job`'s runs in the
/// history, by fire time.
fn fire_times(
    state: &std::path::Path,
    job: &str,
) -> Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    let db =
        rusqlite::Connection::open_with_flags(state.join("gatherd.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the run store");
    let mut query =
        db.prepare("SELECT fire_time, started_at FROM runs WHERE job = ?1 ORDER BY fire_time").expect("query");
    let rows = query.query_map([job], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).expect("fire times");
    let time = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}")).to_utc();
    rows.map(|row| {
        let (fire, start) = row.expect("a run's times");
        (time(&fire), time(&start))
    })
    .collect()
}

fn overlap_job(policy: &str) -> String {
    format!("every = \"400ms\"\noverlap = \"{policy}\"\n[[step]]\nname = \"t\"\nsleep = \"1s\"\n")
}

#[test]
fn overlap_skip_drops_fires_while_a_run_goes_on() {
    let d = Daemon::start(&[("j.toml", &overlap_job("skip"))], &[], &[]);
    assert!(d.wait_for_n(LONG, 2, |l| finished(l, "j.toml", "succeeded")), "{}", d.dump());
    assert!(
        d.count(|l| l["job"] == "j.toml"
            && l["message"] == "skipped"
            && l["reason"] == "the last run is still going (overlap = \"skip\")")
            > 0
    );
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    assert_no_overlap(&lines, "j.toml");
}

#[test]
fn overlap_queue_keeps_one_waiting_run() {
    let d = Daemon::start(&[("j.toml", &overlap_job("queue"))], &[], &[]);
    assert!(d.wait_for_n(LONG, 3, |l| finished(l, "j.toml", "succeeded")), "{}", d.dump());
    assert!(d.count(|l| is(l, "j.toml", "queued behind the running one (overlap = \"queue\")")) > 0, "{}", d.dump());
    let (_, lines) = d.stop();
    assert_no_overlap(&lines, "j.toml");
}

#[test]
fn overlap_replace_cancels_the_running_one() {
    let d = Daemon::start(&[("j.toml", &overlap_job("replace"))], &[], &[]);
    assert!(d.wait_for_n(LONG, 2, |l| finished(l, "j.toml", "cancelled")), "{}", d.dump());
}

#[test]
fn overlap_allow_runs_side_by_side() {
    let d = Daemon::start(&[("j.toml", &overlap_job("allow"))], &[], &[]);
    assert!(d.wait_for_n(LONG, 2, |l| finished(l, "j.toml", "succeeded")), "{}", d.dump());
    let (_, lines) = d.stop();
    assert!(max_in_flight(&lines, "j.toml") >= 2, "never overlapped");
}

#[test]
fn jobs_sharing_a_semaphore_never_overlap() {
    let job = |name: &str| {
        format!(
            "every = \"300ms\"\noverlap = \"allow\"\nsemaphore = \"maint\"\n[[step]]\nname = \"{name}\"\nsleep = \"500ms\"\n"
        )
    };
    let d = Daemon::start(&[("backup.toml", &job("b")), ("vacuum.toml", &job("v"))], &[], &[]);
    assert!(d.wait_for_n(LONG, 2, |l| finished(l, "backup.toml", "succeeded")), "{}", d.dump());
    assert!(d.wait_for_n(LONG, 2, |l| finished(l, "vacuum.toml", "succeeded")), "{}", d.dump());
    let (_, lines) = d.stop();
    let both = lines
        .iter()
        .filter(|l| l["message"] == "run started" || l["message"] == "run finished")
        .cloned()
        .collect::<Vec<_>>();
    let mut in_flight = 0i32;
    for l in &both {
        in_flight += if l["message"] == "run started" { 1 } else { -1 };
        assert!(in_flight <= 1, "two runs of one semaphore at once: {both:#?}");
    }
}

/// The most runs of `job` in flight at once, from the log's order.
fn max_in_flight(lines: &[serde_json::Value], job: &str) -> i32 {
    let (mut now, mut max) = (0, 0);
    for l in lines.iter().filter(|l| l["job"] == job) {
        if l["message"] == "run started" {
            now += 1;
        } else if l["message"] == "run finished" {
            now -= 1;
        }
        max = max.max(now);
    }
    max
}

fn assert_no_overlap(lines: &[serde_json::Value], job: &str) {
    assert_eq!(max_in_flight(lines, job), 1, "runs of {job} overlapped");
}

#[test]
fn sigterm_lets_a_run_in_flight_finish_within_the_grace() {
    let d = Daemon::start(&[], &[], &[]);
    d.drop_file("slow.toml", "[[step]]\nname = \"t\"\nsleep = \"1500ms\"\n");
    assert!(d.wait_for(LONG, |l| is(l, "slow.toml", "run started")), "{}", d.dump());
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    assert!(lines.iter().any(|l| finished(l, "slow.toml", "succeeded")), "{lines:#?}");
}

#[test]
fn sigterm_cancels_runs_still_going_after_the_grace() {
    let dir = tempfile::tempdir().expect("temp");
    let config = write(dir.path(), "config.toml", "shutdown_grace = \"500ms\"\n");
    let d = Daemon::start(&[], &["--config", config.to_str().expect("utf-8 path")], &[]);
    // Outside the daemon's folders, which go away with it.
    let pgid_file = dir.path().join("pgid");
    d.drop_file(
        "stuck.toml",
        &format!("[[step]]\nname = \"t\"\nshell = \"echo $$ > {}; sleep 300 & sleep 300\"\n", pgid_file.display()),
    );
    assert!(eventually(LONG, || std::fs::read_to_string(&pgid_file).is_ok_and(|s| s.ends_with('\n'))), "{}", d.dump());
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    assert!(lines.iter().any(|l| finished(l, "stuck.toml", "cancelled")), "{lines:#?}");
    let pgid: i32 = std::fs::read_to_string(&pgid_file).expect("pgid").trim().parse().expect("pid");
    assert!(eventually(Duration::from_secs(10), || !group_alive(pgid)), "process group outlived the daemon");
}

#[test]
fn sighup_reloads_the_config_and_rescans() {
    let dir = tempfile::tempdir().expect("temp");
    let config = write(dir.path(), "config.toml", "max_concurrent_runs = 4\n");
    let d = Daemon::start(&[], &["--config", config.to_str().expect("utf-8 path")], &[]);
    write(dir.path(), "config.toml", "max_concurrent_runs = 2\nblocking_threads = 3\n");
    d.signal(Signal::SIGHUP);
    assert!(
        d.wait_for(LONG, |l| l["message"] == "config reloaded"
            && l["max_concurrent_runs"] == 2
            && l["blocking_threads"] == 3),
        "{}",
        d.dump()
    );
    // A bad config is refused and the old one kept.
    write(dir.path(), "config.toml", "max_concurrent_runs = \"lots\"\n");
    d.signal(Signal::SIGHUP);
    assert!(
        d.wait_for(LONG, |l| l["message"] == "keeping the old config"
            && l["error"].as_str().is_some_and(|e| e.contains("lots"))),
        "{}",
        d.dump()
    );
}

#[test]
fn a_second_daemon_on_the_same_state_folder_is_refused() {
    let d = Daemon::start(&[], &[], &[]);
    let output = gatherd()
        .arg("daemon")
        .arg("--jobs")
        .arg(d.jobs.path())
        .arg("--state")
        .arg(d.state.path())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("another gatherd daemon uses the state folder"));
}

#[test]
fn sd_notify_reports_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("temp");
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let d = Daemon::start(
        &[],
        &[],
        &[("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8")), ("WATCHDOG_USEC", "400000")],
    );
    let mut seen = String::new();
    let mut read = |until: &str| {
        eventually(LONG, || {
            let mut buf = [0u8; 4096];
            if let Ok(n) = socket.recv(&mut buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                seen.push('\n');
            }
            seen.contains(until)
        })
    };
    assert!(read("READY=1"), "no READY=1");
    assert!(read("WATCHDOG=1"), "no WATCHDOG=1");
    d.signal(Signal::SIGTERM);
    assert!(read("STOPPING=1"), "no STOPPING=1");
    assert!(seen.contains("STATUS="), "{seen}");
}

#[test]
fn a_rhai_job_runs_under_the_daemon() {
    let d = Daemon::start(&[], &[], &[]);
    d.drop_file("script.rhai", "print(\"hello from rhai\");\ngather([sleep(0.1, 1), sleep(0.1, 2)])\n");
    assert!(d.wait_for(LONG, |l| finished(l, "script.rhai", "succeeded")), "{}", d.dump());
    assert!(
        d.count(|l| l["job"] == "script.rhai" && l["message"] == "script output" && l["text"] == "hello from rhai")
            == 1,
        "{}",
        d.dump()
    );
}

#[test]
fn a_missing_jobs_folder_is_a_clear_error() {
    let output = gatherd().args(["daemon", "--jobs", "/nonexistent/gatherd-jobs"]).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/gatherd-jobs does not exist"));
}

#[test]
fn after_kill_9_a_run_in_flight_is_interrupted_and_a_finished_one_shot_does_not_run_again() {
    let d = Daemon::start(&[], &[], &[]);
    d.drop_file("done.toml", "[[step]]\nname = \"t\"\nsleep = \"10ms\"\n");
    assert!(d.wait_for(LONG, |l| finished(l, "done.toml", "succeeded")), "{}", d.dump());
    d.drop_file("long.toml", "[[step]]\nname = \"t\"\nsleep = \"300s\"\n");
    assert!(d.wait_for(LONG, |l| is(l, "long.toml", "run started")), "{}", d.dump());
    let long_run = d.lines().iter().find(|l| is(l, "long.toml", "run started")).map(|l| l["run_id"].clone());
    let (jobs, state) = d.end_with(Signal::SIGKILL);

    let d = Daemon::start_with(jobs, state, &[], &[]);
    let interrupted = d.lines().into_iter().find(|l| l["message"] == "run interrupted");
    let interrupted = interrupted.unwrap_or_else(|| panic!("no interrupted run reported: {}", d.dump()));
    assert_eq!(interrupted["job"], "long.toml");
    assert_eq!(Some(interrupted["run_id"].clone()), long_run);
    assert!(
        d.count(|l| is(l, "done.toml", "this version already ran to the end; not running it again")) == 1,
        "{}",
        d.dump()
    );
    // The interrupted one-shot is reported, not silently retried.
    assert!(
        d.count(|l| is(
            l,
            "long.toml",
            "this version's run was interrupted when the daemon stopped; not retried (save a new version to run it)"
        )) == 1,
        "{}",
        d.dump()
    );
    d.barrier();
    assert_eq!(d.count(|l| l["message"] == "run started" && !is_barrier(l)), 0, "{}", d.dump());
}

#[test]
fn a_daemon_restarted_cleanly_does_not_rerun_finished_one_shots_but_runs_changed_ones() {
    let d = Daemon::start(&[], &[], &[]);
    d.drop_file("a.toml", "[[step]]\nname = \"t\"\nsleep = \"10ms\"\n");
    assert!(d.wait_for(LONG, |l| finished(l, "a.toml", "succeeded")), "{}", d.dump());
    let (jobs, state) = d.end_with(Signal::SIGTERM);
    write(jobs.path(), "a.toml", "[[step]]\nname = \"t\"\nsleep = \"20ms\"\n");
    let d = Daemon::start_with(jobs, state, &[], &[]);
    assert!(d.wait_for(LONG, |l| finished(l, "a.toml", "succeeded")), "a changed one-shot must run: {}", d.dump());
}

fn run_count(state: &std::path::Path, job: &str, status: Option<&str>) -> i64 {
    let db =
        rusqlite::Connection::open_with_flags(state.join("gatherd.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the run store");
    let (sql, args): (&str, Vec<&str>) = match status {
        Some(s) => ("SELECT count(*) FROM runs WHERE job = ?1 AND status = ?2", vec![job, s]),
        None => ("SELECT count(*) FROM runs WHERE job = ?1", vec![job]),
    };
    db.query_row(sql, rusqlite::params_from_iter(args), |r| r.get(0)).expect("count runs")
}

fn catch_up_after_downtime(policy: &str) -> (Daemon, i64) {
    let job = format!("every = \"1s\"\ncatch_up = \"{policy}\"\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\n");
    let d = Daemon::start(&[("tick.toml", &job)], &[], &[]);
    assert!(d.wait_for(LONG, |l| finished(l, "tick.toml", "succeeded")), "{}", d.dump());
    let (jobs, state) = d.end_with(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(3500));
    let d = Daemon::start_with(jobs, state, &[], &[]);
    let line =
        d.lines().into_iter().find(|l| l["message"] == "fires missed while the daemon was down; recorded as missed");
    let missed = line.as_ref().and_then(|l| l["count"].as_i64()).unwrap_or(0);
    (d, missed)
}

#[test]
fn catch_up_latest_runs_the_last_missed_fire_once_and_records_the_rest() {
    let (d, missed) = catch_up_after_downtime("latest");
    assert!(missed >= 1, "{}", d.dump());
    assert!(d.wait_for(LONG, |l| l["message"] == "catching up missed fires" && l["count"] == 1), "{}", d.dump());
    assert!(d.wait_for(LONG, |l| is(l, "tick.toml", "run started") && l["cause"] == "interval"), "{}", d.dump());
    assert_eq!(run_count(d.state.path(), "tick.toml", Some("missed")), missed);
}

#[test]
fn catch_up_all_runs_each_missed_fire() {
    let (d, missed) = catch_up_after_downtime("all");
    assert_eq!(missed, 0, "inside the window nothing is left missed: {}", d.dump());
    let caught =
        d.lines().into_iter().find(|l| l["message"] == "catching up missed fires").and_then(|l| l["count"].as_i64());
    let caught = caught.unwrap_or_else(|| panic!("no catch-up: {}", d.dump()));
    assert!(caught >= 2, "{}", d.dump());
}

#[test]
fn catch_up_skip_records_every_missed_fire() {
    let (d, missed) = catch_up_after_downtime("skip");
    assert!(missed >= 2, "{}", d.dump());
    assert_eq!(d.count(|l| l["message"] == "catching up missed fires"), 0);
    assert_eq!(run_count(d.state.path(), "tick.toml", Some("missed")), missed);
}

#[test]
fn retention_keeps_the_newest_runs() {
    let d = Daemon::start(
        &[("tick.toml", "every = \"200ms\"\nkeep_runs = 2\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\n")],
        &[],
        &[],
    );
    assert!(d.wait_for_n(LONG, 5, |l| finished(l, "tick.toml", "succeeded")), "{}", d.dump());
    assert!(eventually(LONG, || run_count(d.state.path(), "tick.toml", None) <= 3), "not pruned");
}

#[test]
fn runs_show_and_logs_read_the_history_beside_a_running_daemon() {
    let d = Daemon::start(&[], &[], &[]);
    d.drop_file(
        "hello.rhai",
        "print(\"hi there\");\ngather([sleep(0.05, \"a\").named(\"a\"), sleep(0.01, \"b\").named(\"b\")])\n",
    );
    assert!(d.wait_for(LONG, |l| finished(l, "hello.rhai", "succeeded")), "{}", d.dump());
    let run_id = d.lines().iter().find(|l| is(l, "hello.rhai", "run finished")).map(|l| l["run_id"].clone());
    let run_id = run_id.and_then(|v| v.as_i64()).expect("a run id");
    let state = d.state.path().to_str().expect("utf-8").to_string();
    // The daemon may still be committing the last batch: poll until it shows.
    let json = |args: &[&str]| -> serde_json::Value {
        let out = gatherd().args(args).args(["--state", &state, "--json"]).output().expect("runs");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    assert!(
        eventually(LONG, || json(&["runs", "--job", "hello.rhai"])[0]["status"] == "succeeded"),
        "the run never showed as succeeded"
    );
    let runs = json(&["runs"]);
    assert_eq!(runs[0]["id"], run_id);
    assert_eq!(runs[0]["trigger"], "file");
    let shown = json(&["show", &run_id.to_string()]);
    assert_eq!(shown["status"], "succeeded");
    assert_eq!(shown["result"], serde_json::json!(["a", "b"]));
    assert_eq!(step(&shown, "main/gather_1/a")["output"], "a");
    assert_eq!(step(&shown, "main/gather_1/b")["status"], "succeeded");
    // `logs --json` is JSON lines, one object per line printed.
    let logs = gatherd().args(["logs", &run_id.to_string(), "--state", &state, "--json"]).output().expect("runs");
    let first = String::from_utf8_lossy(&logs.stdout).lines().next().map(|l| serde_json::from_str(l).expect("JSON"));
    assert_eq!(first.unwrap_or(serde_json::Value::Null)["text"], "hi there");
    // The human forms.
    let table = gatherd().args(["runs", "--state", &state]).output().expect("runs");
    assert!(String::from_utf8_lossy(&table.stdout).contains("hello.rhai"));
    let human = gatherd().args(["show", &run_id.to_string(), "--state", &state]).output().expect("runs");
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("timeline") && text.contains("hi there"), "{text}");
    // A run that does not exist, and a state folder without history.
    let missing = gatherd().args(["show", "999999", "--state", &state]).output().expect("runs");
    assert_eq!(missing.status.code(), Some(1));
    let empty = tempfile::tempdir().expect("temp");
    let none = gatherd().args(["runs", "--state"]).arg(empty.path()).output().expect("runs");
    assert!(String::from_utf8_lossy(&none.stderr).contains("no run history"));
}

#[test]
fn completions_and_the_man_page_are_generated() {
    let bash = gatherd().args(["completions", "bash"]).output().expect("runs");
    assert_eq!(bash.status.code(), Some(0));
    let bash = String::from_utf8_lossy(&bash.stdout);
    assert!(bash.contains("gatherd") && bash.contains("daemon") && bash.contains("--json"), "{bash}");
    let man = gatherd().arg("man").output().expect("runs");
    assert_eq!(man.status.code(), Some(0));
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(man.contains(".TH gatherd") && man.contains("daemon"), "{man}");
}

#[test]
fn a_one_shot_removed_and_dropped_again_runs_again() {
    let d = Daemon::start(&[], &[], &[]);
    let job = "[[step]]\nname = \"t\"\nsleep = \"10ms\"\n";
    d.drop_file("again.toml", job);
    assert!(d.wait_for(LONG, |l| finished(l, "again.toml", "succeeded")), "{}", d.dump());
    std::fs::remove_file(d.jobs.path().join("again.toml")).expect("remove");
    assert!(d.wait_for(LONG, |l| is(l, "again.toml", "job file removed")), "{}", d.dump());
    d.drop_file("again.toml", job);
    assert!(d.wait_for_n(LONG, 2, |l| finished(l, "again.toml", "succeeded")), "{}", d.dump());
}

#[test]
fn the_control_api_triggers_shows_cancels_streams_and_counts_runs() {
    let d = Daemon::start(
        &[
            ("quick.toml", "schedule = \"0 0 3 1 1 *\"\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\noutput = \"done\"\n"),
            ("slow.toml", "schedule = \"0 0 3 1 1 *\"\n[[step]]\nname = \"t\"\nsleep = \"300s\"\n"),
        ],
        &[],
        &[],
    );
    let api = d.api();
    assert_eq!(http(api, "GET", "/healthz", &[], "").0, 200);
    let (status, jobs) = http(api, "GET", "/jobs", &[], "");
    assert_eq!(status, 200, "{jobs}");
    assert!(jobs.contains("quick.toml") && jobs.contains("slow.toml"), "{jobs}");

    // Trigger a quick run, then read it back.
    let (status, body) = http(api, "POST", "/jobs/quick.toml/trigger", &[], "");
    assert_eq!(status, 201, "{body}");
    let run: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let id = run["run_id"].as_i64().expect("a run id");
    assert!(d.wait_for(LONG, |l| finished(l, "quick.toml", "succeeded")), "{}", d.dump());
    assert!(
        eventually(LONG, || {
            let (s, b) = http(api, "GET", &format!("/runs/{id}"), &[], "");
            s == 200 && serde_json::from_str::<serde_json::Value>(&b).is_ok_and(|r| r["status"] == "succeeded")
        }),
        "the run never showed as succeeded"
    );
    // A late client of the event stream still sees the run, in order, to its end.
    let (status, events) = http(api, "GET", &format!("/runs/{id}/events"), &[], "");
    assert_eq!(status, 200);
    let finished_at = events.find("run_finished").expect("a run_finished event");
    assert!(events.find("node_finished").is_some_and(|n| n < finished_at), "{events}");

    // Cancel a slow run.
    let (status, body) = http(api, "POST", "/jobs/slow.toml/trigger", &[], "");
    assert_eq!(status, 201, "{body}");
    let slow: i64 = serde_json::from_str::<serde_json::Value>(&body).expect("JSON")["run_id"].as_i64().expect("id");
    assert!(d.wait_for(LONG, |l| is(l, "slow.toml", "run started")), "{}", d.dump());
    assert_eq!(http(api, "POST", &format!("/runs/{slow}/cancel"), &[], "").0, 202);
    assert!(d.wait_for(LONG, |l| finished(l, "slow.toml", "cancelled")), "{}", d.dump());
    assert_eq!(http(api, "POST", &format!("/runs/{slow}/cancel"), &[], "").0, 409, "not running any more");
    assert_eq!(http(api, "POST", "/jobs/nope.toml/trigger", &[], "").0, 404);

    let (status, runs) = http(api, "GET", "/runs?job=quick.toml&limit=5", &[], "");
    assert_eq!(status, 200, "{runs}");
    assert!(runs.contains(&format!("{id}")), "{runs}");
    let (status, metrics) = http(api, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    assert!(metrics.contains("gatherd_runs_total{job=\"quick.toml\",status=\"succeeded\"} 1"), "{metrics}");
    assert!(metrics.contains("gatherd_runs_total{job=\"slow.toml\",status=\"cancelled\"} 1"), "{metrics}");
    assert!(metrics.contains("gatherd_blocking_pool_busy_threads 0"), "{metrics}");
    assert!(metrics.contains("gatherd_runs_in_flight 0"), "{metrics}");
}

#[test]
fn the_api_refuses_a_non_loopback_address_without_a_token() {
    let jobs = tempfile::tempdir().expect("temp");
    let state = tempfile::tempdir().expect("temp");
    let output = gatherd()
        .args(["daemon", "--api-listen", "0.0.0.0:0", "--jobs"])
        .arg(jobs.path())
        .arg("--state")
        .arg(state.path())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("api_token"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn with_a_token_the_api_wants_it() {
    let dir = tempfile::tempdir().expect("temp");
    let config = write(dir.path(), "config.toml", "api_token = \"s3cret\"\n");
    let d = Daemon::start(&[], &["--config", config.to_str().expect("utf-8"), "--api-listen", "127.0.0.1:0"], &[]);
    let api = d.tcp_api();
    assert_eq!(http(api, "GET", "/runs", &[], "").0, 401);
    assert_eq!(http(api, "GET", "/runs", &[("authorization", "Bearer wrong")], "").0, 401);
    assert_eq!(http(api, "GET", "/runs", &[("authorization", "Bearer s3cret")], "").0, 200);
}

#[test]
fn a_token_changed_in_the_config_applies_on_sighup_and_the_old_one_stops_working() {
    let dir = tempfile::tempdir().expect("temp");
    let config = write(dir.path(), "config.toml", "api_token = \"old-token\"\n");
    let d = Daemon::start(&[], &["--config", config.to_str().expect("utf-8"), "--api-listen", "127.0.0.1:0"], &[]);
    let api = d.tcp_api();
    assert_eq!(http(api, "GET", "/runs", &[("authorization", "Bearer old-token")], "").0, 200);
    write(dir.path(), "config.toml", "api_token = \"new-token\"\n");
    d.signal(Signal::SIGHUP);
    assert!(d.wait_for(LONG, |l| l["message"] == "config reloaded"), "{}", d.dump());
    assert_eq!(http(api, "GET", "/runs", &[("authorization", "Bearer old-token")], "").0, 401, "a revoked token");
    assert_eq!(http(api, "GET", "/runs", &[("authorization", "Bearer new-token")], "").0, 200);
}

#[test]
fn the_cli_lists_jobs_triggers_waits_cancels_and_follows_through_the_api() {
    let d = Daemon::start(
        &[
            (
                "quick.rhai",
                "const schedule = \"0 0 3 1 1 *\";\nprint(\"from the script\");\nawait_step(sleep(0.05, \"done\").named(\"nap\"))\n",
            ),
            ("slow.toml", "schedule = \"0 0 3 1 1 *\"\n[[step]]\nname = \"t\"\nsleep = \"300s\"\n"),
        ],
        &[],
        &[],
    );
    let addr = d.api().to_string();
    let cli = |args: &[&str]| gatherd().args(args).args(["--addr", &addr]).output().expect("runs");
    let jobs = cli(&["jobs"]);
    assert_eq!(jobs.status.code(), Some(0), "{}", String::from_utf8_lossy(&jobs.stderr));
    let table = String::from_utf8_lossy(&jobs.stdout);
    assert!(table.contains("quick.rhai") && table.contains("slow.toml"), "{table}");

    let waited = cli(&["trigger", "quick.rhai", "--wait", "--json"]);
    assert_eq!(waited.status.code(), Some(0), "{}", String::from_utf8_lossy(&waited.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&waited.stdout).expect("the run's document");
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(doc["result"], "done");
    assert_eq!(step(&doc, "main/nap")["status"], "succeeded");

    let started = cli(&["trigger", "slow.toml"]);
    let text = String::from_utf8_lossy(&started.stdout).to_string();
    let run: i64 = text.split_whitespace().nth(2).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{text}"));
    assert!(d.wait_for(LONG, |l| is(l, "slow.toml", "run started")), "{}", d.dump());
    let cancelled = cli(&["cancel", &run.to_string(), "--json"]);
    assert_eq!(cancelled.status.code(), Some(0));
    let answer: serde_json::Value = serde_json::from_slice(&cancelled.stdout).expect("JSON");
    assert_eq!(answer["run_id"], run);
    assert!(d.wait_for(LONG, |l| finished(l, "slow.toml", "cancelled")), "{}", d.dump());
    assert_eq!(cli(&["cancel", &run.to_string()]).status.code(), Some(1), "no longer running");

    // The history commands ask the daemon first (no --state here).
    let listed = cli(&["runs", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("runs JSON");
    assert!(rows.as_array().is_some_and(|r| r.iter().any(|r| r["id"] == doc["id"])), "{rows}");
    let shown = cli(&["show", &doc["id"].to_string()]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("nap") && text.contains("timeline") && text.contains("from the script"), "{text}");
    // --follow on a finished run replays its lines and ends.
    let quick_run = doc["id"].as_i64().expect("id").to_string();
    let followed = cli(&["logs", &quick_run, "--follow"]);
    let lines: Vec<String> = String::from_utf8_lossy(&followed.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "the line, then how the run ended: {lines:?}");
    assert!(lines[0].ends_with(" main print from the script"), "{lines:?}");
    assert!(lines[1].starts_with(&format!("run {quick_run} succeeded")), "{lines:?}");
    // No daemon at an address: a clear message.
    let closed = format!("127.0.0.1:{}", closed_port());
    let none = gatherd().args(["jobs", "--addr", &closed]).output().expect("runs");
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no daemon answers"));
}

/// Writes `n` one-shot jobs under a hidden folder of the jobs folder (ignored
/// by the daemon), then renames them all into place as fast as it can.
fn drop_burst(jobs: &std::path::Path, n: usize, job: &str) -> Vec<String> {
    let staging = jobs.join(".staging");
    std::fs::create_dir(&staging).expect("staging folder");
    let names: Vec<String> = (0..n).map(|i| format!("b{i}.toml")).collect();
    for name in &names {
        std::fs::write(staging.join(name), job).expect("write staged job");
    }
    for name in &names {
        std::fs::rename(staging.join(name), jobs.join(name)).expect("rename into place");
    }
    names
}

#[test]
fn a_burst_of_dropped_files_runs_each_once_records_every_run_and_none_again_after_a_restart() {
    let d = Daemon::start(&[], &[], &[]);
    let names = drop_burst(d.jobs.path(), 300, "[[step]]\nname = \"t\"\nsleep = \"0s\"\n");
    let succeeded = |l: &serde_json::Value| l["message"] == "run finished" && l["status"] == "succeeded";
    assert!(d.wait_for_n(Duration::from_secs(60), names.len(), succeeded), "{}", d.dump());
    d.barrier();
    let lines = d.lines();
    for name in &names {
        let started = lines.iter().filter(|l| is(l, name, "run started")).count();
        assert_eq!(started, 1, "{name} started {started} times");
    }
    let (jobs, state) = d.end_with(Signal::SIGTERM);
    for name in &names {
        assert_eq!(run_count(state.path(), name, Some("succeeded")), 1, "{name} in the history");
    }
    let db = rusqlite::Connection::open(state.path().join("gatherd.db")).expect("open the run store");
    let seen: i64 = db
        .query_row("SELECT count(*) FROM jobs WHERE job NOT LIKE ?1", [format!("{BARRIER_PREFIX}%")], |r| r.get(0))
        .expect("count jobs");
    assert_eq!(seen, 300, "every job file's version recorded");

    let d = Daemon::start_with(jobs, state, &[], &[]);
    d.barrier();
    assert_eq!(d.count(|l| l["message"] == "run started" && !is_barrier(l)), 0, "{}", d.dump());
}

#[test]
fn after_kill_9_in_a_burst_every_run_that_started_is_in_the_history_as_interrupted() {
    let d = Daemon::start(&[], &[], &[]);
    let names = drop_burst(d.jobs.path(), 40, "[[step]]\nname = \"t\"\nsleep = \"300s\"\n");
    assert!(d.wait_for_n(LONG, names.len(), |l| l["message"] == "run started"), "{}", d.dump());
    let started: std::collections::BTreeSet<i64> =
        d.lines().iter().filter(|l| l["message"] == "run started").filter_map(|l| l["run_id"].as_i64()).collect();
    assert_eq!(started.len(), names.len(), "each run has its own id: {}", d.dump());
    assert!(started.iter().all(|id| *id > 0), "every run has a row in the history: {}", d.dump());
    let (jobs, state) = d.end_with(Signal::SIGKILL);

    let d = Daemon::start_with(jobs, state, &[], &[]);
    let interrupted: std::collections::BTreeSet<i64> =
        d.lines().iter().filter(|l| l["message"] == "run interrupted").filter_map(|l| l["run_id"].as_i64()).collect();
    assert_eq!(interrupted, started, "{}", d.dump());
    d.barrier();
    assert_eq!(d.count(|l| l["message"] == "run started" && !is_barrier(l)), 0, "not retried: {}", d.dump());
}

/// Replaces the daemon's jobs folder by `replace` (which leaves an empty
/// folder at the same path), then checks the daemon follows the new folder:
/// the old folder's job is removed, a file that was in the new folder from
/// the start runs, and a file dropped later runs too.
fn follows_a_replaced_jobs_folder(replace: impl FnOnce(&Daemon)) {
    let d = Daemon::start(
        &[("old.toml", "schedule = \"0 0 3 1 1 *\"\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\n")],
        &[],
        &[],
    );
    assert!(d.wait_for(LONG, |l| is(l, "old.toml", "job loaded")), "{}", d.dump());
    replace(&d);
    assert!(d.jobs.path().is_dir(), "the replacement leaves a folder at the same path");
    // Written as a deploy would: under an ignored name, then renamed.
    d.drop_file("first.toml", "[[step]]\nname = \"t\"\nsleep = \"10ms\"\n");
    assert!(d.wait_for(LONG, |l| finished(l, "first.toml", "succeeded")), "{}", d.dump());
    assert!(d.wait_for(LONG, |l| is(l, "old.toml", "job file removed")), "the old folder's job stays: {}", d.dump());
    d.drop_file("later.toml", "[[step]]\nname = \"t\"\nsleep = \"10ms\"\n");
    assert!(d.wait_for(LONG, |l| finished(l, "later.toml", "succeeded")), "blind after the replacement: {}", d.dump());
    // The API lists what the folder holds now.
    let (status, jobs) = http(d.api(), "GET", "/jobs", &[], "");
    assert_eq!(status, 200);
    assert!(!jobs.contains("old.toml") && jobs.contains("later.toml"), "{jobs}");
}

#[test]
fn a_jobs_folder_moved_aside_and_replaced_by_another_is_followed() {
    follows_a_replaced_jobs_folder(|d| {
        let jobs = d.jobs.path();
        let aside = jobs.with_extension("old");
        std::fs::rename(jobs, &aside).expect("move the jobs folder aside");
        std::fs::create_dir(jobs).expect("a new jobs folder");
        std::fs::remove_dir_all(&aside).expect("clean up");
    });
}

#[test]
fn a_jobs_folder_removed_and_created_again_is_followed() {
    follows_a_replaced_jobs_folder(|d| {
        std::fs::remove_dir_all(d.jobs.path()).expect("remove the jobs folder");
        std::fs::create_dir(d.jobs.path()).expect("create it again");
    });
}

#[test]
fn a_jobs_folder_gone_for_a_while_is_waited_for_and_followed_when_it_returns() {
    follows_a_replaced_jobs_folder(|d| {
        std::fs::remove_dir_all(d.jobs.path()).expect("remove the jobs folder");
        // It stays away until the daemon has said it waits for it.
        assert!(
            d.wait_for(LONG, |l| l["message"] == "the jobs folder is missing: waiting for it to come back"),
            "{}",
            d.dump()
        );
        // Meanwhile the daemon says it is degraded, and why.
        let degraded = || {
            let (status, body) = http(d.api(), "GET", "/healthz", &[], "");
            status == 503 && body.contains("\"degraded\"") && body.contains("jobs_folder")
        };
        assert!(eventually(LONG, degraded), "healthz never said degraded: {}", d.dump());
        let (_, metrics) = http(d.api(), "GET", "/metrics", &[], "");
        assert!(metrics.contains("gatherd_degraded{what=\"jobs_folder\"} 1"), "{metrics}");
        std::fs::create_dir(d.jobs.path()).expect("create it again");
        assert!(
            eventually(LONG, || http(d.api(), "GET", "/healthz", &[], "").0 == 200),
            "still degraded: {}",
            d.dump()
        );
    });
}

#[test]
fn a_blocking_read_stuck_on_a_fifo_does_not_keep_the_daemon_from_exiting() {
    let d = Daemon::start(&[], &[], &[]);
    let fifo = d.jobs.path().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    // Nobody ever writes: the read blocks its pool thread for good.
    d.drop_file("stuck.toml", "[[step]]\nname = \"r\"\nread_file = \"pipe\"\nblocking = true\ntimeout = \"300ms\"\n");
    assert!(d.wait_for(LONG, |l| finished(l, "stuck.toml", "failed")), "{}", d.dump());
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0), "the daemon did not exit after SIGTERM: {lines:#?}");
}

#[test]
fn an_unparsable_log_level_exits_2_with_a_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = gatherd()
        .args(["daemon", "--jobs"])
        .arg(dir.path())
        .arg("--state")
        .arg(dir.path())
        .args(["--log-level", "gatherd=loud"])
        .output()
        .expect("gatherd runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid log filter \"gatherd=loud\""), "{stderr}");
}

/// `{{ run.id }}` under the daemon is the run's id in the history (the
/// daemon hands it to the executor before the run starts), and
/// `{{ job.name }}` the job's name.
#[test]
fn a_template_under_the_daemon_reads_the_runs_id_in_the_history() {
    let d = Daemon::start(&[], &[], &[]);
    let out = d.state.path().join("out.txt");
    let job = format!(
        "[[step]]\nname = \"mark\"\nshell = \"echo {{{{ job.name }}}} {{{{ run.id }}}} >> {}\"\n",
        out.display()
    );
    d.drop_file("ids.toml", &job);
    assert!(d.wait_for(LONG, |l| finished(l, "ids.toml", "succeeded")), "{}", d.dump());
    let run_id = d.lines().iter().find(|l| is(l, "ids.toml", "run finished")).map(|l| l["run_id"].clone());
    let run_id = run_id.and_then(|v| v.as_i64()).expect("a run id");
    assert!(run_id > 0);
    assert_eq!(std::fs::read_to_string(&out).expect("ran"), format!("ids {run_id}\n"));
}

/// A daemon stopped (`SIGSTOP`, a suspended machine) past some slots of an
/// interval job skips them — it does not run a burst — and records each
/// one `missed`, so the history has a row for every slot.
#[test]
fn slots_passed_while_the_daemon_was_stopped_are_recorded_missed_not_run() {
    let tick = "every = \"1s\"\noverlap = \"allow\"\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\n";
    let d = Daemon::start(&[("tick.toml", tick)], &[], &[]);
    assert!(d.wait_for(LONG, |l| finished(l, "tick.toml", "succeeded")), "{}", d.dump());
    d.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(3500));
    d.signal(Signal::SIGCONT);
    let behind = |l: &serde_json::Value| is(l, "tick.toml", "fell behind the schedule; skipping to the next slot");
    assert!(d.wait_for(LONG, behind), "{}", d.dump());
    let skipped = d.lines().into_iter().find(|l| behind(l)).and_then(|l| l["missed"].as_u64()).unwrap_or(0);
    assert!(skipped >= 2, "3.5 s stopped skips at least 2 slots of 1 s: {}", d.dump());
    let done = d.count(|l| finished(l, "tick.toml", "succeeded"));
    assert!(d.wait_for_n(LONG, done + 2, |l| finished(l, "tick.toml", "succeeded")), "{}", d.dump());
    d.barrier();
    let mut fires: Vec<_> = fire_times(d.state.path(), "tick.toml").into_iter().map(|(fire, _)| fire).collect();
    fires.sort();
    for pair in fires.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::TimeDelta::seconds(1), "a slot without its row: {fires:?}");
    }
    let db = rusqlite::Connection::open_with_flags(
        d.state.path().join("gatherd.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the run store");
    let missed: i64 = db
        .query_row("SELECT count(*) FROM runs WHERE job = 'tick.toml' AND status = 'missed'", [], |r| r.get(0))
        .expect("count missed");
    assert_eq!(missed as u64, skipped, "each skipped slot recorded missed, once: {fires:?}");
}
