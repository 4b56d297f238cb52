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

/// The job files at `paths`: a file is taken as given (whatever its name);
/// a folder gives every `*.toml` and `*.rhai` inside it, recursively, sorted by path,
/// skipping dotfiles, dot-folders and editor temp files ([`is_ignored_name`]).
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, DiscoverError> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| DiscoverError { path: path.clone(), source })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            let mut seen = HashSet::new();
            walk(path, &mut found, &mut seen)?;
            found.sort();
            out.extend(found);
        } else {
            out.push(path.clone());
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
/// symlink loop ends.
fn walk(dir: &Path, found: &mut Vec<PathBuf>, seen: &mut HashSet<PathBuf>) -> Result<(), DiscoverError> {
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
            continue; // a job's name must be text
        };
        if is_ignored_name(name) {
            continue;
        }
        let path = entry.path();
        // Follow symlinks; a dangling one is skipped, not an error.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, found, seen)?;
        } else if meta.is_file() && JobFormat::of(name).is_some() {
            found.push(path);
        }
    }
    Ok(())
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
    fn a_missing_path_names_it() {
        let err = discover(&[PathBuf::from("/no/such/dir")]).unwrap_err();
        assert!(err.to_string().starts_with("/no/such/dir: "), "{err}");
    }
}
