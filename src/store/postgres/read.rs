//! Queries, and turning rows back into values: the SQLite reads
//! (`sqlite/read.rs`) in PostgreSQL's SQL and types, over a pooled client
//! (or a transaction, for reads that must see one moment).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use crate::exec::{FailedAttempt, LogLine, NodeKind, StepReport, Stream};
use crate::store::json::read_stored;
use crate::store::{
    DeliveryStatus, LastSuccesses, LogFilter, Notification, NotificationFilter, NotifyState, NumberedLine,
    RecordedStatus, RunDetail, RunFilter, RunId, RunRow, RunTimeline, RunTrigger, StepSeqs, StoreError,
};

/// The columns [`run_row`] reads, in its order.
pub(super) const RUN_COLUMNS: &str =
    "id, job, trigger, fire_time, content_hash, node, status, started_at, finished_at, duration_ms, error, result";

/// How many runs a filter without a limit returns.
const DEFAULT_LIMIT: u32 = 50;

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// A value the schema's CHECKs should have kept out: read as a marker, so
/// one stored value never fails a read (history is data).
fn status(row: &Row, idx: usize) -> PgResult<RecordedStatus> {
    let s: String = row.try_get(idx)?;
    Ok(RecordedStatus::parse(&s).unwrap_or(RecordedStatus::Interrupted))
}

fn stream(row: &Row, idx: usize) -> PgResult<Stream> {
    let s: String = row.try_get(idx)?;
    Ok(Stream::parse(&s).unwrap_or(Stream::Print))
}

fn json(row: &Row, idx: usize) -> PgResult<serde_json::Value> {
    let s: Option<String> = row.try_get(idx)?;
    Ok(s.map_or(serde_json::Value::Null, |s| read_stored(&s)))
}

fn opt_u64(row: &Row, idx: usize) -> PgResult<Option<u64>> {
    let v: Option<i64> = row.try_get(idx)?;
    Ok(v.map(|v| u64::try_from(v).unwrap_or(0)))
}

fn u32_of(row: &Row, idx: usize) -> PgResult<u32> {
    let v: i32 = row.try_get(idx)?;
    Ok(u32::try_from(v).unwrap_or(0))
}

/// A run row from [`RUN_COLUMNS`].
pub(super) fn run_row(row: &Row) -> PgResult<RunRow> {
    let trigger: String = row.try_get(2)?;
    let hash: Vec<u8> = row.try_get(4)?;
    Ok(RunRow {
        id: row.try_get(0)?,
        job: row.try_get(1)?,
        trigger: RunTrigger::parse(&trigger).unwrap_or(RunTrigger::Manual),
        fire_time: row.try_get(3)?,
        content_hash: <[u8; 32]>::try_from(hash.as_slice()).unwrap_or([0; 32]),
        node: row.try_get(5)?,
        status: status(row, 6)?,
        started_at: row.try_get(7)?,
        finished_at: row.try_get(8)?,
        duration_ms: opt_u64(row, 9)?,
        error: row.try_get(10)?,
        result: json(row, 11)?,
    })
}

fn rows_of<T>(rows: Vec<Row>, f: impl Fn(&Row) -> PgResult<T>) -> PgResult<Vec<T>> {
    rows.iter().map(f).collect()
}

/// Every job the history knows, sorted.
pub(crate) async fn job_names(c: &impl GenericClient) -> Result<Vec<String>, StoreError> {
    let rows = c
        .query("SELECT job FROM jobs UNION SELECT DISTINCT job FROM runs ORDER BY 1", &[])
        .await
        .and_then(|rows| rows_of(rows, |r| r.try_get(0)))
        .map_err(StoreError::postgres("list jobs"))?;
    Ok(rows)
}

