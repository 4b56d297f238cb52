//! The commands that steer a running daemon through its control API:
//! `gatherd jobs`, `gatherd trigger JOB [--wait] [--follow]` (answered at
//! once, `queued` when the run waits for a slot), `gatherd cancel RUN`; and the reader of a run's event stream that `gatherd logs
//! RUN --follow` uses too. A thin client: the daemon decides, these print.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::out::{out, outln};
use super::{exit, render};
use crate::api::events::EventView;
use crate::config::Config;
use crate::exec::{RecordedStatus, Status};
use crate::store::{LogFilter, RunDocument};

/// How to reach the daemon: by default its unix socket, `gatherd.sock` in
/// its state folder; `--addr` for TCP (or another socket, `unix:PATH`).
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The control API over TCP, `HOST:PORT` (a daemon's `api_listen`), or a
    /// socket, `unix:PATH` (default: the socket in the state folder).
    #[arg(long, value_name = "ADDR", env = "GATHERD_ADDR")]
    pub addr: Option<String>,
    /// The Bearer token for TCP (default: the config's `api_token`, or the
    /// content of its `api_token_file`). The socket needs none.
    #[arg(long, value_name = "TOKEN", env = "GATHERD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The daemon's config file, for its state folder and token.
    #[arg(long, value_name = "FILE", env = "GATHERD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The daemon's state folder, where its socket `gatherd.sock` is
    /// (default: the config's `state_dir`, $STATE_DIRECTORY, else
    /// ~/.local/state/gatherd).
    #[arg(long, value_name = "DIR", env = "GATHERD_STATE")]
    pub state: Option<PathBuf>,
}

/// Arguments of `gatherd jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub table: TableArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// How a table of times is shown: `--utc`, `--wide`.
#[derive(Debug, Args, Clone, Copy)]
pub struct TableArgs {
    /// Show times in UTC instead of local time (TZ, else /etc/localtime).
    #[arg(long)]
    pub utc: bool,
    /// Cut nothing to fit the terminal's width.
    #[arg(long)]
    pub wide: bool,
}

impl TableArgs {
    /// The width to fit the table to: the terminal's, unless `--wide`.
    pub fn fit(self) -> Option<usize> {
        if self.wide { None } else { super::out::width() }
    }

    /// How times are shown.
    pub fn clock(self) -> super::clock::Clock {
        super::clock::Clock::new(self.utc)
    }
}

/// Arguments of `gatherd trigger`.
#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The job: its path in the jobs folder, with or without the extension
    /// (`backup` or `backup.toml`).
    #[arg(value_name = "JOB")]
    pub job: String,
    /// Wait for the run to end, showing its steps as they finish; exit with
    /// its status (0 succeeded, 1 failed or timed out, 130 cancelled).
    /// Ctrl-C stops the waiting (exit 130), not the run.
    #[arg(long)]
    pub wait: bool,
    /// With --wait (implied): print the lines the run's steps and scripts
    /// print as they come, as `gatherd logs --follow` does, above the steps.
    #[arg(long, short, conflicts_with = "json")]
    pub follow: bool,
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

/// Arguments of `gatherd pause` and `gatherd resume`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The job (its path in the jobs folder, e.g. `backup.toml`).
    #[arg(value_name = "JOB")]
    pub job: String,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Why a request to the daemon got no answer it could use.
