//! The commands that steer a running daemon through its control API:
//! `gatherd jobs`, `gatherd trigger JOB [--wait]`, `gatherd cancel RUN` and
//! `gatherd logs RUN --follow`. A thin client: the daemon decides, these print.

use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;
use serde_json::Value;

use super::{exit, render};
use crate::config::Config;

/// How to reach the daemon.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The control API's address (default: the config's `api_listen`, else
    /// 127.0.0.1:7327).
    #[arg(long, value_name = "ADDR", env = "GATHERD_ADDR")]
    pub addr: Option<String>,
    /// The API's Bearer token (default: the config's `api_token`).
    #[arg(long, value_name = "TOKEN", env = "GATHERD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The daemon's config file, for the address and token.
    #[arg(long, value_name = "FILE", env = "GATHERD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Arguments of `gatherd jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Arguments of `gatherd trigger`.
#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The job (its path in the jobs folder, e.g. `backup.toml`).
    #[arg(value_name = "JOB")]
    pub job: String,
    /// Wait for the run to end, showing its steps as they finish; exit with
    /// its status (0 succeeded, 1 failed or timed out, 130 cancelled).
    #[arg(long)]
    pub wait: bool,
    /// Print JSON (with --wait: the run's document, as `gatherd show --json`).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Arguments of `gatherd cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The run's id.
    #[arg(value_name = "RUN")]
    pub run: i64,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Why a request got no answer it could use.
pub(super) enum Failure {
    /// Nothing listens at the address: no daemon runs there.
    Unreachable(String),
    /// The daemon answered, with an error.
    Answer(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(why) | Failure::Answer(why) => f.write_str(why),
        }
    }
}

/// A connection to the daemon's API.
pub(super) struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub(super) fn new(args: &ApiArgs) -> Result<Client, String> {
        let config = Config::load_or_default(args.config.as_deref()).map_err(|e| e.to_string())?;
        let addr = args.addr.clone().unwrap_or_else(|| config.api_listen().to_string());
        let base = if addr.starts_with("http://") { addr } else { format!("http://{addr}") };
        let token = args.token.clone().or(config.api_token);
        let http = reqwest::Client::builder().build().map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Client { base, token, http })
    }

    async fn send(&self, method: reqwest::Method, path: &str) -> Result<reqwest::Response, Failure> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            Failure::Unreachable(format!(
                "no daemon answers at {} ({e}); is `gatherd daemon` running, and is --addr right?",
                self.base
            ))
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value =
            response.bytes().await.ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
        let why = body["error"].as_str().map_or_else(|| status.to_string(), str::to_string);
        Err(Failure::Answer(why))
    }

    pub(super) async fn json(&self, method: reqwest::Method, path: &str) -> Result<Value, Failure> {
        let response = self.send(method, path).await?;
        let bytes =
            response.bytes().await.map_err(|e| Failure::Answer(format!("the daemon's answer broke off: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| Failure::Answer(format!("the daemon's answer is not JSON: {e}")))
    }

    /// Follows a run's server-sent events, calling `each(event, data)` until
    /// the stream ends.
    async fn follow(&self, run: i64, mut each: impl FnMut(&str, &Value)) -> Result<(), String> {
        let mut response =
            self.send(reqwest::Method::GET, &format!("/runs/{run}/events")).await.map_err(|e| e.to_string())?;
        let mut buffer = String::new();
        let (mut event, mut data) = (String::new(), String::new());
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("the event stream broke: {e}"))? {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find('\n') {
                let line: String = buffer.drain(..=end).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if !data.is_empty() {
                        each(&event, &serde_json::from_str(&data).unwrap_or(Value::Null));
                    }
                    event.clear();
                    data.clear();
                } else if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
        }
        Ok(())
    }
}

fn fail(e: impl std::fmt::Display) -> u8 {
    eprintln!("error: {e}");
    exit::FAILED
}

/// `gatherd jobs`: the daemon's jobs now.
pub async fn jobs(args: JobsArgs) -> u8 {
    let client = match Client::new(&args.api) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let jobs = match client.json(reqwest::Method::GET, "/jobs").await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&jobs).unwrap_or_default());
        return exit::OK;
    }
    let list = jobs["jobs"].as_array().cloned().unwrap_or_default();
    let width = list.iter().filter_map(|j| j["job"].as_str()).map(|j| j.chars().count()).max().unwrap_or(3).max(3);
    println!("{:width$}  {:24}  {:20}  {:7}  {:7}  LAST RUN", "JOB", "TRIGGER", "NEXT", "VALID", "RUNNING");
    for j in &list {
        let next = j["next_fire"]
            .as_str()
            .map_or("-".to_string(), |t| t.chars().take(19).collect::<String>().replace('T', " "));
        let last = match (&j["last_run"]["id"], j["last_run"]["status"].as_str()) {
            (Value::Number(id), Some(status)) => format!("{id} {status}"),
            _ => "-".to_string(),
        };
        let running = j["running"].as_array().map_or(0, Vec::len);
        let valid = if j["valid"] == true { "yes" } else { "NO" };
        let line = format!(
            "{:width$}  {:24}  {:20}  {:7}  {:7}  {last}",
            j["job"].as_str().unwrap_or(""),
            j["trigger"].as_str().unwrap_or(""),
            next,
            valid,
            running
        );
        println!("{}", line.trim_end());
        if let Some(why) = j["diagnostic"].as_str() {
            println!("    {}", why.lines().next().unwrap_or(""));
        }
    }
    exit::OK
}

