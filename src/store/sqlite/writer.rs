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
//! Inside a batch, a burst of [`ROWS_PER_STATEMENT`] step starts in a row (or
//! of step ends, or of log lines) is written by one multi-row `INSERT` — the
//! same rows, in the same order, as the statements one by one, for a fixed
//! cost shared by the rows; a burst with a row SQLite refuses is written
//! again row by row, so that row alone is lost (the invariant below).
//!
//! ## When the file cannot be written (disk full, read-only, deleted)
//! A batch that cannot be committed is kept, not dropped: the writer goes
//! *failing* (logged once, with the reason; the store's [`health`] says why),
//! keeps taking what is recorded into memory, and retries the whole batch
//! after [`RETRY_FIRST`], doubling up to [`RETRY_MAX`]. The first commit that
//! goes through writes everything kept — runs that ended meanwhile get their
//! real status — and the writer is well again (logged once). While failing,
//! step events and log lines beyond [`KEPT_DETAIL_BYTES`] are dropped
//! (counted, and said in the recovery's log line); a run's beginning and end,
//! and job file versions (the latest of each), are always kept. A run that
//! begins meanwhile gets its id at once (ids are allocated here, not by
//! SQLite), except a one-shot's (trigger `file`): its id is answered only
//! once its row is committed, so a one-shot never runs before the history
//! can vouch that it ran. A run whose answer finds no one (it gave up while
//! its row was being committed) is recorded `cancelled` before it started
//! ([`NOT_STARTED_ERROR`]) in the next batch, never left `running`.
//!
//! Architecture Invariant: one bad write (say, an event for a run id that does
//! not exist: a constraint fails) loses that write only: it is logged (or
//! answered) and the batch goes on. Any other failure (the disk, the file)
//! fails the batch, which is kept and retried.
//!
//! [`health`]: crate::store::RunStore::health

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use super::ts;
use crate::exec::{RecordedStatus, RunEvent, millis};
use crate::job::Backoff;
use crate::store::json::depth_bounded;
use crate::store::recorder::Msg;
use crate::store::{
    BATCH_EVENTS, BATCH_WINDOW, JobRecord, KEPT_DETAIL_BYTES, OUTPUT_BOUND, RunId, RunStart, RunTrigger, StoreError,
};

/// The first retry of a batch that failed, after this.
pub const RETRY_FIRST: Duration = Duration::from_millis(100);

/// Retries of a failing batch are at most this far apart.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// How often an idle writer checks that its file is still the one in the
/// folder (a deleted database is noticed within this).
pub const FILE_CHECK: Duration = Duration::from_secs(2);

/// Counters of the writer, for tests and (later) metrics.
#[derive(Debug, Default)]
pub(super) struct Stats {
    /// Batches committed.
    pub(super) batches: AtomicU64,
    /// Events written.
    pub(super) events: AtomicU64,
    /// Statements that wrote [`ROWS_PER_STATEMENT`] rows at once.
    pub(super) bulk: AtomicU64,
}

/// Consecutive step starts (or step ends, or log lines) of a batch are
/// written this many to a statement (multi-row `INSERT`s): a fan-out's
/// starts, then its ends, and a step's captured output come in long bursts,
/// and a statement's fixed cost (its look-up in the cache, its reset, its
/// set-up) is then shared by the rows. Fewer are written one by one (one
/// statement size to prepare per kind).
pub const ROWS_PER_STATEMENT: usize = 64;

/// One write waiting for its batch, in the order asked.
enum Pending {
    Event {
        run: RunId,
        seq: Option<u64>,
        event: RunEvent,
        at: DateTime<Utc>,
    },
    Begin {
        id: RunId,
        start: RunStart,
        /// Taken when answered (a run that is not a one-shot is answered at
        /// once when its batch fails; the row stays pending).
        answer: Option<oneshot::Sender<Result<RunId, StoreError>>>,
    },
    Job(JobRecord),
}

