//! Reading typed fields out of a parsed TOML table, reporting every mismatch
//! as a [`Diagnostic`] at the value's span.
//!
//! Each reader returns `None` after reporting, so callers go on and find the
//! next problem instead of stopping at the first one (rustc-style).
//!
//! Architecture Invariant: readers only look at the parsed document; they
//! never touch the file system or the network.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diagnostic::{Diagnostic, LineIndex, did_you_mean};
use super::identity::Purpose;
use crate::job::Template;

/// A parsed TOML value with its byte span.
pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// Everything a file's checks share: its name and text, and the problems
/// found so far.
pub(crate) struct Ctx {
    file: Arc<str>,
    source: Arc<str>,
    lines: LineIndex,
    syntax: Syntax,
    /// Where the text being read starts in the file: spans of a table parsed
    /// on its own (`toml_job.rs`, read by table) are relative to it.
    base: usize,
    /// Checked only, or to be run by this process (`user` / `group`).
    purpose: Purpose,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

/// The language of the file being read, so help texts show a fix in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// `key = value`
    Toml,
    /// `const key = value;` (a Rhai job's settings)
    Rhai,
}

/// Where a template reads other steps' results: used by the tree checks.
#[derive(Debug, Clone)]
pub(crate) struct TemplateUse {
    /// `steps.NAME` references, each with the span to point at.
    pub(crate) steps: Vec<(String, Range<usize>)>,
    /// The span of an `input` reference, if any.
    pub(crate) input: Option<Range<usize>>,
    /// What it reads of how things ended (`run.status`, `steps.a.error`),
    /// which only handlers and `finally` nodes may, each with its span.
    pub(crate) outcome: Vec<(String, Range<usize>)>,
}

impl Ctx {
    pub(crate) fn new(file: Arc<str>, source: Arc<str>) -> Ctx {
        let lines = LineIndex::new(&source);
        Ctx { file, source, lines, syntax: Syntax::Toml, base: 0, purpose: Purpose::Check, diagnostics: Vec::new() }
    }

    /// A context for reading another part of the same file on another
    /// thread: the same file, no diagnostics yet.
    pub(crate) fn fork(&self) -> Ctx {
        Ctx {
            file: self.file.clone(),
            source: self.source.clone(),
            lines: self.lines.clone(),
            syntax: self.syntax,
            base: 0,
            purpose: self.purpose,
            diagnostics: Vec::new(),
        }
    }

    /// A context for a Rhai file, whose settings are `const` statements.
    pub(crate) fn rhai(file: Arc<str>, source: Arc<str>) -> Ctx {
        Ctx { syntax: Syntax::Rhai, ..Ctx::new(file, source) }
    }

    /// Reads the file to be checked only, or run by this process.
    pub(crate) fn set_purpose(&mut self, purpose: Purpose) {
        self.purpose = purpose;
    }

    /// Why the file is read.
    pub(crate) fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// The file's name as shown in messages.
    pub(crate) fn file(&self) -> &Arc<str> {
        &self.file
    }

    /// Spans from now on are relative to byte `base` of the file: the start
    /// of the table being read on its own.
    pub(crate) fn set_base(&mut self, base: usize) {
        self.base = base;
    }

