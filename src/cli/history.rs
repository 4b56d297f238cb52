//! `gatherd runs`, `gatherd show RUN`, `gatherd logs RUN`: the run history.
//! A thin client of the control API; when no daemon answers (or `--state`
//! names a state folder), they read the store's database directly, read-only
//! (safe beside a running daemon). Both sources give the same JSON, rendered
//! the same way.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::client::{ApiArgs, Client, Failure, render_document};
use super::exit;
use crate::config::Config;
use crate::store::{self, History, RecordedStatus, RunFilter};

/// Where the history is: the daemon's API, or its state folder.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// Read this state folder's database instead of asking the daemon.
    #[arg(long, value_name = "DIR", env = "GATHERD_STATE")]
    pub state: Option<PathBuf>,
    /// The daemon's config file, for its `api_listen`, `api_token` and `state_dir`.
    #[arg(long, value_name = "FILE", env = "GATHERD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The control API's address (default: the config's `api_listen`).
    #[arg(long, value_name = "ADDR", env = "GATHERD_ADDR")]
    pub addr: Option<String>,
    /// The API's Bearer token (default: the config's `api_token`).
    #[arg(long, value_name = "TOKEN", env = "GATHERD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl StateArgs {
    fn api(&self) -> ApiArgs {
        ApiArgs { addr: self.addr.clone(), token: self.token.clone(), config: self.config.clone() }
    }
}

/// Asks the daemon for `path` unless `--state` says to read the database;
/// `None` when it should read the database (no daemon answers).
async fn ask_daemon(args: &StateArgs, path: &str) -> Option<Result<Value, String>> {
    if args.state.is_some() {
        return None;
    }
    let client = match Client::new(&args.api()) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    match client.json(reqwest::Method::GET, path).await {
        Ok(v) => Some(Ok(v)),
        Err(Failure::Unreachable(_)) => None,
        Err(Failure::Answer(e)) => Some(Err(e)),
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
    let config = Config::load_or_default(args.config.as_deref()).map_err(|e| e.to_string())?;
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
        Some(Ok(page)) => page["runs"].clone(),
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
        None => {
            let filter = RunFilter { job: args.job, status, limit: args.limit, before: args.before };
            match open(&args.where_).await {
                Ok(history) => match history.runs(filter).await {
                    Ok(rows) => serde_json::to_value(rows).unwrap_or_default(),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return exit::FAILED;
                    }
                },
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::FAILED;
                }
            }
        }
    };
    if args.json {
        print_json(&rows);
    } else {
        print!("{}", runs_table(rows.as_array().map_or(&[][..], Vec::as_slice)));
    }
    exit::OK
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

/// A run's document, from the daemon or the database.
async fn document(run: i64, where_: &StateArgs) -> Result<Value, String> {
    if let Some(answer) = ask_daemon(where_, &format!("/runs/{run}")).await {
        return answer;
    }
    let history = open(where_).await?;
    match history.run(run).await {
        Ok(Some(detail)) => serde_json::to_value(detail.document()).map_err(|e| e.to_string()),
        Ok(None) => Err(format!("no run {run}")),
        Err(e) => Err(e.to_string()),
    }
}

/// `gatherd show RUN`: one run's steps and timeline, as `gatherd run` shows it.
pub async fn show(args: RunArgs) -> u8 {
    let doc = match document(args.run, &args.where_).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    if args.json {
        print_json(&doc);
    } else {
        println!(
            "run {} of {} ({}, due {}, on {})",
            doc["id"],
            doc["job"].as_str().unwrap_or(""),
            doc["trigger"].as_str().unwrap_or(""),
            doc["fire_time"].as_str().unwrap_or(""),
            doc["node"].as_str().unwrap_or("")
        );
        print!("{}", render_document(&doc));
    }
    exit::OK
}

/// `gatherd logs RUN [--follow]`: the lines a run's scripts printed.
pub async fn logs(args: LogsArgs) -> u8 {
    if args.follow {
        return super::client::follow_logs(args.run, &args.where_.api()).await;
    }
    let doc = match document(args.run, &args.where_).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    let logs = doc["logs"].as_array().cloned().unwrap_or_default();
    if args.json {
        print_json(&logs);
    } else {
        for l in &logs {
            println!("{:>8}ms  {}  {}", l["at_ms"], l["path"].as_str().unwrap_or(""), l["text"].as_str().unwrap_or(""));
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
