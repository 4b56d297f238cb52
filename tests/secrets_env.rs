//! Secrets and the job environment, end to end: a secret's value reaches the
//! steps that use it and nothing that reports a run; a job sees only the
//! environment it is given, never the daemon's own.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{Daemon, finished, gatherd, http, write};

/// The secret of these tests: long, and in no other text.
const SECRET: &str = "tok-4f9c2e81d7b3a6";

/// A job that prints the secret (stdout, stderr, from its env), returns it
/// as an output, and fails with it in its error; and a Rhai job that prints
/// it and throws it.
const LEAKY_TOML: &str = r#"
env = { TOKEN = "{{ secrets.api }}" }

[[group]]
name = "main"
gather = ["echo", "fail"]
on_error = "continue"

[[step]]
name = "echo"
shell = "echo \"token=$TOKEN\"; echo \"stderr {{ secrets.api }}\" >&2; printf '%s' '{{ secrets.api }}'"

[[step]]
name = "fail"
shell = "echo 'failing with {{ secrets.api }}' >&2; exit 3"
"#;

const LEAKY_RHAI: &str = r#"
let s = secret("api");
print("printed " + s);
let out = await_step(shell("echo from-shell " + s));
throw "thrown " + s + " " + out;
"#;

fn config_with_secret(dir: &Path) -> std::path::PathBuf {
    write(dir, "api.secret", &format!("{SECRET}\n"));
    write(dir, "config.toml", "log_output = true\n\n[secrets]\napi = { file = \"api.secret\" }\n")
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "the secret's value is in {what}:\n{text}");
}

#[test]
fn a_secrets_value_is_in_no_log_line_api_answer_json_or_byte_of_the_database() {
    let etc = tempfile::tempdir().expect("temp");
    let config = config_with_secret(etc.path());
    let config_arg = config.to_str().expect("utf-8 path");
    let d = Daemon::start(&[("leak.toml", LEAKY_TOML), ("leak-rhai.rhai", LEAKY_RHAI)], &["--config", config_arg], &[]);
    assert!(d.wait_for(Duration::from_secs(30), |l| finished(l, "leak.toml", "failed")), "{}", d.dump());
    assert!(d.wait_for(Duration::from_secs(30), |l| finished(l, "leak-rhai.rhai", "failed")), "{}", d.dump());

    // The daemon's JSON log, output lines included (`log_output = true`).
    let log = d.dump();
    assert_no_secret("the daemon's log", &log);
    assert!(log.contains("token=********"), "the output line was not logged masked:\n{log}");

    // Every API answer about the runs.
    let (status, runs) = http(d.api(), "GET", "/runs", &[], "");
    assert_eq!(status, 200, "{runs}");
    assert_no_secret("GET /runs", &runs);
    let runs: Value = serde_json::from_str(&runs).expect("JSON");
    let ids: Vec<i64> = runs["runs"]
        .as_array()
        .or_else(|| runs.as_array())
        .expect("a list of runs")
        .iter()
        .filter(|r| r["job"].as_str().is_some_and(|j| j.starts_with("leak")))
        .map(|r| r["id"].as_i64().expect("an id"))
        .collect();
    assert_eq!(ids.len(), 2, "{runs}");
    let mut seen_masked = false;
    for id in &ids {
        for path in [format!("/runs/{id}"), format!("/runs/{id}/logs"), format!("/runs/{id}/events")] {
            let (status, body) = http(d.api(), "GET", &path, &[], "");
            assert_eq!(status, 200, "{path}: {body}");
            assert_no_secret(&path, &body);
            seen_masked |= body.contains("********");
        }
        // The CLI's --json, through the daemon.
        for args in [vec!["show", "--json"], vec!["logs", "--json"]] {
            let out = gatherd()
                .args(&args)
                .arg(id.to_string())
                .arg("--state")
                .arg(d.state.path())
                .output()
                .expect("gatherd runs");
            assert_no_secret(&format!("gatherd {args:?}"), &String::from_utf8_lossy(&out.stdout));
        }
    }
    assert!(seen_masked, "no answer showed the masked value: the lines were not recorded at all");
    let (_, run) = http(d.api(), "GET", &format!("/runs/{}", ids[0]), &[], "");
    let run: Value = serde_json::from_str(&run).expect("JSON");
    let steps = run["steps"].to_string();
    assert!(steps.contains("failing with ********") || steps.contains("thrown ********"), "{steps}");

    // The database and its WAL, byte for byte, while the daemon runs and after.
    let db_bytes = |state: &Path| -> Vec<u8> {
        let mut all = Vec::new();
        for name in ["gatherd.db", "gatherd.db-wal"] {
            all.extend(std::fs::read(state.join(name)).unwrap_or_default());
        }
        all
    };
    let needle = SECRET.as_bytes();
    let leaks = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!leaks(&db_bytes(d.state.path())), "the secret's value is in the database's bytes (running)");
    let state = d.state.path().to_path_buf();
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
    assert!(!leaks(&db_bytes(&state)), "the secret's value is in the database's bytes (stopped)");

    // `gatherd run --json` of the same jobs, with the same config.
    let jobs = tempfile::tempdir().expect("temp");
    for (name, text) in [("leak.toml", LEAKY_TOML), ("leak-rhai.rhai", LEAKY_RHAI)] {
        let file = write(jobs.path(), name, text);
        let out = gatherd().arg("run").arg(&file).args(["--json", "--config", config_arg]).output().expect("run");
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_no_secret("gatherd run --json", &stdout);
        assert_no_secret("gatherd run's stderr", &String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("********"), "{stdout}");
    }
}

