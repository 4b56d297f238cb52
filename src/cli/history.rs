//! `gatherd runs`, `gatherd show RUN`, `gatherd logs RUN`: the run history.
//! A thin client of the control API; when no daemon answers (or `--state`
//! names a state folder), they read the store's database directly, read-only
//! (safe beside a running daemon). Both sources give the same JSON, rendered
//! the same way.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{ApiArgs, Client, RequestError};
use super::out::{out, outln};
use super::{exit, render};
use crate::api::events::EventView;
use crate::config::Config;
use crate::store::{
    self, History, LogFilter, NumberedLine, PostgresHistory, RecordedStatus, RunDetail, RunDocument, RunFilter, RunId,
    RunRow, StoreError,
};

/// Where the history is: the daemon's API, or its state folder.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// Read this state folder's database instead of asking the daemon
    /// (`logs --follow`: the daemon of this state folder).
    #[arg(long, value_name = "DIR", env = "GATHERD_STATE")]
    pub state: Option<PathBuf>,
    /// Read the history in this PostgreSQL database (a postgres:// URL)
    /// instead of asking the daemon: a fleet's history, with no daemon
    /// (default: the config's `store`, when no daemon answers).
    #[arg(long, value_name = "URL", env = "GATHERD_STORE", hide_env_values = true)]
    pub store: Option<String>,
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
    if args.state.is_some() || args.store.is_some() {
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

/// The most `runs --limit` takes: the API's bound (`GET /runs?limit=`), so
/// the daemon and the database answer alike (`api::runs::MAX_LIMIT`, private
/// to the API).
const MAX_LIMIT: i64 = 1000;

/// Arguments of `gatherd runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only this job: its path in the jobs folder, with or without the
    /// extension (`backup` or `backup.toml`).
    #[arg(long)]
    pub job: Option<String>,
    /// Only runs with this status (succeeded, failed, timed_out, cancelled,
    /// interrupted, missed, running).
    #[arg(long)]
    pub status: Option<String>,
    /// At most this many (newest first), 1 to 1000 as the API takes;
    /// `--before` pages on.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=MAX_LIMIT))]
    pub limit: u32,
    /// Only runs older than this run id (the next page).
    #[arg(long, value_name = "RUN")]
    pub before: Option<i64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub table: super::client::TableArgs,
    #[command(flatten)]
    pub where_: StateArgs,
}

/// Arguments of `gatherd logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The run's id.
    #[arg(value_name = "RUN")]
    pub run: i64,
    /// Only this step's lines: its name (`fetch`) or path (`main/fetch`).
    #[arg(long, value_name = "NAME")]
    pub step: Option<String>,
    /// Follow a run in flight through the daemon's API: the lines so far,
    /// then each as it comes, until the run ends.
    #[arg(long, short)]
    pub follow: bool,
    /// Print JSON lines, one `{"seq","path","at_ms","stream","text"}` per
    /// line (as `GET /runs/{id}/logs`), and no end line.
    #[arg(long)]
    pub json: bool,
    /// Show TIME in UTC instead of local time (TZ, else /etc/localtime).
    #[arg(long)]
    pub utc: bool,
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
    /// Show times in UTC instead of local time (TZ, else /etc/localtime).
    #[arg(long)]
    pub utc: bool,
    #[command(flatten)]
    pub where_: StateArgs,
}

/// The history read without a daemon: the state folder's SQLite file, or
/// the PostgreSQL database of `--store` (or of the config's `store`, unless
/// `--state` names a folder).
enum Reader {
    Sqlite(History),
    Postgres(PostgresHistory),
}

impl Reader {
    async fn runs(&self, filter: RunFilter) -> Result<Vec<RunRow>, StoreError> {
        match self {
            Reader::Sqlite(h) => h.runs(filter).await,
            Reader::Postgres(h) => h.runs(filter).await,
        }
    }

    async fn job_names(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Reader::Sqlite(h) => h.job_names().await,
            Reader::Postgres(h) => h.job_names().await,
        }
    }

    async fn run(&self, id: RunId) -> Result<Option<RunDetail>, StoreError> {
        match self {
            Reader::Sqlite(h) => h.run(id).await,
            Reader::Postgres(h) => h.run(id).await,
        }
    }

    async fn logs(&self, id: RunId, filter: LogFilter) -> Result<Option<Vec<NumberedLine>>, StoreError> {
        match self {
            Reader::Sqlite(h) => h.logs(id, filter).await,
            Reader::Postgres(h) => h.logs(id, filter).await,
        }
    }
}

