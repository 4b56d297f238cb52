//! A run's report, folded from its [`RunEvent`]s: what `gatherd run` prints and
//! what `--json` serialises. It is one projection of the event stream among
//! others (the log, the store, the API's events), never a second source of
//! truth. It is also the run document read back: the store builds it from its
//! rows, and the CLI deserialises it from the API to render `show` and
//! `trigger --wait`, so every reader and writer shares these types.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::status::running_as_null;
use super::{NodeKind, RecordedStatus, RunEvent, Stream, millis};

/// Everything `--json` prints: the stable shape the README documents.
///
/// Deserialising gives a report to read and render, not to fold more events
/// into (the path index is not rebuilt).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// The job's name.
    pub job: String,
    /// The job file.
    pub file: PathBuf,
    /// How the run ended; `running` (`null` in JSON) while it is still going.
    #[serde(with = "running_as_null")]
    pub status: RecordedStatus,
    /// Wall-clock start (RFC 3339).
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Length of the run in milliseconds.
    pub duration_ms: u64,
    /// The root's result.
    #[serde(default)]
    pub result: Value,
    /// Why the run did not succeed (absent when it did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every step and group, in the order they first appeared.
    #[serde(default)]
    pub steps: Vec<StepReport>,
    /// Lines steps printed (stdout, stderr) and scripts logged (print,
    /// debug), in the order recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
    /// Path → position in `steps`. foldhash: a 100,000-step run looks a path
    /// up twice per step, and SipHash's DoS resistance buys nothing here.
    #[serde(skip)]
    index: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
}

/// One step or group of a report; also how the store keeps a step's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Its name as written (shared with the run's events).
    pub name: Arc<str>,
    /// Its place in the tree, e.g. `main/fetch` (shared with the run's events).
    pub path: Arc<str>,
    /// Step kind (`sleep`, `exec`, …) or group mode (`gather`, …).
    pub kind: NodeKind,
    /// How it ended; `running` (`null` in JSON) while running.
    #[serde(with = "running_as_null")]
    pub status: RecordedStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Start, in ms from the run's start; `None` if it never started.
    pub start_ms: Option<u64>,
    /// End, in ms from the run's start; `None` while running.
    pub end_ms: Option<u64>,
    /// Its result.
    #[serde(default)]
    pub output: Value,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// Whether `output` was cut at the output bound (by the executor, or by
    /// the store's bound).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The attempts that failed and were retried, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried: Vec<FailedAttempt>,
}

/// A line a step printed or a script logged.
///
/// Serialised as `{"path", "at_ms", "stream", "text"}`, plus `"level"` (the
/// same word) on a script's `print`/`debug` lines, the key those lines had
/// before steps' output was recorded; reading accepts either.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "LineShape")]
pub struct LogLine {
    /// The step (or script node) that printed it.
    pub path: String,
    /// When, in ms from the run's start.
    pub at_ms: u64,
    /// Where it came from: `stdout`, `stderr`, `print` or `debug`.
    pub stream: Stream,
    /// The line.
    pub text: String,
}

/// A [`LogLine`] as read: `stream`, or only `level` from an older gatherd.
#[derive(Deserialize)]
struct LineShape {
    path: String,
    at_ms: u64,
    stream: Option<Stream>,
    level: Option<Stream>,
    text: String,
}

impl TryFrom<LineShape> for LogLine {
    type Error = &'static str;

    fn try_from(l: LineShape) -> Result<LogLine, &'static str> {
        let stream = l.stream.or(l.level).ok_or("a log line without `stream`")?;
        Ok(LogLine { path: l.path, at_ms: l.at_ms, stream, text: l.text })
    }
}

impl Serialize for LogLine {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shape<'a> {
            path: &'a str,
            at_ms: u64,
            stream: Stream,
            #[serde(skip_serializing_if = "Option::is_none")]
            level: Option<Stream>,
            text: &'a str,
        }
        Shape { path: &self.path, at_ms: self.at_ms, stream: self.stream, level: self.stream.level(), text: &self.text }
            .serialize(s)
    }
}

/// An attempt of a step that failed and was followed by another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedAttempt {
    /// Which attempt, 1-based.
    pub attempt: u32,
    /// Why it failed.
    pub error: String,
    /// When it failed, in ms from the run's start.
    pub at_ms: u64,
}

impl StepReport {
    /// Whether this line is a group rather than a step.
    pub fn is_group(&self) -> bool {
        self.kind.is_group()
    }
}

impl RunReport {
    /// An empty report for `job` loaded from `file`.
    pub fn new(job: impl Into<String>, file: impl Into<PathBuf>) -> RunReport {
        RunReport {
            job: job.into(),
            file: file.into(),
            status: RecordedStatus::Running,
            started_at: None,
            duration_ms: 0,
            result: Value::Null,
            error: None,
            steps: Vec::new(),
            logs: Vec::new(),
            index: HashMap::default(),
        }
    }

