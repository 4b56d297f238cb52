//! Which files are job files: the paths given, and every `*.toml` and `*.rhai` inside
//! given folders (recursively, sorted), skipping hidden and editor files.
//!
//! Architecture Invariant: discovery only lists; it never opens a file, so a
//! half-written or huge file costs nothing here.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::job::JobFormat;

/// A path that could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct DiscoverError {
    /// The file or folder that could not be read.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// What a walk found: the job files, and the entries that look like job
/// files but cannot be one, each with why (never skipped in silence).
#[derive(Debug, Default)]
pub struct Discovered {
    /// The job files, sorted per folder given.
    pub files: Vec<PathBuf>,
    /// Job-looking entries refused.
    pub refused: Vec<Refused>,
}

/// An entry that looks like a job file but is not loaded.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct Refused {
    /// The entry (shown lossily when not text).
    pub path: PathBuf,
    /// Why it is not loaded.
    pub reason: String,
}

/// Whether the daemon confines symlinks to its jobs folder: when it runs as
/// root. A root daemon reads what a link points at with every privilege, so
/// a link out of the folder (`x.toml -> /etc/shadow`) would let whoever can
/// write the folder make it read any file; as another user the folder is its
/// owner's, who may link from it to anything they can read anyway.
pub fn daemon_confines_links() -> bool {
    super::is_root()
}

/// Whether `path`, with every symlink on the way resolved, is outside
/// `root` (canonical): the one rule for a link out of a folder, for
/// `check` and, as root, for the daemon. A path that cannot be resolved is
/// not outside (reading it fails with its own reason).
pub fn leads_outside(root: &Path, path: &Path) -> bool {
    std::fs::canonicalize(path).is_ok_and(|target| !target.starts_with(root))
}

/// The reason given for a symlink out of the folder, by `check` and by a
/// daemon running as root.
pub const OUTSIDE: &str = "a symlink to outside the folder, not followed: `check`, and the daemon when it runs as root, \
                           follow symlinks only within the folder (name the target itself to check it)";

/// [`discover_all`] for `gatherd check`, which runs as whoever asks (root,
/// say) and prints a caret excerpt of each bad file: inside a folder given,
/// a symlink (to a file or a folder) whose target is outside that folder is
/// refused, so no line of the target is ever read. A file named on the
/// command line is still taken as given.
pub fn discover_confined(paths: &[PathBuf]) -> Result<Discovered, DiscoverError> {
    discover_paths(paths, true)
}

/// The job files at `paths`: a file is taken as given (whatever its name);
/// a folder gives every `*.toml` and `*.rhai` inside it, recursively, sorted by path,
/// skipping dotfiles, dot-folders and editor temp files ([`is_ignored_name`]).
/// What is refused (see [`discover_all`]) is left out.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, DiscoverError> {
    discover_all(paths).map(|found| found.files)
}

/// [`discover`], with the entries refused: a job file or folder whose name
/// is not UTF-8 (a job's name is its path, which must be text).
pub fn discover_all(paths: &[PathBuf]) -> Result<Discovered, DiscoverError> {
    discover_paths(paths, false)
}

/// [`discover_all`], refusing symlinks out of each folder when `confine`
/// (the daemon's scan passes [`daemon_confines_links`]).
pub fn discover_paths(paths: &[PathBuf], confine: bool) -> Result<Discovered, DiscoverError> {
    let mut out = Discovered::default();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| DiscoverError { path: path.clone(), source })?;
        if meta.is_dir() {
            let mut found = Discovered::default();
            let mut seen = HashSet::new();
            let root = if confine {
                Some(std::fs::canonicalize(path).map_err(|source| DiscoverError { path: path.clone(), source })?)
            } else {
                None
            };
            walk(path, root.as_deref(), &mut found, &mut seen)?;
            found.files.sort();
            found.refused.sort_by(|a, b| a.path.cmp(&b.path));
            out.files.extend(found.files);
            out.refused.extend(found.refused);
        } else {
            out.files.push(path.clone());
        }
    }
    Ok(out)
}

