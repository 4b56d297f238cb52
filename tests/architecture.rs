//! The layering of ARCHITECTURE.md as a check, in the spirit of
//! rust-analyzer's tidy tests: read every `src/**/*.rs`, find which top-level
//! modules each module names (`use crate::x`, `crate::x::` paths in code,
//! `use crate::{a, b}` groups, `super::` chains that climb to the crate root),
//! and fail — with the file, the line and the rule — when a module names one
//! that [`RULES`] does not allow. Comments, doc comments and string literals
//! are skipped, so a doc link or a log message is never an import.
//!
//! [`RULES`] is the source of truth for the layering; ARCHITECTURE.md points
//! here. Std only, so it costs no build time.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Any top-level module.
const ALL: &[&str] = &["*"];

/// Who may name whom: `(module, the top-level modules it may name, why)`.
/// A module may always name itself. An edge not listed here is forbidden: to
/// add one, add it here with its reason (and to ARCHITECTURE.md if it changes
/// the map). `main.rs` is the binary: it names the library as `gatherd::`.
const RULES: &[(&str, &[&str], &str)] = &[
    // Pure data (no I/O, no tokio): everything else builds on it, so it can
    // build on nothing.
    ("job", &[], "the job model is plain data and depends on nothing else in the crate"),
    // "When is the next fire after t": pure functions of a `Trigger` and a
    // `now` the caller passes; nothing that does I/O or holds state.
    ("schedule", &["job"], "schedule is pure: it reads the job model's `Trigger` and nothing else"),
    // The Rhai API only describes steps and asks its driver (in exec) to run
    // them; seeing exec would let it run one itself.
    ("script", &["job"], "script/ never runs a step: it describes steps and asks, so it may not see exec"),
    // The executor takes a Job and a RunContext and emits RunEvents; it knows
    // nothing of the daemon, the store or the terminal.
    ("exec", &["job", "script"], "the executor knows only the job model and the script engine it drives"),
    // The loader never runs anything and never touches the network: it reads
    // files into a Job, checks cron expressions with schedule and compiles
    // scripts with script's checking engine, but never reaches exec.
    ("load", &["job", "schedule", "script"], "the loader never runs anything: job, schedule and script only"),
    // The configuration file's defaults are those of the types it configures
    // (the blocking pool's size, the script limits and the ranges the loader
    // checks them with, the API's address); it decides nothing and runs
    // nothing.
    (
        "config",
        &["api", "exec", "job", "load"],
        "the config only names (and checks) the settings types of api, exec, job and load",
    ),
    // notify → JobFileEvents: facts about files, no policy. It shares the
    // loader's rule for what is a job file (`discover`, `is_ignored_name`,
    // `JobFormat`) so the two never disagree, but never decides or runs
    // anything.
    (
        "watch",
        &["job", "load"],
        "watch reports facts about files: it may share job's and load's file rules, never run or decide",
    ),
    // One more sink of the RunEvent stream: it knows exec's events and report
    // and the job model, never who drives it (daemon, api, cli).
    ("store", &["exec", "job"], "the store is a sink of exec's events: never the daemon, the API or the CLI"),
    // The API reads history from the store and reaches the daemon only through
    // its own `Control` trait, which the daemon implements: so it never
    // touches the job table. It may use the pure `job` types (the accept
    // loop's `job::Backoff`, shared with the store's writer and the daemon).
    (
        "api",
        &["exec", "job", "store"],
        "the API reaches the daemon only through its `Control` trait, never `crate::daemon`; `job` is pure data",
    ),
    // The supervisor wires the whole chain (watch → load → exec → sinks) and
    // implements the API's `Control`; only the CLI, which starts it, is above.
    (
        "daemon",
        &["api", "config", "exec", "job", "load", "schedule", "store", "watch"],
        "the daemon wires everything below it, never the CLI above it",
    ),
    // The top: clap commands, rendering, and the only module that prints.
    ("cli", ALL, "the CLI is the top layer and may use everything"),
    // The thin binary: parse args, set up logging, hand over to `cli::dispatch`.
    ("main.rs", &["cli"], "main.rs is a thin shell that only calls into the CLI"),
];

/// One module naming another: where, and which top-level name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    line: usize,
    target: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Star,
    Other,
}

#[derive(Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

