//! The PostgreSQL backend: the run history in a database that several
//! daemons can share (the fleet's store; claims and leases come later).
//!
//! Chosen with a `postgres://` store URL (`--store`, `GATHERD_STORE`,
//! `store = "..."`). The same [`RunStore`] behaviour as SQLite's, in
//! PostgreSQL's SQL and types: timestamptz (microseconds), bytea hashes,
//! identity ids given by the database.
//!
//! Two kinds of connections: the writer thread's own (every event, run row
//! and job row, in batched, pipelined transactions: see `writer.rs`), and a
//! small pool (deadpool) for reads and one-off writes (recover, missed
//! fires, prune, pauses, claims, notifications), each of which flushes the
//! recorder first, so it lands after what was recorded before it, as the
//! SQLite writer's one-off writes do.
//!
//! Architecture Invariant: the run's path never waits for PostgreSQL:
//! [`Recorder::record`] is the same channel send as for SQLite.

mod claims;
mod nodes;
mod read;
mod schema;
mod tls;
mod writer;

/// The throwaway cluster of the tests (one file for these and the
/// end-to-end tests).
#[cfg(test)]
#[path = "../../../tests/support/postgres.rs"]
pub(crate) mod cluster;

#[cfg(test)]
mod tests;

pub(crate) use self::schema::Target;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{oneshot, watch};

use self::writer::{Stats, Writer};
use super::recorder::{Msg, Recorder};
use super::{
    Claim, ClaimKey, Claimed, DeliveryStatus, JobRecord, LastSuccesses, LogFilter, MISSED_ERROR, Missed, NodeRow,
    Notification, NotificationFilter, NotificationId, NotifyState, NumberedLine, PAUSED_ERROR, QUEUED_AT_STOP_ERROR,
    RecordedStatus, RunDetail, RunFilter, RunId, RunRow, RunStart, RunStore, RunTimeline, RunTrigger, Skew, StoreError,
    TakenOver,
};
use crate::store::sqlite::KEPT_NOTIFICATIONS;

/// The first key of the advisory lock a job's retention holds (the second
/// is the job's hash): "gthr".
const PRUNE_LOCK: i32 = 0x6774_6872;

/// Connections of the read pool: reads are short, and the writer has its own.
const POOL_SIZE: usize = 4;

/// Opens the run history at `url` (a `postgres://` URL): connects, applies
/// the migrations it lacks, and starts the writer thread. Fails, naming the
/// URL (without its password), when the database cannot be reached or its
/// schema is newer than this binary.
pub async fn open_postgres(url: &str) -> Result<PostgresStore, StoreError> {
    let target = Target::parse(url)?;
    let mut client = target.connect().await?;
    schema::migrate(&mut client).await?;
    drop(client);
    let pool = pool(&target)?;
    let stats = Arc::new(Stats::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let (health_tx, health) = watch::channel(None);
    // The writer's thread has its own small runtime: it blocks on the
    // channel like the SQLite writer, and its connection lives there.
    let (ready_tx, ready) = oneshot::channel();
    let writer_target = target.clone();
    let writer_stats = stats.clone();
    let handle = std::thread::Builder::new()
        .name("gatherd-store".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(StoreError::Spawn(e)));
                    return;
                }
            };
            let writer = rt
                .block_on(writer_target.connect())
                .and_then(|client| Writer::new(writer_target, rt, client, rx, writer_stats, health_tx));
            match writer {
                Ok(writer) => {
                    let _ = ready_tx.send(Ok(()));
                    writer.run();
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .map_err(StoreError::Spawn)?;
    ready.await.map_err(|_| StoreError::Worker("the writer thread stopped at its start".into()))??;
    Ok(PostgresStore { target, recorder: Recorder::new(tx), pool, writer: Mutex::new(Some(handle)), stats, health })
}

fn pool(target: &Target) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        target.config.clone(),
        target.tls.clone(),
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .create_timeout(Some(target.connect_limit()))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Connect { url: target.shown.clone(), reason: e.to_string() })
}

/// The PostgreSQL run store. Hold it as `Arc<dyn RunStore>`; call
/// [`close`](RunStore::close) before exiting so the last events are written.
pub struct PostgresStore {
    target: Target,
    recorder: Recorder,
    pool: Pool,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    stats: Arc<Stats>,
    health: watch::Receiver<Option<String>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("url", &self.target.shown).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// How many batches the writer has committed (a diagnostic).
    pub fn batches_written(&self) -> u64 {
        self.stats.batches.load(Ordering::Relaxed)
    }

