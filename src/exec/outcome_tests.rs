//! Handlers and `finally`, on tokio's paused clock: what runs after the main
//! tree and after a group, whatever happened, and what it can read of how
//! the run and every step ended.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::testing::{line, run_with, timing};
use super::*;
use crate::job::*;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn step(name: &str, kind: StepKind) -> Step {
    Step { name: name.into(), kind, blocking: false, timeout: None, retry: Retry::default() }
}

fn sleep(name: &str, s: f64, output: &str) -> Node {
    Node::Step(step(name, StepKind::Sleep(SleepStep { duration: secs(s), output: Some(json!(output)) })))
}

/// A step that fails at once: it reads a file that is not there.
fn missing(name: &str) -> Node {
    Node::Step(step(
        name,
        StepKind::ReadFile(ReadFileStep { path: Template::parse("no-such-file.txt").expect("template") }),
    ))
}

/// A step writing `content` (a template) to `file` in the job's folder.
fn write(name: &str, file: &str, content: &str) -> Node {
    Node::Step(step(
        name,
        StepKind::WriteFile(Box::new(WriteFileStep {
            path: Template::parse(file).expect("template"),
            content: Template::parse(content).expect("template"),
        })),
    ))
}

fn group(name: &str, mode: GroupMode, children: Vec<Node>) -> Group {
    Group {
        name: name.into(),
        mode,
        children,
        limit: None,
        on_error: OnError::Cancel,
        timeout: None,
        each: None,
        finally: None,
    }
}

fn job(dir: &Path, root: Group) -> Job {
    Job::for_test("nightly", dir, Node::Group(root))
}

async fn run_job(job: Job) -> (RunOutcome, RunReport) {
    run_with(job, RunContext::new(BlockingPool::simulated(2))).await
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file} was not written: {e}"))
}

fn has_step(report: &RunReport, path: &str) -> bool {
    report.steps.iter().any(|s| &*s.path == path)
}

/// main: `ok` (1 s, "fine"), then `bad` (fails); the three handlers write
/// what they read.
fn with_handlers(dir: &Path, main: Vec<Node>) -> Job {
    let mut j = job(dir, group("main", GroupMode::Sequence, main));
    j.handlers = Handlers {
        on_failure: Some(Box::new(write(
            "alert",
            "alert.txt",
            "{{ job.name }} {{ run.status }} [{{ run.error }}] bad={{ steps.bad.status }} [{{ steps.bad.error }}] \
             out={{ steps.bad.output | default('none') }} ok={{ steps.ok.output }}",
        ))),
        on_success: Some(Box::new(write("cheer", "cheer.txt", "{{ run.status }}"))),
        on_exit: Some(Box::new(write("bye", "bye.txt", "{{ run.status }} alert={{ steps.alert.status }}"))),
    };
    j
}

#[tokio::test(start_paused = true)]
async fn on_failure_receives_the_failed_steps_error_and_on_exit_runs_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let j = with_handlers(dir.path(), vec![sleep("ok", 1.0, "fine"), missing("bad")]);
    let (outcome, report) = run_job(j).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.clone().expect("an error");
    assert!(error.contains("no-such-file.txt"), "{error}");
    let alert = read(dir.path(), "alert.txt");
    assert_eq!(
        alert,
        format!(
            "nightly failed [{error}] bad=failed [{}] out=none ok=fine",
            line(&report, "main/bad").error.clone().unwrap_or_default()
        )
    );
    assert!(alert.contains("no-such-file.txt"), "{alert}");
    // on_success does not apply; on_exit runs after on_failure and sees it.
    assert!(!has_step(&report, "cheer") && !dir.path().join("cheer.txt").exists());
    assert_eq!(read(dir.path(), "bye.txt"), "failed alert=succeeded");
    // The handlers are extra roots after `main`, in order.
    let roots: Vec<&str> = report.steps.iter().filter(|s| !s.path.contains('/')).map(|s| &*s.path).collect();
    assert_eq!(roots, ["main", "alert", "bye"]);
    assert!(timing(&report, "alert").1 >= timing(&report, "main").2);
    assert_eq!(report.status.finished(), Some(Status::Failed));
}