#[test]
fn a_job_sees_the_minimal_set_pass_env_and_gatherd_vars_never_the_daemons_own() {
    let etc = tempfile::tempdir().expect("temp");
    let config = write(etc.path(), "config.toml", "pass_env = [\"PASSED_*\", \"EXACT_ONE\"]\n");
    let job = "[[step]]\nname = \"show\"\nexec = [\"env\"]\n";
    let d = Daemon::start(
        &[("env-show.toml", job)],
        &["--config", config.to_str().expect("utf-8")],
        &[
            ("SECRET_ONLY_IN_DAEMON", "daemon-only"),
            ("GATHERD_TOKEN", "daemon-token"),
            ("PASSED_A", "a"),
            ("EXACT_ONE", "e"),
            ("EXACT_ONE_NOT", "n"),
        ],
    );
    assert!(d.wait_for(Duration::from_secs(30), |l| finished(l, "env-show.toml", "succeeded")), "{}", d.dump());
    let (_, runs) = http(d.api(), "GET", "/runs?job=env-show.toml", &[], "");
    let runs: Value = serde_json::from_str(&runs).expect("JSON");
    let list = runs["runs"].as_array().or_else(|| runs.as_array()).expect("runs").clone();
    let id = list[0]["id"].as_i64().expect("id");
    let (_, run) = http(d.api(), "GET", &format!("/runs/{id}"), &[], "");
    let run: Value = serde_json::from_str(&run).expect("JSON");
    let output = run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["path"] == "main/show"))
        .and_then(|s| s["output"].as_str())
        .unwrap_or_else(|| panic!("no output: {run}"))
        .to_string();
    let vars: std::collections::BTreeMap<&str, &str> = output.lines().filter_map(|l| l.split_once('=')).collect();
    assert!(!vars.contains_key("SECRET_ONLY_IN_DAEMON"), "the job saw the daemon's own variable:\n{output}");
    assert!(!vars.contains_key("GATHERD_TOKEN"), "the job saw the daemon's GATHERD_TOKEN:\n{output}");
    assert!(!vars.contains_key("EXACT_ONE_NOT"), "{output}");
    assert_eq!(vars.get("PASSED_A"), Some(&"a"), "{output}");
    assert_eq!(vars.get("EXACT_ONE"), Some(&"e"), "{output}");
    assert_eq!(vars.get("GATHERD_JOB"), Some(&"env-show"), "{output}");
    assert_eq!(vars.get("GATHERD_RUN_ID").map(|v| v.to_string()), Some(id.to_string()), "{output}");
    assert_eq!(vars.get("GATHERD_STEP"), Some(&"main/show"), "{output}");
    assert_eq!(vars.get("GATHERD_ATTEMPT"), Some(&"1"), "{output}");
    assert!(vars.contains_key("PATH") && vars.contains_key("HOME") && vars.contains_key("USER"), "{output}");
    let allowed = [
        "PATH",
        "LANG",
        "LC_ALL",
        "TZ",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "PASSED_A",
        "EXACT_ONE",
        "GATHERD_JOB",
        "GATHERD_RUN_ID",
        "GATHERD_STEP",
        "GATHERD_ATTEMPT",
    ];
    let extra: Vec<&&str> = vars.keys().filter(|k| !allowed.contains(k)).collect();
    assert!(extra.is_empty(), "variables beyond the documented set: {extra:?}\n{output}");
    d.stop();
}

