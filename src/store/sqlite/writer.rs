//! The writer thread: the only SQLite write connection, fed by the recorder's
//! channel, writing events, run rows and job rows in batched transactions.
//!
//! A batch ends when [`BATCH_EVENTS`] writes are pending, [`BATCH_WINDOW`]
//! after its first write, or when a flush, a one-off write or close is asked;
//! it is then written in one `BEGIN IMMEDIATE` transaction on cached prepared
//! statements. A batch holding a run's beginning (someone waits for its id) or
//! a run's end (someone may read it) ends as soon as nothing more is already
//! waiting in the channel: alone, that is at once; in a burst, every run that
//! began or ended meanwhile shares one commit (group commit).
//!
//! Architecture Invariant: one bad write (say, an event for a run id that does
//! not exist) loses that write only: a failed statement is logged (or answered)
//! and the batch goes on. Only a failed commit loses the batch (logged, and
//! answered to each `begin_run` in it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use serde_json::Value;
use tokio::sync::oneshot;

use super::ts;
use crate::exec::{RecordedStatus, RunEvent, millis};
use crate::store::json::depth_bounded;
use crate::store::recorder::Msg;
use crate::store::{BATCH_EVENTS, BATCH_WINDOW, JobRecord, OUTPUT_BOUND, RunId, RunStart, StoreError};

/// Counters of the writer, for tests and (later) metrics.
#[derive(Debug, Default)]
pub(super) struct Stats {
    /// Batches committed.
    pub(super) batches: AtomicU64,
    /// Events written.
    pub(super) events: AtomicU64,
}

/// One write waiting for its batch, in the order asked.
enum Pending {
    Event { run: RunId, seq: Option<u64>, event: RunEvent, at: DateTime<Utc> },
    Begin { start: RunStart, answer: oneshot::Sender<Result<RunId, StoreError>> },
    Job(JobRecord),
}

/// The writer's state: its connection and the batch being collected.
pub(super) struct Writer {
    conn: Connection,
    rx: Receiver<Msg>,
    stats: Arc<Stats>,
    pending: Vec<Pending>,
    /// The batch holds a run's beginning or end: commit once the channel is
    /// momentarily empty rather than at the end of the window.
    urgent: bool,
}

impl Writer {
    pub(super) fn new(conn: Connection, rx: Receiver<Msg>, stats: Arc<Stats>) -> Writer {
        Writer { conn, rx, stats, pending: Vec::with_capacity(BATCH_EVENTS), urgent: false }
    }

    /// Runs until [`Msg::Close`] or until every sender is gone.
    pub(super) fn run(mut self) {
        loop {
            let Ok(first) = self.rx.recv() else {
                return self.flush_logged();
            };
            let deadline = Instant::now() + BATCH_WINDOW;
            let mut next = Some(first);
            loop {
                let msg = match next.take() {
                    Some(msg) => msg,
                    None if self.urgent => match self.rx.try_recv() {
                        Ok(msg) => msg,
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => return self.flush_logged(),
                    },
                    None => match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(msg) => msg,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return self.flush_logged(),
                    },
                };
                match msg {
                    Msg::Event { run, seq, event, at } => {
                        self.urgent |= matches!(event, RunEvent::RunFinished { .. });
                        self.pending.push(Pending::Event { run, seq, event, at });
                    }
                    Msg::Begin { start, answer } => {
                        self.urgent = true;
                        self.pending.push(Pending::Begin { start, answer });
                    }
                    Msg::Job(job) => self.pending.push(Pending::Job(job)),
                    Msg::Flush(answer) => {
                        let _ = answer.send(self.flush());
                        break;
                    }
                    Msg::Call(call) => {
                        self.flush_logged();
                        call(&mut self.conn);
                        break;
                    }
                    Msg::Close(answer) => {
                        let flushed = self.flush();
                        // Leave a small database behind: fold the WAL into it
                        // and truncate it (readers may still hold it; then this
                        // is a harmless partial checkpoint).
                        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
                            tracing::debug!("cannot checkpoint the run store's WAL at close: {e}");
                        }
                        let _ = answer.send(flushed);
                        return;
                    }
                }
                if self.pending.len() >= BATCH_EVENTS {
                    break;
                }
            }
            self.flush_logged();
        }
    }

    fn flush_logged(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!("{e}; these events are not in the run history");
        }
    }

    /// Writes the pending writes in one transaction, then answers the
    /// beginnings of runs in it.
    fn flush(&mut self) -> Result<(), StoreError> {
        self.urgent = false;
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut events = 0;
        let mut begun = Vec::new();
        let result = (|| {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for p in self.pending.drain(..) {
                match p {
                    Pending::Event { run, seq, event, at } => {
                        events += 1;
                        if let Err(e) = apply(&tx, run, seq, &event, at) {
                            tracing::warn!(run_id = run, "cannot record an event of the run: {e}");
                        }
                    }
                    Pending::Begin { start, answer } => {
                        let id = super::begin_run(&tx, &start);
                        begun.push((answer, id));
                    }
                    Pending::Job(job) => {
                        if let Err(e) = super::upsert_job(&tx, &job) {
                            tracing::error!(job = %job.job, "cannot record the job file in the store: {e}");
                        }
                    }
                }
            }
            tx.commit()
        })();
        // What the transaction did not reach (it could not begin) fails with the batch.
        for p in self.pending.drain(..) {
            if let Pending::Begin { answer, .. } = p {
                begun.push((answer, Err(StoreError::Closed)));
            }
        }
        match result {
            Ok(()) => {
                // Counted before anyone hears back, so a caller that saw its
                // run begin also sees the commit counted.
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats.events.fetch_add(events, Ordering::Relaxed);
                for (answer, id) in begun {
                    let _ = answer.send(id);
                }
                Ok(())
            }
            Err(source) => {
                let reason = source.to_string();
                for (answer, _) in begun {
                    let _ = answer.send(Err(StoreError::Batch { what: "begin a run", reason: reason.clone() }));
                }
                Err(StoreError::Sqlite { what: "write a batch of run events", source })
            }
        }
    }
}