async fn open(args: &StateArgs) -> anyhow::Result<Reader> {
    let config = Config::load_or_default(args.config.as_deref())?;
    let url = args.store.as_deref().or(if args.state.is_none() { config.store.as_deref() } else { None });
    if let Some(url) = url {
        let url = store::postgres_url(url).map_err(super::invalid)?;
        return Ok(Reader::Postgres(PostgresHistory::open(url).await?));
    }
    let db = config.state_dir(args.state.clone()).join(store::DB_FILE);
    if !db.exists() {
        anyhow::bail!("no run history at {} (is --state right?)", db.display());
    }
    Ok(Reader::Sqlite(History::open(&db).await?))
}

/// `gatherd runs`: a table of runs, newest first.
pub async fn runs(args: RunsArgs) -> anyhow::Result<u8> {
    let status = match args.status.as_deref() {
        Some(s) => {
            Some(RecordedStatus::parse(s).ok_or_else(|| super::invalid(anyhow::anyhow!("unknown status `{s}`")))?)
        }
        None => None,
    };
    let query = |job: Option<&str>| {
        let mut query = format!("/runs?limit={}", args.limit);
        if let Some(job) = job {
            query.push_str(&format!("&job={}", url_escape(job)));
        }
        if let Some(status) = status {
            query.push_str(&format!("&status={}", status.as_str()));
        }
        if let Some(before) = args.before {
            query.push_str(&format!("&before={before}"));
        }
        query
    };
    // The job as named (with or without its extension) among the daemon's
    // jobs; a name it does not know may still be a removed job's history.
    let (job, unknown) = match &args.job {
        None => (None, None),
        Some(name) => match ask_daemon(&args.where_, "/jobs").await {
            Some(jobs) => {
                let jobs = jobs?;
                let ids = jobs["jobs"].as_array().into_iter().flatten().filter_map(|j| j["job"].as_str());
                match crate::job::resolve_name(name, ids) {
                    Ok(id) => (Some(id), None),
                    Err(e @ crate::job::NameError::Unknown { .. }) => (Some(name.clone()), Some(e)),
                    Err(e) => return Err(super::invalid(e)),
                }
            }
            None => (Some(name.clone()), None),
        },
    };
    let rows = match ask_daemon(&args.where_, &query(job.as_deref())).await {
        Some(page) => page?["runs"].clone(),
        None => {
            let history = open(&args.where_).await?;
            // The database knows every job it has seen: a name none of them
            // has is an error, not an empty list.
            let job = match job {
                Some(name) => Some(
                    crate::job::resolve_name(&name, history.job_names().await?.iter().map(String::as_str))
                        .map_err(super::invalid)?,
                ),
                None => None,
            };
            let filter = RunFilter { job, status, limit: args.limit, before: args.before };
            serde_json::to_value(history.runs(filter).await?)?
        }
    };
    if let (Some(unknown), Some(name)) = (unknown, &args.job)
        && rows.as_array().is_none_or(Vec::is_empty)
    {
        // Not a job of the daemon's; an error unless it has runs at all
        // (a removed job's history, which other filters left out here).
        let any = ask_daemon(&args.where_, &format!("/runs?limit=1&job={}", url_escape(name))).await;
        if any.transpose()?.is_none_or(|page| page["runs"].as_array().is_none_or(Vec::is_empty)) {
            return Err(super::invalid(unknown));
        }
    }
    if args.json {
        print_json(&rows)?;
    } else {
        let rows = rows.as_array().map_or(&[][..], Vec::as_slice);
        out!("{}", runs_table(rows, args.table.fit(), args.table.clock()))?;
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

/// The human table of `gatherd runs`, STARTED shown by `clock`, fitted to
/// `fit` columns when given (ERROR is cut first, then JOB). An error shows
/// its first line, at most 60 characters, in any case. A NODE column (after
/// STATUS) when the runs listed come from more than one node — a fleet's
/// history; one daemon's table stays as it was.
fn runs_table(rows: &[Value], fit: Option<usize>, clock: super::clock::Clock) -> String {
    use render::Column;
    let text = |r: &Value, key: &str| r[key].as_str().unwrap_or("").to_string();
    let nodes: std::collections::BTreeSet<&str> = rows.iter().filter_map(|r| r["node"].as_str()).collect();
    let fleet = nodes.len() > 1;
    let mut columns = vec![
        Column::new("RUN").right(),
        Column::new("JOB").shrink(1),
        Column::new("TRIGGER"),
        Column::new("STATUS"),
        Column::new("STARTED"),
        Column::new("DURATION").right(),
        Column::new("ERROR").shrink(0),
    ];
    if fleet {
        columns.insert(4, Column::new("NODE").shrink(2));
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let duration =
                r["duration_ms"].as_u64().map_or_else(|| "-".to_string(), |ms| format!("{:.2}s", ms as f64 / 1000.0));
            let error = text(r, "error");
            let error: String = error.lines().next().unwrap_or("").chars().take(60).collect();
            let started = r["started_at"].as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok());
            let started = started.map_or_else(|| "-".to_string(), |t| clock.show(t));
            let id = r["id"].as_i64().map_or_else(|| "?".to_string(), |id| id.to_string());
            let mut row = vec![id, text(r, "job"), text(r, "trigger"), text(r, "status"), started, duration, error];
            if fleet {
                row.insert(4, text(r, "node"));
            }
            row
        })
        .collect();
    let mut out = String::new();
    for line in render::table(&columns, &cells, fit) {
        out.push_str(&line);
        out.push('\n');
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
        let clock = super::clock::Clock::new(args.utc);
        let time = |key: &str| json[key].as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok());
        let started = time("started_at").map_or_else(String::new, |t| format!("started {}, ", clock.show(t)));
        outln!(
            "run {} of {} ({}, {started}due {}, on {})",
            doc.id,
            doc.report.job,
            doc.trigger,
            time("fire_time").map_or_else(|| "-".to_string(), |t| clock.show(t)),
            doc.node
        )?;
        out!("{}", render::report(&doc.report, true, super::color::on_stdout()))?;
    }
    Ok(exit::OK)
}

