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
pub mod clock;
pub mod color;
pub mod daemon;
pub mod history;
pub mod logging;
pub mod man;
pub mod nodes;
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
    /// Colour: `auto` on a terminal unless NO_COLOR is set; `always` even
    /// into a pipe (this flag wins over NO_COLOR); `never`.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = color::ColorChoice::Auto)]
    pub color: color::ColorChoice,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one job once in the foreground and show each step's result.
    #[command(after_help = man::examples::RUN)]
    Run(run::RunArgs),
    /// Validate job files (TOML or Rhai) or folders without running anything.
    #[command(after_help = man::examples::CHECK)]
    Check(check::CheckArgs),
    /// Watch a jobs folder and run its jobs: on change, on a schedule, at an
    /// interval. The long-running service (systemd Type=notify).
    #[command(after_help = man::examples::DAEMON)]
    Daemon(daemon::DaemonArgs),
    /// List recorded runs, newest first.
    #[command(after_help = man::examples::RUNS)]
    Runs(history::RunsArgs),
    /// Show one recorded run: its steps and timeline.
    #[command(after_help = man::examples::SHOW)]
    Show(history::ShowArgs),
    /// Print every line a run's steps and scripts printed, then how it ended
    /// (--follow: the lines so far, then live until it ends).
    #[command(after_help = man::examples::LOGS)]
    Logs(history::LogsArgs),
    /// List the running daemon's jobs (through its control API).
    #[command(after_help = man::examples::JOBS)]
    Jobs(client::JobsArgs),
    /// List the fleet's nodes: id, label, version, state, start, last
    /// heartbeat, runs in flight (through the daemon's control API, or
    /// --store URL for a PostgreSQL history without a daemon).
    #[command(after_help = man::examples::NODES)]
    Nodes(nodes::NodesArgs),
    /// Start a run of a job now (through the daemon's control API); returns
    /// at once with the run's id, saying `queued` when it waits for a slot
    /// or its semaphore, unless --wait.
    #[command(after_help = man::examples::TRIGGER)]
    Trigger(client::TriggerArgs),
    /// Cancel a run in flight, or a queued one (it never starts), through the
    /// daemon's control API.
    #[command(after_help = man::examples::CANCEL)]
    Cancel(client::CancelArgs),
    /// Pause a job (through the daemon's control API, saved across
    /// restarts): its scheduled fires are recorded `missed` (error "missed:
    /// the job is paused") instead of running, and a new version of a
    /// one-shot waits; runs in flight go on, and `gatherd trigger` still runs
    /// it.
    #[command(after_help = man::examples::PAUSE)]
    Pause(client::PauseArgs),
    /// Resume a paused job: its schedule goes on from its next fire (the
    /// fires it missed are not run), and a one-shot's version saved while it
    /// was paused runs.
    #[command(after_help = man::examples::RESUME)]
    Resume(client::PauseArgs),
    /// Notification targets: `notify test NAME` sends a test notification.
    #[command(after_help = man::examples::NOTIFY)]
    Notify(notify::NotifyArgs),
    /// Copy the run history to a new file, consistently, even while the
    /// daemon writes to it (SQLite's online backup).
    #[command(after_help = man::examples::BACKUP)]
    Backup(backup::BackupArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = man::examples::COMPLETIONS)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff) on stdout: gatherd(1), a subcommand's
    /// (gatherd-run(1), ...) or the job file format's, gatherd.job(5); or
    /// write them all into a folder.
    #[command(after_help = man::examples::MAN)]
    Man(man::ManArgs),
}

impl Command {
    /// Whether the command was asked for `--json`: then an error is a
    /// JSON document too (see [`dispatch`]).
    fn json(&self) -> bool {
        match self {
            Command::Run(a) => a.json,
            Command::Check(a) => a.json,
            Command::Runs(a) => a.json,
            Command::Show(a) => a.json,
            Command::Logs(a) => a.json,
            Command::Jobs(a) => a.json,
            Command::Nodes(a) => a.json,
            Command::Trigger(a) => a.json,
            Command::Cancel(a) => a.json,
            Command::Pause(a) | Command::Resume(a) => a.json,
            Command::Daemon(_)
            | Command::Backup(_)
            | Command::Notify(_)
            | Command::Completions { .. }
            | Command::Man(_) => false,
        }
    }
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
/// log (which may be the journal), or with `--json` as the document
/// `{"error": "what: why"}` on stdout (the API's error shape), so a program
/// reading stdout always gets JSON. An error that is stdout's reader having
/// gone ends the process quietly ([`out::reader_gone`]).
pub async fn dispatch(cli: Cli) -> ExitCode {
    let daemon = matches!(cli.command, Command::Daemon(_));
    let json = cli.command.json();
    let code = match command(cli.command).await {
        Ok(code) => code,
        Err(e) if daemon => {
            tracing::error!("{}", message(&e));
            exit_code(&e)
        }
        Err(e) if out::is_reader_gone(&e) => out::reader_gone(),
        Err(e) if json => match out::json(&serde_json::json!({ "error": message(&e) })) {
            Ok(()) => exit_code(&e),
            Err(write) => {
                eprintln!("error: {}: {}", message(&e), message(&write));
                exit::FAILED
            }
        },
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
        Command::Nodes(args) => nodes::nodes(args).await,
        Command::Trigger(args) => client::trigger(args).await,
        Command::Cancel(args) => client::cancel(args).await,
        Command::Pause(args) => client::pause(args, true).await,
        Command::Resume(args) => client::pause(args, false).await,
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
        Command::Man(args) => man::man(&args),
    }
}
