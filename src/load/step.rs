//! `[[step]]` tables → [`Step`]s: the kind key and its settings, retries,
//! timeouts, and the template references the tree checks need.
//!
//! Architecture Invariant: a step is only read here, never run; `exec` and
//! `shell` commands and `http` URLs are checked for shape, not tried.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::fields::{Ctx, TemplateUse, Value, is_identifier, list, to_json};
use crate::job::{
    ExecStep, HttpStep, LimitOverrides, ProcessSpec, ReadFileStep, Retry, ShellStep, SleepStep, Step, StepKind,
    Template, WriteFileStep,
};

/// The keys that choose what a step does.
pub(crate) const KIND_KEYS: &[&str] =
    &["sleep", "exec", "shell", "http", "read_file", "write_file", "script", "script_file"];

/// What every step of one job shares while it is loaded (the executor's
/// `exec::step::StepEnv` is what a step uses when it runs).
pub(crate) struct LoadEnv<'a> {
    /// The job's folder: `script_file` paths are relative to it.
    pub(crate) dir: &'a Path,
    /// The job's `[script_limits]`, given to each script step.
    pub(crate) limits: &'a LimitOverrides,
    /// The job's `user` / `user_group`: file steps are refused with one.
    pub(crate) identity: Option<&'a crate::job::Identity>,
}

/// The keys every step may have besides its name and its kind key.
const SHARED_KEYS: &[&str] = &["blocking", "retries", "retry_delay", "backoff", "timeout", "output"];

/// Every key a `[[step]]` table may have: `name`, a kind key, the shared ones.
pub(crate) static STEP_KEYS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    std::iter::once("name").chain(KIND_KEYS.iter().copied()).chain(SHARED_KEYS.iter().copied()).collect()
});

/// A `[[step]]` as read, before the tree is checked.
#[derive(Debug)]
pub(crate) struct RawStep {
    /// The name and the span of its value.
    pub(crate) name: Option<(String, Range<usize>)>,
    /// The step, when everything in it is valid.
    pub(crate) step: Option<Step>,
    /// The templates in it that read other steps' results or `input`.
    pub(crate) uses: Vec<TemplateUse>,
}

/// Reads `name = "..."` of a step or group (`what`); reports a missing or
/// invalid one. An invalid name is still returned, so the tree checks do
/// not also call it unknown.
pub(crate) fn read_name(
    ctx: &mut Ctx,
    table: &DeTable<'_>,
    header: &Range<usize>,
    what: &str,
) -> Option<(String, Range<usize>)> {
    let Some(v) = table.get("name") else {
        ctx.error(header.clone(), format!("this {what} has no `name`"))
            .label(format!("this {what} needs `name = \"...\"`"))
            .help("groups and templates refer to steps and groups by name, e.g. `name = \"fetch\"`");
        return None;
    };
    let name = ctx.string("name", v)?;
    if !is_identifier(name) {
        let fixed: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let fixed = if fixed.starts_with(|c: char| c.is_ascii_digit()) || fixed.is_empty() {
            format!("_{fixed}")
        } else {
            fixed
        };
        ctx.error(v.span(), format!("invalid {what} name \"{name}\""))
            .label("expected letters, digits and `_`, not starting with a digit")
            .help(format!("names are used in templates as `steps.NAME.output`; try `{fixed}`"));
    }
    Some((name.to_string(), v.span()))
}

