//! Step output capture end to end (issue 13): the same head + marker + tail
//! of a chatty step's lines in `gatherd run --json` and in the daemon's
//! history, with `max_output` set in a TOML job, a Rhai job and the config.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Daemon, eventually, finished, gatherd, is, run_json, write};

const LONG: Duration = Duration::from_secs(30);

/// `seq 1 1000` (3,893 bytes) with head = tail = 20: lines 1..9 (18 bytes;
/// "10\n" would pass 20), then the last 20 bytes cut at line boundaries
/// (997..1000, 17 bytes: "996\n" lost its start), 3,858 bytes dropped.
fn expected() -> Vec<(String, String)> {
    let mut want: Vec<(String, String)> = (1..=9).map(|i| ("stdout".into(), i.to_string())).collect();
    want.push(("stdout".into(), "… 3,858 bytes dropped …".into()));
    want.extend((997..=1000).map(|i| ("stdout".to_string(), i.to_string())));
    want
}

/// The (stream, text) of every log line of step `path` in a run document.
fn lines_of(doc: &Value, path: &str) -> Vec<(String, String)> {
    doc["logs"]
        .as_array()
        .map(|logs| {
            logs.iter()
                .filter(|l| l["path"] == path)
                .map(|l| (l["stream"].as_str().unwrap_or("").to_string(), l["text"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

const TOML_JOB: &str = "[max_output]\nhead = 20\ntail = 20\n\n[[step]]\nname = \"count\"\nshell = \"seq 1 1000\"\n";

#[test]
fn run_json_keeps_the_head_the_marker_and_the_tail_of_a_toml_job() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "count.toml", TOML_JOB);
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(lines_of(&doc, "main/count"), expected());
}

#[test]
fn a_rhai_job_sets_max_output_as_a_const_with_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let job = "const max_output = #{ head: 20, tail: 20 };\nawait_step(shell(\"seq 1 1000\").named(\"count\"))\n";
    let file = write(dir.path(), "count.rhai", job);
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 0, "{doc:#}");
    let path = doc["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "count"))
        .and_then(|s| s["path"].as_str())
        .expect("the step")
        .to_string();
    assert_eq!(lines_of(&doc, &path), expected());
}

#[test]
fn the_configs_max_output_applies_to_jobs_without_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "count.toml", "[[step]]\nname = \"count\"\nshell = \"seq 1 1000\"\n");
    let config = write(dir.path(), "config.toml", "[max_output]\nhead = 20\ntail = 20\n");
    let out = gatherd().arg("run").arg(&file).arg("--json").arg("--config").arg(&config).output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(lines_of(&doc, "main/count"), expected());
}

#[test]
fn a_bad_max_output_is_a_diagnostic_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bad.toml",
        "[max_output]\nhead = -1\ntial = 5\n\n[[step]]\nname = \"a\"\nshell = \"true\"\n",
    );
    let out = gatherd().arg("check").arg(&file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("bad.toml:2:8"), "{text}");
    assert!(text.contains("`max_output.head` must be a number of bytes from 0 to 1073741824, found -1"), "{text}");
    assert!(text.contains("bad.toml:3:1"), "{text}");
    assert!(text.contains("unknown key `tial` in `max_output`"), "{text}");
}

