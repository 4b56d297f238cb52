//! Output hygiene (issue 15): every command that prints to stdout exits
//! quietly when its reader has gone (`gatherd runs | head -1`), as `ls` or
//! ripgrep do: exit 0, nothing on stderr, no panic.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;

const LONG: Duration = Duration::from_secs(30);

/// A Rhai job that prints many lines (for `logs`) and has a few steps (for
/// `show`), run only when triggered.
const TALKER: &str = r#"
const schedule = "0 0 3 1 1 *";
const overlap = "allow";
for i in 0..200 {
    print(`line ${i} of what the talker says`);
}
gather([sleep(0, "a").named("a"), sleep(0, "b").named("b")])
"#;

/// How the test takes `stdout` from the command.
#[derive(Debug, Clone, Copy)]
enum Reader {
    /// The pipe's reader is closed before the command starts: its first
    /// write meets the closed pipe, whatever it prints.
    GoneAtStart,
    /// `| head -1`: one line is read, then the reader is closed.
    GoneAfterOneLine,
}

/// Runs `cmd` with its stdout a pipe whose reader goes as `reader` says.
fn through_closed_pipe(mut cmd: Command, reader: Reader) -> Output {
    match reader {
        Reader::GoneAtStart => {
            let (read, write) = nix::unistd::pipe().expect("a pipe");
            drop(read);
            let child = cmd.stdout(Stdio::from(write)).stderr(Stdio::piped()).spawn().expect("gatherd starts");
            drop(cmd); // the parent's copy of the write end
            child.wait_with_output().expect("gatherd ends")
        }
        Reader::GoneAfterOneLine => {
            let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("gatherd starts");
            let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
            let mut first = String::new();
            stdout.read_line(&mut first).expect("one line");
            drop(stdout);
            let mut stderr = String::new();
            child.stderr.take().expect("piped stderr").read_to_string(&mut stderr).expect("stderr");
            let status = child.wait().expect("gatherd ends");
            Output { status, stdout: first.into_bytes(), stderr: stderr.into_bytes() }
        }
    }
}

/// How `args` (with `dir` as the working folder) fails to exit 0 with
/// nothing on stderr beyond `allowed` lines, whichever way its reader goes.
fn noisy(args: &[&str], dir: &Path, allowed: &[&str]) -> Vec<String> {
    let mut failures = Vec::new();
    for reader in [Reader::GoneAtStart, Reader::GoneAfterOneLine] {
        let mut cmd = gatherd();
        cmd.args(args).current_dir(dir).env_remove("GATHERD_STATE").env_remove("GATHERD_ADDR");
        let out = through_closed_pipe(cmd, reader);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let noise: Vec<&str> = stderr.lines().filter(|l| !allowed.iter().any(|a| l.contains(a))).collect();
        if out.status.code() != Some(0) || !noise.is_empty() {
            let first = stderr.lines().find(|l| !l.starts_with("note:") && !l.is_empty()).unwrap_or("");
            let why = stderr.lines().find(|l| l.contains("Broken pipe")).unwrap_or(first);
            failures.push(format!("`gatherd {}` ({reader:?}): {}; {why}", args.join(" "), out.status));
        }
    }
    failures
}

/// Asserts that every command in `all` exits 0 quietly (see [`noisy`]).
fn assert_quiet(all: &[(Vec<&str>, &[&str])], dir: &Path) {
    let failures: Vec<String> = all.iter().flat_map(|(args, allowed)| noisy(args, dir, allowed)).collect();
    assert!(failures.is_empty(), "not quiet through a closed pipe:\n{}", failures.join("\n"));
}

