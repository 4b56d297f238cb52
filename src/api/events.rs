//! `GET /runs/{id}/events`: a run's events as server-sent events.
//!
//! Live while the run is in flight: each [`RunEvent`] from
//! [`Control::events`](super::Control::events) becomes one SSE event named by
//! its kind (`run_started`, `node_started`, `attempt_failed`,
//! `node_finished`, `log`, `run_finished`) whose data is an [`EventView`] as
//! JSON; the stream ends after `run_finished`. A client that subscribes late
//! sees only what happens from then on (the broadcast channel keeps no
//! history); `GET /runs/{id}` has the rest. If the run is no longer live, its
//! stored steps are replayed as `node_finished` events (steps still
//! `running` as `node_started`), then its log lines, then `run_finished` if it
//! has finished, and the stream ends: a client that comes late still sees the
//! end. A client too slow for the channel gets a `lagged` event with the
//! number of events it missed. Every stream ends when the API shuts down.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use super::{ApiError, AppState};
use crate::exec::{LogLevel, LogLine, NodeKind, RecordedStatus, RunEvent, StepReport, millis};
use crate::store::RunDetail;

/// The JSON of one event: a projection of [`RunEvent`] (which is not
/// `Serialize`) with the report's types and field names, times in
/// milliseconds from the run's start. The `event` field repeats the SSE event
/// name. The CLI reads it back (`trigger --wait`, `logs --follow`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventView {
    /// The run began.
    RunStarted {
        /// The job.
        job: String,
        /// Wall-clock start.
        started_at: DateTime<Utc>,
    },
    /// A step or group began.
    NodeStarted {
        /// Its place in the tree.
        path: String,
        /// Its name.
        name: String,
        /// Step kind or group mode.
        kind: NodeKind,
        /// When, in ms.
        start_ms: Option<u64>,
    },
    /// An attempt failed; another follows.
    AttemptFailed {
        /// The step.
        path: String,
        /// Which attempt, 1-based.
        attempt: u32,
        /// Why.
        error: String,
        /// The wait before the next attempt, in ms.
        retry_in_ms: u64,
        /// When, in ms.
        at_ms: u64,
    },
    /// A step or group ended (or was skipped).
    NodeFinished {
        /// Its place in the tree.
        path: String,
        /// Its name.
        name: String,
        /// Step kind or group mode.
        kind: NodeKind,
        /// How it ended.
        status: RecordedStatus,
        /// Attempts made.
        attempts: u32,
        /// Start, in ms; `null` if it never started.
        start_ms: Option<u64>,
        /// End, in ms.
        end_ms: Option<u64>,
        /// Its result (`null` when none).
        output: Value,
        /// Why it did not succeed.
        error: Option<String>,
        /// Whether `output` was cut.
        truncated: bool,
    },
    /// A line a script printed.
    Log {
        /// The script node.
        path: String,
        /// `print` or `debug`.
        level: LogLevel,
        /// The line.
        text: String,
        /// When, in ms.
        at_ms: u64,
    },
    /// The run ended; always the last event.
    RunFinished {
        /// How it ended.
        status: RecordedStatus,
        /// The root's result (`null` when none).
        result: Value,
        /// Why it did not succeed.
        error: Option<String>,
        /// Its length, in ms.
        duration_ms: Option<u64>,
    },
}

