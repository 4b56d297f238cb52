//! The values the store takes and gives back: plain data, backend-neutral.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

pub use crate::exec::RecordedStatus;
use crate::exec::{FailedAttempt, LogLine, NodeKind, RunReport, StepReport};
use crate::job::JobFormat;
use crate::job::word::word_enum;

/// A run's id: assigned by the store, never reused, used as `run_id` in logs.
pub type RunId = i64;

word_enum! {
    /// Why a run started.
    pub enum RunTrigger {
        /// A job file without a trigger appeared or changed (a one-shot).
        File = "file",
        /// A `schedule` (cron) fire.
        Schedule = "schedule",
        /// An `every` fire.
        Interval = "interval",
        /// Someone asked (API, CLI).
        Manual = "manual",
    }
}

/// What [`begin_run`](super::RunStore::begin_run) records.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStart {
    /// The job: its `JobId` (path relative to the jobs folder).
    pub job: String,
    /// Why it runs.
    pub trigger: RunTrigger,
    /// The nominal time it was due (the slot, for scheduled fires; now, else).
    pub fire_time: DateTime<Utc>,
    /// SHA-256 of the job file's content that this run runs.
    pub content_hash: [u8; 32],
    /// The daemon running it (host name or configured node name).
    pub node: String,
    /// Recorded `queued` (it waits for a slot or its semaphore; its
    /// `RunStarted` makes it `running`) rather than `running`.
    pub queued: bool,
}

/// What [`record_missed`](super::RunStore::record_missed) records: fires of
/// one job that were due while the daemon was not running.
#[derive(Debug, Clone, PartialEq)]
pub struct Missed {
    /// The job: its `JobId`.
    pub job: String,
    /// [`RunTrigger::Schedule`] or [`RunTrigger::Interval`] (anything else is
    /// refused with [`StoreError::Invalid`](super::StoreError::Invalid)).
    pub trigger: RunTrigger,
    /// The nominal times of the fires missed: one run row each.
    pub fire_times: Vec<DateTime<Utc>>,
    /// SHA-256 of the job file's content when the misses were found.
    pub content_hash: [u8; 32],
    /// The daemon recording them.
    pub node: String,
}

/// The error recorded on a run with status `missed`.
pub const MISSED_ERROR: &str = "missed: the daemon was not running";

/// The error recorded on a run with status `missed` for a fire that came
/// while its job was paused (`gatherd pause`).
pub const PAUSED_ERROR: &str = "missed: the job is paused";

/// The error recorded on a one-shot's run that was cancelled (its file
/// removed, a shutdown) just as its row was committed, before it started:
/// status `cancelled`. [`RunStore::one_shot_status`](super::RunStore::one_shot_status)
/// does not count it, so that version still runs at the next start, as when
/// it is cancelled while its row waits to be written (then it has no row).
pub const NOT_STARTED_ERROR: &str = "cancelled before it started";

/// The end recorded for a run that never started ([`NOT_STARTED_ERROR`]):
/// `cancelled`, no result, no time spent.
pub fn not_started_end() -> crate::exec::RunEvent {
    crate::exec::RunEvent::RunFinished {
        status: crate::exec::Status::Cancelled,
        result: None,
        error: Some(NOT_STARTED_ERROR.into()),
        duration: std::time::Duration::ZERO,
    }
}

/// The error recorded on a run that was `queued` when its daemon stopped
/// (shut down, or found so at the next start after a crash): status
/// `cancelled`. It never started, so, like [`NOT_STARTED_ERROR`],
/// [`RunStore::one_shot_status`](super::RunStore::one_shot_status) does not
/// count it: a one-shot queued when the daemon stopped runs at the next start.
pub const QUEUED_AT_STOP_ERROR: &str = "not started: the daemon stopped while it was queued";

/// A version of a job file as seen by the daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The `JobId`.
    pub job: String,
    /// Its format.
    pub kind: JobFormat,
    /// SHA-256 of its content.
    pub content_hash: [u8; 32],
    /// Whether it loaded.
    pub valid: bool,
    /// Why not (file:line:col and the reason), when invalid.
    pub diagnostic: Option<String>,
}

