//! Rhai job files → [`Job`]: the script, compiled to check its syntax, and
//! its settings, read from top-level `const NAME = <literal>;` statements.
//!
//! Settings are read from the syntax tree, never by running the script, so a
//! script whose body would fail still loads and keeps its schedule. Their
//! values go through the same readers as the TOML format's top-level keys
//! and `[script_limits]` (`toml_job::read_settings`, `limits::read_limits`), so
//! a value means the same and fails the same way in either format.
//!
//! Architecture Invariant: nothing of the script runs here: no statement,
//! no function, not even a constant expression is evaluated.

use std::borrow::Cow;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use rhai::{AST, ASTFlags, Expr, Ident, Position, Stmt};
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::MAX_FILE_BYTES;
use super::diagnostic::{LoadError, display_name};
use super::fields::Ctx;
use super::identity::Purpose;
use super::limits::{LIMIT_KEYS, MAX_EXPR_DEPTH, read_limits};
use super::script::{Dialect, Placement, compile, syntax_error};
use super::toml_job::{SETTING_KEYS, new_job, read_settings};
use crate::job::{Job, LimitOverrides, Node, ScriptLimits, ScriptNode, ScriptSource};

/// Loads a Rhai job from `source`; `path` names it in messages and gives the
/// job its name and folder.
pub(crate) fn load(path: &Path, source: &str, purpose: Purpose) -> Result<Job, LoadError> {
    let mut ctx = Ctx::rhai(display_name(path), Arc::from(source));
    ctx.set_purpose(purpose);
    // First with room for any limits the script may set, to read them...
    let roomy = ScriptLimits {
        max_expr_depth: MAX_EXPR_DEPTH,
        max_string_bytes: usize::try_from(MAX_FILE_BYTES).unwrap_or(usize::MAX),
        ..ScriptLimits::default()
    };
    let ast = match compile(source, &roomy, Dialect::Job) {
        Ok(ast) => ast,
        Err(e) => {
            syntax_error(&mut ctx, &e, &Placement::File, 0..0);
            return Err(LoadError::new(path, ctx.diagnostics));
        }
    };
    if ast.statements().is_empty() && !ast.has_functions() {
        let message = if source.trim().is_empty() { "this job is empty" } else { "this job does nothing" };
        ctx.error(0..0, message)
            .label("expected a script")
            .help("e.g. `print(await_step(exec([\"echo\", \"hello\"])));`");
        return Err(LoadError::new(path, ctx.diagnostics));
    }

    let found = find_settings(&mut ctx, &ast);
    // The TOML readers keep a number's text; it lives here, as long as the tables.
    let texts: Vec<Vec<String>> = found
        .iter()
        .map(|s| {
            let mut texts = Vec::new();
            number_texts(s.value, &mut texts);
            texts
        })
        .collect();
    let (settings, limits) = setting_tables(&mut ctx, &found, &texts);
    let mut job = new_job(
        path,
        Node::Script(ScriptNode {
            name: "main".to_string(),
            code: Arc::from(source),
            source: ScriptSource::File(path.to_path_buf()),
            limits: LimitOverrides::default(),
            entry: None,
        }),
    );
    read_settings(&mut ctx, &settings, &mut job);
    let limits = read_limits(&mut ctx, &limits);
    // ...then with the limits it runs under (a lower depth may now fail).
    if ctx.diagnostics.is_empty()
        && let Err(e) = compile(source, &ScriptLimits::default().merged(&limits), Dialect::Job)
    {
        syntax_error(&mut ctx, &e, &Placement::File, 0..0);
    }
    if !ctx.diagnostics.is_empty() {
        let mut diagnostics = ctx.diagnostics;
        diagnostics.sort_by_key(|d| d.order());
        return Err(LoadError::new(path, diagnostics));
    }
    if let Node::Script(node) = &mut job.root {
        node.limits = limits;
    }
    // `fn on_failure(run)` & co at the top: handlers, run as script nodes
    // that call the function instead of the body.
    let handler = |key: &str| {
        let defined = ast.iter_functions().any(|f| f.name == key && f.params.len() == 1);
        let Node::Script(main) = &job.root else { return None };
        defined.then(|| {
            Box::new(Node::Script(ScriptNode { name: key.to_string(), entry: Some(key.to_string()), ..main.clone() }))
        })
    };
    job.handlers.on_failure = handler("on_failure");
    job.handlers.on_success = handler("on_success");
    job.handlers.on_exit = handler("on_exit");
    Ok(job)
}

