//! Run history: what ran, when, what each step returned, and the jobs seen.
//!
//! The store is one more sink of the [`RunEvent`] stream. The daemon opens a
//! backend at start ([`open_sqlite`], an embedded SQLite file at
//! `STATE_DIR/gatherd.db`, by default; [`open_postgres`] for a database a
//! fleet can share), holds it as an
//! `Arc<dyn RunStore>`, calls [`RunStore::recover`] once, then for each run
//! [`RunStore::begin_run`] (the id it returns is the `run_id` of the logs) and
//! forwards the run's events to a [`Recorder`].
//!
//! ## Why a trait object with boxed futures
//! The backend is chosen from the config at start, so the daemon must hold
//! "some store" without being generic over it: `Arc<dyn RunStore>`, whose
//! methods return [`BoxFuture`]s (async fns in traits are not dyn-compatible).
//! A store call happens once per run or per API request, so a box per call is
//! noise. The hot path — one write per event — does not go through the trait at
//! all: [`Recorder::record`] is a channel send.
//!
//! ## Why rusqlite on a writer thread (not sqlx)
//! Measured with `cargo tree` on this project: rusqlite 0.43 (`bundled`) adds
//! 23 crates and no duplicate versions; sqlx 0.8 (`sqlite`, `migrate`,
//! `macros` for `migrate!`) adds about 185 crates and 25 duplicate versions — a
//! real cost in cold builds on a 2-core box. Both compile the same bundled
//! SQLite C source. rusqlite also suits the write pattern better: the writer
//! thread owns its connection and runs a batch as plain calls on cached
//! prepared statements, where sqlx-sqlite would make every statement an async
//! round trip to its own worker thread. What sqlx would have shared with a
//! Postgres backend is small: the SQL of the two differs (types, upserts with
//! `RETURNING`, leases), so each backend has its own migrations folder
//! (`migrations/sqlite/`, `migrations/postgres/`) either way. The
//! PostgreSQL backend (`postgres/`) uses tokio-postgres behind the same
//! trait; nothing outside `store/` notices.
//!
//! ## Writes: one writer, batched transactions
//! Every write of a backend goes through one writer (for SQLite a thread that
//! owns the only write connection): events, job versions and run beginnings
//! are queued on an unbounded channel and written in one transaction when
//! about [`BATCH_EVENTS`] are pending, [`BATCH_WINDOW`] after the first
//! unflushed one, or — when a run begins or finishes — as soon as nothing
//! more is already queued (group commit: alone that is at once, and a burst of
//! runs shares its commits). A slow disk slows recording, never running.
//! A full or unwritable disk does not lose what runs record either: the
//! writer keeps the failed batch and what follows in memory (bounded by
//! [`KEPT_DETAIL_BYTES`] for step events and log lines; a run's beginning and
//! end are always kept), retries with backoff, says so through
//! [`RunStore::health`], and writes it all when it can.
//!
//! Architecture Invariant: nothing in the executor's path waits for the store.
//! [`Recorder::record`] never blocks; only [`Recorder::flush`] and
//! [`RunStore::close`] wait, and only the daemon calls them.
//!
//! Architecture Invariant: a run's row is written before (in the same batch
//! as, or in an earlier one than) any of its events: `begin_run` queues it
//! first and, while the history can be written, commits it before it returns
//! the id. A one-shot's (`file`) `begin_run` always returns after the commit,
//! so a one-shot never runs unless the history can vouch that it did.
//!
//! ## Fleets: claims
//! Several daemons sharing one PostgreSQL database run each scheduled fire
//! and each dropped file version once ([`RunStore::shared`] is true there).
//! The `claims` table holds one row per unit of work, keyed by `(job, slot)`:
//! `slot` is `fire:<nominal time>` for `schedule`/`interval` fires and
//! `sha256:<hex>` of the content for a one-shot ([`ClaimKey`]). A run task
//! calls [`RunStore::claim_once`] before [`RunStore::begin_run`]: an insert
//! if absent, so exactly one node is answered [`Claimed::Won`] and the
//! others skip, whenever they ask. Missed fires are claimed as they are
//! recorded. Named semaphores are held across the fleet
//! ([`RunStore::acquire_semaphore`]). On SQLite (one daemon per state
//! folder, enforced by a lock file) the defaults answer without a round
//! trip. The older [`RunStore::claim`] (a claim with a lease, taken over
//! when it expires) is kept for the takeover of a dead node's work.
//!
//! ## Missed fires and retention
//! A `schedule`/`interval` fire that came while the daemon was down is
//! recorded as a run with status `missed` ([`RunStore::record_missed`]); the
//! daemon finds them from [`RunStore::last_fire`], the latest fire recorded
//! for the job (`runs (job, fire_time)` is indexed for it).
//! [`RunStore::prune`] deletes a job's old finished runs (by count and by
//! age, `runs (job, started_at)` is indexed for it), their steps, attempts and
//! log lines with them (`ON DELETE CASCADE`; the writer's connection has
//! foreign keys on).

