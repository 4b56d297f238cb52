//! The job table's rows, and reading a job file for it: the content hash (to
//! tell a real change from a re-save) and the loaded job or its diagnostics.

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

/// Reads and loads one job file. Blocking: call it on a blocking thread.
/// `Err` only when the file cannot be read at all (gone, unreadable).
pub fn read(path: &Path) -> std::io::Result<Loaded> {
    // The file is opened once and its owner taken from the open file, so
    // the ownership check (`load::load_to_run`) is about what is read.
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if meta.len() > MAX_FILE_BYTES {
        // Too large to hash cheaply or to load: the loader says why, and the
        // size stands in for the hash so a change of size is a change.
        let mut hash = [0; 32];
        hash[..8].copy_from_slice(&meta.len().to_le_bytes());
        return Ok(Loaded { hash, job: load::load_file(path) });
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)?;
    let hash: Hash = Sha256::digest(&bytes).into();
    let job = match std::str::from_utf8(&bytes) {
        Ok(text) => load::load_to_run(path, text, &meta),
        // The loader's message names the offending byte and line.
        Err(_) => load::load_file(path),
    };
    Ok(Loaded { hash, job })
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
