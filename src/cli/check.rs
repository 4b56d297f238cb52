//! `gatherd check PATH...`: load every job file named or found in the folders
//! given, print each diagnostic, run nothing. `--config FILE` checks a config
//! file the same way (`config.rs`).

mod config;
mod next;

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::{Value, json};

use super::exit;
use super::out::{out, outln};
use crate::job::Job;
use crate::load::{self, Diagnostic};

/// Arguments of `gatherd check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Job files, or folders to search for job files (*.toml and *.rhai).
    #[arg(required_unless_present = "config", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Also check this config file, as `gatherd daemon --config FILE` reads it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the next N fire times of each valid scheduled job, in its time
    /// zone, saying where a daylight-saving rule moved or dropped a fire.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub next: Option<u16>,
    /// With --next: list the fires after this instant instead of now
    /// (RFC 3339, e.g. 2027-03-27T12:00:00Z).
    #[arg(long, value_name = "TIME", requires = "next", value_parser = parse_instant)]
    pub after: Option<DateTime<Utc>>,
    /// Print one JSON document on stdout (every file, valid or not, with
    /// its diagnostics' file, line, column and text) and nothing on stderr.
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Print only the invalid files and their diagnostics: nothing at all
    /// when every file is valid (the exit status says it).
    #[arg(short, long, conflicts_with = "next")]
    pub quiet: bool,
}

/// An RFC 3339 instant (`--after`).
fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        format!("{e}; write an RFC 3339 instant such as 2027-03-27T12:00:00Z or 2027-03-27T13:00:00+01:00")
    })
}

/// What `check` found about one file.
struct Checked {
    path: PathBuf,
    /// "job" or "config".
    kind: &'static str,
    outcome: Outcome,
}

/// The verdict on one file.
enum Outcome {
    /// A valid job.
    Job(Box<Job>),
    /// A valid config file.
    Config,
    /// Invalid: its diagnostics.
    Invalid(Vec<Diagnostic>),
    /// Never read (a link out of the folder, a FIFO, ...): why.
    Refused(String),
}

/// Checks every file; exit 1 if any is invalid (or a path can't be read).
pub fn check(args: &CheckArgs) -> anyhow::Result<u8> {
    let mut checked = Vec::new();
    // With a valid config, jobs may read only the secrets it defines and
    // name only its notification targets.
    let mut names: Option<(std::collections::BTreeSet<String>, std::collections::BTreeSet<String>)> = None;
    if let Some(path) = &args.config {
        let outcome = match config::check(path) {
            Ok(config) => {
                names = Some((config.secrets.keys().cloned().collect(), config.notify.keys().cloned().collect()));
                Outcome::Config
            }
            Err(d) => Outcome::Invalid(vec![*d]),
        };
        checked.push(Checked { path: path.clone(), kind: "config", outcome });
    }
    let mut jobs = 0;
    if !args.paths.is_empty() {
        let found = load::discover_confined(&args.paths).context("cannot list the job files")?;
        if found.files.is_empty() && found.refused.is_empty() {
            anyhow::bail!("no job files found in {}", display_paths(&args.paths));
        }
        jobs = found.files.len() + found.refused.len();
        for refused in &found.refused {
            checked.push(Checked {
                path: refused.path.clone(),
                kind: "job",
                outcome: Outcome::Refused(refused.to_string()),
            });
        }
        for file in found.files {
            let loaded = match &names {
                Some((defined, targets)) => load::load_file_with_config(&file, defined, targets),
                None => load::load_file(&file),
            };
            let outcome = match loaded {
                Ok(job) => Outcome::Job(Box::new(job)),
                Err(e) => Outcome::Invalid(e.diagnostics().to_vec()),
            };
            checked.push(Checked { path: file, kind: "job", outcome });
        }
    }
    let after = args.after.unwrap_or_else(Utc::now);
    let next = args.next.map(|n| (usize::from(n), after));
    if args.json {
        print_json(&checked, next)?;
    } else {
        print_human(&checked, jobs, next, args.quiet)?;
    }
    let valid = checked.iter().all(|c| matches!(c.outcome, Outcome::Job(_) | Outcome::Config));
    Ok(if valid { exit::OK } else { exit::FAILED })
}