/// `gatherd run --json FILE --config CONFIG` with `envs`: the document.
fn run_json(file: &Path, config: &Path, envs: &[(&str, &str)]) -> (Option<i32>, Value, String) {
    let mut cmd = gatherd();
    cmd.arg("run").arg(file).arg("--json").arg("--config").arg(config);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("gatherd run");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    // With `--json` an error is `{"error": ...}` on stdout, stderr empty.
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if let Some(error) = doc["error"].as_str() {
        stderr.push_str(error);
    }
    (out.status.code(), doc, stderr)
}

#[test]
fn file_env_and_credential_secrets_each_resolve_and_reach_the_step() {
    let dir = tempfile::tempdir().expect("temp");
    let creds = tempfile::tempdir().expect("temp");
    write(dir.path(), "from-file", "value-from-file\n");
    write(creds.path(), "webhook", "value-from-credential");
    let config = write(
        dir.path(),
        "config.toml",
        "[secrets]\na = { file = \"from-file\" }\nb = { env = \"B_SECRET\" }\nc = { credential = \"webhook\" }\n",
    );
    let job = write(
        dir.path(),
        "uses.toml",
        "[[step]]\nname = \"w\"\nwrite_file = { path = \"out.txt\", content = \"{{ secrets.a }}|{{ secrets.b }}|{{ secrets.c }}\" }\n",
    );
    let envs = [("B_SECRET", "value-from-env"), ("CREDENTIALS_DIRECTORY", creds.path().to_str().expect("utf-8"))];
    let (code, doc, stderr) = run_json(&job, &config, &envs);
    assert_eq!(code, Some(0), "{doc} {stderr}");
    let written = std::fs::read_to_string(dir.path().join("out.txt")).expect("written");
    assert_eq!(written, "value-from-file|value-from-env|value-from-credential");

    // Each source that cannot be read stops the run before it starts, naming the secret and where.
    let (code, _, stderr) = run_json(&job, &config, &envs[..1]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("secret `c`") && stderr.contains("CREDENTIALS_DIRECTORY"), "{stderr}");
    let (code, _, stderr) = run_json(&job, &config, &envs[1..]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("secret `b`") && stderr.contains("`B_SECRET`"), "{stderr}");
    std::fs::remove_file(dir.path().join("from-file")).expect("rm");
    let (code, _, stderr) = run_json(&job, &config, &envs);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("secret `a`") && stderr.contains("from-file"), "{stderr}");
}