/// A top-level `const` (or `let`) whose name is a setting.
struct Setting<'a> {
    ident: &'a Ident,
    value: &'a Expr,
    /// `const NAME`: where the declaration is pointed at.
    decl: Range<usize>,
    /// `NAME`.
    name: Range<usize>,
}

/// The settings declared at the top of the script. Reports settings
/// declared with `let` or set twice, and near-misses of their names.
fn find_settings<'a>(ctx: &mut Ctx, ast: &'a AST) -> Vec<Setting<'a>> {
    let mut found: Vec<Setting<'a>> = Vec::new();
    for stmt in ast.statements() {
        let Stmt::Var(x, flags, pos) = stmt else {
            continue;
        };
        let (ident, value, _) = &**x;
        let name = ident.name.as_str();
        let name_start = offset(ctx, ident.pos);
        let name_span = name_start..name_start + name.len();
        let decl = offset(ctx, *pos).min(name_start)..name_span.end;
        let is_setting = SETTING_KEYS.contains(&name) || LIMIT_KEYS.contains(&name);
        let is_const = flags.contains(ASTFlags::CONSTANT);
        if !is_setting {
            if is_const && let Some(meant) = near_miss(name) {
                ctx.error(name_span, format!("unknown setting `{name}`"))
                    .label("not a setting")
                    .help(format!(
                        "did you mean `{meant}`? (if `{name}` is the script's own constant, give it a name less like a setting's)"
                    ));
            }
            continue;
        }
        if !is_const {
            // Suggest the value as written, if it is short enough to repeat.
            let value_at = offset(ctx, value.start_position());
            let written = ctx.source().get(value_at..literal_end(ctx.source(), value_at)).unwrap_or("");
            let shown = if written.is_empty() || written.len() > 40 || written.contains('\n') {
                example(name)
            } else {
                written.to_string()
            };
            ctx.error(decl, format!("`{name}` is a setting, so it must be declared with `const`"))
                .label("`let` declares a variable of the script")
                .help(format!(
                    "write `const {name} = {shown};`: settings are constants, read without running the script"
                ));
            continue;
        }
        if let Some(first) = found.iter().find(|s| s.ident.name == ident.name) {
            let first = first.decl.clone();
            ctx.error(decl, format!("`{name}` is set twice"))
                .label("second setting")
                .note(first, "first set here")
                .help("a setting has one value; remove one of them");
            continue;
        }
        found.push(Setting { ident, value, decl, name: name_span });
    }
    found
}

/// The settings as two tables for the shared readers: job settings and
/// sandbox limits; `texts` holds each setting's [`number_texts`]. Reports
/// values that are not literals.
fn setting_tables<'t>(ctx: &mut Ctx, found: &[Setting<'_>], texts: &'t [Vec<String>]) -> (DeTable<'t>, DeTable<'t>) {
    let mut settings = DeTable::new();
    let mut limits = DeTable::new();
    for (s, texts) in found.iter().zip(texts) {
        let name = s.ident.name.as_str();
        let Some(value) = literal(ctx, s.value, &mut texts.iter()) else {
            let value_at = offset(ctx, s.value.start_position());
            let value_span = value_at..literal_end(ctx.source(), value_at);
            ctx.error(
                s.decl.clone(),
                format!(
                    "settings are read without running the script, so `{name}` must be a literal such as {}",
                    example(name)
                ),
            )
            .label("read before the script runs")
            .note(value_span, "not a literal")
            .help(format!("write the value itself: `const {name} = {};`", example(name)));
            continue;
        };
        let key = Spanned::new(s.name.clone(), Cow::Owned(name.to_string()));
        if LIMIT_KEYS.contains(&name) {
            limits.insert(key, value);
        } else {
            settings.insert(key, value);
        }
    }
    (settings, limits)
}

