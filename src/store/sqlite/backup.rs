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
//! The copy is written beside the target under a temporary name, a file
//! this process makes itself (`O_EXCL|O_NOFOLLOW`, mode 0600: it holds
//! every line jobs printed) under an unguessable name, which SQLite then
//! opens with `SQLITE_OPEN_NOFOLLOW` — so a link planted in a shared folder
//! such as /tmp is never written through. It is switched
//! to `journal_mode = DELETE` (one self-contained file, no -wal to carry
//! along), checked with `PRAGMA integrity_check`, synced, and only then
//! linked to its name — a link fails rather than replace a file that
//! appeared meanwhile, so a backup never overwrites anything.
//!
//! Architecture Invariant: the source is opened read-only; a backup never
//! writes to the run history it copies.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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
    backup_named(from, to, partial_names(to))
}

/// How many temporary names a backup tries before it gives up.
const PARTIAL_ATTEMPTS: usize = 16;

/// Unguessable temporary names for the copy of `to`:
/// `.NAME.partial-PID-RANDOM` (RANDOM from std's per-process random hash
/// keys, so no new crate).
fn partial_names(to: &Path) -> impl Iterator<Item = String> {
    use std::hash::{BuildHasher, Hasher};
    let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "backup".into());
    let pid = std::process::id();
    (0..PARTIAL_ATTEMPTS).map(move |i| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_usize(i);
        format!(".{name}.partial-{pid}-{:016x}", hasher.finish())
    })
}

/// [`backup`], with the temporary names to try (tests plant links at them).
fn backup_named(from: &Path, to: &Path, names: impl Iterator<Item = String>) -> Result<BackupReport, BackupError> {
    if !from.is_file() {
        return Err(BackupError::NoHistory { path: from.to_path_buf() });
    }
    if to.symlink_metadata().is_ok() {
        return Err(BackupError::Exists { path: to.to_path_buf() });
    }
    // The folder's own links are the user's choice and resolved once here;
    // below it nothing is a link, so SQLite may be told to follow none.
    let dir = to.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).map_err(|source| BackupError::Io {
        what: "cannot find the folder of",
        path: to.to_path_buf(),
        source,
    })?;
    let (partial, file) = create_partial(&dir, names)?;
    let result = copy(from, &partial, &file).and_then(|report| {
        // The name still holds the file made above (not one put in its place).
        let ours = |m: &std::fs::Metadata| (m.dev(), m.ino());
        let same = match (std::fs::symlink_metadata(&partial), file.metadata()) {
            (Ok(named), Ok(made)) => ours(&named) == ours(&made),
            _ => false,
        };
        if !same {
            return Err(BackupError::Io {
                what: "the copy was replaced while it was written:",
                path: partial.clone(),
                source: std::io::Error::other("another file now has its name"),
            });
        }
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
        && let Ok(dir) = std::fs::File::open(&dir)
    {
        // The new name survives a power loss too (best effort: some file
        // systems refuse a directory's fsync).
        let _ = dir.sync_all();
    }
    result
}

/// A new, empty file in `dir` under the first of `names` that is free,
/// made by this process alone (`O_EXCL`, never through a link) and readable
/// by its owner only: the copy holds every line jobs printed.
fn create_partial(dir: &Path, names: impl Iterator<Item = String>) -> Result<(PathBuf, std::fs::File), BackupError> {
    for name in names {
        let path = dir.join(name);
        let created = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        match created {
            Ok(file) => return Ok((path, file)),
            // Taken (by a file or a planted link): the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(BackupError::Io { what: "cannot create", path, source }),
        }
    }
    Err(BackupError::Io {
        what: "cannot create a temporary file in",
        path: dir.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "every name tried was taken"),
    })
}