#[derive(Debug, thiserror::Error)]
pub(super) enum RequestError {
    /// Nothing listens at the address: no daemon runs there.
    #[error("no daemon answers at {base} ({cause}); is `gatherd daemon` running, and is {hint} right?")]
    Unreachable {
        /// Where the API was looked for (a URL or `unix:PATH`).
        base: String,
        /// The flag that chose it.
        hint: &'static str,
        /// The connection's error (in the message, not a source: its own
        /// causes would only repeat what the message says).
        cause: reqwest::Error,
    },
    /// The daemon answered, with an error.
    #[error("{0}")]
    Answer(String),
    /// The answer broke off or is not what was asked for.
    #[error("the daemon's answer {what}: {source}")]
    Unreadable {
        /// What is wrong with it.
        what: &'static str,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A connection to the daemon's API.
pub(super) struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    /// Where the API is, for messages (`unix:PATH` or the URL), and the flag
    /// that says so.
    shown: (String, &'static str),
}

impl Client {
    pub(super) fn new(args: &ApiArgs) -> anyhow::Result<Client> {
        let config = Config::load_or_default(args.config.as_deref())?;
        let state = config.state_dir(args.state.clone());
        let socket = match args.addr.as_deref() {
            None => Some((state.join(crate::api::SOCKET_FILE), "--state")),
            Some(addr) => {
                addr.strip_prefix("unix:").map(|path| (PathBuf::from(path.trim_start_matches("//")), "--addr"))
            }
        };
        let builder = reqwest::Client::builder();
        let (base, token, builder, shown) = match (socket, args.addr.as_deref()) {
            (Some((path, hint)), _) => {
                let shown = (format!("unix:{}", path.display()), hint);
                // The socket's mode is its gate: no token.
                ("http://localhost".to_string(), None, builder.unix_socket(path), shown)
            }
            (None, addr) => {
                let addr = addr.unwrap_or_default();
                let base = if addr.starts_with("http://") { addr.to_string() } else { format!("http://{addr}") };
                let token = match args.token.clone() {
                    Some(token) => Some(token),
                    None => config.api_token(&state).map_err(anyhow::Error::msg)?,
                };
                let shown = (base.clone(), "--addr");
                (base, token, builder, shown)
            }
        };
        let http = builder.build().context("cannot make an HTTP client")?;
        Ok(Client { base, token, http, shown })
    }

    async fn send(&self, method: reqwest::Method, path: &str) -> Result<reqwest::Response, RequestError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|cause| RequestError::Unreachable {
            base: self.shown.0.clone(),
            hint: self.shown.1,
            cause,
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value =
            response.bytes().await.ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
        let why = body["error"].as_str().map_or_else(|| status.to_string(), str::to_string);
        Err(RequestError::Answer(why))
    }

    /// The daemon's JSON answer to `method path`.
    pub(super) async fn json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<T, RequestError> {
        let response = self.send(method, path).await?;
        let bytes =
            response.bytes().await.map_err(|e| RequestError::Unreadable { what: "broke off", source: Box::new(e) })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RequestError::Unreadable { what: "is not the JSON expected", source: Box::new(e) })
    }

    /// The daemon's answer to `GET path` as text, with its `x-next-after`
    /// header (the `after` of the next page of a run's lines, when there is
    /// one).
    pub(super) async fn page(&self, path: &str) -> Result<(String, Option<u64>), RequestError> {
        let response = self.send(reqwest::Method::GET, path).await?;
        let next =
            response.headers().get("x-next-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let text =
            response.text().await.map_err(|e| RequestError::Unreadable { what: "broke off", source: Box::new(e) })?;
        Ok((text, next))
    }

    /// Follows a run's server-sent events from its first, calling `each`
    /// with every event and its `id:` until the stream ends.
    pub(super) async fn follow(&self, run: i64, mut each: impl FnMut(Option<u64>, &EventView)) -> anyhow::Result<()> {
        let mut response = self.send(reqwest::Method::GET, &format!("/runs/{run}/events?from=0")).await?;
        let mut buffer = String::new();
        let mut data = String::new();
        let mut id = None;
        while let Some(chunk) = response.chunk().await.context("the event stream broke")? {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find('\n') {
                let line: String = buffer.drain(..=end).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    // Events this client does not know (`lagged`) are passed over.
                    if let Ok(event) = serde_json::from_str::<EventView>(&data) {
                        each(id, &event);
                    }
                    data.clear();
                    id = None;
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                } else if let Some(i) = line.strip_prefix("id:") {
                    id = i.trim().parse().ok();
                }
            }
        }
        Ok(())
    }
}

/// The exit status of a command that waited for a run: 0 succeeded, 130
/// cancelled, 1 for any other end (failed, timed out, interrupted, missed).
pub(super) fn exit_for(status: RecordedStatus) -> u8 {
    match status {
        RecordedStatus::Finished(Status::Succeeded) => exit::OK,
        RecordedStatus::Finished(Status::Cancelled) => exit::CANCELLED,
        _ => exit::FAILED,
    }
}

/// `gatherd jobs`: the daemon's jobs now.
pub async fn jobs(args: JobsArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.api)?;
    let jobs: Value = client.json(reqwest::Method::GET, "/jobs").await?;
    if args.json {
        super::out::json(&jobs)?;
        return Ok(exit::OK);
    }
    let list = jobs["jobs"].as_array().cloned().unwrap_or_default();
    out!("{}", jobs_table(&list, args.table.fit(), args.table.clock(), chrono::Utc::now()))?;
    Ok(exit::OK)
}

