//! `gatherd run` end to end: the real binary on the example jobs and on job
//! files written by the test, with servers the test starts on 127.0.0.1.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

/// Start and end (ms) of a step in a `--json` document.
fn span(doc: &serde_json::Value, path: &str) -> (u64, u64) {
    let s = step(doc, path);
    (s["start_ms"].as_u64().expect("started"), s["end_ms"].as_u64().expect("ended"))
}

#[test]
fn seed_sequential_runs_one_step_after_the_other() {
    let jobs = jobs_copy();
    let (code, doc, _) = run_json(&jobs.path().join("seed-sequential.toml"));
    assert_eq!(code, 0);
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(doc["job"], "seed-sequential");
    assert_eq!(doc["result"], json!(["url_content", "file_content"]));
    let (fetch, read) = (span(&doc, "main/fetch"), span(&doc, "main/read"));
    assert!(read.0 >= fetch.1, "read started before fetch ended: {doc:#}");
    assert!(doc["duration_ms"].as_u64().expect("duration") >= 2000);
}

#[test]
fn seed_gather_overlaps_and_keeps_the_written_order() {
    let jobs = jobs_copy();
    let (code, doc, _) = run_json(&jobs.path().join("seed-gather.toml"));
    assert_eq!(code, 0);
    assert_eq!(doc["result"], json!(["url_content", "file_content"]));
    let (fetch, read) = (span(&doc, "main/fetch"), span(&doc, "main/read"));
    assert!(read.1 < fetch.1, "read should finish first: {doc:#}");
    assert!(read.0 < fetch.1 && fetch.0 < read.1, "the two did not overlap: {doc:#}");
    // The binding shape of every step line.
    let line = step(&doc, "main/fetch");
    for key in ["name", "path", "kind", "status", "attempts", "start_ms", "end_ms", "output", "error"] {
        assert!(line.get(key).is_some(), "step line lacks `{key}`: {line:#}");
    }
    for key in ["job", "file", "status", "started_at", "duration_ms", "result", "steps"] {
        assert!(doc.get(key).is_some(), "document lacks `{key}`");
    }
    assert!(chrono::DateTime::parse_from_rfc3339(doc["started_at"].as_str().expect("string")).is_ok());
}

#[test]
fn seed_as_completed_hands_results_on_in_finish_order() {
    let jobs = jobs_copy();
    let (code, doc, _) = run_json(&jobs.path().join("seed-as-completed.toml"));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["result"], json!(["finished: fast", "finished: medium", "finished: slow"]));
    // Each `show` ran as soon as its input arrived: the first before `slow` ended.
    let first_show = span(&doc, "main/show[0]");
    let slow = span(&doc, "main/slow");
    assert!(first_show.0 < slow.1, "each did not pipeline: {doc:#}");
}

#[test]
fn seed_to_thread_runs_the_blocking_step_beside_the_async_ones() {
    let jobs = jobs_copy();
    let (code, doc, _) = run_json(&jobs.path().join("seed-to-thread.toml"));
    assert_eq!(code, 0);
    assert_eq!(doc["result"], json!(["url_content", "file_content", "foo"]));
    let spans = [span(&doc, "main/fetch"), span(&doc, "main/read"), span(&doc, "main/foo")];
    let latest_start = spans.iter().map(|s| s.0).max().unwrap_or(0);
    let earliest_end = spans.iter().map(|s| s.1).min().unwrap_or(0);
    assert!(latest_start < earliest_end, "the three did not all overlap: {doc:#}");
}

#[test]
fn system_report_collects_facts_and_writes_the_report() {
    let jobs = jobs_copy();
    let (code, doc, _) = run_json(&jobs.path().join("system-report.toml"));
    assert_eq!(code, 0, "{doc:#}");
    let report = std::fs::read_to_string(jobs.path().join("system-report.txt")).expect("report written");
    assert!(report.contains("kernel: Linux"), "{report}");
    assert!(report.contains("motto: file_content: gatherd"), "{report}");
    assert_eq!(step(&doc, "main/show")["output"], "system-report.txt written");
}

