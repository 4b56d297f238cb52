//! The supervisor: `gatherd daemon`. It keeps the job table (one row per job
//! file), turns file events and timers into fires, decides overlap and
//! admission, starts runs through the executor, and handles signals and
//! systemd.
//!
//! Everything happens on one task, in one `select!` loop, over state that only
//! that loop touches: file events (from `crate::watch`), timers (a
//! `DelayQueue` of scheduled fires), ends of runs (a `JoinSet` that owns every
//! run), signals and the watchdog. Nothing in it polls: when no timer is due and
//! no file changes, the process sleeps.
//!
//! Architecture Invariant: a job file's problem is the job's problem. An
//! invalid file is logged (file:line:col) and skipped; its last valid version
//! keeps its schedule; a failing run is logged; nothing a job does stops the
//! daemon or disturbs other jobs.
//!
//! Architecture Invariant: every run is owned by the supervisor's `JoinSet` and
//! holds a child of the shutdown token, so shutdown can wait for all of them.
//! A run task that panics is an ended run like any other: its slot is given
//! back and it is recorded failed.
//!
//! Where things are: `start.rs` (start-up), `supervisor.rs` (the state, the
//! loop, its handlers, shutdown), `apply.rs` (a job file's new version),
//! `run_task.rs` (one run), `sinks.rs` (a run's events to the log, metrics,
//! live subscribers and the history); the pure decisions `overlap.rs`,
//! `admit.rs` and `catch_up.rs`; `table.rs`, `control.rs`, `systemd.rs`.

pub mod admit;
mod apply;
mod catch_up;
mod control;
mod fleet;
mod listen;
mod notify;
mod overlap;
mod processes;
mod retry;
mod run_task;
mod sinks;
mod start;
mod supervisor;
mod systemd;
mod table;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::job::Trigger;
/// `gatherd notify test NAME`: one test notification, straight from the config.
pub use notify::send_test;
/// The log sink of a run and the target of its output lines, for the
/// logging set up in the CLI (and its tests of the formats the sink feeds).
pub use sinks::{OUTPUT_TARGET, RunLog};

/// How the daemon was asked to run: the config file and the flags that win
/// over it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The folder of job files.
    pub jobs: PathBuf,
    /// Where state lives (created if missing).
    pub state: PathBuf,
    /// The config file, re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// The config as read at start.
    pub config: Config,
    /// `--blocking-threads`, winning over the config.
    pub blocking_threads: Option<usize>,
    /// `--max-concurrent-runs`, winning over the config.
    pub max_concurrent_runs: Option<usize>,
    /// `--api-listen`, winning over the config.
    pub api_listen: Option<std::net::SocketAddr>,
    /// `--store` (or `GATHERD_STORE`), winning over the config's `store`.
    pub store: Option<String>,
    /// The config's `[secrets]`, as read at start (`Config::read_secrets`);
    /// read again with the config on SIGHUP.
    pub secrets: crate::exec::Secrets,
}

impl Options {
    fn blocking_threads(&self) -> usize {
        self.blocking_threads.unwrap_or_else(|| self.config.blocking_threads())
    }

    fn max_concurrent_runs(&self) -> usize {
        self.max_concurrent_runs.unwrap_or_else(|| self.config.max_concurrent_runs())
    }

    fn semaphores(&self) -> Vec<(String, usize)> {
        self.config.semaphores.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// The debounce of file events. A close-after-write or a rename-into already
/// says the file is complete, so the watcher reports it at once; the debounce
/// only folds what follows for the same path (an editor's second write) into
/// one report once the path has been quiet this long. A duplicate would be
/// harmless anyway (the content hash tells an unchanged file), so it is short.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// The most file events handled (their files read in one blocking call) in
/// one turn of the loop, so timers, commands and ends of runs are not held
/// up for long by a burst.
const FILE_BATCH: usize = 256;

/// Runs the daemon until SIGTERM or SIGINT; returns after every run has ended
/// and the history is written.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let (sup, inputs) = start::start(opts).await?;
    let sup = sup.serve(inputs).await?;
    sup.shutdown().await
}

fn describe(trigger: &Trigger) -> String {
    match trigger {
        Trigger::OnChange => "on change".to_string(),
        Trigger::Cron { expr, timezone } => match timezone {
            Some(tz) => format!("schedule {expr} ({tz})"),
            None => format!("schedule {expr}"),
        },
        Trigger::Every(d) => format!("every {}", humantime::format_duration(*d)),
    }
}