/// Which runs [`runs`](super::RunStore::runs) returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    /// Only this job's.
    pub job: Option<String>,
    /// Only runs with this status.
    pub status: Option<RecordedStatus>,
    /// At most this many (0 = a default of 50).
    pub limit: u32,
    /// Only runs older than this one (the last id of the previous page).
    pub before: Option<RunId>,
}

/// Which lines of a run [`logs`](super::RunStore::logs) returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only the lines of this step: its path (`main/fetch`), or its name or
    /// a trailing part of its path (`fetch`, `gather_1/fetch`).
    pub step: Option<String>,
    /// Only lines whose number in the run's event stream is greater: the
    /// `seq` of the last line a client has (lines stored without a number
    /// cannot be placed, so they are left out when this is set).
    pub after: Option<u64>,
    /// At most this many lines, the first ones (`None`: all), so a reader
    /// pages through a long run with `after` (the `seq` of the last line
    /// it got) instead of holding all of it at once.
    pub limit: Option<usize>,
}

impl LogFilter {
    /// Whether a line of the step at `path` is wanted (the step part only).
    pub fn wants_path(&self, path: &str) -> bool {
        self.step
            .as_deref()
            .is_none_or(|step| path == step || path.strip_suffix(step).is_some_and(|head| head.ends_with('/')))
    }
}

/// A run's line with its number in the run's event stream (the `id:` of its
/// `output`/`log` server-sent event): one line of `GET /runs/{id}/logs` and
/// of `gatherd logs --json`, `{"seq","path","at_ms","stream","text"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumberedLine {
    /// Its number, `None` for a line stored without one (older history).
    pub seq: Option<u64>,
    /// The step (or script node) that printed it.
    pub path: String,
    /// When, in ms from the run's start.
    pub at_ms: u64,
    /// `stdout`, `stderr`, `print` or `debug`.
    pub stream: crate::exec::Stream,
    /// The line.
    pub text: String,
}

impl NumberedLine {
    /// `line` numbered `seq`.
    pub fn new(seq: Option<u64>, line: LogLine) -> NumberedLine {
        NumberedLine { seq, path: line.path, at_ms: line.at_ms, stream: line.stream, text: line.text }
    }
}

/// One run as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    /// Its id.
    pub id: RunId,
    /// The `JobId`.
    pub job: String,
    /// Why it ran.
    pub trigger: RunTrigger,
    /// When it was due.
    pub fire_time: DateTime<Utc>,
    /// The version of the job file it ran.
    #[serde(serialize_with = "hex_hash")]
    pub content_hash: [u8; 32],
    /// The daemon that ran it.
    pub node: String,
    /// How it ended, or `running`.
    pub status: RecordedStatus,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its length (absent for an interrupted run).
    pub duration_ms: Option<u64>,
    /// Why it did not succeed (for `interrupted`: the reason given to recover).
    pub error: Option<String>,
    /// The root's result (`null` when none).
    pub result: Value,
}

/// A run with everything recorded of it. Steps and log lines are kept as the
/// report's own types: a stored step is a [`StepReport`] (status `running`
/// or `interrupted` included; `truncated` also when the store's bound cut
/// its output), a stored line a [`LogLine`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunDetail {
    /// The run.
    pub run: RunRow,
    /// Its steps and groups, in the order first seen.
    pub steps: Vec<StepReport>,
    /// Its log lines, in order.
    pub logs: Vec<LogLine>,
}

/// A unit of work that exactly one node of a fleet may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimKey {
    /// The `JobId`.
    pub job: String,
    /// `fire:<RFC 3339>` or `sha256:<hex>`; see the constructors.
    pub slot: String,
}

impl ClaimKey {
    /// The scheduled fire of `job` due at `slot` (the nominal time, before jitter).
    pub fn fire(job: impl Into<String>, slot: DateTime<Utc>) -> ClaimKey {
        ClaimKey { job: job.into(), slot: format!("fire:{}", ts(slot)) }
    }

    /// The one-shot run of `job`'s version with this content hash.
    pub fn one_shot(job: impl Into<String>, content_hash: &[u8; 32]) -> ClaimKey {
        ClaimKey { job: job.into(), slot: format!("sha256:{}", hex(content_hash)) }
    }
}

