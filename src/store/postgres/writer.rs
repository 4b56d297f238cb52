//! The writer thread of the PostgreSQL store: one connection, fed by the
//! recorder's channel, writing events, run rows and job rows in batched
//! transactions — the SQLite writer's rules (`sqlite/writer.rs`), over the
//! network.
//!
//! A batch ends when [`BATCH_EVENTS`] writes are pending, [`BATCH_WINDOW`]
//! after its first write, or — holding a run's beginning or end — as soon as
//! nothing more is waiting (group commit). Its statements are *pipelined*:
//! all are sent before the first answer is awaited, so a batch costs about
//! one round trip, not one per event. A statement PostgreSQL refuses for its
//! data (SQLSTATE classes 22 and 23: a bad value, a run id that does not
//! exist) aborts the transaction; the writer then writes the batch again
//! with a savepoint around each write, so that write alone is lost (logged).
//!
//! When the database cannot be reached (down, restarting, the network cut)
//! the batch is kept and retried after [`RETRY_FIRST`], doubling to
//! [`RETRY_MAX`], on a new connection; step events and log lines past
//! [`KEPT_DETAIL_BYTES`] are dropped meanwhile (logged when it starts,
//! naming the run; the runs that lost some are named when the database is
//! back), runs' beginnings and ends and job versions are kept, and
//! [`RunStore::health`] says why. Run ids
//! come from the database (`RETURNING id`), so a run's `begin_run` waits
//! for its row's commit — while the database is unreachable, until it is
//! back (or the run gives up: a one-shot cancelled, the daemon stopping).
//!
//! Fencing: every write of a run's rows is guarded by the run being still
//! `running` or `queued` (`WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1
//! AND status IN ('running', 'queued'))`). A run another node took over is
//! `interrupted`, so the writes of the node that lost it — paused past its
//! lease, cut off, then back — change nothing: the takeover's row and error
//! stay. (A run's `node` never changes after its row is begun, so the
//! status alone says the run is still its node's.)
//!
//! Architecture Invariant: only this thread writes runs' events and rows.
//!
//! [`RunStore::health`]: crate::store::RunStore::health

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use futures::future::try_join_all;
use tokio::sync::{oneshot, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::schema::Target;
use crate::exec::{RecordedStatus, RunEvent, millis};
use crate::job::Backoff;
use crate::store::error::postgres_reason;
use crate::store::recorder::Msg;
use crate::store::sqlite::bounded_json;
use crate::store::{BATCH_EVENTS, BATCH_WINDOW, JobRecord, KEPT_DETAIL_BYTES, RunId, RunStart, StoreError};

/// The first retry of a batch that failed, after this.
pub const RETRY_FIRST: Duration = Duration::from_millis(100);

/// Retries of a failing batch are at most this far apart.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Counters of the writer, for tests.
#[derive(Debug, Default)]
pub(super) struct Stats {
    /// Batches committed.
    pub(super) batches: AtomicU64,
    /// Events written.
    pub(super) events: AtomicU64,
    /// The node this process registered last (`RunStore::register_node`):
    /// each job version the writer records is recorded as that node's too
    /// (`node_jobs`, for version skew).
    pub(super) node: std::sync::RwLock<Option<String>>,
}

/// One write waiting for its batch, in the order asked.
enum Pending {
    Event { run: RunId, seq: Option<i64>, event: RunEvent, at: DateTime<Utc> },
    Begin { start: RunStart, answer: Option<oneshot::Sender<Result<RunId, StoreError>>>, id: Option<RunId> },
    Job(JobRecord),
}

struct Failing {
    why: String,
    backoff: Backoff,
    retry_at: Instant,
}

/// The statements of the writer, prepared once per connection.
struct Statements {
    begin: Statement,
    started: Statement,
    step_started: Statement,
    attempt: Statement,
    step_finished: Statement,
    log: Statement,
    finished: Statement,
    job: Statement,
    node_job: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            begin: client
                .prepare(
                    "INSERT INTO runs (job, trigger, fire_time, content_hash, node, status, started_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, now()) RETURNING id",
                )
                .await?,
            started: client
                .prepare(
                    "UPDATE runs SET started_at = $2, start_seq = $3, \
                     status = CASE WHEN status = 'queued' THEN 'running' ELSE status END \
                     WHERE id = $1 AND status IN ('running', 'queued')",
                )
                .await?,
            step_started: client
                .prepare(
                    "INSERT INTO steps (run_id, path, name, kind, status, attempts, start_ms, start_seq) \
                     SELECT $1, $2, $3, $4, 'running', 1, $5, $6 WHERE EXISTS (SELECT 1 FROM runs WHERE \
                     id = $1 AND status IN ('running', 'queued')) \
                     ON CONFLICT (run_id, path) DO UPDATE SET attempts = 1, start_ms = excluded.start_ms, \
                     start_seq = excluded.start_seq",
                )
                .await?,
            attempt: client
                .prepare(
                    "WITH step AS (UPDATE steps SET attempts = $3 + 1 WHERE run_id = $1 AND path = $2 \
                     AND EXISTS (SELECT 1 FROM runs WHERE id = $1 AND status IN ('running', 'queued')) RETURNING 1) \
                     INSERT INTO attempts (run_id, path, attempt, error, at_ms, seq, retry_in_ms) \
                     SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM step) \
                     ON CONFLICT (run_id, path, attempt) DO UPDATE SET error = excluded.error, \
                     at_ms = excluded.at_ms, seq = excluded.seq, retry_in_ms = excluded.retry_in_ms",
                )
                .await?,
            step_finished: client
                .prepare(
                    "INSERT INTO steps (run_id, path, name, kind, status, attempts, start_ms, end_ms, output, \
                     truncated, error, end_seq) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 \
                     WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND status IN ('running', 'queued')) \
                     ON CONFLICT (run_id, path) DO UPDATE SET status = excluded.status, \
                     attempts = excluded.attempts, start_ms = excluded.start_ms, end_ms = excluded.end_ms, \
                     output = excluded.output, truncated = excluded.truncated, error = excluded.error, \
                     end_seq = excluded.end_seq",
                )
                .await?,
            log: client
                .prepare(
                    "INSERT INTO logs (run_id, path, at_ms, level, text, seq) SELECT $1, $2, $3, $4, $5, $6 \
                     WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND status IN ('running', 'queued'))",
                )
                .await?,
            finished: client
                .prepare(
                    "UPDATE runs SET status = $2, finished_at = $3, duration_ms = $4, error = $5, result = $6, \
                     result_truncated = $7, end_seq = $8 WHERE id = $1 AND status IN ('running', 'queued')",
                )
                .await?,
            job: client
                .prepare(
                    "INSERT INTO jobs (job, kind, content_hash, valid, diagnostic, first_seen, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, now(), now()) \
                     ON CONFLICT (job) DO UPDATE SET kind = excluded.kind, content_hash = excluded.content_hash, \
                     valid = excluded.valid, diagnostic = excluded.diagnostic, updated_at = excluded.updated_at",
                )
                .await?,
            node_job: client
                .prepare(
                    "INSERT INTO node_jobs (node, job, content_hash) SELECT $1, $2, $3 \
                     WHERE EXISTS (SELECT 1 FROM nodes WHERE id = $1) \
                     ON CONFLICT (node, job) DO UPDATE SET content_hash = excluded.content_hash",
                )
                .await?,
        })
    }
}

