//! Which format a job file is written in, by its extension: the one place
//! that rule lives (the loader, the folder walk, the watcher and the
//! daemon's history all ask here).

use std::path::Path;

use super::word::word_enum;

word_enum! {
    /// A job file's format, named by its extension (and so in the run
    /// history's `jobs.kind`).
    pub enum JobFormat {
        /// `*.toml`: a declared tree of groups and steps.
        Toml = "toml",
        /// `*.rhai`: a script with the asyncio-style API.
        Rhai = "rhai",
    }
}

impl JobFormat {
    /// The format of the file at `path` (a path or a bare file name), or
    /// `None` when its extension is not a job file's.
    pub fn of(path: impl AsRef<Path>) -> Option<JobFormat> {
        JobFormat::parse(path.as_ref().extension()?.to_str()?)
    }
}

#[cfg(test)]
mod tests {
    use super::JobFormat;

    #[test]
    fn the_extension_says_the_format() {
        assert_eq!(JobFormat::of("a.toml"), Some(JobFormat::Toml));
        assert_eq!(JobFormat::of("sub/b.rhai"), Some(JobFormat::Rhai));
        assert_eq!(JobFormat::of("x.toml.part"), None);
        assert_eq!(JobFormat::of("notes.txt"), None);
        assert_eq!(JobFormat::of("toml"), None);
    }
}