/// Runs matching `filter`, newest first.
pub(crate) async fn runs(c: &impl GenericClient, filter: &RunFilter) -> Result<Vec<RunRow>, StoreError> {
    let status = filter.status.map(|s| s.as_str());
    let limit = i64::from(if filter.limit == 0 { DEFAULT_LIMIT } else { filter.limit });
    let args: [&(dyn ToSql + Sync); 4] = [&filter.job, &status, &filter.before, &limit];
    c.query(
        &format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE ($1::text IS NULL OR job = $1) AND ($2::text IS NULL OR status = $2) \
             AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        ),
        &args,
    )
    .await
    .and_then(|rows| rows_of(rows, run_row))
    .map_err(StoreError::postgres("list runs"))
}

/// One run with its steps and logs.
pub(crate) async fn run(c: &impl GenericClient, id: RunId) -> Result<Option<RunDetail>, StoreError> {
    let fail = StoreError::postgres;
    let run = c
        .query_opt(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"), &[&id])
        .await
        .and_then(|r| r.as_ref().map(run_row).transpose())
        .map_err(fail("read a run"))?;
    let Some(run) = run else { return Ok(None) };
    let mut retried: HashMap<String, Vec<FailedAttempt>> = HashMap::new();
    let attempts = c
        .query("SELECT path, attempt, error, at_ms FROM attempts WHERE run_id = $1 ORDER BY path, attempt", &[&id])
        .await
        .and_then(|rows| {
            rows_of(rows, |r| {
                Ok((
                    r.try_get::<_, String>(0)?,
                    FailedAttempt { attempt: u32_of(r, 1)?, error: r.try_get(2)?, at_ms: opt_u64(r, 3)?.unwrap_or(0) },
                ))
            })
        })
        .map_err(fail("read a run's attempts"))?;
    for (path, attempt) in attempts {
        retried.entry(path).or_default().push(attempt);
    }
    let steps = c
        .query(
            "SELECT run_id, path, name, kind, status, attempts, start_ms, end_ms, output, truncated, error \
             FROM steps WHERE run_id = $1 ORDER BY id",
            &[&id],
        )
        .await
        .map_err(fail("read a run's steps"))?;
    let steps = steps
        .iter()
        .map(|r| {
            let path: String = r.try_get(1)?;
            let name: String = r.try_get(2)?;
            let kind: String = r.try_get(3)?;
            Ok(StepReport {
                retried: retried.remove(&path).unwrap_or_default(),
                path: path.into(),
                name: name.into(),
                kind: NodeKind::parse_or_other(&kind),
                status: status(r, 4)?,
                attempts: u32_of(r, 5)?,
                start_ms: opt_u64(r, 6)?,
                end_ms: opt_u64(r, 7)?,
                output: json(r, 8)?,
                truncated: r.try_get(9)?,
                error: r.try_get(10)?,
            })
        })
        .collect::<PgResult<Vec<_>>>()
        .map_err(fail("read a run's steps"))?;
    let logs = c
        .query("SELECT path, at_ms, level, text FROM logs WHERE run_id = $1 ORDER BY id", &[&id])
        .await
        .and_then(|rows| {
            rows_of(rows, |r| {
                Ok(LogLine {
                    path: r.try_get(0)?,
                    at_ms: opt_u64(r, 1)?.unwrap_or(0),
                    stream: stream(r, 2)?,
                    text: r.try_get(3)?,
                })
            })
        })
        .map_err(fail("read a run's log"))?;
    Ok(Some(RunDetail { run, steps, logs }))
}

/// A run's lines matching `filter` (call inside a read transaction).
pub(crate) async fn logs(
    c: &impl GenericClient,
    id: RunId,
    filter: &LogFilter,
) -> Result<Option<Vec<NumberedLine>>, StoreError> {
    let fail = StoreError::postgres;
    let known = c.query_opt("SELECT 1 FROM runs WHERE id = $1", &[&id]).await.map_err(fail("look up a run"))?;
    if known.is_none() {
        return Ok(None);
    }
    let after = filter.after.map(|a| i64::try_from(a).unwrap_or(i64::MAX));
    let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    // `step` is a path, or its last parts: compared exactly, not with LIKE
    // (`_` is common in names and a wildcard there).
    let args: [&(dyn ToSql + Sync); 4] = [&id, &after, &filter.step, &limit];
    let lines = c
        .query(
            "SELECT seq, path, at_ms, level, text FROM logs WHERE run_id = $1 \
             AND ($2::bigint IS NULL OR seq > $2) \
             AND ($3::text IS NULL OR path = $3 OR (length(path) > length($3) \
                  AND right(path, length($3) + 1) = '/' || $3)) \
             ORDER BY id LIMIT $4",
            &args,
        )
        .await
        .and_then(|rows| {
            rows_of(rows, |r| {
                Ok(NumberedLine {
                    seq: opt_u64(r, 0)?,
                    path: r.try_get(1)?,
                    at_ms: opt_u64(r, 2)?.unwrap_or(0),
                    stream: stream(r, 3)?,
                    text: r.try_get(4)?,
                })
            })
        })
        .map_err(fail("read a run's lines"))?;
    Ok(Some(lines))
}

/// Whether a file-triggered run of this version of `job` reached its end.
pub(super) async fn one_shot_status(
    c: &impl GenericClient,
    job: &str,
    content_hash: &[u8; 32],
) -> Result<Option<RecordedStatus>, StoreError> {
    let hash = &content_hash[..];
    let row = c
        .query_opt(
            "SELECT status FROM runs WHERE job = $1 AND content_hash = $2 AND trigger = 'file' \
             AND status <> 'running' AND status <> 'queued' \
             AND NOT (status = 'cancelled' AND error IS NOT NULL AND (error = $3 OR error = $4)) \
             ORDER BY id DESC LIMIT 1",
            &[&job, &hash, &crate::store::NOT_STARTED_ERROR, &crate::store::QUEUED_AT_STOP_ERROR],
        )
        .await
        .map_err(StoreError::postgres("look up a one-shot run"))?;
    let status: Option<String> =
        row.map(|r| r.try_get(0)).transpose().map_err(StoreError::postgres("look up a one-shot run"))?;
    Ok(status.as_deref().and_then(RecordedStatus::parse))
}

/// The latest fire time of `job`'s `schedule` and `interval` runs.
pub(super) async fn last_fire(c: &impl GenericClient, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    c.query_opt(
        "SELECT fire_time FROM runs WHERE job = $1 AND trigger IN ('schedule', 'interval') \
         ORDER BY fire_time DESC LIMIT 1",
        &[&job],
    )
    .await
    .and_then(|r| r.map(|r| r.try_get(0)).transpose())
    .map_err(StoreError::postgres("look up a job's last fire"))
}

/// Every paused job with when it was paused, by job.
pub(super) async fn paused(c: &impl GenericClient) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
    c.query("SELECT job, paused_at FROM paused_jobs ORDER BY job", &[])
        .await
        .and_then(|rows| rows_of(rows, |r| Ok((r.try_get(0)?, r.try_get(1)?))))
        .map_err(StoreError::postgres("read the paused jobs"))
}

