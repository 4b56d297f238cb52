//! What `gatherd jobs`, `runs` and `trigger` show people (issue 15): times
//! in local time with the zone's abbreviation (`TZ` honoured, a job's own
//! `timezone` where it has one, `--utc`), relative columns, job names with
//! or without their extension and a did-you-mean, `--wide`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

const LONG: Duration = Duration::from_secs(30);

/// A job at 02:00 every day in Berlin, as the reproduction had it.
const BERLIN: &str =
    "schedule = \"0 0 2 * * *\"\ntimezone = \"Europe/Berlin\"\n[[step]]\nname = \"a\"\nsleep = \"0s\"\n";
/// The same schedule in the host's zone.
const HOST: &str = "schedule = \"0 0 2 * * *\"\n[[step]]\nname = \"a\"\nsleep = \"0s\"\n";
/// A job run only when triggered.
fn manual() -> String {
    "schedule = \"0 0 3 1 1 *\"\noverlap = \"allow\"\n[[step]]\nname = \"a\"\nsleep = \"0s\"\n".to_string()
}

fn sock(d: &Daemon) -> String {
    format!("unix:{}", d.state.path().join("gatherd.sock").display())
}

/// `gatherd ARGS --addr SOCK` with `TZ` set to `tz`: its stdout, stderr, exit code.
fn cli(d: &Daemon, tz: &str, args: &[&str]) -> (String, String, Option<i32>) {
    let out = gatherd()
        .args(args)
        .args(["--addr", &sock(d)])
        .env("TZ", tz)
        .env_remove("NO_COLOR")
        .output()
        .expect("gatherd runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

/// The line of `table` that names `job`.
fn line_of<'a>(table: &'a str, job: &str) -> &'a str {
    table.lines().find(|l| l.starts_with(job)).unwrap_or_else(|| panic!("no line for {job} in:\n{table}"))
}

/// The reproduction: a Europe/Berlin 02:00 job showed NEXT
/// `01:00:00` (UTC, unlabelled). Now NEXT is the Berlin wall-clock time
/// with its abbreviation when `TZ=Europe/Berlin`; a job with its own
/// `timezone` shows it in that zone whatever the reader's; `--utc` shows
/// UTC, labelled.
#[test]
fn a_berlin_jobs_next_shows_the_berlin_wall_clock_time() {
    let d = Daemon::start(&[("berlin.toml", BERLIN), ("host.toml", HOST)], &[], &[("TZ", "Europe/Berlin")]);
    let (table, stderr, code) = cli(&d, "Europe/Berlin", &["jobs"]);
    assert_eq!(code, Some(0), "{stderr}");
    let header = table.lines().next().unwrap_or("");
    for column in ["NEXT", "LEFT", "LAST", "PASSED"] {
        assert!(header.contains(column), "no {column} column:\n{table}");
    }
    for job in ["berlin.toml", "host.toml"] {
        let line = line_of(&table, job);
        assert!(
            line.contains(" 02:00:00 CET") || line.contains(" 02:00:00 CEST"),
            "{job}'s NEXT in Berlin time:\n{table}"
        );
        assert!(line.contains(" in "), "{job}'s LEFT says how long until then:\n{table}");
    }
    let (table, _, _) = cli(&d, "UTC", &["jobs"]);
    let berlin = line_of(&table, "berlin.toml");
    assert!(berlin.contains(" 02:00:00 CE"), "a job's own zone, whatever the reader's:\n{table}");
    let host = line_of(&table, "host.toml");
    assert!(host.contains(" 01:00:00 UTC") || host.contains(" 00:00:00 UTC"), "the reader's zone:\n{table}");
    let (table, _, _) = cli(&d, "Europe/Berlin", &["jobs", "--utc"]);
    let berlin = line_of(&table, "berlin.toml");
    assert!(berlin.contains(" 01:00:00 UTC") || berlin.contains(" 00:00:00 UTC"), "--utc:\n{table}");
}

/// After a run, `jobs` shows when it was (LAST, local) and how long ago
/// (PASSED); `runs` shows STARTED in local time with the zone, or UTC with
/// `--utc`.
#[test]
fn last_and_started_are_local_times_with_the_zone_and_passed_is_relative() {
    let d = Daemon::start(&[("manual.toml", &manual())], &[], &[]);
    let (status, body) = http(d.api(), "POST", "/jobs/manual.toml/trigger", &[], "");
    assert_eq!(status, 201, "{body}");
    assert!(d.wait_for(LONG, |l| finished(l, "manual.toml", "succeeded")), "{}", d.dump());
    let (table, stderr, code) = cli(&d, "Asia/Tokyo", &["jobs"]);
    assert_eq!(code, Some(0), "{stderr}");
    let line = line_of(&table, "manual.toml");
    assert!(line.contains(" JST"), "LAST in the reader's zone:\n{table}");
    assert!(line.contains(" ago  ") || line.contains(" just now  "), "PASSED:\n{table}");
    let (table, _, _) = cli(&d, "Asia/Tokyo", &["runs"]);
    assert!(table.contains(" JST"), "STARTED in local time:\n{table}");
    let (table, _, _) = cli(&d, "Asia/Tokyo", &["runs", "--utc"]);
    assert!(table.contains(" UTC") && !table.contains(" JST"), "--utc:\n{table}");
}