/// `gatherd trigger JOB [--wait]`.
pub async fn trigger(args: TriggerArgs) -> u8 {
    let client = match Client::new(&args.api) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let started = match client.json(reqwest::Method::POST, &format!("/jobs/{}/trigger", args.job)).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let Some(run) = started["run_id"].as_i64() else { return fail("the daemon gave no run id") };
    if !args.wait {
        if args.json {
            println!("{started}");
        } else {
            println!("started run {run} of {}", args.job);
        }
        return exit::OK;
    }
    if !args.json {
        eprintln!("run {run} of {} started; waiting for it…", args.job);
    }
    let quiet = args.json;
    let followed = client
        .follow(run, |event, data| {
            if !quiet && event == "node_finished" {
                eprintln!("  {} {}", data["status"].as_str().unwrap_or(""), data["path"].as_str().unwrap_or(""));
            }
        })
        .await;
    if let Err(e) = followed {
        return fail(e);
    }
    // The stream ended with the run; the history has the whole of it.
    let document = match client.json(reqwest::Method::GET, &format!("/runs/{run}")).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let status = document["status"].as_str().unwrap_or("").to_string();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&document).unwrap_or_default());
    } else {
        print!("{}", render_document(&document));
    }
    match status.as_str() {
        "succeeded" => exit::OK,
        "cancelled" => exit::CANCELLED,
        _ => exit::FAILED,
    }
}

/// `gatherd cancel RUN`.
pub async fn cancel(args: CancelArgs) -> u8 {
    let client = match Client::new(&args.api) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match client.json(reqwest::Method::POST, &format!("/runs/{}/cancel", args.run)).await {
        Ok(answer) if args.json => {
            println!("{answer}");
            exit::OK
        }
        Ok(_) => {
            println!("cancelling run {}", args.run);
            exit::OK
        }
        Err(e) => fail(e),
    }
}

/// `gatherd logs RUN --follow`: the run's script lines as they come.
pub async fn follow_logs(run: i64, api: &ApiArgs) -> u8 {
    let client = match Client::new(api) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let followed = client
        .follow(run, |event, data| {
            if event == "log" {
                println!("{}", data["text"].as_str().unwrap_or(""));
            }
        })
        .await;
    match followed {
        Ok(()) => exit::OK,
        Err(e) => fail(e),
    }
}

/// A run document (from the API or the database) as `gatherd run` shows it.
pub(super) fn render_document(document: &Value) -> String {
    match crate::store::RunDocument::deserialize(document) {
        Ok(doc) => render::report(&doc.report, true),
        Err(e) => format!("(cannot read the run document: {e})\n"),
    }
}
