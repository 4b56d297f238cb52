//! Strings in step fields that may use the results of earlier steps:
//! `{{ steps.fetch.output }}` and, in an `each` step, `{{ input }}`.
//!
//! Templates are Jinja (minijinja). Parsing happens once, at load time, to learn
//! which steps a template refers to so the loader can check they are guaranteed
//! to have finished, and to refuse names that cannot render: a variable or
//! attribute not in [`NAMES`], a filter or test the rendering environment
//! does not have. Rendering happens when the step starts.
//!
//! How the names are found (minijinja's AST is not public): variables with
//! their attributes from `undeclared_variables(true)` (dotted paths such as
//! `steps.a.output`); filters and tests by a small scan of the template's
//! tags ([`filter_and_test_names`]: `| NAME`, `is [not] NAME`, `{% filter
//! NAME %}`, strings and comments skipped), each then asked of the one
//! [`environment`] that renders with `{{ n is filter }}` / `{{ n is test }}`,
//! so a filter registered there is known to the check without a second list.
//!
//! Architecture Invariant: a render is bounded. It runs with minijinja's fuel
//! ([`RENDER_FUEL`] operations) and its output stops at [`RENDER_OUTPUT_BYTES`],
//! so a runaway template (nested loops over a large output) fails its step in
//! well under a second instead of eating memory past every timeout, cancel
//! and shutdown. Plain strings never reach the engine. Where a render runs
//! (inline, or on the blocking pool once it proves costly) is the executor's
//! choice: [`Template::render_within`] takes the budget.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::OnceLock;

use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};

/// How many engine operations one render may take (minijinja fuel): about a
/// million loop iterations, far beyond any real template, a fraction of a
/// second of CPU.
pub const RENDER_FUEL: u64 = 5_000_000;

/// The most bytes one render may produce, like a step's output bound.
pub const RENDER_OUTPUT_BYTES: usize = 1024 * 1024;

/// What a template may read: dotted paths, `*` standing for any name. A
/// path a template uses must match one of these from its start (it may go
/// deeper: `steps.a.output.items`, `input.name`) or be the start of one
/// (`job`, the whole map). The one list: a new variable or attribute is a
/// line here.
pub const NAMES: &[&str] = &[
    // A step's (or group's) result, NAME checked by the loader's tree.
    "steps.*.output",
    // In an `each` step, the result that triggered it.
    "input",
    "job.name",
    "job.timezone",
    "run.id",
    "run.started_at",
    // In a handler or a `finally` only (the loader checks where): how a
    // step, or the run, ended.
    "steps.*.status",
    "steps.*.error",
    "run.status",
    "run.error",
    // A secret of the config; its NAME is checked against the config.
    "secrets.*",
];

/// A string field of a step, possibly a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    /// The line of the job file it was written on (1-based), for run-time
    /// errors; `None` when it was not read from a file.
    line: Option<u32>,
    /// Names of the steps it refers to (`steps.NAME...`), sorted.
    steps: Vec<String>,
    /// Names of the config's secrets it reads (`secrets.NAME`), sorted.
    secrets: Vec<String>,
    /// Whether it refers to `input`.
    uses_input: bool,
    /// Whether it has any Jinja syntax at all; plain strings skip the engine.
    dynamic: bool,
    /// What it reads that only a handler or a `finally` may (`run.status`,
    /// `run.error`, `steps.NAME.status`, `steps.NAME.error`), as written.
    outcome_reads: Vec<String>,
}

impl Template {
    /// A string used as is, with no template syntax.
    pub fn literal(source: impl Into<String>) -> Template {
        Template {
            source: source.into(),
            line: None,
            steps: Vec::new(),
            secrets: Vec::new(),
            uses_input: false,
            dynamic: false,
            outcome_reads: Vec::new(),
        }
    }

