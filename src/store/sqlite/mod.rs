//! The embedded backend: one SQLite file (`STATE_DIR/gatherd.db`) in WAL mode.
//!
//! Two connections: the writer thread's (every write, in order: batches of
//! events and one-off writes such as `begin_run`, see `writer.rs`) and a
//! read-only one for queries, used from `spawn_blocking` so a long read never
//! holds up recording (WAL lets readers and the writer proceed together).
//!
//! Architecture Invariant: only the writer thread writes to the database.

mod backup;
mod history;
mod notifications;
mod read;
mod schema;
mod writer;
pub use self::backup::{BackupError, BackupReport, backup};
pub use self::history::History;
pub(crate) use self::notifications::KEPT_NOTIFICATIONS;
#[cfg(test)]
pub(crate) use self::writer::ROWS_PER_STATEMENT;
pub(crate) use self::writer::bounded_json;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{oneshot, watch};

use self::writer::{Stats, Writer};
use super::recorder::{Msg, Recorder};
pub(crate) use super::rows::ts;
use super::{
    ClaimKey, DeliveryStatus, JobRecord, LastSuccesses, LogFilter, MISSED_ERROR, Missed, Notification,
    NotificationFilter, NotificationId, NotifyState, NumberedLine, PAUSED_ERROR, QUEUED_AT_STOP_ERROR, RecordedStatus,
    RunDetail, RunFilter, RunId, RunRow, RunStart, RunStore, RunTimeline, RunTrigger, StoreError,
};

/// Opens (creating it and its tables if needed) the run history at `path` and
/// starts its writer thread. The folder must exist.
pub async fn open_sqlite(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
    let path = path.as_ref().to_path_buf();
    let opened = tokio::task::spawn_blocking(move || SqliteStore::open_blocking(path)).await;
    opened.map_err(|e| StoreError::Worker(e.to_string()))?
}

/// The SQLite run store. Hold it as `Arc<dyn RunStore>`; call
/// [`close`](RunStore::close) before exiting so the last events are written.
pub struct SqliteStore {
    path: PathBuf,
    recorder: Recorder,
    reader: Arc<Mutex<Connection>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    stats: Arc<Stats>,
    /// The next run id: allocated here, not by SQLite, so a run that begins
    /// while the file cannot be written still has its id (see `writer.rs`).
    next_id: Arc<AtomicI64>,
    health: watch::Receiver<Option<String>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    fn open_blocking(path: PathBuf) -> Result<SqliteStore, StoreError> {
        // A file damaged where SQLite reads it first (its schema, its free
        // pages) fails already at opening: say the way out as `check` does.
        Self::open_unchecked(path).map_err(|e| match e {
            StoreError::Open { path, source }
                if matches!(
                    source.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
                ) =>
            {
                StoreError::Unusable { path, reason: format!("it is damaged ({source})") }
            }
            e => e,
        })
    }

