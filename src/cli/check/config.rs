//! `gatherd check --config FILE`: the config file read as the daemon reads it
//! ([`Config::parse`]), its first problem placed at FILE:LINE:COL as a job
//! file's diagnostics are (`nginx -t`, `sshd -t`).
//!
//! Architecture Invariant: the verdict is [`Config::parse`]'s, never a second
//! set of rules: this file only finds *where* the problem it reports is —
//! toml's span for what serde refuses, the key a validation message names
//! for the checks after it.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use crate::config::{Config, ConfigError};
use crate::load::{Diagnostic, LineIndex, did_you_mean};

/// The config file at `path`, or its first problem, placed.
pub(super) fn check(path: &Path) -> Result<Config, Box<Diagnostic>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return Err(Box::new(Diagnostic::whole_file(path, format!("cannot read the config file: {e}")))),
    };
    diagnose(path, &text)
}

/// [`check`] of `text`; `path` names it.
pub(super) fn diagnose(path: &Path, text: &str) -> Result<Config, Box<Diagnostic>> {
    let file: Arc<str> = Arc::from(path.display().to_string());
    let source: Arc<str> = Arc::from(text);
    let lines = LineIndex::new(text);
    let at = |span: Range<usize>, message: String| {
        let line_col = lines.line_col(text, span.start);
        Diagnostic::at(file.clone(), source.clone(), span, line_col, message)
    };
    // What serde refuses (syntax, unknown keys, types, durations): toml
    // knows the span.
    if let Err(e) = toml::from_str::<Config>(text) {
        let span = e.span().unwrap_or(0..0);
        let d = match unknown_field(e.message()) {
            Some((key, expected)) => {
                let mut d = at(span, format!("unknown key `{key}` in the config file"));
                d.label("unknown key");
                let help = did_you_mean(&key, expected.iter().map(String::as_str))
                    .unwrap_or_else(|| format!("the keys here are {}", backticked(&expected)));
                d.help(help);
                d
            }
            None => {
                let message = e.message().trim();
                let (message, expected) = match message.rsplit_once(", expected ") {
                    Some((found, expected)) if !found.contains('\n') => (found, Some(expected)),
                    _ => (message, None),
                };
                let message = match message.strip_prefix("invalid type: ") {
                    Some(found) => format!("wrong type: found {found}"),
                    None => message.replace('\n', "; "),
                };
                let mut d = at(span, message);
                if let Some(expected) = expected {
                    d.label(format!("expected {}", rust_type_in_words(expected)));
                }
                d
            }
        };
        return Err(Box::new(d));
    }
    // The checks after serde: their message names the key in backticks.
    match Config::parse(path, text) {
        Ok(config) => Ok(config),
        Err(ConfigError::Invalid { message, .. }) => match locate(text, &message) {
            Some(span) => Err(Box::new(at(span, message))),
            None => Err(Box::new(Diagnostic::whole_file(path, message))),
        },
        Err(e @ (ConfigError::Read { .. } | ConfigError::Secret { .. })) => {
            Err(Box::new(Diagnostic::whole_file(path, e.to_string())))
        }
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`
/// or `b`", or "there are no fields"): the key and the keys allowed.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field ")?;
    let mut words = rest.split('`').skip(1).step_by(2).map(str::to_string);
    let key = words.next()?;
    Some((key, words.collect()))
}

/// serde names Rust types; a config's reader knows TOML's.
fn rust_type_in_words(expected: &str) -> &str {
    match expected {
        "usize" | "u64" | "u32" => "a whole number, 0 or more",
        other => other,
    }
}

/// `a`, `b` and `c`.
fn backticked(words: &[String]) -> String {
    let words: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => "none".to_string(),
    }
}

/// The span of the value of the first key that `message` names in
/// backticks (`script_limits.max_expr_depth`, `blocking_threads`, semaphore
/// `backup`), looked up in `text`.
fn locate(text: &str, message: &str) -> Option<Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let doc = doc.get_ref();
    message.split('`').skip(1).step_by(2).find_map(|name| {
        lookup(doc, name).or_else(|| match doc.get("semaphores").map(|v| v.get_ref()) {
            Some(DeValue::Table(semaphores)) => lookup(semaphores, name),
            _ => None,
        })
    })
}

/// The span of the value at dotted `path` in `table`.
fn lookup(table: &DeTable<'_>, path: &str) -> Option<Range<usize>> {
    let (first, rest) = match path.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (path, None),
    };
    let value = table.get(first)?;
    match (rest, value.get_ref()) {
        (None, _) => Some(value.span()),
        (Some(rest), DeValue::Table(inner)) => lookup(inner, rest),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(text: &str) -> (usize, usize, String) {
        let d = diagnose(Path::new("c.toml"), text).expect_err("invalid");
        let (line, col) = d.line_col().unwrap_or_else(|| panic!("no place: {}", d.one_line()));
        (line, col, d.one_line())
    }

    /// Every check after serde names its key, so each is placed: a new
    /// check whose message names no key fails here.
    #[test]
    fn every_check_after_serde_is_placed_at_its_key() {
        let cases = [
            ("node = \"n\"\nblocking_threads = 0\n", 2, 20),
            ("max_concurrent_runs = 0\n", 1, 23),
            ("[semaphores]\nbackup = 0\n", 2, 10),
            ("api_token = \"a b\"\n", 1, 13),
            ("api_token = \"x\"\napi_token_file = \"t\"\n", 1, 13),
            ("api_hosts = [\"x:80\"]\n", 1, 13),
            ("[script_limits]\nmax_expr_depth = 1000\n", 2, 18),
            ("[script_limits]\nwall_time = \"0s\"\n", 2, 13),
            ("[secrets]\napi = {}\n", 2, 7),
            ("pass_env = [\"A=B\"]\n", 1, 12),
        ];
        for (text, line, col) in cases {
            let (l, c, message) = place(text);
            assert_eq!((l, c), (line, col), "{text:?}: {message}");
        }
    }

    #[test]
    fn a_misspelt_key_gets_a_did_you_mean() {
        let d = diagnose(Path::new("c.toml"), "[script_limits]\nmax_operatons = 5\n").expect_err("invalid");
        assert_eq!(d.line_col(), Some((2, 1)));
        assert_eq!(d.help_text(), Some("did you mean `max_operations`?"));
    }

    #[test]
    fn the_example_config_is_valid() {
        diagnose(Path::new("examples/config.toml"), include_str!("../../../examples/config.toml")).expect("valid");
    }
}
