//! TOML job files → [`Job`]: the top-level settings and `[[group]]` tables,
//! with `[[step]]` tables read by `step.rs` and the tree checked by `tree.rs`.
//!
//! The document is parsed with `toml::de::DeTable`, which keeps the byte span
//! of every key and value, so every problem points at the exact place.
//!
//! Architecture Invariant: the loader never runs anything and never touches
//! the network; given the same text (and the same `script_file`s) it gives
//! the same `Job` or diagnostics.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::diagnostic::{LoadError, closest, display_name};
use super::fields::{Ctx, Value, list};
use super::identity::{Purpose, read_identity};
use super::limits::{LIMIT_KEYS, read_limits};
use super::sections::{self, Layout, Section};
use super::step::{LoadEnv, RawStep, STEP_KEYS, parse_step, read_name};
use super::tree;
use crate::job::{CatchUp, GroupMode, Job, LimitOverrides, OnError, OnNodeLoss, Overlap, Trigger};

/// The keys at the top of a TOML job that are tables, not settings.
const TABLE_KEYS: &[&str] = &["script_limits", "handlers", "group", "step"];

/// The keys of `[handlers]`, in the order the handlers run.
const HANDLER_KEYS: &[&str] = &["on_failure", "on_success", "on_exit"];

/// Every key allowed at the top of a job file: the settings and the tables.
fn job_keys() -> impl Iterator<Item = &'static str> + Clone {
    SETTING_KEYS.iter().chain(TABLE_KEYS).copied()
}

/// The top-level keys that are job settings, shared with Rhai jobs' `const`s.
pub(crate) const SETTING_KEYS: &[&str] = &[
    "description",
    "timeout",
    "schedule",
    "timezone",
    "every",
    "overlap",
    "on_node_loss",
    "semaphore",
    "jitter",
    "catch_up",
    "catch_up_window",
    "keep_runs",
    "keep_for",
    "user",
    // Not `group`: in TOML that key is the `[[group]]` tables.
    "user_group",
    "max_output",
    "env",
    "env_file",
    "cwd",
    // Notifications (`notify.rs`).
    "notify",
    "notify_on",
    "notify_after",
    "repeat_every",
    "expect_success_within",
];

/// Every key a `[[group]]` table may have.
const GROUP_KEYS: &[&str] =
    &["name", "gather", "as_completed", "race", "sequence", "limit", "on_error", "timeout", "each", "finally"];

/// The keys that choose how a group runs its children.
const MODE_KEYS: &[(&str, GroupMode)] = &[
    ("gather", GroupMode::Gather),
    ("as_completed", GroupMode::AsCompleted),
    ("race", GroupMode::Race),
    ("sequence", GroupMode::Sequence),
];

/// A `[[group]]` as read, before the tree is checked.
#[derive(Debug)]
pub(crate) struct RawGroup {
    /// The name and the span of its value.
    pub(crate) name: Option<(String, Range<usize>)>,
    /// The mode, when exactly one mode key is given.
    pub(crate) mode: Option<GroupMode>,
    /// The names listed under the mode key, with their spans.
    pub(crate) children: Vec<(String, Range<usize>)>,
    /// Whether `children` is the whole list (no mode/name/item errors), so
    /// "not used by any group" can be trusted.
    pub(crate) children_known: bool,
    pub(crate) limit: Option<std::num::NonZeroUsize>,
    pub(crate) on_error: OnError,
    pub(crate) timeout: Option<Duration>,
    /// `each = "step"` and the span of its value.
    pub(crate) each: Option<(String, Range<usize>)>,
    /// `finally = "NAME"` and the span of its value.
    pub(crate) finally: Option<(String, Range<usize>)>,
}

