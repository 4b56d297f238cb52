//! Step output capture (issue 13): every line a step prints is one `Log`
//! event of the run, whatever the step's outcome. Real processes, so these
//! run on a real clock (a paused one would jump past a process's output).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::testing::{line, run_with};
use super::*;
use crate::job::*;

fn t(s: &str) -> Template {
    Template::parse(s).unwrap()
}

fn step(name: &str, kind: StepKind) -> Step {
    Step { name: name.into(), kind, blocking: false, timeout: None, retry: Retry::default() }
}

fn shell(name: &str, command: &str) -> Step {
    step(name, StepKind::Shell(Box::new(ShellStep { command: t(command), process: ProcessSpec::default() })))
}

fn job_of(dir: &std::path::Path, steps: Vec<Step>) -> Job {
    let root = Group {
        name: "main".into(),
        mode: GroupMode::Sequence,
        children: steps.into_iter().map(Node::Step).collect(),
        limit: None,
        on_error: OnError::Continue,
        timeout: None,
        each: None,
        finally: None,
    };
    Job::for_test("capture", dir, Node::Group(root))
}

async fn run_steps(steps: Vec<Step>) -> (RunOutcome, RunReport) {
    run_with(job_of(std::path::Path::new("/"), steps), RunContext::new(BlockingPool::new(2))).await
}

/// The report's lines of step `path`, as (stream, text).
fn lines_of(report: &RunReport, path: &str) -> Vec<(Stream, String)> {
    report.logs.iter().filter(|l| l.path == path).map(|l| (l.stream, l.text.clone())).collect()
}

fn out(s: &str) -> (Stream, String) {
    (Stream::Stdout, s.to_string())
}

fn err(s: &str) -> (Stream, String) {
    (Stream::Stderr, s.to_string())
}

#[tokio::test]
async fn a_failed_steps_stdout_is_kept_as_lines_and_as_its_output() {
    let (_, report) = run_steps(vec![shell("migrate", "echo 'ERROR: relation users does not exist'; exit 1")]).await;
    assert_eq!(lines_of(&report, "main/migrate"), vec![out("ERROR: relation users does not exist")]);
    let l = line(&report, "main/migrate");
    assert_eq!(l.status, RecordedStatus::Finished(Status::Failed));
    assert_eq!(l.output, json!("ERROR: relation users does not exist"));
    assert_eq!(l.error.as_deref(), Some("exit status 1"));
}

#[tokio::test]
async fn a_successful_steps_stderr_is_kept() {
    for blocking in [false, true] {
        let mut s = shell("tar", "echo 'tar: file changed as we read it' >&2; echo done");
        s.blocking = blocking;
        let (outcome, report) = run_steps(vec![s]).await;
        assert_eq!(outcome.status, Status::Succeeded);
        let mut got = lines_of(&report, "main/tar");
        got.sort_by_key(|(s, t)| (s.as_str(), t.clone()));
        assert_eq!(got, vec![err("tar: file changed as we read it"), out("done")], "blocking={blocking}");
        assert_eq!(line(&report, "main/tar").output, json!("done"));
    }
}

#[tokio::test]
async fn a_timed_out_step_keeps_what_it_printed_before_the_kill() {
    let mut s = shell("slow", "echo 'step 1 of 3 done'; echo 'warming up' >&2; sleep 300");
    s.timeout = Some(Duration::from_secs(2));
    let (_, report) = run_steps(vec![s]).await;
    assert_eq!(line(&report, "main/slow").status, RecordedStatus::Finished(Status::TimedOut));
    let mut got = lines_of(&report, "main/slow");
    got.sort_by_key(|(s, t)| (s.as_str(), t.clone()));
    assert_eq!(got, vec![err("warming up"), out("step 1 of 3 done")]);
}