#[test]
fn health_check_passes_against_a_live_service() {
    let addr = http_server(Reply::Ok("ok"));
    let jobs = jobs_copy();
    let text = std::fs::read_to_string(jobs.path().join("health-check.toml")).expect("read");
    let file = write(jobs.path(), "health-check.toml", &text.replace("127.0.0.1:8080", &addr.to_string()));
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(step(&doc, "main/probe")["output"], "ok");
    let written = std::fs::read_to_string(jobs.path().join("health-check.last.txt")).expect("written");
    assert_eq!(written, "healthy; the service said 2 bytes");
}

#[test]
fn health_check_retries_then_fails_when_nothing_answers() {
    let jobs = jobs_copy();
    let text = std::fs::read_to_string(jobs.path().join("health-check.toml")).expect("read");
    let file = write(jobs.path(), "health-check.toml", &text.replace("8080", &closed_port().to_string()));
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 1);
    assert_eq!(doc["status"], "failed");
    let probe = step(&doc, "main/probe");
    assert_eq!(probe["attempts"], 3);
    assert_eq!(probe["status"], "failed");
    let retried = probe["retried"].as_array().expect("the failed attempts");
    assert_eq!(retried.len(), 2);
    assert_eq!(retried[0]["attempt"], 1);
    assert!(retried[1]["error"].as_str().is_some_and(|e| e.contains("cannot connect")), "{probe:#}");
    assert_eq!(step(&doc, "main/record")["status"], "skipped");
}

fn http_job(dir: &std::path::Path, url: &str, extra: &str) -> std::path::PathBuf {
    write(dir, "web.toml", &format!("[[step]]\nname = \"get\"\nhttp = {{ url = \"{url}\"{extra} }}\n"))
}

#[test]
fn http_step_returns_the_body() {
    let addr = http_server(Reply::Ok("hello from the test"));
    let dir = tempfile::tempdir().expect("temp");
    let (code, doc, _) = run_json(&http_job(dir.path(), &format!("http://{addr}/x"), ""));
    assert_eq!(code, 0);
    assert_eq!(step(&doc, "main/get")["output"], "hello from the test");
}

#[test]
fn http_step_fails_on_a_500() {
    let addr = http_server(Reply::Status(500));
    let dir = tempfile::tempdir().expect("temp");
    let (code, doc, _) = run_json(&http_job(dir.path(), &format!("http://{addr}/"), ""));
    assert_eq!(code, 1);
    let error = step(&doc, "main/get")["error"].as_str().expect("error").to_string();
    assert!(error.contains("500"), "{error}");
}

#[test]
fn http_step_fails_when_the_server_never_answers() {
    let addr = http_server(Reply::Hang);
    let dir = tempfile::tempdir().expect("temp");
    let (code, doc, _) = run_json(&http_job(dir.path(), &format!("http://{addr}/"), ", timeout = \"300ms\""));
    assert_eq!(code, 1);
    let error = step(&doc, "main/get")["error"].as_str().expect("error").to_lowercase();
    assert!(error.contains("timed out") || error.contains("timeout"), "{error}");
}

#[test]
fn a_step_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().expect("temp");
    let file = write(
        dir.path(),
        "stuck.toml",
        "[[step]]\nname = \"stuck\"\nshell = \"echo $$ > pgid; sleep 300 & sleep 300\"\ntimeout = \"1s\"\n",
    );
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 1);
    assert_eq!(step(&doc, "main/stuck")["status"], "timed_out");
    let pgid: i32 = std::fs::read_to_string(dir.path().join("pgid")).expect("pgid").trim().parse().expect("a pid");
    assert!(eventually(Duration::from_secs(10), || !group_alive(pgid)), "process group {pgid} outlived its step");
}

#[test]
fn ctrl_c_cancels_the_run_kills_its_processes_and_exits_130() {
    let dir = tempfile::tempdir().expect("temp");
    let file = write(
        dir.path(),
        "long.toml",
        "[[group]]\nname = \"main\"\nsequence = [\"work\", \"after\"]\n\n\
         [[step]]\nname = \"work\"\nshell = \"echo $$ > pgid; sleep 300 & sleep 300\"\n\n\
         [[step]]\nname = \"after\"\nsleep = \"1s\"\n",
    );
    let (code, doc, pgid) = interrupt_run(dir.path(), &file);
    assert_eq!(code, Some(130));
    assert_eq!(doc["status"], "cancelled");
    assert_eq!(step(&doc, "main/work")["status"], "cancelled");
    assert_eq!(step(&doc, "main/after")["status"], "skipped");
    assert!(eventually(Duration::from_secs(10), || !group_alive(pgid)), "process group {pgid} outlived Ctrl-C");
}

