//! Watching the jobs folder: filesystem events (notify, inotify on Linux) in,
//! debounced [`JobFileEvent`]s out — a job file is complete and may have
//! changed, a job file is gone, or events were lost and everything must be
//! rescanned.
//!
//! Modelled on watchexec: the folder is watched, never single files (so
//! rename-saving editors and bind mounts work); editor and temporary files are
//! ignored (`load::is_ignored_name`, the same rule as `gatherd check DIR`); and
//! a half-written file is never reported — a file counts only once its writer
//! closed it or it was renamed into place. The first such event for a path is
//! reported at once; what follows for it within the debounce delay becomes one
//! report when the path is quiet.
//!
//! - `watcher.rs`: the [`Watcher`] — notify's watch, the task that owns the
//!   debouncing, and which notify event kinds mean what.
//! - `debounce.rs`: the per-path state machine (pure, unit-tested).
//! - `id.rs`: [`JobId`] and which paths count.
//!
//! Architecture Invariant: this module reports facts about files and never
//! decides what to run. It does not read job files, compare contents or know
//! about schedules; rewriting a file with the same content is reported as
//! [`JobFileEvent::Changed`], and the daemon compares hashes.

mod debounce;
mod id;
mod watcher;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use id::JobId;
pub use watcher::{Links, Watcher};

use crate::load::{DiscoverError, Refused};

/// What happened to the job files in the watched folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobFileEvent {
    /// A job file appeared or its content may have changed, and it is complete
    /// (closed after writing, or renamed into place). Also sent for each job file
    /// in a folder that appeared.
    Changed {
        /// Which job file.
        id: JobId,
    },
    /// A job file is gone (deleted, or renamed away or out of the folder); also
    /// sent for each job file that was in a folder that went.
    Removed {
        /// Which job file.
        id: JobId,
    },
    /// Events may have been lost (the kernel's queue overflowed, the watcher
    /// failed, the jobs folder itself went away): the daemon must [`scan`] again
    /// and reconcile everything.
    Rescan {
        /// Why, for the log.
        reason: String,
    },
}

/// Why watching or scanning could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The jobs folder could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The jobs folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The jobs path is a file, not a folder.
    #[error("{}: not a folder", path.display())]
    NotAFolder {
        /// The jobs path.
        path: PathBuf,
    },
    /// The operating system's watcher refused (for example the inotify watch
    /// limit, `fs.inotify.max_user_watches`, is reached).
    #[error("{}: cannot watch: {source}", path.display())]
    Watch {
        /// The jobs folder.
        path: PathBuf,
        /// notify's error.
        #[source]
        source: notify::Error,
    },
    /// A folder under the jobs folder could not be listed.
    #[error(transparent)]
    Scan(#[from] DiscoverError),
    /// [`Watcher::start`] was called outside a tokio runtime.
    #[error("{}: watching needs a running tokio runtime", path.display())]
    NoRuntime {
        /// The jobs folder.
        path: PathBuf,
    },
}

/// What a scan of the jobs folder found.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The job files, ids sorted.
    pub ids: Vec<JobId>,
    /// What has a job's name (or holds jobs) but cannot be loaded, with why:
    /// a name that is not text, a symlink loop or to nothing, a FIFO, and —
    /// when the daemon runs as root — a symlink out of the folder.
    pub refused: Vec<Refused>,
}

impl Scanned {
    /// The ids of every job-named path found, loadable or refused (those
    /// whose name is text): what the watcher knows to exist.
    pub fn all_ids(&self, root: &Path) -> Vec<JobId> {
        let mut ids = self.ids.clone();
        ids.extend(self.refused.iter().filter_map(|r| JobId::from_path(root, &r.path)));
        ids.sort();
        ids.dedup();
        ids
    }
}

/// Every job file under `root` now, ids sorted, and what was refused: the
/// scan at start-up and after a [`JobFileEvent::Rescan`]. The same files
/// `gatherd check DIR` finds (`load::discover`): `*.toml` and `*.rhai`,
/// recursively, skipping hidden and editor files, following symlinks (as
/// root, only within the folder: `load::daemon_confines_links`).
pub fn scan(root: &Path) -> Result<Scanned, WatchError> {
    scan_with(root, crate::load::daemon_confines_links())
}

/// [`scan`], refusing symlinks out of the folder when `confine` (the
/// watcher's own scans, with the rule it was started with).
fn scan_with(root: &Path, confine: bool) -> Result<Scanned, WatchError> {
    let meta = std::fs::metadata(root).map_err(|source| WatchError::Io { path: root.to_path_buf(), source })?;
    if !meta.is_dir() {
        return Err(WatchError::NotAFolder { path: root.to_path_buf() });
    }
    let found = crate::load::discover_paths(&[root.to_path_buf()], confine)?;
    let mut ids: Vec<JobId> = found.files.iter().filter_map(|f| JobId::from_path(root, f)).collect();
    ids.sort();
    ids.dedup();
    Ok(Scanned { ids, refused: found.refused })
}

impl WatchError {
    /// Whether this is a passing shortage of the system's (no file
    /// descriptors or memory left) rather than a fact about the folder: worth
    /// trying again in a moment.
    pub fn is_transient(&self) -> bool {
        let io = match self {
            WatchError::Io { source, .. } => source,
            WatchError::Scan(e) => &e.source,
            WatchError::Watch { .. } | WatchError::NotAFolder { .. } | WatchError::NoRuntime { .. } => return false,
        };
        is_transient(io)
    }
}

/// Whether an I/O error is a passing shortage — out of file descriptors
/// (`EMFILE`, `ENFILE`) or memory (`ENOMEM`, `ENOBUFS`), or interrupted
/// (`EAGAIN`, `EINTR`) — after which the same operation may well succeed.
pub fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS | libc::EAGAIN | libc::EINTR)
    )
}