/// The writer is failing: why, and when it tries again.
struct Failing {
    why: String,
    backoff: Backoff,
    retry_at: Instant,
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
    /// When the batch being collected is due.
    due: Option<Instant>,
    /// The database file, and its (device, inode) when opened.
    path: PathBuf,
    file: Option<(u64, u64)>,
    /// What the store tells of its health (`None`: well).
    health: watch::Sender<Option<String>>,
    failing: Option<Failing>,
    /// Bytes of step events and log lines pending (an estimate).
    detail_bytes: usize,
    /// Step events and log lines dropped since the writer went failing.
    dropped: u64,
    /// The failpoint of [`Msg::PauseAfterCommit`].
    #[cfg(test)]
    pause_after_commit: Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        rx: Receiver<Msg>,
        stats: Arc<Stats>,
        path: PathBuf,
        health: watch::Sender<Option<String>>,
    ) -> Writer {
        let file = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
        Writer {
            conn,
            rx,
            stats,
            pending: Vec::with_capacity(BATCH_EVENTS),
            urgent: false,
            due: None,
            path,
            file,
            health,
            failing: None,
            detail_bytes: 0,
            dropped: 0,
            #[cfg(test)]
            pause_after_commit: None,
        }
    }

    /// Runs until [`Msg::Close`] or until every sender is gone.
    pub(super) fn run(mut self) {
        // Room for every statement the writer caches (the bursts' included),
        // and the bursts' statements compiled now rather than in a run's
        // first burst (each has hundreds of parameters).
        self.conn.set_prepared_statement_cache_capacity(32);
        for sql in [&*STARTS_SQL, &*ENDS_SQL, &*LOGS_SQL] {
            if let Err(e) = self.conn.prepare_cached(sql) {
                tracing::debug!("cannot prepare a statement of the run store's writer: {e}");
            }
        }
        loop {
            // Due work first, so a steady stream of messages cannot put off
            // a batch's window or a retry.
            let now = Instant::now();
            let due = match &self.failing {
                Some(f) => f.retry_at <= now,
                None => self.due.is_some_and(|d| d <= now),
            };
            if due {
                let _ = self.write();
            }
            let msg = match self.wait() {
                Some(wait) => self.rx.recv_timeout(wait),
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Close(answer)) => {
                    let written = self.last_write();
                    // Leave a small database behind: fold the WAL into it
                    // and truncate it (readers may still hold it; then this
                    // is a harmless partial checkpoint).
                    if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
                        tracing::debug!("cannot checkpoint the run store's WAL at close: {e}");
                    }
                    let _ = answer.send(written);
                    return;
                }
                Ok(msg) => self.take(msg),
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.write();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.last_write();
                    return;
                }
            }
            if self.failing.is_none() && self.pending.len() >= BATCH_EVENTS {
                let _ = self.write();
            }
        }
    }

    /// How long to wait for the next message before there is work.
    fn wait(&self) -> Option<Duration> {
        let now = Instant::now();
        Some(match (&self.failing, self.due) {
            (Some(f), _) => f.retry_at.saturating_duration_since(now),
            (None, _) if self.urgent => Duration::ZERO,
            (None, Some(due)) => due.saturating_duration_since(now),
            (None, None) => FILE_CHECK,
        })
    }

    /// Takes one message (not `Close`).
    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Event { run, seq, event, at } => {
                let finished = matches!(event, RunEvent::RunFinished { .. });
                if self.failing.is_some()
                    && let Some(size) = detail_size(&event)
                {
                    if self.detail_bytes + size > KEPT_DETAIL_BYTES {
                        self.dropped += 1;
                        return;
                    }
                    self.detail_bytes += size;
                }
                self.urgent |= finished;
                self.keep(Pending::Event { run, seq, event, at });
            }
            Msg::Begin { id, start, answer } => {
                self.urgent = true;
                let answer = match &self.failing {
                    // Recorded when the history can be written again; the
                    // run goes on meanwhile (a one-shot waits: see the module doc).
                    Some(_) if start.trigger != RunTrigger::File => {
                        let _ = answer.send(Ok(id));
                        None
                    }
                    _ => Some(answer),
                };
                self.keep(Pending::Begin { id, start, answer });
            }
            Msg::Job(job) => {
                if self.failing.is_some() {
                    // Only the latest version of a job file matters.
                    self.pending.retain(|p| !matches!(p, Pending::Job(j) if j.job == job.job));
                }
                self.keep(Pending::Job(job));
            }
            Msg::Flush(answer) => {
                let written = match &self.failing {
                    Some(f) => Err(StoreError::Unwritable(f.why.clone())),
                    None => self.write(),
                };
                let _ = answer.send(written);
            }
            Msg::Call(call) => {
                if self.failing.is_none() {
                    let _ = self.write();
                }
                call(&mut self.conn);
            }
            Msg::Close(answer) => {
                let _ = answer.send(Err(StoreError::Invalid("close is handled by the writer's loop".into())));
            }
            #[cfg(test)]
            Msg::PauseAfterCommit(committed, resume) => self.pause_after_commit = Some((committed, resume)),
        }
    }

    fn keep(&mut self, pending: Pending) {
        if self.pending.is_empty() && self.failing.is_none() {
            self.due = Some(Instant::now() + BATCH_WINDOW);
        }
        self.pending.push(pending);
    }

    /// The last write before stopping; what cannot be written is lost, and
    /// said so.
    fn last_write(&mut self) -> Result<(), StoreError> {
        let written = self.write();
        if let Err(e) = &written {
            let runs = self.pending.iter().filter(|p| matches!(p, Pending::Begin { .. })).count();
            tracing::error!(
                error = %e,
                writes = self.pending.len(),
                runs_begun = runs,
                "stopping with writes the run history could not take: they are lost (runs that ended meanwhile \
                 read `interrupted` at the next start)"
            );
            for p in self.pending.drain(..) {
                if let Pending::Begin { answer: Some(answer), .. } = p {
                    let _ = answer.send(Err(StoreError::Unwritable(e.to_string())));
                }
            }
        }
        written
    }

    /// Writes what is pending in one transaction (after checking the file is
    /// still there), answers the beginnings of runs in it, and moves between
    /// well and failing, saying so once per change.
    fn write(&mut self) -> Result<(), StoreError> {
        self.urgent = false;
        self.due = None;
        let kept = self.pending.len();
        let written = self.check_file().and_then(|()| self.commit());
        match written {
            Ok(()) => {
                self.detail_bytes = 0;
                if self.failing.take().is_some() {
                    tracing::warn!(
                        written = kept,
                        dropped = self.dropped,
                        "the run history can be written again: what was kept in memory is written (`dropped`: step \
                         events and log lines past the memory bound)"
                    );
                    self.dropped = 0;
                    self.health.send_replace(None);
                }
                Ok(())
            }
            Err(why) => {
                let now = Instant::now();
                match &mut self.failing {
                    Some(f) => {
                        f.retry_at = now + f.backoff.next_wait();
                        if f.why != why {
                            tracing::error!(error = %why, "the run history still cannot be written, now for another reason");
                            f.why.clone_from(&why);
                            self.health.send_replace(Some(why.clone()));
                        }
                    }
                    None => {
                        tracing::error!(
                            error = %why,
                            "the run history cannot be written: runs' beginnings and ends are kept in memory and \
                             written when it can be (retrying); one-shots wait until then"
                        );
                        self.health.send_replace(Some(why.clone()));
                        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
                        let retry_at = now + backoff.next_wait();
                        self.failing = Some(Failing { why: why.clone(), backoff, retry_at });
                        // Runs that are not one-shots go on with their ids.
                        for p in &mut self.pending {
                            if let Pending::Begin { id, start, answer } = p
                                && start.trigger != RunTrigger::File
                                && let Some(answer) = answer.take()
                            {
                                let _ = answer.send(Ok(*id));
                            }
                        }
                    }
                }
                Err(StoreError::Unwritable(why))
            }
        }
    }

    /// Whether the file opened is still the one at its path.
    fn check_file(&self) -> Result<(), String> {
        let Some(opened) = self.file else { return Ok(()) };
        let p = self.path.display();
        let gone = |how: &str| {
            format!(
                "the run history {p} was {how} while gatherd runs: nothing more can be recorded in it; restart \
                 gatherd to create a new one (the history before is lost unless the file is put back or restored \
                 from a backup)"
            )
        };
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == opened => Ok(()),
            Ok(_) => Err(gone("replaced by another file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(gone("deleted")),
            Err(e) => Err(format!("cannot check the run history {p}: {e}")),
        }
    }

    /// One transaction with every pending write; on success the pending
    /// writes are done and answered, on failure they are all still pending.
    fn commit(&mut self) -> Result<(), String> {
        // A run that gave up waiting for its row (a one-shot cancelled while
        // the history could not be written) did not run: no row for it.
        self.pending.retain(|p| !matches!(p, Pending::Begin { answer: Some(answer), .. } if answer.is_closed()));
        if self.pending.is_empty() {
            return Ok(());
        }
        let fail = |e: rusqlite::Error| e.to_string();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
        let (mut events, mut bulk) = (0, 0);
        let mut i = 0;
        while i < self.pending.len() {
            // A burst of step starts (or ends, or log lines): one statement
            // for many rows.
            let rows = bulk_rows(&self.pending[i..]);
            if rows > 0 {
                let burst = &mut self.pending[i..i + rows];
                match apply_bulk(&tx, burst) {
                    Ok(()) => {
                        events += rows as u64;
                        bulk += 1;
                        i += rows;
                        continue;
                    }
                    Err(e) if is_storage(&e) => return Err(e.to_string()),
                    // One of them is refused (the statement wrote none):
                    // row by row, so that it alone is lost.
                    Err(_) => {}
                }
                for p in burst {
                    events += write_one(&tx, p).map_err(fail)?;
                }
                i += rows;
                continue;
            }
            events += write_one(&tx, &mut self.pending[i]).map_err(fail)?;
            i += 1;
        }
        tx.commit().map_err(fail)?;
        // Counted before anyone hears back, so a caller that saw its run
        // begin also sees the commit counted.
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.events.fetch_add(events, Ordering::Relaxed);
        self.stats.bulk.fetch_add(bulk, Ordering::Relaxed);
        #[cfg(test)]
        if let Some((committed, resume)) = self.pause_after_commit.take() {
            let _ = committed.send(());
            let _ = resume.recv();
        }
        let mut not_started = Vec::new();
        for p in self.pending.drain(..) {
            if let Pending::Begin { id, answer: Some(answer), .. } = p
                && answer.send(Ok(id)).is_err()
            {
                not_started.push(id);
            }
        }
        // A run that gave up while its row was being committed (a one-shot
        // whose file was removed, or a shutdown, in that instant) never heard
        // its id, so it never started: say so in the next batch, committed
        // at once, rather than leave it `running` — read `interrupted` at the
        // next start, a one-shot's version would never run again.
        for id in not_started {
            tracing::info!(run_id = id, "the run gave up as its row was committed: recorded as not started");
            self.urgent = true;
            self.keep(Pending::Event { run: id, seq: None, event: crate::store::not_started_end(), at: Utc::now() });
        }
        Ok(())
    }
}