/// A job is named by its path with or without its extension everywhere
/// (`trigger`, `runs --job`, the API's `/jobs/{job}`); `a` for `a.toml` and
/// `a.rhai` is an error naming both; a misspelt name gets a did-you-mean,
/// in the CLI and in the API's 404 body; `runs --job` of a name no job has
/// and no run had says so instead of listing nothing.
#[test]
fn jobs_are_named_with_or_without_their_extension_and_misspellings_get_a_did_you_mean() {
    let rhai = "const schedule = \"0 0 3 1 1 *\";\nsleep(0)\n";
    let d = Daemon::start(&[("seed-gather.toml", &manual()), ("a.toml", &manual()), ("a.rhai", rhai)], &[], &[]);
    let (out, err, code) = cli(&d, "UTC", &["trigger", "seed-gather"]);
    assert_eq!(code, Some(0), "trigger without the extension: {out}{err}");
    assert!(d.wait_for(LONG, |l| finished(l, "seed-gather.toml", "succeeded")), "{}", d.dump());
    let (out, err, code) = cli(&d, "UTC", &["runs", "--job", "seed-gather", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let rows: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "runs --job without the extension: {out}");

    let (out, err, code) = cli(&d, "UTC", &["trigger", "a"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(err.contains("a.rhai") && err.contains("a.toml"), "ambiguous: both named: {err}");

    let (out, err, code) = cli(&d, "UTC", &["trigger", "seed-gathr"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(err.contains("did you mean `seed-gather.toml`?"), "{err}");

    let (out, err, code) = cli(&d, "UTC", &["runs", "--job", "health-check"]);
    assert_ne!(code, Some(0), "runs --job of no job must not list nothing: {out}");
    assert!(err.contains("no job `health-check`"), "{err}");
    let state = d.state.path().to_str().expect("UTF-8").to_string();
    let out = gatherd().args(["runs", "--job", "health-check", "--state", &state]).output().expect("runs");
    assert_ne!(out.status.code(), Some(0), "from the database too: {}", String::from_utf8_lossy(&out.stdout));
    let out = gatherd().args(["runs", "--job", "seed-gather", "--json", "--state", &state]).output().expect("runs");
    let rows: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "from the database, without the extension");

    let (status, body) = http(d.api(), "GET", "/jobs/seed-gather", &[], "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("JSON")["job"], "seed-gather.toml", "{body}");
    let (status, body) = http(d.api(), "POST", "/jobs/seed-gather/trigger", &[], "");
    assert_eq!(status, 201, "{body}");
    let (status, body) = http(d.api(), "GET", "/jobs/seed-gathr", &[], "");
    assert_eq!(status, 404, "{body}");
    let error = serde_json::from_str::<Value>(&body).expect("JSON")["error"].as_str().unwrap_or("").to_string();
    assert!(error.contains("did you mean `seed-gather.toml`?"), "{body}");
    let (status, body) = http(d.api(), "POST", "/jobs/a/trigger", &[], "");
    assert!(status == 409 || status == 400, "{status} {body}");
    assert!(body.contains("a.rhai") && body.contains("a.toml"), "{body}");
}

/// `--wide` never cuts a cell, even on a terminal narrower than the table.
#[test]
fn wide_cuts_nothing_on_a_narrow_terminal() {
    let long =
        "schedule = \"0 30 2 * * Mon-Fri\"\ntimezone = \"Europe/Berlin\"\n[[step]]\nname = \"a\"\nsleep = \"0s\"\n";
    let d = Daemon::start(&[("a-rather-long-job-name-for-a-narrow-terminal.toml", long)], &[], &[]);
    let bin = env!("CARGO_BIN_EXE_gatherd");
    let cmd = |extra: &str| format!("stty rows 24 cols 40; {bin} jobs --addr {}{extra}", sock(&d));
    let cut = support::on_a_terminal(&cmd(""));
    let text = String::from_utf8_lossy(&cut.stdout);
    assert!(text.contains('…'), "a narrow terminal cuts:\n{text}");
    let wide = support::on_a_terminal(&cmd(" --wide"));
    let text = String::from_utf8_lossy(&wide.stdout);
    assert!(!text.contains('…'), "--wide cuts nothing:\n{text}");
    assert!(text.contains("schedule 0 30 2 * * Mon-Fri (Europe/Berlin)"), "{text}");
    let runs = support::on_a_terminal(&format!("stty rows 24 cols 40; {bin} runs --wide --addr {}", sock(&d)));
    assert!(runs.status.success(), "runs --wide: {}", String::from_utf8_lossy(&runs.stdout));
}

/// With `--json`, an error is one JSON document on stdout, `{"error":
/// "what: why"}` (the API's error shape), and nothing is on stderr; the
/// exit status is the same as without.
#[test]
fn with_json_an_error_is_a_json_document_on_stdout() {
    let empty = tempfile::tempdir().expect("dir");
    let state = empty.path().to_str().expect("UTF-8");
    let nowhere = format!("unix:{}", empty.path().join("no.sock").display());
    let all: [&[&str]; 5] = [
        &["runs", "--json", "--state", state],
        &["show", "1", "--json", "--state", state],
        &["logs", "1", "--json", "--state", state],
        &["trigger", "x", "--json", "--addr", &nowhere],
        &["jobs", "--json", "--addr", &nowhere],
    ];
    for args in all {
        let out = gatherd().args(args).env_remove("GATHERD_CONFIG").output().expect("gatherd");
        let shown = args.join(" ");
        assert_eq!(out.status.code(), Some(1), "{shown}");
        assert!(out.stderr.is_empty(), "{shown}: {}", String::from_utf8_lossy(&out.stderr));
        let doc: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{shown}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
        let error = doc["error"].as_str().unwrap_or_else(|| panic!("{shown}: {doc}"));
        assert!(error.contains("no run history") || error.contains("no daemon answers"), "{shown}: {error}");
    }
}