/// The human table of `gatherd jobs` at `now`, times shown by `clock`,
/// fitted to `fit` columns when given (TRIGGER is cut first, then LAST RUN,
/// then LAST, then the job's name); an invalid job's diagnostic follows its
/// row, indented. NEXT is in the job's own `timezone` when it names one
/// (the time written in its file), else in `clock`'s; LEFT and PASSED say
/// how far away NEXT and LAST are, as `systemctl list-timers` does.
fn jobs_table(list: &[Value], fit: Option<usize>, clock: super::clock::Clock, now: DateTime<Utc>) -> String {
    use render::Column;
    let columns = [
        Column::new("JOB").shrink(3),
        Column::new("TRIGGER").shrink(0),
        Column::new("NEXT"),
        Column::new("LEFT"),
        Column::new("LAST").shrink(2),
        Column::new("PASSED"),
        Column::new("VALID"),
        Column::new("RUNNING").right(),
        Column::new("LAST RUN").shrink(1),
    ];
    let time = |v: &Value| v.as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok());
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|j| {
            let zone = j["timezone"].as_str().and_then(|tz| tz.parse::<chrono_tz::Tz>().ok());
            let next = time(&j["next_fire"]);
            let last_at = time(&j["last_run"]["started_at"]);
            let or_dash = |t: Option<DateTime<Utc>>, show: &dyn Fn(DateTime<Utc>) -> String| t.map_or("-".into(), show);
            // A paused job does not fire: NEXT says so.
            let paused = j["paused"] == true;
            let last = match (&j["last_run"]["id"], j["last_run"]["status"].as_str()) {
                (Value::Number(id), Some(status)) => format!("{id} {status}"),
                _ => "-".to_string(),
            };
            let running = j["running"].as_array().map_or(0, Vec::len);
            // Runs queued for a slot, beside those in flight: `1 +2 queued`.
            let running = match j["queued"].as_array().map_or(0, Vec::len) {
                0 => running.to_string(),
                queued => format!("{running} +{queued} queued"),
            };
            let valid = if j["valid"] == true { "yes" } else { "NO" };
            // Version skew in a fleet: another live node has another version.
            let valid = match j["skew"].as_array().map_or(0, Vec::len) {
                0 => valid.to_string(),
                _ => format!("{valid} skew"),
            };
            let text = |key: &str| j[key].as_str().unwrap_or("").to_string();
            vec![
                text("job"),
                text("trigger"),
                if paused { "paused".into() } else { or_dash(next, &|t| clock.show_in(t, zone)) },
                if paused { "-".into() } else { or_dash(next, &|t| super::clock::left(t, now)) },
                or_dash(last_at, &|t| clock.show(t)),
                or_dash(last_at, &|t| super::clock::passed(t, now)),
                valid.to_string(),
                running,
                last,
            ]
        })
        .collect();
    let mut lines = render::table(&columns, &rows, fit).into_iter();
    let mut out = String::new();
    let mut push = |line: &str| {
        out.push_str(line);
        out.push('\n');
    };
    push(&lines.next().unwrap_or_default());
    for (j, line) in list.iter().zip(lines) {
        push(&line);
        if let Some(why) = j["diagnostic"].as_str() {
            let why = format!("    {}", why.lines().next().unwrap_or(""));
            push(&fit.map_or_else(|| why.clone(), |fit| render::cut_to_width(&why, fit)));
        }
    }
    out
}