/// The text of each number in `expr`, in the order [`literal`] takes them.
fn number_texts(expr: &Expr, out: &mut Vec<String>) {
    match expr {
        Expr::IntegerConstant(n, _) => out.push(n.to_string()),
        Expr::FloatConstant(f, _) => out.push(float_text(**f)),
        Expr::Array(items, _) => items.iter().for_each(|i| number_texts(i, out)),
        Expr::Map(m, _) => m.0.iter().for_each(|(_, i)| number_texts(i, out)),
        Expr::DynamicConstant(d, _) if !d.is_string() && !d.is_bool() => {
            if let Ok(n) = d.as_int() {
                out.push(n.to_string());
            } else if let Ok(f) = d.as_float() {
                out.push(float_text(f));
            }
        }
        _ => {}
    }
}

/// A literal value of a setting, the way the TOML readers take it, spanned
/// in the script's text; `None` if `expr` is not a literal. `texts` gives
/// the text of each number ([`number_texts`]).
fn literal<'t>(ctx: &Ctx, expr: &Expr, texts: &mut std::slice::Iter<'t, String>) -> Option<Spanned<DeValue<'t>>> {
    let start = offset(ctx, expr.position());
    let span = start..literal_end(ctx.source(), start);
    let value = match expr {
        Expr::StringConstant(s, _) => DeValue::String(Cow::Owned(s.to_string())),
        Expr::CharConstant(c, _) => DeValue::String(Cow::Owned(c.to_string())),
        Expr::BoolConstant(b, _) => DeValue::Boolean(*b),
        Expr::IntegerConstant(..) | Expr::FloatConstant(..) => number(texts.next()?)?,
        Expr::Array(items, _) => {
            DeValue::Array(items.iter().map(|i| literal(ctx, i, texts)).collect::<Option<DeArray<'_>>>()?)
        }
        Expr::Map(m, _) => {
            let mut table = DeTable::new();
            for (ident, item) in &m.0 {
                let at = offset(ctx, ident.pos);
                let key = Spanned::new(at..at + ident.name.len(), Cow::Owned(ident.name.to_string()));
                table.insert(key, literal(ctx, item, texts)?);
            }
            DeValue::Table(table)
        }
        Expr::DynamicConstant(d, _) => {
            if let Ok(s) = d.clone().into_string() {
                DeValue::String(Cow::Owned(s))
            } else if let Ok(b) = d.as_bool() {
                DeValue::Boolean(b)
            } else if d.as_int().is_ok() || d.as_float().is_ok() {
                number(texts.next()?)?
            } else {
                return None;
            }
        }
        _ => return None,
    };
    Some(Spanned::new(span, value))
}

/// A number as the TOML readers take it: they keep its text.
fn number(text: &str) -> Option<DeValue<'_>> {
    DeValue::parse(text).ok().map(Spanned::into_inner).filter(|v| matches!(v, DeValue::Integer(_) | DeValue::Float(_)))
}

/// A float as TOML writes it.
fn float_text(f: f64) -> String {
    if f.is_nan() {
        "nan".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "inf".to_string() } else { "-inf".to_string() }
    } else {
        format!("{f:?}")
    }
}

/// The byte offset of a Rhai position in the script (its start if none).
fn offset(ctx: &Ctx, pos: Position) -> usize {
    match pos.line() {
        Some(line) => ctx.offset(line, pos.position().unwrap_or(1)),
        None => 0,
    }
}

