//! Running one job: the run tree, groups, steps, the blocking pool, cancellation,
//! timeouts and retries.
//!
//! [`run`] takes a [`Job`] and a [`RunContext`] and reports everything that
//! happens as [`RunEvent`]s on a channel.
//!
//! Architecture Invariant: the executor knows nothing of the daemon, the store or
//! the terminal. `gatherd run`, the daemon and the tests all drive this same
//! function and only differ in what they do with the events.
//!
//! Architecture Invariant: every task started here has an owner that awaits it,
//! and every one holds a child of the run's cancel token.

mod environment;
mod event;
pub mod ledger;
pub mod pool;
pub mod report;
mod script_job;
pub mod secrets;
mod status;
pub mod step;
mod tree;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

pub use environment::{DEFAULT_PATH, Environment, glob_matches};
pub use event::{NodeKind, NodePath, RunEvent, Status, Stream, millis};
pub use ledger::{ProcessGroup, ProcessLedger};
pub use pool::BlockingPool;
pub use report::{FailedAttempt, LogLine, RunReport, StepReport};
pub use secrets::{MASK, MIN_SECRET_BYTES, Masker, Secrets};
pub use status::RecordedStatus;

use crate::job::{Job, ScriptLimits};

/// An `http` request's limit when neither its table nor its step sets a `timeout`.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Bounds that keep one run from eating the host.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The most bytes of a step's output (stdout, HTTP body, file) that are kept;
    /// the rest is dropped and the output marked truncated.
    pub output_bytes: usize,
    /// How many bytes of stderr are kept for the error of a failed process.
    pub stderr_tail_bytes: usize,
    /// How much of a step's lines (stdout and stderr) become events, unless
    /// the job says otherwise (`max_output`).
    pub max_output: step::OutputBounds,
    /// Between SIGTERM and SIGKILL when a process group is cancelled.
    pub kill_grace: Duration,
    /// How long one `http` request may take when neither the http table nor
    /// the step sets a `timeout`, so a silent server cannot hang a run.
    pub http_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            output_bytes: 1024 * 1024,
            stderr_tail_bytes: 4096,
            max_output: step::OutputBounds::default(),
            kill_grace: Duration::from_secs(5),
            http_timeout: DEFAULT_HTTP_TIMEOUT,
        }
    }
}

/// What a run needs from whoever starts it.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Cancelling it cancels the whole run (Ctrl-C, file removed, shutdown).
    pub cancel: CancellationToken,
    /// Where `blocking = true` steps run.
    pub pool: BlockingPool,
    /// Output and kill bounds.
    pub limits: Limits,
    /// The global defaults of the script sandbox; a job's own limits win.
    pub script_limits: ScriptLimits,
    /// Told of every process group a step starts and reaps (the daemon's
    /// record for after a `kill -9`); `None` for `gatherd run`.
    pub ledger: Option<Arc<dyn ProcessLedger>>,
    /// What steps get from outside the job: their processes' base
    /// environment, the secrets, and the masker every event goes through.
    pub environment: Arc<Environment>,
    /// The run's id in the history (`GATHERD_RUN_ID`, `{{ run.id }}`, a
    /// Rhai job's `run_id()`); `None` under `gatherd run`, which keeps no
    /// history.
    pub run_id: Option<i64>,
}

impl RunContext {
    /// A context with a fresh token, the given pool and default limits.
    pub fn new(pool: BlockingPool) -> RunContext {
        RunContext {
            cancel: CancellationToken::new(),
            pool,
            limits: Limits::default(),
            script_limits: ScriptLimits::default(),
            ledger: None,
            environment: Arc::default(),
            run_id: None,
        }
    }
}

/// How a run ended; the same facts as its `RunFinished` event.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// succeeded, failed, timed_out or cancelled.
    pub status: Status,
    /// The root's result when it succeeded.
    pub result: Option<serde_json::Value>,
    /// Why it did not succeed.
    pub error: Option<String>,
}

/// Runs `job` to the end, sending every event to `events` (a closed receiver is
/// fine: the run goes on). Returns when every task of the run has finished.
pub async fn run(job: Arc<Job>, ctx: RunContext, events: UnboundedSender<RunEvent>) -> RunOutcome {
    tree::run(job, ctx, events).await
}

#[cfg(test)]
mod semantics_tests;

#[cfg(test)]
mod outcome_tests;

#[cfg(test)]
pub(crate) mod testing {
    //! Running a job to the end in a test and folding its events.

    use std::sync::Arc;

    use super::{RunContext, RunOutcome, RunReport, run};
    use crate::job::Job;

    /// Runs `job` on `ctx`; returns the outcome and the report of its events.
    pub(crate) async fn run_with(job: Job, ctx: RunContext) -> (RunOutcome, RunReport) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut report = RunReport::new(job.name.clone(), job.file.clone());
        let outcome = run(Arc::new(job), ctx, tx).await;
        while let Ok(event) = rx.try_recv() {
            report.apply(&event);
        }
        (outcome, report)
    }

    /// The report's line at `path`.
    pub(crate) fn line<'a>(report: &'a RunReport, path: &str) -> &'a super::StepReport {
        report
            .steps
            .iter()
            .find(|s| &*s.path == path)
            .unwrap_or_else(|| panic!("no step {path} in {:#?}", report.steps))
    }

    /// (status, start_ms, end_ms) of the line at `path`.
    pub(crate) fn timing(report: &RunReport, path: &str) -> (super::Status, Option<u64>, Option<u64>) {
        let l = line(report, path);
        (l.status.finished().expect("finished"), l.start_ms, l.end_ms)
    }
}

#[cfg(test)]
mod script_tests;

#[cfg(test)]
mod capture_tests;
