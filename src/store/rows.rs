//! The values the store takes and gives back: plain data, backend-neutral.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::exec::{RunReport, Status};

/// A run's id: assigned by the store, never reused, used as `run_id` in logs.
pub type RunId = i64;

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    /// A job file without a trigger appeared or changed (a one-shot).
    File,
    /// A `schedule` (cron) fire.
    Schedule,
    /// An `every` fire.
    Interval,
    /// Someone asked (API, CLI).
    Manual,
}

impl RunTrigger {
    /// The word stored and shown: `file`, `schedule`, `interval`, `manual`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunTrigger::File => "file",
            RunTrigger::Schedule => "schedule",
            RunTrigger::Interval => "interval",
            RunTrigger::Manual => "manual",
        }
    }

    /// The trigger named `s` (as [`as_str`](Self::as_str) writes it).
    pub fn parse(s: &str) -> Option<RunTrigger> {
        [RunTrigger::File, RunTrigger::Schedule, RunTrigger::Interval, RunTrigger::Manual]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// A status as recorded: the executor's final [`Status`], or `running` (not
/// finished yet), `interrupted` (its daemon died while it ran) or `missed`
/// (a fire that came while the daemon was not running).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordedStatus {
    /// Still going (or its end not yet recorded).
    Running,
    /// See [`Status::Succeeded`].
    Succeeded,
    /// See [`Status::Failed`].
    Failed,
    /// See [`Status::TimedOut`].
    TimedOut,
    /// See [`Status::Cancelled`].
    Cancelled,
    /// See [`Status::Skipped`] (steps only).
    Skipped,
    /// Was running when its daemon died; set by [`recover`](super::RunStore::recover).
    Interrupted,
    /// A scheduled or interval fire that never ran because the daemon was not
    /// running when it was due; set by [`record_missed`](super::RunStore::record_missed).
    Missed,
}

impl RecordedStatus {
    const ALL: [RecordedStatus; 8] = [
        RecordedStatus::Running,
        RecordedStatus::Succeeded,
        RecordedStatus::Failed,
        RecordedStatus::TimedOut,
        RecordedStatus::Cancelled,
        RecordedStatus::Skipped,
        RecordedStatus::Interrupted,
        RecordedStatus::Missed,
    ];

    /// The word stored and shown (`running`, `timed_out`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordedStatus::Running => "running",
            RecordedStatus::Succeeded => "succeeded",
            RecordedStatus::Failed => "failed",
            RecordedStatus::TimedOut => "timed_out",
            RecordedStatus::Cancelled => "cancelled",
            RecordedStatus::Skipped => "skipped",
            RecordedStatus::Interrupted => "interrupted",
            RecordedStatus::Missed => "missed",
        }
    }

    /// The status named `s` (as [`as_str`](Self::as_str) writes it).
    pub fn parse(s: &str) -> Option<RecordedStatus> {
        RecordedStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl From<Status> for RecordedStatus {
    fn from(s: Status) -> RecordedStatus {
        match s {
            Status::Succeeded => RecordedStatus::Succeeded,
            Status::Failed => RecordedStatus::Failed,
            Status::TimedOut => RecordedStatus::TimedOut,
            Status::Cancelled => RecordedStatus::Cancelled,
            Status::Skipped => RecordedStatus::Skipped,
            Status::Interrupted => RecordedStatus::Interrupted,
            Status::Missed => RecordedStatus::Missed,
        }
    }
}

impl RecordedStatus {
    /// The final status, or `None` while running.
    pub fn finished(self) -> Option<Status> {
        match self {
            RecordedStatus::Running => None,
            RecordedStatus::Succeeded => Some(Status::Succeeded),
            RecordedStatus::Failed => Some(Status::Failed),
            RecordedStatus::TimedOut => Some(Status::TimedOut),
            RecordedStatus::Cancelled => Some(Status::Cancelled),
            RecordedStatus::Skipped => Some(Status::Skipped),
            RecordedStatus::Interrupted => Some(Status::Interrupted),
            RecordedStatus::Missed => Some(Status::Missed),
        }
    }
}

impl std::fmt::Display for RecordedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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

/// A job file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// `*.toml`.
    Toml,
    /// `*.rhai`.
    Rhai,
}