    /// How many events the writer has written.
    pub fn events_written(&self) -> u64 {
        self.stats.events.load(Ordering::Relaxed)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Connect { url: self.target.shown.clone(), reason: e.to_string() })
    }

    /// Waits for what was recorded before (so a one-off write lands after
    /// it); a writer that cannot write now does not hold the write up.
    async fn after_recorded(&self) {
        if let Err(e) = self.recorder.flush().await {
            tracing::debug!("run history: a write goes ahead of recorded events: {e}");
        }
    }
}

/// Read-only access to a PostgreSQL run history, for the CLI without a
/// daemon (`gatherd runs --store URL`): one connection, no migrations, no
/// writer.
pub struct PostgresHistory {
    client: tokio_postgres::Client,
}

impl PostgresHistory {
    /// Connects to the history at `url`.
    pub async fn open(url: &str) -> Result<PostgresHistory, StoreError> {
        let target = Target::parse(url)?;
        Ok(PostgresHistory { client: target.connect().await? })
    }

    /// Runs matching `filter`, newest first.
    pub async fn runs(&self, filter: RunFilter) -> Result<Vec<RunRow>, StoreError> {
        read::runs(&self.client, &filter).await
    }

    /// Every job the history knows (seen by a daemon, or with runs), sorted.
    pub async fn job_names(&self) -> Result<Vec<String>, StoreError> {
        read::job_names(&self.client).await
    }

    /// One run with its steps and log lines.
    pub async fn run(&self, id: RunId) -> Result<Option<RunDetail>, StoreError> {
        read::run(&self.client, id).await
    }

    /// Every node of the fleet (see `RunStore::nodes`).
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        nodes::list(&self.client).await
    }

    /// A run's lines matching `filter`, numbered (see `RunStore::logs`).
    pub async fn logs(&self, id: RunId, filter: LogFilter) -> Result<Option<Vec<NumberedLine>>, StoreError> {
        read::logs(&self.client, id, &filter).await
    }
}

async fn recover(client: &mut deadpool_postgres::Object, node: &str, reason: &str) -> Result<Vec<RunRow>, StoreError> {
    let fail = StoreError::postgres;
    let tx = client.transaction().await.map_err(fail("recover"))?;
    let now = Utc::now().trunc_subsecs(6);
    let mut runs = tx
        .query(
            &format!(
                "SELECT {} FROM runs WHERE (status = 'running' OR status = 'queued') AND node = $1 ORDER BY id \
                 FOR UPDATE",
                read::RUN_COLUMNS
            ),
            &[&node],
        )
        .await
        .and_then(|rows| rows.iter().map(read::run_row).collect::<Result<Vec<_>, _>>())
        .map_err(fail("find the runs left running"))?;
    for run in &mut runs {
        if run.status == RecordedStatus::Queued {
            let status = RecordedStatus::Finished(crate::exec::Status::Cancelled);
            tx.execute(
                "UPDATE runs SET status = $2, error = $3, finished_at = $4, duration_ms = 0 WHERE id = $1",
                &[&run.id, &status.as_str(), &QUEUED_AT_STOP_ERROR, &now],
            )
            .await
            .map_err(fail("mark a queued run cancelled"))?;
            run.status = status;
            run.error = Some(QUEUED_AT_STOP_ERROR.to_string());
            run.finished_at = Some(now);
            run.duration_ms = Some(0);
            continue;
        }
        tx.execute(
            "UPDATE runs SET status = 'interrupted', error = $2, finished_at = $3 WHERE id = $1",
            &[&run.id, &reason, &now],
        )
        .await
        .map_err(fail("mark a run interrupted"))?;
        tx.execute("UPDATE steps SET status = 'interrupted' WHERE run_id = $1 AND status = 'running'", &[&run.id])
            .await
            .map_err(fail("mark a run's steps interrupted"))?;
        run.status = RecordedStatus::Interrupted;
        run.error = Some(reason.to_string());
        run.finished_at = Some(now);
    }
    // Whatever this id holds (none: ids are new at each start; a dead or
    // stopped node's slots are freed by the takeover's look).
    claims::release_node(&*tx, node).await?;
    tx.commit().await.map_err(fail("recover"))?;
    Ok(runs)
}