/// `gatherd trigger JOB [--wait]`.
pub async fn trigger(args: TriggerArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.api)?;
    let started: Value = client
        .json(reqwest::Method::POST, &format!("/jobs/{}/trigger", args.job))
        .await
        .with_context(|| format!("cannot trigger {}", args.job))?;
    let run = started["run_id"].as_i64().context("the daemon gave no run id")?;
    // A run that waits for a slot or its semaphore is answered at once too.
    let queued = started["status"] == RecordedStatus::Queued.as_str();
    if !args.wait && !args.follow {
        if args.json {
            super::out::json(&started)?;
        } else if queued {
            outln!(
                "queued run {run} of {}: it starts when a slot (max_concurrent_runs) or its semaphore frees; \
                 `gatherd cancel {run}` cancels it",
                args.job
            )?;
        } else {
            outln!("started run {run} of {}", args.job)?;
        }
        return Ok(exit::OK);
    }
    // Listening before saying so: a Ctrl-C from then on is handled.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot listen for Ctrl-C")?;
    if !args.json {
        let state = if queued { "queued" } else { "started" };
        eprintln!("run {run} of {} {state}; waiting for it…", args.job);
    }
    let quiet = args.json;
    let stderr_color = super::color::on_stderr();
    let mut lines = args.follow.then(|| super::history::LinePrinter::new(run, false, LogFilter::default()));
    let mut failed = None;
    let followed = client.follow(run, |id, event| match event {
        EventView::NodeFinished { status, path, .. } if !quiet => {
            eprintln!("  {} {path}", super::color::status(status.as_str(), *status, stderr_color));
        }
        EventView::RunStarted { started_at, .. } => {
            if let Some(lines) = &mut lines {
                lines.started_at = Some(*started_at);
            }
        }
        _ => {
            if let Some((lines, line)) = lines.as_ref().zip(super::history::line_of(id, event))
                && let Err(e) = lines.print(&line)
            {
                failed.get_or_insert(e);
            }
        }
    });
    tokio::select! {
        followed = followed => followed.with_context(|| format!("cannot follow run {run}"))?,
        _ = interrupt.recv() => {
            // Ctrl-C stops the waiting, not the run: say so, and how to stop it.
            eprintln!(
                "run {run} goes on in the daemon: `gatherd cancel {run}` cancels it, `gatherd logs {run} --follow` \
                 follows it"
            );
            return Ok(exit::CANCELLED);
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    // The stream ended with the run; the history has the whole of it.
    let document: Value = client.json(reqwest::Method::GET, &format!("/runs/{run}")).await?;
    let read = RunDocument::deserialize(&document).with_context(|| format!("cannot read run {run}'s document"))?;
    if args.json {
        super::out::json(&document)?;
    } else {
        out!("{}", render::report(&read.report, true, super::color::on_stdout()))?;
    }
    Ok(exit_for(read.report.status))
}

/// `gatherd cancel RUN`.
pub async fn cancel(args: CancelArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.api)?;
    let answer: Value = client
        .json(reqwest::Method::POST, &format!("/runs/{}/cancel", args.run))
        .await
        .with_context(|| format!("cannot cancel run {}", args.run))?;
    if args.json {
        super::out::json(&answer)?;
    } else {
        outln!("cancelling run {}", args.run)?;
    }
    Ok(exit::OK)
}