/// One run with the place of each of its facts in its event stream (call
/// inside a read transaction, so the numbers match the rows).
pub(super) async fn timeline(c: &impl GenericClient, id: RunId) -> Result<Option<RunTimeline>, StoreError> {
    let fail = StoreError::postgres;
    let Some(detail) = run(c, id).await? else { return Ok(None) };
    let (run_started, run_finished) = c
        .query_one("SELECT start_seq, end_seq FROM runs WHERE id = $1", &[&id])
        .await
        .and_then(|r| Ok((opt_u64(&r, 0)?, opt_u64(&r, 1)?)))
        .map_err(fail("read a run's event numbers"))?;
    let mut attempts: HashMap<(String, u32), (Option<u64>, Option<u64>)> = HashMap::new();
    let rows = c
        .query("SELECT path, attempt, seq, retry_in_ms FROM attempts WHERE run_id = $1", &[&id])
        .await
        .and_then(|rows| rows_of(rows, |r| Ok(((r.try_get(0)?, u32_of(r, 1)?), (opt_u64(r, 2)?, opt_u64(r, 3)?)))))
        .map_err(fail("read a run's attempt numbers"))?;
    attempts.extend(rows);
    let steps: Vec<(Option<u64>, Option<u64>)> = c
        .query("SELECT start_seq, end_seq FROM steps WHERE run_id = $1 ORDER BY id", &[&id])
        .await
        .and_then(|rows| rows_of(rows, |r| Ok((opt_u64(r, 0)?, opt_u64(r, 1)?))))
        .map_err(fail("read a run's step numbers"))?;
    let logs: Vec<Option<u64>> = c
        .query("SELECT seq FROM logs WHERE run_id = $1 ORDER BY id", &[&id])
        .await
        .and_then(|rows| rows_of(rows, |r| opt_u64(r, 0)))
        .map_err(fail("read a run's log numbers"))?;
    let steps = detail
        .steps
        .iter()
        .zip(steps)
        .map(|(step, (started, finished))| StepSeqs {
            started,
            finished,
            attempts: step
                .retried
                .iter()
                .map(|a| attempts.get(&(step.path.to_string(), a.attempt)).copied().unwrap_or((None, None)))
                .collect(),
        })
        .collect();
    Ok(Some(RunTimeline { run_started, run_finished, steps, logs, detail }))
}

