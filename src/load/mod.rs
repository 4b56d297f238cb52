//! Files → [`Job`]s: finding job files, reading them safely, and turning
//! their text into a validated job model, or into diagnostics that say
//! exactly where and what is wrong (rustc-style, with did-you-mean).
//!
//! - `discover.rs`: which files under the given paths are job files.
//! - `toml_job.rs`: the TOML format's top level and `[[group]]` tables.
//! - `step.rs`: `[[step]]` tables and their kinds.
//! - `sections.rs`: cutting a plain TOML job at its top-level headers, so a
//!   big one is read a table at a time.
//! - `rhai_job.rs`: Rhai job files: the script and its `const` settings.
//! - `script.rs`: compiling scripts (never running them), placing their
//!   errors in the file, and TOML `script` / `script_file` steps.
//! - `limits.rs`: the sandbox limits a job sets, in either format, and the
//!   ranges the config's defaults are checked against too.
//! - `fields.rs`: typed field readers shared by all of them.
//! - `identity.rs`: `user` / `user_group`, resolved in the user and group databases.
//! - `ownership.rs`: who may own a job file that a root gatherd runs.
//! - `tree.rs`: names, uses, cycles and template ordering; builds the tree.
//! - `diagnostic.rs`: [`Diagnostic`] and [`LoadError`], one-line and rendered.
//!
//! Architecture Invariant: the loader never runs anything (Rhai scripts are
//! compiled, not evaluated) and never touches the network; it reads the file
//! it is given and the `script_file`s and `env_file` that file names (each size-checked
//! first), and looks up the names of `user` / `user_group` in the system's user
//! and group databases (`identity.rs`), nothing else. Every problem a user can cause is a [`Diagnostic`],
//! never a panic.

mod diagnostic;
mod discover;
mod env_file;
mod fields;
mod identity;
mod limits;
#[cfg(test)]
pub(crate) use limits::LIMIT_KEYS;
mod max_output;
mod notify;
mod ownership;
mod rhai_job;
mod script;
mod secret_names;
mod sections;
mod step;
mod toml_job;
mod tree;

#[cfg(test)]
mod rhai_tests;
#[cfg(test)]
mod tests;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

pub use diagnostic::{Diagnostic, LoadError};
// For `gatherd check --config`, which places config mistakes the same way.
pub(crate) use diagnostic::{LineIndex, did_you_mean};
pub use discover::{
    DiscoverError, Discovered, NOT_A_FILE, OUTSIDE, Refused, daemon_confines_links, discover, discover_all,
    discover_confined, discover_paths, is_ignored_name, leads_outside, unreadable,
};
pub use identity::is_root;
pub(crate) use limits::check_limits;
pub(crate) use max_output::check_max_output;

use crate::job::{Job, JobFormat};
use identity::Purpose;

/// Job files larger than this are refused before they are read: a job file
/// is a few kilobytes, and the daemon must not load a runaway log by mistake.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Loads the job file at `path`: a `.toml` or a `.rhai` file.
///
/// The size is checked before anything is read, and the text must be UTF-8.
pub fn load_file(path: &Path) -> Result<Job, LoadError> {
    let (text, _) = read_text(path)?;
    load_source(path, &text, Purpose::Check)
}

/// [`load_file`] for `gatherd check --config FILE`: a job that reads a
/// secret the config lacks (`secrets`), or names a notification target it
/// lacks (`targets`), is invalid too, at the place it does.
pub fn load_file_with_config(
    path: &Path,
    secrets: &std::collections::BTreeSet<String>,
    targets: &std::collections::BTreeSet<String>,
) -> Result<Job, LoadError> {
    let (text, _) = read_text(path)?;
    let job = load_source(path, &text, Purpose::Check)?;
    let mut problems = secret_names::undefined_secrets(path, &text, &job, secrets);
    problems.extend(secret_names::unknown_targets(path, &text, &job, targets));
    if problems.is_empty() { Ok(job) } else { Err(LoadError::new(path, problems)) }
}

/// Loads the job file at `path` to run it in this process, as `gatherd
/// run` does: [`load_file`], then [`load_to_run`]'s checks.
pub fn load_file_to_run(path: &Path) -> Result<Job, LoadError> {
    let (text, meta) = read_text(path)?;
    load_to_run(path, &text, &meta)
}

/// Loads `source`, read from the file at `path` whose (`fstat`) metadata is
/// `file`, to run it in this process — the one way the daemon and `gatherd
/// run` load a job. Beyond [`load_str`]: a `user` / `user_group` this process
/// cannot switch to is refused at its key, and when it runs as root the file
/// must belong to root or to the job's `user` and be writable by its owner
/// only (`ownership.rs`).
pub fn load_to_run(path: &Path, source: &str, file: &std::fs::Metadata) -> Result<Job, LoadError> {
    let purpose = Purpose::run_here(file);
    let job = load_source(path, source, purpose)?;
    if let Some(why) = ownership::refusal_for(purpose, file, job.identity.as_deref()) {
        return Err(LoadError::whole_file(path, why));
    }
    Ok(job)
}

/// The text of the job file at `path` and the metadata of the file read.
fn read_text(path: &Path) -> Result<(String, std::fs::Metadata), LoadError> {
    if JobFormat::of(path).is_none() {
        let what = path.extension().and_then(|e| e.to_str());
        let what = what.map_or_else(|| "no extension".to_string(), |e| format!("`.{e}`"));
        return Err(LoadError::whole_file(
            path,
            format!("not a job file ({what}): job files end in `.toml` or `.rhai`"),
        ));
    }
    let (bytes, meta) =
        read_bounded_with_meta(path).map_err(|why| LoadError::whole_file(path, why.describe("a job file")))?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok((text, meta)),
        Err(e) => Err(not_utf8(path, e)),
    }
}