    fn open_unchecked(path: PathBuf) -> Result<SqliteStore, StoreError> {
        let mut conn = schema::open_writer(&path)?;
        schema::migrate(&mut conn)?;
        schema::check(&mut conn, &path)?;
        let reader = schema::open_reader(&path)?;
        let next_id: i64 = conn
            .query_row(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'runs'), 0), \
                 coalesce((SELECT max(id) FROM runs), 0)) + 1",
                [],
                |r| r.get(0),
            )
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        let stats = Arc::new(Stats::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let (health_tx, health) = watch::channel(None);
        let writer = Writer::new(conn, rx, stats.clone(), path.clone(), health_tx);
        let handle = std::thread::Builder::new()
            .name("gatherd-store".into())
            .spawn(move || writer.run())
            .map_err(StoreError::Spawn)?;
        Ok(SqliteStore {
            path,
            recorder: Recorder::new(tx),
            reader: Arc::new(Mutex::new(reader)),
            writer: Mutex::new(Some(handle)),
            stats,
            next_id: Arc::new(AtomicI64::new(next_id)),
            health,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many batches the writer has committed (a diagnostic: the number of
    /// transactions recording events, job versions and runs' beginnings has
    /// cost, not counting one-off writes such as `prune`).
    pub fn batches_written(&self) -> u64 {
        self.stats.batches.load(Ordering::Relaxed)
    }

    /// How many statements wrote a burst of rows (step starts, step ends or
    /// log lines) at once
    /// ([`ROWS_PER_STATEMENT`](writer::ROWS_PER_STATEMENT) each; a diagnostic).
    pub fn bulk_statements(&self) -> u64 {
        self.stats.bulk.load(Ordering::Relaxed)
    }

    /// How many events the writer has written.
    pub fn events_written(&self) -> u64 {
        self.stats.events.load(Ordering::Relaxed)
    }

    /// A real "disk full" for the tests: caps the file at its current size
    /// (SQLite's `max_page_count`, on the writer's connection, so a write
    /// that needs one more page fails with `SQLITE_FULL`); `false` lifts it.
    #[cfg(test)]
    pub(crate) async fn cap_size(&self, capped: bool) {
        let capped = self
            .write(move |conn| {
                let pages: i64 =
                    if capped { conn.query_row("PRAGMA page_count", [], |r| r.get(0)) } else { Ok(4_294_967_294) }
                        .map_err(StoreError::sqlite("read the page count"))?;
                conn.pragma_update(None, "max_page_count", pages).map_err(StoreError::sqlite("cap the size"))
            })
            .await;
        capped.expect("cap the run history's size");
    }

    /// A failpoint: the writer's next commit, once committed and before it
    /// answers anyone, sends on the first channel returned and waits for the
    /// second to be sent to (or dropped).
    #[cfg(test)]
    pub(crate) fn pause_after_next_commit(&self) -> (std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<()>) {
        let (committed_tx, committed) = std::sync::mpsc::channel();
        let (resume, resume_rx) = std::sync::mpsc::channel();
        self.recorder.send(Msg::PauseAfterCommit(committed_tx, resume_rx)).expect("the writer is running");
        (committed, resume)
    }

    /// Runs `f` on the writer thread after what is queued before it.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.recorder.send(Msg::Call(Box::new(move |conn| {
            let _ = tx.send(f(conn));
        })))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on the reader connection, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || f(&reader.lock().unwrap_or_else(PoisonError::into_inner)))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

/// One daemon per state folder (its lock file): every run left running or
/// queued is the last daemon's, whatever node id it recorded (a new one at
/// each start).
fn recover(conn: &mut Connection, reason: &str) -> Result<Vec<RunRow>, StoreError> {
    let fail = StoreError::sqlite;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail("recover"))?;
    // The same condition as the partial index `runs_running`, so it is used.
    let mut runs = tx
        .prepare(&format!(
            "SELECT {} FROM runs WHERE (status = 'running' OR status = 'queued') ORDER BY id",
            read::RUN_COLUMNS
        ))
        .and_then(|mut s| s.query_map([], read::run_row)?.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(fail("find the runs left running"))?;
    let now = Utc::now().trunc_subsecs(6); // as stored, so the rows returned equal the rows read later
    for run in &mut runs {
        if run.status == RecordedStatus::Queued {
            // It never started: cancelled, with no duration.
            let status = RecordedStatus::Finished(crate::exec::Status::Cancelled);
            tx.execute(
                "UPDATE runs SET status = ?2, error = ?3, finished_at = ?4, duration_ms = 0 WHERE id = ?1",
                params![run.id, status.as_str(), QUEUED_AT_STOP_ERROR, ts(now)],
            )
            .map_err(fail("mark a queued run cancelled"))?;
            run.status = status;
            run.error = Some(QUEUED_AT_STOP_ERROR.to_string());
            run.finished_at = Some(now);
            run.duration_ms = Some(0);
            continue;
        }
        tx.execute(
            "UPDATE runs SET status = 'interrupted', error = ?2, finished_at = ?3 WHERE id = ?1",
            params![run.id, reason, ts(now)],
        )
        .map_err(fail("mark a run interrupted"))?;
        tx.execute("UPDATE steps SET status = 'interrupted' WHERE run_id = ?1 AND status = 'running'", [run.id])
            .map_err(fail("mark a run's steps interrupted"))?;
        run.status = RecordedStatus::Interrupted;
        run.error = Some(reason.to_string());
        run.finished_at = Some(now);
    }
    tx.commit().map_err(fail("recover"))?;
    Ok(runs)
}

