//! The writer thread: the only SQLite write connection, fed by the recorder's
//! channel, writing events in batched transactions.
//!
//! A batch ends when [`BATCH_EVENTS`] events are pending, [`BATCH_WINDOW`]
//! after its first event, when a run finishes, or when a flush, a one-off
//! write or close is asked; it is then written in one `BEGIN IMMEDIATE`
//! transaction on cached prepared statements.
//!
//! Architecture Invariant: one bad event (say, for a run id that does not
//! exist) loses that event only: a failed statement is logged and the batch
//! goes on. Only a failed commit loses the batch (logged).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use serde_json::Value;

use super::ts;
use crate::exec::RunEvent;
use crate::store::recorder::Msg;
use crate::store::{BATCH_EVENTS, BATCH_WINDOW, OUTPUT_BOUND, RecordedStatus, RunId, StoreError};

/// Counters of the writer, for tests and (later) metrics.
#[derive(Debug, Default)]
pub(super) struct Stats {
    /// Batches of events committed.
    pub(super) batches: AtomicU64,
    /// Events written.
    pub(super) events: AtomicU64,
}

/// One event waiting for its batch.
struct Pending {
    run: RunId,
    event: RunEvent,
    at: DateTime<Utc>,
}

/// The writer's state: its connection and the batch being collected.
pub(super) struct Writer {
    conn: Connection,
    rx: Receiver<Msg>,
    stats: Arc<Stats>,
    pending: Vec<Pending>,
}

impl Writer {
    pub(super) fn new(conn: Connection, rx: Receiver<Msg>, stats: Arc<Stats>) -> Writer {
        Writer { conn, rx, stats, pending: Vec::with_capacity(BATCH_EVENTS) }
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
                    None => match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(msg) => msg,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return self.flush_logged(),
                    },
                };
                match msg {
                    Msg::Event { run, event, at } => {
                        let finished = matches!(event, RunEvent::RunFinished { .. });
                        self.pending.push(Pending { run, event, at });
                        if finished || self.pending.len() >= BATCH_EVENTS {
                            break;
                        }
                    }
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
            }
            self.flush_logged();
        }
    }

    fn flush_logged(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!("{e}; these events are not in the run history");
        }
    }

    /// Writes the pending events in one transaction.
    fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let n = self.pending.len() as u64;
        let result = (|| {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for p in &self.pending {
                if let Err(e) = apply(&tx, p.run, &p.event, p.at) {
                    tracing::warn!(run_id = p.run, "cannot record an event of the run: {e}");
                }
            }
            tx.commit()
        })();
        self.pending.clear();
        result.map_err(|source| StoreError::Sqlite { what: "write a batch of run events", source })?;
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.events.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

/// Milliseconds as SQLite's integer.
pub(super) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A JSON value as stored: its JSON text, at most [`OUTPUT_BOUND`] bytes of
/// content. A longer string keeps its first bytes (still a string); another
/// long value becomes a JSON string of the start of its JSON text. Returns the
/// text and whether it was cut.
pub(super) fn bounded_json(value: Option<&Value>) -> (Option<String>, bool) {
    let Some(value) = value else { return (None, false) };
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
            if text.len() > OUTPUT_BOUND { (Some(cut(&text)), true) } else { (Some(text), false) }
        }
    }
}

/// Writes one event into the open transaction.
fn apply(tx: &Transaction<'_>, run: RunId, event: &RunEvent, at_wall: DateTime<Utc>) -> rusqlite::Result<()> {
    match event {
        RunEvent::RunStarted { started_at, .. } => {
            tx.prepare_cached("UPDATE runs SET started_at = ?2 WHERE id = ?1")?
                .execute(params![run, ts(*started_at)])?;
        }
        RunEvent::NodeStarted { path, name, kind, at } => {
            tx.prepare_cached(
                "INSERT INTO steps (run_id, path, name, kind, status, attempts, start_ms) \
                 VALUES (?1, ?2, ?3, ?4, 'running', 1, ?5) \
                 ON CONFLICT (run_id, path) DO UPDATE SET attempts = 1, start_ms = excluded.start_ms",
            )?
            .execute(params![run, &**path, &**name, *kind, ms(*at)])?;
        }
        RunEvent::AttemptFailed { path, attempt, error, at, .. } => {
            let changed = tx
                .prepare_cached("UPDATE steps SET attempts = ?3 WHERE run_id = ?1 AND path = ?2")?
                .execute(params![run, &**path, attempt + 1])?;
            if changed > 0 {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO attempts (run_id, path, attempt, error, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![run, &**path, attempt, error, ms(*at)])?;
            }
        }
        RunEvent::NodeFinished { path, name, kind, status, attempts, started, at, output, error, truncated } => {
            let (output, cut) = bounded_json(output.as_ref());
            tx.prepare_cached(
                "INSERT INTO steps (run_id, path, name, kind, status, attempts, start_ms, end_ms, output, truncated, error) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT (run_id, path) DO UPDATE SET status = excluded.status, attempts = excluded.attempts, \
                 start_ms = excluded.start_ms, end_ms = excluded.end_ms, output = excluded.output, \
                 truncated = excluded.truncated, error = excluded.error",
            )?
            .execute(params![
                run,
                &**path,
                &**name,
                *kind,
                RecordedStatus::from(*status).as_str(),
                attempts,
                started.map(ms),
                ms(*at),
                output,
                *truncated || cut,
                error,
            ])?;
        }
        RunEvent::Log { path, debug, text, at } => {
            tx.prepare_cached("INSERT INTO logs (run_id, path, at_ms, level, text) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![run, &**path, ms(*at), if *debug { "debug" } else { "print" }, text])?;
        }
        RunEvent::RunFinished { status, result, error, duration } => {
            let (result, cut) = bounded_json(result.as_ref());
            tx.prepare_cached(
                "UPDATE runs SET status = ?2, finished_at = ?3, duration_ms = ?4, error = ?5, result = ?6, \
                 result_truncated = ?7 WHERE id = ?1",
            )?
            .execute(params![
                run,
                RecordedStatus::from(*status).as_str(),
                ts(at_wall),
                ms(*duration),
                error,
                result,
                cut
            ])?;
        }
    }
    Ok(())
}