/// Writes one pending write into the open transaction; returns the events
/// written (0 or 1). A write SQLite refuses on its own is logged (a run's
/// beginning answered with the error) and dropped; only the storage's
/// troubles ([`is_storage`]) are returned, failing the batch.
fn write_one(tx: &Transaction<'_>, p: &mut Pending) -> rusqlite::Result<u64> {
    match p {
        Pending::Event { run, seq, event, at } => {
            if let Err(e) = apply(tx, *run, *seq, event, *at) {
                if is_storage(&e) {
                    return Err(e);
                }
                tracing::warn!(run_id = *run, "cannot record an event of the run: {e}");
            }
            return Ok(1);
        }
        Pending::Begin { id, start, answer } => {
            if let Err(e) = super::begin_run(tx, *id, start) {
                if is_storage(&e) {
                    return Err(e);
                }
                tracing::error!(job = %start.job, run_id = *id, "cannot record the run's beginning: {e}");
                if let Some(answer) = answer.take() {
                    let _ = answer.send(Err(StoreError::Sqlite { what: "begin a run", source: e }));
                }
            }
        }
        Pending::Job(job) => {
            if let Err(e) = super::upsert_job(tx, job) {
                if is_storage(&e) {
                    return Err(e);
                }
                tracing::error!(job = %job.job, "cannot record the job file in the store: {e}");
            }
        }
    }
    Ok(0)
}

