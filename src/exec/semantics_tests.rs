//! The asyncio semantics of the run tree, on tokio's paused clock: every time
//! below is exact, and the whole file runs in milliseconds.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

use super::testing::{run_with, timing};
use super::*;
use crate::job::*;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn sleep(name: &str, s: f64, output: &str) -> Node {
    Node::Step(sleep_step(name, s, output))
}

fn sleep_step(name: &str, s: f64, output: &str) -> Step {
    Step {
        name: name.into(),
        kind: StepKind::Sleep(SleepStep { duration: secs(s), output: Some(json!(output)) }),
        blocking: false,
        timeout: None,
        retry: Retry::default(),
    }
}

/// A step that always times out: sleeps `s` with a timeout of `t < s`.
fn stuck(name: &str, s: f64, t: f64) -> Node {
    let mut step = sleep_step(name, s, name);
    step.timeout = Some(secs(t));
    Node::Step(step)
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

fn job(root: Group) -> Job {
    Job::for_test("test", std::path::Path::new("."), Node::Group(root))
}

/// Runs `job` to the end on a fresh context; returns the outcome and the report.
async fn run_job(job: Job) -> (RunOutcome, RunReport) {
    run_with(job, RunContext::new(BlockingPool::simulated(2))).await
}

/// The most steps (not groups) that were running at once.
fn max_concurrency(report: &RunReport) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for s in report.steps.iter().filter(|s| !s.is_group()) {
        if let (Some(a), Some(b)) = (s.start_ms, s.end_ms) {
            edges.push((a, 1));
            edges.push((b, -1));
        }
    }
    // Ends sort before starts at the same instant.
    edges.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    usize::try_from(max).unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn sequence_takes_the_sum_of_its_children() {
    let j =
        job(group("main", GroupMode::Sequence, vec![sleep("a", 1.0, "url_content"), sleep("b", 1.0, "file_content")]));
    let (outcome, report) = run_job(j).await;
    assert_eq!(outcome.status, Status::Succeeded);
    assert_eq!(outcome.result, Some(json!(["url_content", "file_content"])));
    assert_eq!(report.duration_ms, 2000);
    assert_eq!(timing(&report, "main/b"), (Status::Succeeded, Some(1000), Some(2000)));
}

#[tokio::test(start_paused = true)]
async fn gather_returns_results_in_written_order_and_takes_the_longest() {
    let j = job(group(
        "main",
        GroupMode::Gather,
        vec![sleep("fetch", 1.0, "url_content"), sleep("read", 0.5, "file_content")],
    ));
    let (outcome, report) = run_job(j).await;
    assert_eq!(outcome.result, Some(json!(["url_content", "file_content"])));
    assert_eq!(report.duration_ms, 1000);
    assert_eq!(timing(&report, "main/read"), (Status::Succeeded, Some(0), Some(500)));
    assert_eq!(timing(&report, "main"), (Status::Succeeded, Some(0), Some(1000)));
}

#[tokio::test(start_paused = true)]
async fn as_completed_returns_results_in_finish_order() {
    let j = job(group(
        "main",
        GroupMode::AsCompleted,
        vec![sleep("slow", 0.3, "slow"), sleep("fast", 0.1, "fast"), sleep("mid", 0.2, "mid")],
    ));
    let (outcome, report) = run_job(j).await;
    assert_eq!(outcome.result, Some(json!(["fast", "mid", "slow"])));
    assert_eq!(report.duration_ms, 300);
}

#[tokio::test(start_paused = true)]
async fn each_runs_as_soon_as_each_child_finishes() {
    let mut g = group(
        "main",
        GroupMode::AsCompleted,
        vec![sleep("slow", 0.3, "slow"), sleep("fast", 0.1, "fast"), sleep("mid", 0.2, "mid")],
    );
    g.each = Some(Box::new(sleep_step("process", 1.0, "done")));
    let (outcome, report) = run_job(job(g)).await;
    assert_eq!(outcome.status, Status::Succeeded);
    // Pipelined: the first result is processed while the others still run.
    assert_eq!(timing(&report, "main/process[0]"), (Status::Succeeded, Some(100), Some(1100)));
    assert_eq!(timing(&report, "main/process[1]"), (Status::Succeeded, Some(200), Some(1200)));
    assert_eq!(timing(&report, "main/process[2]"), (Status::Succeeded, Some(300), Some(1300)));
    assert_eq!(outcome.result, Some(json!(["done", "done", "done"])));
    assert_eq!(report.duration_ms, 1300);
}

#[tokio::test(start_paused = true)]
async fn race_takes_the_first_success_and_cancels_the_losers() {
    let mut g = group(
        "main",
        GroupMode::Race,
        vec![sleep("slow", 1.0, "slow"), sleep("fast", 0.2, "fast"), sleep("late", 0.5, "late")],
    );
    g.limit = NonZeroUsize::new(2);
    let (outcome, report) = run_job(job(g)).await;
    assert_eq!(outcome.result, Some(json!("fast")));
    assert_eq!(report.duration_ms, 200);
    assert_eq!(timing(&report, "main/slow"), (Status::Cancelled, Some(0), Some(200)));
    // `late` was waiting for a slot when `fast` won, so it never started.
    assert_eq!(timing(&report, "main/late"), (Status::Skipped, None, Some(200)));
}

#[tokio::test(start_paused = true)]
async fn race_skips_failures_until_a_success() {
    let g = group("main", GroupMode::Race, vec![stuck("broken", 5.0, 0.1), sleep("ok", 0.5, "ok")]);
    let (outcome, report) = run_job(job(g)).await;
    assert_eq!(outcome.result, Some(json!("ok")));
    assert_eq!(timing(&report, "main/broken").0, Status::TimedOut);
    assert_eq!(report.duration_ms, 500);
}

#[tokio::test(start_paused = true)]
async fn race_fails_with_every_error_when_all_fail() {
    let g = group("main", GroupMode::Race, vec![stuck("a", 5.0, 0.1), stuck("b", 5.0, 0.2)]);
    let (outcome, report) = run_job(job(g)).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.expect("an error");
    assert!(error.contains("`a`: timed out after 100ms") && error.contains("`b`: timed out after 200ms"), "{error}");
    assert_eq!(report.duration_ms, 200);
}

#[tokio::test(start_paused = true)]
async fn limit_caps_how_many_children_run_at_once() {
    let children = (0..10).map(|i| sleep(&format!("s{i}"), 1.0, "x")).collect();
    let mut g = group("main", GroupMode::Gather, children);
    g.limit = NonZeroUsize::new(3);
    let (outcome, report) = run_job(job(g)).await;
    assert_eq!(outcome.status, Status::Succeeded);
    assert_eq!(max_concurrency(&report), 3);
    assert_eq!(report.duration_ms, 4000);
    assert_eq!(timing(&report, "main/s9"), (Status::Succeeded, Some(3000), Some(4000)));
}

#[tokio::test(start_paused = true)]
async fn on_error_cancel_stops_the_siblings() {
    let mut g = group(
        "main",
        GroupMode::Gather,
        vec![stuck("bad", 5.0, 0.5), sleep("slow", 1.0, "slow"), sleep("queued", 1.0, "q")],
    );
    g.limit = NonZeroUsize::new(2);
    let (outcome, report) = run_job(job(g)).await;
    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(report.duration_ms, 500);
    assert_eq!(timing(&report, "main/bad"), (Status::TimedOut, Some(0), Some(500)));
    assert_eq!(timing(&report, "main/slow"), (Status::Cancelled, Some(0), Some(500)));
    assert_eq!(timing(&report, "main/queued"), (Status::Skipped, None, Some(500)));
    let error = outcome.error.expect("an error");
    assert!(error.contains("`bad` timed_out"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn on_error_continue_lets_the_siblings_finish() {
    let mut g = group("main", GroupMode::Gather, vec![stuck("bad", 5.0, 0.5), sleep("slow", 1.0, "slow")]);
    g.on_error = OnError::Continue;
    let (outcome, report) = run_job(job(g)).await;
    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(report.duration_ms, 1000);
    assert_eq!(timing(&report, "main/slow"), (Status::Succeeded, Some(0), Some(1000)));
}

#[tokio::test(start_paused = true)]
async fn sequence_stops_at_the_first_failure() {
    let g =
        group("main", GroupMode::Sequence, vec![sleep("a", 1.0, "a"), stuck("bad", 5.0, 0.5), sleep("c", 1.0, "c")]);
    let (outcome, report) = run_job(job(g)).await;
    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(report.duration_ms, 1500);
    assert_eq!(timing(&report, "main/c"), (Status::Skipped, None, Some(1500)));
}

#[tokio::test(start_paused = true)]
async fn group_timeout_cancels_its_children() {
    let mut inner = group("inner", GroupMode::Gather, vec![sleep("a", 1.0, "a"), sleep("b", 2.0, "b")]);
    inner.timeout = Some(secs(0.5));
    let root = group("main", GroupMode::Sequence, vec![Node::Group(inner), sleep("after", 1.0, "after")]);
    let (outcome, report) = run_job(job(root)).await;
    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(timing(&report, "main/inner"), (Status::TimedOut, Some(0), Some(500)));
    assert_eq!(timing(&report, "main/inner/a"), (Status::Cancelled, Some(0), Some(500)));
    assert_eq!(timing(&report, "main/after"), (Status::Skipped, None, Some(500)));
    assert_eq!(report.duration_ms, 500);
}

#[tokio::test(start_paused = true)]
async fn job_timeout_times_out_the_run() {
    let mut j = job(group("main", GroupMode::Sequence, vec![sleep("a", 1.0, "a"), sleep("b", 1.0, "b")]));
    j.timeout = Some(secs(1.5));
    let (outcome, report) = run_job(j).await;
    assert_eq!(outcome.status, Status::TimedOut);
    assert_eq!(report.status, RecordedStatus::Finished(Status::TimedOut));
    assert_eq!(report.duration_ms, 1500);
    assert_eq!(timing(&report, "main/b"), (Status::Cancelled, Some(1000), Some(1500)));
    assert!(outcome.error.expect("an error").starts_with("job timed out after 1s 500ms"));
}

#[tokio::test(start_paused = true)]
async fn retries_wait_delay_times_backoff_and_count_attempts() {
    let mut step = sleep_step("flaky", 5.0, "x");
    step.timeout = Some(secs(0.5));
    step.retry = Retry { retries: 2, delay: secs(1.0), backoff: 2.0 };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let outcome = run(
        Arc::new(job(group("main", GroupMode::Sequence, vec![Node::Step(step)]))),
        RunContext::new(BlockingPool::simulated(1)),
        tx,
    )
    .await;
    assert_eq!(outcome.status, Status::Failed);
    let mut failed_attempts = Vec::new();
    let mut finished = None;
    while let Ok(e) = rx.try_recv() {
        match e {
            RunEvent::AttemptFailed { attempt, retry_in, at, .. } => failed_attempts.push((attempt, retry_in, at)),
            RunEvent::NodeFinished { path, status, attempts, at, .. } if &*path == "main/flaky" => {
                finished = Some((status, attempts, at));
            }
            _ => {}
        }
    }
    // attempt 1: 0–0.5 s, wait 1 s; attempt 2: 1.5–2 s, wait 2 s; attempt 3: 4–4.5 s.
    assert_eq!(failed_attempts, vec![(1, secs(1.0), secs(0.5)), (2, secs(2.0), secs(2.0))]);
    assert_eq!(finished, Some((Status::TimedOut, 3, secs(4.5))));
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_run_cancels_running_steps_and_skips_the_rest() {
    let ctx = RunContext::new(BlockingPool::simulated(1));
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(secs(1.5)).await;
        cancel.cancel();
    });
    let j =
        job(group("main", GroupMode::Sequence, vec![sleep("a", 1.0, "a"), sleep("b", 1.0, "b"), sleep("c", 1.0, "c")]));
    let (outcome, report) = run_with(j, ctx).await;
    assert_eq!(outcome.status, Status::Cancelled);
    assert_eq!(timing(&report, "main/a").0, Status::Succeeded);
    assert_eq!(timing(&report, "main/b"), (Status::Cancelled, Some(1000), Some(1500)));
    assert_eq!(timing(&report, "main/c"), (Status::Skipped, None, Some(1500)));
}

#[tokio::test(start_paused = true)]
async fn blocking_steps_queue_for_the_pool_while_async_steps_go_on() {
    let mut children: Vec<Node> = (0..5)
        .map(|i| {
            let mut s = sleep_step(&format!("b{i}"), 1.0, "blocking");
            s.blocking = true;
            Node::Step(s)
        })
        .collect();
    children.push(sleep("async1", 1.0, "async"));
    children.push(sleep("async2", 0.5, "async"));
    let (outcome, report) =
        run_with(job(group("main", GroupMode::Gather, children)), RunContext::new(BlockingPool::simulated(2))).await;
    assert_eq!(outcome.status, Status::Succeeded);
    // ceil(5 / 2) × 1 s with a pool of 2 ...
    assert_eq!(report.duration_ms, 3000);
    let mut ends: Vec<u64> = (0..5).map(|i| timing(&report, &format!("main/b{i}")).2.unwrap_or(0)).collect();
    ends.sort();
    assert_eq!(ends, vec![1000, 1000, 2000, 2000, 3000]);
    // ... while the async steps beside them are not delayed.
    assert_eq!(timing(&report, "main/async1").2, Some(1000));
    assert_eq!(timing(&report, "main/async2").2, Some(500));
}

#[tokio::test(start_paused = true)]
async fn a_template_reads_an_earlier_output_and_each_reads_its_input() {
    // write_file's path and content are templates; the file lands in a temp dir.
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, path: &str, content: &str| Step {
        name: name.into(),
        kind: StepKind::WriteFile(Box::new(WriteFileStep {
            path: Template::parse(path).expect("template"),
            content: Template::parse(content).expect("template"),
        })),
        blocking: false,
        timeout: None,
        retry: Retry::default(),
    };
    let mut fan = group("fan", GroupMode::AsCompleted, vec![sleep("x", 0.2, "x"), sleep("y", 0.1, "y")]);
    fan.each = Some(Box::new(write("save", "{{ input }}.txt", "got {{ input }}")));
    let root = group(
        "main",
        GroupMode::Sequence,
        vec![
            sleep("first", 0.1, "hello"),
            Node::Group(fan),
            Node::Step(write("summary", "summary.txt", "{{ steps.first.output }} {{ steps.fan.output | join(',') }}")),
        ],
    );
    let mut j = job(root);
    j.dir = dir.path().to_path_buf();
    let (outcome, report) = run_job(j).await;
    assert_eq!(outcome.status, Status::Succeeded, "{:#?}", report.steps);
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).expect("written");
    assert_eq!(read("x.txt"), "got x");
    assert_eq!(read("y.txt"), "got y");
    // fan's output is the each outputs (the paths written) in arrival order.
    assert_eq!(read("summary.txt"), "hello y.txt,x.txt");
}

/// A step in flight must stay small for 100,000-step gathers: each kind's
/// future is boxed, so the attempt itself is a pointer, whatever the kind.
#[test]
fn an_attempt_in_flight_costs_a_pointer_not_the_largest_kind() {
    let s = sleep_step("a", 1.0, "x");
    let j = job(group("main", GroupMode::Gather, vec![]));
    let ctx = RunContext::new(BlockingPool::new(1));
    let inputs = step::Inputs::default;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let run = step::RunLines::new(tokio::time::Instant::now(), tx, ctx.limits.max_output);
    let path: super::NodePath = "main/a".into();
    let env = step::StepEnv {
        job: &j,
        ctx: &ctx,
        inputs: &inputs,
        lines: step::StepLines::new(&run, &path),
        attempt: 1.into(),
    };
    let token = tokio_util::sync::CancellationToken::new();
    let attempt = step::run_attempt(&s, &env, &token);
    assert!(std::mem::size_of_val(&attempt) <= 128, "{} bytes", std::mem::size_of_val(&attempt));
}

/// A step in flight under a group costs its own future only: not a group's,
/// not a timer for a timeout or a retry it does not have.
#[test]
fn a_step_in_flight_is_small() {
    let s = sleep_step("a", 1.0, "x");
    let j = Arc::new(job(group("main", GroupMode::Gather, vec![])));
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let runner = super::tree::Runner::for_test(j, RunContext::new(BlockingPool::new(1)), tx);
    let node = Node::Step(s);
    let fut = runner.node(&node, "main", tokio_util::sync::CancellationToken::new(), None);
    let size = std::mem::size_of_val(&*fut);
    // 352 when this was written; 392 since issue 14 (the attempt number
    // for GATHERD_ATTEMPT in StepEnv, and the step's handler/finally reads).
    assert!(size <= 400, "{size} bytes (392 last measured)");
}

/// A fan-out costs a bounded number of polls per step, under a runtime's
/// scheduler (the daemon's run task; a test's `block_on` is one too) as in
/// `gatherd run`'s `block_on`: once tokio's budget for the task is spent, the
/// group's set must yield rather than go on polling every ready step, each
/// refused (issue 12: a 100,000-step gather took 20 s under the daemon, 1 s
/// under `run`).
#[tokio::test(start_paused = true)]
async fn a_large_gather_polls_each_step_a_bounded_number_of_times() {
    let n = 10_000;
    let steps = (0..n).map(|i| sleep(&format!("s{i}"), 0.0, "x")).collect();
    super::tree::CHILD_POLLS.with(|c| c.set(0));
    let (outcome, report) = run_job(job(group("main", GroupMode::Gather, steps))).await;
    let polls = super::tree::CHILD_POLLS.with(std::cell::Cell::get);
    assert_eq!(outcome.status, Status::Succeeded);
    assert_eq!(report.steps.len(), n + 1);
    let per_step = polls as f64 / n as f64;
    assert!(per_step <= 3.0, "{polls} polls of the group's children for {n} steps ({per_step:.1} each)");
}
