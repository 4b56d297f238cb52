//! A run's report, folded from its [`RunEvent`]s: what `gatherd run` prints and
//! what `--json` serialises. It is one projection of the event stream among
//! others (the log, later the store), never a second source of truth.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::{RunEvent, Status};

/// Everything `--json` prints: the binding shape of SPEC.md.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The job's name.
    pub job: String,
    /// The job file.
    pub file: PathBuf,
    /// How the run ended; `None` while it is still going.
    pub status: Option<Status>,
    /// Wall-clock start (RFC 3339).
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Length of the run in milliseconds.
    pub duration_ms: u64,
    /// The root's result.
    pub result: Value,
    /// Why the run did not succeed (absent when it did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every step and group, in the order they first appeared.
    pub steps: Vec<StepReport>,
    /// Lines scripts printed, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
    /// Path → position in `steps`. foldhash: a 100,000-step run looks a path
    /// up twice per step, and SipHash's DoS resistance buys nothing here.
    #[serde(skip)]
    index: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
}

/// One step or group of a report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Its name as written (shared with the run's events).
    pub name: Arc<str>,
    /// Its place in the tree, e.g. `main/fetch` (shared with the run's events).
    pub path: Arc<str>,
    /// Step kind (`sleep`, `exec`, …) or group mode (`gather`, …).
    pub kind: &'static str,
    /// How it ended; `None` while running.
    pub status: Option<Status>,
    /// Attempts made.
    pub attempts: u32,
    /// Start, in ms from the run's start; `None` if it never started.
    pub start_ms: Option<u64>,
    /// End, in ms from the run's start; `None` while running.
    pub end_ms: Option<u64>,
    /// Its result.
    pub output: Value,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// Whether `output` was cut at the output bound.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The attempts that failed and were retried, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retried: Vec<FailedAttempt>,
}

/// A line a script printed.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// The script node that printed it.
    pub path: String,
    /// When, in ms from the run's start.
    pub at_ms: u64,
    /// `print` or `debug`.
    pub level: &'static str,
    /// The line.
    pub text: String,
}

/// An attempt of a step that failed and was followed by another.
#[derive(Debug, Clone, Serialize)]
pub struct FailedAttempt {
    /// Which attempt, 1-based.
    pub attempt: u32,
    /// Why it failed.
    pub error: String,
    /// When it failed, in ms from the run's start.
    pub at_ms: u64,
}

impl StepReport {
    /// Whether this line is a group rather than a step.
    pub fn is_group(&self) -> bool {
        super::event::is_group_kind(self.kind)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RunReport {
    /// An empty report for `job` loaded from `file`.
    pub fn new(job: impl Into<String>, file: impl Into<PathBuf>) -> RunReport {
        RunReport {
            job: job.into(),
            file: file.into(),
            status: None,
            started_at: None,
            duration_ms: 0,
            result: Value::Null,
            error: None,
            steps: Vec::new(),
            logs: Vec::new(),
            index: HashMap::default(),
        }
    }

    /// Folds one event in.
    pub fn apply(&mut self, event: &RunEvent) {
        match event {
            RunEvent::RunStarted { started_at, .. } => self.started_at = Some(*started_at),
            RunEvent::NodeStarted { path, name, kind, at } => {
                let line = self.line(path, name, kind);
                line.start_ms = Some(ms(*at));
                line.attempts = 1;
            }
            RunEvent::AttemptFailed { path, attempt, error, at, .. } => {
                if let Some(&i) = self.index.get(path) {
                    let line = &mut self.steps[i];
                    line.attempts = attempt + 1;
                    line.retried.push(FailedAttempt { attempt: *attempt, error: error.clone(), at_ms: ms(*at) });
                }
            }
            RunEvent::NodeFinished { path, name, kind, status, attempts, started, at, output, error, truncated } => {
                let line = self.line(path, name, kind);
                line.status = Some(*status);
                line.attempts = *attempts;
                line.start_ms = started.map(ms);
                line.end_ms = Some(ms(*at));
                line.output = output.clone().unwrap_or(Value::Null);
                line.error = error.clone();
                line.truncated = *truncated;
            }
            RunEvent::Log { path, debug, text, at } => self.logs.push(LogLine {
                path: path.to_string(),
                at_ms: ms(*at),
                level: if *debug { "debug" } else { "print" },
                text: text.clone(),
            }),
            RunEvent::RunFinished { status, result, error, duration } => {
                self.status = Some(*status);
                self.result = result.clone().unwrap_or(Value::Null);
                self.error = error.clone();
                self.duration_ms = ms(*duration);
            }
        }
    }

    fn line(&mut self, path: &Arc<str>, name: &Arc<str>, kind: &'static str) -> &mut StepReport {
        let i = *self.index.entry(path.clone()).or_insert_with(|| {
            self.steps.push(StepReport {
                name: name.clone(),
                path: path.clone(),
                kind,
                status: None,
                attempts: 0,
                start_ms: None,
                end_ms: None,
                output: Value::Null,
                error: None,
                truncated: false,
                retried: Vec::new(),
            });
            self.steps.len() - 1
        });
        &mut self.steps[i]
    }
}