#[test]
fn a_failing_step_exits_1_and_says_why() {
    let dir = tempfile::tempdir().expect("temp");
    let file = write(dir.path(), "fail.toml", "[[step]]\nname = \"boom\"\nshell = \"echo oops >&2; exit 3\"\n");
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 1);
    assert_eq!(doc["status"], "failed");
    let error = step(&doc, "main/boom")["error"].as_str().expect("error").to_string();
    assert!(error.contains('3') && error.contains("oops"), "{error}");
}

#[test]
fn an_invalid_job_file_exits_2_without_running() {
    let dir = tempfile::tempdir().expect("temp");
    let file = write(dir.path(), "bad.toml", "[[step]]\nname = \"a\"\nslep = \"1s\"\n");
    let output = gatherd().arg("run").arg(&file).output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.toml:3:1"), "{stderr}");
}

#[test]
fn human_output_lists_steps_and_draws_a_timeline() {
    let jobs = jobs_copy();
    let output = gatherd().arg("run").arg(jobs.path().join("seed-gather.toml")).output().expect("runs");
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("seed-gather succeeded"), "{stdout}");
    assert!(stdout.contains(r#"result: ["url_content","file_content"]"#), "{stdout}");
    assert!(stdout.contains("timeline"), "{stdout}");
    assert!(stdout.lines().filter(|l| l.contains('|') && l.contains('#')).count() >= 3, "{stdout}");
}

/// Runs `gatherd run FILE --json`, killing it if it is still going after `limit`.
fn run_json_within(file: &std::path::Path, limit: Duration) -> (i32, serde_json::Value) {
    let mut child = gatherd()
        .arg("run")
        .arg(file)
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("gatherd runs");
    let finished = eventually(limit, || child.try_wait().ok().flatten().is_some());
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
        panic!("gatherd run was still going after {limit:?}");
    }
    let output = child.wait_with_output().expect("output");
    let doc = serde_json::from_slice(&output.stdout).expect("one JSON document");
    (output.status.code().unwrap_or(-1), doc)
}

#[test]
fn a_runaway_template_fails_its_step_with_the_budget_error() {
    let dir = tempfile::tempdir().expect("temp");
    let file = write(
        dir.path(),
        "runaway.toml",
        "[[group]]\nname = \"main\"\nsequence = [\"list\", \"huge\"]\n\n\
         [[step]]\nname = \"list\"\nscript = \"let a = []; for i in 0..1000 { a.push(i); } a\"\n\n\
         [[step]]\nname = \"huge\"\nshell = \"echo {% for a in steps.list.output %}{% for b in steps.list.output %}\
         {% for c in steps.list.output %}x{% endfor %}{% endfor %}{% endfor %}\"\n",
    );
    let (code, doc) = run_json_within(&file, Duration::from_secs(30));
    assert_eq!(code, 1);
    let error = step(&doc, "main/huge")["error"].as_str().expect("error").to_string();
    assert!(error.contains("`command`") && error.contains("budget"), "{error}");
}

/// A template that passes `check` and fails at run time (the result has no
/// such key) names the field and the job file's line (issue 14).
#[test]
fn a_render_error_at_run_time_names_the_field_and_the_job_files_line() {
    let dir = tempfile::tempdir().expect("temp");
    let file = write(
        dir.path(),
        "backup.toml",
        "# back up, then say where\n\n[[group]]\nname = \"main\"\nsequence = [\"dump\", \"say\"]\n\n\
         [[step]]\nname = \"dump\"\nsleep = \"0s\"\noutput = { path = \"app.sql\" }\n\n\
         [[step]]\nname = \"say\"\nshell = { command = \"echo {{ steps.dump.output.size }}\" }\n",
    );
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 1, "{doc:#}");
    let error = step(&doc, "main/say")["error"].as_str().expect("error").to_string();
    assert!(error.starts_with("rendering `command` (backup.toml:14): "), "{error}");
    assert!(error.contains("undefined"), "{error}");
}