impl JobKind {
    /// `toml` or `rhai`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Toml => "toml",
            JobKind::Rhai => "rhai",
        }
    }
}

/// A version of a job file as seen by the daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The `JobId`.
    pub job: String,
    /// Its format.
    pub kind: JobKind,
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

/// One step or group of a run: the stored form of a report line
/// ([`StepReport`](crate::exec::StepReport)).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRow {
    /// The run.
    pub run_id: RunId,
    /// Its place in the tree, e.g. `main/fetch`.
    pub path: String,
    /// Its name as written.
    pub name: String,
    /// Step kind or group mode.
    pub kind: String,
    /// How it ended, `running`, or `interrupted`.
    pub status: RecordedStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Start, in ms from the run's start.
    pub start_ms: Option<u64>,
    /// End, in ms from the run's start.
    pub end_ms: Option<u64>,
    /// Its result (`null` when none); a JSON string of the first 64 KiB of the
    /// JSON text when `truncated`.
    pub output: Value,
    /// Whether `output` was cut (by the executor or the store's bound).
    pub truncated: bool,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// The attempts that failed and were retried, in order.
    pub retried: Vec<AttemptRow>,
}

/// An attempt of a step that failed and was followed by another (the stored
/// form of [`FailedAttempt`](crate::exec::FailedAttempt)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRow {
    /// Which attempt, 1-based.
    pub attempt: u32,
    /// Why it failed.
    pub error: String,
    /// When it failed, in ms from the run's start.
    pub at_ms: u64,
}

/// A line a script printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogRow {
    /// The script node that printed it.
    pub path: String,
    /// When, in ms from the run's start.
    pub at_ms: u64,
    /// `print` or `debug`.
    pub level: String,
    /// The line.
    pub text: String,
}

/// A run with everything recorded of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunDetail {
    /// The run.
    pub run: RunRow,
    /// Its steps and groups, in the order first seen.
    pub steps: Vec<StepRow>,
    /// Its log lines, in order.
    pub logs: Vec<LogRow>,
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
        let detail = self;
        let run = &detail.run;
        let mut report = RunReport::new(run.job.clone(), std::path::PathBuf::from(&run.job));
        report.status = run.status.finished();
        report.started_at = Some(run.started_at);
        report.duration_ms = run.duration_ms.unwrap_or(0);
        report.result = run.result.clone();
        report.error = run.error.clone();
        report.steps = detail
            .steps
            .iter()
            .map(|s| crate::exec::StepReport {
                name: s.name.as_str().into(),
                path: s.path.as_str().into(),
                kind: crate::exec::intern_kind(&s.kind),
                status: s.status.finished(),
                attempts: s.attempts,
                start_ms: s.start_ms,
                end_ms: s.end_ms,
                output: s.output.clone(),
                error: s.error.clone(),
                truncated: s.truncated,
                retried: s
                    .retried
                    .iter()
                    .map(|a| crate::exec::FailedAttempt { attempt: a.attempt, error: a.error.clone(), at_ms: a.at_ms })
                    .collect(),
            })
            .collect();
        report.logs = detail
            .logs
            .iter()
            .map(|l| crate::exec::LogLine {
                path: l.path.clone(),
                at_ms: l.at_ms,
                level: if l.level == "debug" { "debug" } else { "print" },
                text: l.text.clone(),
            })
            .collect();
        report
    }
}

/// What `gatherd show --json` and the API's `GET /runs/{id}` print: the run's
/// record and its report in the shape of `gatherd run --json`.
#[derive(Debug, Serialize)]
pub struct RunDocument {
    /// The run's id.
    pub id: RunId,
    /// Why it ran.
    pub trigger: &'static str,
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
            trigger: self.run.trigger.as_str(),
            fire_time: self.run.fire_time,
            node: self.run.node.clone(),
            report: self.report(),
        }
    }
}