/// `[handlers]` as read: (key, name, span of the name), in running order.
#[derive(Debug, Default)]
pub(crate) struct RawHandlers {
    pub(crate) named: Vec<(&'static str, String, Range<usize>)>,
}

/// Reads `[handlers]`: each key names a step or group.
fn read_handlers(ctx: &mut Ctx, v: &Value<'_>) -> RawHandlers {
    let DeValue::Table(t) = v.get_ref() else {
        ctx.wrong_type("handlers", v, "a `[handlers]` table such as `on_failure = \"alert\"`");
        return RawHandlers::default();
    };
    ctx.unknown_keys(t, HANDLER_KEYS, "`[handlers]`");
    let mut named = Vec::new();
    for &key in HANDLER_KEYS {
        if let Some(v) = t.get(key)
            && let Some(name) = ctx.string(key, v)
        {
            named.push((key, name.to_string(), v.span()));
        }
    }
    RawHandlers { named }
}

/// A job's handlers: each without a `timeout` of its own takes the job's,
/// so they are bounded when the main tree used its whole budget.
fn with_handlers(mut job: Job, handlers: crate::job::Handlers) -> Job {
    job.handlers = handlers;
    let timeout = job.timeout;
    for node in
        [&mut job.handlers.on_failure, &mut job.handlers.on_success, &mut job.handlers.on_exit].into_iter().flatten()
    {
        match node.as_mut() {
            crate::job::Node::Step(s) if s.timeout.is_none() => s.timeout = timeout,
            crate::job::Node::Group(g) if g.timeout.is_none() => g.timeout = timeout,
            _ => {}
        }
    }
    job
}

/// Loads a job from TOML text; `path` names it in messages and in the `Job`.
///
/// A file of the plain layout (`sections.rs`) is read a table at a time; if
/// that finds anything at all to report, or the layout is another, the whole
/// document is parsed as one and the diagnostics come from there, so they
/// are the same either way.
pub(crate) fn load(path: &Path, source: &str, purpose: Purpose) -> Result<Job, LoadError> {
    if let Some(job) = sections::layout(source).and_then(|layout| load_by_table(path, source, &layout, purpose)) {
        return Ok(job);
    }
    load_document(path, source, purpose)
}

/// The job, read a table at a time; `None` if there is anything to report.
fn load_by_table(path: &Path, source: &str, layout: &Layout, purpose: Purpose) -> Option<Job> {
    let mut ctx = Ctx::new(display_name(path), Arc::from(source));
    ctx.set_purpose(purpose);
    let preamble = DeTable::parse(&source[layout.preamble.clone()]).ok()?;
    let preamble = preamble.get_ref();
    if TABLE_KEYS.iter().any(|k| preamble.contains_key(*k)) {
        return None;
    }
    let mut job = new_job(path, placeholder_root());
    check_top_keys(&mut ctx, preamble);
    read_settings(&mut ctx, preamble, &mut job);
    let mut limits = LimitOverrides::default();
    let mut handlers = RawHandlers::default();
    for (section, range) in &layout.tables {
        if *section == Section::ScriptLimits {
            ctx.set_base(range.start);
            let table = DeTable::parse(&source[range.clone()]).ok()?;
            let DeValue::Table(t) = table.get_ref().get("script_limits")?.get_ref() else { return None };
            limits = script_limits(&mut ctx, t);
        }
        if *section == Section::Handlers {
            // The names' spans place the tree's diagnostics: a job with any
            // is read again whole, so they need not be the file's.
            ctx.set_base(range.start);
            let table = DeTable::parse(&source[range.clone()]).ok()?;
            handlers = read_handlers(&mut ctx, table.get_ref().get("handlers")?);
        }
    }
    let env = LoadEnv { dir: &job.dir, limits: &limits, identity: job.identity.as_deref() };
    let to_read: Vec<&(Section, Range<usize>)> =
        layout.tables.iter().filter(|(s, _)| !matches!(s, Section::ScriptLimits | Section::Handlers)).collect();
    // A big job's tables are read on every core: they are independent, and
    // each part comes back in file order.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let threads = cores.min(to_read.len() / TABLES_PER_THREAD).max(1);
    let parts: Vec<Option<(Vec<RawStep>, Vec<RawGroup>)>> = if threads == 1 {
        vec![read_tables(&mut ctx, source, &to_read, &env)]
    } else {
        // A thread that cannot be made or that panics leaves its part `None`:
        // the whole-document parse then reads the file.
        std::thread::scope(|scope| {
            let handles: Vec<_> = to_read
                .chunks(to_read.len().div_ceil(threads))
                .map(|part| {
                    let mut ctx = ctx.fork();
                    let env = &env;
                    std::thread::Builder::new()
                        .name("gatherd-load".into())
                        .spawn_scoped(scope, move || read_tables(&mut ctx, source, part, env))
                })
                .collect();
            handles.into_iter().map(|h| h.ok().and_then(|h| h.join().ok().flatten())).collect()
        })
    };
    let (mut steps, mut groups) = (Vec::new(), Vec::new());
    for part in parts {
        let (s, g) = part?;
        if steps.is_empty() {
            steps = s;
        } else {
            steps.extend(s);
        }
        groups.extend(g);
    }
    ctx.set_base(0);
    if !ctx.diagnostics.is_empty() || (steps.is_empty() && groups.is_empty()) {
        return None;
    }
    let (root, handlers) = tree::build(&mut ctx, steps, groups, &handlers).filter(|_| ctx.diagnostics.is_empty())?;
    job.root = root;
    Some(with_handlers(job, handlers))
}

/// Below this many tables a job is read on one thread: a thread costs more
/// than it saves.
const TABLES_PER_THREAD: usize = 2_000;

/// Reads `[[step]]` and `[[group]]` tables, each parsed on its own; `None`
/// if one does not parse or there is anything to report.
fn read_tables(
    ctx: &mut Ctx,
    source: &str,
    part: &[&(Section, Range<usize>)],
    env: &LoadEnv<'_>,
) -> Option<(Vec<RawStep>, Vec<RawGroup>)> {
    let mut steps = Vec::with_capacity(part.iter().filter(|(s, _)| *s == Section::Step).count());
    let mut groups = Vec::new();
    for (section, range) in part {
        let key = if *section == Section::Step { "step" } else { "group" };
        // Spans are relative to the table's text (`ctx` knows where it
        // starts). Those kept for the tree's checks are not shifted: they
        // only place diagnostics, and a job with any is read again whole.
        ctx.set_base(range.start);
        let table = DeTable::parse(&source[range.clone()]).ok()?;
        let mut found = tables(ctx, table.get_ref(), key);
        let (Some((t, header)), None) = (found.pop(), found.pop()) else { return None };
        match section {
            Section::Step => steps.push(parse_step(ctx, env, t, header)),
            _ => groups.push(parse_group(ctx, t, header)),
        }
    }
    ctx.diagnostics.is_empty().then_some((steps, groups))
}

/// The job, parsed as one document: any layout, and every diagnostic.
fn load_document(path: &Path, source: &str, purpose: Purpose) -> Result<Job, LoadError> {
    let mut ctx = Ctx::new(display_name(path), Arc::from(source));
    ctx.set_purpose(purpose);
    let parsed = match DeTable::parse(source) {
        Ok(doc) => doc,
        Err(e) => {
            let message = e.message().trim_end();
            match e.span() {
                Some(span) => {
                    ctx.error(span, format!("invalid TOML: {message}")).label("the TOML syntax breaks here");
                }
                None => {
                    return Err(LoadError::whole_file(path, format!("invalid TOML: {message}")));
                }
            }
            return Err(LoadError::new(path, ctx.diagnostics));
        }
    };
    let doc = parsed.get_ref();

    // The root is replaced below once the tree is built.
    let mut job = new_job(path, placeholder_root());
    check_top_keys(&mut ctx, doc);
    read_settings(&mut ctx, doc, &mut job);
    let limits = match doc.get("script_limits") {
        Some(v) => match v.get_ref() {
            DeValue::Table(t) => script_limits(&mut ctx, t),
            _ => {
                ctx.wrong_type("script_limits", v, "a `[script_limits]` table");
                LimitOverrides::default()
            }
        },
        None => LimitOverrides::default(),
    };
    let handlers = doc.get("handlers").map(|v| read_handlers(&mut ctx, v)).unwrap_or_default();
    let env = LoadEnv { dir: &job.dir, limits: &limits, identity: job.identity.as_deref() };

    let before_tables = ctx.diagnostics.len();
    let steps: Vec<RawStep> =
        tables(&mut ctx, doc, "step").into_iter().map(|(t, header)| parse_step(&mut ctx, &env, t, header)).collect();
    let groups: Vec<RawGroup> =
        tables(&mut ctx, doc, "group").into_iter().map(|(t, header)| parse_group(&mut ctx, t, header)).collect();
    // `[step]` or `step = 3` was reported already; `step = []` was not.
    let tables_reported = ctx.diagnostics.len() > before_tables;

    // A `step` or `group` key that held no tables was reported already.
    if steps.is_empty() && groups.is_empty() && !tables_reported {
        let message =
            if source.trim().is_empty() { "this job has no steps: the file is empty" } else { "this job has no steps" };
        ctx.error(0..0, message)
            .label("expected at least one `[[step]]`")
            .help("add a step, e.g.\n[[step]]\nname = \"hello\"\nexec = [\"echo\", \"hello\"]");
    }

    // The document is by far the biggest thing here (~1 KiB a step): free
    // it before the tree is built, since everything read from it is owned.
    drop(parsed);
    let root = tree::build(&mut ctx, steps, groups, &handlers);
    if !ctx.diagnostics.is_empty() {
        let mut diagnostics = ctx.diagnostics;
        diagnostics.sort_by_key(|d| d.order());
        return Err(LoadError::new(path, diagnostics));
    }
    match root {
        Some((root, handlers)) => {
            job.root = root;
            Ok(with_handlers(job, handlers))
        }
        // tree::build only returns None after reporting why.
        None => Err(LoadError::whole_file(path, "this job could not be built")),
    }
}

/// The root a job has until its tree is built.
fn placeholder_root() -> crate::job::Node {
    crate::job::Node::Group(crate::job::Group {
        name: String::new(),
        mode: GroupMode::Sequence,
        children: Vec::new(),
        limit: None,
        on_error: OnError::Cancel,
        timeout: None,
        each: None,
        finally: None,
    })
}

/// Reads the `[script_limits]` table.
fn script_limits(ctx: &mut Ctx, table: &DeTable<'_>) -> LimitOverrides {
    ctx.unknown_keys(table, LIMIT_KEYS, "`[script_limits]`");
    read_limits(ctx, table)
}

/// A job from `path` with default settings: named for the file's stem, in
/// the file's folder (`.` for a bare name).
pub(crate) fn new_job(path: &Path, root: crate::job::Node) -> Job {
    let name = path.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Job::new(name, path.to_path_buf(), dir, root)
}

/// Reports keys at the top of the file that are not [`job_keys`].
fn check_top_keys(ctx: &mut Ctx, doc: &DeTable<'_>) {
    for (key, _) in doc.iter() {
        let name: &str = key.get_ref();
        if job_keys().any(|k| k == name) {
            continue;
        }
        let d = ctx.error(key.span(), format!("unknown key `{name}` at the top of the job")).label("unknown key");
        if let Some(k) = closest(name, job_keys()) {
            d.help(format!("did you mean `{k}`?"));
        } else if STEP_KEYS.contains(&name) {
            d.help(format!("`{name}` belongs in a `[[step]]` table"));
        } else if GROUP_KEYS.contains(&name) {
            d.help(format!("`{name}` belongs in a `[[group]]` table"));
        } else {
            d.help(format!("the keys allowed at the top are {}", list(&job_keys().collect::<Vec<_>>())));
        }
    }
}

/// Reads the job settings ([`SETTING_KEYS`]) of `doc` into `job`; other keys
/// are ignored. Rhai jobs pass their `const`s here as a table, so both
/// formats check settings with this one code.
pub(crate) fn read_settings(ctx: &mut Ctx, doc: &DeTable<'_>, job: &mut Job) {
    if let Some(v) = doc.get("description") {
        job.description = ctx.string("description", v).map(str::to_string);
    }
    if let Some(v) = doc.get("timeout") {
        job.timeout = ctx.duration("timeout", v, false);
    }
    if let Some(v) = doc.get("overlap") {
        let choices = [
            ("skip", Overlap::Skip),
            ("queue", Overlap::Queue),
            ("replace", Overlap::Replace),
            ("allow", Overlap::Allow),
        ];
        if let Some(o) = ctx.choice("overlap", v, &choices) {
            job.overlap = o;
        }
    }
    if let Some(v) = doc.get("on_node_loss") {
        let choices = [("record", OnNodeLoss::Record), ("rerun", OnNodeLoss::Rerun)];
        if let Some(o) = ctx.choice("on_node_loss", v, &choices) {
            job.on_node_loss = o;
        }
    }
    if let Some(v) = doc.get("semaphore") {
        job.semaphore = read_semaphore(ctx, v);
    }
    if let Some(v) = doc.get("max_output") {
        job.max_output = super::max_output::read_max_output(ctx, v);
    }
    read_identity(ctx, doc, job);
    read_environment(ctx, doc, job);
    super::notify::read_notify(ctx, doc, job);

    let schedule = doc.get_key_value("schedule");
    let every = doc.get_key_value("every");
    let timezone = doc.get_key_value("timezone");
    if let (Some((s, _)), Some((e, _))) = (schedule, every) {
        let (first, second) = if s.span().start < e.span().start { (s, e) } else { (e, s) };
        ctx.error(second.span(), "`schedule` and `every` cannot both be set")
            .label("second trigger")
            .note(first.span(), "first trigger")
            .help("a job runs on a cron schedule or at a fixed interval, not both; remove one");
    }
    if let (Some((tz, _)), None) = (timezone, schedule) {
        let help = if every.is_some() {
            "`every` intervals do not depend on a timezone; remove `timezone`".to_string()
        } else {
            format!("add `{}` or remove `timezone`", ctx.assignment("schedule", "\"...\""))
        };
        ctx.error(tz.span(), "`timezone` without `schedule`").label("only used with `schedule`").help(help);
    }
    if let (Some((j, _)), None, None) = (doc.get_key_value("jitter"), schedule, every) {
        needs_a_trigger(ctx, "jitter", j.span());
    }
    if let Some(v) = doc.get("jitter") {
        job.jitter = read_jitter(ctx, v);
    }
    read_catch_up(ctx, doc, schedule.is_some() || every.is_some(), job);
    if let Some(v) = doc.get("keep_runs") {
        job.keep_runs = read_keep_runs(ctx, v);
    }
    if let Some(v) = doc.get("keep_for") {
        job.keep_for = positive_duration(
            ctx,
            "keep_for",
            v,
            "a zero `keep_for` would keep no run",
            "remove `keep_for` for the default retention",
        );
    }
    let tz = timezone.and_then(|(_, v)| read_timezone(ctx, v));
    if let Some(expr) = schedule.and_then(|(_, v)| read_cron(ctx, v)) {
        job.trigger = Trigger::Cron { expr, timezone: tz };
    }
    if let Some(d) = every.and_then(|(_, v)| read_every(ctx, v)) {
        job.trigger = Trigger::Every(d);
    }
}

/// `env`, `env_file` and `cwd` of the job, which its steps inherit. Their
/// templates may read the config's secrets, not other steps' results
/// (which no job-level value can wait for).
fn read_environment(ctx: &mut Ctx, doc: &DeTable<'_>, job: &mut Job) {
    let mut uses = Vec::new();
    let mut env = Vec::new();
    if let Some(v) = doc.get("env_file")
        && let Some(vars) = super::env_file::read(ctx, &job.dir, job.identity.as_deref(), v)
    {
        env = vars;
    }
    if let Some(table) = doc.get("env").and_then(|v| ctx.template_map("env", v, &mut uses, super::step::check_env_name))
    {
        // The table's win over the file's.
        env.retain(|(k, _)| !table.iter().any(|(t, _)| t == k));
        env.extend(table);
    }
    job.env = env;
    if let Some(v) = doc.get("cwd") {
        job.cwd = ctx.template("cwd", v, &mut uses);
    }
    for u in uses {
        let at = u
            .steps
            .first()
            .map(|(_, at)| at.clone())
            .or(u.input)
            .or_else(|| u.outcome.first().map(|(_, at)| at.clone()));
        if let Some(at) = at {
            ctx.error(at, "a job-level `env` or `cwd` cannot read other steps' results, `input` or how the run ended")
                .label("not known before the job starts")
                .help("read `{{ secrets.NAME }}` here, or set it in the step's own `env`/`cwd`");
        }
    }
}

/// The shortest `every` a job may have. Each fire is a run with its own log
/// lines and history row; 100 ms keeps one job to ten runs a second, well
/// below what floods the log and the store (`"1ns"` made 420 runs a second),
/// while the daemon's own tests still tick fast. A finer loop belongs inside
/// one run (a script's `sleep`).
const MIN_EVERY: Duration = Duration::from_millis(100);

/// `every = "..."`: a duration of at least [`MIN_EVERY`].
fn read_every(ctx: &mut Ctx, v: &Value<'_>) -> Option<Duration> {
    let d = ctx.duration("every", v, false)?;
    if d < MIN_EVERY {
        ctx.error(v.span(), format!("`every` must be at least {}", humantime::format_duration(MIN_EVERY)))
            .label(format!("{} is below the floor", humantime::format_duration(d)))
            .help("a job runs at most ten times a second; for a faster loop, loop inside one run");
        return None;
    }
    Some(d)
}

/// `schedule = "..."`: 5 fields, or 6 with seconds first; `@daily` and the like.
fn read_cron(ctx: &mut Ctx, v: &Value<'_>) -> Option<String> {
    let expr = ctx.string("schedule", v)?.trim();
    let fields = expr.split_whitespace().count();
    if !expr.starts_with('@') && !(5..=6).contains(&fields) {
        ctx.error(v.span(), format!("a cron schedule has 5 or 6 fields; this one has {fields}"))
            .label("expected e.g. \"*/10 * * * *\"")
            .help("fields: [second] minute hour day-of-month month day-of-week");
        return None;
    }
    if expr.eq_ignore_ascii_case("@reboot") {
        ctx.error(v.span(), "`@reboot` is not a schedule")
            .label("a one-shot job needs no schedule")
            .help("remove `schedule`: a job without `schedule` or `every` runs once when its file appears");
        return None;
    }
    match crate::schedule::parse_cron(expr) {
        Ok(_) => Some(expr.to_string()),
        Err(e) => {
            let help = "fields: [second] minute hour day-of-month month day-of-week";
            match cron_field_problem(expr) {
                Some((offset, len, problem)) => {
                    let span = v.span();
                    let at =
                        ctx.source().get(span.clone()).and_then(|raw| raw.find(expr)).map_or(span.clone(), |start| {
                            let s = span.start + start + offset;
                            s..s + len
                        });
                    ctx.error(at, format!("invalid cron schedule: {problem}")).label("out of range").help(help);
                }
                None => {
                    let e = e.to_string();
                    ctx.error(v.span(), format!("invalid cron schedule: {}", e.trim_end_matches('.')))
                        .label("expected e.g. \"*/10 * * * *\"")
                        .help(help);
                }
            }
            None
        }
    }
}

/// The first number out of range in a cron expression, as (byte offset of
/// its field, field length, message): croner only says "out of bounds".
fn cron_field_problem(expr: &str) -> Option<(usize, usize, String)> {
    const FIVE: [(&str, u32, u32); 5] =
        [("minute", 0, 59), ("hour", 0, 23), ("day of the month", 1, 31), ("month", 1, 12), ("day of the week", 0, 7)];
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let mut specs = Vec::with_capacity(6);
    if fields.len() == 6 {
        specs.push(("second", 0, 59));
    }
    specs.extend(FIVE);
    for (field, (what, min, max)) in fields.iter().zip(specs) {
        for part in field.split(',') {
            let (base, step) = part.split_once('/').unwrap_or((part, ""));
            let bad = base.split('-').filter_map(|n| n.parse::<u32>().ok()).find(|n| !(min..=max).contains(n));
            let problem = match bad {
                Some(n) => format!("{n} is not a valid {what} ({min}-{max})"),
                None if step == "0" => format!("a step of 0 in the {what} field never advances"),
                None => continue,
            };
            let offset = field.as_ptr() as usize - expr.as_ptr() as usize;
            return Some((offset, field.len(), problem));
        }
    }
    None
}

/// `semaphore = "backup"`: a name shared by the jobs that must not run more
/// at once than its count; letters, digits, `_` and `-`, so it can be named
/// in the config file and in metrics as it is.
fn read_semaphore(ctx: &mut Ctx, v: &Value<'_>) -> Option<String> {
    let name = ctx.string("semaphore", v)?;
    if name.is_empty() {
        ctx.error(v.span(), "`semaphore` must not be empty")
            .label("expected a name such as \"backup\"")
            .help("jobs naming the same semaphore share its slots; remove `semaphore` to run without one");
        return None;
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        let fixed: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' }).collect();
        let example = ctx.assignment("semaphore", &format!("\"{fixed}\""));
        ctx.error(v.span(), format!("invalid semaphore name \"{name}\": {bad:?} is not allowed"))
            .label("expected letters, digits, `_` or `-`")
            .help(format!("e.g. `{example}`"));
        return None;
    }
    Some(name.to_string())
}

/// `jitter = "30s"`: the upper bound of a per-job delay added to each
/// scheduled fire; zero would mean no jitter, so it is refused.
fn read_jitter(ctx: &mut Ctx, v: &Value<'_>) -> Option<Duration> {
    let d = ctx.duration("jitter", v, true)?;
    if d.is_zero() {
        ctx.error(v.span(), "`jitter` must be longer than zero")
            .label("a zero jitter delays nothing")
            .help("remove `jitter` to run exactly on schedule");
        return None;
    }
    Some(d)
}

/// Reports `key` set on a job without `schedule` or `every`, which it needs.
fn needs_a_trigger(ctx: &mut Ctx, key: &str, span: std::ops::Range<usize>) {
    let help = format!(
        "add `{}` or `{}`, or remove `{key}`",
        ctx.assignment("schedule", "\"...\""),
        ctx.assignment("every", "\"...\"")
    );
    ctx.error(span, format!("`{key}` without `schedule` or `every`"))
        .label("only used with `schedule` or `every`")
        .help(help);
}

/// `catch_up = "skip" | "latest" | "all"` and `catch_up_window = "6h"`: what a
/// scheduled job does with the fires missed while the daemon was down.
/// `catch_up` needs a trigger that misses fires; the window only matters
/// when missed fires are run.
fn read_catch_up(ctx: &mut Ctx, doc: &DeTable<'_>, scheduled: bool, job: &mut Job) {
    let catch_up = doc.get_key_value("catch_up");
    if let (Some((k, _)), false) = (catch_up, scheduled) {
        needs_a_trigger(ctx, "catch_up", k.span());
    }
    // `None` when `catch_up` is set but invalid: already reported.
    let mode = match catch_up {
        None => Some(CatchUp::Skip),
        Some((_, v)) => {
            let choices = [("skip", CatchUp::Skip), ("latest", CatchUp::Latest), ("all", CatchUp::All)];
            ctx.choice("catch_up", v, &choices)
        }
    };
    if let Some(m) = mode {
        job.catch_up = m;
    }
    let Some((k, v)) = doc.get_key_value("catch_up_window") else {
        return;
    };
    if mode == Some(CatchUp::Skip) {
        let message = match catch_up {
            None => "`catch_up_window` has no effect without `catch_up`",
            Some(_) => "`catch_up_window` has no effect when `catch_up` is \"skip\"",
        };
        let help = format!(
            "set `{}` (or \"all\") to run missed fires within the window, or remove `catch_up_window`",
            ctx.assignment("catch_up", "\"latest\"")
        );
        let d = ctx.error(k.span(), message).label("no missed fire is caught up").help(help);
        if let Some((c, _)) = catch_up {
            d.note(c.span(), "missed fires are skipped");
        }
        return;
    }
    job.catch_up_window = positive_duration(
        ctx,
        "catch_up_window",
        v,
        "a zero window catches up nothing",
        "remove `catch_up_window` for the default window",
    );
}

/// `keep_runs = 100`: how many runs of this job the history keeps, at least 1.
fn read_keep_runs(ctx: &mut Ctx, v: &Value<'_>) -> Option<u64> {
    let n = ctx.integer("keep_runs", v)?;
    match u64::try_from(n) {
        Ok(n) if n >= 1 => Some(n),
        _ => {
            ctx.error(v.span(), format!("`keep_runs` must be at least 1, found {n}")).label("expected 1 or more").help(
                "`keep_runs` is how many runs of this job the history keeps; remove it for the default retention",
            );
            None
        }
    }
}

/// A duration longer than zero; `label` and `help` explain a zero one.
fn positive_duration(ctx: &mut Ctx, key: &str, v: &Value<'_>, label: &str, help: &str) -> Option<Duration> {
    let d = ctx.duration(key, v, true)?;
    if d.is_zero() {
        ctx.error(v.span(), format!("`{key}` must be longer than zero")).label(label).help(help);
        return None;
    }
    Some(d)
}

/// `timezone = "Europe/Berlin"`: an IANA name known to chrono-tz.
fn read_timezone(ctx: &mut Ctx, v: &Value<'_>) -> Option<chrono_tz::Tz> {
    let name = ctx.string("timezone", v)?;
    match chrono_tz::Tz::from_str(name) {
        Ok(tz) => Some(tz),
        Err(_) => {
            let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
            let help = closest(name, names).map_or_else(
                || "use an IANA name such as \"Europe/Berlin\" or \"UTC\"".to_string(),
                |c| format!("did you mean `{c}`?"),
            );
            ctx.error(v.span(), format!("unknown timezone \"{name}\""))
                .label("expected an IANA timezone name")
                .help(help);
            None
        }
    }
}

/// The tables of `[[key]]`, with the span to point at for each (its header).
fn tables<'d, 'i>(ctx: &mut Ctx, doc: &'d DeTable<'i>, key: &str) -> Vec<(&'d DeTable<'i>, Range<usize>)> {
    let Some((k, v)) = doc.get_key_value(key) else {
        return Vec::new();
    };
    match v.get_ref() {
        DeValue::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::Table(t) => out.push((t, item.span())),
                    _ => ctx.wrong_type(key, item, &format!("a `[[{key}]]` table")),
                }
            }
            out
        }
        DeValue::Table(_) => {
            ctx.error(k.span(), format!("`[{key}]` must be written `[[{key}]]`"))
                .label(format!("expected an array of tables, `[[{key}]]`"))
                .help(format!("each {key} is its own `[[{key}]]` table (double brackets)"));
            Vec::new()
        }
        _ => {
            ctx.wrong_type(key, v, &format!("`[[{key}]]` tables"));
            Vec::new()
        }
    }
}

