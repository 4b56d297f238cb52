//! `gatherd man`: the manual pages, from the clap definitions (clap_mangen)
//! and one hand-written page for the job file format (`gatherd.job(5)`,
//! `docs/gatherd.job.5`), and the EXAMPLES every subcommand's `--help` ends
//! with (the same text is the pages' EXAMPLES section).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory};

use super::{Cli, exit, out};

/// The job file format's page, kept in roff in the repository.
const JOB_PAGE: &str = include_str!("../../docs/gatherd.job.5");
/// Its name, as `gatherd man` takes it and as SEE ALSO names it.
pub const JOB_PAGE_NAME: &str = "gatherd.job";

/// Arguments of `gatherd man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The page: a subcommand (`run` for gatherd-run(1)) or `gatherd.job`
    /// (the job file format, section 5); default gatherd(1).
    #[arg(value_name = "PAGE")]
    pub page: Option<String>,
    /// Write every page into this folder (gatherd.1, gatherd-SUBCOMMAND.1,
    /// gatherd.job.5) instead of one page on stdout.
    #[arg(long, value_name = "DIR", conflicts_with = "page")]
    pub dir: Option<PathBuf>,
}

/// The command line as the pages describe it: built (so each subcommand is
/// named `gatherd-NAME`), without clap's `help` subcommand (no page of its
/// own; `--help` is on every page).
fn command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Every page: its file name and its roff.
fn pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let cmd = command();
    let mut pages = vec![("gatherd.1".to_string(), page(&cmd)?)];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = clap_mangen::Man::new(sub.clone());
        pages.push((man.get_filename(), page(sub)?));
    }
    pages.push((format!("{JOB_PAGE_NAME}.5"), JOB_PAGE.as_bytes().to_vec()));
    Ok(pages)
}

/// One command's page: clap_mangen's sections, the EXAMPLES of its
/// `--help`, and SEE ALSO naming pages that exist.
fn page(cmd: &clap::Command) -> anyhow::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut roff = Vec::new();
    let render = |roff: &mut Vec<u8>| -> std::io::Result<()> {
        man.render_title(roff)?;
        man.render_name_section(roff)?;
        man.render_synopsis_section(roff)?;
        man.render_description_section(roff)?;
        if cmd.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(roff)?;
        }
        if cmd.has_subcommands() {
            man.render_subcommands_section(roff)?;
        }
        if let Some(examples) = cmd.get_after_help() {
            roff.extend_from_slice(b".SH EXAMPLES\n.nf\n");
            for line in examples.to_string().lines().filter(|l| l.trim() != "Examples:") {
                roff.extend_from_slice(escape(line.strip_prefix("  ").unwrap_or(line)).as_bytes());
                roff.push(b'\n');
            }
            roff.extend_from_slice(b".fi\n");
        }
        man.render_version_section(roff)?;
        let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
        let mut see = Vec::new();
        if name != "gatherd" {
            see.push("\\fBgatherd\\fR(1)".to_string());
        }
        see.push(format!("\\fB{JOB_PAGE_NAME}\\fR(5)"));
        roff.extend_from_slice(format!(".SH \"SEE ALSO\"\n{}\n", see.join(", ")).as_bytes());
        Ok(())
    };
    render(&mut roff).context("cannot render the man page")?;
    Ok(roff)
}

/// A line of text for roff's no-fill mode: backslashes doubled, `-` as a
/// minus (so `--json` survives copy and paste), a leading `.` or `'` kept
/// from being read as a request.
fn escape(line: &str) -> String {
    let line = line.replace('\\', "\\e").replace('-', "\\-");
    if line.starts_with('.') || line.starts_with('\'') { format!("\\&{line}") } else { line }
}

/// `gatherd man [PAGE] [--dir DIR]`.
pub fn man(args: &ManArgs) -> anyhow::Result<u8> {
    let pages = pages()?;
    if let Some(dir) = &args.dir {
        for (file, roff) in &pages {
            let path = dir.join(file);
            std::fs::write(&path, roff).with_context(|| format!("cannot write {}", path.display()))?;
        }
        return Ok(exit::OK);
    }
    let want = match args.page.as_deref() {
        None => "gatherd.1".to_string(),
        Some(JOB_PAGE_NAME) | Some("gatherd.job.5") => format!("{JOB_PAGE_NAME}.5"),
        Some(name) => format!("gatherd-{}.1", name.trim_start_matches("gatherd-").trim_end_matches(".1")),
    };
    match pages.iter().find(|(file, _)| *file == want) {
        Some((_, roff)) => out::write_bytes(roff)?,
        None => {
            let cmd = command();
            let names: Vec<&str> = cmd.get_subcommands().map(clap::Command::get_name).collect();
            return Err(super::invalid(anyhow::anyhow!(
                "no man page `{}`: name a subcommand ({}) or {JOB_PAGE_NAME}",
                args.page.as_deref().unwrap_or_default(),
                names.join(", ")
            )));
        }
    }
    Ok(exit::OK)
}

