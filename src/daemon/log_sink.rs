//! The log sink: every run's events become structured tracing events with
//! `job`, `run_id`, `step`, `status` and `duration_ms` fields, which the chosen
//! subscriber writes as text, JSON lines or journald fields.

use crate::exec::{RunEvent, Status};
use crate::store::RunTrigger;

/// Logs the events of one run.
pub struct RunLog {
    /// The job (its path in the jobs folder).
    pub job: String,
    /// The run's id (the store's).
    pub run_id: i64,
    /// Why it runs.
    pub cause: RunTrigger,
}

impl RunLog {
    /// Writes one event to the log.
    pub fn event(&self, event: &RunEvent) {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (job, run_id) = (&self.job, self.run_id);
        match event {
            RunEvent::RunStarted { .. } => {
                tracing::info!(job = %job, run_id, cause = self.cause.as_str(), "run started");
            }
            RunEvent::NodeStarted { .. } => {}
            RunEvent::AttemptFailed { path, attempt, error, retry_in, .. } => {
                tracing::warn!(job = %job, run_id, step = %path, attempt, retry_in_ms = ms(*retry_in), error = %error, "attempt failed; retrying");
            }
            RunEvent::NodeFinished { path, kind, status, started, at, attempts, error, .. } if !kind.is_group() => {
                let duration_ms = started.map_or(0, |s| ms(at.saturating_sub(s)));
                match status {
                    Status::Succeeded => {
                        tracing::info!(job = %job, run_id, step = %path, kind = kind.as_str(), status = %status, duration_ms, attempts, "step finished")
                    }
                    Status::Skipped | Status::Cancelled => {
                        tracing::info!(job = %job, run_id, step = %path, kind = kind.as_str(), status = %status, duration_ms, "step finished")
                    }
                    _ => {
                        tracing::warn!(job = %job, run_id, step = %path, kind = kind.as_str(), status = %status, duration_ms, attempts, error = error.as_deref().unwrap_or(""), "step finished")
                    }
                }
            }
            RunEvent::NodeFinished { .. } => {}
            RunEvent::Log { path, text, .. } => {
                tracing::info!(job = %job, run_id, step = %path, "script: {text}");
            }
            RunEvent::RunFinished { status, error, duration, .. } => {
                let duration_ms = ms(*duration);
                match status {
                    Status::Succeeded => {
                        tracing::info!(job = %job, run_id, status = %status, duration_ms, "run finished")
                    }
                    _ => {
                        tracing::warn!(job = %job, run_id, status = %status, duration_ms, error = error.as_deref().unwrap_or(""), "run finished")
                    }
                }
            }
        }
    }
}