/// The writer's state.
pub(super) struct Writer {
    target: Target,
    rt: tokio::runtime::Runtime,
    conn: Option<(Client, Statements)>,
    rx: Receiver<Msg>,
    stats: Arc<Stats>,
    pending: Vec<Pending>,
    urgent: bool,
    due: Option<Instant>,
    health: watch::Sender<Option<String>>,
    failing: Option<Failing>,
    detail_bytes: usize,
    /// Step events and log lines dropped past the memory bound during this
    /// outage, per run (logged as they start, and named at the recovery).
    dropped: BTreeMap<RunId, u64>,
}

/// Why a batch was not committed.
enum Trouble {
    /// The database or the connection: keep the batch, retry.
    Storage(String),
    /// A statement refused for its data: write again write by write.
    Data,
}

fn is_data(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        let class = &db.code().code()[..2];
        // 22 data exception, 23 integrity constraint, 25P02 is what follows
        // the refused statement in the pipeline, 42 a statement this binary
        // got wrong for this row (not the database's trouble).
        matches!(class, "22" | "23" | "25")
    })
}

impl Writer {
    pub(super) fn new(
        target: Target,
        rt: tokio::runtime::Runtime,
        client: Client,
        rx: Receiver<Msg>,
        stats: Arc<Stats>,
        health: watch::Sender<Option<String>>,
    ) -> Result<Writer, StoreError> {
        let statements = rt
            .block_on(Statements::prepare(&client))
            .map_err(StoreError::postgres("prepare the writer's statements"))?;
        Ok(Writer {
            target,
            rt,
            conn: Some((client, statements)),
            rx,
            stats,
            pending: Vec::with_capacity(BATCH_EVENTS),
            urgent: false,
            due: None,
            health,
            failing: None,
            detail_bytes: 0,
            dropped: BTreeMap::new(),
        })
    }

