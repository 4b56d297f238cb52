//! `GET /runs/{id}/events`: a run's events as server-sent events.
//!
//! A run's stream is the whole sequence of its events, in the order the
//! daemon sent them: each [`RunEvent`] becomes one SSE event with
//! - `id:` its number in the run: 0 for `run_started`, then 1, 2, …, the same
//!   number live and in any replay;
//! - `event:` its kind (`run_started`, `node_started`, `attempt_failed`,
//!   `node_finished`, `log`, `run_finished`);
//! - `data:` an [`EventView`] as JSON (whose `event` field repeats the kind).
//!
//! The stream starts at the run's first event (`?from=0`, the default) or at
//! `?from=N`; a `Last-Event-ID: N` header (what a reconnecting `EventSource`
//! sends) resumes at N + 1 and wins over `from`. It replays what happened so
//! far, then follows the run live, with no gap and no repeat at the seam, and
//! ends after `run_finished`. A finished run is replayed from the history and
//! ends: the same events, ids and data as its live stream (outputs as the
//! history keeps them: at most 64 KiB, cut ones marked `truncated`).
//!
//! How there is no gap: the stream subscribes to the run's live channel
//! ([`Control::events`](super::Control::events)) first, then flushes the run
//! history and reads it. An event is either broadcast after the subscription
//! (received) or recorded before the flush (read); one that is neither is
//! followed by one received (or by the channel's end), whose id shows the
//! gap, which is read from the
//! history again (flushed again first); a live `run_finished` is sent once
//! the history has it, so when the stream ends `GET /runs/{id}` has the
//! whole run. A client too slow for the channel is
//! caught up the same way, so it misses nothing the history holds. The daemon
//! keeps no event in memory for this: the history is the memory. Every stream
//! ends when the API shuts down.

use std::convert::Infallible;

