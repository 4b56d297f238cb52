//! Files → [`Job`]s: finding job files, reading them safely, and turning
//! their text into a validated job model, or into diagnostics that say
//! exactly where and what is wrong (rustc-style, with did-you-mean).
//!
//! - `discover.rs`: which files under the given paths are job files.
//! - `toml.rs`: the TOML format's top level and `[[group]]` tables.
//! - `step.rs`: `[[step]]` tables and their kinds.
//! - `fields.rs`: typed field readers shared by both.
//! - `tree.rs`: names, uses, cycles and template ordering; builds the tree.
//! - `diagnostic.rs`: [`Diagnostic`] and [`LoadError`], one-line and rendered.
//!
//! Architecture Invariant: the loader never runs anything and never touches
//! the network; it reads the one file it is given (size-checked first) and
//! nothing else. Every problem a user can cause is a [`Diagnostic`], never a
//! panic.

mod diagnostic;
mod discover;
mod fields;
mod step;
mod toml;
mod tree;

#[cfg(test)]
mod tests;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

pub use diagnostic::{Diagnostic, LoadError};
pub use discover::{DiscoverError, discover, is_ignored_name};

use crate::job::Job;

/// Job files larger than this are refused before they are read: a job file
/// is a few kilobytes, and the daemon must not load a runaway log by mistake.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Loads the job file at `path`: `.toml` files now (`.rhai` later).
///
/// The size is checked before anything is read, and the text must be UTF-8.
pub fn load_file(path: &Path) -> Result<Job, LoadError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => {}
        Some("rhai") => {
            return Err(LoadError::whole_file(path, "Rhai jobs are not supported yet"));
        }
        other => {
            let what = other.map_or_else(|| "no extension".to_string(), |e| format!("`.{e}`"));
            return Err(LoadError::whole_file(path, format!("not a job file ({what}): job files end in `.toml`")));
        }
    }
    let bytes = read_bounded(path)?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => return Err(not_utf8(path, e)),
    };
    load_str(path, &text)
}

/// Loads a job from TOML `source`. `path` names it in messages and gives
/// [`Job::file`], [`Job::name`] (the file stem) and [`Job::dir`] (the parent
/// folder, or `.`); nothing is read from it.
pub fn load_str(path: &Path, source: &str) -> Result<Job, LoadError> {
    if source.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(path, source.len() as u64));
    }
    toml::load(path, source)
}

/// Reads at most [`MAX_FILE_BYTES`], checking the size first (and again while
/// reading, in case the file grows in between).
fn read_bounded(path: &Path) -> Result<Vec<u8>, LoadError> {
    let cannot = |e: std::io::Error| LoadError::whole_file(path, format!("cannot read the file: {e}"));
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(LoadError::whole_file(path, "not a regular file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(path, meta.len()));
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(path, bytes.len() as u64));
    }
    Ok(bytes)
}

fn too_large(path: &Path, len: u64) -> LoadError {
    LoadError::whole_file(
        path,
        format!(
            "the file is too large to be a job file: {len} bytes, over the limit of {MAX_FILE_BYTES} bytes (8 MiB)"
        ),
    )
}

/// A diagnostic at the first byte that is not UTF-8, shown in a lossy copy of
/// the text (identical up to that byte).
fn not_utf8(path: &Path, e: std::string::FromUtf8Error) -> LoadError {
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