/// `gatherd logs RUN [--step NAME] [--follow] [--json]`: every line the
/// run's steps and scripts printed, `TIME STEP STREAM TEXT`, then one line
/// saying how the run ended; the exit status follows the run (as `trigger
/// --wait`). `--follow` reads the run's event stream from its first event
/// (the backlog, then live, each line once); with no daemon to ask, a run
/// that is over is read from the database, one still running is an error.
pub async fn logs(args: LogsArgs) -> anyhow::Result<u8> {
    let filter = LogFilter { step: args.step.clone().filter(|s| !s.is_empty()), after: None, limit: None };
    if args.follow
        && let Some(code) = follow_lines(&args, &filter).await?
    {
        return Ok(code);
    }
    let (lines, printer, end) = snapshot(&args, &filter).await?;
    if args.follow && end.status.is_going() {
        anyhow::bail!(
            "run {} is still running, and following it needs the daemon, which does not answer (is `gatherd daemon` \
             running, and are --state/--addr right?)",
            args.run
        );
    }
    for line in &lines {
        printer.print(line)?;
    }
    printer.end(&end)
}

/// How a run ended (or that it has not), for the last line of `logs`.
struct RunEnd {
    status: RecordedStatus,
    duration_ms: Option<u64>,
    error: Option<String>,
}

impl RunEnd {
    fn of_document(doc: &RunDocument) -> RunEnd {
        let report = &doc.report;
        let finished = matches!(report.status, RecordedStatus::Finished(_));
        RunEnd {
            status: report.status,
            duration_ms: finished.then_some(report.duration_ms),
            error: report.error.clone(),
        }
    }
}

/// Prints a run's lines as `logs` does (and `trigger --follow`).
pub(super) struct LinePrinter {
    run: i64,
    /// The run's start: a line's TIME is this plus its `at_ms`.
    pub(super) started_at: Option<DateTime<Utc>>,
    json: bool,
    filter: LogFilter,
    /// Whether stdout is a terminal (and not `--json`): control characters
    /// are escaped then, so a line cannot rewrite what is on the screen.
    terminal: bool,
    /// TIME in UTC (`--utc`), else local.
    utc: bool,
}

/// Whether lines printed to stdout should be escaped for a terminal.
fn terminal(json: bool) -> bool {
    !json && super::out::is_terminal()
}