/// The kind of step row write an event is, if it is one that bursts come in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Burst {
    Starts,
    Ends,
    Logs,
}

fn burst_of(p: &Pending) -> Option<Burst> {
    match p {
        Pending::Event { event: RunEvent::NodeStarted { .. }, .. } => Some(Burst::Starts),
        Pending::Event { event: RunEvent::NodeFinished { .. }, .. } => Some(Burst::Ends),
        Pending::Event { event: RunEvent::Log { .. }, .. } => Some(Burst::Logs),
        _ => None,
    }
}

/// [`ROWS_PER_STATEMENT`] if the pending writes begin with that many step
/// starts (or that many step ends) in a row, else 0.
fn bulk_rows(pending: &[Pending]) -> usize {
    let Some(kind) = pending.first().and_then(burst_of) else { return 0 };
    let whole =
        pending.len() >= ROWS_PER_STATEMENT && pending[..ROWS_PER_STATEMENT].iter().all(|p| burst_of(p) == Some(kind));
    if whole { ROWS_PER_STATEMENT } else { 0 }
}

/// `head` then `row` `n` times (comma-separated) then `tail`.
fn rows_sql(head: &str, row: &str, tail: &str, n: usize) -> String {
    let mut sql = String::from(head);
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
    sql.push_str(tail);
    sql
}

