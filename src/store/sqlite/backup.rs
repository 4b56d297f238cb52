//! `gatherd backup`: a consistent copy of the run history, taken while the
//! daemon writes to it, with SQLite's online backup API.
//!
//! The copy is made in one backup step, which reads every page inside one
//! read transaction of the source: in WAL mode that is a snapshot of the
//! last commit before the step began, and it never blocks the daemon's
//! writer (WAL readers and the writer go on together; only a checkpoint
//! cannot pass the snapshot until the copy ends). A backup in many small
//! steps would start over at every write the daemon makes in between, and
//! with a job every second might never end.
//!
//! The copy is written beside the target under a temporary name, switched
//! to `journal_mode = DELETE` (one self-contained file, no -wal to carry
//! along), checked with `PRAGMA integrity_check`, synced, and only then
//! linked to its name — a link fails rather than replace a file that
//! appeared meanwhile, so a backup never overwrites anything.
//!
//! Architecture Invariant: the source is opened read-only; a backup never
//! writes to the run history it copies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// How long the copy's read of the source waits for a lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a backup copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// Rows of the `runs` table in the copy.
    pub runs: u64,
    /// The copy's schema version (`PRAGMA user_version`).
    pub schema_version: u32,
    /// The copy's size in bytes.
    pub bytes: u64,
}

/// Why a backup was not made. The target is left as it was (no file, or
/// the one that was there).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// There is no run history to copy.
    #[error("no run history at {} (is --state right?)", path.display())]
    NoHistory {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The target exists: a backup never replaces a file.
    #[error("{} already exists: a backup never replaces a file; name a new one or move it aside", path.display())]
    Exists {
        /// The target.
        path: PathBuf,
    },
    /// SQLite refused a step of the copy.
    #[error("cannot back up the run history: {what} {}: {source}", path.display())]
    Sqlite {
        /// The step that failed.
        what: &'static str,
        /// The file it concerned.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file system refused a step of the copy.
    #[error("cannot back up the run history: {what} {}: {source}", path.display())]
    Io {
        /// The step that failed.
        what: &'static str,
        /// The file it concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The source stayed locked.
    #[error("cannot back up the run history {}: it stayed locked for {BUSY_TIMEOUT:?}", path.display())]
    Busy {
        /// The source.
        path: PathBuf,
    },
    /// The copy does not pass `PRAGMA integrity_check`: the source is damaged.
    #[error(
        "the copy of {} is damaged (integrity_check: {report}); the run history itself is, see README \"Restore\"",
        path.display()
    )]
    Damaged {
        /// The source.
        path: PathBuf,
        /// The first line `integrity_check` gave.
        report: String,
    },
}

/// Copies the run history at `from` to the new file `to`, consistently even
/// while a daemon writes to `from`. Blocking: call it off the async threads.
pub fn backup(from: &Path, to: &Path) -> Result<BackupReport, BackupError> {
    if !from.is_file() {
        return Err(BackupError::NoHistory { path: from.to_path_buf() });
    }
    if to.symlink_metadata().is_ok() {
        return Err(BackupError::Exists { path: to.to_path_buf() });
    }
    let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "backup".into());
    let partial = to.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let result = copy(from, &partial).and_then(|report| {
        // A link, not a rename: it fails if `to` appeared meanwhile.
        std::fs::hard_link(&partial, to).map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::Exists { path: to.to_path_buf() },
            _ => BackupError::Io { what: "cannot create", path: to.to_path_buf(), source },
        })?;
        Ok(report)
    });
    for leftover in ["", "-journal", "-wal", "-shm"].map(|suffix| beside(&partial, suffix)) {
        // Nothing of the partial copy outlives the backup, made or not.
        let _ = std::fs::remove_file(leftover);
    }
    if result.is_ok()
        && let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = std::fs::File::open(dir)
    {
        // The new name survives a power loss too (best effort: some file
        // systems refuse a directory's fsync).
        let _ = dir.sync_all();
    }
    result
}

/// `FILE` + `suffix`: SQLite's -journal, -wal and -shm files beside `file`.
fn beside(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The copy of `from` written to `partial`, checked and synced.
fn copy(from: &Path, partial: &Path) -> Result<BackupReport, BackupError> {
    let sqlite = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Sqlite { what, path, source }
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let source = Connection::open_with_flags(from, flags).map_err(sqlite("cannot open", from))?;
    source.busy_timeout(BUSY_TIMEOUT).map_err(sqlite("cannot open", from))?;
    let mut copy = Connection::open(partial).map_err(sqlite("cannot create", partial))?;
    {
        let backup = Backup::new(&source, &mut copy).map_err(sqlite("cannot start copying", from))?;
        // All pages in one step (-1): one read transaction, one snapshot.
        // A lock (the source's recovery) is waited out, for a while.
        let start = std::time::Instant::now();
        while backup.step(-1).map_err(sqlite("cannot copy", from))? != StepResult::Done {
            if start.elapsed() > BUSY_TIMEOUT {
                return Err(BackupError::Busy { path: from.to_path_buf() });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(source);
    let mode: String = copy
        .pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))
        .map_err(sqlite("cannot leave WAL mode in", partial))?;
    if !mode.eq_ignore_ascii_case("delete") {
        tracing::warn!(path = %partial.display(), mode, "the backup could not leave WAL mode");
    }
    let check: String =
        copy.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(sqlite("cannot check", partial))?;
    if check != "ok" {
        return Err(BackupError::Damaged { path: from.to_path_buf(), report: check });
    }
    let runs: u64 = copy
        .query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0))
        .map(|n| n.unsigned_abs())
        .map_err(sqlite("cannot count the runs in", partial))?;
    let schema_version: u32 =
        copy.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sqlite("cannot read", partial))?;
    copy.close().map_err(|(_, source)| BackupError::Sqlite { what: "cannot close", path: partial.into(), source })?;
    let file = std::fs::OpenOptions::new().write(true).open(partial).map_err(|source| BackupError::Io {
        what: "cannot open",
        path: partial.into(),
        source,
    })?;
    file.sync_all().map_err(|source| BackupError::Io { what: "cannot sync", path: partial.into(), source })?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport { runs, schema_version, bytes })
}