/// `FILE` + `suffix`: SQLite's -journal, -wal and -shm files beside `file`.
fn beside(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The copy of `from` written to `partial` (the new, empty `file`), checked
/// and synced.
fn copy(from: &Path, partial: &Path, file: &std::fs::File) -> Result<BackupReport, BackupError> {
    let sqlite = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Sqlite { what, path, source }
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let source = Connection::open_with_flags(from, flags).map_err(sqlite("cannot open", from))?;
    source.busy_timeout(BUSY_TIMEOUT).map_err(sqlite("cannot open", from))?;
    // The file made by `create_partial`, never a link (nor a new file).
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let mut copy = Connection::open_with_flags(partial, flags).map_err(sqlite("cannot open", partial))?;
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
    file.sync_all().map_err(|source| BackupError::Io { what: "cannot sync", path: partial.into(), source })?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport { runs, schema_version, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run history with one run, in WAL mode like the daemon's.
    fn history(dir: &Path) -> PathBuf {
        let path = dir.join("gatherd.db");
        let conn = Connection::open(&path).expect("create a history");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT);
             INSERT INTO runs (status) VALUES ('succeeded');",
        )
        .expect("fill the history");
        path
    }

    /// Symlinks planted (by another user of a shared folder such as /tmp)
    /// at the temporary names a backup used to take — `.NAME.partial-PID`
    /// and SQLite's files beside it — are not followed: the file they point
    /// to is untouched, and the backup is made all the same.
    #[test]
    fn a_backup_does_not_follow_links_planted_at_its_temporary_names() {
        let state = tempfile::tempdir().expect("state dir");
        let from = history(state.path());
        let shared = tempfile::tempdir().expect("shared dir");
        let victim = state.path().join("victim");
        std::fs::write(&victim, "untouched").expect("write");
        let guessed = shared.path().join(format!(".b.db.partial-{}", std::process::id()));
        for suffix in ["", "-journal", "-wal", "-shm"] {
            std::os::unix::fs::symlink(&victim, beside(&guessed, suffix)).expect("plant a link");
        }
        let to = shared.path().join("b.db");
        let report = backup(&from, &to).expect("the backup is made under another name");
        assert_eq!(report.runs, 1);
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "untouched", "the backup wrote through a link");
        assert!(!to.symlink_metadata().expect("the backup exists").file_type().is_symlink());
    }

    /// A link planted at the very name the backup tries first (and at
    /// SQLite's files beside it) is not followed nor removed: the backup
    /// takes the next name, and leaves no temporary file behind.
    #[test]
    fn a_taken_temporary_name_is_skipped_without_following_it() {
        use std::os::unix::fs::PermissionsExt;
        let state = tempfile::tempdir().expect("state dir");
        let from = history(state.path());
        let shared = tempfile::tempdir().expect("shared dir");
        let victim = state.path().join("victim");
        std::fs::write(&victim, "untouched").expect("write");
        let planted = shared.path().join(".b.db.planted");
        for suffix in ["", "-journal", "-wal", "-shm"] {
            std::os::unix::fs::symlink(&victim, beside(&planted, suffix)).expect("plant a link");
        }
        let to = shared.path().join("b.db");
        let names = [".b.db.planted", ".b.db.free"].map(String::from).into_iter();
        let report = backup_named(&from, &to, names).expect("the backup is made under the next name");
        assert_eq!(report.runs, 1);
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "untouched", "the backup wrote through a link");
        assert!(planted.symlink_metadata().expect("the planted link").file_type().is_symlink());
        assert!(!shared.path().join(".b.db.free").exists(), "a temporary file was left behind");
        let mode = std::fs::metadata(&to).expect("the backup").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "the backup's mode is {mode:o}");
        // Every name taken: a clear refusal, and still nothing written.
        let again = shared.path().join("c.db");
        let err =
            backup_named(&from, &again, [".b.db.planted"].map(String::from).into_iter()).expect_err("no free name");
        assert!(err.to_string().contains("every name tried was taken"), "{err}");
        assert!(!again.exists());
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "untouched");
    }
}