impl EventView {
    /// The SSE event name: `node_finished`, `run_finished`, ….
    pub fn kind(&self) -> &'static str {
        match self {
            EventView::RunStarted { .. } => "run_started",
            EventView::NodeStarted { .. } => "node_started",
            EventView::AttemptFailed { .. } => "attempt_failed",
            EventView::NodeFinished { .. } => "node_finished",
            EventView::Log { .. } => "log",
            EventView::RunFinished { .. } => "run_finished",
        }
    }

    /// The view of a live event.
    pub fn of(event: &RunEvent) -> EventView {
        match event {
            RunEvent::RunStarted { job, started_at } => {
                EventView::RunStarted { job: job.to_string(), started_at: *started_at }
            }
            RunEvent::NodeStarted { path, name, kind, at } => EventView::NodeStarted {
                path: path.to_string(),
                name: name.to_string(),
                kind: *kind,
                start_ms: Some(millis(*at)),
            },
            RunEvent::AttemptFailed { path, attempt, error, retry_in, at } => EventView::AttemptFailed {
                path: path.to_string(),
                attempt: *attempt,
                error: error.clone(),
                retry_in_ms: millis(*retry_in),
                at_ms: millis(*at),
            },
            RunEvent::NodeFinished { path, name, kind, status, attempts, started, at, output, error, truncated } => {
                EventView::NodeFinished {
                    path: path.to_string(),
                    name: name.to_string(),
                    kind: *kind,
                    status: RecordedStatus::Finished(*status),
                    attempts: *attempts,
                    start_ms: started.map(millis),
                    end_ms: Some(millis(*at)),
                    output: output.clone().unwrap_or(Value::Null),
                    error: error.clone(),
                    truncated: *truncated,
                }
            }
            RunEvent::Log { path, level, text, at } => {
                EventView::Log { path: path.to_string(), level: *level, text: text.clone(), at_ms: millis(*at) }
            }
            RunEvent::RunFinished { status, result, error, duration } => EventView::RunFinished {
                status: RecordedStatus::Finished(*status),
                result: result.clone().unwrap_or(Value::Null),
                error: error.clone(),
                duration_ms: Some(millis(*duration)),
            },
        }
    }

    /// A stored step: `node_started` while it is `running`, else `node_finished`.
    fn of_step(s: &StepReport) -> EventView {
        let (path, name, kind) = (s.path.to_string(), s.name.to_string(), s.kind);
        if s.status == RecordedStatus::Running {
            return EventView::NodeStarted { path, name, kind, start_ms: s.start_ms };
        }
        EventView::NodeFinished {
            path,
            name,
            kind,
            status: s.status,
            attempts: s.attempts,
            start_ms: s.start_ms,
            end_ms: s.end_ms,
            output: s.output.clone(),
            error: s.error.clone(),
            truncated: s.truncated,
        }
    }

    /// A stored log line.
    fn of_line(l: &LogLine) -> EventView {
        EventView::Log { path: l.path.clone(), level: l.level, text: l.text.clone(), at_ms: l.at_ms }
    }

    /// The replay of a stored run (see the module doc).
    pub fn replay(detail: &RunDetail) -> Vec<EventView> {
        let mut views: Vec<EventView> = detail.steps.iter().map(EventView::of_step).collect();
        views.extend(detail.logs.iter().map(EventView::of_line));
        let run = &detail.run;
        if run.status != RecordedStatus::Running {
            views.push(EventView::RunFinished {
                status: run.status,
                result: run.result.clone(),
                error: run.error.clone(),
                duration_ms: run.duration_ms,
            });
        }
        views
    }

    fn sse(&self) -> Event {
        let data = serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        Event::default().event(self.kind()).data(data)
    }
}

type EventStream = BoxStream<'static, Result<Event, Infallible>>;

/// The live events of `rx` until `run_finished` (or the sender goes away).
fn live(rx: broadcast::Receiver<RunEvent>) -> EventStream {
    stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Ok(event) => {
                let last = matches!(event, RunEvent::RunFinished { .. });
                Some((Ok(EventView::of(&event).sse()), (!last).then_some(rx)))
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let data = serde_json::json!({"event": "lagged", "missed": n}).to_string();
                Some((Ok(Event::default().event("lagged").data(data)), Some(rx)))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
    .boxed()
}

/// `GET /runs/{id}/events`.
pub(super) async fn stream(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = super::runs::run_id(&id)?;
    let events: EventStream = match state.control.events(id) {
        Some(rx) => live(rx),
        None => {
            let detail = state.store.run(id).await?.ok_or_else(|| ApiError::NotFound(format!("no run {id}")))?;
            let views = EventView::replay(&detail);
            stream::iter(views.into_iter().map(|v| Ok(v.sse()))).boxed()
        }
    };
    let events = events.take_until(state.shutdown.cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}
