//! Rhai jobs end to end: the real binary runs the example scripts and scripts
//! the test writes, with servers the test starts on 127.0.0.1.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

fn span(doc: &serde_json::Value, path: &str) -> (u64, u64) {
    let s = step(doc, path);
    (s["start_ms"].as_u64().expect("started"), s["end_ms"].as_u64().expect("ended"))
}

#[test]
fn seed_gather_rhai_keeps_the_written_order() {
    let jobs = jobs_copy();
    let (code, doc, _) = run_json(&jobs.path().join("seed-gather.rhai"));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["job"], "seed-gather");
    assert_eq!(doc["result"], json!(["url_content", "file_content"]));
    let (fetch, read) = (span(&doc, "main/gather_1/fetch"), span(&doc, "main/gather_1/read"));
    assert!(read.1 < fetch.1 && read.0 < fetch.1 && fetch.0 < read.1, "{doc:#}");
    assert_eq!(step(&doc, "main")["kind"], "script");
    assert_eq!(doc["logs"][0]["text"], r#"["url_content", "file_content"]"#);
}

#[test]
fn seed_as_completed_rhai_handles_results_in_finish_order() {
    let jobs = jobs_copy();
    let (code, doc, _) = run_json(&jobs.path().join("seed-as-completed.rhai"));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["result"], json!(["fast", "medium", "slow"]));
    let logs: Vec<&str> = doc["logs"].as_array().expect("logs").iter().filter_map(|l| l["text"].as_str()).collect();
    assert_eq!(logs, vec!["finished: fast", "finished: medium", "finished: slow"]);
    // The first line was printed before the slow step ended.
    let slow_end = doc["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["output"] == "slow"))
        .and_then(|s| s["end_ms"].as_u64())
        .expect("the slow step");
    assert!(doc["logs"][0]["at_ms"].as_u64().expect("at") < slow_end, "{doc:#}");
}

#[test]
fn seed_to_thread_rhai_overlaps_the_blocking_closure_with_async_steps() {
    let jobs = jobs_copy();
    let (code, doc, _) = run_json(&jobs.path().join("seed-to-thread.rhai"));
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["result"], json!(["url_content", "file_content", "foo"]));
    assert_eq!(step(&doc, "main/gather_1/foo")["kind"], "to_thread");
    let spans = [span(&doc, "main/gather_1/fetch"), span(&doc, "main/gather_1/read"), span(&doc, "main/gather_1/foo")];
    let latest_start = spans.iter().map(|s| s.0).max().unwrap_or(0);
    let earliest_end = spans.iter().map(|s| s.1).min().unwrap_or(0);
    assert!(latest_start < earliest_end, "the three did not all overlap: {doc:#}");
}

#[test]
fn poll_endpoints_reports_up_and_down_services() {
    let jobs = jobs_copy();
    let up1 = http_server(Reply::Ok("hello"));
    let up2 = http_server(Reply::Ok("hi"));
    let text = std::fs::read_to_string(jobs.path().join("poll-endpoints.rhai")).expect("read");
    let text = text
        .replace("127.0.0.1:8081", &up1.to_string())
        .replace("127.0.0.1:8082", &up2.to_string())
        .replace("127.0.0.1:8083", &format!("127.0.0.1:{}", closed_port()));
    let file = write(jobs.path(), "poll-endpoints.rhai", &text);
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["result"], json!({ "up": 2, "total": 3 }));
    let summary = std::fs::read_to_string(jobs.path().join("endpoints-summary.txt")).expect("summary written");
    assert!(summary.starts_with("2 of 3 endpoints up\n"), "{summary}");
    assert!(summary.contains("probe_3: DOWN"), "{summary}");
    assert_eq!(step(&doc, "main/as_completed_1/probe_3")["attempts"], 2);
}

#[test]
fn an_uncaught_step_failure_fails_the_job_naming_the_step_and_line() {
    let dir = tempfile::tempdir().expect("temp");
    let file = write(dir.path(), "fail.rhai", "let a = 1;\nawait_step(shell(\"exit 3\").named(\"boom\"));\n");
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 1);
    let error = doc["error"].as_str().expect("error");
    assert!(error.contains("`boom` failed: exit status 3") && error.contains("line 2"), "{error}");
}

#[test]
fn a_runaway_script_is_stopped_and_recorded_as_failed() {
    let dir = tempfile::tempdir().expect("temp");
    let file = write(dir.path(), "spin.rhai", "const max_operations = 100000;\nlet x = 0;\nloop { x += 1; }\n");
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 1);
    assert!(doc["error"].as_str().expect("error").contains("operations limit (100000)"), "{doc:#}");
}

#[test]
fn ctrl_c_stops_the_script_and_kills_its_processes() {
    let dir = tempfile::tempdir().expect("temp");
    let file = write(
        dir.path(),
        "long.rhai",
        "await_step(shell(\"echo $$ > pgid; sleep 300 & sleep 300\").named(\"work\"));\nawait_step(sleep(1).named(\"after\"));\n",
    );
    let (code, doc, pgid) = interrupt_run(dir.path(), &file);
    assert_eq!(code, Some(130));
    assert_eq!(doc["status"], "cancelled");
    assert_eq!(step(&doc, "main/work")["status"], "cancelled");
    assert!(doc["steps"].as_array().expect("steps").iter().all(|s| s["path"] != "main/after"));
    assert!(eventually(Duration::from_secs(10), || !group_alive(pgid)), "process group {pgid} outlived Ctrl-C");
}

#[test]
fn check_reports_a_syntax_error_with_its_place() {
    let dir = tempfile::tempdir().expect("temp");
    let file = write(dir.path(), "bad.rhai", "let x = 1;\nlet y = (x + ;\n");
    let output = gatherd().arg("check").arg(&file).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.rhai:2:"), "{stderr}");
}