/// Whether a file or folder name is hidden or an editor's temporary file
/// (`.x`, `x~`, `x.swp`, `#x#`, `x.tmp`, `x.part`): never a job.
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".swp")
        || (name.starts_with('#') && name.ends_with('#'))
        || name.ends_with(".tmp")
        || name.ends_with(".part")
}

/// Collects `*.toml` and `*.rhai` under `dir`; `seen` holds folders already walked, so a
/// symlink loop ends. With `root` (canonical), a symlink whose target is
/// outside it is refused.
fn walk(
    dir: &Path,
    root: Option<&Path>,
    found: &mut Discovered,
    seen: &mut HashSet<PathBuf>,
) -> Result<(), DiscoverError> {
    let err = |source| DiscoverError { path: dir.to_path_buf(), source };
    let canonical = std::fs::canonicalize(dir).map_err(err)?;
    if !seen.insert(canonical) {
        return Ok(());
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        entries.push(entry.map_err(err)?);
    }
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            // A job's name must be text; say so for what would be a job or hold jobs.
            let lossy = name.to_string_lossy();
            let path = entry.path();
            let job_like =
                JobFormat::of(lossy.as_ref()).is_some() || std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
            if job_like && !is_ignored_name(&lossy) {
                found.refused.push(Refused {
                    path,
                    reason: "the name is not valid UTF-8 and a job's name must be text; rename it".into(),
                });
            }
            continue;
        };
        if is_ignored_name(name) {
            continue;
        }
        let path = entry.path();
        let job_name = JobFormat::of(name).is_some();
        // Follow symlinks. What has a job's name but cannot be read as one
        // (a symlink loop or to nothing, a FIFO) is refused with why; other
        // names that cannot be followed are not jobs.
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if job_name => {
                found.refused.push(Refused { path, reason: unreadable(&e) });
                continue;
            }
            Err(_) => continue,
        };
        let job_like = meta.is_dir() || (meta.is_file() && job_name);
        if let Some(root) = root
            && job_like
            && entry.file_type().is_ok_and(|t| t.is_symlink())
            && leads_outside(root, &path)
        {
            found.refused.push(Refused { path, reason: OUTSIDE.into() });
            continue;
        }
        if meta.is_dir() {
            walk(&path, root, found, seen)?;
        } else if meta.is_file() && job_name {
            found.files.push(path);
        } else if job_name {
            found.refused.push(Refused { path, reason: NOT_A_FILE.into() });
        }
    }
    Ok(())
}

/// The reason given for something with a job's name that is not a file.
pub const NOT_A_FILE: &str = "not a regular file (a FIFO, a socket or a device); a job file must be a file";