/// The EXAMPLES that end each subcommand's `--help` (and its page).
pub mod examples {
    /// `gatherd run`.
    pub const RUN: &str = "Examples:
  gatherd run jobs/seed-gather.toml            run a TOML job once, show each step
  gatherd run jobs/seed-gather.rhai --follow   a Rhai job, printing its lines as they come
  gatherd run backup.toml --json | jq .status  the whole run as one JSON document";
    /// `gatherd check`.
    pub const CHECK: &str = "Examples:
  gatherd check jobs/                          every *.toml and *.rhai job under jobs/
  gatherd check -q jobs/ && echo all valid     only what is invalid; the exit status says it
  gatherd check --config /etc/gatherd/config.toml
  gatherd check --next 5 jobs/backup.toml      the next 5 fires, in the job's zone";
    /// `gatherd daemon`.
    pub const DAEMON: &str = "Examples:
  gatherd daemon --jobs ./jobs                 run the jobs of ./jobs, logs on stderr
  gatherd daemon --jobs /srv/jobs --config /etc/gatherd/config.toml --log-format json";
    /// `gatherd runs`.
    pub const RUNS: &str = "Examples:
  gatherd runs                                 the last 20 runs, newest first
  gatherd runs --job backup --status failed    a job's failed runs (with or without .toml)
  gatherd runs --limit 100 --before 4200       the page before run 4200
  gatherd runs --state /var/lib/gatherd --utc  from the database, times in UTC";
    /// `gatherd show`.
    pub const SHOW: &str = "Examples:
  gatherd show 42                              run 42's steps and timeline
  gatherd show 42 --json | jq '.steps[] | select(.status != \"succeeded\")'";
    /// `gatherd logs`.
    pub const LOGS: &str = "Examples:
  gatherd logs 42                              every line run 42 printed
  gatherd logs 42 --step migrate               one step's lines
  gatherd logs 42 --follow                     the lines so far, then live until it ends";
    /// `gatherd jobs`.
    pub const JOBS: &str = "Examples:
  gatherd jobs                                 the daemon's jobs: next fire, last run
  gatherd jobs --wide --utc                    nothing cut, times in UTC
  gatherd jobs --addr 127.0.0.1:7878 --json    a daemon's jobs over TCP, as JSON";
    /// `gatherd nodes`.
    pub const NODES: &str = "Examples:
  gatherd nodes                                the fleet's nodes: state, last heartbeat, runs
  gatherd nodes --store postgres://gatherd@db/gatherd   from the database, no daemon
  gatherd nodes --json | jq '.nodes[] | select(.state == \"dead\")'";
    /// `gatherd trigger`.
    pub const TRIGGER: &str = "Examples:
  gatherd trigger backup                       start backup.toml now (the extension may go)
  gatherd trigger backup --wait                and wait for it, exiting with its status
  gatherd trigger backup --follow              and print its lines as they come";
    /// `gatherd cancel`.
    pub const CANCEL: &str = "Examples:
  gatherd cancel 42                            cancel run 42 (its processes get SIGTERM)";
    /// `gatherd pause`.
    pub const PAUSE: &str = "Examples:
  gatherd pause backup                         its fires are recorded missed until resumed
  gatherd pause backup --json                  the daemon's answer as JSON";
    /// `gatherd resume`.
    pub const RESUME: &str = "Examples:
  gatherd resume backup                        runs again from its next fire (no burst)";
    /// `gatherd notify`.
    pub const NOTIFY: &str = "Examples:
  gatherd notify test ops                      send a test notification to [notify.ops]
  gatherd notify test ops --config /etc/gatherd/config.toml";
    /// `gatherd notify test`.
    pub const NOTIFY_TEST: &str = "Examples:
  gatherd notify test ops                      one attempt; exit 1 says why it was not taken";
    /// `gatherd backup`.
    pub const BACKUP: &str = "Examples:
  gatherd backup /srv/backup/history.db        a consistent copy, while the daemon runs
  gatherd backup copy.db --state /var/lib/gatherd";
    /// `gatherd completions`.
    pub const COMPLETIONS: &str = "Examples:
  gatherd completions bash > /etc/bash_completion.d/gatherd
  gatherd completions zsh > ~/.zfunc/_gatherd";
    /// `gatherd man`.
    pub const MAN: &str = "Examples:
  gatherd man | man -l -                       read gatherd(1)
  gatherd man run | man -l -                   read gatherd-run(1)
  gatherd man gatherd.job | man -l -           the job file format, gatherd.job(5)
  gatherd man --dir pages/                     write every page: gatherd*.1, gatherd.job.5";
}