/// Rust source → the tokens that matter for paths, without comments, string,
/// char and byte literals, and lifetimes.
fn tokenize(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    // Skips a "..." literal whose opening quote is at `i`; returns the index after it.
    let skip_string = |mut i: usize, line: &mut usize| {
        i += 1;
        while i < c.len() && c[i] != '"' {
            if c[i] == '\\' {
                i += 1;
            }
            if at(i) == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i + 1
    };
    // Skips a raw string r#"..."# whose first `#` or `"` is at `i`.
    let skip_raw = |mut i: usize, line: &mut usize| {
        let mut hashes = 0;
        while at(i) == '#' {
            hashes += 1;
            i += 1;
        }
        i += 1; // the opening quote
        loop {
            if i >= c.len() {
                return i;
            }
            if c[i] == '\n' {
                *line += 1;
            }
            if c[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                return i + 1 + hashes;
            }
            i += 1;
        }
    };
    // Skips a char literal whose opening quote is at `i`, or just the quote of
    // a lifetime or label.
    let skip_quote = |i: usize| {
        if at(i + 1) == '\\' {
            // Past the backslash and the escaped char: `'\''`, `'\\'`, `'\u{..}'`.
            let mut j = i + 3;
            while j < c.len() && c[j] != '\'' {
                j += 1;
            }
            j + 1
        } else if at(i + 2) == '\'' {
            i + 3
        } else {
            i + 1
        }
    };
    while i < c.len() {
        let ch = c[i];
        let tok = match ch {
            '\n' => {
                line += 1;
                i += 1;
                continue;
            }
            '/' if at(i + 1) == '/' => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if at(i + 1) == '*' => {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if c[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
                continue;
            }
            '"' => {
                i = skip_string(i, &mut line);
                continue;
            }
            '\'' => {
                i = skip_quote(i);
                continue;
            }
            ':' if at(i + 1) == ':' => {
                i += 2;
                out.push(Token { tok: Tok::PathSep, line });
                continue;
            }
            '{' => Tok::Open,
            '}' => Tok::Close,
            ',' => Tok::Comma,
            '*' => Tok::Star,
            ch if ch.is_whitespace() => {
                i += 1;
                continue;
            }
            ch if ch.is_ascii_digit() => {
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
                continue;
            }
            ch if ch.is_alphabetic() || ch == '_' => {
                let start = i;
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
                let word: String = c[start..i].iter().collect();
                match (word.as_str(), at(i)) {
                    ("r" | "br" | "cr", '"') => i = skip_raw(i, &mut line),
                    ("r" | "br" | "cr", '#') if at(i + 1) == '#' || at(i + 1) == '"' => i = skip_raw(i, &mut line),
                    ("b" | "c", '"') => i = skip_string(i, &mut line),
                    ("b", '\'') => i = skip_quote(i),
                    ("r", '#') => {
                        // A raw identifier, `r#name`.
                        let start = i + 1;
                        i += 1;
                        while at(i).is_alphanumeric() || at(i) == '_' {
                            i += 1;
                        }
                        out.push(Token { tok: Tok::Ident(c[start..i].iter().collect()), line });
                    }
                    _ => out.push(Token { tok: Tok::Ident(word), line }),
                }
                continue;
            }
            _ => Tok::Other,
        };
        out.push(Token { tok, line });
        i += 1;
    }
    out
}

/// The top-level modules that `src`, the file of module `module` (its path
/// from the crate root, e.g. `["exec", "step", "http"]`), names through paths
/// that start at `root` (`crate` in the library, `gatherd` in the binary) or
/// climb there with `super::`. Names within the file's own top-level module
/// are not reported.
fn references(src: &str, module: &[String], root: &str) -> Vec<Reference> {
    let tokens = tokenize(src);
    let ident = |i: usize| match tokens.get(i) {
        Some(Token { tok: Tok::Ident(s), .. }) => Some(s.as_str()),
        _ => None,
    };
    let is = |i: usize, t: Tok| tokens.get(i).is_some_and(|k| k.tok == t);
    let mut found = Vec::new();
    // Inline `mod name { ... }`s, so `super::` from inside one resolves right.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].tok {
            Tok::Open => depth += 1,
            Tok::Close => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            Tok::Ident(w) if w == "mod" => {
                if let Some(name) = ident(i + 1)
                    && is(i + 2, Tok::Open)
                {
                    inline.push((name.to_string(), depth + 1));
                }
            }
            _ => {}
        }
        let starts_path = i == 0 || !is(i - 1, Tok::PathSep);
        let word = ident(i);
        if !(starts_path && is(i + 1, Tok::PathSep) && (word == Some(root) || word == Some("super"))) {
            i += 1;
            continue;
        }
        // Where the path starts: the crate root, or as many levels up from
        // here as it has `super`s.
        let mut base: Vec<String> = if word == Some(root) {
            Vec::new()
        } else {
            module.iter().cloned().chain(inline.iter().map(|(m, _)| m.clone())).collect()
        };
        let mut j = i;
        while ident(j) == Some("super") && is(j + 1, Tok::PathSep) {
            base.pop();
            j += 2;
        }
        if word == Some(root) {
            j += 2;
        }
        if base.is_empty() {
            // At the crate root: the next segment, or each item of a group.
            match &tokens.get(j).map(|t| &t.tok) {
                Some(Tok::Ident(name)) => found.push(Reference { line: tokens[j].line, target: name.clone() }),
                Some(Tok::Star) => found.push(Reference { line: tokens[j].line, target: "*".into() }),
                Some(Tok::Open) => {
                    let mut level = 0;
                    let mut item_start = true;
                    while j < tokens.len() {
                        match &tokens[j].tok {
                            Tok::Open => {
                                level += 1;
                                item_start = level == 1;
                            }
                            Tok::Close => {
                                level -= 1;
                                if level == 0 {
                                    break;
                                }
                            }
                            Tok::Comma if level == 1 => item_start = true,
                            Tok::Ident(name) if item_start && level == 1 => {
                                if name != "self" {
                                    found.push(Reference { line: tokens[j].line, target: name.clone() });
                                }
                                item_start = false;
                            }
                            Tok::Star if item_start && level == 1 => {
                                found.push(Reference { line: tokens[j].line, target: "*".into() });
                                item_start = false;
                            }
                            _ => item_start = false,
                        }
                        j += 1;
                    }
                    // Past the group's closing brace, so the braces stay balanced.
                    j += 1;
                }
                _ => {}
            }
        }
        i = j.max(i + 1);
    }
    let own = module.first();
    found.retain(|r| Some(&r.target) != own);
    found
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("a readable directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `exec/step/mod.rs` → `exec::step`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let file = parts.pop().expect("a file name");
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules of the library: a folder or a `.rs` file in `src/`.
fn top_level_modules() -> BTreeSet<String> {
    fs::read_dir(src_dir())
        .expect("src/ is readable")
        .map(|e| e.expect("a readable directory entry").path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            if p.is_dir() {
                Some(name)
            } else {
                name.strip_suffix(".rs").filter(|n| *n != "lib" && *n != "main").map(str::to_string)
            }
        })
        .collect()
}

fn rule_for(module: &str) -> &'static (&'static str, &'static [&'static str], &'static str) {
    RULES.iter().find(|(m, _, _)| *m == module).unwrap_or_else(|| {
        panic!("module `{module}` has no rule in RULES (tests/architecture.rs): add one with its reason")
    })
}