#[tokio::test(start_paused = true)]
async fn a_run_that_succeeds_runs_on_success_and_on_exit_but_not_on_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut j = with_handlers(dir.path(), vec![sleep("ok", 1.0, "fine")]);
    // `steps.bad` is not in this job: on_failure would not render, and is not run.
    j.handlers.on_exit = Some(Box::new(write("bye", "bye.txt", "{{ run.status }} {{ steps.ok.status }}")));
    let (outcome, report) = run_job(j).await;
    assert_eq!(outcome.status, Status::Succeeded, "{:#?}", report.steps);
    assert!(!has_step(&report, "alert") && !dir.path().join("alert.txt").exists());
    assert_eq!(read(dir.path(), "cheer.txt"), "succeeded");
    assert_eq!(read(dir.path(), "bye.txt"), "succeeded succeeded");
}

#[tokio::test(start_paused = true)]
async fn a_failing_handler_is_recorded_and_leaves_the_run_status_unchanged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut j = job(dir.path(), group("main", GroupMode::Sequence, vec![sleep("ok", 1.0, "fine")]));
    j.handlers.on_success = Some(Box::new(missing("notify")));
    j.handlers.on_exit = Some(Box::new(sleep("bye", 0.5, "bye")));
    let (outcome, report) = run_job(j).await;
    assert_eq!(outcome.status, Status::Succeeded);
    assert_eq!(outcome.result, Some(json!(["fine"])));
    assert_eq!(report.status.finished(), Some(Status::Succeeded));
    let notify = line(&report, "notify");
    assert_eq!(notify.status.finished(), Some(Status::Failed));
    assert!(notify.error.as_deref().unwrap_or_default().contains("no-such-file.txt"), "{notify:?}");
    // on_exit still runs after a failed handler.
    assert_eq!(timing(&report, "bye"), (Status::Succeeded, Some(1000), Some(1500)));
    assert_eq!(report.duration_ms, 1500);
}

#[tokio::test(start_paused = true)]
async fn after_a_job_timeout_on_failure_runs_within_the_jobs_timeout_as_its_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut j = job(dir.path(), group("main", GroupMode::Sequence, vec![sleep("long", 10.0, "x")]));
    j.timeout = Some(secs(2.0));
    let mut alert = step("alert", StepKind::Sleep(SleepStep { duration: secs(5.0), output: None }));
    // What the loader does for a handler without a timeout of its own.
    alert.timeout = j.timeout;
    j.handlers.on_failure = Some(Box::new(Node::Step(alert)));
    let (outcome, report) = run_job(j).await;
    assert_eq!(outcome.status, Status::TimedOut);
    assert_eq!(timing(&report, "alert"), (Status::TimedOut, Some(2000), Some(4000)));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_run_runs_no_handler_and_records_on_exit_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let j = with_handlers(dir.path(), vec![sleep("ok", 10.0, "fine")]);
    let ctx = RunContext::new(BlockingPool::simulated(1));
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(secs(1.0)).await;
        cancel.cancel();
    });
    let (outcome, report) = run_with(j, ctx).await;
    assert_eq!(outcome.status, Status::Cancelled);
    assert!(!has_step(&report, "alert") && !has_step(&report, "cheer"));
    let bye = line(&report, "bye");
    assert_eq!(bye.status.finished(), Some(Status::Skipped));
    assert_eq!(bye.error.as_deref(), Some("not started: the run was cancelled"));
}

#[tokio::test(start_paused = true)]
async fn a_finally_summary_runs_after_a_fan_out_with_two_failed_items_and_sees_18_outputs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let items: Vec<Node> =
        (0..20)
            .map(|i| {
                if i == 3 || i == 11 {
                    missing(&format!("i{i}"))
                } else {
                    sleep(&format!("i{i}"), 1.0, &format!("r{i}"))
                }
            })
            .collect();
    let summary: String =
        (0..20).map(|i| format!("{{{{ steps.i{i}.status }}}}={{{{ steps.i{i}.output | default('-') }}}}\n")).collect();
    let mut fan = group("fan", GroupMode::Gather, items);
    fan.on_error = OnError::Continue;
    fan.finally = Some(Box::new(write("summary", "summary.txt", &summary)));
    let j = job(dir.path(), group("main", GroupMode::Sequence, vec![Node::Group(fan)]));
    let (outcome, report) = run_job(j).await;
    // The group's status is its own: two items failed.
    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(timing(&report, "main/fan"), (Status::Failed, Some(0), Some(1000)));
    assert_eq!(timing(&report, "main/summary"), (Status::Succeeded, Some(1000), Some(1000)));
    let text = read(dir.path(), "summary.txt");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 20, "{text}");
    let outputs: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("succeeded=")).collect();
    assert_eq!(outputs.len(), 18, "{text}");
    assert_eq!(outputs[0], "r0");
    assert_eq!(lines[3], "failed=-");
    assert_eq!(lines[11], "failed=-");
}

