//! The job table's rows, and reading a job file for it: the content hash (to
//! tell a real change from a re-save) and the loaded job or its diagnostics.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_util::time::delay_queue;

use crate::api::SOURCE_LIMIT;
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
    /// Its text, when it is UTF-8 and at most [`SOURCE_LIMIT`] bytes (the
    /// dashboard shows it).
    pub source: Option<Arc<str>>,
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
/// root), a path that leads outside it is refused: before it is opened, so
/// a link out is not even opened, and again on the file opened (its real
/// path, [`opened_within`]), so a link re-pointed in between is refused too.
/// A FIFO is never waited on: the file is opened without blocking and must
/// be a regular file. The file is opened once: every diagnostic, the too
/// large and not UTF-8 ones included, is about what was read.
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
    #[cfg(test)]
    failpoint::run(path, failpoint::Stage::BeforeOpen);
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(unread)?;
    if let Some(root) = confine {
        opened_within(&file, root)?;
    }
    let meta = file.metadata().map_err(unread)?;
    if !meta.is_file() {
        return Err(Unread::Unreadable(load::NOT_A_FILE.into()));
    }
    #[cfg(test)]
    failpoint::run(path, failpoint::Stage::Opened);
    // The file is opened once and its owner taken from the open file, so
    // the ownership check (`load::load_to_run`) is about what is read.
    if meta.len() > MAX_FILE_BYTES {
        // Too large to hash cheaply or to load: the loader says why, and the
        // size stands in for the hash so a change of size is a change.
        let mut hash = [0; 32];
        hash[..8].copy_from_slice(&meta.len().to_le_bytes());
        return Ok(Loaded { hash, job: Err(load::too_large(path, meta.len())), source: None });
    }
    let mut bytes = Vec::new();
    (&file).take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(unread)?;
    let hash: Hash = Sha256::digest(&bytes).into();
    let (job, source) = match String::from_utf8(bytes) {
        Ok(text) => {
            let job = load::load_to_run(path, &text, &meta);
            (job, (text.len() <= SOURCE_LIMIT).then(|| Arc::from(text)))
        }
        // The loader's message names the offending byte and line.
        Err(e) => (Err(load::not_utf8(path, e)), None),
    };
    Ok(Loaded { hash, job, source })
}

/// Refuses an open `file` whose real path — the kernel's, for the
/// descriptor (`/proc/self/fd/N`), not the path's as it is now — is outside
/// `root` (canonical). Checking the path and then opening it would let a
/// link re-pointed in between (`x.toml -> /etc/shadow`) be read as root.
fn opened_within(file: &std::fs::File, root: &Path) -> Result<(), Unread> {
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(|e| {
        Unread::Unreadable(format!("cannot tell whether it leads outside the folder (/proc/self/fd): {e}"))
    })?;
    if real.starts_with(root) { Ok(()) } else { Err(Unread::Unreadable(load::OUTSIDE.into())) }
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

    /// Where in [`super::read`] a hook runs.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Stage {
        /// After the path was checked, before it is opened.
        BeforeOpen,
        /// After it was opened and found a regular file, before it is read.
        Opened,
    }

    type Hook = Box<dyn FnOnce() + Send>;
    static HOOKS: Mutex<Vec<(PathBuf, Stage, Hook)>> = Mutex::new(Vec::new());

    /// The next read of `path` calls `hook` at `stage`: a test swaps the
    /// file there, as a race with another writer would.
    pub fn on(path: &Path, stage: Stage, hook: impl FnOnce() + Send + 'static) {
        HOOKS.lock().unwrap().push((path.to_path_buf(), stage, Box::new(hook)));
    }

    pub(super) fn run(path: &Path, stage: Stage) {
        let hook = {
            let mut hooks = HOOKS.lock().unwrap();
            let found = hooks.iter().position(|(p, s, _)| p == path && *s == stage);
            found.map(|i| hooks.remove(i).2)
        };
        if let Some(hook) = hook {
            hook();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::failpoint::{Stage, on};
    use super::{Unread, read};
    use crate::load::{LoadError, OUTSIDE};

    const JOB: &str = "[[step]]\nname = \"a\"\nexec = [\"true\"]\n";

    /// The job `read` gives for `path`, or why it is unread.
    fn job(path: &Path, confine: Option<&Path>) -> Result<Result<crate::job::Job, LoadError>, String> {
        match read(path, confine) {
            Ok(loaded) => Ok(loaded.job),
            Err(Unread::Unreadable(why)) => Err(why),
            Err(other) => Err(format!("{other:?}")),
        }
    }

    /// A file replaced by `text` through a rename, as an editor saves.
    fn replace(path: &Path, text: &[u8]) {
        let tmp = path.with_extension("swap");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn a_confined_read_refuses_a_link_to_outside_and_follows_one_inside() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.toml");
        std::fs::write(&secret, JOB).unwrap();
        let jobs = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(jobs.path()).unwrap();
        std::fs::write(jobs.path().join("real.toml"), JOB).unwrap();
        let out = jobs.path().join("out.toml");
        std::os::unix::fs::symlink(&secret, &out).unwrap();
        let inside = jobs.path().join("in.toml");
        std::os::unix::fs::symlink(jobs.path().join("real.toml"), &inside).unwrap();
        assert_eq!(job(&out, Some(&root)).err().as_deref(), Some(OUTSIDE));
        assert!(job(&inside, Some(&root)).is_ok_and(|j| j.is_ok()));
        // Unconfined (a daemon that is not root), the link is followed.
        assert!(job(&out, None).is_ok_and(|j| j.is_ok()));
    }

    #[test]
    fn a_link_swapped_to_outside_after_the_check_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.toml");
        std::fs::write(&secret, JOB).unwrap();
        let jobs = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(jobs.path()).unwrap();
        std::fs::write(jobs.path().join("real.toml"), JOB).unwrap();
        let link = jobs.path().join("link.toml");
        std::os::unix::fs::symlink(jobs.path().join("real.toml"), &link).unwrap();
        let swapped = link.clone();
        on(&link, Stage::BeforeOpen, move || {
            std::fs::remove_file(&swapped).unwrap();
            std::os::unix::fs::symlink(&secret, &swapped).unwrap();
        });
        assert_eq!(job(&link, Some(&root)).err().as_deref(), Some(OUTSIDE));
    }

    #[test]
    fn a_file_that_is_not_utf8_is_judged_on_the_bytes_read_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, b"description = \"caf\xe9\"\n").unwrap();
        let swapped = path.clone();
        on(&path, Stage::Opened, move || replace(&swapped, JOB.as_bytes()));
        let why = match job(&path, None) {
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(_)) => panic!("the file was read again: the job swapped in was loaded"),
            Err(why) => panic!("unread: {why}"),
        };
        assert!(why.contains("not valid UTF-8: byte 0xE9 at offset 18 (line 1, column 19)"), "{why}");
    }

    #[test]
    fn a_file_too_large_is_judged_on_the_size_seen_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.toml");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(crate::load::MAX_FILE_BYTES + 1).unwrap();
        let swapped = path.clone();
        on(&path, Stage::Opened, move || replace(&swapped, JOB.as_bytes()));
        let why = match job(&path, None) {
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(_)) => panic!("the file was read again: the job swapped in was loaded"),
            Err(why) => panic!("unread: {why}"),
        };
        assert!(why.contains("the file is too large to be a job file: 8388609 bytes"), "{why}");
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
    /// The file's text as last read (see [`Loaded::source`]).
    pub source: Option<Arc<str>>,
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
