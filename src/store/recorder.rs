//! The handle runs are recorded through: a sender to the store's writer.

use std::sync::mpsc;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::{JobRecord, RunId, RunStart, StoreError};
use crate::exec::RunEvent;

/// What the writer is asked to do, in the order asked.
pub(crate) enum Msg {
    /// An event of a run, to be written in the next batch.
    Event {
        run: RunId,
        /// Its number in the run's event stream, if it has one.
        seq: Option<u64>,
        event: RunEvent,
        /// Wall-clock time it was handed over (the finish time of a run).
        at: DateTime<Utc>,
    },
    /// Run `id` begins: its row is written in the next batch, which is
    /// committed as soon as nothing else is waiting; the id is answered after
    /// the commit (or, while the history cannot be written, at once, unless
    /// the run is a one-shot: see `sqlite/writer.rs`).
    Begin { id: RunId, start: RunStart, answer: oneshot::Sender<Result<RunId, StoreError>> },
    /// The current version of a job file, for the jobs table: written with the
    /// next batch; a failure is logged.
    Job(JobRecord),
    /// Write what is pending, then answer.
    Flush(oneshot::Sender<Result<(), StoreError>>),
    /// Write what is pending, then run this on the write connection (a
    /// backend's one-off write such as `prune`, which answers itself).
    Call(Box<dyn FnOnce(&mut rusqlite::Connection) + Send>),
    /// Write what is pending, answer, and stop.
    Close(oneshot::Sender<Result<(), StoreError>>),
    /// A failpoint for the tests: the writer's next commit, once committed
    /// and before anyone is answered, says so on the first channel and
    /// waits on the second (a run giving up just as its row commits).
    #[cfg(test)]
    PauseAfterCommit(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>),
}

/// Gives a run's events to the store. Cheap to clone: a channel sender.
///
/// Architecture Invariant: [`record`](Recorder::record) never blocks and
/// never waits for the disk; the channel is unbounded, and the writer catches
/// up in batches (while it cannot write, it drains the channel into its own
/// bounded memory: see `sqlite/writer.rs`).
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    pub(crate) fn new(tx: mpsc::Sender<Msg>) -> Recorder {
        Recorder { tx }
    }

    /// Queues one event of run `run` (from [`begin_run`](super::RunStore::begin_run)).
    /// A `RunFinished` makes the writer commit at once rather than at the end
    /// of its batch window.
    pub fn record(&self, run: RunId, event: RunEvent) {
        self.send_event(run, None, event);
    }

    /// Queues one event of run `run` with its number `seq` in the run's event
    /// stream (the daemon's live stream numbers a run's events 0, 1, 2, …):
    /// stored beside the event's row, it lets the run be replayed in the
    /// order it was streamed ([`RunStore::timeline`](super::RunStore::timeline)).
    pub fn record_numbered(&self, run: RunId, seq: u64, event: RunEvent) {
        self.send_event(run, Some(seq), event);
    }

    fn send_event(&self, run: RunId, seq: Option<u64>, event: RunEvent) {
        let at = if matches!(event, RunEvent::RunFinished { .. }) { Utc::now() } else { DateTime::<Utc>::MIN_UTC };
        if self.tx.send(Msg::Event { run, seq, event, at }).is_err() {
            tracing::debug!(run_id = run, "run history closed; event not recorded");
        }
    }

    /// Waits until everything recorded before this call is committed: after a
    /// run's `RunFinished` was recorded, the run is fully in the history.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Flush(tx)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Sends a message to the writer (the backend's own requests).
    pub(crate) fn send(&self, msg: Msg) -> Result<(), StoreError> {
        self.tx.send(msg).map_err(|_| StoreError::Closed)
    }
}