/// Inserts run `id`'s row (in the writer's open batch).
fn begin_run(conn: &Connection, id: RunId, start: &RunStart) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO runs (id, job, trigger, fire_time, content_hash, node, status, started_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?8, ?7)",
    )?
    .execute(params![
        id,
        start.job,
        start.trigger.as_str(),
        ts(start.fire_time),
        &start.content_hash[..],
        start.node,
        ts(Utc::now()),
        if start.queued { RecordedStatus::Queued } else { RecordedStatus::Running }.as_str(),
    ])?;
    Ok(())
}

fn record_missed(
    conn: &mut Connection,
    missed: &Missed,
    next_id: &AtomicI64,
    error: &'static str,
) -> Result<(), StoreError> {
    if !matches!(missed.trigger, RunTrigger::Schedule | RunTrigger::Interval) {
        return Err(StoreError::Invalid(format!(
            "a missed fire of {} has trigger {}, not schedule or interval",
            missed.job,
            missed.trigger.as_str()
        )));
    }
    if missed.fire_times.is_empty() {
        return Ok(());
    }
    let fail = StoreError::sqlite;
    let now = ts(Utc::now());
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail("record missed fires"))?;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO runs (id, job, trigger, fire_time, content_hash, node, status, started_at, finished_at, \
                 duration_ms, error) VALUES (?8, ?1, ?2, ?3, ?4, ?5, 'missed', ?6, ?6, 0, ?7)",
            )
            .map_err(fail("record missed fires"))?;
        for fire_time in &missed.fire_times {
            insert
                .execute(params![
                    missed.job,
                    missed.trigger.as_str(),
                    ts(*fire_time),
                    &missed.content_hash[..],
                    missed.node,
                    now,
                    error,
                    next_id.fetch_add(1, Ordering::Relaxed)
                ])
                .map_err(fail("record a missed fire"))?;
        }
    }
    tx.commit().map_err(fail("record missed fires"))
}

fn prune(
    conn: &mut Connection,
    job: &str,
    keep_runs: Option<u64>,
    keep_for: Option<Duration>,
) -> Result<u64, StoreError> {
    let fail = StoreError::sqlite;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail("prune runs"))?;
    let mut deleted = 0;
    if let Some(keep) = keep_runs {
        deleted += tx
            .prepare_cached(
                "DELETE FROM runs WHERE job = ?1 AND status <> 'running' AND status <> 'queued' AND id NOT IN \
                 (SELECT id FROM runs WHERE job = ?1 AND status <> 'running' AND status <> 'queued' \
                 ORDER BY id DESC LIMIT ?2)",
            )
            .and_then(|mut s| s.execute(params![job, i64::try_from(keep).unwrap_or(i64::MAX)]))
            .map_err(fail("prune runs by count"))?;
    }
    // A `keep_for` too long to subtract from now keeps everything.
    let cutoff =
        keep_for.and_then(|d| chrono::Duration::from_std(d).ok()).and_then(|d| Utc::now().checked_sub_signed(d));
    if let Some(cutoff) = cutoff {
        deleted += tx
            .prepare_cached(
                "DELETE FROM runs WHERE job = ?1 AND status <> 'running' AND status <> 'queued' AND started_at < ?2",
            )
            .and_then(|mut s| s.execute(params![job, ts(cutoff)]))
            .map_err(fail("prune runs by age"))?;
    }
    tx.commit().map_err(fail("prune runs"))?;
    Ok(deleted as u64)
}

