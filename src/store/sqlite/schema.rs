//! Opening the SQLite file and bringing its schema up to date.
//!
//! Migrations are SQL files under `src/store/migrations/sqlite/`, embedded in
//! the binary; the database's `PRAGMA user_version` is the number applied. Each
//! runs in its own `BEGIN IMMEDIATE` transaction that first re-reads the
//! version, so two processes opening a fresh file cannot both apply one.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::store::StoreError;

/// The migrations, in order: (file name, SQL). Never edit a released one; add
/// the next.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init.sql", include_str!("../migrations/sqlite/0001_init.sql")),
    ("0002_event_seq.sql", include_str!("../migrations/sqlite/0002_event_seq.sql")),
    ("0003_steps_check.sql", include_str!("../migrations/sqlite/0003_steps_check.sql")),
    ("0004_runs_queued.sql", include_str!("../migrations/sqlite/0004_runs_queued.sql")),
    ("0005_paused_jobs.sql", include_str!("../migrations/sqlite/0005_paused_jobs.sql")),
    ("0006_notifications.sql", include_str!("../migrations/sqlite/0006_notifications.sql")),
];

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating it if needed) the write connection: WAL, a busy timeout,
/// foreign keys on, `synchronous = NORMAL` (with WAL: a commit survives a crash
/// of the process; a power loss may lose the last commits, never corrupt).
pub(super) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "the run history could not switch to WAL mode");
    }
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", true).map_err(open_err)?;
    Ok(conn)
}

/// Opens a read-only connection for queries, beside the writer (WAL lets it
/// read while the writer writes).
pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    Ok(conn)
}

/// Applies the migrations the database lacks, with foreign keys off (SQLite's
/// way to rebuild a table others refer to: dropping the old one must not
/// cascade into its children), each checked with `PRAGMA foreign_key_check`
/// before it commits; foreign keys are on again afterwards.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // A no-op inside a transaction: set between them.
    conn.pragma_update(None, "foreign_keys", false).map_err(StoreError::sqlite("migrate"))?;
    let migrated = migrate_all(conn);
    conn.pragma_update(None, "foreign_keys", true).map_err(StoreError::sqlite("migrate"))?;
    migrated
}

fn migrate_all(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as u32;
    loop {
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite("migrate"))?;
        let version: u32 =
            tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(StoreError::sqlite("migrate"))?;
        if version > known {
            return Err(StoreError::TooNew { found: version, known });
        }
        let Some(&(name, sql)) = MIGRATIONS.get(version as usize) else { return Ok(()) };
        let next = version + 1;
        let fail = |source| StoreError::Migrate { version: next, name, source };
        tx.execute_batch(sql).map_err(fail)?;
        let broken: Option<String> =
            tx.query_row("PRAGMA foreign_key_check", [], |r| r.get(0)).optional().map_err(fail)?;
        if let Some(table) = broken {
            let code = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY);
            let source =
                rusqlite::Error::SqliteFailure(code, Some(format!("a row of {table} refers to a row that is gone")));
            return Err(StoreError::Migrate { version: next, name, source });
        }
        tx.pragma_update(None, "user_version", next).map_err(fail)?;
        tx.commit().map_err(fail)?;
        tracing::debug!(version = next, name, "run history migrated");
    }
}

/// Checks that the run history at `path` (open on `conn`, the write
/// connection, migrated) can be used: `PRAGMA quick_check` finds no damage,
/// and a write goes through (`user_version` set to itself in a transaction
/// rolled back), so a read-only or damaged file stops the start instead of
/// a daemon that records nothing. `quick_check` reads the whole file: a
/// start costs about one read of the history.
pub(super) fn check(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let unusable = |reason: String| StoreError::Unusable { path: path.to_path_buf(), reason };
    let damage: Vec<String> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .map_err(|e| unusable(format!("it is damaged ({e})")))?;
    if damage != ["ok"] {
        return Err(unusable(format!("it is damaged ({})", damage.join("; ").replace('\n', " "))));
    }
    let write = |conn: &mut Connection| -> rusqlite::Result<()> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        tx.pragma_update(None, "user_version", version)?;
        tx.rollback()
    };
    write(conn).map_err(|e| unusable(format!("it cannot be written ({e})")))
}