/// The statement of [`ROWS_PER_STATEMENT`] step starts: [`apply`]'s, with
/// its row repeated.
static STARTS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    rows_sql(
        "INSERT INTO steps (run_id, path, name, kind, status, attempts, start_ms, start_seq) VALUES ",
        "(?, ?, ?, ?, ?, 1, ?, ?)",
        " ON CONFLICT (run_id, path) DO UPDATE SET attempts = 1, start_ms = excluded.start_ms, \
         start_seq = excluded.start_seq",
        ROWS_PER_STATEMENT,
    )
});

/// The statement of [`ROWS_PER_STATEMENT`] step ends: [`apply`]'s, with its
/// row repeated.
static ENDS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    rows_sql(
        "INSERT INTO steps (run_id, path, name, kind, status, attempts, start_ms, end_ms, output, truncated, error, \
         end_seq) VALUES ",
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        " ON CONFLICT (run_id, path) DO UPDATE SET status = excluded.status, attempts = excluded.attempts, \
         start_ms = excluded.start_ms, end_ms = excluded.end_ms, output = excluded.output, \
         truncated = excluded.truncated, error = excluded.error, end_seq = excluded.end_seq",
        ROWS_PER_STATEMENT,
    )
});

/// The statement of [`ROWS_PER_STATEMENT`] log lines: [`apply`]'s, with its
/// row repeated.
static LOGS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    rows_sql(
        "INSERT INTO logs (run_id, path, at_ms, level, text, seq) VALUES ",
        "(?, ?, ?, ?, ?, ?)",
        "",
        ROWS_PER_STATEMENT,
    )
});

/// Writes a burst of step starts, step ends or log lines (from [`bulk_rows`]) in one
/// statement. SQLite inserts a statement's rows in order, each upsert seeing
/// the rows before it, so the rows (and their ids) are those the writes one
/// by one leave; a refused row fails the whole statement, which then wrote
/// nothing.
fn apply_bulk(tx: &Transaction<'_>, burst: &[Pending]) -> rusqlite::Result<()> {
    let kind = burst.first().and_then(burst_of);
    let mut stmt = tx.prepare_cached(match kind {
        Some(Burst::Starts) => &STARTS_SQL,
        Some(Burst::Ends) => &ENDS_SQL,
        Some(Burst::Logs) => &LOGS_SQL,
        None => return Err(rusqlite::Error::InvalidQuery),
    })?;
    let mut at = 1;
    let mut bind = |stmt: &mut rusqlite::CachedStatement<'_>, value: &dyn rusqlite::ToSql| {
        let bound = stmt.raw_bind_parameter(at, value);
        at += 1;
        bound
    };
    for p in burst {
        let Pending::Event { run, seq, event, .. } = p else { return Err(rusqlite::Error::InvalidQuery) };
        let seq = seq.and_then(|s| i64::try_from(s).ok());
        match event {
            RunEvent::NodeStarted { path, name, kind: node, at } if kind == Some(Burst::Starts) => {
                bind(&mut stmt, run)?;
                bind(&mut stmt, &&**path)?;
                bind(&mut stmt, &&**name)?;
                bind(&mut stmt, &node.as_str())?;
                bind(&mut stmt, &RecordedStatus::Running.as_str())?;
                bind(&mut stmt, &ms(*at))?;
                bind(&mut stmt, &seq)?;
            }
            RunEvent::NodeFinished {
                path,
                name,
                kind: node,
                status,
                attempts,
                started,
                at,
                output,
                error,
                truncated,
            } if kind == Some(Burst::Ends) => {
                let (output, cut) = bounded_json(output.as_ref());
                bind(&mut stmt, run)?;
                bind(&mut stmt, &&**path)?;
                bind(&mut stmt, &&**name)?;
                bind(&mut stmt, &node.as_str())?;
                bind(&mut stmt, &status.as_str())?;
                bind(&mut stmt, attempts)?;
                bind(&mut stmt, &started.map(ms))?;
                bind(&mut stmt, &ms(*at))?;
                bind(&mut stmt, &output)?;
                bind(&mut stmt, &(*truncated || cut))?;
                bind(&mut stmt, error)?;
                bind(&mut stmt, &seq)?;
            }
            RunEvent::Log { path, stream, text, at } if kind == Some(Burst::Logs) => {
                bind(&mut stmt, run)?;
                bind(&mut stmt, &&**path)?;
                bind(&mut stmt, &ms(*at))?;
                bind(&mut stmt, &stream.as_str())?;
                bind(&mut stmt, text)?;
                bind(&mut stmt, &seq)?;
            }
            // Not of the burst (cannot be: `bulk_rows` checked every one).
            _ => return Err(rusqlite::Error::InvalidQuery),
        }
    }
    stmt.raw_execute()?;
    Ok(())
}

