//! A run's sinks: everything the daemon makes of a run's events — the log,
//! the metrics, the live stream for the API's subscribers and the run history
//! — is fed here, from the one stream the executor emits, in that order.
//!
//! The log: every event becomes a structured tracing event with `job`,
//! `run_id`, `step`, `status` and `duration_ms` fields, which the chosen
//! subscriber writes as text, JSON lines or journald fields. A line a step
//! printed is one event of its own target, [`OUTPUT_TARGET`], whose message
//! is the line: the subscriber keeps or drops that target as a whole
//! (`log_output`), so a dropped line costs a callsite check, not a format.
//!
//! The live stream and the history: every event gets its number in the run
//! (0, 1, 2, …), sent with it to live subscribers and recorded with it, so a
//! replay from the history is the live stream (`api::events`). An event is
//! recorded before it is sent: what a subscriber received, and everything
//! before it, is in the history once the recorder is flushed. Nothing is kept
//! in memory for late subscribers.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use super::control::{Live, LiveRun};
use crate::api::Metrics;
use crate::exec::{RunEvent, Status, Stream, millis as ms};
use crate::store::{Recorder, RunId, RunTrigger};
use crate::watch::JobId;

/// Where one run's events go.
pub struct RunSinks {
    job: JobId,
    log: RunLog,
    metrics: Arc<Metrics>,
    /// The run's live stream, when it has an id the API can name.
    live: Option<(RunId, LiveRun, Live)>,
    /// The run history, when the store gave the run an id.
    recorder: Option<(RunId, Recorder)>,
    /// The number of the next event.
    seq: Cell<u64>,
}

impl RunSinks {
    /// The sinks of a run of `job`; `run_id` is `None` when the store could
    /// not record the run (it still runs, and is logged and counted).
    pub fn new(
        job: JobId,
        run_id: Option<RunId>,
        cause: RunTrigger,
        metrics: Arc<Metrics>,
        live: &Live,
        recorder: Recorder,
    ) -> RunSinks {
        // Live subscribers (server-sent events) of this run; the channel
        // itself is made by the first subscriber.
        let live = run_id.map(|run_id| {
            let slot = LiveRun::default();
            live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(run_id, slot.clone());
            (run_id, slot, live.clone())
        });
        RunSinks {
            log: RunLog { job: job.to_string(), run_id: run_id.unwrap_or(-1), cause },
            job,
            metrics,
            live,
            recorder: run_id.map(|id| (id, recorder)),
            seq: Cell::new(0),
        }
    }

    /// One event of the run, to every sink.
    pub fn event(&self, event: RunEvent) {
        self.log.event(&event);
        observe(&self.metrics, self.job.as_str(), &event);
        self.stream(event);
    }

    /// The end of a run that never started (cancelled while queued): logged,
    /// recorded and sent to live subscribers like any run's end, and counted
    /// in `gatherd_runs_total` by its status, but never in flight.
    pub fn never_started(&self, status: Status, error: &str) {
        let event =
            RunEvent::RunFinished { status, result: None, error: Some(error.to_string()), duration: Duration::ZERO };
        self.log.event(&event);
        self.metrics.run_not_started(self.job.as_str(), status.as_str());
        self.stream(event);
    }

    /// To the history and the live stream, numbered.
    fn stream(&self, event: RunEvent) {
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        // Recorded before it is sent: a subscriber that received it can
        // flush the recorder and find it (and all before it) in the history.
        let live = self.live.as_ref().and_then(|(_, slot, _)| slot.get()).filter(|b| b.receiver_count() > 0);
        match (live, &self.recorder) {
            (Some(live), Some((run_id, recorder))) => {
                recorder.record_numbered(*run_id, seq, event.clone());
                let _ = live.send((seq, event));
            }
            (Some(live), None) => {
                let _ = live.send((seq, event));
            }
            (None, Some((run_id, recorder))) => recorder.record_numbered(*run_id, seq, event),
            (None, None) => {}
        }
    }
}

impl Drop for RunSinks {
    /// The run is over (or its task is gone): no more live events.
    fn drop(&mut self) {
        if let Some((run_id, _, live)) = &self.live {
            live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(run_id);
        }
    }
}

/// The metrics sink: what one event of a run changes in the counters.
fn observe(metrics: &Metrics, job: &str, event: &RunEvent) {
    match event {
        RunEvent::RunStarted { .. } => metrics.run_started(job),
        RunEvent::NodeFinished { kind, started: Some(started), at, .. } if !kind.is_group() => {
            metrics.step_finished(kind.as_str(), at.saturating_sub(*started));
        }
        RunEvent::RunFinished { status, duration, .. } => metrics.run_finished(job, status.as_str(), *duration),
        _ => {}
    }
}

/// The tracing target of the lines steps print (stdout at INFO, stderr at
/// WARN): one target, so `log_output` (and a filter such as
/// `gatherd::output=warn`) can take them in or leave them out as a whole.
pub const OUTPUT_TARGET: &str = "gatherd::output";

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
            // A process's line: its text is the message, so the journal
            // and `journalctl -f` show the line itself.
            RunEvent::Log { path, stream: stream @ Stream::Stdout, text, .. } => {
                tracing::info!(target: OUTPUT_TARGET, job = %job, run_id, step = %path, stream = stream.as_str(), "{text}");
            }
            RunEvent::Log { path, stream: stream @ Stream::Stderr, text, .. } => {
                tracing::warn!(target: OUTPUT_TARGET, job = %job, run_id, step = %path, stream = stream.as_str(), "{text}");
            }
            RunEvent::Log { path, text, .. } => {
                tracing::info!(job = %job, run_id, step = %path, text = %text, "script output");
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