/// Loads a job from `source`: Rhai if `path` ends in `.rhai`, else TOML.
/// `path` names it in messages and gives [`Job::file`], [`Job::name`] (the
/// file stem) and [`Job::dir`] (the parent folder, or `.`). The job file
/// itself is not read; a TOML step's `script_file` is, relative to `dir`.
pub fn load_str(path: &Path, source: &str) -> Result<Job, LoadError> {
    load_source(path, source, Purpose::Check)
}

/// [`load_str`] for `purpose`.
fn load_source(path: &Path, source: &str, purpose: Purpose) -> Result<Job, LoadError> {
    if source.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(path, source.len() as u64));
    }
    match JobFormat::of(path) {
        Some(JobFormat::Rhai) => rhai_job::load(path, source, purpose),
        Some(JobFormat::Toml) | None => toml_job::load(path, source, purpose),
    }
}

/// Why a file could not be read.
#[derive(Debug)]
enum ReadError {
    Io(std::io::Error),
    NotAFile,
    TooLarge(u64),
}

impl ReadError {
    /// The reason, for a file that was to be `what` (`a job file`, `a script`).
    fn describe(&self, what: &str) -> String {
        match self {
            ReadError::Io(e) => format!("cannot read the file: {e}"),
            ReadError::NotAFile => "not a regular file".to_string(),
            ReadError::TooLarge(len) => format!(
                "the file is too large to be {what}: {len} bytes, over the limit of {MAX_FILE_BYTES} bytes (8 MiB)"
            ),
        }
    }
}

/// A kind of file a job names beside it, as messages call it.
pub(crate) struct BesideFile {
    /// The key naming it (`script_file`).
    pub key: &'static str,
    /// "script file".
    pub what: &'static str,
    /// "a script", for a size or kind refusal.
    pub noun: &'static str,
}

/// Reads a file a job names beside it (`script_file`, `env_file`), `text`
/// relative to `dir`, for the job's `identity`: bounded as a job file is
/// and, as root, held to the job file's owner and mode rule (its content
/// feeds what the job runs). Every refusal is a diagnostic at `span`;
/// `None` after one.
pub(crate) fn read_beside_job(
    ctx: &mut fields::Ctx,
    span: std::ops::Range<usize>,
    dir: &Path,
    text: &str,
    identity: Option<&crate::job::Identity>,
    kind: &BesideFile,
) -> Option<(std::path::PathBuf, Vec<u8>)> {
    let BesideFile { key, what, noun } = kind;
    let path = dir.join(text);
    match read_bounded_with_meta(&path) {
        Ok((bytes, meta)) => {
            if let Some(why) = ownership::refusal_for(ctx.purpose(), &meta, identity) {
                ctx.error(span, format!("the {what} \"{text}\" is {why}"))
                    .label(format!("read from {}", path.display()));
                return None;
            }
            Some((path, bytes))
        }
        Err(why) => {
            let why = match why {
                ReadError::Io(e) => e.to_string(),
                other => other.describe(noun),
            };
            ctx.error(span, format!("cannot read the {what} \"{text}\": {why}"))
                .label(format!("read from {}", path.display()))
                .help(format!("`{key}` is relative to the job file's folder"));
            None
        }
    }
}

/// Reads at most [`MAX_FILE_BYTES`], checking the size first (and again while
/// reading, in case the file grows in between). Returns the metadata of the file opened too (`fstat`), so a check of its
/// owner is about the file read, not one swapped in since.
fn read_bounded_with_meta(path: &Path) -> Result<(Vec<u8>, std::fs::Metadata), ReadError> {
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile);
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(meta.len()));
    }
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let opened = file.metadata().map_err(ReadError::Io)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    Ok((bytes, opened))
}

/// Why the job file at `path`, `len` bytes long, is not loaded: it is over
/// [`MAX_FILE_BYTES`]. For a reader that has the size already (the daemon
/// takes it from the open file), so the file need not be opened again.
pub fn too_large(path: &Path, len: u64) -> LoadError {
    LoadError::whole_file(path, ReadError::TooLarge(len).describe("a job file"))
}

/// A diagnostic at the first byte that is not UTF-8, shown in a lossy copy of
/// the text (identical up to that byte): from the bytes already read (`e`
/// holds them), so the file need not be opened again.
pub fn not_utf8(path: &Path, e: std::string::FromUtf8Error) -> LoadError {
    let at = e.utf8_error().valid_up_to();
    let bytes = e.as_bytes();
    let byte = bytes.get(at).copied().unwrap_or(0);
    let text = String::from_utf8_lossy(bytes).into_owned();
    let mut ctx = fields::Ctx::new(diagnostic::display_name(path), Arc::from(text));
    let end = at + '\u{FFFD}'.len_utf8();
    let (line, col) = diagnostic::LineIndex::new(ctx.source()).line_col(ctx.source(), at);
    ctx.error(
        at..end,
        format!("the file is not valid UTF-8: byte 0x{byte:02X} at offset {at} (line {line}, column {col})"),
    )
    .label("not UTF-8")
    .help("job files must be UTF-8 text; re-save the file as UTF-8");
    LoadError::new(path, ctx.diagnostics)
}