use std::collections::VecDeque;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, Utc};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use super::control::Numbered;
use super::{ApiError, AppState};
use crate::exec::{LogLine, NodeKind, RecordedStatus, RunEvent, StepReport, Stream, millis};
use crate::store::{RunId, RunStore, RunTimeline, as_stored};

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
    /// A line a step printed: `stdout` or `stderr`.
    Output {
        /// The step.
        path: String,
        /// `stdout` or `stderr`.
        stream: Stream,
        /// The line.
        text: String,
        /// When, in ms.
        at_ms: u64,
    },
    /// A line a script logged: `print` or `debug`.
    Log {
        /// The script node.
        path: String,
        /// `print` or `debug`.
        stream: Stream,
        /// The same word, the key these lines always had.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        level: Option<Stream>,
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
            EventView::Output { .. } => "output",
            EventView::Log { .. } => "log",
            EventView::RunFinished { .. } => "run_finished",
        }
    }

    /// The view of a live event, as its replay from the history shows it:
    /// the start to the microsecond, outputs within the history's bounds.
    pub fn of(event: &RunEvent) -> EventView {
        match event {
            RunEvent::RunStarted { job, started_at } => {
                EventView::RunStarted { job: job.to_string(), started_at: started_at.trunc_subsecs(6) }
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
                let (output, cut) = as_stored(output.as_ref());
                EventView::NodeFinished {
                    path: path.to_string(),
                    name: name.to_string(),
                    kind: *kind,
                    status: RecordedStatus::Finished(*status),
                    attempts: *attempts,
                    start_ms: started.map(millis),
                    end_ms: Some(millis(*at)),
                    output,
                    error: error.clone(),
                    truncated: *truncated || cut,
                }
            }
            RunEvent::Log { path, stream, text, at } => {
                EventView::line(path.to_string(), *stream, text.clone(), millis(*at))
            }
            RunEvent::RunFinished { status, result, error, duration } => EventView::RunFinished {
                status: RecordedStatus::Finished(*status),
                result: as_stored(result.as_ref()).0,
                error: error.clone(),
                duration_ms: Some(millis(*duration)),
            },
        }
    }

    /// A stored step's `node_finished`.
    fn of_step(s: &StepReport) -> EventView {
        EventView::NodeFinished {
            path: s.path.to_string(),
            name: s.name.to_string(),
            kind: s.kind,
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
        EventView::line(l.path.clone(), l.stream, l.text.clone(), l.at_ms)
    }

    /// A line: `output` for a process's, `log` for a script's.
    fn line(path: String, stream: Stream, text: String, at_ms: u64) -> EventView {
        if stream.is_output() {
            EventView::Output { path, stream, text, at_ms }
        } else {
            EventView::Log { path, stream, level: stream.level(), text, at_ms }
        }
    }

    /// The events of a stored run with their ids, in the order they were
    /// streamed live: each stored fact at the number the daemon gave its event
    /// (see [`RunTimeline`]). Facts stored without a number (older history,
    /// the statuses recovery set after a crash) follow, numbered on, in the
    /// order of the run's document: steps, then log lines, then the end.
    pub fn sequence(timeline: &RunTimeline) -> Vec<(u64, EventView)> {
        let detail = &timeline.detail;
        let run = &detail.run;
        let mut numbered: Vec<(u64, EventView)> = Vec::new();
        let mut rest: Vec<EventView> = Vec::new();
        let mut put = |seq: Option<u64>, view: EventView| match seq {
            Some(seq) => numbered.push((seq, view)),
            None => rest.push(view),
        };
        // A run stored without numbers (older history) is replayed as it
        // always was: no `run_started`, no `attempt_failed`.
        if timeline.run_started.is_some() {
            put(timeline.run_started, EventView::RunStarted { job: run.job.clone(), started_at: run.started_at });
        }
        for (step, seqs) in detail.steps.iter().zip(&timeline.steps) {
            if seqs.started.is_some() || (step.status == RecordedStatus::Running && seqs.finished.is_none()) {
                let (path, name, kind) = (step.path.to_string(), step.name.to_string(), step.kind);
                put(seqs.started, EventView::NodeStarted { path, name, kind, start_ms: step.start_ms });
            }
            for (failed, (seq, retry_in_ms)) in step.retried.iter().zip(&seqs.attempts) {
                // An attempt stored without its number or wait (older history)
                // is left out, as it always was.
                if let (Some(seq), Some(retry_in_ms)) = (seq, retry_in_ms) {
                    let view = EventView::AttemptFailed {
                        path: step.path.to_string(),
                        attempt: failed.attempt,
                        error: failed.error.clone(),
                        retry_in_ms: *retry_in_ms,
                        at_ms: failed.at_ms,
                    };
                    put(Some(*seq), view);
                }
            }
            if step.status != RecordedStatus::Running {
                put(seqs.finished, EventView::of_step(step));
            }
        }
        for (line, seq) in detail.logs.iter().zip(&timeline.logs) {
            put(*seq, EventView::of_line(line));
        }
        if !run.status.is_going() {
            put(
                timeline.run_finished,
                EventView::RunFinished {
                    status: run.status,
                    result: run.result.clone(),
                    error: run.error.clone(),
                    duration_ms: run.duration_ms,
                },
            );
        }
        numbered.sort_by_key(|(seq, _)| *seq);
        let next = numbered.last().map_or(0, |(seq, _)| seq + 1);
        numbered.extend((next..).zip(rest));
        numbered
    }

    /// This event as SSE: `id:` its number in the run, `event:` its kind,
    /// `data:` this view as JSON.
    fn sse(&self, id: u64) -> Event {
        let data = serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        Event::default().id(id.to_string()).event(self.kind()).data(data)
    }
}

/// The query of `GET /runs/{id}/events`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct EventsQuery {
    from: Option<String>,
}

/// The id of the first event to send: one after `Last-Event-ID` (the header a
/// reconnecting client sends; it wins, since an `EventSource` reconnects to
/// the URL it was given, `?from=` included), else `?from=`, else 0.
fn first_id(query: &EventsQuery, headers: &HeaderMap) -> Result<u64, ApiError> {
    if let Some(last) = headers.get("last-event-id") {
        let text = String::from_utf8_lossy(last.as_bytes());
        let text = text.trim();
        // An empty Last-Event-ID is what a client sends before it saw any id.
        if !text.is_empty() {
            return text.parse::<u64>().ok().and_then(|id| id.checked_add(1)).ok_or_else(|| {
                ApiError::BadRequest(format!("Last-Event-ID must be an event id (a number ≥ 0), not `{text}`"))
            });
        }
    }
    match query.from.as_deref() {
        None | Some("") => Ok(0),
        Some(s) => {
            s.parse().map_err(|_| ApiError::BadRequest(format!("from must be an event id (a number ≥ 0), not `{s}`")))
        }
    }
}