#[test]
fn every_printing_command_through_a_closed_pipe_exits_0_quietly() {
    let d = Daemon::start(&[("talker.rhai", TALKER)], &[], &[]);
    let (status, body) = http(d.api(), "POST", "/jobs/talker.rhai/trigger", &[], "");
    assert_eq!(status, 201, "{body}");
    let run = serde_json::from_str::<Value>(&body).expect("JSON")["run_id"].as_i64().expect("a run id");
    assert!(d.wait_for(LONG, |l| finished(l, "talker.rhai", "succeeded")), "{}", d.dump());
    let state = d.state.path().to_str().expect("a UTF-8 path").to_string();
    let jobs = d.jobs.path().to_path_buf();
    let sock = format!("unix:{}", d.state.path().join("gatherd.sock").display());
    let run = run.to_string();
    let notify_config = d.state.path().join("notify.toml");
    std::fs::write(&notify_config, "[notify.ok]\ncommand = [\"true\"]\n").expect("write a config");
    let notify_config = notify_config.to_str().expect("utf-8").to_string();
    let waiting: &[&str] = &["waiting for it", "  succeeded ", "  skipped "];
    let all: Vec<(Vec<&str>, &[&str])> = vec![
        // Through the daemon.
        (vec!["jobs", "--addr", &sock], &[]),
        (vec!["jobs", "--json", "--addr", &sock], &[]),
        (vec!["runs", "--addr", &sock], &[]),
        (vec!["runs", "--json", "--addr", &sock], &[]),
        (vec!["show", &run, "--addr", &sock], &[]),
        (vec!["show", &run, "--json", "--addr", &sock], &[]),
        (vec!["logs", &run, "--addr", &sock], &[]),
        (vec!["logs", &run, "--json", "--addr", &sock], &[]),
        (vec!["logs", &run, "--follow", "--addr", &sock], &[]),
        (vec!["trigger", "talker.rhai", "--addr", &sock], &[]),
        (vec!["trigger", "talker.rhai", "--wait", "--addr", &sock], waiting),
        (vec!["trigger", "talker.rhai", "--wait", "--json", "--addr", &sock], waiting),
        (vec!["trigger", "talker.rhai", "--follow", "--addr", &sock], waiting),
        (vec!["pause", "talker", "--addr", &sock], &[]),
        (vec!["resume", "talker", "--addr", &sock], &[]),
        (vec!["pause", "talker", "--json", "--addr", &sock], &[]),
        (vec!["resume", "talker", "--json", "--addr", &sock], &[]),
        // From the database.
        (vec!["runs", "--state", &state], &[]),
        (vec!["show", &run, "--state", &state], &[]),
        (vec!["logs", &run, "--state", &state], &[]),
        (vec!["logs", &run, "--json", "--state", &state], &[]),
        // No daemon or history at all.
        (vec!["completions", "bash"], &[]),
        (vec!["completions", "zsh"], &[]),
        (vec!["man"], &[]),
        (vec!["man", "run"], &[]),
        (vec!["notify", "test", "ok", "--config", &notify_config], &[]),
        (vec!["run", "talker.rhai", "--json"], &[]),
        (vec!["--help"], &[]),
        (vec!["runs", "--help"], &[]),
        (vec!["--version"], &[]),
    ];
    assert_quiet(&all, &jobs);
}

/// `cancel` prints one line; each of two runs in flight is cancelled with
/// its reader gone one way.
#[test]
fn cancel_through_a_closed_pipe_exits_0_quietly() {
    let sleeper =
        "const schedule = \"0 0 3 1 1 *\";\nconst overlap = \"allow\";\nawait_step(sleep(60).named(\"nap\"));\n";
    let d = Daemon::start(&[("sleeper.rhai", sleeper)], &[], &[]);
    let sock = format!("unix:{}", d.state.path().join("gatherd.sock").display());
    let mut failures = Vec::new();
    for reader in [Reader::GoneAtStart, Reader::GoneAfterOneLine] {
        let (status, body) = http(d.api(), "POST", "/jobs/sleeper.rhai/trigger", &[], "");
        assert_eq!(status, 201, "{body}");
        let run = serde_json::from_str::<Value>(&body).expect("JSON")["run_id"].as_i64().expect("a run id");
        let mut cmd = gatherd();
        cmd.args(["cancel", &run.to_string(), "--addr", &sock]);
        let out = through_closed_pipe(cmd, reader);
        if out.status.code() != Some(0) || !out.stderr.is_empty() {
            failures.push(format!("{reader:?}: {}; {}", out.status, String::from_utf8_lossy(&out.stderr)));
        }
    }
    assert!(failures.is_empty(), "`gatherd cancel` not quiet through a closed pipe:\n{}", failures.join("\n"));
    assert!(d.wait_for_n(LONG, 2, |l| finished(l, "sleeper.rhai", "cancelled")), "{}", d.dump());
}