/// The lines people read: `ok`/`invalid` per file on stdout, diagnostics and
/// the count on stderr; with `quiet`, only what is invalid.
fn print_human(
    checked: &[Checked],
    jobs: usize,
    next: Option<(usize, DateTime<Utc>)>,
    quiet: bool,
) -> anyhow::Result<()> {
    let color = super::logging::color_on_stderr();
    let stdout_color = super::color::on_stdout();
    let ok = super::color::paint("ok", super::color::GREEN, stdout_color);
    let invalid = super::color::paint("invalid", super::color::RED, stdout_color);
    let mut invalid_jobs = 0;
    for c in checked {
        match &c.outcome {
            Outcome::Config if !quiet => outln!("{ok}      {} (config)", c.path.display())?,
            Outcome::Job(job) if !quiet => {
                match job.root.step_count() {
                    Some(n) => outln!("{ok}      {} ({n} steps)", c.path.display())?,
                    None => outln!("{ok}      {} (Rhai script)", c.path.display())?,
                }
                if let Some((n, after)) = next {
                    out!("{}", next::describe(&c.path, job, n, after))?;
                }
            }
            Outcome::Config | Outcome::Job(_) => {}
            Outcome::Invalid(diagnostics) => {
                invalid_jobs += usize::from(c.kind == "job");
                outln!("{invalid} {}", c.path.display())?;
                for d in diagnostics {
                    eprintln!("{}", d.render(color));
                }
            }
            Outcome::Refused(why) => {
                invalid_jobs += 1;
                outln!("{invalid} {}", c.path.display())?;
                eprintln!("error: {why}");
            }
        }
    }
    if invalid_jobs > 0 && !quiet {
        eprintln!("{invalid_jobs} of {jobs} job files invalid");
    }
    Ok(())
}

/// One JSON document on stdout: `{"valid", "files": [{"path", "kind",
/// "valid", "steps", "diagnostics": [{"file", "line", "col", "message",
/// "help", "text"}], "next"}]}`.
fn print_json(checked: &[Checked], next: Option<(usize, DateTime<Utc>)>) -> anyhow::Result<()> {
    let files: Vec<Value> = checked
        .iter()
        .map(|c| {
            let mut entry = json!({
                "path": c.path.display().to_string(),
                "kind": c.kind,
                "valid": matches!(c.outcome, Outcome::Job(_) | Outcome::Config),
                "diagnostics": [],
            });
            match &c.outcome {
                Outcome::Job(job) => {
                    entry["steps"] = json!(job.root.step_count());
                    if let Some((n, after)) = next {
                        entry["next"] = next::fires_json(job, n, after);
                    }
                }
                Outcome::Config => {}
                Outcome::Invalid(diagnostics) => {
                    entry["diagnostics"] = diagnostics.iter().map(diagnostic_json).collect();
                }
                Outcome::Refused(why) => {
                    entry["diagnostics"] = json!([{
                        "file": c.path.display().to_string(), "line": null, "col": null,
                        "message": why, "help": null, "text": format!("error: {why}"),
                    }]);
                }
            }
            entry
        })
        .collect();
    let valid = checked.iter().all(|c| matches!(c.outcome, Outcome::Job(_) | Outcome::Config));
    let doc = json!({ "valid": valid, "files": files });
    super::out::json(&doc)
}

/// A diagnostic in `--json`: its place, its parts, and its rendering without colour.
fn diagnostic_json(d: &Diagnostic) -> Value {
    let (line, col) = d.line_col().map_or((None, None), |(l, c)| (Some(l), Some(c)));
    json!({
        "file": d.file(),
        "line": line,
        "col": col,
        "message": d.message(),
        "help": d.help_text(),
        "text": d.render(false),
    })
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}
