//! Rhai scripts as the loader sees them: compiled (never run) with the
//! sandbox's engine, so a syntax error is a diagnostic at load time; placed
//! in the file they are written in, so that diagnostic points at the right
//! line and column even inside a TOML string; and TOML `script` and
//! `script_file` steps.
//!
//! Architecture Invariant: a script is compiled here, never evaluated: no
//! function of it runs, however it is written. The only file read is a
//! step's `script_file`, size-checked like a job file.

use std::ops::Range;
use std::sync::Arc;

use rhai::{AST, ASTNode, Expr, LexError, OptimizationLevel, ParseError, ParseErrorType, Stmt};
use toml::de::DeValue;

use super::diagnostic::{Diagnostic, display_name};
use super::fields::{Ctx, TemplateUse, Value};
use super::step::LoadEnv;
use crate::job::{ScriptLimits, ScriptSource, ScriptStep};
use crate::script::{Sandbox, sandbox};

/// How messages name a script file.
const SCRIPT_FILE: super::BesideFile = super::BesideFile { key: "script_file", what: "script file", noun: "a script" };

/// Which engine a script runs in, so it is compiled with the same syntax.
#[derive(Clone, Copy)]
pub(crate) enum Dialect {
    /// A Rhai job: the whole asyncio-style API (`spawn(x)` is custom syntax).
    Job,
    /// A TOML `script` step: the bare sandbox, pure computation.
    Step,
}

/// Compiles `code` with the engine of `dialect` and `limits` (the parse-time
/// ones matter: expression depth and string size). Nothing is optimised
/// away, so the AST holds the statements as written.
pub(crate) fn compile(code: &str, limits: &ScriptLimits, dialect: Dialect) -> Result<AST, ParseError> {
    let mut engine = match dialect {
        Dialect::Job => crate::script::api::engine_for_check(limits),
        Dialect::Step => sandbox(&Sandbox { limits: limits.clone(), cancelled: Arc::new(|| false) }),
    };
    engine.set_optimization_level(OptimizationLevel::None);
    let ast = engine.compile(code)?;
    refuse_imports(&ast)?;
    Ok(ast)
}

/// The sandbox has no modules (`max_modules` is 0, no resolver), so an
/// `import` could only fail at run time: it is refused here, at its line and
/// column, like a syntax error.
fn refuse_imports(ast: &AST) -> Result<(), ParseError> {
    let mut at = None;
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Import(_, pos))) = path.last() {
            at = Some(*pos);
            return false;
        }
        true
    });
    match at {
        None => Ok(()),
        Some(pos) => Err(ParseError(
            Box::new(ParseErrorType::BadInput(LexError::ImproperSymbol(
                "import".into(),
                "`import` is not available: scripts run in a sandbox without modules".into(),
            ))),
            pos,
        )),
    }
}

/// Where a script's text lies in the file it is written in: maps the
/// script's 1-based line and column (characters, as Rhai counts them) to a
/// byte offset of that file.
pub(crate) enum Placement {
    /// The script is the whole file.
    File,
    /// The script is a TOML string; `chars[i]` is the file offset where its
    /// i-th character is written, with one more entry for its end.
    Inline {
        /// File offsets, one per character of the script, plus its end.
        chars: Vec<usize>,
        /// The index in `chars` of each line's first character.
        lines: Vec<usize>,
    },
}

impl Placement {
    /// The placement of the script held by the TOML string value at `span`
    /// of `ctx`'s file, whose parsed value is `decoded`. `None` if the text
    /// there does not decode to `decoded` (which the TOML parser would not
    /// allow; then the caller points at the whole value).
    pub(crate) fn toml_string(ctx: &Ctx, span: &Range<usize>, decoded: &str) -> Option<Placement> {
        let raw = ctx.source().get(span.clone())?;
        let (text, offsets) = decode_toml_string(raw)?;
        if text != decoded {
            return None;
        }
        let mut chars: Vec<usize> = offsets.iter().map(|o| span.start + o).collect();
        let close = if raw.starts_with("\"\"\"") || raw.starts_with("'''") { 3 } else { 1 };
        chars.push(span.end - close);
        let mut lines = vec![0];
        lines.extend(text.chars().enumerate().filter(|(_, c)| *c == '\n').map(|(i, _)| i + 1));
        Some(Placement::Inline { chars, lines })
    }