/// A time as stored: RFC 3339, UTC, microseconds (PostgreSQL's `timestamptz`
/// precision), `Z` — fixed width, so text order is time order.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn hex_hash<S: Serializer>(hash: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(hash))
}

impl RunDetail {
    /// A stored run as the report `gatherd run` prints: what `gatherd show
    /// --json` and the API's `GET /runs/{id}` serialise, so a run read back
    /// from the history has the shape of the same run's `--json`.
    pub fn report(&self) -> RunReport {
        let run = &self.run;
        let mut report = RunReport::new(run.job.clone(), std::path::PathBuf::from(&run.job));
        report.status = run.status;
        report.started_at = Some(run.started_at);
        report.duration_ms = run.duration_ms.unwrap_or(0);
        report.result = run.result.clone();
        report.error = run.error.clone();
        report.steps = self.steps.clone();
        report.logs = self.logs.clone();
        report
    }
}

/// What `gatherd show --json` and the API's `GET /runs/{id}` print: the run's
/// record and its report in the shape of `gatherd run --json`, except that a
/// run or step still going says `"status": "running"` (the history knows it;
/// `gatherd run --json`, whose document is final, says `null`).
///
/// It reads back too: the CLI renders a document from the API as this type
/// (`null` or `"running"` alike).
#[derive(Debug, Clone, Deserialize)]
pub struct RunDocument {
    /// The run's id.
    pub id: RunId,
    /// Why it ran.
    pub trigger: RunTrigger,
    /// When it was due.
    pub fire_time: DateTime<Utc>,
    /// The daemon that ran it.
    pub node: String,
    /// The `--json` report.
    #[serde(flatten)]
    pub report: RunReport,
}

impl RunDetail {
    /// The run as [`RunDocument`].
    pub fn document(&self) -> RunDocument {
        RunDocument {
            id: self.run.id,
            trigger: self.run.trigger,
            fire_time: self.run.fire_time,
            node: self.run.node.clone(),
            report: self.report(),
        }
    }
}

/// [`RunDocument`] as served: [`RunReport`]'s and [`StepReport`]'s fields in
/// their order, with the status as its word, `running` included. Spelled out
/// because serde has no way to override one field of a flattened struct; the
/// test `the_history_document_is_the_report_plus_the_run_record` keeps the
/// two in step.
impl Serialize for RunDocument {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let report = &self.report;
        HistoryDocument {
            id: self.id,
            trigger: self.trigger,
            fire_time: self.fire_time,
            node: &self.node,
            job: &report.job,
            file: &report.file,
            status: report.status,
            started_at: report.started_at,
            duration_ms: report.duration_ms,
            result: &report.result,
            error: &report.error,
            steps: report.steps.iter().map(HistoryStep::from).collect(),
            logs: &report.logs,
        }
        .serialize(s)
    }
}

#[derive(Serialize)]
struct HistoryDocument<'a> {
    id: RunId,
    trigger: RunTrigger,
    fire_time: DateTime<Utc>,
    node: &'a str,
    job: &'a str,
    file: &'a std::path::Path,
    status: RecordedStatus,
    started_at: Option<DateTime<Utc>>,
    duration_ms: u64,
    result: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: &'a Option<String>,
    steps: Vec<HistoryStep<'a>>,
    #[serde(skip_serializing_if = "<[LogLine]>::is_empty")]
    logs: &'a [LogLine],
}

#[derive(Serialize)]
struct HistoryStep<'a> {
    name: &'a str,
    path: &'a str,
    kind: NodeKind,
    status: RecordedStatus,
    attempts: u32,
    start_ms: Option<u64>,
    end_ms: Option<u64>,
    output: &'a Value,
    error: &'a Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    #[serde(skip_serializing_if = "<[FailedAttempt]>::is_empty")]
    retried: &'a [FailedAttempt],
}

impl<'a> From<&'a StepReport> for HistoryStep<'a> {
    fn from(step: &'a StepReport) -> HistoryStep<'a> {
        HistoryStep {
            name: &step.name,
            path: &step.path,
            kind: step.kind,
            status: step.status,
            attempts: step.attempts,
            start_ms: step.start_ms,
            end_ms: step.end_ms,
            output: &step.output,
            error: &step.error,
            truncated: step.truncated,
            retried: &step.retried,
        }
    }
}
