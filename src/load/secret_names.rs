//! `gatherd check --config FILE JOBS`: a job reading a secret the config
//! does not define is invalid, placed at the `secrets.NAME` (or the
//! `secret("NAME")` of a script) that reads it; so is a job naming a
//! notification target the config lacks, placed at the name.
//!
//! Which names a job reads is the parsed job's word (its templates'
//! `secrets.NAME`), plus the `secret("NAME")` calls with a literal name in
//! its text (a Rhai job, an inline `script`); the text is searched only to
//! place them. A name built at run time is checked when it runs.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::diagnostic::{Diagnostic, LineIndex, did_you_mean, display_name};
use crate::job::Job;

/// The diagnostics of `job` (loaded from `source`, the file `path`) for
/// every secret it reads that `defined` lacks.
pub fn undefined_secrets(path: &Path, source: &str, job: &Job, defined: &BTreeSet<String>) -> Vec<Diagnostic> {
    let mut read: Vec<(String, Range<usize>)> = Vec::new();
    for name in job.secrets_read() {
        let span = find_word(source, &format!("secrets.{name}")).unwrap_or(0..0);
        read.push((name, span));
    }
    read.extend(literal_secret_calls(source));
    let file: Arc<str> = display_name(path);
    let text: Arc<str> = Arc::from(source);
    let lines = LineIndex::new(source);
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (name, span) in read {
        if defined.contains(&name) || !seen.insert(name.clone()) {
            continue;
        }
        let line_col = lines.line_col(source, span.start);
        let mut d = Diagnostic::at(
            file.clone(),
            text.clone(),
            span,
            line_col,
            format!("unknown secret `{name}`: the config's [secrets] does not define it"),
        );
        d.label("not in the config's [secrets]");
        let help = did_you_mean(&name, defined.iter().map(String::as_str)).unwrap_or_else(|| {
            format!("define it in the config: `[secrets]` `{name} = {{ file = \"/etc/gatherd/{name}\" }}`")
        });
        d.help(help);
        out.push(d);
    }
    out
}

/// The diagnostics of `job` for every notification target it names
/// (`notify = [...]`) that the config's `[notify.NAME]` tables lack: a
/// typo there would otherwise surface only as a warning when an alert is
/// due, and the alert would be lost.
pub fn unknown_targets(path: &Path, source: &str, job: &Job, defined: &BTreeSet<String>) -> Vec<Diagnostic> {
    let file: Arc<str> = display_name(path);
    let text: Arc<str> = Arc::from(source);
    let lines = LineIndex::new(source);
    let mut out = Vec::new();
    for name in job.notify.targets.iter().flatten() {
        if defined.contains(name) {
            continue;
        }
        let span = source.find(&format!("\"{name}\"")).map_or(0..0, |at| at + 1..at + 1 + name.len());
        let line_col = lines.line_col(source, span.start);
        let mut d = Diagnostic::at(
            file.clone(),
            text.clone(),
            span,
            line_col,
            format!("unknown notification target `{name}`: the config has no `[notify.{name}]`"),
        );
        d.label("not a target of the config");
        d.help(
            did_you_mean(name, defined.iter().map(String::as_str))
                .unwrap_or_else(|| format!("define it in the config: `[notify.{name}]` `webhook = \"https://...\"`")),
        );
        out.push(d);
    }
    out
}

/// The first `needle` in `source` not followed by a name character.
fn find_word(source: &str, needle: &str) -> Option<Range<usize>> {
    let mut from = 0;
    while let Some(at) = source.get(from..)?.find(needle) {
        let start = from + at;
        let end = start + needle.len();
        let next = source[end..].chars().next();
        if !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Some(start..end);
        }
        from = end;
    }
    None
}

/// `secret("NAME")` / `secret('NAME')` calls with a literal name: each name
/// and the span of the call's name argument.
fn literal_secret_calls(source: &str) -> Vec<(String, Range<usize>)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = source[from..].find("secret(") {
        let start = from + at;
        from = start + "secret(".len();
        // Not `my_secret(`.
        let before = source[..start].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            continue;
        }
        let rest = source[from..].trim_start();
        let arg = from + (source[from..].len() - rest.len());
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else { continue };
        let Some(len) = rest[1..].find(quote) else { continue };
        let name = &rest[1..1 + len];
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push((name.to_string(), arg..arg + len + 2));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_calls_are_found_and_others_are_not() {
        let source = "let a = secret(\"api\");\nlet b = my_secret(\"no\");\nsecret( 'db_pw' ); secret(name);";
        let found: Vec<String> = literal_secret_calls(source).into_iter().map(|(n, _)| n).collect();
        assert_eq!(found, ["api", "db_pw"]);
    }

    #[test]
    fn a_word_is_not_found_inside_a_longer_one() {
        assert_eq!(find_word("secrets.apikey secrets.api }", "secrets.api"), Some(15..26));
    }
}