/// Why a job-named path cannot be followed or read, in words: a symlink
/// loop, a symlink to nothing, no permission, or the OS's own message.
pub fn unreadable(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ELOOP) => "a symlink loop (or too many levels of symlinks); it cannot be read".into(),
        Some(libc::ENOENT) => "a symlink to something that does not exist".into(),
        Some(libc::EACCES) => "cannot be read: permission denied".into(),
        _ => format!("cannot be read: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_and_hidden_files_are_ignored() {
        for name in [".job.toml", "job.toml~", ".job.toml.swp", "#job.toml#", "job.toml.tmp", "job.toml.part"] {
            assert!(is_ignored_name(name), "{name}");
        }
        assert!(!is_ignored_name("job.toml"));
    }

    #[test]
    fn folders_give_sorted_toml_and_rhai_files_recursively() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(d.join(".hidden")).unwrap();
        for f in [
            "b.toml",
            "a.toml",
            "c.rhai",
            "notes.txt",
            ".d.rhai",
            "e.rhai~",
            "sub/f.rhai.swp",
            ".x.toml",
            "c.toml~",
            "#c.toml#",
            "sub/z.toml",
            "sub/deeper/y.toml",
            ".hidden/h.toml",
            "sub/w.toml.swp",
        ] {
            std::fs::write(d.join(f), "").unwrap();
        }
        let got = discover(&[d.to_path_buf()]).unwrap();
        let rel: Vec<_> = got.iter().map(|p| p.strip_prefix(d).unwrap().to_str().unwrap().to_string()).collect();
        assert_eq!(rel, ["a.toml", "b.toml", "c.rhai", "sub/deeper/y.toml", "sub/z.toml"]);
    }

    #[test]
    fn files_are_taken_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("job.txt");
        std::fs::write(&f, "").unwrap();
        assert_eq!(discover(std::slice::from_ref(&f)).unwrap(), [f]);
    }

    #[test]
    fn a_job_file_whose_name_is_not_text_is_refused_not_skipped() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.toml"), "").unwrap();
        let bad = d.join(std::ffi::OsStr::from_bytes(b"caf\xe9.toml"));
        std::fs::write(&bad, "").unwrap();
        std::fs::write(d.join(std::ffi::OsStr::from_bytes(b"notes\xe9.txt")), "").unwrap();
        let found = discover_all(&[d.to_path_buf()]).unwrap();
        assert_eq!(found.files, [d.join("a.toml")]);
        assert_eq!(found.refused.len(), 1, "{:?}", found.refused);
        assert_eq!(found.refused[0].path, bad);
        let message = found.refused[0].to_string();
        assert!(message.contains("caf\u{fffd}.toml") && message.contains("not valid UTF-8"), "{message}");
    }

    #[test]
    fn a_confined_walk_refuses_symlinks_out_of_the_folder() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.toml"), "").unwrap();
        std::fs::create_dir(outside.path().join("more")).unwrap();
        std::fs::write(outside.path().join("more/x.toml"), "").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/a.toml"), "").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.toml"), d.join("link.toml")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("more"), d.join("more")).unwrap();
        std::os::unix::fs::symlink(d.join("sub/a.toml"), d.join("inside.toml")).unwrap();
        let found = discover_confined(&[d.to_path_buf()]).unwrap();
        assert_eq!(found.files, [d.join("inside.toml"), d.join("sub/a.toml")]);
        let refused: Vec<_> = found.refused.iter().map(|r| r.path.clone()).collect();
        assert_eq!(refused, [d.join("link.toml"), d.join("more")]);
        assert!(found.refused[0].to_string().contains("outside the folder"), "{}", found.refused[0]);
        // The daemon's scan still follows them.
        assert_eq!(discover(&[d.to_path_buf()]).unwrap().len(), 4);
    }

    #[test]
    fn a_job_named_symlink_loop_dangling_link_or_fifo_is_refused_with_why() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("ok.toml"), "").unwrap();
        std::os::unix::fs::symlink("loop.toml", d.join("loop.toml")).unwrap();
        std::os::unix::fs::symlink("nothing.toml", d.join("dangling.rhai")).unwrap();
        nix::unistd::mkfifo(&d.join("pipe.toml"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Not job names: not jobs, nothing to say.
        std::os::unix::fs::symlink("nothing", d.join("notes")).unwrap();
        nix::unistd::mkfifo(&d.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let found = discover_all(&[d.to_path_buf()]).unwrap();
        assert_eq!(found.files, [d.join("ok.toml")]);
        let refused: Vec<String> = found.refused.iter().map(ToString::to_string).collect();
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(refused[0].ends_with("dangling.rhai: a symlink to something that does not exist"), "{refused:?}");
        assert!(refused[1].contains("loop.toml: a symlink loop"), "{refused:?}");
        assert!(refused[2].contains("pipe.toml: not a regular file"), "{refused:?}");
    }

    #[test]
    fn a_missing_path_names_it() {
        let err = discover(&[PathBuf::from("/no/such/dir")]).unwrap_err();
        assert!(err.to_string().starts_with("/no/such/dir: "), "{err}");
    }
}