#[test]
fn the_daemons_history_keeps_the_same_lines_as_run() {
    let d = Daemon::start(&[], &[], &[]);
    d.drop_file("count.toml", TOML_JOB);
    assert!(d.wait_for(LONG, |l| finished(l, "count.toml", "succeeded")), "{}", d.dump());
    let run_id = d.lines().iter().find(|l| is(l, "count.toml", "run finished")).and_then(|l| l["run_id"].as_i64());
    let run_id = run_id.expect("a run id").to_string();
    let state = d.state.path().to_str().expect("utf-8").to_string();
    let show = || -> Value {
        let out = gatherd().args(["show", &run_id, "--json", "--state", &state]).output().expect("show");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    // The daemon may still be committing the last batch: poll until it shows.
    assert!(eventually(LONG, || show()["status"] == "succeeded"), "the run never showed as succeeded");
    assert_eq!(lines_of(&show(), "main/count"), expected());
}

/// Retention (`keep_runs`) prunes a run's output lines with the run: after
/// three runs of a job keeping one, only the newest run's lines are left in
/// the history, and `gatherd logs` of a pruned run says it is not there.
#[test]
fn retention_removes_a_pruned_runs_output_lines() {
    let d = Daemon::start(&[], &[], &[]);
    d.drop_file("kept.toml", "keep_runs = 1\n\n[[step]]\nname = \"say\"\nshell = \"echo line-$$\"\n");
    assert!(d.wait_for(LONG, |l| finished(l, "kept.toml", "succeeded")), "{}", d.dump());
    for n in 2..=3 {
        // The last run's task prunes after its "run finished" line and holds
        // the job's slot until then (409 "still going"): ask again until taken.
        let mut answer = (0, String::new());
        assert!(
            eventually(LONG, || {
                answer = support::http(d.api(), "POST", "/jobs/kept.toml/trigger", &[], "");
                answer.0 != 409
            }),
            "the trigger kept answering 409: {}",
            answer.1
        );
        assert_eq!(answer.0, 201, "{}", answer.1);
        assert!(d.wait_for_n(LONG, n, |l| finished(l, "kept.toml", "succeeded")), "{}", d.dump());
    }
    let ids: Vec<String> = d
        .lines()
        .iter()
        .filter(|l| is(l, "kept.toml", "run finished"))
        .filter_map(|l| l["run_id"].as_i64().map(|id| id.to_string()))
        .collect();
    assert_eq!(ids.len(), 3, "{}", d.dump());
    let state = d.state.path().to_str().expect("utf-8").to_string();
    let db = d.state.path().join("gatherd.db");
    let lines_in_db = || -> Vec<(i64, String)> {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys; db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True); \
                 [print(r, t) for r, t in db.execute('SELECT run_id, text FROM logs ORDER BY id')]",
            ])
            .arg(&db)
            .output()
            .expect("python3");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' ').and_then(|(r, t)| Some((r.parse().ok()?, t.to_string()))))
            .collect()
    };
    // Pruning follows each run's end once its events are written: poll.
    let newest: i64 = ids[2].parse().expect("an id");
    assert!(
        eventually(LONG, || { lines_in_db().iter().all(|(r, _)| *r == newest) && lines_in_db().len() == 1 }),
        "only the newest run's line is left: {:?}",
        lines_in_db()
    );
    assert!(lines_in_db()[0].1.starts_with("line-"), "{:?}", lines_in_db());
    let out = gatherd().args(["logs", &ids[0], "--state", &state]).output().expect("logs");
    assert!(!out.status.success(), "a pruned run's logs: {}", String::from_utf8_lossy(&out.stdout));
}

/// `print(1)` .. `print(100000)` (588,895 bytes with their newlines) with
/// head = tail = 20: prints 1..9 (18 bytes), then the marker, then the last
/// 20 bytes cut at line boundaries (99998..100000, 19 bytes; the newline
/// before them ended 99997, dropped with it).
fn expected_prints(stream: &str) -> Vec<(String, String)> {
    let total: u64 = (1..=100_000u64).map(|i| i.to_string().len() as u64 + 1).sum();
    let mut want: Vec<(String, String)> = (1..=9).map(|i| (stream.into(), i.to_string())).collect();
    let dropped = total - 18 - 19;
    let grouped = dropped
        .to_string()
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|c| std::str::from_utf8(c).expect("digits"))
        .collect::<Vec<_>>()
        .join(",");
    want.push((stream.into(), format!("… {grouped} bytes dropped …")));
    want.extend((99_998..=100_000).map(|i| (stream.to_string(), i.to_string())));
    want
}

#[test]
fn a_script_steps_prints_keep_the_head_the_marker_and_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let job = "[max_output]\nhead = 20\ntail = 20\n\n[[step]]\nname = \"talk\"\nscript = \"for i in 1..=100000 { print(i) } 0\"\n";
    let file = write(dir.path(), "talk.toml", job);
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(lines_of(&doc, "main/talk"), expected_prints("print"));
}

#[test]
fn a_rhai_jobs_prints_keep_the_head_the_marker_and_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let job = "const max_output = #{ head: 20, tail: 20 };\nfor i in 1..=100000 { debug(i) }\n";
    let file = write(dir.path(), "talk.rhai", job);
    let (code, doc, _) = run_json(&file);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(lines_of(&doc, "main"), expected_prints("debug"));
}