mod claim;
mod error;
mod json;
mod nodes;
mod notifications;
mod postgres;
mod recorder;
mod rows;
mod sqlite;
mod timeline;

#[cfg(test)]
mod tests;

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

pub use self::claim::{Claim, Claimed};
pub use self::error::StoreError;
pub use self::nodes::{NodeRow, NodeState, Skew, TakenOver, orphan_error, taken_over_error};
pub use self::notifications::{
    DeliveryStatus, LastSuccesses, Notification, NotificationFilter, NotificationId, NotifyState,
};
pub use self::postgres::{PostgresHistory, PostgresStore, open_postgres};
pub use self::recorder::Recorder;
pub use self::rows::{
    ClaimKey, JobRecord, LogFilter, MISSED_ERROR, Missed, NOT_STARTED_ERROR, NumberedLine, PAUSED_ERROR,
    QUEUED_AT_STOP_ERROR, RecordedStatus, RunDetail, RunDocument, RunFilter, RunId, RunRow, RunStart, RunTrigger,
    not_started_end,
};
pub use self::sqlite::{History, SqliteStore, open_sqlite};
// `gatherd backup` (sqlite/backup.rs).
pub use self::sqlite::{BackupError, BackupReport, backup};
pub use self::timeline::{RunTimeline, StepSeqs, as_stored};

#[cfg(doc)]
use crate::exec::RunEvent;

/// The most events written in one transaction.
pub const BATCH_EVENTS: usize = 1000;

/// How long the first unflushed event may wait for others to share its
/// transaction.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// The most bytes of a step's output (or a run's result) kept, as JSON text.
pub const OUTPUT_BOUND: usize = 64 * 1024;

/// The deepest a stored JSON value nests: deeper parts are replaced by a
/// marker string. History is data: every reader (this crate's, with serde_json's
/// recursion limit of 128, and others) must be able to read back what any run
/// returned, with room to spare for the document that wraps it.
pub const JSON_DEPTH_BOUND: usize = 64;

/// While the history cannot be written, the most bytes (an estimate) of step
/// events and log lines kept in memory to write later; past it they are
/// dropped. A run's beginning and end are always kept.
pub const KEPT_DETAIL_BYTES: usize = 16 * 1024 * 1024;

/// The file name of the embedded database in the state folder.
pub const DB_FILE: &str = "gatherd.db";

/// Which history a store URL names (`--store`, `GATHERD_STORE`, the
/// config's `store`): a `postgres://` or `postgresql://` URL is a
/// PostgreSQL database; anything else is refused with what is expected.
pub fn postgres_url(url: &str) -> Result<&str, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(url)
    } else {
        let scheme = url.split_once("://").map_or(url, |(scheme, _)| scheme);
        Err(StoreError::Invalid(format!(
            "the store `{scheme}` is not known: give a postgres:// URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE), \
             or no store for the SQLite file in the state folder"
        )))
    }
}