    /// Runs until [`Msg::Close`] or until every sender is gone.
    pub(super) fn run(mut self) {
        loop {
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
                    let _ = answer.send(self.last_write());
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

    fn wait(&self) -> Option<Duration> {
        let now = Instant::now();
        match (&self.failing, self.due) {
            (Some(f), _) => Some(f.retry_at.saturating_duration_since(now)),
            (None, _) if self.urgent => Some(Duration::ZERO),
            (None, Some(due)) => Some(due.saturating_duration_since(now)),
            (None, None) => None,
        }
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Event { run, seq, event, at } => {
                let finished = matches!(event, RunEvent::RunFinished { .. });
                if self.failing.is_some()
                    && let Some(size) = detail_size(&event)
                {
                    if self.detail_bytes + size > KEPT_DETAIL_BYTES {
                        if self.dropped.is_empty() {
                            tracing::warn!(
                                run_id = run,
                                bound_bytes = KEPT_DETAIL_BYTES,
                                "the run history is still unreachable and what it keeps in memory reached its bound: \
                                 step events and log lines are dropped from now on (runs' beginnings and ends are \
                                 still kept); the runs that lose some are named when it is back"
                            );
                        }
                        *self.dropped.entry(run).or_default() += 1;
                        return;
                    }
                    self.detail_bytes += size;
                }
                self.urgent |= finished;
                let seq = seq.and_then(|s| i64::try_from(s).ok());
                self.keep(Pending::Event { run, seq, event, at });
            }
            Msg::Begin { start, answer, .. } => {
                self.urgent = true;
                self.keep(Pending::Begin { start, answer: Some(answer), id: None });
            }
            Msg::Job(job) => {
                if self.failing.is_some() {
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
            Msg::Call(_) => {
                // The SQLite writer's one-off writes: this store makes its
                // own over its pool; nothing sends one here.
                tracing::error!("the PostgreSQL run store's writer was sent an SQLite call: ignored");
            }
            Msg::Close(answer) => {
                let _ = answer.send(Err(StoreError::Invalid("close is handled by the writer's loop".into())));
            }
            #[cfg(test)]
            Msg::PauseAfterCommit(..) => {}
        }
    }

    fn keep(&mut self, pending: Pending) {
        if self.pending.is_empty() && self.failing.is_none() {
            self.due = Some(Instant::now() + BATCH_WINDOW);
        }
        self.pending.push(pending);
    }

    fn last_write(&mut self) -> Result<(), StoreError> {
        let written = self.write();
        if let Err(e) = &written {
            let ends: Vec<String> = self
                .pending
                .iter()
                .filter_map(|p| match p {
                    Pending::Event { run, event: RunEvent::RunFinished { .. }, .. } => Some(run.to_string()),
                    _ => None,
                })
                .collect();
            let beginnings: Vec<&str> = self
                .pending
                .iter()
                .filter_map(|p| match p {
                    Pending::Begin { start, .. } => Some(start.job.as_str()),
                    _ => None,
                })
                .collect();
            tracing::error!(
                error = %e,
                writes = self.pending.len(),
                ends_of_runs = %ends.join(", "),
                beginnings_of = %beginnings.join(", "),
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

    fn write(&mut self) -> Result<(), StoreError> {
        self.urgent = false;
        self.due = None;
        let kept = self.pending.len();
        match self.commit() {
            Ok(()) => {
                self.detail_bytes = 0;
                if self.failing.take().is_some() {
                    let dropped = std::mem::take(&mut self.dropped);
                    tracing::warn!(
                        written = kept,
                        dropped = dropped.values().sum::<u64>(),
                        dropped_from = %per_run(&dropped),
                        "the run history can be written again: what was kept in memory is written (`dropped`: step \
                         events and log lines past the memory bound, `dropped_from`: of which runs)"
                    );
                    self.health.send_replace(None);
                }
                Ok(())
            }
            Err(why) => {
                self.conn = None;
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
                            "the run history cannot be written: runs' facts are kept in memory and written when it \
                             can be (retrying); runs beginning meanwhile wait for their row"
                        );
                        self.health.send_replace(Some(why.clone()));
                        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
                        let retry_at = now + backoff.next_wait();
                        self.failing = Some(Failing { why: why.clone(), backoff, retry_at });
                    }
                }
                Err(StoreError::Unwritable(why))
            }
        }
    }

    fn commit(&mut self) -> Result<(), String> {
        self.pending.retain(|p| !matches!(p, Pending::Begin { answer: Some(answer), .. } if answer.is_closed()));
        if self.pending.is_empty() {
            return Ok(());
        }
        let node = self.stats.node.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let node = node.as_deref();
        let (rt, target, conn, pending) = (&self.rt, &self.target, &mut self.conn, &mut self.pending);
        let events = rt.block_on(async {
            if conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
                let client = target.connect().await.map_err(|e| e.to_string())?;
                let statements = Statements::prepare(&client).await.map_err(|e| postgres_reason(&e))?;
                *conn = Some((client, statements));
            }
            let Some((client, statements)) = conn.as_mut() else { return Err("no connection".to_string()) };
            match write_batch(client, statements, pending, false, node).await {
                Ok(n) => Ok(n),
                Err(Trouble::Storage(why)) => Err(why),
                Err(Trouble::Data) => match write_batch(client, statements, pending, true, node).await {
                    Ok(n) => Ok(n),
                    Err(Trouble::Storage(why)) => Err(why),
                    Err(Trouble::Data) => Err("a write refused even alone stopped the batch".to_string()),
                },
            }
        })?;
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.events.fetch_add(events, Ordering::Relaxed);
        let mut not_started = Vec::new();
        for p in self.pending.drain(..) {
            if let Pending::Begin { id: Some(id), answer: Some(answer), .. } = p
                && answer.send(Ok(id)).is_err()
            {
                not_started.push(id);
            }
        }
        for id in not_started {
            tracing::info!(run_id = id, "the run gave up as its row was committed: recorded as not started");
            self.urgent = true;
            self.keep(Pending::Event { run: id, seq: None, event: crate::store::not_started_end(), at: Utc::now() });
        }
        Ok(())
    }
}

/// Writes `pending` in one transaction: pipelined, or (`alone`) each write
/// in its savepoint so a refused one is dropped alone. Returns the number of
/// events written.
async fn write_batch(
    client: &mut Client,
    st: &Statements,
    pending: &mut [Pending],
    alone: bool,
    node: Option<&str>,
) -> Result<u64, Trouble> {
    let storage = |e: tokio_postgres::Error| Trouble::Storage(postgres_reason(&e));
    let classify =
        |e: tokio_postgres::Error| if is_data(&e) { Trouble::Data } else { Trouble::Storage(postgres_reason(&e)) };
    let mut tx = client.transaction().await.map_err(storage)?;
    let events = pending.iter().filter(|p| matches!(p, Pending::Event { .. })).count() as u64;
    if alone {
        for p in pending.iter_mut() {
            let sp = tx.savepoint("one_write").await.map_err(storage)?;
            let outcome = one(&sp, st, p, node).await;
            match outcome {
                Ok(id) => {
                    sp.commit().await.map_err(storage)?;
                    if let (Pending::Begin { id: slot, .. }, Some(id)) = (&mut *p, id) {
                        *slot = Some(id);
                    }
                }
                Err(e) if is_data(&e) => {
                    sp.rollback().await.map_err(storage)?;
                    refused(p, e);
                }
                Err(e) => return Err(storage(e)),
            }
        }
    } else {
        let ids = try_join_all(pending.iter().map(|p| one(&tx, st, p, node))).await.map_err(classify)?;
        for (p, id) in pending.iter_mut().zip(ids) {
            if let (Pending::Begin { id: slot, .. }, Some(id)) = (p, id) {
                *slot = Some(id);
            }
        }
    }
    tx.commit().await.map_err(storage)?;
    Ok(events)
}

/// `run 12: 300, run 13: 4`: how many writes of each run were dropped.
fn per_run(dropped: &BTreeMap<RunId, u64>) -> String {
    dropped.iter().map(|(run, n)| format!("run {run}: {n}")).collect::<Vec<_>>().join(", ")
}

/// Logs (and answers) a write PostgreSQL refused for its data.
fn refused(p: &mut Pending, e: tokio_postgres::Error) {
    match p {
        Pending::Event { run, .. } => {
            tracing::warn!(run_id = *run, "cannot record an event of the run: {}", postgres_reason(&e))
        }
        Pending::Begin { start, answer, .. } => {
            tracing::error!(job = %start.job, "cannot record the run's beginning: {}", postgres_reason(&e));
            if let Some(answer) = answer.take() {
                let _ = answer.send(Err(StoreError::Postgres { what: "begin a run", source: e }));
            }
        }
        Pending::Job(job) => {
            tracing::error!(job = %job.job, "cannot record the job file in the store: {}", postgres_reason(&e));
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(millis(d)).unwrap_or(i64::MAX)
}

/// One write; a run's beginning returns its id.
async fn one(
    c: &impl tokio_postgres::GenericClient,
    st: &Statements,
    p: &Pending,
    node: Option<&str>,
) -> Result<Option<RunId>, tokio_postgres::Error> {
    match p {
        Pending::Begin { start, .. } => {
            let status = if start.queued { RecordedStatus::Queued } else { RecordedStatus::Running }.as_str();
            let hash = &start.content_hash[..];
            let row = c
                .query_one(
                    &st.begin,
                    &[
                        &start.job,
                        &start.trigger.as_str(),
                        &start.fire_time.trunc_subsecs(6),
                        &hash,
                        &start.node,
                        &status,
                    ],
                )
                .await?;
            Ok(Some(row.try_get(0)?))
        }
        Pending::Job(job) => {
            let hash = &job.content_hash[..];
            c.execute(&st.job, &[&job.job, &job.kind.as_str(), &hash, &job.valid, &job.diagnostic]).await?;
            if let Some(node) = node {
                c.execute(&st.node_job, &[&node, &job.job, &hash]).await?;
            }
            Ok(None)
        }
        Pending::Event { run, seq, event, at } => {
            event_write(c, st, *run, *seq, event, *at).await?;
            Ok(None)
        }
    }
}

async fn event_write(
    c: &impl tokio_postgres::GenericClient,
    st: &Statements,
    run: RunId,
    seq: Option<i64>,
    event: &RunEvent,
    at_wall: DateTime<Utc>,
) -> Result<u64, tokio_postgres::Error> {
    match event {
        RunEvent::RunStarted { started_at, .. } => {
            c.execute(&st.started, &[&run, &started_at.trunc_subsecs(6), &seq]).await
        }
        RunEvent::NodeStarted { path, name, kind, at } => {
            let args: [&(dyn ToSql + Sync); 6] = [&run, &&**path, &&**name, &kind.as_str(), &ms(*at), &seq];
            c.execute(&st.step_started, &args).await
        }
        RunEvent::AttemptFailed { path, attempt, error, retry_in, at } => {
            let attempt = i32::try_from(*attempt).unwrap_or(i32::MAX);
            let args: [&(dyn ToSql + Sync); 7] = [&run, &&**path, &attempt, error, &ms(*at), &seq, &ms(*retry_in)];
            c.execute(&st.attempt, &args).await
        }
        RunEvent::NodeFinished { path, name, kind, status, attempts, started, at, output, error, truncated } => {
            let (output, cut) = bounded_json(output.as_ref());
            let attempts = i32::try_from(*attempts).unwrap_or(i32::MAX);
            let started = started.map(ms);
            let truncated = *truncated || cut;
            let args: [&(dyn ToSql + Sync); 12] = [
                &run,
                &&**path,
                &&**name,
                &kind.as_str(),
                &status.as_str(),
                &attempts,
                &started,
                &ms(*at),
                &output,
                &truncated,
                error,
                &seq,
            ];
            c.execute(&st.step_finished, &args).await
        }
        RunEvent::Log { path, stream, text, at } => {
            let args: [&(dyn ToSql + Sync); 6] = [&run, &&**path, &ms(*at), &stream.as_str(), text, &seq];
            c.execute(&st.log, &args).await
        }
        RunEvent::RunFinished { status, result, error, duration } => {
            let (result, cut) = bounded_json(result.as_ref());
            let args: [&(dyn ToSql + Sync); 8] =
                [&run, &status.as_str(), &at_wall.trunc_subsecs(6), &ms(*duration), error, &result, &cut, &seq];
            c.execute(&st.finished, &args).await
        }
    }
}

/// What a step event or a log line weighs in memory while the writer keeps
/// it (`None`: a run's beginning or end, always kept).
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
                + output.as_ref().map_or(0, |o| o.to_string().len())
        }
        RunEvent::Log { path, text, .. } => FIXED + path.len() + text.len(),
    })
}
