//! The events a run emits. Everything anyone sees of a run — the terminal,
//! `--json`, the log, the store, metrics and the API's event stream — is a
//! projection of this one stream.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

pub use super::status::Status;
pub use crate::job::NodeKind;
use crate::job::word::word_enum;

/// Identifies one node run within a run: its path from the root, like
/// `main/fetch`; an `each` run of step `p` adds its index: `main/p[2]`.
pub type NodePath = Arc<str>;

word_enum! {
    /// Where a line of a run's output came from: a process's standard
    /// output or error, or the script function that printed it.
    pub enum Stream {
        /// A process's standard output (`exec`, `shell`).
        Stdout = "stdout",
        /// A process's standard error, or an `http` step's failed answer.
        Stderr = "stderr",
        /// A script's `print(...)`.
        Print = "print",
        /// A script's `debug(...)`.
        Debug = "debug",
    }
}

impl Stream {
    /// A process's output (`stdout`/`stderr`), not a script's log line:
    /// the event stream calls these `output`, the others `log`.
    pub fn is_output(self) -> bool {
        matches!(self, Stream::Stdout | Stream::Stderr)
    }

    /// The word a script's line was once recorded under (`level`), kept in
    /// the documents for the readers that know it; `None` for output.
    pub fn level(self) -> Option<Stream> {
        (!self.is_output()).then_some(self)
    }
}

/// A duration in whole milliseconds, as every report, row, view and log line
/// gives times (saturating; a run does not last 584 million years).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One thing that happened in a run. Times are offsets from the run's start,
/// measured with `tokio::time` (exact under a paused clock).
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The run began.
    RunStarted {
        /// The job's name.
        job: Arc<str>,
        /// Wall-clock start, for humans and the store.
        started_at: chrono::DateTime<chrono::Utc>,
    },
    /// A step or group began (its first attempt, for a step).
    NodeStarted {
        /// Where it is in the tree.
        path: NodePath,
        /// Its name as written.
        name: Arc<str>,
        /// Step kind or group mode.
        kind: NodeKind,
        /// When, from the run's start.
        at: Duration,
    },
    /// An attempt of a step failed and another one follows after `retry_in`.
    AttemptFailed {
        /// The step.
        path: NodePath,
        /// The attempt that failed, 1-based.
        attempt: u32,
        /// Why.
        error: String,
        /// The wait before the next attempt.
        retry_in: Duration,
        /// When, from the run's start.
        at: Duration,
    },
    /// A step or group ended, or was skipped (then `started` is `None`).
    NodeFinished {
        /// Where it is in the tree.
        path: NodePath,
        /// Its name as written.
        name: Arc<str>,
        /// Step kind or group mode.
        kind: NodeKind,
        /// How it ended.
        status: Status,
        /// Attempts made (0 if skipped; 1 for groups that ran).
        attempts: u32,
        /// When it started, from the run's start; `None` if it never did.
        started: Option<Duration>,
        /// When it ended, from the run's start.
        at: Duration,
        /// Its result when it succeeded.
        output: Option<Value>,
        /// Why it did not succeed.
        error: Option<String>,
        /// Whether the output was cut at the output bound.
        truncated: bool,
    },
    /// A line a step printed (stdout, stderr) or a script logged (`print`,
    /// `debug`), recorded with the run.
    Log {
        /// The step (or script node) that printed it.
        path: NodePath,
        /// Where the line came from.
        stream: Stream,
        /// The line.
        text: String,
        /// When, from the run's start.
        at: Duration,
    },
    /// The run ended. Always the last event.
    RunFinished {
        /// How it ended.
        status: Status,
        /// The root's result when it succeeded.
        result: Option<Value>,
        /// Why it did not succeed.
        error: Option<String>,
        /// Its length.
        duration: Duration,
    },
}
