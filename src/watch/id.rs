//! Job identity: a job file's path relative to the jobs folder, and which paths
//! under the folder are worth looking at at all.

use std::borrow::Borrow;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::job::JobFormat;
use crate::load::is_ignored_name;

/// A job's identity: its file's path relative to the jobs folder, with `/`
/// separators (`"backups/nightly.toml"`).
///
/// The same file always has the same id, whether it was found by [`scan`](super::scan)
/// or reported by the [`Watcher`](super::Watcher), so the daemon can key its job
/// table by it. It borrows as `str`, so a map keyed by `JobId` can be looked up
/// with `"backups/nightly.toml"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// The id of the job file at `path` (absolute, or relative to the current
    /// folder like `root`) under `root`, if it is one: inside `root`, named
    /// `*.toml` or `*.rhai`, with no hidden or editor-temporary name on the way.
    pub fn from_path(root: &Path, path: &Path) -> Option<JobId> {
        match place(root, path) {
            Place::Inside(rel) if is_job_name(&rel) => Some(JobId(rel)),
            _ => None,
        }
    }

    /// The id as text: the relative path with `/` separators.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The job file's format (every id names a `*.toml` or `*.rhai` file).
    pub fn format(&self) -> JobFormat {
        JobFormat::of(&self.0).expect("a JobId is made only from a job file's name")
    }

    /// The job file's path under `root`.
    pub fn path(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }

    /// An id for a relative path already known to be a job file's.
    pub(super) fn from_rel(rel: String) -> JobId {
        debug_assert!(is_job_name(&rel), "{rel}");
        JobId(rel)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for JobId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for JobId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Whether a relative path (or a file name) names a job file: `*.toml` or `*.rhai`.
///
/// (The ignore rules are `load::is_ignored_name`'s; the extension rule is
/// [`JobFormat::of`]'s.)
pub(super) fn is_job_name(rel: &str) -> bool {
    JobFormat::of(rel).is_some()
}

/// Where a path is, seen from the jobs folder.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// The jobs folder itself.
    Root,
    /// Under the folder, every component text and none ignored: the relative
    /// path with `/` separators (a file or a folder).
    Inside(String),
    /// Outside the folder, or under an ignored name (`.git/..`, `x.toml~`).
    Elsewhere,
    /// Under the folder, with a name on the way that is not text (UTF-8):
    /// never a job, but reported (a rescan lists it as refused).
    NotText,
}

/// Where `path` is relative to `root` (both as notify reports them: `root` as
/// watched, `path` = `root` joined with names).
pub(super) fn place(root: &Path, path: &Path) -> Place {
    let Ok(rel) = path.strip_prefix(root) else {
        return Place::Elsewhere;
    };
    let mut out = String::new();
    for component in rel.components() {
        let Component::Normal(name) = component else {
            return Place::Elsewhere;
        };
        let Some(name) = name.to_str() else {
            // A job's name must be text; an ignored one is ignored all the same.
            return if is_ignored_name(&name.to_string_lossy()) { Place::Elsewhere } else { Place::NotText };
        };
        if is_ignored_name(name) {
            return Place::Elsewhere;
        }
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(name);
    }
    if out.is_empty() { Place::Root } else { Place::Inside(out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_relative_slash_separated_and_skip_ignored_names() {
        let root = Path::new("/jobs");
        let id = |p: &str| JobId::from_path(root, Path::new(p)).map(|id| id.to_string());
        assert_eq!(id("/jobs/a.toml").as_deref(), Some("a.toml"));
        assert_eq!(id("/jobs/backups/nightly.rhai").as_deref(), Some("backups/nightly.rhai"));
        for p in [
            "/jobs",
            "/jobs/notes.txt",
            "/jobs/.a.toml",
            "/jobs/a.toml~",
            "/jobs/a.toml.swp",
            "/jobs/#a.toml#",
            "/jobs/a.toml.tmp",
            "/jobs/a.toml.part",
            "/jobs/.git/a.toml",
            "/jobs/sub/.hidden/a.toml",
            "/other/a.toml",
        ] {
            assert_eq!(id(p), None, "{p}");
        }
        assert_eq!(place(root, Path::new("/jobs")), Place::Root);
        assert_eq!(place(root, Path::new("/jobs/sub")), Place::Inside("sub".into()));
    }

    #[test]
    fn an_id_gives_back_its_path_and_borrows_as_str() {
        let root = Path::new("/jobs");
        let id = JobId::from_path(root, Path::new("/jobs/sub/x.toml")).unwrap();
        assert_eq!(id.path(root), Path::new("/jobs/sub/x.toml"));
        let set: std::collections::HashSet<JobId> = [id].into();
        assert!(set.contains("sub/x.toml"));
    }
}
