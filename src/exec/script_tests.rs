//! Rhai jobs on the executor, on tokio's paused clock: the asyncio vocabulary
//! (gather, as_completed, race, spawn, wait_for, to_thread) keeps its meaning
//! and every step a script starts is recorded like a TOML step.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::testing::{line, run_with, timing};
use super::*;
use crate::job::*;

fn script_job(code: &str) -> Job {
    script_job_with(code, LimitOverrides::default())
}

fn script_job_with(code: &str, limits: LimitOverrides) -> Job {
    let root = Node::Script(ScriptNode {
        name: "main".into(),
        code: code.into(),
        source: ScriptSource::File(PathBuf::from("script.rhai")),
        limits,
        entry: None,
    });
    let mut job = Job::for_test("script", std::path::Path::new("."), root);
    job.file = PathBuf::from("script.rhai");
    job
}

async fn run_script(code: &str) -> (RunOutcome, RunReport) {
    run_with(script_job(code), RunContext::new(BlockingPool::simulated(2))).await
}

#[tokio::test(start_paused = true)]
async fn gather_returns_results_in_the_order_given() {
    let (outcome, report) = run_script(r#"gather([sleep(1, "url_content"), sleep(0.5, "file_content")])"#).await;
    assert_eq!(outcome.status, Status::Succeeded, "{:?}", outcome.error);
    assert_eq!(outcome.result, Some(json!(["url_content", "file_content"])));
    assert_eq!(report.duration_ms, 1000);
    assert_eq!(timing(&report, "main/gather_1/sleep_2"), (Status::Succeeded, Some(0), Some(500)));
    assert_eq!(line(&report, "main").kind, NodeKind::Script);
}

#[tokio::test(start_paused = true)]
async fn sequential_awaits_add_up() {
    let code = r#"let a = await_step(sleep(1, "url_content").named("fetch"));
                  let b = await_step(sleep(1, "file_content").named("read"));
                  [a, b]"#;
    let (outcome, report) = run_script(code).await;
    assert_eq!(outcome.result, Some(json!(["url_content", "file_content"])));
    assert_eq!(timing(&report, "main/read"), (Status::Succeeded, Some(1000), Some(2000)));
}

#[tokio::test(start_paused = true)]
async fn as_completed_runs_the_loop_body_before_the_slow_step_finishes() {
    let code = r#"let seen = [];
                  for x in as_completed([sleep(0.3, "slow"), sleep(0.1, "fast")]) {
                      print(x);
                      seen.push(x);
                  }
                  seen"#;
    let (outcome, report) = run_script(code).await;
    assert_eq!(outcome.result, Some(json!(["fast", "slow"])));
    let logs: Vec<(u64, &str)> = report.logs.iter().map(|l| (l.at_ms, l.text.as_str())).collect();
    // "fast" was handled at 100 ms, while "slow" still had 200 ms to go.
    assert_eq!(logs, vec![(100, "fast"), (300, "slow")]);
    assert_eq!(timing(&report, "main/as_completed_1"), (Status::Succeeded, Some(0), Some(300)));
}

#[tokio::test(start_paused = true)]
async fn race_returns_the_first_success_and_cancels_the_rest() {
    let (outcome, report) = run_script(r#"race([sleep(1, "slow").named("slow"), sleep(0.2, "fast")])"#).await;
    assert_eq!(outcome.result, Some(json!("fast")));
    assert_eq!(report.duration_ms, 200);
    assert_eq!(timing(&report, "main/race_1/slow"), (Status::Cancelled, Some(0), Some(200)));
}

#[tokio::test(start_paused = true)]
async fn spawn_runs_in_the_background_and_cancel_stops_it() {
    let code = r#"let h = spawn(sleep(10, "x").named("bg"));
                  await_step(sleep(1));
                  let was_done = h.done();
                  h.cancel();
                  let why = "";
                  try { h.result(); } catch (e) { why = e; }
                  [was_done, why]"#;
    let (outcome, report) = run_script(code).await;
    assert_eq!(outcome.status, Status::Succeeded, "{:?}", outcome.error);
    assert_eq!(outcome.result, Some(json!([false, "`bg` cancelled: cancelled"])));
    assert_eq!(timing(&report, "main/bg"), (Status::Cancelled, Some(0), Some(1000)));
}

#[tokio::test(start_paused = true)]
async fn a_spawned_step_can_be_awaited_later() {
    let code = r#"let h = spawn(sleep(2, "bg"));
                  await_step(sleep(1));
                  h.result()"#;
    let (outcome, report) = run_script(code).await;
    assert_eq!(outcome.result, Some(json!("bg")));
    assert_eq!(report.duration_ms, 2000);
}

#[tokio::test(start_paused = true)]
async fn steps_left_running_when_the_script_ends_are_cancelled() {
    let (outcome, report) = run_script(r#"spawn(sleep(5).named("orphan")); "done""#).await;
    assert_eq!(outcome.result, Some(json!("done")));
    assert_eq!(timing(&report, "main/orphan"), (Status::Cancelled, Some(0), Some(0)));
}

#[tokio::test(start_paused = true)]
async fn wait_for_times_out_with_a_catchable_error() {
    let code = r#"let r = ""; try { r = wait_for(sleep(5), 1); } catch (e) { r = "gave up: " + e; } r"#;
    let (outcome, report) = run_script(code).await;
    assert_eq!(outcome.result, Some(json!("gave up: `wait_for_1` timed_out: group `wait_for_1` timed out after 1s")));
    assert_eq!(timing(&report, "main/wait_for_1"), (Status::TimedOut, Some(0), Some(1000)));
    assert_eq!(timing(&report, "main/wait_for_1/sleep_1"), (Status::Cancelled, Some(0), Some(1000)));
}

#[tokio::test(start_paused = true)]
async fn wait_for_returns_the_value_in_time() {
    let (outcome, _) = run_script(r#"wait_for(sleep(0.5, "ok"), 1)"#).await;
    assert_eq!(outcome.result, Some(json!("ok")));
}

#[tokio::test(start_paused = true)]
async fn to_thread_runs_a_closure_beside_async_steps() {
    let code = r#"let n = 21;
                  gather([sleep(1, "async"), to_thread(|| n * 2)])"#;
    let (outcome, report) = run_script(code).await;
    assert_eq!(outcome.result, Some(json!(["async", 42])));
    assert_eq!(line(&report, "main/gather_1/to_thread_1").kind, NodeKind::ToThread);
    assert_eq!(report.duration_ms, 1000);
}

#[tokio::test(start_paused = true)]
async fn a_failed_step_raises_an_error_the_script_can_catch() {
    let code = r#"let r = ""; try { r = await_step(read_file("/nonexistent/gatherd-test")); } catch (e) { r = "caught: " + e; } r"#;
    let (outcome, _) = run_script(code).await;
    let result = outcome.result.expect("a result").to_string();
    assert!(result.contains("caught: `read_file_1` failed: cannot read"), "{result}");
}

#[tokio::test(start_paused = true)]
async fn return_exceptions_hands_failures_on_as_error_maps() {
    let code = r#"let bad = read_file("/nonexistent/gatherd-test").named("bad");
                  let all = gather([sleep(1, "ok"), bad], true);
                  let seen = [];
                  for x in as_completed([sleep(0.2, "late"), bad], true) {
                      seen.push(if is_error(x) { "error from " + x.step } else { x });
                  }
                  [all[0], is_error(all[1]), all[1].status, seen]"#;
    let (outcome, report) = run_script(code).await;
    assert_eq!(outcome.status, Status::Succeeded, "{:?}", outcome.error);
    assert_eq!(outcome.result, Some(json!(["ok", true, "failed", ["error from bad#2", "late"]])));
    assert_eq!(line(&report, "main/gather_1").status, RecordedStatus::Finished(Status::Succeeded));
    assert_eq!(line(&report, "main/gather_1/bad").status, RecordedStatus::Finished(Status::Failed));
}

// The binary's runtime (multi-threaded), where results that finish while the
// script is busy are handed over in one batch: the ones the first loop left
// must still reach the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_loop_over_as_completed_goes_on_where_the_first_stopped() {
    let code = r#"let it = as_completed([sleep(0, "a"), sleep(0, "b"), sleep(0, "c")]);
                  await_step(sleep(0.05));
                  let first = [];
                  for x in it { first.push(x); break; }
                  let rest = [];
                  for x in it { rest.push(x); }
                  let all = first + rest;
                  all.sort();
                  [first.len(), all]"#;
    let (outcome, _) = run_with(script_job(code), RunContext::new(BlockingPool::new(2))).await;
    assert_eq!(outcome.status, Status::Succeeded, "{:?}", outcome.error);
    assert_eq!(outcome.result, Some(json!([1, ["a", "b", "c"]])));
}

#[tokio::test(start_paused = true)]
async fn as_completed_hands_over_every_one_of_many_results() {
    let code = r#"let steps = [];
                  for i in 0..1000 { steps.push(sleep(i % 7 / 10.0, i)); }
                  let seen = 0;
                  let sum = 0;
                  for x in as_completed(steps) { seen += 1; sum += x; }
                  [seen, sum]"#;
    let (outcome, report) = run_script(code).await;
    assert_eq!(outcome.result, Some(json!([1000, 499_500])));
    assert_eq!(report.duration_ms, 600);
}

#[tokio::test(start_paused = true)]
async fn a_failure_in_as_completed_raises_in_the_loop() {
    let code = r#"let seen = [];
                  try {
                      for x in as_completed([sleep(0.2, "late"), read_file("/nonexistent/gatherd-test")]) { seen.push(x); }
                  } catch (e) { seen.push("raised"); }
                  seen"#;
    let (outcome, _) = run_script(code).await;
    assert_eq!(outcome.result, Some(json!(["raised"])));
}

#[tokio::test(start_paused = true)]
async fn an_uncaught_failure_fails_the_job_and_names_the_line() {
    let (outcome, report) = run_script("let x = 1;\nawait_step(read_file(\"/nonexistent/gatherd-test\"));\n").await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.expect("an error");
    assert!(error.contains("`read_file_1` failed") && error.contains("line 2"), "{error}");
    assert_eq!(line(&report, "main").status, RecordedStatus::Finished(Status::Failed));
}

#[tokio::test(start_paused = true)]
async fn a_runaway_script_is_stopped_by_its_operations_limit() {
    let limits = LimitOverrides { max_operations: Some(100_000), ..LimitOverrides::default() };
    let (outcome, _) = run_with(script_job_with("loop { }", limits), RunContext::new(BlockingPool::simulated(2))).await;
    assert_eq!(outcome.status, Status::Failed);
    assert!(outcome.error.expect("error").contains("operations limit (100000)"));
}

#[tokio::test(start_paused = true)]
async fn global_limits_apply_where_the_job_sets_none() {
    let mut ctx = RunContext::new(BlockingPool::simulated(2));
    ctx.script_limits.max_operations = 50_000;
    let (outcome, _) = run_with(script_job("loop { }"), ctx).await;
    assert!(outcome.error.expect("error").contains("operations limit (50000)"));
    // ... and the job's own limit wins over the global one.
    let mut ctx = RunContext::new(BlockingPool::simulated(2));
    ctx.script_limits.max_operations = 50_000;
    let job = script_job_with("loop { }", LimitOverrides { max_operations: Some(70_000), ..LimitOverrides::default() });
    let (outcome, _) = run_with(job, ctx).await;
    assert!(outcome.error.expect("error").contains("operations limit (70000)"));
}

#[tokio::test(start_paused = true)]
async fn unbounded_recursion_is_stopped_by_the_call_depth_limit() {
    let (outcome, _) = run_script("fn f(n) { f(n + 1) }\nf(0)").await;
    assert!(outcome.error.expect("error").contains("call depth limit"));
}

#[tokio::test(start_paused = true)]
async fn a_string_doubling_forever_is_stopped_by_the_size_limit() {
    let (outcome, _) = run_script("let s = \"x\";\nloop { s += s; }").await;
    assert!(outcome.error.expect("error").contains("size limit"));
}

#[tokio::test(start_paused = true)]
async fn print_lines_are_recorded_with_the_run() {
    let (_, report) = run_script("print(\"hello\"); debug(\"detail\"); 1").await;
    let lines: Vec<(&str, &str)> = report.logs.iter().map(|l| (l.stream.as_str(), l.text.as_str())).collect();
    assert_eq!(lines[0], ("print", "hello"));
    assert_eq!(lines[1].0, "debug");
    assert!(lines[1].1.contains("detail"));
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_run_stops_the_script_and_its_steps() {
    let ctx = RunContext::new(BlockingPool::simulated(2));
    let cancel = ctx.cancel.clone();
    let stop = async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cancel.cancel();
    };
    let code = r#"await_step(sleep(10).named("long")); await_step(sleep(1).named("never"));"#;
    let ((outcome, report), ()) = tokio::join!(run_with(script_job(code), ctx), stop);
    assert_eq!(outcome.status, Status::Cancelled);
    assert_eq!(timing(&report, "main/long"), (Status::Cancelled, Some(0), Some(500)));
    assert!(report.steps.iter().all(|s| &*s.path != "main/never"));
}

#[tokio::test(start_paused = true)]
async fn a_job_timeout_stops_a_waiting_script() {
    let mut job = script_job(r#"await_step(sleep(10).named("long"))"#);
    job.timeout = Some(Duration::from_secs(2));
    let (outcome, report) = run_with(job, RunContext::new(BlockingPool::simulated(2))).await;
    assert_eq!(outcome.status, Status::TimedOut);
    assert_eq!(timing(&report, "main/long"), (Status::Cancelled, Some(0), Some(2000)));
}

#[tokio::test(start_paused = true)]
async fn unnamed_steps_are_named_by_kind_and_counter_and_names_stay_unique() {
    let code = r#"await_step(sleep(0)); await_step(sleep(0)); await_step(sleep(0).named("x")); await_step(sleep(0).named("x"));"#;
    let (_, report) = run_script(code).await;
    let paths: Vec<&str> = report.steps.iter().map(|s| &*s.path).collect();
    assert_eq!(paths, vec!["main", "main/sleep_1", "main/sleep_2", "main/x", "main/x#2"]);
}

/// Scripts don't hold pool threads while they wait, so twice as many scripts as
/// threads, each waiting on its own `to_thread`, all finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_scripts_than_pool_threads_never_deadlock() {
    let pool = BlockingPool::new(2);
    let runs = (0..4).map(|i| {
        let ctx = RunContext::new(pool.clone());
        let code = format!("let r = await_step(to_thread(|| {{ sleep_blocking(0.05); {i} }})); r");
        async move { run_with(script_job(&code), ctx).await.0 }
    });
    let outcomes =
        tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(runs)).await.expect("no deadlock");
    for (i, outcome) in outcomes.into_iter().enumerate() {
        assert_eq!(outcome.result, Some(json!(i)), "{:?}", outcome.error);
    }
}

#[tokio::test(start_paused = true)]
async fn a_range_maps_to_a_list_of_steps() {
    let code = r#"let r = gather((0..3).map(|i| sleep(i * 0.5, i * 10)));
                  r + (1..=2).map(|i| i * i)"#;
    let (outcome, report) = run_script(code).await;
    assert_eq!(outcome.status, Status::Succeeded, "{:?}", outcome.error);
    assert_eq!(outcome.result, Some(json!([0, 10, 20, 1, 4])));
    assert_eq!(report.duration_ms, 1000, "the three sleeps ran together");
    assert_eq!(timing(&report, "main/gather_1/sleep_3"), (Status::Succeeded, Some(0), Some(1000)));
}

#[tokio::test(start_paused = true)]
async fn a_range_map_longer_than_max_array_len_is_refused_before_it_runs() {
    let limits = LimitOverrides { max_array_len: Some(10), ..LimitOverrides::default() };
    let code = "let n = 0; let r = (0..11).map(|i| { n += 1; i }); n";
    let (outcome, _) = run_with(script_job_with(code, limits), RunContext::new(BlockingPool::simulated(2))).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap_or_default();
    assert!(error.contains("max_array_len (10)"), "{error}");
    let (outcome, _) = run_script("(0..0).map(|i| i).len() + (3..=2).map(|i| i).len()").await;
    assert_eq!(outcome.result, Some(json!(0)), "{:?}", outcome.error);
}

#[tokio::test(start_paused = true)]
async fn a_sleep_too_long_to_represent_says_so_and_gives_the_maximum() {
    let (outcome, _) = run_script("await_step(sleep(1e300))").await;
    let error = outcome.error.expect("an error");
    assert!(error.contains("too long") && error.contains("at most"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn the_wall_time_limit_counts_the_time_spent_waiting_for_steps() {
    let limits = LimitOverrides { wall_time: Some(Duration::from_secs(2)), ..LimitOverrides::default() };
    let code = r#"try { await_step(sleep(6).named("long")) } catch { await_step(sleep(6).named("again")) }"#;
    let (outcome, report) = run_with(script_job_with(code, limits), RunContext::new(BlockingPool::simulated(2))).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.expect("an error");
    assert!(error.contains("wall-time limit (2s)"), "{error}");
    assert_eq!(timing(&report, "main/long"), (Status::Cancelled, Some(0), Some(2000)));
}

/// Runs `code` with `ctx`; returns the outcome, the report and every event.
async fn run_script_events(code: &str, ctx: RunContext) -> (RunOutcome, RunReport, Vec<RunEvent>) {
    let job = script_job(code);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut report = RunReport::new(job.name.clone(), job.file.clone());
    let outcome = run(std::sync::Arc::new(job), ctx, tx).await;
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        report.apply(&event);
        events.push(event);
    }
    (outcome, report, events)
}

/// The most steps under `group` (a path) in flight at once, from the
/// event stream: each start counts up, each end counts down.
fn max_in_flight(events: &[RunEvent], group: &str) -> usize {
    let prefix = format!("{group}/");
    let (mut now, mut max) = (0usize, 0usize);
    for event in events {
        match event {
            RunEvent::NodeStarted { path, .. } if path.starts_with(&prefix) => {
                now += 1;
                max = max.max(now);
            }
            RunEvent::NodeFinished { path, started: Some(_), .. } if path.starts_with(&prefix) => now -= 1,
            _ => {}
        }
    }
    max
}

/// The start times (ms) of the steps under `group`, in the order they started.
fn starts(events: &[RunEvent], group: &str) -> Vec<u64> {
    let prefix = format!("{group}/");
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::NodeStarted { path, at, .. } if path.starts_with(&prefix) => Some(millis(*at)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn gather_with_a_limit_never_has_more_in_flight_and_keeps_the_order() {
    let code = "gather((0..20).map(|i| sleep(1, i)), #{ limit: 5 })";
    let (outcome, report, events) = run_script_events(code, RunContext::new(BlockingPool::simulated(2))).await;
    assert_eq!(outcome.status, Status::Succeeded, "{:?}", outcome.error);
    assert_eq!(outcome.result, Some(json!((0..20).collect::<Vec<_>>())));
    assert_eq!(max_in_flight(&events, "main/gather_1"), 5);
    // Four rounds of five one-second sleeps.
    assert_eq!(report.duration_ms, 4000);
    let mut expected: Vec<u64> = (0..4).flat_map(|round| [round * 1000; 5]).collect();
    expected.sort_unstable();
    assert_eq!(starts(&events, "main/gather_1"), expected);
}

#[tokio::test(start_paused = true)]
async fn a_limit_is_a_sliding_window_not_batches() {
    // One slow step and many quick ones: with a window, the quick ones keep
    // the other places busy while the slow one runs; in batches of 2 they
    // would wait for it.
    let code = r#"let steps = [sleep(3, "slow")] + (0..6).map(|i| sleep(1, i));
                  let order = [];
                  for x in as_completed(steps, #{ limit: 2 }) { order.push(x); }
                  [gather(steps, #{ limit: 2 }), order]"#;
    let (outcome, report, events) = run_script_events(code, RunContext::new(BlockingPool::simulated(2))).await;
    assert_eq!(outcome.status, Status::Succeeded, "{:?}", outcome.error);
    assert_eq!(outcome.result, Some(json!([["slow", 0, 1, 2, 3, 4, 5], [0, 1, "slow", 2, 3, 4, 5]])));
    assert_eq!(max_in_flight(&events, "main/as_completed_1"), 2);
    assert_eq!(max_in_flight(&events, "main/gather_1"), 2);
    // The slow one holds one place for 3 s while 0, 1 and 2 pass through the
    // other; then 3 and 4 together, then 5: 5 s (batches of two: 6 s). Then
    // the gather, the same 5 s.
    assert_eq!(timing(&report, "main/as_completed_1"), (Status::Succeeded, Some(0), Some(5000)));
    assert_eq!(timing(&report, "main/gather_1"), (Status::Succeeded, Some(5000), Some(10_000)));
}

#[tokio::test(start_paused = true)]
async fn gather_with_a_limit_and_return_exceptions_settles_in_order() {
    let code = r#"let bad = read_file("/nonexistent/gatherd-test").named("bad");
                  let all = gather([sleep(1, "a"), bad, sleep(1, "c")], #{ limit: 1, return_exceptions: true });
                  [all[0], is_error(all[1]), all[2]]"#;
    let (outcome, report, events) = run_script_events(code, RunContext::new(BlockingPool::simulated(2))).await;
    assert_eq!(outcome.status, Status::Succeeded, "{:?}", outcome.error);
    assert_eq!(outcome.result, Some(json!(["a", true, "c"])));
    assert_eq!(max_in_flight(&events, "main/gather_1"), 1);
    assert_eq!(report.duration_ms, 2000);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_option_or_a_limit_below_one_is_a_script_error_naming_it() {
    for (code, words) in [
        ("gather([sleep(1)], #{ limt: 5 })", "gather(): unknown option `limt`; did you mean `limit`?"),
        ("as_completed([sleep(1)], #{ size: 5 })", "as_completed(): unknown option `size`; the options are"),
        ("gather([sleep(1)], #{ limit: 0 })", "gather(): `limit` must be at least 1"),
        ("as_completed([sleep(1)], #{ limit: -3 })", "as_completed(): `limit` must be at least 1"),
        ("gather([sleep(1)], #{ limit: \"5\" })", "gather(): `limit` must be an integer"),
    ] {
        let (outcome, _) = run_script(code).await;
        assert_eq!(outcome.status, Status::Failed, "{code}");
        let error = outcome.error.unwrap_or_default();
        assert!(error.contains(words), "{code}: {error}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_script_knows_its_job_name_run_id_and_the_time() {
    let code = "[job_name(), run_id(), now()]";
    let (outcome, _) = run_script(code).await;
    let result = outcome.result.expect("a result");
    // `gatherd run` keeps no history: no run id.
    assert_eq!(result[0], json!("script"));
    assert_eq!(result[1], json!(null));
    let now = result[2].as_str().expect("now() is a string");
    let at = chrono::DateTime::parse_from_rfc3339(now).expect("RFC 3339");
    assert!((chrono::Utc::now() - at.to_utc()).num_seconds().abs() < 60, "{now}");
    assert!(now.ends_with('Z') && now.len() == "2026-11-29T14:15:22.123Z".len(), "{now}");

    let mut ctx = RunContext::new(BlockingPool::simulated(2));
    ctx.run_id = Some(42);
    let (outcome, _, _) = run_script_events("run_id()", ctx).await;
    assert_eq!(outcome.result, Some(json!(42)));
}