/// Opens the history a daemon records into: the PostgreSQL database of
/// `url`, or without one the SQLite file [`DB_FILE`] in `state`.
pub async fn open_store(
    url: Option<&str>,
    state: &std::path::Path,
) -> Result<std::sync::Arc<dyn RunStore>, StoreError> {
    Ok(match url {
        Some(url) => std::sync::Arc::new(open_postgres(postgres_url(url)?).await?),
        None => std::sync::Arc::new(open_sqlite(state.join(DB_FILE)).await?),
    })
}

/// A paused job: its id and when it was paused.
pub type PausedJob = (String, DateTime<Utc>);

/// A run history backend. Dyn-compatible: the daemon holds an
/// `Arc<dyn RunStore>` chosen at start.
pub trait RunStore: Send + Sync {
    /// Marks every run of `node` (on SQLite, one daemon per state folder:
    /// every run, whatever node id it recorded — the id is new at each
    /// start) left `running` (the daemon died: crash, kill -9) as `interrupted` with `reason` and a finish time, and their
    /// running steps too, and every run left `queued` (it never started) as
    /// `cancelled` with [`QUEUED_AT_STOP_ERROR`]; returns those runs, as
    /// marked, so the daemon can log them. Call once at start, before any
    /// `begin_run`.
    fn recover<'a>(&'a self, node: &'a str, reason: &'a str) -> BoxFuture<'a, Result<Vec<RunRow>, StoreError>>;

    /// Records that a run begins (status `running`, or `queued` when
    /// [`RunStart::queued`] says so; its `RunStarted` event then makes it
    /// `running`) and returns its id. The
    /// row is committed before this returns — except while the history
    /// cannot be written ([`health`](RunStore::health) says why): then the id
    /// is returned at once and the row is written when it can be, unless the
    /// run is a one-shot (trigger `file`), whose call waits for the commit
    /// (drop the future to give up). Runs that begin together share
    /// one commit (the writer's batch), so a burst of runs costs one round
    /// trip, not one each.
    fn begin_run(&self, start: RunStart) -> BoxFuture<'_, Result<RunId, StoreError>>;

    /// A handle to give a run's events to. Cheap to clone.
    fn recorder(&self) -> Recorder;

    /// Whether the history can be written: `None` when it can, else why not
    /// (disk full, read-only, deleted). Changes when the writer fails and
    /// when it is well again; the daemon shows it on `/healthz`. A backend
    /// that cannot fail this way keeps the default, always well.
    fn health(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        tokio::sync::watch::channel(None).1
    }

    /// Queues the current version of a job file for the "jobs seen" table,
    /// written with the writer's next batch (before any run begun after this
    /// call). Never waits: nothing needs the row to go on; a failure is logged
    /// by the writer. After [`close`](RunStore::close) it is dropped (logged at
    /// debug level).
    fn record_job(&self, job: JobRecord);

    /// How the last file-triggered run of this version of `job` ended, if one
    /// did (`interrupted` included; a run cancelled before it started,
    /// [`NOT_STARTED_ERROR`], is not one, nor one queued when the daemon
    /// stopped, [`QUEUED_AT_STOP_ERROR`], nor one still `queued`): a restarted daemon neither runs a completed
    /// one-shot again nor silently retries an interrupted one. Sees what is
    /// committed; flush the recorder first to see runs that just finished.
    fn one_shot_status<'a>(
        &'a self,
        job: &'a str,
        content_hash: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Option<RecordedStatus>, StoreError>>;

    /// Records fires of a job that were due while the daemon was not running:
    /// one run per fire time, status `missed`, started and finished now,
    /// duration 0, error [`MISSED_ERROR`]; all in one transaction. Nothing
    /// for an empty `fire_times`; [`StoreError::Invalid`] for a trigger other
    /// than `schedule` or `interval`.
    ///
    /// Returns how many fires it recorded: all of them, except on a shared
    /// history, where a fire another node recorded (or ran) is not recorded
    /// again (its claim is that node's).
    fn record_missed(&self, missed: Missed) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Records fires of a job that came while it was paused, as
    /// [`record_missed`](RunStore::record_missed) does, with the error
    /// [`PAUSED_ERROR`].
    fn record_paused(&self, missed: Missed) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Pauses (`true`: a row in `paused_jobs`, the time now) or resumes
    /// (`false`: the row deleted) `job`, committed when this returns.
    /// Idempotent.
    fn set_paused<'a>(&'a self, job: &'a str, paused: bool) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Every paused job with when it was paused, by job. Sees what is
    /// committed.
    fn paused(&self) -> BoxFuture<'_, Result<Vec<PausedJob>, StoreError>>;

    /// The latest fire time of `job`'s `schedule` and `interval` runs, whatever
    /// their status (`missed` and `interrupted` included); `None` if it has
    /// none. At start, the fires due after it were missed. Sees what is
    /// committed.
    fn last_fire<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, StoreError>>;

    /// Deletes `job`'s finished runs (any status but `running` and `queued`) beyond the
    /// newest `keep_runs` finished ones, and those that started more than
    /// `keep_for` ago; with them their steps, attempts and log lines. A
    /// `running` run is never deleted nor counted. `None` for both deletes
    /// nothing. A `queued` run is not deleted nor counted either. Returns how
    /// many runs were deleted; one transaction.
    fn prune<'a>(
        &'a self,
        job: &'a str,
        keep_runs: Option<u64>,
        keep_for: Option<Duration>,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Runs matching `filter`, newest first.
    fn runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRow>, StoreError>>;

    /// One run with its steps (in the order first seen) and log lines.
    fn run(&self, id: RunId) -> BoxFuture<'_, Result<Option<RunDetail>, StoreError>>;

    /// One run as [`run`](RunStore::run) gives it, with the place of each of
    /// its facts in the run's event stream (the numbers given to
    /// [`Recorder::record_numbered`]), to replay it in the order it was
    /// streamed. A backend that keeps no numbers answers the run unnumbered.
    fn timeline(&self, id: RunId) -> BoxFuture<'_, Result<Option<RunTimeline>, StoreError>> {
        Box::pin(async move { Ok(self.run(id).await?.map(RunTimeline::unnumbered)) })
    }

    /// A run's lines (process output and script log lines) matching
    /// `filter`, in the order they were streamed, each with its number in the
    /// run's event stream (the SSE `id:` of its `output`/`log` event), so a
    /// client can read the backlog and go on from the last `seq` it has.
    /// `None` if there is no such run. A backend that keeps no numbers
    /// answers from [`timeline`](RunStore::timeline), unnumbered.
    fn logs(&self, id: RunId, filter: LogFilter) -> BoxFuture<'_, Result<Option<Vec<NumberedLine>>, StoreError>> {
        Box::pin(async move { Ok(self.timeline(id).await?.map(|timeline| timeline.lines(&filter))) })
    }

    /// Claims a unit of work for `node` for `lease`: true if this node now
    /// holds it (it was free, its lease had expired, or this node held it
    /// already). See the module doc, "Fleets".
    fn claim<'a>(
        &'a self,
        key: &'a ClaimKey,
        node: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Extends every claim `node` holds to `lease` from now.
    fn renew_claims<'a>(&'a self, node: &'a str, lease: Duration) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Whether several daemons may share this history (a fleet): then the
    /// daemon registers its node, heartbeats and takes dead nodes over, a
    /// scheduled fire or a one-shot version runs only on the node whose
    /// [`claim_once`](RunStore::claim_once) wins, and named semaphores are
    /// held in the database. False (the default, SQLite: one daemon per
    /// state folder): the node and claim methods below keep their defaults,
    /// and nothing is asked of the store.
    fn shared(&self) -> bool {
        false
    }

    /// Records a node that starts (state `alive`, started and heartbeaten
    /// now on the database's clock). See `daemon::fleet`.
    fn register_node<'a>(&'a self, _node: &'a NodeRow) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// Heartbeats `node` (now, on the database's clock) with its runs in
    /// flight. `false` when its row is no longer `alive`: another node
    /// declared it dead (it must not go on under this id).
    fn heartbeat<'a>(&'a self, _node: &'a str, _runs_in_flight: u64) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async { Ok(true) })
    }

    /// Declares dead every other node whose heartbeat is older than its
    /// lease, and marks their runs left `running`/`queued` (and those of
    /// any id no longer alive) `interrupted`, as `me` takes them over; in
    /// one transaction, so each is taken over by one node only. Returns
    /// what this call took.
    fn take_over<'a>(&'a self, _me: &'a str) -> BoxFuture<'a, Result<Vec<TakenOver>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Marks `node` stopped (a clean shutdown), after what was recorded
    /// before is written.
    fn node_stopped<'a>(&'a self, _node: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// `node`'s job file `job` is gone: its version no longer counts for
    /// version skew.
    fn forget_node_job<'a>(&'a self, _node: &'a str, _job: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// The jobs `node` has in another version (content hash) than another
    /// live node: version skew. [`record_job`](RunStore::record_job) records
    /// each version with the node that registered last in this process.
    fn skew<'a>(&'a self, _node: &'a str) -> BoxFuture<'a, Result<Vec<Skew>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Every node of the fleet (alive first, then by start, newest first);
    /// `None` for a single-node store, whose one node the daemon knows.
    fn nodes(&self) -> BoxFuture<'_, Result<Option<Vec<NodeRow>>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    /// Claims a unit of work once in the fleet: insert-if-absent, so of all
    /// the nodes claiming one key exactly one is answered [`Claimed::Won`]
    /// (or [`Claimed::Busy`]), whenever they ask; a claim is never taken
    /// over. The single-node answer (the default): won.
    fn claim_once<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<Claimed, StoreError>> {
        let _ = claim;
        Box::pin(std::future::ready(Ok(Claimed::Won)))
    }

    /// Takes one of the `count` slots of semaphore `name` for `node`, if
    /// one is free in the fleet: its number, or `None` when all are held.
    /// The single-node answer (the default): slot 0 — the daemon's own
    /// admission (`daemon/admit.rs`) already counts the semaphore.
    fn acquire_semaphore<'a>(
        &'a self,
        name: &'a str,
        count: usize,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<u32>, StoreError>> {
        let _ = (name, count, node);
        Box::pin(std::future::ready(Ok(Some(0))))
    }

    /// Gives back slot `slot` of semaphore `name` that `node` holds.
    fn release_semaphore<'a>(
        &'a self,
        name: &'a str,
        slot: u32,
        node: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = (name, slot, node);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Every job's notification state (its failure streak), for the
    /// notifier at start.
    fn notify_states(&self) -> BoxFuture<'_, Result<Vec<(String, NotifyState)>, StoreError>>;

    /// Saves `job`'s notification state (after each run's end is decided).
    fn save_notify_state<'a>(&'a self, job: &'a str, state: NotifyState) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Records a notification to deliver (`pending`, no attempt yet) and
    /// returns its id. Only the newest 10,000 are kept.
    fn begin_notification<'a>(
        &'a self,
        job: &'a str,
        run_id: Option<RunId>,
        target: &'a str,
        event: &'a str,
    ) -> BoxFuture<'a, Result<NotificationId, StoreError>>;

    /// Records where a notification's delivery stands after an attempt.
    fn update_notification<'a>(
        &'a self,
        id: NotificationId,
        status: DeliveryStatus,
        attempts: u32,
        error: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Notifications matching `filter`, newest first.
    fn notifications(&self, filter: NotificationFilter) -> BoxFuture<'_, Result<Vec<Notification>, StoreError>>;

    /// When each job's latest successful run finished (the metric
    /// `gatherd_last_success_timestamp_seconds` and dead-man checks at start).
    fn last_successes(&self) -> BoxFuture<'_, Result<LastSuccesses, StoreError>>;

    /// Writes everything recorded so far and stops the writer. Later records
    /// are dropped (logged at debug level); later writes and flushes fail with
    /// [`StoreError::Closed`]; reads go on working.
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
