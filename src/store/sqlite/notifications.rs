//! The notifier's tables (`notify_state`, `notifications`): writes run on the
//! writer thread, reads on the reader connection, like the rest.

use chrono::{SubsecRound, Utc};
use rusqlite::{Connection, Row, params};

use super::read::{opt_time as opt_time_at, time as time_at};
use super::ts;
use crate::store::{
    DeliveryStatus, LastSuccesses, Notification, NotificationFilter, NotificationId, NotifyState, RunId, StoreError,
};

/// How many notifications are kept (the oldest go as new ones come).
pub(crate) const KEPT_NOTIFICATIONS: i64 = 10_000;

/// Every job's notification state.
pub(super) fn states(conn: &Connection) -> Result<Vec<(String, NotifyState)>, StoreError> {
    let fail = StoreError::sqlite("read the notification states");
    let mut stmt =
        conn.prepare("SELECT job, failures, told, told_at, stale, invalid FROM notify_state").map_err(fail)?;
    let rows = stmt
        .query_map([], |r| {
            let failures: i64 = r.get(1)?;
            Ok((
                r.get::<_, String>(0)?,
                NotifyState {
                    failures: u32::try_from(failures).unwrap_or(u32::MAX),
                    told: r.get(2)?,
                    told_at: opt_time_at(r, 3)?,
                    stale: r.get(4)?,
                    invalid: r.get(5)?,
                },
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(StoreError::sqlite("read the notification states"))?;
    Ok(rows)
}

/// Writes `job`'s state (a default state deletes its row).
pub(super) fn save_state(conn: &mut Connection, job: &str, state: &NotifyState) -> Result<(), StoreError> {
    let fail = StoreError::sqlite("save a notification state");
    if *state == NotifyState::default() {
        conn.prepare_cached("DELETE FROM notify_state WHERE job = ?1")
            .and_then(|mut s| s.execute([job]))
            .map_err(fail)?;
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO notify_state (job, failures, told, told_at, stale, invalid, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (job) DO UPDATE SET failures = excluded.failures, told = excluded.told, \
         told_at = excluded.told_at, stale = excluded.stale, invalid = excluded.invalid, \
         updated_at = excluded.updated_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            job,
            state.failures,
            state.told,
            state.told_at.map(ts),
            state.stale,
            state.invalid,
            ts(Utc::now())
        ])
    })
    .map_err(fail)?;
    Ok(())
}

/// Queues a notification (`pending`, no attempt yet) and returns its id;
/// the oldest beyond [`KEPT_NOTIFICATIONS`] go.
pub(super) fn begin(
    conn: &mut Connection,
    job: &str,
    run_id: Option<RunId>,
    target: &str,
    event: &str,
) -> Result<NotificationId, StoreError> {
    let fail = StoreError::sqlite;
    let now = ts(Utc::now().trunc_subsecs(6));
    conn.prepare_cached(
        "INSERT INTO notifications (job, run_id, target, event, status, attempts, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5)",
    )
    .and_then(|mut s| s.execute(params![job, run_id, target, event, now]))
    .map_err(fail("record a notification"))?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached("DELETE FROM notifications WHERE id <= ?1")
        .and_then(|mut s| s.execute([id - KEPT_NOTIFICATIONS]))
        .map_err(fail("drop old notifications"))?;
    Ok(id)
}

/// Records an attempt's outcome.
pub(super) fn update(
    conn: &mut Connection,
    id: NotificationId,
    status: DeliveryStatus,
    attempts: u32,
    error: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE notifications SET status = ?2, attempts = ?3, error = ?4, updated_at = ?5 WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![id, status.as_str(), attempts, error, ts(Utc::now())]))
    .map_err(StoreError::sqlite("record a delivery attempt"))?;
    Ok(())
}

/// Notifications matching `filter`, newest first.
pub(super) fn list(conn: &Connection, filter: &NotificationFilter) -> Result<Vec<Notification>, StoreError> {
    let limit = filter.limit.unwrap_or(100);
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, job, run_id, target, event, status, attempts, error, created_at, updated_at \
             FROM notifications WHERE (?1 IS NULL OR run_id = ?1) AND (?2 IS NULL OR job = ?2) \
             ORDER BY id DESC LIMIT ?3",
        )
        .map_err(StoreError::sqlite("list notifications"))?;
    let rows = stmt
        .query_map(params![filter.run_id, filter.job, limit], notification)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(StoreError::sqlite("list notifications"))?;
    Ok(rows)
}

fn notification(r: &Row<'_>) -> rusqlite::Result<Notification> {
    let status: String = r.get(5)?;
    let attempts: i64 = r.get(6)?;
    Ok(Notification {
        id: r.get(0)?,
        job: r.get(1)?,
        run_id: r.get(2)?,
        target: r.get(3)?,
        event: r.get(4)?,
        // The table's CHECK allows only these words.
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Failed),
        attempts: u32::try_from(attempts).unwrap_or(0),
        error: r.get(7)?,
        created_at: time_at(r, 8)?,
        updated_at: time_at(r, 9)?,
    })
}

/// When each job's latest successful run finished.
pub(super) fn last_successes(conn: &Connection) -> Result<LastSuccesses, StoreError> {
    let mut stmt = conn
        .prepare("SELECT job, max(coalesce(finished_at, started_at)) FROM runs WHERE status = 'succeeded' GROUP BY job")
        .map_err(StoreError::sqlite("read the last successes"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, time_at(r, 1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(StoreError::sqlite("read the last successes"))?;
    Ok(rows)
}
