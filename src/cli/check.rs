//! `gatherd check PATH...`: load every job file named or found in the folders
//! given, print each diagnostic, run nothing. `--config FILE` checks a config
//! file the same way (`config.rs`).

mod config;
mod next;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;

use super::exit;
use crate::load;

/// Arguments of `gatherd check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Job files, or folders to search for *.toml job files.
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
}

/// An RFC 3339 instant (`--after`).
fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        format!("{e}; write an RFC 3339 instant such as 2027-03-27T12:00:00Z or 2027-03-27T13:00:00+01:00")
    })
}

/// Checks every file; exit 1 if any is invalid (or a path can't be read).
pub fn check(args: &CheckArgs) -> anyhow::Result<u8> {
    let color = std::io::stderr().is_terminal();
    let mut config_invalid = false;
    if let Some(path) = &args.config {
        match config::check(path) {
            Ok(_) => println!("ok      {} (config)", path.display()),
            Err(d) => {
                config_invalid = true;
                println!("invalid {}", path.display());
                eprintln!("{}", d.render(color));
            }
        }
        if args.paths.is_empty() {
            return Ok(if config_invalid { exit::FAILED } else { exit::OK });
        }
    }
    let found = load::discover_confined(&args.paths).context("cannot list the job files")?;
    let files = found.files;
    let mut invalid = 0;
    for refused in &found.refused {
        invalid += 1;
        println!("invalid {}", refused.path.display());
        eprintln!("error: {refused}");
    }
    for file in &files {
        match load::load_file(file) {
            Ok(job) => {
                match job.root.step_count() {
                    Some(n) => println!("ok      {} ({n} steps)", file.display()),
                    None => println!("ok      {} (Rhai script)", file.display()),
                }
                if let Some(n) = args.next {
                    print!("{}", next::describe(file, &job, n.into(), args.after.unwrap_or_else(Utc::now)));
                }
            }
            Err(e) => {
                invalid += 1;
                println!("invalid {}", file.display());
                for d in e.diagnostics() {
                    eprintln!("{}", d.render(color));
                }
            }
        }
    }
    if files.is_empty() && found.refused.is_empty() {
        anyhow::bail!("no job files found in {}", display_paths(&args.paths));
    }
    if invalid > 0 {
        eprintln!("{invalid} of {} job files invalid", files.len() + found.refused.len());
    }
    Ok(if invalid > 0 || config_invalid { exit::FAILED } else { exit::OK })
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}
