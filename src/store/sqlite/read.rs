//! Queries, and turning rows back into values. Run on the reader connection
//! (or, for `recover`, inside the writer's transaction).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::types::{FromSql, FromSqlError, Type, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};
use serde_json::Value;

use crate::exec::{FailedAttempt, LogLine, NodeKind, StepReport, Stream};
use crate::store::json::read_stored;
use crate::store::{
    LogFilter, NumberedLine, RecordedStatus, RunDetail, RunFilter, RunId, RunRow, RunTimeline, RunTrigger, StepSeqs,
    StoreError,
};

/// The columns [`run_row`] reads, in its order.
pub(super) const RUN_COLUMNS: &str =
    "id, job, trigger, fire_time, content_hash, node, status, started_at, finished_at, duration_ms, error, result";

/// How many runs a filter without a limit returns.
const DEFAULT_LIMIT: u32 = 50;

fn bad(idx: usize, detail: impl Into<String>) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, detail.into().into())
}

pub(super) fn time(row: &Row<'_>, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let s: String = row.get(idx)?;
    DateTime::parse_from_rfc3339(&s).map(|t| t.with_timezone(&Utc)).map_err(|e| bad(idx, format!("time {s:?}: {e}")))
}

pub(super) fn opt_time(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get_ref(idx)? {
        ValueRef::Null => Ok(None),
        _ => time(row, idx).map(Some),
    }
}

fn status(row: &Row<'_>, idx: usize) -> rusqlite::Result<RecordedStatus> {
    let s: String = row.get(idx)?;
    RecordedStatus::parse(&s).ok_or_else(|| bad(idx, format!("status {s:?}")))
}

fn stream(row: &Row<'_>, idx: usize) -> rusqlite::Result<Stream> {
    let s: String = row.get(idx)?;
    Stream::parse(&s).ok_or_else(|| bad(idx, format!("output stream {s:?}")))
}

/// A stored JSON value; whatever the text, a value (see `store::json`).
fn json(row: &Row<'_>, idx: usize) -> rusqlite::Result<Value> {
    let s: Option<String> = row.get(idx)?;
    Ok(s.map_or(Value::Null, |s| read_stored(&s)))
}

fn opt_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<u64>> {
    let v: Option<i64> = row.get(idx)?;
    Ok(v.map(|v| u64::try_from(v).unwrap_or(0)))
}

/// A SHA-256 stored as a 32-byte blob.
struct Hash([u8; 32]);

impl FromSql for Hash {
    fn column_result(value: ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let bytes = value.as_blob()?;
        <[u8; 32]>::try_from(bytes)
            .map(Hash)
            .map_err(|_| FromSqlError::InvalidBlobSize { expected_size: 32, blob_size: bytes.len() })
    }
}

/// A run row from [`RUN_COLUMNS`].
pub(super) fn run_row(row: &Row<'_>) -> rusqlite::Result<RunRow> {
    let trigger: String = row.get(2)?;
    Ok(RunRow {
        id: row.get(0)?,
        job: row.get(1)?,
        trigger: RunTrigger::parse(&trigger).ok_or_else(|| bad(2, format!("trigger {trigger:?}")))?,
        fire_time: time(row, 3)?,
        content_hash: row.get::<_, Hash>(4)?.0,
        node: row.get(5)?,
        status: status(row, 6)?,
        started_at: time(row, 7)?,
        finished_at: opt_time(row, 8)?,
        duration_ms: opt_u64(row, 9)?,
        error: row.get(10)?,
        result: json(row, 11)?,
    })
}

/// Every job the history knows: each job file the daemon has seen and each
/// job with runs recorded (a removed job's history stays), sorted.
pub(super) fn job_names(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let what = StoreError::sqlite("list jobs");
    let mut stmt =
        conn.prepare_cached("SELECT job FROM jobs UNION SELECT DISTINCT job FROM runs ORDER BY 1").map_err(what)?;
    let rows = stmt.query_map([], |row| row.get(0)).map_err(StoreError::sqlite("list jobs"))?;
    rows.collect::<rusqlite::Result<Vec<String>>>().map_err(StoreError::sqlite("list jobs"))
}