#[test]
fn check_reads_settings_without_running_the_script() {
    let dir = tempfile::tempdir().expect("temp");
    let marker = dir.path().join("ran");
    let file = write(
        dir.path(),
        "scheduled.rhai",
        &format!(
            "const schedule = \"*/10 * * * * *\";\nawait_step(write_file(\"{}\", \"x\"));\nthrow \"never\";\n",
            marker.display()
        ),
    );
    let output = gatherd().arg("check").arg(&file).output().expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!marker.exists(), "check ran the script");
}

#[test]
fn a_toml_script_step_reads_earlier_outputs() {
    let dir = tempfile::tempdir().expect("temp");
    let file = write(
        dir.path(),
        "calc.toml",
        r#"[[step]]
name = "numbers"
sleep = "10ms"
output = [1, 2, 3]

[[step]]
name = "total"
script = """
let sum = 0;
for n in steps.numbers.output { sum += n; }
sum * 10
"""
"#,
    );
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(step(&doc, "main/total")["output"], 60);
    assert_eq!(step(&doc, "main/total")["kind"], "script");
}

#[test]
fn the_config_sets_the_default_limits_and_a_job_overrides_them() {
    let dir = tempfile::tempdir().expect("temp");
    let config = write(dir.path(), "config.toml", "[script_limits]\nmax_operations = 20000\n");
    let spin = write(dir.path(), "spin.rhai", "loop { }\n");
    let output = gatherd().arg("run").arg(&spin).arg("--json").arg("--config").arg(&config).output().expect("runs");
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert!(doc["error"].as_str().expect("error").contains("operations limit (20000)"), "{doc:#}");
    let own = write(dir.path(), "own.rhai", "const max_operations = 30000;\nloop { }\n");
    let output = gatherd().arg("run").arg(&own).arg("--json").arg("--config").arg(&config).output().expect("runs");
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert!(doc["error"].as_str().expect("error").contains("operations limit (30000)"), "{doc:#}");
}

#[test]
fn a_bad_config_is_refused_with_its_place() {
    let dir = tempfile::tempdir().expect("temp");
    let config = write(dir.path(), "config.toml", "[script_limits]\nwall_tme = \"1s\"\n");
    let job = write(dir.path(), "ok.rhai", "1\n");
    let output = gatherd().arg("run").arg(&job).arg("--config").arg(&config).output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("config.toml") && stderr.contains("wall_tme"), "{stderr}");
}

#[test]
fn a_toml_script_step_in_each_reads_its_input() {
    let dir = tempfile::tempdir().expect("temp");
    let file = write(
        dir.path(),
        "each.toml",
        r#"[[group]]
name = "main"
as_completed = ["slow", "fast"]
each = "shout"

[[step]]
name = "slow"
sleep = "200ms"
output = "slow"

[[step]]
name = "fast"
sleep = "50ms"
output = "fast"

[[step]]
name = "shout"
script = "input.to_upper() + \"!\""
"#,
    );
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["result"], json!(["FAST!", "SLOW!"]));
}

/// A Rhai job's top-level `fn on_failure(run)` and `fn on_exit(run)` run
/// after its body, as roots after `main`, with `run.status` and
/// `run.error`; `on_success` does not; the run's status stays the body's.
#[test]
fn a_rhai_jobs_on_failure_and_on_exit_functions_run_after_a_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(
        dir.path(),
        "nightly.rhai",
        r#"
fn on_failure(run) {
    sleep(0, run.status + ": " + run.error).named("alert").await_step()
}
fn on_success(run) {
    sleep(0, "never").named("cheer").await_step()
}
fn on_exit(run) {
    sleep(0, "bye " + run.status).named("bye").await_step()
}
sleep(0.1, "x").named("first").await_step();
throw "the disk is full";
"#,
    );
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(doc["status"], "failed");
    assert!(doc["error"].as_str().unwrap_or_default().contains("the disk is full"), "{doc:#}");
    let alert = step(&doc, "on_failure/alert")["output"].as_str().expect("alert ran").to_string();
    assert!(alert.starts_with("failed: ") && alert.contains("the disk is full"), "{alert}");
    assert_eq!(step(&doc, "on_exit/bye")["output"], "bye failed");
    let roots: Vec<&str> = doc["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["path"].as_str())
        .filter(|p| !p.contains('/'))
        .collect();
    assert_eq!(roots, ["main", "on_failure", "on_exit"], "{doc:#}");
}

/// `run_id()` is the history's id of the run under the daemon, and `()`
/// under `gatherd run`; `job_name()` is the job's name in both.
#[test]
fn run_id_is_the_historys_under_the_daemon_and_unit_under_run() {
    let d = Daemon::start(&[], &[], &[]);
    d.drop_file("ids.rhai", "print(`ids: ${job_name()} ${run_id()}`);\nrun_id()\n");
    assert!(d.wait_for(Duration::from_secs(20), |l| finished(l, "ids.rhai", "succeeded")), "{}", d.dump());
    let run_id = d.lines().iter().find(|l| is(l, "ids.rhai", "run finished")).map(|l| l["run_id"].clone());
    let run_id = run_id.and_then(|v| v.as_i64()).expect("a run id");
    let printed =
        d.lines().iter().find_map(|l| l["message"].as_str().filter(|m| m.starts_with("ids: ")).map(String::from));
    assert_eq!(printed.as_deref(), Some(format!("ids: ids {run_id}").as_str()), "{}", d.dump());

    let dir = tempfile::tempdir().expect("temp");
    let file = write(dir.path(), "ids.rhai", "[job_name(), run_id()]\n");
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["result"], json!(["ids", null]));
}