#[tokio::test]
async fn a_cancelled_step_keeps_what_it_printed_before_the_kill() {
    let dir = tempfile::tempdir().unwrap();
    let pid = dir.path().join("pid");
    let job = job_of(dir.path(), vec![shell("long", "echo 'copied 10 files'; echo $$ > pid; sleep 300")]);
    let ctx = RunContext::new(BlockingPool::new(2));
    let cancel = ctx.cancel.clone();
    let run = tokio::spawn(run_with(job, ctx));
    // The line is written before the pid file: once the file is there, the
    // line is in the pipe (read or not yet: either way it must be kept).
    for _ in 0..1000 {
        if std::fs::read_to_string(&pid).is_ok_and(|s| s.ends_with('\n')) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    let (outcome, report) = run.await.unwrap();
    assert_eq!(outcome.status, Status::Cancelled);
    assert_eq!(lines_of(&report, "main/long"), vec![out("copied 10 files")]);
}

#[tokio::test]
async fn lines_follow_the_rules_for_cr_binary_and_a_last_line_without_newline() {
    let (_, report) = run_steps(vec![shell(
        "rules",
        r"printf 'crlf\r\n'; printf '10%%\r50%%\r100%%\n'; printf 'a\377b\n'; printf '\n'; printf 'last'",
    )])
    .await;
    assert_eq!(
        lines_of(&report, "main/rules"),
        vec![out("crlf"), out("10%\r50%\r100%"), out("a\u{FFFD}b"), out(""), out("last")]
    );
}

#[tokio::test]
async fn a_50_mb_line_without_newline_is_cut_into_pieces_within_the_bounds() {
    let (outcome, report) = run_steps(vec![shell("big", "head -c 50000000 /dev/zero | tr '\\0' x")]).await;
    assert_eq!(outcome.status, Status::Succeeded);
    let got = lines_of(&report, "main/big");
    let piece = 16 * 1024;
    // The first MiB live, in 16 KiB pieces; the marker (50,000,000 - 2 MiB);
    // the last MiB.
    let mib = 1024 * 1024;
    let marker = "… 47,902,848 bytes dropped …";
    let head: Vec<_> = got.iter().take_while(|(_, t)| !t.starts_with('…')).collect();
    assert_eq!(head.len(), mib / piece);
    assert!(head.iter().all(|(s, t)| *s == Stream::Stdout && t.len() == piece && t.bytes().all(|b| b == b'x')));
    assert_eq!(got[head.len()], out(marker));
    let tail = &got[head.len() + 1..];
    assert_eq!(tail.iter().map(|(_, t)| t.len()).sum::<usize>(), mib);
    assert!(tail.iter().all(|(_, t)| t.len() <= piece));
    assert_eq!(line(&report, "main/big").output.as_str().map(str::len), Some(mib), "the value keeps its own bound");
}

#[tokio::test]
async fn a_toml_script_steps_print_and_debug_are_recorded() {
    let code = "print(\"checked 3 rows\"); debug(\"x = 1\"); 42";
    let script =
        ScriptStep { code: Arc::from(code), source: ScriptSource::Inline { line: 1 }, limits: Default::default() };
    let (_, report) = run_steps(vec![step("calc", StepKind::Script(Box::new(script)))]).await;
    assert_eq!(
        lines_of(&report, "main/calc"),
        vec![(Stream::Print, "checked 3 rows".to_string()), (Stream::Debug, "\"x = 1\"".to_string())]
    );
}

#[tokio::test]
async fn an_http_step_failing_on_its_status_records_the_status_line_on_stderr() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf).await;
        let reply = "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nboom";
        socket.write_all(reply.as_bytes()).await.unwrap();
        let _ = socket.shutdown().await;
    });
    let http = HttpStep {
        method: "GET".into(),
        url: t(&format!("http://{addr}/")),
        headers: Vec::new(),
        body: None,
        timeout: None,
        expect_status: Vec::new(),
    };
    let (_, report) = run_steps(vec![step("probe", StepKind::Http(Box::new(http)))]).await;
    server.await.unwrap();
    assert_eq!(lines_of(&report, "main/probe"), vec![err("HTTP 500 Internal Server Error")]);
}