/// `gatherd pause JOB` (`paused` true) and `gatherd resume JOB`.
pub async fn pause(args: PauseArgs, paused: bool) -> anyhow::Result<u8> {
    let client = Client::new(&args.api)?;
    let (verb, route) = if paused { ("pause", "pause") } else { ("resume", "resume") };
    let answer: Value = client
        .json(reqwest::Method::POST, &format!("/jobs/{}/{route}", args.job))
        .await
        .with_context(|| format!("cannot {verb} {}", args.job))?;
    if args.json {
        super::out::json(&answer)?;
    } else if paused {
        outln!(
            "paused {}: its fires are recorded missed until `gatherd resume {}`; runs in flight go on",
            args.job,
            args.job
        )?;
    } else {
        outln!("resumed {}", args.job)?;
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Two jobs as `GET /jobs` lists them: one with a long cron trigger and
    /// an invalid one with a long diagnostic.
    fn two_jobs() -> Vec<Value> {
        vec![
            json!({"job": "backup.toml", "trigger": "schedule 0 30 2 * * Mon-Fri (Europe/Berlin)",
                   "next_fire": "2026-11-30T01:30:00Z", "timezone": "Europe/Berlin", "valid": true, "running": [],
                   "last_run": {"id": 12345, "status": "succeeded", "started_at": "2026-11-27T01:30:00.250Z"}}),
            json!({"job": "reports/weekly-summary.rhai", "trigger": "every 1h", "next_fire": null,
                   "valid": false, "running": [], "last_run": null,
                   "diagnostic": "reports/weekly-summary.rhai:3:7: unknown key `scheduel`, did you mean `schedule`? and more"}),
        ]
    }

    /// The `now` of the tables' tests.
    fn now() -> DateTime<Utc> {
        "2026-11-29T12:00:00Z".parse().expect("a time")
    }

    /// The tables' tests' reader: in New York, so a job's own zone (Berlin)
    /// and the reader's differ.
    const NEW_YORK: super::super::clock::Clock = super::super::clock::Clock::Zone(chrono_tz::America::New_York);

    #[test]
    fn jobs_fit_the_terminal_width_cutting_the_trigger_first() {
        // As wide as the columns leave the trigger 16 columns on a 100-column
        // terminal before NEXT, LEFT, LAST and PASSED came.
        let width = 154;
        let table = jobs_table(&two_jobs(), Some(width), NEW_YORK, now());
        for line in table.lines() {
            assert!(line.chars().count() <= width, "{} columns: {line:?}\n{table}", line.chars().count());
        }
        assert!(table.contains("schedule 0 30 2…"), "the trigger is cut with …:\n{table}");
        assert!(table.contains("reports/weekly-summary.rhai"), "the job's name is kept whole:\n{table}");
        insta::assert_snapshot!(table);
    }

    #[test]
    fn a_job_another_node_has_in_another_version_is_marked_skew() {
        let mut jobs = two_jobs();
        jobs[0]["skew"] = serde_json::json!(["web2-8c01d4aa"]);
        let table = jobs_table(&jobs, None, NEW_YORK, now());
        let rows: Vec<&str> = table.lines().collect();
        assert!(rows[1].contains(" yes skew "), "{table}");
        assert!(!rows[2].contains("skew"), "{table}");
    }

    #[test]
    fn jobs_not_on_a_terminal_are_never_cut() {
        let table = jobs_table(&two_jobs(), None, NEW_YORK, now());
        assert!(table.contains("schedule 0 30 2 * * Mon-Fri (Europe/Berlin)"), "{table}");
        assert!(table.contains("did you mean `schedule`? and more"), "{table}");
    }

    /// NEXT in the job's own zone (02:30 Berlin, as its file says), LAST in
    /// the reader's, LEFT and PASSED relative to now; `--utc` shows both in
    /// UTC.
    #[test]
    fn jobs_show_next_in_the_jobs_zone_last_in_the_readers_and_both_relative() {
        let table = jobs_table(&two_jobs(), None, NEW_YORK, now());
        let backup = table.lines().nth(1).expect("a row");
        assert!(backup.contains("2026-11-30 02:30:00 CET  in 13h 30min"), "{table}");
        assert!(backup.contains("2026-11-26 20:30:00 EST  2d 10h ago"), "{table}");
        let utc = jobs_table(&two_jobs(), None, super::super::clock::Clock::Utc, now());
        assert!(utc.contains("2026-11-30 01:30:00 UTC  in 13h 30min"), "{utc}");
        assert!(utc.contains("2026-11-27 01:30:00 UTC  2d 10h ago"), "{utc}");
        insta::assert_snapshot!(table);
    }
}
