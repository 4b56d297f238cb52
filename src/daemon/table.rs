//! The job table's rows, and reading a job file for it: the content hash (to
//! tell a real change from a re-save) and the loaded job or its diagnostics.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_util::time::delay_queue;

use crate::job::Job;
use crate::load::{self, LoadError, MAX_FILE_BYTES};
use crate::schedule::Schedule;
use crate::store::RunTrigger;

/// A file's content hash (SHA-256): equal hashes mean an identical re-save.
pub type Hash = [u8; 32];

/// A job file as read from disk.
pub struct Loaded {
    /// Its content hash.
    pub hash: Hash,
    /// The job, or why the file is not a valid job.
    pub job: Result<Job, LoadError>,
}

/// Why a job file was not read.
#[derive(Debug)]
pub enum Unread {
    /// It is not there (any more).
    Gone,
    /// A passing shortage (no file descriptors or memory left): read it
    /// again in a moment; never forgotten.
    Transient(std::io::Error),
    /// It is there, but cannot be a job file: why (a symlink loop or to
    /// nothing, no permission, a FIFO, a symlink out of the folder as root).
    Unreadable(String),
}

/// Reads and loads one job file. Blocking: call it on a blocking thread.
/// With `confine` (the canonical jobs folder, when the daemon runs as
/// root), a path that leads outside it is refused before it is opened. A
/// FIFO is never waited on: the file is opened without blocking and must be
/// a regular file.
pub fn read(path: &Path, confine: Option<&Path>) -> Result<Loaded, Unread> {
    #[cfg(test)]
    if failpoint::take(path) {
        return Err(Unread::Transient(std::io::Error::from_raw_os_error(libc::EMFILE)));
    }
    let unread = |e: std::io::Error| {
        if crate::watch::is_transient(&e) {
            Unread::Transient(e)
        } else if e.kind() == std::io::ErrorKind::NotFound && std::fs::symlink_metadata(path).is_err() {
            Unread::Gone
        } else {
            Unread::Unreadable(load::unreadable(&e))
        }
    };
    if let Some(root) = confine
        && load::leads_outside(root, path)
    {
        return Err(Unread::Unreadable(load::OUTSIDE.into()));
    }
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(unread)?;
    let meta = file.metadata().map_err(unread)?;
    if !meta.is_file() {
        return Err(Unread::Unreadable(load::NOT_A_FILE.into()));
    }
    // The file is opened once and its owner taken from the open file, so
    // the ownership check (`load::load_to_run`) is about what is read.
    if meta.len() > MAX_FILE_BYTES {
        // Too large to hash cheaply or to load: the loader says why, and the
        // size stands in for the hash so a change of size is a change.
        let mut hash = [0; 32];
        hash[..8].copy_from_slice(&meta.len().to_le_bytes());
        return Ok(Loaded { hash, job: load::load_file(path) });
    }
    let mut bytes = Vec::new();
    (&file).take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(unread)?;
    let hash: Hash = Sha256::digest(&bytes).into();
    let job = match std::str::from_utf8(&bytes) {
        Ok(text) => load::load_to_run(path, text, &meta),
        // The loader's message names the offending byte and line.
        Err(_) => load::load_file(path),
    };
    Ok(Loaded { hash, job })
}

/// A failpoint for the supervisor's tests: the next read of a path fails
/// with `EMFILE` (out of file descriptors), as under fd exhaustion.
#[cfg(test)]
pub mod failpoint {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    /// The next read of `path` fails with `EMFILE`.
    pub fn fail_once(path: &Path) {
        PATHS.lock().unwrap().push(path.to_path_buf());
    }

    pub(super) fn take(path: &Path) -> bool {
        let mut paths = PATHS.lock().unwrap();
        let found = paths.iter().position(|p| p == path);
        found.map(|i| paths.remove(i)).is_some()
    }
}

/// One job file the daemon knows about.
#[derive(Default)]
pub struct Entry {
    /// The last valid version; it keeps running on its schedule while a newer
    /// version of the file is invalid.
    pub job: Option<Arc<Job>>,
    /// The content hash of the file as last read.
    pub hash: Option<Hash>,
    /// The content hash of `job`, the version that runs.
    pub valid_hash: Option<Hash>,
    /// Why the file as last read is invalid.
    pub invalid: Option<LoadError>,
    /// Why it could not be read at all, when that is what `invalid` says
    /// (so the same refusal is not reported again on every event).
    pub refused: Option<String>,
    /// The content hash of the one-shot version that last ran.
    pub last_run_hash: Option<Hash>,
    /// Its schedule, for `schedule` and `every` jobs.
    pub schedule: Option<Schedule>,
    /// The nominal time of the next scheduled fire (before jitter).
    pub slot: Option<DateTime<Utc>>,
    /// Its timer in the supervisor's delay queue.
    pub timer: Option<delay_queue::Key>,
    /// Its runs in flight: their tasks' ids (the supervisor's `in_flight`
    /// has the rest).
    pub running: Vec<tokio::task::Id>,
    /// Its fires waiting in admission for a slot (kept here so the overlap
    /// check need not search admission's queue, which a burst makes long).
    pub waiting: usize,
    /// A fire kept for when the current run ends (`overlap = "queue"`), with
    /// its nominal time.
    pub queued: Option<(RunTrigger, DateTime<Utc>)>,
    /// Missed fires still to catch up, oldest first, each started when the
    /// previous run ends.
    pub catch_up: std::collections::VecDeque<DateTime<Utc>>,
    /// The trigger of those fires.
    pub catch_up_cause: Option<RunTrigger>,
}
