//! What can go wrong in the store.

use std::path::PathBuf;

/// An error of the run store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or set up.
    #[error("cannot open the run history {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The database opened but cannot serve as the run history: it is
    /// damaged (`PRAGMA quick_check`) or cannot be written.
    #[error(
        "the run history {p} cannot be used: {reason}. To start afresh, stop gatherd and move it aside \
         (with its -wal and -shm files, if any), e.g. `mv {p} {p}.broken`: the next start creates a new one",
        p = path.display()
    )]
    Unusable {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A migration failed; the database is left at the version before it.
    #[error("cannot migrate the run history to version {version} ({name}): {source}")]
    Migrate {
        /// The version it failed to reach.
        version: u32,
        /// The migration's file name.
        name: &'static str,
        /// Why.
        source: rusqlite::Error,
    },
    /// The database is newer than this binary.
    #[error("the run history is at schema version {found}, newer than this gatherd knows ({known}): upgrade gatherd")]
    TooNew {
        /// The database's version.
        found: u32,
        /// The newest version this binary has.
        known: u32,
    },
    /// A statement failed.
    #[error("run history: {what}: {source}")]
    Sqlite {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: rusqlite::Error,
    },
    /// A write shared a transaction that could not be committed (the whole
    /// batch is lost; the reason is the commit's error).
    #[error("run history: {what}: the batch it was written in failed: {reason}")]
    Batch {
        /// What was being done.
        what: &'static str,
        /// Why the batch failed.
        reason: String,
    },
    /// The history cannot be written now (disk full, read-only, deleted):
    /// what runs record is kept in memory and written when it can be.
    #[error("the run history cannot be written now ({0}); runs' facts are kept in memory and written when it can be")]
    Unwritable(String),
    /// The writer thread could not be started.
    #[error("cannot start the run history's writer thread: {0}")]
    Spawn(std::io::Error),
    /// A reader task panicked or was cancelled.
    #[error("run history: a read failed: {0}")]
    Worker(String),
    /// A call's arguments make no sense (a bug of the caller).
    #[error("run history: {0}")]
    Invalid(String),
    /// The store was closed (or its writer stopped).
    #[error("the run history is closed")]
    Closed,
    /// The PostgreSQL run history could not be reached or set up.
    #[error("cannot open the run history at {url}: {reason}")]
    Connect {
        /// The store's URL, its password hidden.
        url: String,
        /// Why, with the server's or the driver's words.
        reason: String,
    },
    /// A PostgreSQL statement failed.
    #[error("run history: {what}: {}", postgres_reason(source))]
    Postgres {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: tokio_postgres::Error,
    },
    /// A PostgreSQL migration failed; the database is left at the version before it.
    #[error("cannot migrate the run history to version {version} ({name}): {}", postgres_reason(source))]
    MigratePostgres {
        /// The version it failed to reach.
        version: i32,
        /// The migration's file name.
        name: &'static str,
        /// Why.
        source: tokio_postgres::Error,
    },
}

/// A driver error with the server's own message, detail and hint when it
/// has one (tokio-postgres's `Display` says only "db error").
pub(crate) fn postgres_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                s.push_str(&format!("; {detail}"));
            }
            if let Some(hint) = db.hint() {
                s.push_str(&format!("; hint: {hint}"));
            }
            s
        }
        None => {
            use std::error::Error as _;
            match e.source() {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            }
        }
    }
}

impl StoreError {
    /// Wraps a SQLite error with what was being done.
    pub(crate) fn sqlite(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |source| StoreError::Sqlite { what, source }
    }

    /// Wraps a PostgreSQL error with what was being done.
    pub(crate) fn postgres(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
        move |source| StoreError::Postgres { what, source }
    }
}