/// Records a job file's current version (in the writer's open batch).
fn upsert_job(conn: &Connection, job: &JobRecord) -> rusqlite::Result<()> {
    let now = ts(Utc::now());
    conn.prepare_cached(
        "INSERT INTO jobs (job, kind, content_hash, valid, diagnostic, first_seen, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) \
         ON CONFLICT (job) DO UPDATE SET kind = excluded.kind, content_hash = excluded.content_hash, \
         valid = excluded.valid, diagnostic = excluded.diagnostic, updated_at = excluded.updated_at",
    )?
    .execute(params![job.job, job.kind.as_str(), &job.content_hash[..], job.valid, job.diagnostic, now])?;
    Ok(())
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> String {
    ts(now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX))
}

fn claim(conn: &mut Connection, key: &ClaimKey, node: &str, lease: Duration) -> Result<bool, StoreError> {
    let now = Utc::now();
    let changed = conn
        .prepare_cached(
            "INSERT INTO claims (job, slot, node, claimed_at, lease_until) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (job, slot) DO UPDATE SET node = excluded.node, claimed_at = excluded.claimed_at, \
             lease_until = excluded.lease_until \
             WHERE claims.lease_until < excluded.claimed_at OR claims.node = excluded.node",
        )
        .and_then(|mut s| s.execute(params![key.job, key.slot, node, ts(now), lease_end(now, lease)]))
        .map_err(StoreError::sqlite("claim"))?;
    Ok(changed == 1)
}

fn renew_claims(conn: &mut Connection, node: &str, lease: Duration) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE claims SET lease_until = ?2 WHERE node = ?1")
        .and_then(|mut s| s.execute(params![node, lease_end(Utc::now(), lease)]))
        .map_err(StoreError::sqlite("renew claims"))?;
    Ok(())
}