/// Whether a failed statement says the file cannot take writes (the disk,
/// the file, a lock, memory), so the batch must be kept and retried, rather
/// than that this one write is wrong (a constraint, a value too big or of the
/// wrong type, a parameter out of range, anything else), so it alone is
/// dropped: one bad row must not stall the whole history, retried forever.
fn is_storage(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if matches!(
            f.code,
            C::DiskFull
                | C::ReadOnly
                | C::SystemIoFailure
                | C::DatabaseBusy
                | C::DatabaseLocked
                | C::CannotOpen
                | C::NotADatabase
                | C::DatabaseCorrupt
                | C::OutOfMemory
                | C::PermissionDenied
                | C::FileLockingProtocolFailed
                | C::NoLargeFileSupport
        )
    )
}

/// The bytes a step event or log line holds in memory (an estimate), or
/// `None` for a run's beginning or end, which are always kept.
fn detail_size(event: &RunEvent) -> Option<usize> {
    const FIXED: usize = 128;
    Some(match event {
        RunEvent::RunStarted { .. } | RunEvent::RunFinished { .. } => return None,
        RunEvent::NodeStarted { path, name, .. } => FIXED + path.len() + name.len(),
        RunEvent::AttemptFailed { path, error, .. } => FIXED + path.len() + error.len(),
        RunEvent::NodeFinished { path, name, output, error, .. } => {
            FIXED
                + path.len()
                + name.len()
                + error.as_ref().map_or(0, String::len)
                + output.as_ref().map_or(0, json_size)
        }
        RunEvent::Log { path, text, .. } => FIXED + path.len() + text.len(),
    })
}

/// The bytes a JSON value holds in memory (an estimate, without allocating).
fn json_size(value: &Value) -> usize {
    match value {
        Value::String(s) => 24 + s.len(),
        Value::Array(a) => 24 + a.iter().map(json_size).sum::<usize>(),
        Value::Object(o) => 48 + o.iter().map(|(k, v)| 24 + k.len() + json_size(v)).sum::<usize>(),
        _ => 16,
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
            // A queued run starts: `running` from now.
            tx.prepare_cached(
                "UPDATE runs SET started_at = ?2, start_seq = ?3, \
                 status = CASE WHEN status = 'queued' THEN 'running' ELSE status END WHERE id = ?1",
            )?
            .execute(params![run, ts(*started_at), seq])?;
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
        RunEvent::Log { path, stream, text, at } => {
            tx.prepare_cached(
                "INSERT INTO logs (run_id, path, at_ms, level, text, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![run, &**path, ms(*at), stream.as_str(), text, seq])?;
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

#[cfg(test)]
mod is_storage_tests {
    use super::is_storage;

    fn failure(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn the_file_s_troubles_keep_the_batch_and_one_bad_write_is_dropped_alone() {
        use rusqlite::ffi;
        for code in [
            ffi::SQLITE_FULL,
            ffi::SQLITE_READONLY,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_NOTADB,
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_NOMEM,
            ffi::SQLITE_PERM,
            ffi::SQLITE_PROTOCOL,
            ffi::SQLITE_NOLFS,
        ] {
            assert!(is_storage(&failure(code)), "{:?} is the storage's trouble", ffi::Error::new(code).code);
        }
        for code in [
            ffi::SQLITE_CONSTRAINT,
            ffi::SQLITE_TOOBIG,
            ffi::SQLITE_MISMATCH,
            ffi::SQLITE_RANGE,
            ffi::SQLITE_MISUSE,
            ffi::SQLITE_AUTH,
            ffi::SQLITE_ERROR,
        ] {
            let name = ffi::Error::new(code).code;
            assert!(!is_storage(&failure(code)), "{name:?} is this one write's trouble: drop it, not the batch");
        }
        assert!(!is_storage(&rusqlite::Error::InvalidParameterCount(1, 2)));
    }
}