/// Runs matching `filter`, newest first.
pub(super) fn runs(conn: &Connection, filter: &RunFilter) -> Result<Vec<RunRow>, StoreError> {
    let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(job) = &filter.job {
        args.push(Box::new(job.clone()));
        sql.push_str(&format!(" AND job = ?{}", args.len()));
    }
    if let Some(status) = filter.status {
        args.push(Box::new(status.as_str()));
        sql.push_str(&format!(" AND status = ?{}", args.len()));
    }
    if let Some(before) = filter.before {
        args.push(Box::new(before));
        sql.push_str(&format!(" AND id < ?{}", args.len()));
    }
    let limit = if filter.limit == 0 { DEFAULT_LIMIT } else { filter.limit };
    args.push(Box::new(limit));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
    let what = StoreError::sqlite("list runs");
    let mut stmt = conn.prepare_cached(&sql).map_err(StoreError::sqlite("list runs"))?;
    let rows =
        stmt.query_map(rusqlite::params_from_iter(args.iter()), run_row).map_err(StoreError::sqlite("list runs"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(what)
}

/// One run with its steps and logs.
pub(super) fn run(conn: &Connection, id: RunId) -> Result<Option<RunDetail>, StoreError> {
    let read = |what| move |source| StoreError::Sqlite { what, source };
    let run = conn
        .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], run_row).optional())
        .map_err(read("read a run"))?;
    let Some(run) = run else { return Ok(None) };

    let mut retried: HashMap<String, Vec<FailedAttempt>> = HashMap::new();
    conn.prepare_cached("SELECT path, attempt, error, at_ms FROM attempts WHERE run_id = ?1 ORDER BY path, attempt")
        .and_then(|mut s| {
            let rows = s.query_map([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    FailedAttempt { attempt: r.get(1)?, error: r.get(2)?, at_ms: opt_u64(r, 3)?.unwrap_or(0) },
                ))
            })?;
            for row in rows {
                let (path, attempt) = row?;
                retried.entry(path).or_default().push(attempt);
            }
            Ok(())
        })
        .map_err(read("read a run's attempts"))?;

    let steps = conn
        .prepare_cached(
            "SELECT run_id, path, name, kind, status, attempts, start_ms, end_ms, output, truncated, error \
             FROM steps WHERE run_id = ?1 ORDER BY id",
        )
        .and_then(|mut s| {
            s.query_map([id], |r| {
                let path: String = r.get(1)?;
                let name: String = r.get(2)?;
                let kind: String = r.get(3)?;
                Ok(StepReport {
                    retried: retried.remove(&path).unwrap_or_default(),
                    path: path.into(),
                    name: name.into(),
                    kind: NodeKind::parse_or_other(&kind),
                    status: status(r, 4)?,
                    attempts: r.get(5)?,
                    start_ms: opt_u64(r, 6)?,
                    end_ms: opt_u64(r, 7)?,
                    output: json(r, 8)?,
                    truncated: r.get(9)?,
                    error: r.get(10)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(read("read a run's steps"))?;

    let logs = conn
        .prepare_cached("SELECT path, at_ms, level, text FROM logs WHERE run_id = ?1 ORDER BY id")
        .and_then(|mut s| {
            s.query_map([id], |r| {
                Ok(LogLine {
                    path: r.get(0)?,
                    at_ms: opt_u64(r, 1)?.unwrap_or(0),
                    stream: stream(r, 2)?,
                    text: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(read("read a run's log"))?;

    Ok(Some(RunDetail { run, steps, logs }))
}

/// A run's lines matching `filter`, in the order written (`id`, which is
/// the order of their numbers), at most `filter.limit` of them (bounded in
/// the query, not after it); `None` if there is no such run. One read
/// transaction, so a run seen has all its lines up to then.
pub(super) fn logs(conn: &Connection, id: RunId, filter: &LogFilter) -> Result<Option<Vec<NumberedLine>>, StoreError> {
    let read = |what| move |source| StoreError::Sqlite { what, source };
    let tx = conn.unchecked_transaction().map_err(read("read a run's lines"))?;
    let known = tx
        .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")
        .and_then(|mut s| s.exists([id]))
        .map_err(read("look up a run"))?;
    if !known {
        return Ok(None);
    }
    // `step` is a path, or its last parts: compared in SQL, not with LIKE
    // (`_` is common in names and a wildcard there).
    let after = filter.after.map(|a| i64::try_from(a).unwrap_or(i64::MAX));
    let lines = tx
        .prepare_cached(
            "SELECT seq, path, at_ms, level, text FROM logs WHERE run_id = ?1 \
             AND (?2 IS NULL OR seq > ?2) \
             AND (?3 IS NULL OR path = ?3 OR (length(path) > length(?3) \
                  AND substr(path, length(path) - length(?3)) = '/' || ?3)) \
             ORDER BY id LIMIT ?4",
        )
        .and_then(|mut s| {
            // A negative LIMIT is none in SQLite.
            let limit = filter.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
            s.query_map(params![id, after, filter.step, limit], |r| {
                Ok(NumberedLine {
                    seq: opt_u64(r, 0)?,
                    path: r.get(1)?,
                    at_ms: opt_u64(r, 2)?.unwrap_or(0),
                    stream: stream(r, 3)?,
                    text: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(read("read a run's lines"))?;
    Ok(Some(lines))
}

/// Whether a file-triggered run of this version of `job` reached its end.
pub(super) fn one_shot_status(
    conn: &Connection,
    job: &str,
    content_hash: &[u8; 32],
) -> Result<Option<RecordedStatus>, StoreError> {
    let status: Option<String> = conn
        .prepare_cached(
            "SELECT status FROM runs WHERE job = ?1 AND content_hash = ?2 AND trigger = 'file' \
             AND status <> 'running' AND status <> 'queued' \
             AND NOT (status = 'cancelled' AND (error IS ?3 OR error IS ?4)) ORDER BY id DESC LIMIT 1",
        )
        .and_then(|mut s| {
            let not_started = (crate::store::NOT_STARTED_ERROR, crate::store::QUEUED_AT_STOP_ERROR);
            s.query_row(params![job, &content_hash[..], not_started.0, not_started.1], |r| r.get(0)).optional()
        })
        .map_err(StoreError::sqlite("look up a one-shot run"))?;
    Ok(status.as_deref().and_then(RecordedStatus::parse))
}

/// The latest fire time of `job`'s `schedule` and `interval` runs, any status.
pub(super) fn last_fire(conn: &Connection, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    conn.prepare_cached(
        "SELECT fire_time FROM runs WHERE job = ?1 AND trigger IN ('schedule', 'interval') \
         ORDER BY fire_time DESC LIMIT 1",
    )
    .and_then(|mut s| s.query_row([job], |r| time(r, 0)).optional())
    .map_err(StoreError::sqlite("look up a job's last fire"))
}

/// Every paused job with when it was paused, by job.
pub(super) fn paused(conn: &Connection) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
    conn.prepare_cached("SELECT job, paused_at FROM paused_jobs ORDER BY job")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, time(r, 1)?)))?.collect())
        .map_err(StoreError::sqlite("read the paused jobs"))
}

/// One run with the place of each of its facts in its event stream; one read
/// transaction, so the numbers match the rows.
pub(super) fn timeline(conn: &Connection, id: RunId) -> Result<Option<RunTimeline>, StoreError> {
    let read = |what| move |source| StoreError::Sqlite { what, source };
    let tx = conn.unchecked_transaction().map_err(read("read a run's events"))?;
    let Some(detail) = run(&tx, id)? else { return Ok(None) };
    let (run_started, run_finished) = tx
        .prepare_cached("SELECT start_seq, end_seq FROM runs WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| Ok((opt_u64(r, 0)?, opt_u64(r, 1)?))))
        .map_err(read("read a run's event numbers"))?;
    let mut attempts: HashMap<(String, u32), (Option<u64>, Option<u64>)> = HashMap::new();
    tx.prepare_cached("SELECT path, attempt, seq, retry_in_ms FROM attempts WHERE run_id = ?1")
        .and_then(|mut s| {
            let rows = s.query_map([id], |r| Ok(((r.get(0)?, r.get(1)?), (opt_u64(r, 2)?, opt_u64(r, 3)?))))?;
            for row in rows {
                let (key, seqs) = row?;
                attempts.insert(key, seqs);
            }
            Ok(())
        })
        .map_err(read("read a run's attempt numbers"))?;
    let steps: Vec<(Option<u64>, Option<u64>)> = tx
        .prepare_cached("SELECT start_seq, end_seq FROM steps WHERE run_id = ?1 ORDER BY id")
        .and_then(|mut s| s.query_map([id], |r| Ok((opt_u64(r, 0)?, opt_u64(r, 1)?)))?.collect())
        .map_err(read("read a run's step numbers"))?;
    let logs: Vec<Option<u64>> = tx
        .prepare_cached("SELECT seq FROM logs WHERE run_id = ?1 ORDER BY id")
        .and_then(|mut s| s.query_map([id], |r| opt_u64(r, 0))?.collect())
        .map_err(read("read a run's log numbers"))?;
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
