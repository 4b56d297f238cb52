//! `gatherd runs`, `gatherd show RUN`, `gatherd logs RUN`: the run history.
//! A thin client of the control API; when no daemon answers (or `--state`
//! names a state folder), they read the store's database directly, read-only
//! (safe beside a running daemon). Both sources give the same JSON, rendered
//! the same way.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{ApiArgs, Client, RequestError};
use super::{exit, render};
use crate::config::Config;
use crate::store::{self, History, RecordedStatus, RunDocument, RunFilter};

/// Where the history is: the daemon's API, or its state folder.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// Read this state folder's database instead of asking the daemon
    /// (`logs --follow`: the daemon of this state folder).
    #[arg(long, value_name = "DIR", env = "GATHERD_STATE")]
    pub state: Option<PathBuf>,
    /// The daemon's config file, for its `state_dir` (where its socket and
    /// database are) and its token.
    #[arg(long, value_name = "FILE", env = "GATHERD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The control API over TCP, `HOST:PORT`, or a socket, `unix:PATH`
    /// (default: the socket in the state folder).
    #[arg(long, value_name = "ADDR", env = "GATHERD_ADDR")]
    pub addr: Option<String>,
    /// The Bearer token for TCP (default: the config's `api_token` or
    /// `api_token_file`).
    #[arg(long, value_name = "TOKEN", env = "GATHERD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl StateArgs {
    fn api(&self) -> ApiArgs {
        ApiArgs {
            addr: self.addr.clone(),
            token: self.token.clone(),
            config: self.config.clone(),
            state: self.state.clone(),
        }
    }
}

/// Asks the daemon for `path` unless `--state` says to read the database;
/// `None` when it should read the database (no daemon answers).
async fn ask_daemon(args: &StateArgs, path: &str) -> Option<anyhow::Result<Value>> {
    if args.state.is_some() {
        return None;
    }
    let client = match Client::new(&args.api()) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    match client.json(reqwest::Method::GET, path).await {
        Ok(v) => Some(Ok(v)),
        Err(RequestError::Unreachable { .. }) => None,
        Err(e) => Some(Err(e.into())),
    }
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
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub where_: StateArgs,
}

/// Arguments of `gatherd show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The run's id (from `gatherd runs` or the logs' `run_id`).
    #[arg(value_name = "RUN")]
    pub run: i64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub where_: StateArgs,
}

async fn open(args: &StateArgs) -> anyhow::Result<History> {
    let config = Config::load_or_default(args.config.as_deref())?;
    let db = config.state_dir(args.state.clone()).join(store::DB_FILE);
    if !db.exists() {
        anyhow::bail!("no run history at {} (is --state right?)", db.display());
    }
    Ok(History::open(&db).await?)
}

/// `gatherd runs`: a table of runs, newest first.
pub async fn runs(args: RunsArgs) -> anyhow::Result<u8> {
    let status = match args.status.as_deref() {
        Some(s) => {
            Some(RecordedStatus::parse(s).ok_or_else(|| super::invalid(anyhow::anyhow!("unknown status `{s}`")))?)
        }
        None => None,
    };
    let mut query = format!("/runs?limit={}", args.limit.clamp(1, 1000));
    if let Some(job) = &args.job {
        query.push_str(&format!("&job={}", url_escape(job)));
    }
    if let Some(status) = status {
        query.push_str(&format!("&status={}", status.as_str()));
    }
    if let Some(before) = args.before {
        query.push_str(&format!("&before={before}"));
    }
    let rows = match ask_daemon(&args.where_, &query).await {
        Some(page) => page?["runs"].clone(),
        None => {
            let filter = RunFilter { job: args.job, status, limit: args.limit, before: args.before };
            let rows = open(&args.where_).await?.runs(filter).await?;
            serde_json::to_value(rows)?
        }
    };
    if args.json {
        print_json(&rows)?;
    } else {
        print!("{}", runs_table(rows.as_array().map_or(&[][..], Vec::as_slice)));
    }
    Ok(exit::OK)
}

/// Escapes a job id for a query string.
fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The human table of `gatherd runs`.
fn runs_table(rows: &[Value]) -> String {
    use std::fmt::Write;
    let text = |r: &Value, key: &str| r[key].as_str().unwrap_or("").to_string();
    let job_width = rows.iter().map(|r| text(r, "job").chars().count()).max().unwrap_or(3).max(3);
    let mut out = format!(
        "{:>6}  {:job_width$}  {:9}  {:11}  {:20}  {:>9}  ERROR\n",
        "RUN", "JOB", "TRIGGER", "STATUS", "STARTED", "DURATION"
    );
    for r in rows {
        let duration =
            r["duration_ms"].as_u64().map_or_else(|| "-".to_string(), |ms| format!("{:.2}s", ms as f64 / 1000.0));
        let error = text(r, "error");
        let error: String = error.lines().next().unwrap_or("").chars().take(60).collect();
        let started: String = text(r, "started_at").chars().take(19).collect::<String>().replace('T', " ");
        let line = format!(
            "{:>6}  {:job_width$}  {:9}  {:11}  {:20}  {:>9}  {error}",
            r["id"],
            text(r, "job"),
            text(r, "trigger"),
            text(r, "status"),
            started,
            duration,
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if rows.is_empty() {
        out.push_str("(no runs)\n");
    }
    out
}

/// A run's document, from the daemon or the database: as JSON (what
/// `--json` prints, as it came) and read into its type (what is rendered).
async fn document(run: i64, where_: &StateArgs) -> anyhow::Result<(Value, RunDocument)> {
    let json = match ask_daemon(where_, &format!("/runs/{run}")).await {
        Some(answer) => answer?,
        None => {
            let detail = open(where_).await?.run(run).await?.with_context(|| format!("no run {run}"))?;
            serde_json::to_value(detail.document())?
        }
    };
    let read = RunDocument::deserialize(&json).with_context(|| format!("cannot read run {run}'s document"))?;
    Ok((json, read))
}

/// `gatherd show RUN`: one run's steps and timeline, as `gatherd run` shows it.
pub async fn show(args: ShowArgs) -> anyhow::Result<u8> {
    let (json, doc) = document(args.run, &args.where_).await?;
    if args.json {
        print_json(&json)?;
    } else {
        println!(
            "run {} of {} ({}, due {}, on {})",
            doc.id,
            doc.report.job,
            doc.trigger,
            json["fire_time"].as_str().unwrap_or(""),
            doc.node
        );
        print!("{}", render::report(&doc.report, true));
    }
    Ok(exit::OK)
}

/// `gatherd logs RUN [--follow]`: the lines a run's scripts printed.
pub async fn logs(args: LogsArgs) -> anyhow::Result<u8> {
    if args.follow {
        return super::client::follow_logs(args.run, &args.where_.api()).await;
    }
    let (json, doc) = document(args.run, &args.where_).await?;
    if args.json {
        print_json(&json["logs"].as_array().cloned().unwrap_or_default())?;
    } else {
        for l in &doc.report.logs {
            println!("{}ms  {}  {}", l.at_ms, l.path, l.text);
        }
    }
    Ok(exit::OK)
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value).context("cannot write JSON")?);
    Ok(())
}