/// Milliseconds ([`millis`]) as SQLite's integer.
fn ms(d: Duration) -> i64 {
    i64::try_from(millis(d)).unwrap_or(i64::MAX)
}

/// A JSON value as stored: its JSON text, at most
/// [`JSON_DEPTH_BOUND`](crate::store::JSON_DEPTH_BOUND) levels deep (deeper
/// parts become a marker string, see `store::json`) and at most
/// [`OUTPUT_BOUND`] bytes of content. A longer string keeps its first bytes
/// (still a string); another long value becomes a JSON string of the start of
/// its JSON text. Returns the text and whether it was cut.
pub(crate) fn bounded_json(value: Option<&Value>) -> (Option<String>, bool) {
    let Some(value) = value else { return (None, false) };
    let shallow = depth_bounded(value);
    let deep = shallow.is_some();
    let value = shallow.as_ref().unwrap_or(value);
    let cut = |s: &str| {
        let mut end = OUTPUT_BOUND.min(s.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Value::String(s[..end].to_string()).to_string()
    };
    match value {
        Value::String(s) if s.len() > OUTPUT_BOUND => (Some(cut(s)), true),
        _ => {
            let text = value.to_string();
            if text.len() > OUTPUT_BOUND { (Some(cut(&text)), true) } else { (Some(text), deep) }
        }
    }
}

/// Writes one event into the open transaction, with its number in the run's
/// event stream (`seq`) where it has one.
fn apply(
    tx: &Transaction<'_>,
    run: RunId,
    seq: Option<u64>,
    event: &RunEvent,
    at_wall: DateTime<Utc>,
) -> rusqlite::Result<()> {
    let seq = seq.and_then(|s| i64::try_from(s).ok());
    match event {
        RunEvent::RunStarted { started_at, .. } => {
            tx.prepare_cached("UPDATE runs SET started_at = ?2, start_seq = ?3 WHERE id = ?1")?.execute(params![
                run,
                ts(*started_at),
                seq
            ])?;
        }
        RunEvent::NodeStarted { path, name, kind, at } => {
            tx.prepare_cached(
                "INSERT INTO steps (run_id, path, name, kind, status, attempts, start_ms, start_seq) \
                 VALUES (?1, ?2, ?3, ?4, ?6, 1, ?5, ?7) \
                 ON CONFLICT (run_id, path) DO UPDATE SET attempts = 1, start_ms = excluded.start_ms, \
                 start_seq = excluded.start_seq",
            )?
            .execute(params![
                run,
                &**path,
                &**name,
                kind.as_str(),
                ms(*at),
                RecordedStatus::Running.as_str(),
                seq
            ])?;
        }
        RunEvent::AttemptFailed { path, attempt, error, retry_in, at } => {
            let changed = tx
                .prepare_cached("UPDATE steps SET attempts = ?3 WHERE run_id = ?1 AND path = ?2")?
                .execute(params![run, &**path, attempt + 1])?;
            if changed > 0 {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO attempts (run_id, path, attempt, error, at_ms, seq, retry_in_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![run, &**path, attempt, error, ms(*at), seq, ms(*retry_in)])?;
            }
        }
        RunEvent::NodeFinished { path, name, kind, status, attempts, started, at, output, error, truncated } => {
            let (output, cut) = bounded_json(output.as_ref());
            tx.prepare_cached(
                "INSERT INTO steps (run_id, path, name, kind, status, attempts, start_ms, end_ms, output, truncated, \
                 error, end_seq) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                 ON CONFLICT (run_id, path) DO UPDATE SET status = excluded.status, attempts = excluded.attempts, \
                 start_ms = excluded.start_ms, end_ms = excluded.end_ms, output = excluded.output, \
                 truncated = excluded.truncated, error = excluded.error, end_seq = excluded.end_seq",
            )?
            .execute(params![
                run,
                &**path,
                &**name,
                kind.as_str(),
                status.as_str(),
                attempts,
                started.map(ms),
                ms(*at),
                output,
                *truncated || cut,
                error,
                seq,
            ])?;
        }
        RunEvent::Log { path, level, text, at } => {
            tx.prepare_cached(
                "INSERT INTO logs (run_id, path, at_ms, level, text, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![run, &**path, ms(*at), level.as_str(), text, seq])?;
        }
        RunEvent::RunFinished { status, result, error, duration } => {
            let (result, cut) = bounded_json(result.as_ref());
            tx.prepare_cached(
                "UPDATE runs SET status = ?2, finished_at = ?3, duration_ms = ?4, error = ?5, result = ?6, \
                 result_truncated = ?7, end_seq = ?8 WHERE id = ?1",
            )?
            .execute(params![
                run,
                status.as_str(),
                ts(at_wall),
                ms(*duration),
                error,
                result,
                cut,
                seq
            ])?;
        }
    }
    Ok(())
}