/// Reads one `[[step]]` table. The step is built only when reading it
/// reported nothing (unknown keys aside: they are reported, and harmless).
pub(crate) fn parse_step(ctx: &mut Ctx, env: &LoadEnv<'_>, table: &DeTable<'_>, header: Range<usize>) -> RawStep {
    ctx.unknown_keys(table, &STEP_KEYS, "a step");
    let errors_before = ctx.diagnostics.len();
    let name = read_name(ctx, table, &header, "step");
    let mut uses = Vec::new();
    let who = name.as_ref().map_or_else(|| "this step".to_string(), |(n, _)| format!("step `{n}`"));
    let kind_key = read_kind_key(ctx, table, &header, &who);
    let output = read_output(ctx, table, kind_key.as_ref().map(|(k, _)| k.as_str()));
    if let (Some((key, v)), Some(identity)) = (&kind_key, env.identity)
        && (key == "read_file" || key == "write_file")
    {
        ctx.error(v.span(), format!("`{key}` is refused in a job with {}", identity.describe()))
            .label("would run as gatherd's own user, not the job's")
            .help("file steps run inside gatherd; use a process, e.g. `exec = [\"cat\", \"PATH\"]` or `shell = \"cat > PATH\"`");
    }
    let kind = kind_key.and_then(|(key, v)| parse_kind(ctx, env, &key, v, output, &mut uses));
    let blocking = read_blocking(ctx, table, kind.as_ref());
    let retry = read_retry(ctx, table);
    let timeout = table.get("timeout").and_then(|v| ctx.duration("timeout", v, false));

    let ok = ctx.diagnostics.len() == errors_before;
    let step = match (ok, name.as_ref(), kind) {
        (true, Some((name, _)), Some(kind)) => {
            Some(Step { name: name.as_str().into(), kind, blocking, timeout, retry })
        }
        _ => None,
    };
    RawStep { name, step, uses }
}

/// The one kind key of a step (`sleep`, `exec`, ...) and its value; reports
/// none or two.
fn read_kind_key<'t, 'i>(
    ctx: &mut Ctx,
    table: &'t DeTable<'i>,
    header: &Range<usize>,
    who: &str,
) -> Option<(String, &'t Value<'i>)> {
    let kinds: Vec<_> = table.iter().filter(|(k, _)| KIND_KEYS.contains(&k.get_ref().as_ref())).collect();
    match kinds.as_slice() {
        [] => {
            ctx.error(header.clone(), format!("{who} has no kind: it does nothing"))
                .label(format!("expected one of {}", list(KIND_KEYS)))
                .help("add e.g. `sleep = \"1s\"`, `exec = [\"prog\", \"arg\"]`, `shell = \"cmd\"`, `http = \"URL\"`,\n`read_file = \"PATH\"`, `write_file = { path = \"PATH\", content = \"...\" }`, `script = \"...\"`");
            None
        }
        [(k, v)] => Some((k.get_ref().to_string(), *v)),
        [(first, _), (second, _), ..] => {
            ctx.error(second.span(), format!("{who} has two kinds: `{}` and `{}`", first.get_ref(), second.get_ref()))
                .label("second kind")
                .note(first.span(), "first kind")
                .help("a step does one thing; make two steps and list both in a group");
            None
        }
    }
}

/// `output = ...`, which only a `sleep` step may have (`kind_key`: the
/// step's kind, when it has one).
fn read_output(ctx: &mut Ctx, table: &DeTable<'_>, kind_key: Option<&str>) -> Option<serde_json::Value> {
    let (k, v) = table.get_key_value("output")?;
    if let Some(kind) = kind_key.filter(|&kind| kind != "sleep") {
        ctx.error(k.span(), "`output` is only allowed on `sleep` steps")
            .label("not allowed here")
            .help(format!("the result of a `{kind}` step is what it produces; remove `output`"));
    }
    Some(to_json(v.get_ref()))
}

/// `blocking = true|false` (default false); meaningless on an `http` step.
/// On a script step it is redundant but harmless: scripts always run on the
/// blocking pool.
fn read_blocking(ctx: &mut Ctx, table: &DeTable<'_>, kind: Option<&StepKind>) -> bool {
    let Some(v) = table.get("blocking") else {
        return false;
    };
    match ctx.boolean("blocking", v) {
        Some(true) if matches!(kind, Some(StepKind::Http(_))) => {
            ctx.error(v.span(), "`blocking` means nothing on an `http` step")
                .label("http requests never block the scheduler")
                .help("remove `blocking = true`");
            false
        }
        Some(b) => b,
        None => false,
    }
}