/// One stream's state: what it has sent, what waits to be sent, and where
/// the rest comes from (the live channel, else the store).
struct Feed {
    store: Arc<dyn RunStore>,
    run: RunId,
    /// The id of the next event to send: every event before it was sent (or
    /// skipped by `from`), none after it.
    next: u64,
    /// The run's live events; `None` once they are over (or never were).
    live: Option<broadcast::Receiver<Numbered>>,
    /// Events ready to send, in order.
    queue: VecDeque<(u64, EventView)>,
    /// The run's job as the history names it (its path in the jobs folder),
    /// which `run_started` shows live too (the executor's event has the
    /// job's display name).
    job: Option<String>,
    /// `run_finished` is queued (or the run is not live and its stored events
    /// are queued): nothing follows.
    ended: bool,
}

impl Feed {
    /// Queues the stored events from `next` up to (not including) `until`.
    /// The recorder is flushed first: whatever the daemon sent its history
    /// before this call is then readable. Returns `false` if there is no such
    /// run.
    async fn catch_up(&mut self, until: u64) -> Result<bool, ApiError> {
        if let Err(e) = self.store.recorder().flush().await {
            tracing::debug!(run_id = self.run, error = %e, "cannot flush the run history before a replay");
        }
        let Some(timeline) = self.store.timeline(self.run).await? else { return Ok(false) };
        self.job = Some(timeline.detail.run.job.clone());
        for (id, view) in EventView::sequence(&timeline) {
            if id < self.next || id >= until {
                continue;
            }
            self.ended |= matches!(view, EventView::RunFinished { .. });
            self.queue.push_back((id, view));
            self.next = id + 1;
        }
        Ok(true)
    }

    /// Queues what comes next; returns `false` when nothing more will.
    async fn pull(&mut self) -> bool {
        if self.ended {
            return false;
        }
        let Some(live) = self.live.as_mut() else { return false };
        match live.recv().await {
            Ok((id, event)) => {
                if id > self.next {
                    // A gap (this stream lagged, or subscribed between an
                    // event's broadcast and its record): the store has it.
                    if let Err(e) = self.catch_up(id).await {
                        tracing::warn!(run_id = self.run, error = %e, "cannot fill a gap of an event stream");
                    }
                }
                if id >= self.next && !self.ended {
                    self.ended = matches!(event, RunEvent::RunFinished { .. });
                    if self.ended {
                        // The stream ends with the run in the history: a
                        // client may read `GET /runs/{id}` at once.
                        if let Err(e) = self.store.recorder().flush().await {
                            tracing::debug!(run_id = self.run, error = %e, "cannot flush the end of a run");
                        }
                    }
                    let mut view = EventView::of(&event);
                    if let (EventView::RunStarted { job, .. }, Some(stored)) = (&mut view, &self.job) {
                        job.clone_from(stored);
                    }
                    self.queue.push_back((id, view));
                    self.next = id + 1;
                }
            }
            // The next event received is past the gap, and fills it.
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => {
                // The run's sinks are gone: its end is in the store.
                self.live = None;
                if let Err(e) = self.catch_up(u64::MAX).await {
                    tracing::warn!(run_id = self.run, error = %e, "cannot read the end of an event stream");
                }
                self.ended = true;
            }
        }
        true
    }
}

/// `GET /runs/{id}/events[?from=N]` (and `Last-Event-ID`): see the module doc.
pub(super) async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = super::runs::run_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let next = first_id(&query, &headers)?;
    // Subscribe before reading the store: an event is either broadcast after
    // this (received) or recorded before the flush of `catch_up` (read), or
    // it is followed by one received, whose gap `pull` fills from the store.
    let live = state.control.events(id);
    let mut feed =
        Feed { store: state.store.clone(), run: id, next, live, queue: VecDeque::new(), job: None, ended: false };
    if !feed.catch_up(u64::MAX).await? && feed.live.is_none() {
        return Err(ApiError::NotFound(format!("no run {id}")));
    }
    if feed.live.is_none() {
        // Not in flight here (finished, or another node's): its history is all.
        feed.ended = true;
    }
    let events = stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some((id, view)) = feed.queue.pop_front() {
                return Some((Ok::<Event, Infallible>(view.sse(id)), feed));
            }
            if !feed.pull().await {
                return None;
            }
        }
    });
    let events = events.take_until(state.shutdown.cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}