    /// Parses `source`. A syntax error, a name not in [`NAMES`] or a filter
    /// or test the environment does not have is an error saying which, and
    /// where in `source` when it can be placed.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
            return Ok(Template::literal(source));
        }
        let env = check_environment();
        let tmpl = env.template_from_str(source).map_err(|e| TemplateError::whole(describe(&e)))?;
        if let Some(statement) = loading_statement(source) {
            // minijinja parses these (the `fuel` feature needs `multi_template`),
            // but a job's template has no other templates to load.
            return Err(TemplateError::whole(format!("syntax error: unknown statement {statement}")));
        }
        let mut used: Vec<String> = tmpl.undeclared_variables(true).into_iter().collect();
        // In the order written, so the first problem reported is the first one.
        used.sort_by_key(|var| (source.find(var.as_str()).unwrap_or(usize::MAX), var.clone()));
        let mut steps = BTreeSet::new();
        let mut uses_input = false;
        let mut secrets = BTreeSet::new();
        let mut outcome_reads = BTreeSet::new();
        for var in &used {
            let mut parts = var.split('.');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("input"), ..) => uses_input = true,
                (Some("steps"), Some(name), field) => {
                    steps.insert(name.to_string());
                    if matches!(field, Some("status" | "error")) {
                        outcome_reads.insert(var.clone());
                    }
                }
                (Some("steps"), None, _) => {
                    return Err(TemplateError::whole("write `steps.NAME.output`, not `steps` alone"));
                }
                (Some("secrets"), Some(name), _) => {
                    secrets.insert(name.to_string());
                }
                (Some("secrets"), None, _) => {
                    return Err(TemplateError::whole("write `secrets.NAME`, not `secrets` alone"));
                }
                (Some("run"), Some("status" | "error"), _) => {
                    outcome_reads.insert(var.clone());
                }
                _ => {}
            }
            check_path(source, var)?;
        }
        for (kind, name, at) in filter_and_test_names(source) {
            if !env_has(kind, name) {
                return Err(unknown_filter_or_test(kind, name, at));
            }
        }
        Ok(Template {
            source: source.to_string(),
            line: None,
            steps: steps.into_iter().collect(),
            secrets: secrets.into_iter().collect(),
            uses_input,
            dynamic: true,
            outcome_reads: outcome_reads.into_iter().collect(),
        })
    }

    /// The same template, remembered as written on `line` of its job file.
    pub fn at_line(mut self, line: usize) -> Template {
        self.line = u32::try_from(line).ok();
        self
    }

    /// The line of the job file it was written on, if known.
    pub fn line(&self) -> Option<u32> {
        self.line
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The steps this template reads the results of.
    pub fn steps(&self) -> &[String] {
        &self.steps
    }

    /// The config's secrets this template reads (`secrets.NAME`).
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// Whether it reads `input` (only meaningful in an `each` step).
    pub fn uses_input(&self) -> bool {
        self.uses_input
    }

    /// What it reads of how steps and the run ended (`run.status`,
    /// `steps.NAME.error`, ...): only handlers and `finally` nodes may.
    pub fn outcome_reads(&self) -> &[String] {
        &self.outcome_reads
    }

    /// Whether it has template syntax; a plain string is used as written.
    pub fn is_dynamic(&self) -> bool {
        self.dynamic
    }

    /// Renders with `ctx` (a map with `steps` and `input`) and the whole
    /// budget, or returns the literal.
    ///
    /// `ctx` is only built when the template is dynamic, so plain strings cost
    /// nothing: callers pass a closure.
    pub fn render(&self, ctx: impl FnOnce() -> Value) -> Result<String, String> {
        if !self.dynamic {
            return Ok(self.source.clone());
        }
        self.render_within(ctx(), RENDER_FUEL).map_err(|e| e.to_string())
    }

    /// Renders with `ctx` and at most `fuel` engine operations (at most
    /// [`RENDER_FUEL`]: the budget is the whole one's, never more).
    pub fn render_within(&self, ctx: Value, fuel: u64) -> Result<String, RenderError> {
        if !self.dynamic {
            return Ok(self.source.clone());
        }
        let fuel = fuel.min(RENDER_FUEL);
        let mut env = environment();
        env.set_fuel(Some(fuel));
        let tmpl = env.template_from_str(&self.source).map_err(|e| RenderError::Other(describe(&e)))?;
        let mut out = BoundedOutput { bytes: Vec::new(), overflowed: false };
        match tmpl.render_captured_to(ctx, &mut out) {
            Ok(_) => {
                Ok(String::from_utf8(out.bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
            }
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(RenderError::OutOfFuel(fuel)),
            Err(_) if out.overflowed => Err(RenderError::Other(format!(
                "the template's output passed its budget of {} bytes (1 MiB)",
                RENDER_OUTPUT_BYTES
            ))),
            Err(e) => Err(RenderError::Other(describe(&e))),
        }
    }
}

/// Why a template cannot be used: what is wrong and, when it can be placed,
/// where in the template's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// What is wrong, e.g. "unknown filter `uper`".
    pub message: String,
    /// The bytes of the template's text it is about.
    pub at: Option<Range<usize>>,
    /// A short label for the place (`unknown filter`).
    pub label: Option<String>,
    /// A did-you-mean or what is allowed.
    pub help: Option<String>,
}

impl TemplateError {
    /// A problem of the whole template (a syntax error).
    fn whole(message: impl Into<String>) -> TemplateError {
        TemplateError { message: message.into(), at: None, label: None, help: None }
    }
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Checks one used path (`steps.a.output`) against [`NAMES`].
fn check_path(source: &str, var: &str) -> Result<(), TemplateError> {
    let parts: Vec<&str> = var.split('.').collect();
    // Patterns still matching after each part; the first part with none is wrong.
    let mut alive: Vec<Vec<&str>> = NAMES.iter().map(|p| p.split('.').collect()).collect();
    for (i, part) in parts.iter().enumerate() {
        let next: Vec<Vec<&str>> = alive
            .iter()
            .filter(|p| match p.get(i) {
                None => true, // the pattern ended: deeper is the value's own
                Some(&"*") => true,
                Some(seg) => seg == part,
            })
            .cloned()
            .collect();
        if next.is_empty() {
            let candidates: Vec<&str> = alive.iter().filter_map(|p| p.get(i).copied()).collect();
            let mut unique: Vec<&str> = Vec::new();
            for c in candidates {
                if !unique.contains(&c) {
                    unique.push(c);
                }
            }
            let written = parts[..=i].join(".");
            let at = place(source, &written).map(|r| r.end - part.len()..r.end);
            let near = strsim_closest(part, unique.iter().copied());
            return Err(if i == 0 {
                TemplateError {
                    message: format!("unknown variable `{part}`"),
                    at,
                    label: Some("unknown variable".into()),
                    help: Some(match near {
                        Some(n) => format!("did you mean `{n}`?"),
                        None => format!("a template may read {}", readable_names()),
                    }),
                }
            } else {
                let owner = parts[..i].join(".");
                let shape = NAMES
                    .iter()
                    .filter(|p| p.split('.').next() == Some(parts[0]))
                    .map(|p| format!("`{}`", p.replace('*', "NAME")))
                    .collect::<Vec<_>>()
                    .join(", ");
                TemplateError {
                    message: format!("unknown attribute `{part}` in `{written}`"),
                    at,
                    label: Some("unknown attribute".into()),
                    help: Some(match near {
                        Some(n) => format!("did you mean `{owner}.{n}`?"),
                        None => format!("`{}` has only {shape}", parts[0]),
                    }),
                }
            });
        }
        alive = next;
    }
    Ok(())
}

/// [`NAMES`] as a reader would write them: "`steps.NAME.output`, `input`, ...".
fn readable_names() -> String {
    let names: Vec<String> = NAMES.iter().map(|p| format!("`{}`", p.replace('*', "NAME"))).collect();
    names.join(", ")
}

/// Where `written` (a dotted path) is in `source`, as a whole word.
fn place(source: &str, written: &str) -> Option<Range<usize>> {
    let mut from = 0;
    while let Some(found) = source.get(from..)?.find(written) {
        let start = from + found;
        let end = start + written.len();
        let before = source[..start].chars().next_back();
        let after = source[end..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        if !word(before) && before != Some('.') && !word(after) {
            return Some(start..end);
        }
        from = end;
    }
    None
}

/// The closest of `candidates` to `name`, if close enough to suggest.
fn strsim_closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .filter(|c| *c != "*")
        .map(|c| {
            let near = strsim::damerau_levenshtein(name, c) <= 1 && name.len() > 1;
            (if near { 1.0 } else { strsim::jaro_winkler(name, c) }, c)
        })
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A filter (`| NAME`) or a test (`is NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Callee {
    /// `{{ x | NAME }}`, `{% filter NAME %}`.
    Filter,
    /// `{% if x is NAME %}`.
    Test,
}

impl Callee {
    fn word(self) -> &'static str {
        match self {
            Callee::Filter => "filter",
            Callee::Test => "test",
        }
    }
}

/// Filters and tests minijinja has built in (its `builtins` feature), for
/// did-you-mean only: whether a name exists is asked of the environment.
/// A filter or test the environment adds goes in [`ADDED`] too.
const BUILTIN: &[(Callee, &[&str])] = &[
    (
        Callee::Filter,
        &[
            "safe",
            "escape",
            "e",
            "lower",
            "upper",
            "title",
            "capitalize",
            "replace",
            "length",
            "count",
            "dictsort",
            "items",
            "reverse",
            "trim",
            "join",
            "split",
            "lines",
            "default",
            "d",
            "round",
            "abs",
            "int",
            "float",
            "attr",
            "first",
            "last",
            "min",
            "max",
            "sort",
            "list",
            "string",
            "bool",
            "batch",
            "slice",
            "sum",
            "indent",
            "select",
            "reject",
            "map",
            "selectattr",
            "rejectattr",
            "groupby",
            "unique",
            "chain",
            "zip",
            "pprint",
            "format",
            "tojson",
        ],
    ),
    (
        Callee::Test,
        &[
            "defined",
            "undefined",
            "none",
            "safe",
            "escaped",
            "boolean",
            "odd",
            "even",
            "divisibleby",
            "number",
            "integer",
            "int",
            "float",
            "string",
            "sequence",
            "iterable",
            "mapping",
            "startingwith",
            "endingwith",
            "lower",
            "upper",
            "sameas",
            "eq",
            "equalto",
            "ne",
            "lt",
            "lessthan",
            "le",
            "gt",
            "greaterthan",
            "ge",
            "in",
            "true",
            "false",
            "filter",
            "test",
        ],
    ),
];

/// Filters and tests [`environment`] registers beyond minijinja's (for
/// did-you-mean; add a name here when adding one there).
const ADDED: &[(Callee, &str)] = &[];

/// Whether the rendering environment has filter (or test) `name`: asked with
/// its own `is filter` / `is test`, the lookup rendering does.
fn env_has(kind: Callee, name: &str) -> bool {
    let probe = match kind {
        Callee::Filter => "{% if n is filter %}1{% endif %}",
        Callee::Test => "{% if n is test %}1{% endif %}",
    };
    check_environment().render_str(probe, minijinja::context! { n => name }).is_ok_and(|r| r == "1")
}

fn unknown_filter_or_test(kind: Callee, name: &str, at: usize) -> TemplateError {
    let known = BUILTIN
        .iter()
        .filter(|(k, _)| *k == kind)
        .flat_map(|(_, names)| names.iter().copied())
        .chain(ADDED.iter().filter(|(k, _)| *k == kind).map(|(_, n)| *n))
        .filter(|n| env_has(kind, n));
    let word = kind.word();
    TemplateError {
        message: format!("unknown {word} `{name}`"),
        at: Some(at..at + name.len()),
        label: Some(format!("unknown {word}")),
        help: Some(match strsim_closest(name, known) {
            Some(n) => format!("did you mean `{n}`?"),
            None => format!("the {word}s are minijinja's: https://docs.rs/minijinja/latest/minijinja/{word}s/"),
        }),
    }
}

/// The filters and tests a (valid) template calls, with the byte offset of
/// each name: `| NAME`, `{% filter NAME %}` and `is [not] NAME` inside its
/// tags; string literals, comments and `{% raw %}` blocks are skipped.
fn filter_and_test_names(source: &str) -> Vec<(Callee, &str, usize)> {
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] != b'{' {
            i += 1;
            continue;
        }
        match bytes[i + 1] {
            b'#' => {
                i = source[i + 2..].find("#}").map_or(bytes.len(), |end| i + 2 + end + 2);
            }
            b'{' | b'%' => {
                let block = bytes[i + 1] == b'%';
                let (end, words) = tag(source, i + 2, block);
                let first = words.first().map(|w| w.text);
                if block && first == Some("raw") {
                    i = source[end..].find("endraw").map_or(bytes.len(), |at| end + at);
                    continue;
                }
                for (k, w) in words.iter().enumerate() {
                    let prev = k.checked_sub(1).map(|p| words[p].text);
                    let name_at = |w: &Word<'_>| (w.ident && !w.after_dot).then_some(w.at);
                    let filter_block = block && k == 1 && first == Some("filter");
                    if (filter_block || prev == Some("|")) && w.ident {
                        out.push((Callee::Filter, w.text, w.at));
                    } else if prev == Some("is") && k >= 2 && words[k - 1].ident && !words[k - 1].after_dot {
                        let name = if w.text == "not" && w.ident { words.get(k + 1) } else { Some(w) };
                        if let Some(n) = name.filter(|n| n.ident)
                            && let Some(at) = name_at(n)
                        {
                            out.push((Callee::Test, n.text, at));
                        }
                    }
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    out
}

/// A token of a tag: an identifier (dotted names are one), `|`, or another sign.
struct Word<'a> {
    text: &'a str,
    at: usize,
    ident: bool,
    /// Written right after a `.` (an attribute, not a keyword).
    after_dot: bool,
}

/// The tokens of the tag starting at `from` (after `{{` or `{%`), and the
/// offset just past its end.
fn tag(source: &str, from: usize, block: bool) -> (usize, Vec<Word<'_>>) {
    let bytes = source.as_bytes();
    let mut words = Vec::new();
    let mut depth = 0usize;
    // Whitespace control (`{%-`, `{{+`) is not a token.
    let mut i = if matches!(bytes.get(from), Some(b'-' | b'+')) { from + 1 } else { from };
    let mut after_dot = false;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' | b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                words.push(Word { text: "", at: i, ident: false, after_dot: false });
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                i += 1;
            }
            b')' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'}' if depth > 0 => {
                depth -= 1;
                i += 1;
            }
            b'}' if !block && bytes.get(i + 1) == Some(&b'}') => return (i + 2, words),
            b'%' if block && bytes.get(i + 1) == Some(&b'}') => return (i + 2, words),
            b'.' => {
                after_dot = true;
                i += 1;
                continue;
            }
            b'|' => {
                words.push(Word { text: "|", at: i, ident: false, after_dot: false });
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                // A dotted filter or test name (`| ns.f`) is one name.
                let mut end = i;
                if words.last().is_some_and(|w: &Word<'_>| w.text == "|") {
                    while bytes.get(end) == Some(&b'.')
                        && bytes.get(end + 1).is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
                    {
                        end += 1;
                        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                            end += 1;
                        }
                    }
                    i = end;
                }
                words.push(Word { text: &source[start..end], at: start, ident: true, after_dot });
            }
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            _ => {
                words.push(Word { text: "", at: i, ident: false, after_dot: false });
                i += 1;
            }
        }
        after_dot = false;
    }
    (bytes.len(), words)
}

/// Why a render gave no text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// It used up its budget of this many operations.
    OutOfFuel(u64),
    /// Anything else, said as minijinja says it (or the output bound).
    Other(String),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderError::OutOfFuel(fuel) => {
                write!(f, "the template ran out of its budget of {fuel} operations (loops over too many items?)")
            }
            RenderError::Other(text) => f.write_str(text),
        }
    }
}

/// Collects a render's output and refuses to grow past [`RENDER_OUTPUT_BYTES`],
/// which stops the render.
struct BoundedOutput {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > RENDER_OUTPUT_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("render output budget exceeded"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The one environment templates render with and are checked against (so
/// `check` knows every filter registered here).
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_filter("date", date);
    env.add_filter("default", default);
    env
}

/// `{{ run.started_at | date("%Y%m%d") }}`: an RFC 3339 time (or seconds
/// since 1970) written with a strftime format (default `%Y-%m-%d`) in the
/// job's timezone: `job.timezone` in the context, an IANA name or the host's
/// UTC offset at the run's start (`+01:00`), which the executor puts there,
/// so this stays pure.
fn date(state: &minijinja::State, value: Value, format: Option<String>) -> Result<String, minijinja::Error> {
    use chrono::{DateTime, FixedOffset, TimeZone, Utc};
    use std::fmt::Write;
    let bad = |message: String| minijinja::Error::new(ErrorKind::InvalidOperation, message);
    let instant: DateTime<Utc> = if let Some(text) = value.as_str() {
        DateTime::parse_from_rfc3339(text).map(|d| d.with_timezone(&Utc)).map_err(|e| {
            bad(format!(
                "`date` expects a time such as `run.started_at` (RFC 3339) or seconds since 1970, not \"{text}\": {e}"
            ))
        })?
    } else if let Some(seconds) = value.as_i64() {
        Utc.timestamp_opt(seconds, 0)
            .single()
            .ok_or_else(|| bad(format!("`date`: {seconds} seconds is out of range")))?
    } else {
        return Err(bad(format!(
            "`date` expects a time such as `run.started_at` (RFC 3339) or seconds since 1970, not {}",
            value.kind()
        )));
    };
    let format = format.as_deref().unwrap_or("%Y-%m-%d");
    let items = chrono::format::StrftimeItems::new(format)
        .parse()
        .map_err(|_| bad(format!("`date`: invalid strftime format \"{format}\"")))?;
    let zone = state.lookup("job").and_then(|job| job.get_attr("timezone").ok()).filter(|z| z.as_str().is_some());
    let zone = zone.as_ref().and_then(Value::as_str).unwrap_or("+00:00");
    let mut out = String::new();
    let written = if let Ok(tz) = zone.parse::<chrono_tz::Tz>() {
        write!(out, "{}", instant.with_timezone(&tz).format_with_items(items.iter()))
    } else {
        let offset = zone.parse::<FixedOffset>().map_err(|_| bad(format!("`date`: unknown timezone \"{zone}\"")))?;
        write!(out, "{}", instant.with_timezone(&offset).format_with_items(items.iter()))
    };
    written.map_err(|_| bad(format!("`date`: the format \"{format}\" does not fit this time")))?;
    Ok(out)
}

/// minijinja's `default`, which also replaces null: a step that did not
/// succeed has a null `output`, and `{{ steps.a.output | default("none") }}`
/// in a handler is meant to cover it.
fn default(
    state: &minijinja::State,
    value: Value,
    args: minijinja::value::Rest<Value>,
) -> Result<Value, minijinja::Error> {
    let value = if value.is_none() { Value::UNDEFINED } else { value };
    minijinja::filters::default(state, &value, args)
}

/// [`environment`], built once, for checking templates at load time.
fn check_environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(environment)
}

/// minijinja's error with its detail, on one line.
/// The first statement of `source` that would load another template
/// (`include`, `extends`, `import`, `from`), if any.
fn loading_statement(source: &str) -> Option<&str> {
    source.split("{%").skip(1).find_map(|block| {
        let word = block.trim_start_matches(['-', '+']).split_whitespace().next()?;
        ["include", "extends", "import", "from"].into_iter().find(|s| *s == word)
    })
}

fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_string_is_literal() {
        let t = Template::parse("hello").unwrap();
        assert_eq!(t.render(|| unreachable!()).unwrap(), "hello");
        assert!(t.steps().is_empty());
    }

    #[test]
    fn finds_referenced_steps_and_input() {
        let t = Template::parse("{{ steps.fetch.output }} {{ steps.read_it.output | upper }} {{ input }}").unwrap();
        assert_eq!(t.steps(), ["fetch", "read_it"]);
        assert!(t.uses_input());
    }

    #[test]
    fn renders_outputs() {
        let t = Template::parse("got {{ steps.a.output }} and {{ input }}").unwrap();
        let out = t
            .render(|| minijinja::context! { steps => minijinja::context!{ a => minijinja::context!{ output => "x" } }, input => 3 })
            .unwrap();
        assert_eq!(out, "got x and 3");
    }

    #[test]
    fn unknown_variable_is_an_error() {
        let err = Template::parse("{{ nope }}").unwrap_err();
        assert!(err.message.contains("unknown variable `nope`"), "{err}");
    }

    /// A context where `steps.list.output` is `0..n`.
    fn list(n: usize) -> Value {
        let items: Vec<usize> = (0..n).collect();
        minijinja::context! { steps => minijinja::context!{ list => minijinja::context!{ output => items } } }
    }

    #[test]
    fn a_runaway_render_runs_out_of_its_budget_quickly() {
        let t = Template::parse(
            "{% for a in steps.list.output %}{% for b in steps.list.output %}\
             {% for c in steps.list.output %}{% endfor %}{% endfor %}{% endfor %}",
        )
        .unwrap();
        let start = std::time::Instant::now();
        let err = t.render(|| list(1000)).unwrap_err();
        assert!(err.contains("ran out of its budget"), "{err}");
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "took {:?}", start.elapsed());
    }

    #[test]
    fn a_large_render_within_the_budget_works() {
        // 100,000 iterations and 700 KB of output.
        let t = Template::parse("{% for a in steps.list.output %}{{ a }} {% endfor %}").unwrap();
        let out = t.render(|| list(100_000)).unwrap();
        assert_eq!(out.split_whitespace().count(), 100_000);
        assert!(out.len() > 500_000);
    }

    #[test]
    fn output_past_the_limit_fails() {
        let t = Template::parse("{% for a in steps.list.output %}0123456789abcdefghij{% endfor %}").unwrap();
        assert_eq!(t.render(|| list(50_000)).unwrap().len(), 1_000_000);
        let err = t.render(|| list(60_000)).unwrap_err();
        assert!(err.contains("output passed its budget of 1048576 bytes"), "{err}");
    }

    #[test]
    fn statements_that_load_other_templates_are_refused() {
        for (source, word) in [
            ("{% include \"x\" %}", "include"),
            ("a {%- extends \"base\" %}", "extends"),
            ("{% import \"m\" as m %}", "import"),
            ("{% from \"m\" import f %}", "from"),
        ] {
            assert_eq!(
                Template::parse(source).err().map(|e| e.message),
                Some(format!("syntax error: unknown statement {word}")),
                "{source}"
            );
        }
        assert!(Template::parse("{% for x in steps.a.output %}{{ x }}{% endfor %}").is_ok());
    }

    /// A context with `run.started_at` and `job.timezone` as the executor
    /// gives them.
    fn run_at(started_at: &str, timezone: &str) -> Value {
        minijinja::context! {
            run => minijinja::context! { id => 42, started_at => started_at },
            job => minijinja::context! { name => "backup", timezone => timezone },
        }
    }

    #[test]
    fn the_date_filter_writes_the_start_in_the_jobs_timezone() {
        let t = Template::parse("{{ job.name }}-{{ run.id }}-{{ run.started_at | date(\"%Y%m%d\") }}").unwrap();
        assert_eq!(t.render(|| run_at("2026-11-29T23:30:00.000Z", "+00:00")).unwrap(), "backup-42-20261129");
        // Past midnight in Berlin, and an hour ahead as a fixed offset.
        assert_eq!(t.render(|| run_at("2026-11-29T23:30:00.000Z", "Europe/Berlin")).unwrap(), "backup-42-20261130");
        let hour = Template::parse("{{ run.started_at | date(\"%H:%M\") }} {{ run.started_at | date }}").unwrap();
        assert_eq!(hour.render(|| run_at("2026-11-29T23:30:00Z", "+01:00")).unwrap(), "00:30 2026-11-30");
        assert!(t.outcome_reads().is_empty());
    }

    #[test]
    fn a_bad_date_format_or_value_is_an_error_not_a_panic() {
        let t = Template::parse("{{ run.started_at | date(\"%Q\") }}").unwrap();
        let err = t.render(|| run_at("2026-11-29T23:30:00Z", "+00:00")).unwrap_err();
        assert!(err.contains("invalid strftime format \"%Q\""), "{err}");
        let t = Template::parse("{{ job.name | date }}").unwrap();
        let err = t.render(|| run_at("2026-11-29T23:30:00Z", "+00:00")).unwrap_err();
        assert!(err.contains("`date` expects a time"), "{err}");
    }

    #[test]
    fn default_covers_a_null_output() {
        let t = Template::parse("{{ steps.a.output | default(\"none\") }}").unwrap();
        let ctx = || minijinja::context! { steps => minijinja::context!{ a => minijinja::context!{ output => () } } };
        assert_eq!(t.render(ctx).unwrap(), "none");
    }

    #[test]
    fn outcome_reads_and_unknown_run_fields() {
        let t = Template::parse("{{ run.status }} {{ steps.a.error }} {{ steps.b.output }}").unwrap();
        assert_eq!(t.outcome_reads(), ["run.status", "steps.a.error"]);
        assert_eq!(t.steps(), ["a", "b"]);
        let err = Template::parse("{{ run.statsu }}").unwrap_err();
        assert_eq!(err.message, "unknown attribute `statsu` in `run.statsu`");
        assert_eq!(err.help.as_deref(), Some("did you mean `run.status`?"));
    }

    /// The text of `source` an error points at.
    fn pointed(source: &str) -> (String, String, Option<String>) {
        let e = Template::parse(source).unwrap_err();
        let at = e.at.clone().expect("placed");
        (e.message, source[at].to_string(), e.help)
    }

    #[test]
    fn a_misspelt_name_is_placed_with_a_did_you_mean() {
        let (message, at, help) = pointed("x {{ steps.fetch.outptu | upper }}");
        assert_eq!((message.as_str(), at.as_str()), ("unknown attribute `outptu` in `steps.fetch.outptu`", "outptu"));
        assert_eq!(help.as_deref(), Some("did you mean `steps.fetch.output`?"));
        let (message, at, help) = pointed("{{ run.started }} {{ jb.name }}");
        assert_eq!((message.as_str(), at.as_str()), ("unknown attribute `started` in `run.started`", "started"));
        assert_eq!(help.as_deref(), Some("did you mean `run.started_at`?"));
        let (message, at, help) = pointed("{{ steps.a.output }} {{ jb.name }}");
        assert_eq!((message.as_str(), at.as_str()), ("unknown variable `jb`", "jb"));
        assert_eq!(help.as_deref(), Some("did you mean `job`?"));
        let (message, _, help) = pointed("{{ weather }}");
        assert_eq!(message, "unknown variable `weather`");
        assert!(help.is_some_and(|h| h.contains("`steps.NAME.output`, `input`, `job.name`")));
    }

    #[test]
    fn an_unknown_filter_or_test_is_placed_and_strings_and_comments_are_not_read() {
        let (message, at, help) = pointed("{{ 'a | b' }}{# | c #}{{ steps.a.output | joim(',') }}");
        assert_eq!((message.as_str(), at.as_str()), ("unknown filter `joim`", "joim"));
        assert_eq!(help.as_deref(), Some("did you mean `join`?"));
        let (message, at, _) = pointed("{% filter uppr %}x{% endfilter %}");
        assert_eq!((message.as_str(), at.as_str()), ("unknown filter `uppr`", "uppr"));
        let (message, at, help) = pointed("{% if steps.a.output is not defind %}x{% endif %}");
        assert_eq!((message.as_str(), at.as_str()), ("unknown test `defind`", "defind"));
        assert_eq!(help.as_deref(), Some("did you mean `defined`?"));
        let (message, at, _) = pointed("{%- raw -%}{{ x | nothing }}{%- endraw %}{%- filter uppr -%}x{% endfilter %}");
        assert_eq!((message.as_str(), at.as_str()), ("unknown filter `uppr`", "uppr"));
        let (message, _, help) = pointed("{{ steps.a.output | frobnicate }}");
        assert_eq!(message, "unknown filter `frobnicate`");
        assert!(help.is_some_and(|h| h.contains("minijinja")));
    }

    #[test]
    fn the_names_the_check_knows_are_the_ones_that_render() {
        // Every name NAMES allows renders with such a context, and every
        // filter and test the check finds in a template renders too.
        let t = Template::parse(
            "{{ steps.a.output.x }} {{ job.name }} {{ run.id }} {{ run.started_at }} {{ secrets.K }} {{ input }} \
             {{ steps.a.output.x | upper | replace('A', 'b') }}{% if run.id is odd %}odd{% endif %}",
        )
        .unwrap();
        let ctx = minijinja::context! {
            steps => minijinja::context! { a => minijinja::context! { output => minijinja::context! { x => "a" } } },
            job => minijinja::context! { name => "j" },
            run => minijinja::context! { id => 3, started_at => "2026-11-29T14:15:22Z" },
            secrets => minijinja::context! { K => "k" },
            input => 1,
        };
        assert_eq!(t.render(|| ctx).unwrap(), "a j 3 2026-11-29T14:15:22Z k 1 bodd");
        for (kind, names) in BUILTIN {
            for name in *names {
                assert!(env_has(*kind, name), "{kind:?} {name} is in BUILTIN but not in the environment");
            }
        }
    }

    #[test]
    fn syntax_error_is_reported() {
        assert!(Template::parse("{{ steps.a.output ").is_err());
    }
}