/// `retries`, `retry_delay` and `backoff`, each defaulted when unset (or
/// invalid, which is reported).
fn read_retry(ctx: &mut Ctx, table: &DeTable<'_>) -> Retry {
    let mut retry = Retry::default();
    if let Some(v) = table.get("retries")
        && let Some(n) = ctx.integer("retries", v)
    {
        match u32::try_from(n) {
            Ok(n) => retry.retries = n,
            Err(_) => {
                let message = if n < 0 {
                    format!("`retries` must be 0 or more, found {n}")
                } else {
                    format!("`retries` is too large: {n}")
                };
                ctx.error(v.span(), message)
                    .label("expected 0 or more")
                    .help("`retries` is how many more attempts follow a failure; 0 means no retry");
            }
        }
    }
    if let Some(d) = table.get("retry_delay").and_then(|v| ctx.duration("retry_delay", v, true)) {
        retry.delay = d;
    }
    if let Some(v) = table.get("backoff")
        && let Some(b) = ctx.number("backoff", v)
    {
        if b.is_finite() && b >= 1.0 {
            retry.backoff = b;
        } else {
            ctx.error(v.span(), format!("`backoff` must be at least 1, found {b}"))
                .label("expected a number ≥ 1")
                .help("1 keeps the delay between retries constant; 2 doubles it each time");
        }
    }
    retry
}

/// The value of a kind key → the [`StepKind`].
fn parse_kind(
    ctx: &mut Ctx,
    env: &LoadEnv<'_>,
    key: &str,
    v: &Value<'_>,
    output: Option<serde_json::Value>,
    uses: &mut Vec<TemplateUse>,
) -> Option<StepKind> {
    match key {
        "sleep" => {
            let duration = ctx.duration("sleep", v, true)?;
            Some(StepKind::Sleep(SleepStep { duration, output }))
        }
        "exec" => parse_exec(ctx, v, uses).map(|e| StepKind::Exec(Box::new(e))),
        "shell" => parse_shell(ctx, v, uses).map(|e| StepKind::Shell(Box::new(e))),
        "http" => parse_http(ctx, v, uses).map(|e| StepKind::Http(Box::new(e))),
        "read_file" => match v.get_ref() {
            DeValue::Table(t) => {
                ctx.unknown_keys(t, &["path"], "a `read_file` table");
                let path = required(ctx, t, v, "read_file", "path")?;
                let path = ctx.template("path", path, uses)?;
                Some(StepKind::ReadFile(ReadFileStep { path }))
            }
            DeValue::String(_) => {
                let path = ctx.template("read_file", v, uses)?;
                Some(StepKind::ReadFile(ReadFileStep { path }))
            }
            _ => {
                ctx.wrong_type("read_file", v, "a path string or `{ path = \"...\" }`");
                None
            }
        },
        "write_file" => {
            let DeValue::Table(t) = v.get_ref() else {
                ctx.wrong_type("write_file", v, "a table such as `{ path = \"out.txt\", content = \"...\" }`");
                return None;
            };
            ctx.unknown_keys(t, &["path", "content"], "a `write_file` table");
            let path = required(ctx, t, v, "write_file", "path");
            let content = required(ctx, t, v, "write_file", "content");
            let path = path.and_then(|p| ctx.template("path", p, uses));
            let content = content.and_then(|c| ctx.template("content", c, uses));
            Some(StepKind::WriteFile(Box::new(WriteFileStep { path: path?, content: content? })))
        }
        "script" | "script_file" => {
            super::script::parse_script_step(ctx, env, key, v, uses).map(|e| StepKind::Script(Box::new(e)))
        }
        _ => None,
    }
}