/// Why `module` may not name `target`, or `None` if it may.
fn broken_rule(module: &str, target: &str, known: &BTreeSet<String>) -> Option<String> {
    let (_, allowed, why) = rule_for(module);
    if !known.contains(target) {
        return Some(format!(
            "`{target}` is not a top-level module, so the layering cannot be checked through it \
             (a glob or a re-export at the crate root?): name the module instead"
        ));
    }
    if *allowed == ALL || allowed.contains(&target) {
        return None;
    }
    Some(format!("`{module}` may not use `{target}`: {module} → {{{}}} only, because {why}", allowed.join(", ")))
}

/// Every reference in the real tree, as `(file relative to the package, module, reference)`.
fn scan_tree() -> Vec<(String, String, Reference)> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut all = Vec::new();
    for path in files {
        let relative = path.strip_prefix(&src).expect("under src/");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let shown = format!("src/{}", relative.display());
        let (rule, refs) = if relative == Path::new("main.rs") {
            // The binary is its own crate: it names the library as `gatherd`.
            ("main.rs".to_string(), references(&text, &[], "gatherd"))
        } else if relative == Path::new("lib.rs") {
            // The crate root only declares the modules.
            continue;
        } else {
            let module = module_of(relative);
            (module[0].clone(), references(&text, &module, "crate"))
        };
        all.extend(refs.into_iter().map(|r| (shown.clone(), rule.clone(), r)));
    }
    all
}

