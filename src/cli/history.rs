//! `gatherd runs`, `gatherd show RUN`, `gatherd logs RUN`: the run history,
//! read straight from the store's database, read-only (safe beside a running
//! daemon). The control API will answer these too; reading the database stays
//! the fallback when no daemon answers.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::{exit, render};
use crate::config::Config;
use crate::store::{self, History, RecordedStatus, RunDetail, RunFilter, RunRow};

/// Where the history is: shared by the history commands.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// The daemon's state folder (default as for `gatherd daemon`).
    #[arg(long, value_name = "DIR", env = "GATHERD_STATE")]
    pub state: Option<PathBuf>,
    /// The daemon's config file, for its `state_dir`.
    #[arg(long, value_name = "FILE", env = "GATHERD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Arguments of `gatherd runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only this job (its path in the jobs folder, e.g. `backup.toml`).
    #[arg(long)]
    pub job: Option<String>,
    /// Only runs with this status (succeeded, failed, timed_out, cancelled,
    /// interrupted, missed, running).
    #[arg(long)]
    pub status: Option<String>,
    /// At most this many (newest first).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Only runs older than this run id (the next page).
    #[arg(long, value_name = "RUN")]
    pub before: Option<i64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub where_: StateArgs,
}

/// Arguments of `gatherd logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The run's id.
    #[arg(value_name = "RUN")]
    pub run: i64,
    /// Follow a run in flight through the daemon's API, printing lines as
    /// they come, until it ends.
    #[arg(long, short)]
    pub follow: bool,
    /// With --follow: the control API's address.
    #[arg(long, value_name = "ADDR", env = "GATHERD_ADDR")]
    pub addr: Option<String>,
    /// With --follow: the API's Bearer token.
    #[arg(long, value_name = "TOKEN", env = "GATHERD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub where_: StateArgs,
}

/// Arguments of `gatherd show`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The run's id (from `gatherd runs` or the logs' `run_id`).
    #[arg(value_name = "RUN")]
    pub run: i64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub where_: StateArgs,
}

async fn open(args: &StateArgs) -> Result<History, String> {
    let config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let db = config.state_dir(args.state.clone()).join(store::DB_FILE);
    if !db.exists() {
        return Err(format!("no run history at {} (is --state right?)", db.display()));
    }
    History::open(&db).await.map_err(|e| e.to_string())
}

/// `gatherd runs`: a table of runs, newest first.
pub async fn runs(args: RunsArgs) -> u8 {
    let status = match args.status.as_deref().map(|s| RecordedStatus::parse(s).ok_or(s)) {
        Some(Err(s)) => {
            eprintln!("error: unknown status `{s}`");
            return exit::INVALID;
        }
        Some(Ok(s)) => Some(s),
        None => None,
    };
    let history = match open(&args.where_).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    let filter = RunFilter { job: args.job, status, limit: args.limit, before: args.before };
    let rows = match history.runs(filter).await {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    if args.json {
        print_json(&rows);
    } else {
        print!("{}", runs_table(&rows));
    }
    exit::OK
}

/// The human table of `gatherd runs`.
fn runs_table(rows: &[RunRow]) -> String {
    use std::fmt::Write;
    let job_width = rows.iter().map(|r| r.job.chars().count()).max().unwrap_or(3).max(3);
    let mut out = format!(
        "{:>6}  {:job_width$}  {:9}  {:11}  {:20}  {:>9}  ERROR\n",
        "RUN", "JOB", "TRIGGER", "STATUS", "STARTED", "DURATION"
    );
    for r in rows {
        let duration = r.duration_ms.map_or_else(|| "-".to_string(), |ms| format!("{:.2}s", ms as f64 / 1000.0));
        let error = r.error.as_deref().and_then(|e| e.lines().next()).unwrap_or("");
        let error: String = error.chars().take(60).collect();
        let line = format!(
            "{:>6}  {:job_width$}  {:9}  {:11}  {:20}  {:>9}  {error}",
            r.id,
            r.job,
            r.trigger.as_str(),
            r.status.as_str(),
            r.started_at.format("%Y-%m-%d %H:%M:%S"),
            duration,
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if rows.is_empty() {
        out.push_str("(no runs)\n");
    }
    out
}

async fn detail(args: &RunArgs) -> Result<RunDetail, (u8, String)> {
    let history = open(&args.where_).await.map_err(|e| (exit::FAILED, e))?;
    match history.run(args.run).await {
        Ok(Some(detail)) => Ok(detail),
        Ok(None) => Err((exit::FAILED, format!("no run {}", args.run))),
        Err(e) => Err((exit::FAILED, e.to_string())),
    }
}

/// `gatherd show RUN`: one run's steps and timeline, as `gatherd run` shows it.
pub async fn show(args: RunArgs) -> u8 {
    let detail = match detail(&args).await {
        Ok(d) => d,
        Err((code, e)) => {
            eprintln!("error: {e}");
            return code;
        }
    };
    if args.json {
        print_json(&detail.document());
    } else {
        let run = &detail.run;
        println!("run {} of {} ({}, due {}, on {})", run.id, run.job, run.trigger.as_str(), run.fire_time, run.node);
        print!("{}", render::report(&detail.report(), true));
    }
    exit::OK
}

/// `gatherd logs RUN [--follow]`: the lines a run's scripts printed.
pub async fn logs(args: LogsArgs) -> u8 {
    if args.follow {
        let api = super::client::ApiArgs { addr: args.addr, token: args.token, config: args.where_.config };
        return super::client::follow_logs(args.run, &api).await;
    }
    let as_run = RunArgs { run: args.run, json: args.json, where_: args.where_ };
    let detail = match detail(&as_run).await {
        Ok(d) => d,
        Err((code, e)) => {
            eprintln!("error: {e}");
            return code;
        }
    };
    if args.json {
        print_json(&detail.report().logs);
    } else {
        for l in &detail.logs {
            println!("{:>8}ms  {}  {}", l.at_ms, l.path, l.text);
        }
    }
    exit::OK
}

fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot write JSON: {e}"),
    }
}