impl RunStore for SqliteStore {
    fn recover<'a>(&'a self, node: &'a str, reason: &'a str) -> BoxFuture<'a, Result<Vec<RunRow>, StoreError>> {
        let _ = node; // every run of the folder: see `recover`
        let reason = reason.to_string();
        self.write(move |conn| recover(conn, &reason)).boxed()
    }

    fn begin_run(&self, start: RunStart) -> BoxFuture<'_, Result<RunId, StoreError>> {
        async move {
            let (answer, rx) = oneshot::channel();
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            self.recorder.send(Msg::Begin { id, start, answer })?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
        .boxed()
    }

    fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }

    fn health(&self) -> watch::Receiver<Option<String>> {
        self.health.clone()
    }

    fn record_job(&self, job: JobRecord) {
        if self.recorder.send(Msg::Job(job)).is_err() {
            tracing::debug!("run history closed; job file version not recorded");
        }
    }

    fn one_shot_status<'a>(
        &'a self,
        job: &'a str,
        content_hash: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Option<RecordedStatus>, StoreError>> {
        let (job, hash) = (job.to_string(), *content_hash);
        self.read(move |conn| read::one_shot_status(conn, &job, &hash)).boxed()
    }

    fn record_missed(&self, missed: Missed) -> BoxFuture<'_, Result<u64, StoreError>> {
        let next_id = self.next_id.clone();
        let fires = u64::try_from(missed.fire_times.len()).unwrap_or(u64::MAX);
        self.write(move |conn| record_missed(conn, &missed, &next_id, MISSED_ERROR).map(|()| fires)).boxed()
    }

    fn record_paused(&self, missed: Missed) -> BoxFuture<'_, Result<(), StoreError>> {
        let next_id = self.next_id.clone();
        self.write(move |conn| record_missed(conn, &missed, &next_id, PAUSED_ERROR)).boxed()
    }

    fn set_paused<'a>(&'a self, job: &'a str, paused: bool) -> BoxFuture<'a, Result<(), StoreError>> {
        let job = job.to_string();
        self.write(move |conn| {
            let fail = StoreError::sqlite("save a job's pause");
            if paused {
                conn.execute(
                    "INSERT INTO paused_jobs (job, paused_at) VALUES (?1, ?2) ON CONFLICT (job) DO NOTHING",
                    params![job, ts(Utc::now())],
                )
                .map_err(fail)?;
            } else {
                conn.execute("DELETE FROM paused_jobs WHERE job = ?1", [job]).map_err(fail)?;
            }
            Ok(())
        })
        .boxed()
    }

    fn paused(&self) -> BoxFuture<'_, Result<Vec<crate::store::PausedJob>, StoreError>> {
        self.read(read::paused).boxed()
    }

    fn last_fire<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, StoreError>> {
        let job = job.to_string();
        self.read(move |conn| read::last_fire(conn, &job)).boxed()
    }

    fn prune<'a>(
        &'a self,
        job: &'a str,
        keep_runs: Option<u64>,
        keep_for: Option<Duration>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let job = job.to_string();
        self.write(move |conn| prune(conn, &job, keep_runs, keep_for)).boxed()
    }

    fn runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRow>, StoreError>> {
        self.read(move |conn| read::runs(conn, &filter)).boxed()
    }

    fn run(&self, id: RunId) -> BoxFuture<'_, Result<Option<RunDetail>, StoreError>> {
        self.read(move |conn| read::run(conn, id)).boxed()
    }

    fn timeline(&self, id: RunId) -> BoxFuture<'_, Result<Option<RunTimeline>, StoreError>> {
        self.read(move |conn| read::timeline(conn, id)).boxed()
    }

    fn logs(&self, id: RunId, filter: LogFilter) -> BoxFuture<'_, Result<Option<Vec<NumberedLine>>, StoreError>> {
        self.read(move |conn| read::logs(conn, id, &filter)).boxed()
    }

    fn claim<'a>(
        &'a self,
        key: &'a ClaimKey,
        node: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let (key, node) = (key.clone(), node.to_string());
        self.write(move |conn| claim(conn, &key, &node, lease)).boxed()
    }

    fn renew_claims<'a>(&'a self, node: &'a str, lease: Duration) -> BoxFuture<'a, Result<(), StoreError>> {
        let node = node.to_string();
        self.write(move |conn| renew_claims(conn, &node, lease)).boxed()
    }

    fn notify_states(&self) -> BoxFuture<'_, Result<Vec<(String, NotifyState)>, StoreError>> {
        self.read(notifications::states).boxed()
    }

    fn save_notify_state<'a>(&'a self, job: &'a str, state: NotifyState) -> BoxFuture<'a, Result<(), StoreError>> {
        let job = job.to_string();
        self.write(move |conn| notifications::save_state(conn, &job, &state)).boxed()
    }

    fn begin_notification<'a>(
        &'a self,
        job: &'a str,
        run_id: Option<RunId>,
        target: &'a str,
        event: &'a str,
    ) -> BoxFuture<'a, Result<NotificationId, StoreError>> {
        let (job, target, event) = (job.to_string(), target.to_string(), event.to_string());
        self.write(move |conn| notifications::begin(conn, &job, run_id, &target, &event)).boxed()
    }

    fn update_notification<'a>(
        &'a self,
        id: NotificationId,
        status: DeliveryStatus,
        attempts: u32,
        error: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let error = error.map(str::to_string);
        self.write(move |conn| notifications::update(conn, id, status, attempts, error.as_deref())).boxed()
    }

    fn notifications(&self, filter: NotificationFilter) -> BoxFuture<'_, Result<Vec<Notification>, StoreError>> {
        self.read(move |conn| notifications::list(conn, &filter)).boxed()
    }

    fn last_successes(&self) -> BoxFuture<'_, Result<LastSuccesses, StoreError>> {
        self.read(notifications::last_successes).boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let (tx, rx) = oneshot::channel();
            self.recorder.send(Msg::Close(tx))?;
            let flushed = rx.await.map_err(|_| StoreError::Closed)?;
            let handle = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(handle) = handle {
                // The writer has answered and is returning: the join is short.
                tokio::task::spawn_blocking(move || handle.join())
                    .await
                    .map_err(|e| StoreError::Worker(e.to_string()))?
                    .map_err(|_| StoreError::Worker("the writer thread panicked".into()))?;
            }
            flushed
        }
        .boxed()
    }
}