/// The line an `output` or `log` event carries, numbered `seq`.
pub(super) fn line_of(seq: Option<u64>, event: &EventView) -> Option<NumberedLine> {
    match event {
        EventView::Output { path, stream, text, at_ms } | EventView::Log { path, stream, text, at_ms, .. } => {
            Some(NumberedLine { seq, path: path.clone(), at_ms: *at_ms, stream: *stream, text: text.clone() })
        }
        _ => None,
    }
}

impl LinePrinter {
    /// A printer of run `run`'s lines that `filter` wants; its start is
    /// set when known.
    pub(super) fn new(run: i64, json: bool, filter: LogFilter) -> LinePrinter {
        LinePrinter { run, started_at: None, json, filter, terminal: terminal(json), utc: false }
    }

    pub(super) fn print(&self, line: &NumberedLine) -> anyhow::Result<()> {
        if let Some(shown) = self.shown(line)? {
            outln!("{shown}")?;
        }
        Ok(())
    }

    /// `line` as printed, `None` if the filter does not want it: JSON, or
    /// `TIME STEP STREAM TEXT`, escaped for a terminal.
    fn shown(&self, line: &NumberedLine) -> anyhow::Result<Option<String>> {
        if !self.filter.wants_path(&line.path) {
            return Ok(None);
        }
        let clock = self.clock(line.at_ms);
        Ok(Some(if self.json {
            serde_json::to_string(line).context("cannot write JSON")?
        } else if self.terminal {
            format!("{clock} {}", super::render::followed_line(&line.path, line.stream, &line.text, true))
        } else {
            format!("{clock} {} {} {}", line.path, line.stream, line.text)
        }))
    }

    /// The wall time of `at_ms` into the run, local, `HH:MM:SS.mmm`
    /// (`+Nms` for a run whose start is unknown).
    fn clock(&self, at_ms: u64) -> String {
        let at = i64::try_from(at_ms).ok().map(chrono::TimeDelta::milliseconds);
        match self.started_at.zip(at).and_then(|(start, at)| start.checked_add_signed(at)) {
            Some(time) if self.utc => time.format("%H:%M:%S%.3f").to_string(),
            Some(time) => time.with_timezone(&chrono::Local).format("%H:%M:%S%.3f").to_string(),
            None => format!("+{at_ms}ms"),
        }
    }

    /// Prints how the run ended (not in JSON) and returns the exit status.
    fn end(&self, end: &RunEnd) -> anyhow::Result<u8> {
        if end.status.is_going() {
            if !self.json {
                outln!("run {} is still {} (--follow to follow it)", self.run, end.status)?;
            }
            return Ok(exit::OK);
        }
        if !self.json {
            let mut line = format!("run {} {}", self.run, end.status);
            if let Some(ms) = end.duration_ms {
                line.push_str(&format!(" after {:.2}s", ms as f64 / 1000.0));
            }
            if let Some(error) = end.error.as_deref().and_then(|e| e.lines().next()) {
                line.push_str(&format!(": {error}"));
            }
            outln!("{line}")?;
        }
        Ok(super::client::exit_for(end.status))
    }
}

/// The run's lines so far, the printer for them and how the run stands: from
/// the daemon, else the database. The run is read before its lines, so a
/// run read as ended has all its lines in what follows.
async fn snapshot(args: &LogsArgs, filter: &LogFilter) -> anyhow::Result<(Vec<NumberedLine>, LinePrinter, RunEnd)> {
    let run = args.run;
    let (doc, lines) = match ask_daemon(&args.where_, &format!("/runs/{run}")).await {
        Some(answer) => {
            let doc =
                RunDocument::deserialize(&answer?).with_context(|| format!("cannot read run {run}'s document"))?;
            let mut query = format!("/runs/{run}/logs?");
            if let Some(step) = &filter.step {
                query.push_str(&format!("step={}&", url_escape(step)));
            }
            let client = Client::new(&args.where_.api())?;
            // A page at a time (the API answers at most 10,000 lines): the
            // next starts after the last `seq` of this one, as the
            // `x-next-after` header says, until it says nothing.
            let mut lines = Vec::new();
            let mut after = None;
            loop {
                let page = match after {
                    Some(seq) => format!("{query}after={seq}"),
                    None => query.clone(),
                };
                let (text, next) =
                    client.page(&page).await.with_context(|| format!("cannot read run {run}'s lines"))?;
                for line in text.lines() {
                    lines.push(
                        serde_json::from_str::<NumberedLine>(line)
                            .with_context(|| format!("cannot read run {run}'s lines"))?,
                    );
                }
                match next {
                    Some(seq) if after.is_none_or(|a| seq > a) => after = Some(seq),
                    _ => break,
                }
            }
            (doc, lines)
        }
        None => {
            let history = open(&args.where_).await?;
            let detail = history.run(run).await?.with_context(|| format!("no run {run}"))?;
            let lines = history.logs(run, filter.clone()).await?.unwrap_or_default();
            (detail.document(), lines)
        }
    };
    let printer = LinePrinter {
        run,
        started_at: doc.report.started_at,
        json: args.json,
        filter: filter.clone(),
        terminal: terminal(args.json),
        utc: args.utc,
    };
    Ok((lines, printer, RunEnd::of_document(&doc)))
}