#[tokio::test(start_paused = true)]
async fn a_finally_runs_after_its_groups_own_timeout_and_its_failure_leaves_the_group_as_it_was() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut slow = group("slow", GroupMode::Gather, vec![sleep("long", 10.0, "x")]);
    slow.timeout = Some(secs(1.0));
    slow.finally = Some(Box::new(sleep("after_slow", 1.0, "done")));
    let mut fine = group("fine", GroupMode::Gather, vec![sleep("quick", 1.0, "q")]);
    fine.finally = Some(Box::new(missing("broken_finally")));
    let mut root = group("main", GroupMode::Gather, vec![Node::Group(slow), Node::Group(fine)]);
    root.on_error = OnError::Continue;
    let (outcome, report) = run_job(job(dir.path(), root)).await;
    assert_eq!(timing(&report, "main/slow").0, Status::TimedOut);
    assert_eq!(timing(&report, "main/after_slow"), (Status::Succeeded, Some(1000), Some(2000)));
    // `fine` succeeded; its finally failed, which changes nothing of it.
    assert_eq!(timing(&report, "main/fine").0, Status::Succeeded);
    assert_eq!(timing(&report, "main/broken_finally").0, Status::Failed);
    assert!(outcome.error.unwrap_or_default().contains("slow"));
}

#[tokio::test(start_paused = true)]
async fn a_cancel_from_above_skips_a_finally_not_started() {
    let dir = tempfile::tempdir().expect("temp dir");
    // `bad` fails at once and cancels its sibling `g` (on_error = cancel):
    // a cancel from above, so g's finally is not run.
    let mut g = group("g", GroupMode::Sequence, vec![sleep("a", 5.0, "a")]);
    g.finally = Some(Box::new(sleep("cleanup", 1.0, "c")));
    let root = group("main", GroupMode::Gather, vec![Node::Group(g), missing("bad")]);
    let (outcome, report) = run_job(job(dir.path(), root)).await;
    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(timing(&report, "main/g").0, Status::Cancelled);
    let cleanup = line(&report, "main/cleanup");
    assert_eq!(cleanup.status.finished(), Some(Status::Skipped));
    assert_eq!(report.duration_ms, 0);
}

#[tokio::test(start_paused = true)]
async fn templates_read_the_job_name_the_run_id_and_the_start_date() {
    let dir = tempfile::tempdir().expect("temp dir");
    let j = job(
        dir.path(),
        group(
            "main",
            GroupMode::Sequence,
            vec![write("w", "w.txt", "{{ job.name }} {{ run.id }} {{ run.started_at | date('%Y%m%d') }}")],
        ),
    );
    let mut ctx = RunContext::new(BlockingPool::simulated(1));
    ctx.run_id = Some(42);
    let (outcome, report) = run_with(j, ctx).await;
    assert_eq!(outcome.status, Status::Succeeded, "{:#?}", report.steps);
    let started = report.started_at.expect("a start").with_timezone(&chrono::Local);
    assert_eq!(read(dir.path(), "w.txt"), format!("nightly 42 {}", started.format("%Y%m%d")));
}

/// Outside handlers and `finally`, `check` refuses `run.status`; a template
/// that reaches it another way (`run["status"]`, `{% set r = run %}`)
/// reads `running` — the run is running — and never fails its step.
#[tokio::test(start_paused = true)]
async fn the_main_tree_reads_run_status_as_running_by_subscript_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let j = job(
        dir.path(),
        group(
            "main",
            GroupMode::Sequence,
            vec![write("w", "w.txt", "{{ run['status'] }} {% set r = run %}{{ r.error | default('none') }}")],
        ),
    );
    let (outcome, report) = run_job(j).await;
    assert_eq!(outcome.status, Status::Succeeded, "{:#?}", report.steps);
    assert_eq!(read(dir.path(), "w.txt"), "running none");
}