/// `table[key]`, or a diagnostic at the table saying it is missing.
fn required<'t, 'i>(
    ctx: &mut Ctx,
    table: &'t DeTable<'i>,
    table_value: &Value<'_>,
    kind: &str,
    key: &str,
) -> Option<&'t Value<'i>> {
    let v = table.get(key);
    if v.is_none() {
        ctx.error(table_value.span(), format!("`{kind}` has no `{key}`"))
            .label(format!("expected `{key} = ...` in this table"));
    }
    v
}

/// `exec = ["prog", "arg"]` or `exec = { argv, env, cwd, stdin }`.
fn parse_exec(ctx: &mut Ctx, v: &Value<'_>, uses: &mut Vec<TemplateUse>) -> Option<ExecStep> {
    match v.get_ref() {
        DeValue::Array(_) => {
            let argv = parse_argv(ctx, "exec", v, uses)?;
            Some(ExecStep { argv, process: ProcessSpec::default() })
        }
        DeValue::Table(t) => {
            ctx.unknown_keys(t, &["argv", "env", "cwd", "stdin"], "an `exec` table");
            let argv = required(ctx, t, v, "exec", "argv").and_then(|a| parse_argv(ctx, "argv", a, uses));
            let process = parse_process(ctx, t, uses);
            Some(ExecStep { argv: argv?, process: process? })
        }
        DeValue::String(s) => {
            ctx.wrong_type("exec", v, "an array such as [\"prog\", \"arg\"]");
            let last = ctx.diagnostics.len() - 1;
            ctx.diagnostics[last].help(format!("to run a command line through the shell, write `shell = \"{s}\"`"));
            None
        }
        _ => {
            ctx.wrong_type("exec", v, "an array such as [\"prog\", \"arg\"]");
            None
        }
    }
}

/// A non-empty array of template strings.
fn parse_argv(ctx: &mut Ctx, key: &str, v: &Value<'_>, uses: &mut Vec<TemplateUse>) -> Option<Vec<Template>> {
    let DeValue::Array(items) = v.get_ref() else {
        ctx.wrong_type(key, v, "an array such as [\"prog\", \"arg\"]");
        return None;
    };
    if items.is_empty() {
        ctx.error(v.span(), format!("`{key}` is empty"))
            .label("expected at least the program to run")
            .help(format!("e.g. `{key} = [\"echo\", \"hello\"]`"));
        return None;
    }
    let errors_before = ctx.diagnostics.len();
    let mut argv = Vec::with_capacity(items.len());
    argv.extend(items.iter().filter_map(|item| ctx.template(key, item, uses)));
    (ctx.diagnostics.len() == errors_before).then_some(argv)
}

/// `env`, `cwd` and `stdin` of an `exec` or `shell` table.
fn parse_process(ctx: &mut Ctx, t: &DeTable<'_>, uses: &mut Vec<TemplateUse>) -> Option<ProcessSpec> {
    let errors_before = ctx.diagnostics.len();
    let mut spec = ProcessSpec::default();
    if let Some(env) = t.get("env").and_then(|v| ctx.template_map("env", v, uses, check_env_name)) {
        spec.env = env;
    }
    for (key, slot) in [("cwd", &mut spec.cwd), ("stdin", &mut spec.stdin)] {
        *slot = t.get(key).and_then(|v| ctx.template(key, v, uses));
    }
    (ctx.diagnostics.len() == errors_before).then_some(spec)
}

pub(crate) fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        Err(format!("invalid environment variable name \"{name}\": it must be non-empty, without `=`"))
    } else {
        Ok(())
    }
}