/// `gatherd run --follow` without a terminal: each output line on stdout as
/// it comes (`STEP STREAM TEXT`), then the report. The step waits for a file
/// the test creates only once the first line has arrived, so a line printed
/// at the end (not live) would never be seen in time.
#[test]
fn run_follow_prints_each_output_line_as_it_comes_then_the_report() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "live.toml",
        "[[step]]\nname = \"work\"\nshell = \"echo first; echo 'warn: slow disk' >&2; while [ ! -e go ]; do sleep 0.05; done; echo second\"\n",
    );
    let mut child = gatherd()
        .arg("run")
        .arg("--follow")
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("gatherd runs");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(30)).expect("a line while the step still runs");
    let mut seen = vec![next(), next()];
    seen.sort();
    assert_eq!(seen, ["main/work stderr warn: slow disk", "main/work stdout first"]);
    std::fs::write(dir.path().join("go"), "").unwrap();
    assert_eq!(next(), "main/work stdout second");
    let rest: Vec<String> = rx.iter().collect();
    reader.join().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(rest.first().is_some_and(|l| l.starts_with("✓ live succeeded")), "{rest:#?}");
    assert!(!rest.iter().any(|l| l.ends_with("stdout first") || l == "log:"), "each line once: {rest:#?}");
}

/// `gatherd run --follow` on a terminal (a pty from util-linux's `script`):
/// the lines come above the progress bar, each once, and the report follows.
#[test]
fn run_follow_on_a_terminal_prints_each_line_once_above_the_bar() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "tty.toml",
        "[[step]]\nname = \"work\"\nshell = \"echo first; echo 'warn: slow disk' >&2; sleep 0.3; echo second\"\n",
    );
    // Plain: the report's statuses are coloured on a terminal otherwise
    // (tests/output_cli.rs covers the colour).
    let command = format!("{} run --follow --color never {}", env!("CARGO_BIN_EXE_gatherd"), file.display());
    let out = on_a_terminal(&command);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("0/1 steps"), "the progress bar was drawn (a terminal): {text}");
    for line in ["main/work stdout first", "main/work stderr warn: slow disk", "main/work stdout second"] {
        assert_eq!(text.matches(line).count(), 1, "{line:?} once in:\n{text}");
    }
    let report = text.find("✓ tty succeeded").unwrap_or_else(|| panic!("no report in:\n{text}"));
    assert!(text.find("main/work stdout second").is_some_and(|at| at < report), "{text}");
}

/// `gatherd run --follow > FILE` from a terminal: stdout is not one, so the
/// lines go to the file (then the report), whatever stderr is; the bar
/// stays on the terminal's stderr without them.
#[test]
fn run_follow_into_a_file_from_a_terminal_writes_the_lines_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "tofile.toml",
        "[[step]]\nname = \"work\"\nshell = \"echo first; echo 'warn: slow disk' >&2; sleep 0.3; echo second\"\n",
    );
    let saved = dir.path().join("out.txt");
    let command = format!("{} run --follow {} > {}", env!("CARGO_BIN_EXE_gatherd"), file.display(), saved.display());
    let out = on_a_terminal(&command);
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{terminal}");
    let text = std::fs::read_to_string(&saved).unwrap();
    for line in ["main/work stdout first", "main/work stderr warn: slow disk", "main/work stdout second"] {
        assert_eq!(text.matches(line).count(), 1, "{line:?} once in the file:\n{text}\nterminal:\n{terminal}");
        assert!(!terminal.contains(line), "{line:?} not on the terminal:\n{terminal}");
    }
    let report = text.find("✓ tofile succeeded").unwrap_or_else(|| panic!("no report in:\n{text}"));
    assert!(text.find("main/work stdout second").is_some_and(|at| at < report), "{text}");
}

/// Whether process `pid` still runs (a zombie has ended: only its entry waits
/// to be reaped).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

