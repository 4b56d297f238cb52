//! A job's `env_file`: `KEY=VALUE` lines, relative to the job's folder, read
//! when the job file is loaded. Blank lines and lines starting with `#` are
//! skipped; `export KEY=VALUE` is read as `KEY=VALUE`; a value wholly in
//! `"..."` or `'...'` loses its quotes (nothing else is interpreted: no
//! `$VAR` expansion, no escapes). A line without `=` or with an invalid name
//! is a diagnostic at its place in the env file.
//!
//! Like a `script_file`, a root gatherd holds it to the job file's rule of
//! owner and mode (`ownership.rs`): its values reach the job's processes.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::diagnostic::display_name;
use super::fields::{Ctx, Value};
use crate::job::{Identity, Template};

/// The variables of the `env_file` named by `v` (its path relative to
/// `dir`), or `None` after reporting why not.
pub(crate) fn read(
    ctx: &mut Ctx,
    dir: &Path,
    identity: Option<&Identity>,
    v: &Value<'_>,
) -> Option<Vec<(String, Template)>> {
    let text = ctx.string("env_file", v)?.to_string();
    let span = v.span();
    if text.trim().is_empty() {
        ctx.error(span, "`env_file` is empty").label("expected a path such as \".env\"");
        return None;
    }
    let (path, bytes) = super::read_beside_job(ctx, span.clone(), dir, &text, identity, &ENV_FILE)?;
    let Ok(content) = String::from_utf8(bytes) else {
        ctx.error(span, format!("the env file \"{text}\" is not UTF-8 text"))
            .label(format!("read from {}", path.display()));
        return None;
    };
    match parse(&content) {
        Ok(vars) => Some(vars.into_iter().map(|(k, v)| (k, Template::literal(v))).collect()),
        Err(_) => {
            // An env file holds secrets: a diagnostic (stored with the job,
            // served by the API, sent as an `invalid` notification) shows
            // its lines with every value starred out, the keys kept.
            let shown = redacted(&content);
            let bad = parse(&shown).err().unwrap_or_default();
            // Each bad line is placed in the env file, sorted where the job names it.
            let mut file_ctx = Ctx::new(display_name(&path), Arc::from(shown.as_str()));
            let (line, col) = ctx.line_col(span.start);
            let job_file = ctx.file().clone();
            for (at, message) in bad {
                file_ctx
                    .error(at, message)
                    .label("expected KEY=VALUE")
                    .help(format!(
                        "this is the `env_file` of {job_file}:{line}:{col}; lines are KEY=VALUE or # comments"
                    ))
                    .anchor(span.start);
            }
            ctx.diagnostics.append(&mut file_ctx.diagnostics);
            None
        }
    }
}

/// How messages name an env file.
const ENV_FILE: super::BesideFile = super::BesideFile { key: "env_file", what: "env file", noun: "an env file" };

/// A bad line of an env file: its span and why.
type BadLine = (Range<usize>, String);

/// The `KEY=VALUE` pairs of `text` in order, or every bad line.
pub(crate) fn parse(text: &str) -> Result<Vec<(String, String)>, Vec<BadLine>> {
    let mut vars = Vec::new();
    let mut bad = Vec::new();
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        let start = offset;
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let body = trimmed.strip_prefix("export ").map_or(trimmed, str::trim_start);
        let span = start + indent..start + line.len();
        let Some((key, value)) = body.split_once('=') else {
            bad.push((span, format!("line without `=`: {:?}", shorten(trimmed))));
            continue;
        };
        let key = key.trim_end();
        let valid = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            bad.push((
                span,
                format!("invalid variable name {key:?}: letters, digits and `_`, not starting with a digit"),
            ));
            continue;
        }
        let value = value.trim();
        let unquoted = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(open, close)| value.strip_prefix(*open)?.strip_suffix(*close))
            .unwrap_or(value);
        vars.push((key.to_string(), unquoted.to_string()));
    }
    if bad.is_empty() { Ok(vars) } else { Err(bad) }
}

/// `text` with what may be a value starred out, line by line: after the
/// first `=` (or, in a line without one, after its first word; in a
/// comment, after the `#`) every character but a space becomes `*`. Keys,
/// `=` and line lengths in characters stay, so the lines are still bad or
/// good for the same reason, and a diagnostic places them the same way.
fn redacted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let body = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let kept = indent
            + (trimmed.len() - body.len())
            + if trimmed.starts_with('#') {
                1
            } else {
                body.find('=').map_or_else(|| body.find(char::is_whitespace).unwrap_or(body.len()), |eq| eq + 1)
            };
        out.push_str(&line[..kept]);
        out.extend(line[kept..].chars().map(|c| if c.is_whitespace() { c } else { '*' }));
    }
    out
}

/// At most 40 characters of `line`, for a message.
fn shorten(line: &str) -> String {
    match line.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn key_value_lines_comments_export_and_quotes() {
        let text = "# a comment\n\nA=1\nexport B = two words \nC=\"quoted # not a comment\"\nD='x'\nE=\nF=a=b\r\n";
        let vars = parse(text).expect("valid");
        let got: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [("A", "1"), ("B", "two words"), ("C", "quoted # not a comment"), ("D", "x"), ("E", ""), ("F", "a=b")]
        );
    }

    #[test]
    fn a_redacted_file_keeps_keys_and_the_same_bad_lines_but_no_value() {
        let text = "A=hunter2-prod\n# OLD=pw-2019\nDB_PASSWORD hunter2-prod\nexport B=\"x y\"\n1X=secret\n";
        let shown = super::redacted(text);
        assert_eq!(shown, "A=************\n# ***********\nDB_PASSWORD ************\nexport B=** **\n1X=******\n");
        let (bad, shown_bad) = (parse(text).expect_err("bad"), parse(&shown).expect_err("bad"));
        assert_eq!(
            bad.iter().map(|b| b.0.clone()).collect::<Vec<_>>(),
            shown_bad.iter().map(|b| b.0.clone()).collect::<Vec<_>>()
        );
        assert!(!shown_bad.iter().any(|b| b.1.contains("hunter2") || b.1.contains("secret")), "{shown_bad:?}");
    }

    #[test]
    fn every_bad_line_is_reported_at_its_place() {
        let text = "A=1\nno equals here\n1X=2\nB=3\n";
        let bad = parse(text).expect_err("invalid");
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert_eq!(&text[bad[0].0.clone()], "no equals here");
        assert!(bad[0].1.contains("line without `=`"), "{}", bad[0].1);
        assert_eq!(&text[bad[1].0.clone()], "1X=2");
        assert!(bad[1].1.contains("invalid variable name \"1X\""), "{}", bad[1].1);
    }
}