/// Every job's notification state.
pub(super) async fn notify_states(c: &impl GenericClient) -> Result<Vec<(String, NotifyState)>, StoreError> {
    c.query("SELECT job, failures, told, told_at, stale, invalid FROM notify_state", &[])
        .await
        .and_then(|rows| {
            rows_of(rows, |r| {
                let failures: i64 = r.try_get(1)?;
                Ok((
                    r.try_get(0)?,
                    NotifyState {
                        failures: u32::try_from(failures).unwrap_or(u32::MAX),
                        told: r.try_get(2)?,
                        told_at: r.try_get(3)?,
                        stale: r.try_get(4)?,
                        invalid: r.try_get(5)?,
                    },
                ))
            })
        })
        .map_err(StoreError::postgres("read the notification states"))
}

/// Notifications matching `filter`, newest first.
pub(super) async fn notifications(
    c: &impl GenericClient,
    filter: &NotificationFilter,
) -> Result<Vec<Notification>, StoreError> {
    let limit = i64::from(filter.limit.unwrap_or(100));
    let args: [&(dyn ToSql + Sync); 3] = [&filter.run_id, &filter.job, &limit];
    c.query(
        "SELECT id, job, run_id, target, event, status, attempts, error, created_at, updated_at \
         FROM notifications WHERE ($1::bigint IS NULL OR run_id = $1) AND ($2::text IS NULL OR job = $2) \
         ORDER BY id DESC LIMIT $3",
        &args,
    )
    .await
    .and_then(|rows| {
        rows_of(rows, |r| {
            let status: String = r.try_get(5)?;
            let attempts: i64 = r.try_get(6)?;
            Ok(Notification {
                id: r.try_get(0)?,
                job: r.try_get(1)?,
                run_id: r.try_get(2)?,
                target: r.try_get(3)?,
                event: r.try_get(4)?,
                // The table's CHECK allows only these words.
                status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Failed),
                attempts: u32::try_from(attempts).unwrap_or(0),
                error: r.try_get(7)?,
                created_at: r.try_get(8)?,
                updated_at: r.try_get(9)?,
            })
        })
    })
    .map_err(StoreError::postgres("list notifications"))
}

/// When each job's latest successful run finished.
pub(super) async fn last_successes(c: &impl GenericClient) -> Result<LastSuccesses, StoreError> {
    c.query("SELECT job, max(coalesce(finished_at, started_at)) FROM runs WHERE status = 'succeeded' GROUP BY job", &[])
        .await
        .and_then(|rows| rows_of(rows, |r| Ok((r.try_get(0)?, r.try_get(1)?))))
        .map_err(StoreError::postgres("read the last successes"))
}