/// Reads one `[[group]]` table.
fn parse_group(ctx: &mut Ctx, table: &DeTable<'_>, header: Range<usize>) -> RawGroup {
    ctx.unknown_keys(table, GROUP_KEYS, "a group");
    // A bad name is reported by read_name and does not hide the children.
    let name = read_name(ctx, table, &header, "group");
    let mut ok = true;
    let who = name.as_ref().map_or_else(|| "this group".to_string(), |(n, _)| format!("group `{n}`"));

    let modes: Vec<_> = table
        .iter()
        .filter_map(|(k, v)| MODE_KEYS.iter().find(|(m, _)| *m == k.get_ref().as_ref()).map(|(_, mode)| (k, v, *mode)))
        .collect();
    let mut mode = None;
    let mut children = Vec::new();
    match modes.as_slice() {
        [] => {
            ctx.error(header.clone(), format!("{who} does not say how to run its children"))
                .label("expected one of `gather`, `as_completed`, `race` or `sequence`")
                .help("e.g. `gather = [\"a\", \"b\"]` runs a and b at once; `sequence = [...]` one after another");
        }
        [(k, v, m)] => {
            mode = Some(*m);
            children = read_children(ctx, k.get_ref(), v, &who, &mut ok);
        }
        [(first, _, _), (second, _, _), ..] => {
            ctx.error(second.span(), format!("{who} has both `{}` and `{}`", first.get_ref(), second.get_ref()))
                .label("second mode")
                .note(first.span(), "first mode")
                .help("a group runs its children one way; nest a second group to combine them");
        }
    }

    let limit = table.get("limit").and_then(|v| {
        let n = ctx.integer("limit", v)?;
        match usize::try_from(n).ok().and_then(std::num::NonZeroUsize::new) {
            Some(n) => Some(n),
            None => {
                ctx.error(v.span(), format!("`limit` must be at least 1, found {n}"))
                    .label("expected 1 or more")
                    .help("`limit` is how many children may run at once; remove it to run all at once");
                None
            }
        }
    });
    let on_error = table
        .get("on_error")
        .and_then(|v| ctx.choice("on_error", v, &[("cancel", OnError::Cancel), ("continue", OnError::Continue)]))
        .unwrap_or_default();
    let timeout = table.get("timeout").and_then(|v| ctx.duration("timeout", v, false));
    let mut each = None;
    let each_value = table.get_key_value("each").and_then(|(k, v)| ctx.string("each", v).map(|s| (k, v, s)));
    if let Some((k, v, s)) = each_value {
        if mode.is_some_and(|m| m != GroupMode::AsCompleted) {
            let m = mode.map_or("", GroupMode::key);
            ctx.error(k.span(), format!("`each` is only allowed on `as_completed` groups; {who} uses `{m}`"))
                .label("not allowed here")
                .help(format!("`each` runs a step on each result as soon as it arrives; write `as_completed = [...]` instead of `{m} = [...]`"));
        }
        // Kept even when refused, so its step is not also called unused.
        each = Some((s.to_string(), v.span()));
    }
    let finally = table.get("finally").and_then(|v| ctx.string("finally", v).map(|s| (s.to_string(), v.span())));
    RawGroup { name, mode, children_known: ok && mode.is_some(), children, limit, on_error, timeout, each, finally }
}

