//! The command line: clap definitions, and rendering runs and diagnostics for
//! people (tables, timeline, progress) and programs (`--json`).
//!
//! Architecture Invariant: this is the only module that prints to stdout; what
//! it prints about a run is a projection of the run's events
//! ([`crate::exec::RunReport`]).
//!
//! Errors: every command returns `anyhow::Result<u8>` (the exit code when it
//! gets to decide one) and [`dispatch`] prints an error once, as
//! `error: what: why`. An error wrapped in [`InvalidInput`] exits 2, any
//! other 1.

pub mod backup;
pub mod check;
pub mod client;
pub mod daemon;
pub mod history;
pub mod logging;
pub mod notify;
pub mod out;
pub mod progress;
pub mod render;
pub mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes, the contract the README documents ("Exit codes").
pub mod exit {
    /// The run succeeded, or every checked file is valid.
    pub const OK: u8 = 0;
    /// The run failed or timed out, or a checked file is invalid.
    pub const FAILED: u8 = 1;
    /// The job file is invalid, or the command line is (clap uses 2 as well).
    pub const INVALID: u8 = 2;
    /// The run was cancelled (Ctrl-C): 128 + SIGINT, as shells do.
    pub const CANCELLED: u8 = 130;
}

/// gatherd: drop job files into a folder; each runs as a tree of async tasks with
/// Python asyncio's semantics (gather, as_completed, race, sequence, to_thread).
#[derive(Debug, Parser)]
#[command(name = "gatherd", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one job once in the foreground and show each step's result.
    Run(run::RunArgs),
    /// Validate job files or folders without running anything.
    Check(check::CheckArgs),
    /// Watch a jobs folder and run its jobs: on change, on a schedule, at an
    /// interval. The long-running service (systemd Type=notify).
    Daemon(daemon::DaemonArgs),
    /// List recorded runs, newest first.
    Runs(history::RunsArgs),
    /// Show one recorded run: its steps and timeline.
    Show(history::ShowArgs),
    /// Print every line a run's steps and scripts printed, then how it ended
    /// (--follow: the lines so far, then live until it ends).
    Logs(history::LogsArgs),
    /// List the running daemon's jobs (through its control API).
    Jobs(client::JobsArgs),
    /// Start a run of a job now (through the daemon's control API).
    Trigger(client::TriggerArgs),
    /// Cancel a run in flight (through the daemon's control API).
    Cancel(client::CancelArgs),
    /// Notification targets: `notify test NAME` sends a test notification.
    Notify(notify::NotifyArgs),
    /// Copy the run history to a new file, consistently, even while the
    /// daemon writes to it (SQLite's online backup).
    Backup(backup::BackupArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout.
    Man,
}

impl Cli {
    /// How this command wants its logs: the daemon logs its work at `info`
    /// (format and level from flags or its config); `run` and `check` print
    /// their own output and log only warnings.
    pub fn log_settings(&self) -> logging::LogSettings {
        match &self.command {
            Command::Daemon(args) => {
                let config = args.load_config().cloned().unwrap_or_default();
                logging::LogSettings {
                    format: args.log_format.or(config.log_format),
                    level: args.log_level.clone(),
                    default_level: "info",
                    config_level: config.log_level,
                    output: config.log_output,
                }
            }
            _ => logging::LogSettings {
                format: Some(crate::config::LogFormat::Pretty),
                default_level: "warn",
                ..logging::LogSettings::default()
            },
        }
    }
}

/// Marks an error as the user's input being invalid — a job file, the
/// config, an argument — so the command exits 2 (as clap does for usage
/// errors) rather than 1.
#[derive(Debug)]
pub struct InvalidInput(pub anyhow::Error);

impl std::fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&message(&self.0))
    }
}

impl std::error::Error for InvalidInput {}

/// `e` marked as invalid input (exit 2).
pub(crate) fn invalid(e: impl Into<anyhow::Error>) -> anyhow::Error {
    InvalidInput(e.into()).into()
}

/// An error and its causes on one line, `what: why: because`; a cause whose
/// text its parent already includes (an error that writes its `source` into
/// its own message) is not repeated.
pub fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The exit code for a command that failed with `e`.
fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<InvalidInput>().is_some() { exit::INVALID } else { exit::FAILED }
}

/// Runs the chosen subcommand and returns the process's exit code. The one
/// place a command's error is printed: on stderr, or for the daemon in its
/// log (which may be the journal). An error that is stdout's reader having
/// gone ends the process quietly ([`out::reader_gone`]).
pub async fn dispatch(cli: Cli) -> ExitCode {
    let daemon = matches!(cli.command, Command::Daemon(_));
    let code = match command(cli.command).await {
        Ok(code) => code,
        Err(e) if daemon => {
            tracing::error!("{}", message(&e));
            exit_code(&e)
        }
        Err(e) if out::is_reader_gone(&e) => out::reader_gone(),
        Err(e) => {
            eprintln!("error: {}", message(&e));
            exit_code(&e)
        }
    };
    ExitCode::from(code)
}

async fn command(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Run(args) => run::run(args).await,
        Command::Check(args) => check::check(&args),
        Command::Daemon(args) => daemon::daemon(args).await,
        Command::Runs(args) => history::runs(args).await,
        Command::Show(args) => history::show(args).await,
        Command::Logs(args) => history::logs(args).await,
        Command::Jobs(args) => client::jobs(args).await,
        Command::Trigger(args) => client::trigger(args).await,
        Command::Cancel(args) => client::cancel(args).await,
        Command::Backup(args) => backup::backup(args).await,
        Command::Notify(args) => notify::notify(args).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into memory first: `generate` panics on a write error.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "gatherd", &mut script);
            out::write_bytes(&script)?;
            Ok(exit::OK)
        }
        Command::Man => {
            use anyhow::Context;
            use clap::CommandFactory;
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page).context("cannot render the man page")?;
            out::write_bytes(&page)?;
            Ok(exit::OK)
        }
    }
}