    /// The file offset of the script's `line`:`col`; past the end of a line,
    /// the end of that line.
    pub(crate) fn offset(&self, ctx: &Ctx, line: usize, col: usize) -> usize {
        match self {
            Placement::File => ctx.offset(line, col),
            Placement::Inline { chars, lines } => {
                let last = chars.len() - 1;
                let Some(&first) = lines.get(line.saturating_sub(1)) else {
                    return chars[last];
                };
                // The line's last position is its newline (or the script's end).
                let line_end = lines.get(line).map_or(last, |next| next - 1);
                chars[(first + col.saturating_sub(1)).min(line_end)]
            }
        }
    }

    /// The file line where the script's text starts (its first character).
    pub(crate) fn first_line(&self, ctx: &Ctx) -> usize {
        match self {
            Placement::File => 1,
            Placement::Inline { chars, .. } => ctx.line_col(chars[0]).0,
        }
    }
}

/// Decodes the TOML string written as `raw` (quotes included), giving for
/// each character of its value the byte offset in `raw` where it is
/// written (the first byte of an escape). `None` on anything it does not
/// understand.
fn decode_toml_string(raw: &str) -> Option<(String, Vec<usize>)> {
    let (delim, literal) = match raw {
        r if r.starts_with("\"\"\"") => ("\"\"\"", false),
        r if r.starts_with("'''") => ("'''", true),
        r if r.starts_with('"') => ("\"", false),
        r if r.starts_with('\'') => ("'", true),
        _ => return None,
    };
    let multi = delim.len() == 3;
    let end = raw.len().checked_sub(delim.len())?;
    let mut start = delim.len();
    if start > end || !raw.ends_with(delim) {
        return None;
    }
    if multi {
        // TOML trims a newline right after the opening quotes.
        if raw[start..].starts_with("\r\n") {
            start += 2;
        } else if raw[start..].starts_with('\n') {
            start += 1;
        }
    }
    let body = raw.get(start..end)?;
    let mut text = String::with_capacity(body.len());
    let mut offsets = Vec::with_capacity(body.len());
    let mut it = body.char_indices().map(|(i, c)| (i + start, c)).peekable();
    while let Some((at, c)) = it.next() {
        if c != '\\' || literal {
            text.push(c);
            offsets.push(at);
            continue;
        }
        let (_, e) = it.next()?;
        let hex = |it: &mut std::iter::Peekable<_>, n: usize| -> Option<char> {
            let digits: String = (0..n).map(|_| it.next().map(|(_, d): (usize, char)| d)).collect::<Option<_>>()?;
            char::from_u32(u32::from_str_radix(&digits, 16).ok()?)
        };
        let decoded = match e {
            'b' => '\u{8}',
            't' => '\t',
            'n' => '\n',
            'f' => '\u{c}',
            'r' => '\r',
            'e' => '\u{1b}',
            '"' => '"',
            '\\' => '\\',
            'x' => hex(&mut it, 2)?,
            'u' => hex(&mut it, 4)?,
            'U' => hex(&mut it, 8)?,
            w if multi && w.is_whitespace() => {
                // A line-ending backslash: drops the whitespace and newlines up
                // to the next character.
                while it.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                    it.next();
                }
                continue;
            }
            _ => return None,
        };
        text.push(decoded);
        offsets.push(at);
    }
    Some((text, offsets))
}

/// The span of the token at `offset` of `text`: a word (identifier or
/// number), else one character; empty at a line's end.
pub(crate) fn token_at(text: &str, offset: usize) -> Range<usize> {
    let rest = text.get(offset..).unwrap_or("");
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let len = match rest.chars().next() {
        None | Some('\n' | '\r') => 0,
        Some(c) if word(c) => rest.find(|c: char| !word(c)).unwrap_or(rest.len()),
        Some(c) => c.len_utf8(),
    };
    offset..offset + len
}