/// `logs --follow` through the daemon: `None` when no daemon answers.
async fn follow_lines(args: &LogsArgs, filter: &LogFilter) -> anyhow::Result<Option<u8>> {
    let run = args.run;
    let client = Client::new(&args.where_.api())?;
    let doc: Value = match client.json(reqwest::Method::GET, &format!("/runs/{run}")).await {
        Ok(doc) => doc,
        Err(RequestError::Unreachable { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let doc = RunDocument::deserialize(&doc).with_context(|| format!("cannot read run {run}'s document"))?;
    let mut printer = LinePrinter {
        run,
        started_at: doc.report.started_at,
        json: args.json,
        filter: filter.clone(),
        terminal: terminal(args.json),
        utc: args.utc,
    };
    let mut end = None;
    let mut failed = None;
    client
        .follow(run, |seq, event| match event {
            EventView::Output { .. } | EventView::Log { .. } => {
                if let Some(Err(e)) = line_of(seq, event).map(|line| printer.print(&line)) {
                    failed.get_or_insert(e);
                }
            }
            EventView::RunStarted { started_at, .. } => printer.started_at = Some(*started_at),
            EventView::RunFinished { status, error, duration_ms, .. } => {
                end = Some(RunEnd { status: *status, duration_ms: *duration_ms, error: error.clone() });
            }
            _ => {}
        })
        .await
        .with_context(|| format!("cannot follow run {run}"))?;
    if let Some(e) = failed {
        return Err(e);
    }
    let end = match end {
        Some(end) => end,
        None => {
            // The stream ended without the run's end: the daemon stopped, or
            // the run was over before the stream opened and was replayed
            // without one (a history older than run_started).
            let doc: Value = client.json(reqwest::Method::GET, &format!("/runs/{run}")).await?;
            let doc = RunDocument::deserialize(&doc).with_context(|| format!("cannot read run {run}'s document"))?;
            let end = RunEnd::of_document(&doc);
            if end.status.is_going() {
                anyhow::bail!("the event stream of run {run} ended before the run did (is the daemon stopping?)");
            }
            end
        }
    };
    printer.end(&end).map(Some)
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    super::out::json(value)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::store::{Missed, RunStore, RunTrigger};

    #[test]
    fn the_line_printer_escapes_control_characters_only_for_a_terminal() {
        let line = NumberedLine {
            seq: Some(3),
            path: "main/a".into(),
            at_ms: 5,
            stream: crate::exec::Stream::Stderr,
            text: "x\rFAKE main/other stderr \x1b]0;title\x07".into(),
        };
        let printer = |json, terminal| LinePrinter {
            run: 1,
            started_at: None,
            json,
            filter: LogFilter::default(),
            terminal,
            utc: false,
        };
        let shown = |json, terminal| printer(json, terminal).shown(&line).expect("shown").expect("wanted");
        assert_eq!(shown(false, true), "+5ms main/a stderr x\\rFAKE main/other stderr \\x1b]0;title\\x07");
        assert_eq!(shown(false, false), format!("+5ms main/a stderr {}", line.text), "not a terminal: byte-exact");
        let json: NumberedLine = serde_json::from_str(&shown(true, false)).expect("JSON");
        assert_eq!(json, line, "JSON: the text exactly");
    }

    /// The start of each of `names`' columns in `header`.
    fn starts(header: &str, names: &[&str]) -> Vec<usize> {
        names.iter().map(|n| header.find(n).unwrap_or_else(|| panic!("no {n} in {header:?}"))).collect()
    }

    /// A history with the runs of `a.toml` numbered 1, 2 and 10,003, 10,004
    /// (10,000 missed fires of another job between them), written through
    /// the store's API, and `runs --job a.toml` read back as the command
    /// reads it.
    async fn runs_of_a_with_1_and_5_digit_ids() -> Vec<Value> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::store::open_sqlite(dir.path().join(store::DB_FILE)).await.expect("a store");
        let at = |h: u32| Utc.with_ymd_and_hms(2026, 11, 29, h, 0, 0).single().expect("a time");
        let missed = |job: &str, trigger, fires: Vec<DateTime<Utc>>| Missed {
            job: job.into(),
            trigger,
            fire_times: fires,
            content_hash: [1; 32],
            node: "node-a".into(),
        };
        store.record_missed(missed("a.toml", RunTrigger::Schedule, vec![at(1), at(2)])).await.expect("recorded");
        let filler = (0..10_000).map(|i| at(3) + chrono::TimeDelta::seconds(i)).collect();
        store.record_missed(missed("filler.toml", RunTrigger::Interval, filler)).await.expect("recorded");
        store.record_missed(missed("a.toml", RunTrigger::Interval, vec![at(4), at(5)])).await.expect("recorded");
        store.close().await.expect("closed");
        let args =
            StateArgs { state: Some(dir.path().to_path_buf()), store: None, config: None, addr: None, token: None };
        let filter = RunFilter { job: Some("a.toml".into()), limit: 20, ..RunFilter::default() };
        let rows = open(&args).await.expect("the history").runs(filter).await.expect("runs");
        let mut rows = serde_json::to_value(rows).expect("JSON");
        // A missed run starts when it is recorded: a fixed time for the golden file.
        for row in rows.as_array_mut().expect("rows") {
            row["started_at"] = Value::from("2026-11-29T06:00:00Z");
        }
        rows.as_array().cloned().unwrap_or_default()
    }

    #[tokio::test]
    async fn runs_columns_align_with_1_and_5_digit_ids() {
        let rows = runs_of_a_with_1_and_5_digit_ids().await;
        assert_eq!(rows.iter().map(|r| r["id"].as_i64()).collect::<Vec<_>>(), [10_004, 10_003, 2, 1].map(Some));
        let table = runs_table(&rows, None, crate::cli::clock::Clock::Utc);
        let mut lines = table.lines();
        let header = lines.next().expect("a header");
        let columns = ["JOB", "TRIGGER", "STATUS", "STARTED", "DURATION", "ERROR"];
        let want = starts(header, &columns);
        for (line, row) in lines.zip(&rows) {
            let values = [row["job"].as_str(), row["trigger"].as_str(), row["status"].as_str()];
            let got: Vec<usize> = values.iter().map(|v| line.find(v.expect("a value")).expect("in the line")).collect();
            assert_eq!(got, want[..3], "the columns of {line:?} do not start under {header:?}:\n{table}");
            let id = row["id"].to_string();
            assert_eq!(line.find(&id).map(|at| at + id.len()), header.find("RUN").map(|at| at + 3), "{table}");
        }
        insta::assert_snapshot!(table);
        let berlin = runs_table(&rows, None, crate::cli::clock::Clock::Zone(chrono_tz::Europe::Berlin));
        assert!(berlin.lines().skip(1).all(|l| l.contains("  2026-11-29 07:00:00 CET  ")), "local time:\n{berlin}");
    }

    /// A fleet's history (runs of several nodes) gets a NODE column; one
    /// node's table has none (the snapshot above).
    #[tokio::test]
    async fn runs_of_several_nodes_show_a_node_column_after_status() {
        let mut rows = runs_of_a_with_1_and_5_digit_ids().await;
        for (i, row) in rows.iter_mut().enumerate() {
            row["node"] = Value::from(format!("web{}-0000000{i}", i % 2 + 1));
        }
        let table = runs_table(&rows, None, crate::cli::clock::Clock::Utc);
        let mut lines = table.lines();
        let header = lines.next().expect("a header");
        let want = starts(header, &["STATUS", "NODE", "STARTED"]);
        assert!(want[0] < want[1] && want[1] < want[2], "{table}");
        for (line, row) in lines.zip(&rows) {
            let node = row["node"].as_str().expect("a node");
            assert_eq!(line.find(node), Some(want[1]), "{table}");
        }
        let one = runs_table(&rows[..1], None, crate::cli::clock::Clock::Utc);
        assert!(!one.contains("NODE"), "one node's runs: no NODE column\n{one}");
    }
}
