//! How a node or a run ended ([`Status`], what the executor reports) and how
//! the run history knows it ([`RecordedStatus`]: a [`Status`], or one of the
//! states only the history has). Each word is spelled once: `Status`'s table
//! and the four history-only words in [`RecordedStatus::as_str`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::job::word::word_enum;

word_enum! {
    /// The final state of a step, a group or a run, as the executor reports it.
    pub enum Status {
        /// Finished and returned a result.
        Succeeded = "succeeded",
        /// Returned an error (after its retries).
        Failed = "failed",
        /// Stopped by its own `timeout` (or an enclosing group's or the job's).
        TimedOut = "timed_out",
        /// Stopped because something else asked: a sibling's failure, a race
        /// lost, Ctrl-C, the file removed.
        Cancelled = "cancelled",
        /// Never started because of a cancel before its turn came.
        Skipped = "skipped",
    }
}

/// A status as the run history (and a report folded so far) knows it: the
/// executor's final [`Status`], or a state the executor never reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordedStatus {
    /// Recorded at once but not started yet: it waits for a slot
    /// (`max_concurrent_runs`) or its semaphore. Becomes `running` when it
    /// starts, or `cancelled` if it is cancelled (or the daemon stops)
    /// first.
    Queued,
    /// Still going (or its end not yet recorded).
    Running,
    /// Ended as the executor reported.
    Finished(Status),
    /// Was running when its daemon died (a crash, kill -9); set when the
    /// daemon starts again.
    Interrupted,
    /// A scheduled or interval fire that never ran because the daemon was not
    /// running when it was due, and was not caught up.
    Missed,
}

impl RecordedStatus {
    /// The states only the history has.
    const HISTORY_ONLY: [RecordedStatus; 4] =
        [RecordedStatus::Queued, RecordedStatus::Running, RecordedStatus::Interrupted, RecordedStatus::Missed];

    /// The word stored and shown (`running`, `timed_out`, `missed`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordedStatus::Queued => "queued",
            RecordedStatus::Running => "running",
            RecordedStatus::Finished(status) => status.as_str(),
            RecordedStatus::Interrupted => "interrupted",
            RecordedStatus::Missed => "missed",
        }
    }

    /// The status named `word` (as [`as_str`](Self::as_str) writes it).
    pub fn parse(word: &str) -> Option<RecordedStatus> {
        Status::parse(word)
            .map(RecordedStatus::Finished)
            .or_else(|| RecordedStatus::HISTORY_ONLY.into_iter().find(|s| s.as_str() == word))
    }

    /// Every status, in the order `queued`, `running`, the executor's,
    /// `interrupted`, `missed`: for messages that list them.
    pub fn all() -> impl Iterator<Item = RecordedStatus> {
        [RecordedStatus::Queued, RecordedStatus::Running]
            .into_iter()
            .chain(Status::ALL.iter().copied().map(RecordedStatus::Finished))
            .chain([RecordedStatus::Interrupted, RecordedStatus::Missed])
    }

    /// Whether it has not ended yet: `queued` or `running`.
    pub fn is_going(self) -> bool {
        matches!(self, RecordedStatus::Queued | RecordedStatus::Running)
    }

    /// The executor's status, if it finished that way.
    pub fn finished(self) -> Option<Status> {
        match self {
            RecordedStatus::Finished(status) => Some(status),
            _ => None,
        }
    }
}

impl From<Status> for RecordedStatus {
    fn from(status: Status) -> RecordedStatus {
        RecordedStatus::Finished(status)
    }
}

impl std::fmt::Display for RecordedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for RecordedStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RecordedStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RecordedStatus, D::Error> {
        let word = String::deserialize(d)?;
        RecordedStatus::parse(&word).ok_or_else(|| serde::de::Error::custom(format!("unknown status `{word}`")))
    }
}

/// Serde for a report's status: `null` while running, else the word — the
/// `--json` shape, where a run or step that has not ended has no status yet.
pub(crate) mod running_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::RecordedStatus;

    pub(crate) fn serialize<S: Serializer>(status: &RecordedStatus, s: S) -> Result<S::Ok, S::Error> {
        match status {
            RecordedStatus::Running => s.serialize_none(),
            status => s.serialize_some(status),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RecordedStatus, D::Error> {
        Ok(Option::<RecordedStatus>::deserialize(d)?.unwrap_or(RecordedStatus::Running))
    }
}

#[cfg(test)]
mod tests {
    use super::{RecordedStatus, Status};

    #[test]
    fn every_status_reads_back_from_its_word() {
        let words: Vec<&str> = RecordedStatus::all().map(RecordedStatus::as_str).collect();
        assert_eq!(
            words,
            ["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "skipped", "interrupted", "missed"]
        );
        for status in RecordedStatus::all() {
            assert_eq!(RecordedStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RecordedStatus::parse("lost"), None);
        assert_eq!(RecordedStatus::from(Status::TimedOut).finished(), Some(Status::TimedOut));
        assert_eq!(RecordedStatus::Missed.finished(), None);
    }

    #[test]
    fn statuses_serialise_as_their_words() {
        let json = serde_json::to_string(&[RecordedStatus::Finished(Status::TimedOut), RecordedStatus::Missed])
            .expect("serialises");
        assert_eq!(json, r#"["timed_out","missed"]"#);
        let back: Vec<RecordedStatus> = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, [RecordedStatus::Finished(Status::TimedOut), RecordedStatus::Missed]);
        assert!(serde_json::from_str::<Status>(r#""missed""#).is_err(), "history-only words are not executor statuses");
    }
}