/// `gatherd run --follow job | head -1`: the reader goes, so the run is
/// cancelled as on Ctrl-C — every process of the step's group is killed,
/// not only its leader — and gatherd exits 0 quietly.
#[test]
fn run_follow_whose_reader_goes_cancels_the_run_and_kills_the_whole_group() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("worker.pid");
    let file = write(
        dir.path(),
        "gone.toml",
        &format!(
            "[[step]]\nname = \"work\"\nshell = \"sleep 300 & echo $! > {}; echo started; while :; do echo tick; sleep 0.05; done\"\n",
            pid_file.display()
        ),
    );
    let mut child = gatherd()
        .arg("run")
        .arg("--follow")
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gatherd runs");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("a first line");
    assert_eq!(first, "main/work stdout started\n");
    drop(stdout);
    let pid = std::fs::read_to_string(&pid_file).expect("the step wrote its worker's pid").trim().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "gatherd still runs 30 s after its reader went");
        std::thread::sleep(Duration::from_millis(20));
    };
    let worker_alive = alive(&pid);
    if worker_alive {
        let _ = std::process::Command::new("kill").arg(&pid).status();
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr).unwrap();
    assert!(!worker_alive, "the step's background worker (pid {pid}) outlived gatherd run");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "", "quiet");
}

/// `[handlers]` and a `finally` through the real binary: the fan-out's
/// summary runs although an item failed and reads every item's status; the
/// failure handler gets the failed step's error; `on_exit` runs last; the
/// run's status stays the main tree's, and the handlers are roots after
/// `main` in `--json`.
#[test]
fn handlers_and_finally_run_after_a_failure_and_read_how_each_step_ended() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(
        dir.path(),
        "nightly.toml",
        r#"
[handlers]
on_failure = "alert"
on_success = "cheer"
on_exit = "bye"

[[group]]
name = "main"
sequence = ["fan"]

[[group]]
name = "fan"
gather = ["a", "b", "bad"]
on_error = "continue"
finally = "summary"

[[step]]
name = "a"
shell = "echo A"

[[step]]
name = "b"
shell = "echo B"

[[step]]
name = "bad"
shell = "echo disk full >&2; exit 3"

[[step]]
name = "summary"
shell = "echo '{{ steps.a.status }}={{ steps.a.output }} {{ steps.bad.status }}={{ steps.bad.output | default(\"-\") }}'"

[[step]]
name = "alert"
shell = "echo '{{ run.status }} run={{ run.id | default(\"local\") }} {{ steps.bad.error }}'"

[[step]]
name = "cheer"
shell = "echo never"

[[step]]
name = "bye"
exec = ["echo", "{{ job.name }}", "{{ run.started_at | date('%Y%m%d') }}", "{{ steps.alert.status }}"]
"#,
    );
    let output = gatherd().env("TZ", "UTC").arg("run").arg(&file).arg("--json").output().expect("gatherd runs");
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(output.status.code(), Some(1), "{doc:#}");
    assert_eq!(doc["status"], "failed");
    assert_eq!(step(&doc, "main/fan")["status"], "failed");
    assert_eq!(step(&doc, "main/summary")["status"], "succeeded");
    assert_eq!(step(&doc, "main/summary")["output"], "succeeded=A failed=-");
    let alert = step(&doc, "alert")["output"].as_str().expect("alert's output").to_string();
    assert!(alert.starts_with("failed run=local exit status 3"), "{alert}");
    assert!(alert.contains("disk full"), "{alert}");
    let started =
        chrono::DateTime::parse_from_rfc3339(doc["started_at"].as_str().expect("started_at")).expect("a time");
    assert_eq!(step(&doc, "bye")["output"], format!("nightly {} succeeded", started.format("%Y%m%d")));
    let roots: Vec<&str> = doc["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["path"].as_str())
        .filter(|p| !p.contains('/'))
        .collect();
    assert_eq!(roots, ["main", "alert", "bye"], "{doc:#}");
    let alert_start = step(&doc, "alert")["start_ms"].as_u64().expect("started");
    assert!(alert_start >= step(&doc, "main")["end_ms"].as_u64().expect("ended"));
}
