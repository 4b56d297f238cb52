//! Strings in step fields that may use the results of earlier steps:
//! `{{ steps.fetch.output }}` and, in an `each` step, `{{ input }}`.
//!
//! Templates are Jinja (minijinja). Parsing happens once, at load time, to learn
//! which steps a template refers to so the loader can check they are guaranteed
//! to have finished; rendering happens when the step starts.
//!
//! Architecture Invariant: a render is bounded. It runs with minijinja's fuel
//! ([`RENDER_FUEL`] operations) and its output stops at [`RENDER_OUTPUT_BYTES`],
//! so a runaway template (nested loops over a large output) fails its step in
//! well under a second instead of eating memory past every timeout, cancel
//! and shutdown. Plain strings never reach the engine. Where a render runs
//! (inline, or on the blocking pool once it proves costly) is the executor's
//! choice: [`Template::render_within`] takes the budget.

use std::collections::BTreeSet;

use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};

/// How many engine operations one render may take (minijinja fuel): about a
/// million loop iterations, far beyond any real template, a fraction of a
/// second of CPU.
pub const RENDER_FUEL: u64 = 5_000_000;

/// The most bytes one render may produce, like a step's output bound.
pub const RENDER_OUTPUT_BYTES: usize = 1024 * 1024;

/// A string field of a step, possibly a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
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
            steps: Vec::new(),
            secrets: Vec::new(),
            uses_input: false,
            dynamic: false,
            outcome_reads: Vec::new(),
        }
    }

    /// Parses `source`; on a syntax error returns minijinja's message.
    pub fn parse(source: &str) -> Result<Template, String> {
        if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
            return Ok(Template::literal(source));
        }
        let env = environment();
        let tmpl = env.template_from_str(source).map_err(|e| describe(&e))?;
        if let Some(statement) = loading_statement(source) {
            // minijinja parses these (the `fuel` feature needs `multi_template`),
            // but a job's template has no other templates to load.
            return Err(format!("syntax error: unknown statement {statement}"));
        }
        let mut steps = BTreeSet::new();
        let mut uses_input = false;
        let mut secrets = BTreeSet::new();
        let mut outcome_reads = BTreeSet::new();
        for var in tmpl.undeclared_variables(true) {
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
                    return Err("write `steps.NAME.output`, not `steps` alone".to_string());
                }
                (Some("secrets"), Some(name), _) => {
                    secrets.insert(name.to_string());
                }
                (Some("secrets"), None, _) => return Err("write `secrets.NAME`, not `secrets` alone".to_string()),
                (Some("job"), None | Some("name" | "timezone"), _)
                | (Some("run"), None | Some("id" | "started_at"), _) => {}
                (Some("run"), Some("status" | "error"), _) => {
                    outcome_reads.insert(var.clone());
                }
                (Some(top @ ("job" | "run")), Some(field), _) => {
                    return Err(format!(
                        "unknown variable `{top}.{field}`: a template may use `job.name`, `job.timezone`, \
                         `run.id`, `run.started_at` and, in a handler or a `finally`, `run.status` and `run.error`"
                    ));
                }
                (Some(other), ..) => {
                    return Err(format!(
                        "unknown variable `{other}`: a template may use `steps.NAME.output`, `job.name`, \
                         `run.id`, `run.started_at`, `secrets.NAME` and, in an `each` step, `input`"
                    ));
                }
                (None, ..) => {}
            }
        }
        Ok(Template {
            source: source.to_string(),
            steps: steps.into_iter().collect(),
            secrets: secrets.into_iter().collect(),
            uses_input,
            dynamic: true,
            outcome_reads: outcome_reads.into_iter().collect(),
        })
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

/// The one environment templates are parsed (so `check` knows every
/// filter) and rendered with.
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
        assert!(err.contains("unknown variable `nope`"), "{err}");
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
                Template::parse(source).err(),
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
        assert!(err.contains("unknown variable `run.statsu`"), "{err}");
    }

    #[test]
    fn syntax_error_is_reported() {
        assert!(Template::parse("{{ steps.a.output ").is_err());
    }
}