    /// 1-based line and column (in the file) of byte `offset`.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        self.lines.line_col(&self.source, self.base + offset)
    }

    /// The byte offset of 1-based `line` and `col` (characters) of the file.
    pub(crate) fn offset(&self, line: usize, col: usize) -> usize {
        self.lines.offset(&self.source, line, col).saturating_sub(self.base)
    }

    /// How `key` is set to `value` in this file's language, for help texts:
    /// `key = value` or `const key = value;`.
    pub(crate) fn assignment(&self, key: &str, value: &str) -> String {
        match self.syntax {
            Syntax::Toml => format!("{key} = {value}"),
            Syntax::Rhai => format!("const {key} = {value};"),
        }
    }

    /// The text being read: the file's, from `base` on.
    pub(crate) fn source(&self) -> &str {
        self.source.get(self.base..).unwrap_or_default()
    }

    /// Records a problem at `span` and returns it to add a label, help or notes.
    pub(crate) fn error(&mut self, span: Range<usize>, message: impl Into<String>) -> &mut Diagnostic {
        let span = self.base + span.start..self.base + span.end;
        let line_col = self.lines.line_col(&self.source, span.start);
        self.diagnostics.push(Diagnostic::at(self.file.clone(), self.source.clone(), span, line_col, message));
        let last = self.diagnostics.len() - 1;
        &mut self.diagnostics[last]
    }

    /// Reports every key of `table` not in `allowed`, with a did-you-mean.
    /// `what` names the table in messages (`a step`, `the job`).
    pub(crate) fn unknown_keys(&mut self, table: &DeTable<'_>, allowed: &[&str], what: &str) {
        for key in table.keys() {
            let name: &str = key.get_ref();
            if allowed.contains(&name) {
                continue;
            }
            let help = did_you_mean(name, allowed.iter().copied())
                .unwrap_or_else(|| format!("the keys allowed in {what} are {}", list(allowed)));
            self.error(key.span(), format!("unknown key `{name}` in {what}")).label("unknown key").help(help);
        }
    }

    /// Reports that `v` has the wrong type; `expected` reads "a string", ...
    pub(crate) fn wrong_type(&mut self, key: &str, v: &Value<'_>, expected: &str) {
        let found = type_name(v.get_ref());
        let d = self.error(v.span(), format!("`{key}` must be {expected}, found {found}"));
        d.label(format!("expected {expected}"));
        if let DeValue::String(s) = v.get_ref() {
            let s = s.trim();
            let unquoted = match expected {
                "an integer" => s.parse::<i64>().is_ok(),
                "a number" => s.parse::<f64>().is_ok(),
                "a boolean" => s == "true" || s == "false",
                _ => false,
            };
            if unquoted {
                let fix = self.assignment(key, s);
                let last = self.diagnostics.len() - 1;
                self.diagnostics[last].help(format!("remove the quotes: `{fix}`"));
            }
        }
    }

    /// A string.
    pub(crate) fn string<'v>(&mut self, key: &str, v: &'v Value<'_>) -> Option<&'v str> {
        match v.get_ref() {
            DeValue::String(s) => Some(s),
            _ => {
                self.wrong_type(key, v, "a string");
                None
            }
        }
    }

    /// A boolean.
    pub(crate) fn boolean(&mut self, key: &str, v: &Value<'_>) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(key, v, "a boolean");
                None
            }
        }
    }

    /// An integer of any sign.
    pub(crate) fn integer(&mut self, key: &str, v: &Value<'_>) -> Option<i64> {
        match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.error(v.span(), format!("`{key}` is too large")).label("does not fit in 64 bits");
                    None
                }
            },
            _ => {
                self.wrong_type(key, v, "an integer");
                None
            }
        }
    }

    /// An integer in `min..=max`; `rule` says what is allowed, for the message.
    pub(crate) fn integer_in(&mut self, key: &str, v: &Value<'_>, min: i64, max: i64, rule: &str) -> Option<i64> {
        let n = self.integer(key, v)?;
        if (min..=max).contains(&n) {
            return Some(n);
        }
        self.error(v.span(), format!("`{key}` must be {rule}, found {n}")).label(format!("expected {rule}"));
        None
    }

    /// A float or an integer, as f64.
    pub(crate) fn number(&mut self, key: &str, v: &Value<'_>) -> Option<f64> {
        let parsed = match v.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok().map(|n| n as f64),
            _ => {
                self.wrong_type(key, v, "a number");
                return None;
            }
        };
        if parsed.is_none() {
            self.error(v.span(), format!("`{key}` is not a usable number")).label("expected a finite number");
        }
        parsed
    }

    /// A humantime duration written as a string (`"1s"`, `"250ms"`, `"1m 30s"`).
    /// A zero duration is refused unless `zero_ok`.
    pub(crate) fn duration(&mut self, key: &str, v: &Value<'_>, zero_ok: bool) -> Option<Duration> {
        let s = match v.get_ref() {
            DeValue::String(s) => s,
            DeValue::Integer(_) | DeValue::Float(_) => {
                let n = match v.get_ref() {
                    DeValue::Integer(i) => i.as_str().to_string(),
                    DeValue::Float(f) => f.as_str().to_string(),
                    _ => String::new(),
                };
                let fix = self.assignment(key, &format!("\"{n}s\""));
                self.error(v.span(), format!("`{key}` must be a duration with a unit, found a bare number"))
                    .label("expected a string such as \"5s\"")
                    .help(format!("write `{fix}` (or \"{n}ms\", \"{n}m\", ...)"));
                return None;
            }
            _ => {
                self.wrong_type(key, v, "a duration such as \"5s\"");
                return None;
            }
        };
        match humantime::parse_duration(s.trim()) {
            Ok(d) if d.is_zero() && !zero_ok => {
                self.error(v.span(), format!("`{key}` must be longer than zero"))
                    .label("a zero limit would fail at once")
                    .help(format!("remove `{key}` for no limit"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                let n = s.trim();
                let fix = self.assignment(key, &format!("\"{n}s\""));
                let d = self
                    .error(v.span(), format!("invalid duration for `{key}`: {e}"))
                    .label("expected a duration such as \"5s\", \"250ms\" or \"1m 30s\"");
                if n.parse::<f64>().is_ok() {
                    d.help(format!("add a unit: `{fix}`"));
                }
                None
            }
        }
    }

    /// A string field that may be a template (`{{ steps.NAME.output }}`);
    /// its references are added to `uses`.
    pub(crate) fn template(&mut self, key: &str, v: &Value<'_>, uses: &mut Vec<TemplateUse>) -> Option<Template> {
        let s = self.string(key, v)?;
        match Template::parse(s) {
            Ok(t) => {
                let t = if t.is_dynamic() { t.at_line(self.line_col(v.span().start).0) } else { t };
                if !t.steps().is_empty() || t.uses_input() || !t.outcome_reads().is_empty() {
                    let span = v.span();
                    let steps = t
                        .steps()
                        .iter()
                        .map(|name| {
                            let at = self.narrow(&span, &format!("steps.{name}"));
                            (name.clone(), at)
                        })
                        .collect();
                    let input = t.uses_input().then(|| self.narrow(&span, "input"));
                    let outcome =
                        t.outcome_reads().iter().map(|read| (read.clone(), self.narrow(&span, read))).collect();
                    uses.push(TemplateUse { steps, input, outcome });
                }
                Some(t)
            }
            Err(e) if e.label.is_some() => {
                let span = match e.at.clone() {
                    Some(at) => self.within(&v.span(), s, at),
                    None => v.span(),
                };
                let d = self.error(span, format!("{} in `{key}`", e.message));
                if let Some(label) = &e.label {
                    d.label(label.clone());
                }
                if let Some(help) = &e.help {
                    d.help(help.clone());
                }
                None
            }
            Err(e) => {
                self.error(v.span(), format!("invalid template in `{key}`: {e}"))
                    .label("this template does not parse")
                    .help("templates are Jinja: `{{ steps.NAME.output }}`, and `{{ input }}` in an `each` step");
                None
            }
        }
    }

    /// The span in the file of bytes `at` of `text`, the string value written
    /// at `span`: exact when the value is written without escapes (the text
    /// is then found as is inside it), else where the same bytes first
    /// appear in it, else the whole value.
    fn within(&self, span: &Range<usize>, text: &str, at: Range<usize>) -> Range<usize> {
        let Some(raw) = self.source().get(span.clone()) else { return span.clone() };
        if let Some(start) = raw.find(text) {
            return span.start + start + at.start..span.start + start + at.end;
        }
        match text.get(at) {
            Some(needle) => self.narrow(span, needle),
            None => span.clone(),
        }
    }

    /// The part of `span` where `needle` is written, or the whole span.
    fn narrow(&self, span: &Range<usize>, needle: &str) -> Range<usize> {
        self.source()
            .get(span.clone())
            .and_then(|raw| raw.find(needle))
            .map_or(span.clone(), |at| span.start + at..span.start + at + needle.len())
    }

    /// `{ K = "v", ... }` of templates, in the order written.
    pub(crate) fn template_map(
        &mut self,
        key: &str,
        v: &Value<'_>,
        uses: &mut Vec<TemplateUse>,
        check_name: fn(&str) -> Result<(), String>,
    ) -> Option<Vec<(String, Template)>> {
        let DeValue::Table(table) = v.get_ref() else {
            self.wrong_type(key, v, "a table such as `{ NAME = \"value\" }`");
            return None;
        };
        let mut out = Vec::with_capacity(table.len());
        let mut ok = true;
        for (k, val) in table.iter() {
            if let Err(e) = check_name(k.get_ref()) {
                self.error(k.span(), e).label("invalid name");
                ok = false;
            }
            match self.template(&format!("{key}.{}", k.get_ref()), val, uses) {
                Some(t) => out.push((k.get_ref().to_string(), t)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// One of `choices`, with a did-you-mean.
    pub(crate) fn choice<T: Copy>(&mut self, key: &str, v: &Value<'_>, choices: &[(&str, T)]) -> Option<T> {
        let s = self.string(key, v)?;
        if let Some((_, t)) = choices.iter().find(|(name, _)| *name == s) {
            return Some(*t);
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let help = did_you_mean(s, names.iter().copied()).unwrap_or_else(|| format!("write one of {}", list(&names)));
        self.error(v.span(), format!("invalid `{key}` value \"{s}\""))
            .label(format!("expected one of {}", list(&names)))
            .help(help);
        None
    }
}

/// "`a`, `b` or `c`".
pub(crate) fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// "a string", "an integer", ... for messages.
pub(crate) fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Whether `name` can be a step or group name: `[A-Za-z_][A-Za-z0-9_]*`, so
/// templates can say `steps.NAME.output`.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Any TOML value as JSON (`output = ...` on sleep steps).
pub(crate) fn to_json(v: &DeValue<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        DeValue::String(s) => J::String(s.to_string()),
        DeValue::Integer(i) => {
            i64::from_str_radix(i.as_str(), i.radix()).map(J::from).unwrap_or_else(|_| J::String(i.to_string()))
        }
        DeValue::Float(f) => f
            .as_str()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| J::String(f.as_str().to_string()), J::Number),
        DeValue::Boolean(b) => J::Bool(*b),
        DeValue::Datetime(d) => J::String(d.to_string()),
        DeValue::Array(a) => J::Array(a.iter().map(|x| to_json(x.get_ref())).collect()),
        DeValue::Table(t) => {
            J::Object(t.iter().map(|(k, x)| (k.get_ref().to_string(), to_json(x.get_ref()))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(is_identifier("fetch_2"));
        assert!(is_identifier("_x"));
        assert!(!is_identifier("2fetch"));
        assert!(!is_identifier("fetch-page"));
        assert!(!is_identifier(""));
    }

    #[test]
    fn lists_read_like_english() {
        assert_eq!(list(&["a"]), "`a`");
        assert_eq!(list(&["a", "b", "c"]), "`a`, `b` or `c`");
    }
}