/// Reports a Rhai syntax error in the script placed at `at` of `ctx`'s file;
/// `whole` is the span to point at when the error has no position.
pub(crate) fn syntax_error<'c>(
    ctx: &'c mut Ctx,
    e: &ParseError,
    at: &Placement,
    whole: Range<usize>,
) -> &'c mut Diagnostic {
    let Some(line) = e.1.line() else {
        return ctx
            .error(whole, format!("invalid Rhai script: {}", sentence_case(&e.0.to_string())))
            .label("the Rhai syntax breaks here");
    };
    let offset = at.offset(ctx, line, e.1.position().unwrap_or(1));
    let (span, label) = match &*e.0 {
        // Rhai points at the token after the gap; point at the gap, as rustc does.
        ParseErrorType::MissingToken(token, _) => match gap_before(ctx.source(), offset, at.offset(ctx, 1, 1)) {
            Some(gap) => (gap..gap, format!("expected `{token}` here")),
            None => (token_at(ctx.source(), offset), "the Rhai syntax breaks here".to_string()),
        },
        ParseErrorType::BadInput(LexError::ImproperSymbol(symbol, _)) if symbol == "import" => {
            (token_at(ctx.source(), offset), "the sandbox has no modules to import".to_string())
        }
        _ => (token_at(ctx.source(), offset), "the Rhai syntax breaks here".to_string()),
    };
    ctx.error(span, format!("invalid Rhai script: {}", sentence_case(&e.0.to_string()))).label(label)
}

/// When the token at `offset` starts a line, the end of the last line before
/// it that has code (and no comment that could hide the gap); not before
/// `floor` (the script's start).
fn gap_before(text: &str, offset: usize, floor: usize) -> Option<usize> {
    let before = text.get(floor..offset)?;
    let code = before.trim_end();
    if !before[code.len()..].contains('\n') || code.is_empty() {
        return None;
    }
    let last_line = code.rsplit('\n').next().unwrap_or(code);
    if last_line.contains("//") || last_line.contains("*/") {
        return None;
    }
    Some(floor + code.len())
}

/// Rhai's message with its first letter lowered to read as a clause.
fn sentence_case(message: &str) -> String {
    let mut chars = message.chars();
    match (chars.next(), chars.next()) {
        (Some(a), Some(b)) if a.is_uppercase() && !b.is_uppercase() => {
            a.to_lowercase().chain(message[a.len_utf8()..].chars()).collect()
        }
        _ => message.to_string(),
    }
}

/// A `steps.NAME` (or `steps["NAME"]`) read in a script: the name, and the
/// script's line:col where `steps` starts and where NAME ends (exclusive).
pub(crate) struct StepRef {
    pub(crate) name: String,
    pub(crate) start: (usize, usize),
    pub(crate) end: (usize, usize),
}

/// Every `steps.NAME` and `steps["NAME"]` in `ast`, function bodies included.
pub(crate) fn step_refs(ast: &AST) -> Vec<StepRef> {
    let mut refs = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        let Some(ASTNode::Expr(Expr::Dot(x, _, _) | Expr::Index(x, _, _))) = path.last() else {
            return true;
        };
        let Expr::Variable(var, _, at) = &x.lhs else {
            return true;
        };
        if var.1.as_str() != "steps" || !var.2.is_empty() {
            return true;
        }
        let mut rhs = &x.rhs;
        while let Expr::Dot(y, _, _) | Expr::Index(y, _, _) = rhs {
            rhs = &y.lhs;
        }
        let found = match rhs {
            Expr::Property(p, pos) => Some((p.2.to_string(), *pos, 0)),
            Expr::StringConstant(s, pos) => Some((s.to_string(), *pos, 3)),
            _ => None,
        };
        if let (Some((name, pos, quotes)), Some(line), Some(col)) = (found, at.line(), at.position())
            && let (Some(end_line), Some(end_col)) = (pos.line(), pos.position())
        {
            let end = (end_line, end_col + name.chars().count() + quotes);
            refs.push(StepRef { name, start: (line, col), end });
        }
        true
    });
    refs
}

