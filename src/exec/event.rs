//! The events a run emits. Everything anyone sees of a run — the terminal, `--json`,
//! later the log, the store and metrics — is a projection of this one stream.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// The final state of a step, a group or a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Finished and returned a result.
    Succeeded,
    /// Returned an error (after its retries).
    Failed,
    /// Stopped by its own `timeout` (or an enclosing group's or the job's).
    TimedOut,
    /// Stopped because something else asked: a sibling's failure, a race lost,
    /// Ctrl-C, the file removed.
    Cancelled,
    /// Never started because of a cancel before its turn came.
    Skipped,
    /// History only (the executor never reports it): the daemon stopped (a
    /// crash, kill -9) while it ran.
    Interrupted,
    /// History only: a scheduled fire that came while the daemon was down
    /// and was not caught up.
    Missed,
}

impl Status {
    /// The word used in reports and JSON (`succeeded`, `timed_out`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Cancelled => "cancelled",
            Status::Skipped => "skipped",
            Status::Interrupted => "interrupted",
            Status::Missed => "missed",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one node run within a run: its path from the root, like
/// `main/fetch`; an `each` run of step `p` adds its index: `main/p[2]`.
pub type NodePath = Arc<str>;

/// What a node is, for reports: a step kind (`sleep`, `exec`, …) or a group mode
/// (`gather`, `race`, …).
pub type NodeKind = &'static str;

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
    /// A line a script printed (`print` / `debug`), recorded with the run.
    Log {
        /// The script node that printed it.
        path: NodePath,
        /// From `debug` rather than `print`.
        debug: bool,
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

/// Whether a [`NodeKind`] names a group mode rather than a step kind.
pub fn is_group_kind(kind: &str) -> bool {
    use crate::job::GroupMode;
    [GroupMode::Gather, GroupMode::AsCompleted, GroupMode::Race, GroupMode::Sequence].iter().any(|m| m.key() == kind)
}

/// Every [`NodeKind`] there is: step kinds, then group modes.
const KINDS: &[&str] = &[
    "sleep",
    "exec",
    "shell",
    "http",
    "read_file",
    "write_file",
    "script",
    "to_thread",
    "gather",
    "as_completed",
    "race",
    "sequence",
];

/// The [`NodeKind`] named `kind` (as stored in the history), or `"other"`.
pub fn intern_kind(kind: &str) -> NodeKind {
    KINDS.iter().copied().find(|k| *k == kind).unwrap_or("other")
}