/// `check` (its lines, `--next`, `--json`) and `gatherd run` (its report,
/// and `--follow`'s lines while the run goes on) need no daemon.
#[test]
fn check_and_run_through_a_closed_pipe_exit_0_quietly() {
    let jobs = jobs_copy();
    support::write(jobs.path(), "talker.rhai", TALKER);
    let all: Vec<(Vec<&str>, &[&str])> = vec![
        (vec!["check", "."], &[]),
        (vec!["check", "--json", "."], &[]),
        (vec!["run", "talker.rhai"], &[]),
        (vec!["run", "--follow", "talker.rhai"], &[]),
    ];
    assert_quiet(&all, jobs.path());
}

/// `runs --limit` takes what the API takes, 1 to 1000 (`--before` pages on):
/// 0 is refused with the range, not turned into one row (through the daemon)
/// or fifty (from the database).
#[test]
fn runs_limit_out_of_range_is_refused_with_the_range() {
    let d = Daemon::start(&[("talker.rhai", TALKER)], &[], &[]);
    for _ in 0..2 {
        let (status, body) = http(d.api(), "POST", "/jobs/talker.rhai/trigger", &[], "");
        assert_eq!(status, 201, "{body}");
    }
    assert!(d.wait_for_n(LONG, 2, |l| finished(l, "talker.rhai", "succeeded")), "{}", d.dump());
    let sock = format!("unix:{}", d.state.path().join("gatherd.sock").display());
    let state = d.state.path().to_str().expect("a UTF-8 path");
    for where_ in [["--addr", &*sock], ["--state", state]] {
        for limit in ["0", "1001"] {
            let out = gatherd().args(["runs", "--limit", limit]).args(where_).output().expect("gatherd runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.code() == Some(2) && stderr.contains("1..=1000") && out.stdout.is_empty(),
                "runs --limit {limit} {where_:?}: {}\nstdout:\n{}\nstderr:\n{stderr}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let out = gatherd().args(["runs", "--json", "--limit", "1000"]).args(where_).output().expect("gatherd runs");
        let rows: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(rows.as_array().map(Vec::len), Some(2), "{where_:?}");
    }
}

/// The daemon's `pretty` log into a pipe (a file, supervisord, docker) is
/// plain text: no ANSI escape, where tracing's default coloured it.
#[test]
fn pretty_logs_into_a_pipe_have_no_escapes() {
    let jobs = tempfile::tempdir().expect("jobs");
    let state = tempfile::tempdir().expect("state");
    support::write(jobs.path(), "hello.toml", "[[step]]\nname = \"hi\"\nshell = \"echo hi\"\n");
    let mut child = gatherd()
        .args(["daemon", "--log-format", "pretty", "--jobs"])
        .arg(jobs.path())
        .arg("--state")
        .arg(state.path())
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gatherd daemon");
    let mut log = Vec::new();
    let mut reader = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while reader.read_line(&mut line).expect("a log line") > 0 {
        log.extend_from_slice(line.as_bytes());
        if line.contains("run finished") {
            break;
        }
        line.clear();
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("run finished"), "the daemon ran the job: {text}");
    assert!(!log.contains(&0x1b), "an escape in the pretty log into a pipe: {text:?}");
}

/// `check`'s diagnostics are coloured on a terminal, and not when
/// `NO_COLOR` is set (no-color.org), nor into a pipe.
#[test]
fn check_honours_no_color_on_a_terminal() {
    let dir = tempfile::tempdir().expect("dir");
    let bad = support::write(dir.path(), "bad.toml", "[[step]]\nname = \"a\"\nsleep = \"1 fortnight\"\n");
    let bin = env!("CARGO_BIN_EXE_gatherd");
    let coloured = support::on_a_terminal(&format!("env -u NO_COLOR {bin} check {}", bad.display()));
    assert!(coloured.stdout.contains(&0x1b), "a terminal gets colour: {}", String::from_utf8_lossy(&coloured.stdout));
    let plain = support::on_a_terminal(&format!("NO_COLOR=1 {bin} check {}", bad.display()));
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(text.contains("invalid duration"), "{text}");
    assert!(!plain.stdout.contains(&0x1b), "NO_COLOR=1 on a terminal: {text:?}");
    let piped = gatherd().arg("check").arg(&bad).env_remove("NO_COLOR").output().expect("check");
    assert!(!piped.stderr.contains(&0x1b), "{}", String::from_utf8_lossy(&piped.stderr));
}

/// `--color always` colours `run`'s and `show`'s reports even through a
/// pipe, and wins over `NO_COLOR` (clig.dev: the flag wins); `--color
/// never`, or `NO_COLOR` with the default `auto`, keeps a terminal plain;
/// `auto` on a terminal colours the statuses; a pipe by default never sees
/// an ESC byte.
#[test]
fn color_flag_colours_run_and_show_and_never_or_no_color_keeps_them_plain() {
    let d = Daemon::start(&[("talker.rhai", TALKER)], &[], &[]);
    let (status, body) = http(d.api(), "POST", "/jobs/talker.rhai/trigger", &[], "");
    assert_eq!(status, 201, "{body}");
    let run = serde_json::from_str::<Value>(&body).expect("JSON")["run_id"].as_i64().expect("a run id").to_string();
    assert!(d.wait_for(LONG, |l| finished(l, "talker.rhai", "succeeded")), "{}", d.dump());
    let state = d.state.path().to_str().expect("a UTF-8 path").to_string();
    let jobs = d.jobs.path().to_path_buf();
    let green = b"\x1b[32msucceeded\x1b[0m";
    let has = |out: &[u8], what: &[u8]| out.windows(what.len()).any(|w| w == what);
    for args in [vec!["run", "talker.rhai"], vec!["show", &run, "--state", &state]] {
        let shown = args.join(" ");
        let piped = |extra: &[&str], env: Option<&str>| {
            let mut cmd = gatherd();
            cmd.args(&args).args(extra).current_dir(&jobs).env_remove("NO_COLOR");
            if let Some(v) = env {
                cmd.env("NO_COLOR", v);
            }
            cmd.output().expect("gatherd")
        };
        let out = piped(&["--color", "always"], None);
        assert!(
            has(&out.stdout, green),
            "{shown} --color always into a pipe: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let out = piped(&["--color", "always"], Some("1"));
        assert!(has(&out.stdout, green), "{shown} --color always wins over NO_COLOR");
        for (extra, env) in [(&[][..], None), (&["--color", "never"][..], None), (&["--color", "auto"][..], None)] {
            let out = piped(extra, env);
            assert!(out.status.success(), "{shown} {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
            assert!(
                !out.stdout.contains(&0x1b),
                "{shown} {extra:?} into a pipe: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(!out.stderr.contains(&0x1b), "{shown} {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let bin = env!("CARGO_BIN_EXE_gatherd");
        // stderr elsewhere: `run`'s progress bar moves the cursor with escapes.
        let line = |extra: &str| format!("sh -c 'cd {} && {bin} {shown}{extra} 2>/dev/null'", jobs.display());
        let coloured = support::on_a_terminal(&format!("env -u NO_COLOR {}", line("")));
        assert!(has(&coloured.stdout, green), "{shown} on a terminal: {}", String::from_utf8_lossy(&coloured.stdout));
        for plain in [format!("NO_COLOR=1 {}", line("")), format!("env -u NO_COLOR {}", line(" --color never"))] {
            let out = support::on_a_terminal(&plain);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("succeeded"), "{plain}: {text}");
            assert!(!out.stdout.contains(&0x1b), "{plain}: {text:?}");
        }
    }
}