#[test]
fn the_daemon_refuses_to_start_with_a_secret_it_cannot_read() {
    let etc = tempfile::tempdir().expect("temp");
    let config = write(etc.path(), "config.toml", "[secrets]\ndb = { file = \"/nonexistent/db-password\" }\n");
    let jobs = tempfile::tempdir().expect("temp");
    let state = tempfile::tempdir().expect("temp");
    let (code, stderr) =
        support::refused_start(jobs.path(), state.path(), &["--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("secret `db`") && stderr.contains("/nonexistent/db-password"), "{stderr}");
}

#[test]
fn a_secret_the_config_does_not_define_fails_the_step_naming_it() {
    let dir = tempfile::tempdir().expect("temp");
    let config = write(dir.path(), "config.toml", "[secrets]\nknown = { env = \"K\" }\n");
    let job = write(dir.path(), "j.toml", "[[step]]\nname = \"s\"\nshell = \"echo {{ secrets.unknown }}\"\n");
    let (code, doc, stderr) = run_json(&job, &config, &[("K", "kkkkkk")]);
    assert_eq!(code, Some(1), "{stderr}");
    let error = doc["steps"][1]["error"].as_str().unwrap_or_else(|| panic!("{doc}"));
    assert!(error.contains("unknown secret `unknown`") && error.contains("`known`"), "{error}");
}

#[test]
fn check_with_a_config_rejects_a_job_reading_an_undefined_secret_at_its_place() {
    let dir = tempfile::tempdir().expect("temp");
    let config = write(dir.path(), "config.toml", "[secrets]\napi_token = { env = \"T\" }\n");
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).expect("mkdir");
    write(&jobs, "ok.toml", "[[step]]\nname = \"s\"\nshell = \"curl -H 'X: {{ secrets.api_token }}'\"\n");
    write(&jobs, "bad.toml", "[[step]]\nname = \"s\"\nshell = \"curl -H 'X: {{ secrets.api_tokn }}'\"\n");
    write(&jobs, "bad-rhai.rhai", "let x = 1;\nlet t = secret(\"nope\");\nt\n");
    let out = gatherd().arg("check").arg("--config").arg(&config).arg(&jobs).output().expect("check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("ok      ") && stdout.contains("ok.toml"), "{stdout}");
    assert!(stdout.contains("invalid ") && stdout.contains("bad.toml"), "{stdout}");
    assert!(stderr.contains("unknown secret `api_tokn`") && stderr.contains("bad.toml:3:"), "{stderr}");
    assert!(stderr.contains("did you mean `api_token`?"), "{stderr}");
    assert!(stderr.contains("unknown secret `nope`") && stderr.contains("bad-rhai.rhai:2:"), "{stderr}");
    // Without the config, the name is not checked.
    let out = gatherd().arg("check").arg(jobs.join("bad.toml")).output().expect("check");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn job_level_env_env_file_and_cwd_are_inherited_and_a_steps_own_win() {
    let dir = tempfile::tempdir().expect("temp");
    std::fs::create_dir(dir.path().join("work")).expect("mkdir");
    std::fs::create_dir(dir.path().join("other")).expect("mkdir");
    write(dir.path(), ".env", "# settings\nFROM_FILE=file\nBOTH=file\nexport QUOTED=\"a b\"\n");
    let config = write(dir.path(), "config.toml", "");
    let job = write(
        dir.path(),
        "j.toml",
        r#"env_file = ".env"
env = { BOTH = "table", STEP_WINS = "job" }
cwd = "work"

[[step]]
name = "inherits"
shell = "echo $FROM_FILE $BOTH $QUOTED $STEP_WINS; basename $(pwd)"

[[step]]
name = "own"
shell = { command = "echo $STEP_WINS; basename $(pwd)", env = { STEP_WINS = "step" }, cwd = "other" }
"#,
    );
    let (code, doc, stderr) = run_json(&job, &config, &[]);
    assert_eq!(code, Some(0), "{doc} {stderr}");
    assert_eq!(doc["steps"][1]["output"], "file table a b job\nwork", "{doc}");
    assert_eq!(doc["steps"][2]["output"], "step\nother", "{doc}");

    // The same as Rhai consts; `env(name)` reads the declared env and pass_env only.
    let rhai = write(
        dir.path(),
        "r.rhai",
        r#"const env_file = ".env";
const env = #{ BOTH: "table" };
const cwd = "work";
let out = await_step(shell("echo $FROM_FILE $BOTH; basename $(pwd)"));
[out, env("BOTH"), env("FROM_FILE"), env("PASSED"), env("ONLY_HERE")]
"#,
    );
    let config = write(dir.path(), "config2.toml", "pass_env = [\"PASSED\"]\n");
    let (code, doc, stderr) = run_json(&rhai, &config, &[("PASSED", "p"), ("ONLY_HERE", "x")]);
    assert_eq!(code, Some(0), "{doc} {stderr}");
    assert_eq!(doc["result"], serde_json::json!(["file table\nwork", "table", "file", "p", null]), "{doc}");
}

#[test]
fn a_bad_env_file_line_is_a_diagnostic_at_its_place() {
    let dir = tempfile::tempdir().expect("temp");
    write(dir.path(), "vars.env", "OK=1\nthis line has no equals\n9BAD=2\n");
    let job = write(dir.path(), "j.toml", "env_file = \"vars.env\"\n\n[[step]]\nname = \"s\"\nshell = \"true\"\n");
    let out = gatherd().arg("check").arg(&job).output().expect("check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line without `=`") && stderr.contains("vars.env:2:1"), "{stderr}");
    assert!(stderr.contains("invalid variable name \"9BAD\"") && stderr.contains("vars.env:3:1"), "{stderr}");
    assert!(stderr.contains("`env_file` of"), "{stderr}");
    let missing = write(dir.path(), "m.toml", "env_file = \"nope.env\"\n\n[[step]]\nname = \"s\"\nshell = \"true\"\n");
    let out = gatherd().arg("check").arg(&missing).output().expect("check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read the env file \"nope.env\"") && stderr.contains("m.toml:1:12"), "{stderr}");
}

#[test]
fn secrets_are_read_again_on_sighup_and_an_unreadable_one_keeps_the_old() {
    let etc = tempfile::tempdir().expect("temp");
    let out = tempfile::tempdir().expect("temp");
    write(etc.path(), "api.secret", "first-value\n");
    let config = write(etc.path(), "config.toml", "[secrets]\napi = { file = \"api.secret\" }\n");
    let target = out.path().join("out.txt");
    let job = format!(
        "[[step]]\nname = \"w\"\nwrite_file = {{ path = \"{}\", content = \"{{{{ secrets.api }}}}\" }}\n",
        target.display()
    );
    let d = Daemon::start(&[("uses.toml", &job)], &["--config", config.to_str().expect("utf-8")], &[]);
    let runs = |n: usize| d.wait_for_n(Duration::from_secs(30), n, |l| finished(l, "uses.toml", "succeeded"));
    assert!(runs(1), "{}", d.dump());
    assert_eq!(std::fs::read_to_string(&target).expect("written"), "first-value");

    write(etc.path(), "api.secret", "second-value\n");
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(d.wait_for(Duration::from_secs(30), |l| l["message"] == "config reloaded"), "{}", d.dump());
    let (status, body) = http(d.api(), "POST", "/trigger/uses.toml", &[], "");
    assert!(status < 300, "{status} {body}");
    assert!(runs(2), "{}", d.dump());
    assert_eq!(std::fs::read_to_string(&target).expect("written"), "second-value");

    std::fs::remove_file(etc.path().join("api.secret")).expect("rm");
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let kept = |l: &Value| {
        l["message"] == "keeping the old config" && l["error"].as_str().is_some_and(|e| e.contains("secret `api`"))
    };
    assert!(d.wait_for(Duration::from_secs(30), kept), "{}", d.dump());
    let (status, body) = http(d.api(), "POST", "/trigger/uses.toml", &[], "");
    assert!(status < 300, "{status} {body}");
    assert!(runs(3), "{}", d.dump());
    assert_eq!(std::fs::read_to_string(&target).expect("written"), "second-value");
    d.stop();
}