/// The names listed under a mode key: a non-empty array of strings.
fn read_children(ctx: &mut Ctx, key: &str, v: &Value<'_>, who: &str, ok: &mut bool) -> Vec<(String, Range<usize>)> {
    let DeValue::Array(items) = v.get_ref() else {
        ctx.wrong_type(key, v, "an array of step or group names");
        *ok = false;
        return Vec::new();
    };
    if items.is_empty() {
        ctx.error(v.span(), format!("{who} is empty"))
            .label("expected at least one step or group name")
            .help(format!("list what it runs, e.g. `{key} = [\"fetch\", \"read\"]`, or remove the group"));
        return Vec::new();
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items.iter() {
        match ctx.string(key, item) {
            Some(s) => out.push((s.to_string(), item.span())),
            None => *ok = false,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{Purpose, load_by_table, load_document, sections};

    /// Reading a table at a time and reading the whole document give the
    /// same job, for every example job and for layouts with every section.
    #[test]
    fn by_table_and_whole_document_agree() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
        let mut sources: Vec<(std::path::PathBuf, String)> = std::fs::read_dir(&dir)
            .expect("jobs/")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| crate::job::JobFormat::of(p) == Some(crate::job::JobFormat::Toml))
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("readable");
                (p, text)
            })
            .collect();
        assert!(sources.len() >= 4, "the example jobs are there");
        let mixed = "description = \"d\"\ntimeout = \"1m\"\n[[group]]\nname = \"main\"\nsequence = [\"a\", \"fan\"]\n\
                     [script_limits]\nmax_operations = 1000\n[[step]]\nname = \"a\"\nsleep = \"1s\"\noutput = [1, [2]]\n\
                     [[group]]\nname = \"fan\"\nas_completed = [\"b\", \"c\"]\neach = \"e\"\nlimit = 1\n\
                     [[step]]\nname = \"b\"\nshell = '''\n[[step]]\necho {{ steps.a.output }}\n'''\n\
                     [[step]]\nname = \"c\"\nscript = \"40 + 2\"\n[[step]]\nname = \"e\"\nexec = [\"echo\", \"{{ input }}\"]\n";
        sources.push((dir.join("mixed.toml"), mixed.to_string()));
        let outcome = "timeout = \"1m\"\n[handlers]\non_failure = \"alert\"\n[[group]]\nname = \"main\"\n\
                       gather = [\"a\"]\nfinally = \"sum\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n\
                       [[step]]\nname = \"sum\"\nshell = \"echo {{ steps.a.status }}\"\n\
                       [[step]]\nname = \"alert\"\nshell = \"echo {{ run.error }}\"\n";
        sources.push((dir.join("outcome.toml"), outcome.to_string()));
        for (path, text) in &sources {
            let whole =
                load_document(path, text, Purpose::Check).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            let layout = sections::layout(text).unwrap_or_else(|| panic!("{} is of the plain layout", path.display()));
            let by_table = load_by_table(path, text, &layout, Purpose::Check)
                .unwrap_or_else(|| panic!("{} read by table", path.display()));
            assert_eq!(by_table, whole, "{}", path.display());
        }
    }

    /// A job big enough to be read on several threads (on a machine with
    /// more than one core) gives the job the whole-document reader gives:
    /// same steps, same order, scripts placed on their own lines.
    #[test]
    fn a_big_job_read_in_parts_is_the_same_job() {
        let n = 2 * super::TABLES_PER_THREAD;
        let names: Vec<String> = (0..n).map(|i| format!("\"s{i}\"")).collect();
        let mut text = format!(
            "[[group]]\nname = \"main\"\nsequence = [\"first\", \"fan\"]\n\
             [[group]]\nname = \"fan\"\ngather = [{}]\nlimit = 8\n\
             [[step]]\nname = \"first\"\nsleep = \"1ms\"\noutput = \"x\"\n",
            names.join(", ")
        );
        for i in 0..n {
            let body = match i % 3 {
                0 => format!("sleep = \"{i}ms\""),
                1 => "shell = \"echo {{ steps.first.output }}\"".to_string(),
                _ => format!("script = \"\"\"\n{i} + 1\n\"\"\""),
            };
            text.push_str(&format!("[[step]]\nname = \"s{i}\"\n{body}\n"));
        }
        let path = Path::new("big.toml");
        let layout = sections::layout(&text).expect("plain layout");
        let by_table = load_by_table(path, &text, &layout, Purpose::Check).expect("read by table");
        assert_eq!(by_table, load_document(path, &text, Purpose::Check).expect("valid"));
        assert_eq!(by_table.root.step_count(), Some(n + 1));
    }

    /// Anything to report sends the file to the whole-document reader, whose
    /// spans are the file's own.
    #[test]
    fn a_job_with_a_mistake_is_not_read_by_table() {
        for text in [
            "[[step]]\nname = \"a\"\nslep = \"1s\"\n",
            "[[group]]\nname = \"main\"\ngather = [\"a\", \"b\"]\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n",
            "[[step]]\nname = \"a\"\nsleep = \"1s\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n",
            "[[step]]\nname = \"a\"\nsleep = \"1s\"\n[script_limits]\nmax_operation = 1\n",
            "tmeout = \"1s\"\n[[step]]\nname = \"a\"\nsleep = \"1s\"\n",
            "timeout = \"1s\"\n",
        ] {
            let layout = sections::layout(text).expect("plain layout");
            assert_eq!(load_by_table(Path::new("j.toml"), text, &layout, Purpose::Check), None, "{text:?}");
            assert!(load_document(Path::new("j.toml"), text, Purpose::Check).is_err(), "{text:?}");
        }
    }
}