#[test]
fn layering_matches_architecture() {
    let known = top_level_modules();
    let mut broken = Vec::new();
    for (file, module, r) in scan_tree() {
        if let Some(why) = broken_rule(&module, &r.target, &known) {
            broken.push(format!("{file}:{}: {why}", r.line));
        }
    }
    assert!(
        broken.is_empty(),
        "the layering of ARCHITECTURE.md is broken (rules in tests/architecture.rs):\n{}\n",
        broken.join("\n")
    );
}

#[test]
fn every_module_has_exactly_one_rule_and_every_rule_a_module() {
    let known = top_level_modules();
    let mut ruled: Vec<&str> = RULES.iter().map(|(m, _, _)| *m).filter(|m| *m != "main.rs").collect();
    ruled.sort();
    let before = ruled.len();
    ruled.dedup();
    assert_eq!(before, ruled.len(), "a module has two rules");
    assert_eq!(ruled, known.iter().map(String::as_str).collect::<Vec<_>>(), "RULES and the modules in src/ differ");
    for (module, allowed, _) in RULES {
        for target in allowed.iter().filter(|t| **t != "*") {
            assert!(known.contains(*target), "the rule of `{module}` names `{target}`, which is not a module");
        }
    }
}

/// The check must not silently become a no-op: the scanner has to see the
/// tree's real imports (122 when this was written).
#[test]
fn scanner_sees_the_real_tree() {
    let all = scan_tree();
    assert!(all.len() >= 100, "only {} cross-module references found in src/: is the scanner broken?", all.len());
    let edge = |from: &str, to: &str| all.iter().any(|(_, m, r)| m == from && r.target == to);
    assert!(edge("exec", "job"), "exec → job not seen");
    assert!(edge("daemon", "store"), "daemon → store not seen");
    assert!(edge("main.rs", "cli"), "main.rs → cli not seen");
}

fn module(path: &str) -> Vec<String> {
    path.split("::").map(str::to_string).collect()
}

fn targets(src: &str, at: &str) -> Vec<(usize, String)> {
    references(src, &module(at), "crate").into_iter().map(|r| (r.line, r.target)).collect()
}

#[test]
fn scanner_finds_use_lines_groups_paths_in_code_and_super_escapes() {
    let src = r#"use crate::job::Job;
use crate::{
    script::Sandbox,
    exec::{self, RunEvent},
    store::{RunStore, recorder::{Recorder}},
};
fn f() -> crate::daemon::Options { super::super::api::serve(); super::sibling(); }
mod tests {
    use super::super::super::cli::Cli;
    use super::*;
}
"#;
    assert_eq!(
        targets(src, "exec::tree"),
        vec![
            (1, "job".to_string()),
            (3, "script".to_string()),
            (5, "store".to_string()),
            (7, "daemon".to_string()),
            (7, "api".to_string()),
            (9, "cli".to_string()),
        ],
    );
}

#[test]
fn scanner_ignores_comments_strings_and_lookalikes() {
    let src = r##"//! See [`Options`](crate::daemon::Options).
// use crate::daemon;
/* use crate::store; /* nested */ use crate::api; */
/// [`x`](crate::cli::x)
pub(crate) fn f<'a>(x: &'a str) -> char {
    let _ = "use crate::daemon::x; \" crate::store::y";
    let _ = r#"crate::api::z "quoted" "#;
    let _ = b"crate::cli";
    let _ = mycrate::daemon::x;
    let _ = other::crate_like::daemon;
    '"'
}
use crate::job::Job; // crate::store
"##;
    assert_eq!(targets(src, "exec"), vec![(13, "job".to_string())]);
}

#[test]
fn a_forbidden_import_is_reported_with_file_line_and_rule() {
    let known: BTreeSet<String> = RULES.iter().map(|(m, _, _)| m.to_string()).filter(|m| m != "main.rs").collect();
    let refs = references("use crate::job::Job;\n\nuse crate::daemon;\n", &module("exec::step::sleep"), "crate");
    let broken: Vec<_> = refs.iter().filter_map(|r| Some((r.line, broken_rule("exec", &r.target, &known)?))).collect();
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert_eq!(broken[0].0, 3);
    assert!(broken[0].1.contains("`exec` may not use `daemon`"), "{}", broken[0].1);
    // The other direction of the same edge is fine, and a glob at the root is refused.
    assert_eq!(broken_rule("daemon", "exec", &known), None);
    assert!(broken_rule("api", "*", &known).is_some());
}