    /// Folds one event in.
    pub fn apply(&mut self, event: &RunEvent) {
        match event {
            RunEvent::RunStarted { started_at, .. } => self.started_at = Some(*started_at),
            RunEvent::NodeStarted { path, name, kind, at } => {
                let line = self.line(path, name, *kind);
                line.start_ms = Some(millis(*at));
                line.attempts = 1;
            }
            RunEvent::AttemptFailed { path, attempt, error, at, .. } => {
                if let Some(&i) = self.index.get(path) {
                    let line = &mut self.steps[i];
                    line.attempts = attempt + 1;
                    line.retried.push(FailedAttempt { attempt: *attempt, error: error.clone(), at_ms: millis(*at) });
                }
            }
            RunEvent::NodeFinished { path, name, kind, status, attempts, started, at, output, error, truncated } => {
                let line = self.line(path, name, *kind);
                line.status = RecordedStatus::Finished(*status);
                line.attempts = *attempts;
                line.start_ms = started.map(millis);
                line.end_ms = Some(millis(*at));
                line.output = output.clone().unwrap_or(Value::Null);
                line.error = error.clone();
                line.truncated = *truncated;
            }
            RunEvent::Log { path, stream, text, at } => self.logs.push(LogLine {
                path: path.to_string(),
                at_ms: millis(*at),
                stream: *stream,
                text: text.clone(),
            }),
            RunEvent::RunFinished { status, result, error, duration } => {
                self.status = RecordedStatus::Finished(*status);
                self.result = result.clone().unwrap_or(Value::Null);
                self.error = error.clone();
                self.duration_ms = millis(*duration);
            }
        }
    }

    fn line(&mut self, path: &Arc<str>, name: &Arc<str>, kind: NodeKind) -> &mut StepReport {
        let i = *self.index.entry(path.clone()).or_insert_with(|| {
            self.steps.push(StepReport {
                name: name.clone(),
                path: path.clone(),
                kind,
                status: RecordedStatus::Running,
                attempts: 0,
                start_ms: None,
                end_ms: None,
                output: Value::Null,
                error: None,
                truncated: false,
                retried: Vec::new(),
            });
            self.steps.len() - 1
        });
        &mut self.steps[i]
    }
}

#[cfg(test)]
mod tests {
    use super::{RunReport, StepReport};

    /// A 100,000-step report holds 100,000 of these: it must not grow (168
    /// bytes when `kind` was a `&'static str` and `status` an `Option<Status>`).
    #[test]
    fn a_report_line_stays_small() {
        assert!(std::mem::size_of::<StepReport>() <= 168, "{}", std::mem::size_of::<StepReport>());
    }

    #[test]
    fn a_report_reads_back_as_it_was_written() {
        let json = r#"{"job":"j","file":"j.toml","status":null,"started_at":null,"duration_ms":7,"result":null,
            "steps":[{"name":"a","path":"main/a","kind":"exec","status":"failed","attempts":2,"start_ms":0,
            "end_ms":5,"output":null,"error":"boom","truncated":true,
            "retried":[{"attempt":1,"error":"first","at_ms":2}]}],
            "logs":[{"path":"main","at_ms":1,"stream":"debug","level":"debug","text":"hi"},
                   {"path":"main/a","at_ms":2,"stream":"stderr","text":"oops"}]}"#;
        let report: RunReport = serde_json::from_str(json).expect("a report");
        let again = serde_json::to_value(&report).expect("serialises");
        let original: serde_json::Value = serde_json::from_str(json).expect("JSON");
        assert_eq!(again, original);
    }

    /// A script's line keeps the `level` key it always had (beside `stream`);
    /// a process's line has `stream` only; a document of an older gatherd
    /// (`level` alone) still reads.
    #[test]
    fn log_lines_name_their_stream_and_script_lines_keep_their_level() {
        use super::{LogLine, Stream};
        let old: LogLine =
            serde_json::from_str(r#"{"path":"main","at_ms":1,"level":"print","text":"hi"}"#).expect("an old line");
        assert_eq!(old.stream, Stream::Print);
        assert_eq!(
            serde_json::to_value(&old).expect("serialises"),
            serde_json::json!({"path":"main","at_ms":1,"stream":"print","level":"print","text":"hi"})
        );
        let out = LogLine { path: "main/a".into(), at_ms: 3, stream: Stream::Stdout, text: "x".into() };
        assert_eq!(
            serde_json::to_value(&out).expect("serialises"),
            serde_json::json!({"path":"main/a","at_ms":3,"stream":"stdout","text":"x"})
        );
        assert!(serde_json::from_str::<LogLine>(r#"{"path":"p","at_ms":1,"text":"no stream"}"#).is_err());
    }
}