async fn record_missed(
    client: &mut deadpool_postgres::Object,
    missed: &Missed,
    error: &'static str,
) -> Result<u64, StoreError> {
    if !matches!(missed.trigger, RunTrigger::Schedule | RunTrigger::Interval) {
        return Err(StoreError::Invalid(format!(
            "a missed fire of {} has trigger {}, not schedule or interval",
            missed.job,
            missed.trigger.as_str()
        )));
    }
    if missed.fire_times.is_empty() {
        return Ok(0);
    }
    // One row per fire in the fleet: each is recorded only if its claim
    // is this node's (claims.rs).
    claims::record_missed(&***client, missed, error).await
}

async fn prune(
    client: &mut deadpool_postgres::Object,
    job: &str,
    keep_runs: Option<u64>,
    keep_for: Option<Duration>,
) -> Result<u64, StoreError> {
    let fail = StoreError::postgres;
    let tx = client.transaction().await.map_err(fail("prune runs"))?;
    // Once in the fleet: a node pruning this job now does it for all (the
    // deletes are idempotent, but two at once would wait on each other's
    // rows and could deadlock).
    let alone: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1, hashtext($2))", &[&PRUNE_LOCK, &job])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(fail("lock a job's retention"))?;
    if !alone {
        return Ok(0);
    }
    let mut deleted = 0;
    if let Some(keep) = keep_runs {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        deleted += tx
            .execute(
                "DELETE FROM runs WHERE job = $1 AND status <> 'running' AND status <> 'queued' AND id NOT IN \
                 (SELECT id FROM runs WHERE job = $1 AND status <> 'running' AND status <> 'queued' \
                 ORDER BY id DESC LIMIT $2)",
                &[&job, &keep],
            )
            .await
            .map_err(fail("prune runs by count"))?;
    }
    let cutoff =
        keep_for.and_then(|d| chrono::Duration::from_std(d).ok()).and_then(|d| Utc::now().checked_sub_signed(d));
    if let Some(cutoff) = cutoff {
        deleted += tx
            .execute(
                "DELETE FROM runs WHERE job = $1 AND status <> 'running' AND status <> 'queued' AND started_at < $2",
                &[&job, &cutoff],
            )
            .await
            .map_err(fail("prune runs by age"))?;
    }
    claims::prune_claims(&*tx, job).await?;
    tx.commit().await.map_err(fail("prune runs"))?;
    Ok(deleted)
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

