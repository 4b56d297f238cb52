//! `sleep`: wait, then return the step's `output` — the seed's
//! `await asyncio.sleep(1); return "x"`, or with `blocking = true` the
//! `to_thread(time.sleep, 1)` that occupies a pool thread for the duration.
//!
//! Architecture Invariant: a sleep, async or blocking, ends as soon as its
//! cancel token fires; a blocking one never parks a thread it cannot wake.

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{StepEnv, StepError, StepOutput};
use crate::job::SleepStep;

/// Runs one attempt of a sleep step.
pub(super) async fn run(
    step: &SleepStep,
    blocking: bool,
    env: &StepEnv<'_>,
    cancel: &CancellationToken,
) -> Result<StepOutput, StepError> {
    if blocking {
        // Boxed: the pool's future is big and most sleeps are async.
        Box::pin(env.ctx.pool.sleep(step.duration, cancel)).await.map_err(|_| StepError::Cancelled)?;
    } else {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(StepError::Cancelled),
            _ = tokio::time::sleep(step.duration) => {}
        }
    }
    Ok(StepOutput::whole(step.output.clone().unwrap_or(Value::Null)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use serde_json::json;
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    use crate::exec::BlockingPool;
    use crate::exec::step::testing::{attempt_with, limits, step};
    use crate::exec::step::{StepError, StepOutput};
    use crate::job::{SleepStep, StepKind};

    fn sleep(secs: f64, output: Option<serde_json::Value>) -> StepKind {
        StepKind::Sleep(SleepStep { duration: Duration::from_secs_f64(secs), output })
    }

    async fn run(kind: StepKind, blocking: bool, pool: BlockingPool) -> Result<StepOutput, StepError> {
        attempt_with(&step(kind, blocking), Path::new("/"), pool, limits(), &CancellationToken::new()).await
    }

    #[tokio::test(start_paused = true)]
    async fn async_sleep_returns_its_output_after_exactly_its_duration() {
        let start = Instant::now();
        let out = run(sleep(1.0, Some(json!("url_content"))), false, BlockingPool::new(1)).await;
        assert_eq!(out, Ok(StepOutput::whole("url_content")));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_without_output_returns_null() {
        let out = run(sleep(0.5, None), false, BlockingPool::new(1)).await;
        assert_eq!(out, Ok(StepOutput::whole(serde_json::Value::Null)));
    }

    #[tokio::test(start_paused = true)]
    async fn blocking_sleeps_queue_for_the_pool_and_async_sleeps_do_not() {
        let pool = BlockingPool::simulated(2);
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..5 {
            let pool = pool.clone();
            set.spawn(async move {
                let out = run(sleep(1.0, Some(json!(i))), true, pool).await;
                ("blocking", out, start.elapsed())
            });
        }
        for secs in [0.5, 1.5] {
            let pool = pool.clone();
            set.spawn(async move {
                let out = run(sleep(secs, Some(json!(secs))), false, pool).await;
                ("async", out, start.elapsed())
            });
        }
        let watcher = {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut max = 0;
                while start.elapsed() < Duration::from_secs(4) {
                    max = max.max(pool.busy());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                max
            })
        };
        let mut blocking_ends = Vec::new();
        let mut async_ends = Vec::new();
        while let Some(r) = set.join_next().await {
            let (what, out, at) = r.unwrap();
            assert!(out.is_ok(), "{out:?}");
            if what == "blocking" {
                blocking_ends.push(at);
            } else {
                async_ends.push(at);
            }
        }
        blocking_ends.sort();
        async_ends.sort();
        let s = Duration::from_secs_f64;
        assert_eq!(blocking_ends, [s(1.0), s(1.0), s(2.0), s(2.0), s(3.0)]);
        assert_eq!(async_ends, [s(0.5), s(1.5)], "async sleeps keep their own time");
        assert_eq!(watcher.await.unwrap(), 2, "never more than 2 busy");
        assert_eq!(pool.busy(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_sleep_returns_cancelled_promptly() {
        for blocking in [false, true] {
            let cancel = CancellationToken::new();
            let start = Instant::now();
            let task = {
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    attempt_with(
                        &step(sleep(60.0, None), blocking),
                        Path::new("/"),
                        BlockingPool::simulated(1),
                        limits(),
                        &cancel,
                    )
                    .await
                })
            };
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
            assert_eq!(task.await.unwrap(), Err(StepError::Cancelled));
            assert_eq!(start.elapsed(), Duration::from_millis(200));
        }
    }

    #[tokio::test]
    async fn real_blocking_sleep_returns_its_output_and_frees_the_thread() {
        let pool = BlockingPool::new(1);
        let out = run(sleep(0.01, Some(json!("foo"))), true, pool.clone()).await;
        assert_eq!(out, Ok(StepOutput::whole("foo")));
        assert_eq!(pool.busy(), 0);
    }
}
