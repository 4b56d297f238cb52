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
pub use watcher::Watcher;

use crate::load::DiscoverError;

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

/// Every job file under `root` now, ids sorted: the scan at start-up and after a
/// [`JobFileEvent::Rescan`]. The same files `gatherd check DIR` finds
/// (`load::discover`): `*.toml` and `*.rhai`, recursively, skipping hidden and
/// editor files, following symlinks.
pub fn scan(root: &Path) -> Result<Vec<JobId>, WatchError> {
    let meta = std::fs::metadata(root).map_err(|source| WatchError::Io { path: root.to_path_buf(), source })?;
    if !meta.is_dir() {
        return Err(WatchError::NotAFolder { path: root.to_path_buf() });
    }
    let found = crate::load::discover_all(&[root.to_path_buf()])?;
    for refused in &found.refused {
        tracing::warn!(path = %refused.path.display(), "job file not loaded: {}", refused.reason);
    }
    let files = found.files;
    let mut ids: Vec<JobId> = files.iter().filter_map(|f| JobId::from_path(root, f)).collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}