/// `shell = "cmd"` or `shell = { command, env, cwd, stdin }`.
fn parse_shell(ctx: &mut Ctx, v: &Value<'_>, uses: &mut Vec<TemplateUse>) -> Option<ShellStep> {
    match v.get_ref() {
        DeValue::String(_) => {
            Some(ShellStep { command: ctx.template("shell", v, uses)?, process: ProcessSpec::default() })
        }
        DeValue::Table(t) => {
            ctx.unknown_keys(t, &["command", "env", "cwd", "stdin"], "a `shell` table");
            let command = required(ctx, t, v, "shell", "command").and_then(|c| ctx.template("command", c, uses));
            let process = parse_process(ctx, t, uses);
            Some(ShellStep { command: command?, process: process? })
        }
        _ => {
            ctx.wrong_type("shell", v, "a command line string");
            None
        }
    }
}

/// The keys of an `http = { ... }` table.
const HTTP_KEYS: &[&str] = &["url", "method", "headers", "body", "timeout", "expect_status"];

/// `http = "URL"` or `http = { url, method, headers, body, timeout, expect_status }`.
fn parse_http(ctx: &mut Ctx, v: &Value<'_>, uses: &mut Vec<TemplateUse>) -> Option<HttpStep> {
    let t = match v.get_ref() {
        DeValue::String(_) => {
            return Some(HttpStep {
                method: "GET".to_string(),
                url: ctx.template("http", v, uses)?,
                headers: Vec::new(),
                body: None,
                timeout: None,
                expect_status: Vec::new(),
            });
        }
        DeValue::Table(t) => t,
        _ => {
            ctx.wrong_type("http", v, "a URL string or a table `{ url = \"...\", ... }`");
            return None;
        }
    };
    ctx.unknown_keys(t, HTTP_KEYS, "an `http` table");
    let errors_before = ctx.diagnostics.len();
    let url = required(ctx, t, v, "http", "url").and_then(|u| ctx.template("url", u, uses));
    let mut method = "GET".to_string();
    if let Some(m) = t.get("method")
        && let Some(s) = ctx.string("method", m)
    {
        if !s.is_empty() && s.chars().all(is_token_char) {
            method = s.to_ascii_uppercase();
        } else {
            ctx.error(m.span(), format!("invalid HTTP method \"{s}\""))
                .label("expected a method such as \"GET\" or \"POST\"");
        }
    }
    let headers = t.get("headers").and_then(|h| ctx.template_map("headers", h, uses, check_header_name));
    let body = t.get("body").and_then(|b| ctx.template("body", b, uses));
    let timeout = t.get("timeout").and_then(|d| ctx.duration("timeout", d, false));
    let expect_status = t.get("expect_status").map(|s| read_expect_status(ctx, s)).unwrap_or_default();
    let url = url?;
    (ctx.diagnostics.len() == errors_before).then(|| HttpStep {
        method,
        url,
        headers: headers.unwrap_or_default(),
        body,
        timeout,
        expect_status,
    })
}

/// `expect_status = 204` or `= [200, 204]`: the statuses read (problems reported).
fn read_expect_status(ctx: &mut Ctx, s: &Value<'_>) -> Vec<u16> {
    match s.get_ref() {
        DeValue::Array(items) if !items.is_empty() => items.iter().filter_map(|item| status(ctx, item)).collect(),
        DeValue::Array(_) => {
            ctx.error(s.span(), "`expect_status` is empty")
                .label("expected at least one status")
                .help("remove `expect_status` to accept any 2xx status");
            Vec::new()
        }
        _ => status(ctx, s).into_iter().collect(),
    }
}

/// One HTTP status code, 100 to 599.
fn status(ctx: &mut Ctx, v: &Value<'_>) -> Option<u16> {
    let n = ctx.integer_in("expect_status", v, 100, 599, "an HTTP status from 100 to 599")?;
    u16::try_from(n).ok()
}

/// RFC 9110 `tchar`: what a method or header name may contain.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn check_header_name(name: &str) -> Result<(), String> {
    if !name.is_empty() && name.chars().all(is_token_char) {
        Ok(())
    } else {
        Err(format!("invalid HTTP header name \"{name}\": letters, digits and `-` are allowed"))
    }
}