/// Where the literal written at `start` of `text` ends: a string, a char, a
/// raw string, a bracketed array or map, or a word (number, `true`).
fn literal_end(text: &str, start: usize) -> usize {
    let rest = text.get(start..).unwrap_or("");
    let Some(first) = rest.chars().next() else {
        return start;
    };
    let len = match first {
        '"' | '\'' | '`' => {
            let mut escaped = false;
            let mut end = rest.len();
            for (i, c) in rest.char_indices().skip(1) {
                if escaped {
                    escaped = false;
                } else if c == '\\' && first != '`' {
                    escaped = true;
                } else if c == first {
                    end = i + 1;
                    break;
                } else if c == '\n' && first != '`' {
                    end = i;
                    break;
                }
            }
            end
        }
        '#' if rest[1..].trim_start_matches('#').starts_with('"') => {
            let hashes = rest.len() - rest.trim_start_matches('#').len();
            let close = format!("\"{}", "#".repeat(hashes));
            rest[hashes + 1..].find(&close).map_or(rest.len(), |i| hashes + 1 + i + close.len())
        }
        '[' | '#' | '(' => {
            let mut depth = 0usize;
            let mut i = 0;
            let mut end = rest.len();
            while let Some(c) = rest[i..].chars().next() {
                match c {
                    '[' | '{' | '(' => depth += 1,
                    ']' | '}' | ')' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = i + 1;
                            break;
                        }
                    }
                    '"' | '\'' | '`' => {
                        i = literal_end(text, start + i) - start;
                        continue;
                    }
                    _ => {}
                }
                i += c.len_utf8();
            }
            end
        }
        _ => {
            let mut prev = first;
            let mut end = first.len_utf8();
            for (i, c) in rest.char_indices().skip(1) {
                let exponent_sign = (c == '+' || c == '-') && matches!(prev, 'e' | 'E');
                if !(c.is_alphanumeric() || c == '_' || c == '.' || exponent_sign) {
                    break;
                }
                end = i + c.len_utf8();
                prev = c;
            }
            end
        }
    };
    start + len
}

/// The setting `name` is a near miss of, if any. Conservative, since any
/// other `const` is the script's own: names of 5 characters or more, one
/// edit away (two from 8 characters), a transposition counting as one.
fn near_miss(name: &str) -> Option<&'static str> {
    let len = name.chars().count();
    if len < 5 {
        return None;
    }
    let max = if len < 8 { 1 } else { 2 };
    SETTING_KEYS
        .iter()
        .chain(LIMIT_KEYS)
        .map(|k| (*k, strsim::damerau_levenshtein(name, k)))
        .filter(|(_, d)| *d <= max)
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k)
}

/// A literal that `name` accepts, for messages.
fn example(name: &str) -> String {
    let defaults = ScriptLimits::default();
    match name {
        "description" => "\"what this job does\"".to_string(),
        "schedule" => "\"*/10 * * * *\"".to_string(),
        "timezone" => "\"Europe/Berlin\"".to_string(),
        "overlap" => "\"skip\"".to_string(),
        "on_node_loss" => "\"rerun\"".to_string(),
        "semaphore" => "\"backup\"".to_string(),
        "catch_up" => "\"latest\"".to_string(),
        "catch_up_window" => "\"6h\"".to_string(),
        "keep_runs" => "100".to_string(),
        "keep_for" => "\"30d\"".to_string(),
        "max_output" => "#{ head: 1048576, tail: 1048576 }".to_string(),
        "env" => "#{ API_URL: \"https://example.org\" }".to_string(),
        "env_file" => "\".env\"".to_string(),
        "cwd" => "\"work\"".to_string(),
        "max_operations" => defaults.max_operations.to_string(),
        "max_call_depth" => defaults.max_call_depth.to_string(),
        "max_expr_depth" => defaults.max_expr_depth.to_string(),
        "max_string_bytes" => defaults.max_string_bytes.to_string(),
        "max_array_len" => defaults.max_array_len.to_string(),
        "max_map_len" => defaults.max_map_len.to_string(),
        _ => "\"30s\"".to_string(),
    }
}