impl RunStore for PostgresStore {
    fn recover<'a>(&'a self, node: &'a str, reason: &'a str) -> BoxFuture<'a, Result<Vec<RunRow>, StoreError>> {
        async move {
            self.after_recorded().await;
            recover(&mut self.client().await?, node, reason).await
        }
        .boxed()
    }

    fn begin_run(&self, start: RunStart) -> BoxFuture<'_, Result<RunId, StoreError>> {
        async move {
            let (answer, rx) = oneshot::channel();
            // The id is the database's (`RETURNING id`): the writer answers it.
            self.recorder.send(Msg::Begin { id: 0, start, answer })?;
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
        async move { read::one_shot_status(&**self.client().await?, job, content_hash).await }.boxed()
    }

    fn record_missed(&self, missed: Missed) -> BoxFuture<'_, Result<u64, StoreError>> {
        async move {
            self.after_recorded().await;
            record_missed(&mut self.client().await?, &missed, MISSED_ERROR).await
        }
        .boxed()
    }

    fn record_paused(&self, missed: Missed) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            self.after_recorded().await;
            record_missed(&mut self.client().await?, &missed, PAUSED_ERROR).await?;
            Ok(())
        }
        .boxed()
    }

    fn set_paused<'a>(&'a self, job: &'a str, paused: bool) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let client = self.client().await?;
            let fail = StoreError::postgres("save a job's pause");
            if paused {
                client
                    .execute(
                        "INSERT INTO paused_jobs (job, paused_at) VALUES ($1, $2) ON CONFLICT (job) DO NOTHING",
                        &[&job, &Utc::now().trunc_subsecs(6)],
                    )
                    .await
                    .map_err(fail)?;
            } else {
                client.execute("DELETE FROM paused_jobs WHERE job = $1", &[&job]).await.map_err(fail)?;
            }
            Ok(())
        }
        .boxed()
    }

    fn paused(&self) -> BoxFuture<'_, Result<Vec<crate::store::PausedJob>, StoreError>> {
        async move { read::paused(&**self.client().await?).await }.boxed()
    }

    fn last_fire<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, StoreError>> {
        async move { read::last_fire(&**self.client().await?, job).await }.boxed()
    }

    fn prune<'a>(
        &'a self,
        job: &'a str,
        keep_runs: Option<u64>,
        keep_for: Option<Duration>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move {
            self.after_recorded().await;
            prune(&mut self.client().await?, job, keep_runs, keep_for).await
        }
        .boxed()
    }

    fn runs(&self, filter: RunFilter) -> BoxFuture<'_, Result<Vec<RunRow>, StoreError>> {
        async move { read::runs(&**self.client().await?, &filter).await }.boxed()
    }

    fn run(&self, id: RunId) -> BoxFuture<'_, Result<Option<RunDetail>, StoreError>> {
        async move {
            let mut client = self.client().await?;
            let tx = read_tx(&mut client).await?;
            let run = read::run(&*tx, id).await?;
            tx.commit().await.map_err(StoreError::postgres("read a run"))?;
            Ok(run)
        }
        .boxed()
    }

    fn timeline(&self, id: RunId) -> BoxFuture<'_, Result<Option<RunTimeline>, StoreError>> {
        async move {
            let mut client = self.client().await?;
            let tx = read_tx(&mut client).await?;
            let timeline = read::timeline(&*tx, id).await?;
            tx.commit().await.map_err(StoreError::postgres("read a run's events"))?;
            Ok(timeline)
        }
        .boxed()
    }

    fn logs(&self, id: RunId, filter: LogFilter) -> BoxFuture<'_, Result<Option<Vec<NumberedLine>>, StoreError>> {
        async move {
            let mut client = self.client().await?;
            let tx = read_tx(&mut client).await?;
            let lines = read::logs(&*tx, id, &filter).await?;
            tx.commit().await.map_err(StoreError::postgres("read a run's lines"))?;
            Ok(lines)
        }
        .boxed()
    }

    fn claim<'a>(
        &'a self,
        key: &'a ClaimKey,
        node: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let now = Utc::now().trunc_subsecs(6);
            let changed = self
                .client()
                .await?
                .execute(
                    "INSERT INTO claims (job, slot, node, claimed_at, lease_until) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (job, slot) DO UPDATE SET node = excluded.node, claimed_at = excluded.claimed_at, \
                     lease_until = excluded.lease_until \
                     WHERE claims.lease_until < excluded.claimed_at OR claims.node = excluded.node",
                    &[&key.job, &key.slot, &node, &now, &lease_end(now, lease)],
                )
                .await
                .map_err(StoreError::postgres("claim"))?;
            Ok(changed == 1)
        }
        .boxed()
    }

    fn renew_claims<'a>(&'a self, node: &'a str, lease: Duration) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.client()
                .await?
                .execute("UPDATE claims SET lease_until = $2 WHERE node = $1", &[&node, &lease_end(Utc::now(), lease)])
                .await
                .map_err(StoreError::postgres("renew claims"))?;
            Ok(())
        }
        .boxed()
    }

    fn shared(&self) -> bool {
        true
    }

    fn register_node<'a>(&'a self, node: &'a NodeRow) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            nodes::register(&**self.client().await?, node).await?;
            // Job versions recorded from now on are this node's.
            *self.stats.node.write().unwrap_or_else(PoisonError::into_inner) = Some(node.id.clone());
            Ok(())
        }
        .boxed()
    }

    fn forget_node_job<'a>(&'a self, node: &'a str, job: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.after_recorded().await;
            nodes::forget_job(&**self.client().await?, node, job).await
        }
        .boxed()
    }

    fn skew<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Vec<Skew>, StoreError>> {
        async move { nodes::skew(&**self.client().await?, node).await }.boxed()
    }

    fn heartbeat<'a>(&'a self, node: &'a str, runs_in_flight: u64) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move { nodes::heartbeat(&**self.client().await?, node, runs_in_flight).await }.boxed()
    }

    fn take_over<'a>(&'a self, me: &'a str) -> BoxFuture<'a, Result<Vec<TakenOver>, StoreError>> {
        async move { nodes::take_over(&mut self.client().await?, me).await }.boxed()
    }

    fn node_stopped<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            // Its runs' ends first: a node seen stopped with a run still
            // `running` would have it taken over.
            self.after_recorded().await;
            nodes::stopped(&**self.client().await?, node).await
        }
        .boxed()
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Option<Vec<NodeRow>>, StoreError>> {
        async move { nodes::list(&**self.client().await?).await.map(Some) }.boxed()
    }

    fn claim_once<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<Claimed, StoreError>> {
        async move { claims::claim_once(&**self.client().await?, claim).await }.boxed()
    }

    fn acquire_semaphore<'a>(
        &'a self,
        name: &'a str,
        count: usize,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<u32>, StoreError>> {
        async move { claims::acquire_semaphore(&**self.client().await?, name, count, node).await }.boxed()
    }

    fn release_semaphore<'a>(
        &'a self,
        name: &'a str,
        slot: u32,
        node: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move { claims::release_semaphore(&**self.client().await?, name, slot, node).await }.boxed()
    }

    fn notify_states(&self) -> BoxFuture<'_, Result<Vec<(String, NotifyState)>, StoreError>> {
        async move { read::notify_states(&**self.client().await?).await }.boxed()
    }

    fn save_notify_state<'a>(&'a self, job: &'a str, state: NotifyState) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let client = self.client().await?;
            let fail = StoreError::postgres("save a notification state");
            if state == NotifyState::default() {
                client.execute("DELETE FROM notify_state WHERE job = $1", &[&job]).await.map_err(fail)?;
                return Ok(());
            }
            let failures = i64::from(state.failures);
            let told_at = state.told_at.map(|t| t.trunc_subsecs(6));
            client
                .execute(
                    "INSERT INTO notify_state (job, failures, told, told_at, stale, invalid, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, now()) \
                     ON CONFLICT (job) DO UPDATE SET failures = excluded.failures, told = excluded.told, \
                     told_at = excluded.told_at, stale = excluded.stale, invalid = excluded.invalid, \
                     updated_at = excluded.updated_at",
                    &[&job, &failures, &state.told, &told_at, &state.stale, &state.invalid],
                )
                .await
                .map_err(fail)?;
            Ok(())
        }
        .boxed()
    }

    fn begin_notification<'a>(
        &'a self,
        job: &'a str,
        run_id: Option<RunId>,
        target: &'a str,
        event: &'a str,
    ) -> BoxFuture<'a, Result<NotificationId, StoreError>> {
        async move {
            let client = self.client().await?;
            let fail = StoreError::postgres;
            let now = Utc::now().trunc_subsecs(6);
            let id: i64 = client
                .query_one(
                    "INSERT INTO notifications (job, run_id, target, event, status, attempts, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5) RETURNING id",
                    &[&job, &run_id, &target, &event, &now],
                )
                .await
                .and_then(|r| r.try_get(0))
                .map_err(fail("record a notification"))?;
            client
                .execute("DELETE FROM notifications WHERE id <= $1", &[&(id - KEPT_NOTIFICATIONS)])
                .await
                .map_err(fail("drop old notifications"))?;
            Ok(id)
        }
        .boxed()
    }

    fn update_notification<'a>(
        &'a self,
        id: NotificationId,
        status: DeliveryStatus,
        attempts: u32,
        error: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.client()
                .await?
                .execute(
                    "UPDATE notifications SET status = $2, attempts = $3, error = $4, updated_at = $5 WHERE id = $1",
                    &[&id, &status.as_str(), &i64::from(attempts), &error, &Utc::now().trunc_subsecs(6)],
                )
                .await
                .map_err(StoreError::postgres("record a delivery attempt"))?;
            Ok(())
        }
        .boxed()
    }

    fn notifications(&self, filter: NotificationFilter) -> BoxFuture<'_, Result<Vec<Notification>, StoreError>> {
        async move { read::notifications(&**self.client().await?, &filter).await }.boxed()
    }

    fn last_successes(&self) -> BoxFuture<'_, Result<LastSuccesses, StoreError>> {
        async move { read::last_successes(&**self.client().await?).await }.boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let (tx, rx) = oneshot::channel();
            self.recorder.send(Msg::Close(tx))?;
            let flushed = rx.await.map_err(|_| StoreError::Closed)?;
            let handle = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(handle) = handle {
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

/// A read transaction that sees one moment (`REPEATABLE READ`), so a run's
/// rows and their numbers match.
async fn read_tx(client: &mut deadpool_postgres::Object) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(StoreError::postgres("begin a read"))
}
