//! Where each stored fact of a run was in its event stream: the sequence
//! numbers the daemon gave a run's events as it streamed them live (0 for
//! `run_started`, then 1, 2, …), kept beside the rows they wrote, so that a
//! run can be replayed in the order it was sent (see `api::events`).

use serde_json::Value;

use super::json::read_stored;
use super::{LogFilter, NumberedLine, RunDetail};

/// A stored run and the place of each of its facts in its event stream.
/// Every `Vec` is parallel to the one of [`RunDetail`] it names. A number is
/// `None` where none was recorded: rows written before the history had these
/// numbers, by `gatherd run`, or by the daemon itself (a run's end after its
/// task failed, the statuses set by recovery after a crash).
#[derive(Debug, Clone, PartialEq)]
pub struct RunTimeline {
    /// The run, its steps and log lines.
    pub detail: RunDetail,
    /// `run_started`.
    pub run_started: Option<u64>,
    /// `run_finished`.
    pub run_finished: Option<u64>,
    /// Per step of `detail.steps`.
    pub steps: Vec<StepSeqs>,
    /// Per line of `detail.logs`.
    pub logs: Vec<Option<u64>>,
}

/// The places of one step's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepSeqs {
    /// `node_started`.
    pub started: Option<u64>,
    /// `node_finished`.
    pub finished: Option<u64>,
    /// Per failed attempt of the step's `retried`: `attempt_failed`'s place
    /// and the wait it announced, in ms.
    pub attempts: Vec<(Option<u64>, Option<u64>)>,
}

impl RunTimeline {
    /// A run with no numbers recorded (a backend that keeps none).
    pub fn unnumbered(detail: RunDetail) -> RunTimeline {
        RunTimeline {
            run_started: None,
            run_finished: None,
            steps: detail
                .steps
                .iter()
                .map(|s| StepSeqs { attempts: vec![(None, None); s.retried.len()], ..StepSeqs::default() })
                .collect(),
            logs: vec![None; detail.logs.len()],
            detail,
        }
    }
}

impl RunTimeline {
    /// The run's lines that `filter` wants, with their numbers: what
    /// [`RunStore::logs`](super::RunStore::logs) answers, read from a
    /// timeline (the trait's default; a backend may answer it in its query
    /// language, as SQLite does, and must agree with this).
    pub fn lines(self, filter: &LogFilter) -> Vec<NumberedLine> {
        self.detail
            .logs
            .into_iter()
            .zip(self.logs)
            .filter(|(line, seq)| {
                filter.wants_path(&line.path) && filter.after.is_none_or(|after| seq.is_some_and(|s| s > after))
            })
            .take(filter.limit.unwrap_or(usize::MAX))
            .map(|(line, seq)| NumberedLine::new(seq, line))
            .collect()
    }
}

/// A step's output (or a run's result) as the history keeps it and gives it
/// back: at most [`JSON_DEPTH_BOUND`](super::JSON_DEPTH_BOUND) deep and
/// [`OUTPUT_BOUND`](super::OUTPUT_BOUND) bytes, `null` for none, and whether
/// it was cut. A live view of an event shows this, so that it equals the
/// event's replay from the history.
pub fn as_stored(value: Option<&Value>) -> (Value, bool) {
    let (text, cut) = super::sqlite::bounded_json(value);
    (text.map_or(Value::Null, |t| read_stored(&t)), cut)
}