/// `script = "..."` or `script_file = "x.rhai"` of a step: the script,
/// compiled to check it, with its `steps.NAME` reads added to `uses`.
pub(crate) fn parse_script_step(
    ctx: &mut Ctx,
    env: &LoadEnv<'_>,
    key: &str,
    v: &Value<'_>,
    uses: &mut Vec<TemplateUse>,
) -> Option<ScriptStep> {
    let text = ctx.string(key, v)?.to_string();
    if key == "script" {
        return inline(ctx, env, v, text, uses);
    }
    let span = v.span();
    if text.trim().is_empty() {
        ctx.error(span, "`script_file` is empty").label("expected a path such as \"report.rhai\"");
        return None;
    }
    let (path, bytes) = super::read_beside_job(ctx, span.clone(), env.dir, &text, env.identity, &SCRIPT_FILE)?;
    let code = match String::from_utf8(bytes) {
        Ok(code) => code,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            ctx.error(span, format!("the script file \"{text}\" is not valid UTF-8 (at byte {at})"))
                .label(format!("read from {}", path.display()))
                .help("scripts must be UTF-8 text; re-save the file as UTF-8");
            return None;
        }
    };
    let ast = match compile(&code, &ScriptLimits::default().merged(env.limits), Dialect::Step) {
        Ok(ast) => ast,
        Err(e) => {
            // The diagnostic is in the script file, sorted where the job file names it.
            let mut script_ctx = Ctx::rhai(display_name(&path), Arc::from(code.as_str()));
            let (line, col) = ctx.line_col(span.start);
            let job_file = ctx.file().clone();
            syntax_error(&mut script_ctx, &e, &Placement::File, 0..0)
                .help(format!("this is the `script_file` of a step in {job_file}:{line}:{col}"))
                .anchor(span.start);
            ctx.diagnostics.append(&mut script_ctx.diagnostics);
            return None;
        }
    };
    // Reads of other steps cannot point into another file: point at the path.
    let steps: Vec<_> = step_refs(&ast).into_iter().map(|r| (r.name, span.clone())).collect();
    if !steps.is_empty() {
        uses.push(TemplateUse { steps, input: None, outcome: Vec::new() });
    }
    Some(ScriptStep { code: Arc::from(code), source: ScriptSource::File(path), limits: env.limits.clone() })
}

/// `script = "..."`: compiled in place, errors pointing into the TOML file.
fn inline(
    ctx: &mut Ctx,
    env: &LoadEnv<'_>,
    v: &Value<'_>,
    code: String,
    uses: &mut Vec<TemplateUse>,
) -> Option<ScriptStep> {
    let span = v.span();
    let DeValue::String(decoded) = v.get_ref() else {
        return None;
    };
    let at = Placement::toml_string(ctx, &span, decoded);
    let line = at.as_ref().map_or_else(|| ctx.line_col(span.start).0, |p| p.first_line(ctx));
    match compile(&code, &ScriptLimits::default().merged(env.limits), Dialect::Step) {
        Ok(ast) => {
            let steps: Vec<_> = step_refs(&ast)
                .into_iter()
                .map(|r| {
                    let place = at
                        .as_ref()
                        .map_or(span.clone(), |p| p.offset(ctx, r.start.0, r.start.1)..p.offset(ctx, r.end.0, r.end.1));
                    (r.name, place)
                })
                .collect();
            if !steps.is_empty() {
                uses.push(TemplateUse { steps, input: None, outcome: Vec::new() });
            }
        }
        Err(e) => {
            match &at {
                Some(p) => syntax_error(ctx, &e, p, span),
                None => syntax_error(ctx, &e, &Placement::File, span.clone()),
            };
            return None;
        }
    }
    Some(ScriptStep { code: Arc::from(code), source: ScriptSource::Inline { line }, limits: env.limits.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_decode_with_their_offsets() {
        let (text, at) = decode_toml_string(r#""a\tb\u00e9""#).unwrap();
        assert_eq!(text, "a\tbé");
        assert_eq!(at, [1, 2, 4, 5]);
        let (text, at) = decode_toml_string("\"\"\"\nx\\\n   y\"\"\"").unwrap();
        assert_eq!(text, "xy");
        assert_eq!(at, [4, 10]);
        let (text, at) = decode_toml_string("'''\r\na\\n'''").unwrap();
        assert_eq!(text, "a\\n");
        assert_eq!(at, [5, 6, 7]);
    }

    #[test]
    fn tokens_are_words_or_single_characters() {
        assert_eq!(token_at("let abc = 1;", 4), 4..7);
        assert_eq!(token_at("let abc = 1;", 8), 8..9);
        assert_eq!(token_at("x\n", 1), 1..1);
    }

    #[test]
    fn step_reads_are_found_in_every_form() {
        let ast = compile(
            "let a = steps.fetch.output;\nfn f() { steps[\"read\"].output }\nsteps.x; steps[name];",
            &ScriptLimits::default(),
            Dialect::Step,
        )
        .unwrap();
        let refs: Vec<_> = step_refs(&ast).into_iter().map(|r| (r.name, r.start, r.end)).collect();
        assert_eq!(
            refs,
            [
                ("fetch".to_string(), (1, 9), (1, 20)),
                ("x".to_string(), (3, 1), (3, 8)),
                ("read".to_string(), (2, 10), (2, 23)),
            ]
        );
    }
}
