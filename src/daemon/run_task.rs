//! One run, as the supervisor hands it to its `JoinSet`: a [`RunTask`] owns
//! everything the run needs (the job, its context, its sinks' parts, the
//! trigger's reply), so starting a run is building this value and spawning
//! [`RunTask::run`].
//!
//! Architecture Invariant: a run task tells the supervisor what it learns
//! (its store id, that it ended) by [`RunNote`]s on the loop's channel; it
//! never writes state the loop reads.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::control::Live;
use super::sinks::RunSinks;
use crate::api::{ControlError, Metrics, Started};
use crate::exec::{self, RecordedStatus, RunContext, RunEvent, RunOutcome, Status};
use crate::job::Job;
use crate::store::{QUEUED_AT_STOP_ERROR, RunId, RunStart, RunStore, RunTrigger, StoreError};
use crate::watch::JobId;

/// Where a manual trigger waits for its run's id and state (`running`, or
/// `queued` for a slot), or for why it did not start.
pub type Reply = oneshot::Sender<Result<Started, ControlError>>;

/// What the supervisor tells a queued run: its slot is free, or it is
/// cancelled before it started (why, recorded as its error).
#[derive(Debug)]
pub enum Go {
    /// It holds its slot now: run, with the environment (base variables,
    /// secrets, masker) of the config in force now — a run queued before a
    /// SIGHUP that rotated a secret must not start with the revoked one.
    Start(std::sync::Arc<crate::exec::Environment>),
    /// It never starts.
    Cancel(&'static str),
}

/// Why a run waiting for its semaphore's slot across the fleet never
/// started (its file removed, the API, shutdown).
pub const SEMAPHORE_CANCELLED: &str = "cancelled while queued for its semaphore: it never started";

/// What a run task tells the supervisor's loop while it runs.
#[derive(Debug)]
pub enum RunNote {
    /// The store gave the run this id (`None`: the store failed; the run
    /// runs unrecorded — or, a one-shot, does not run at all).
    Recorded { task: tokio::task::Id, run_id: Option<RunId> },
    /// The fleet's claim of the run was not this node's (or could not be
    /// made): it does not run here and records nothing; its end tells no
    /// one and prunes nothing (`fleet/claim.rs`).
    NotRunHere { task: tokio::task::Id },
    /// The run's `RunFinished` passed its sinks: it is over for the API
    /// (cancel answers "not running"), though its task still records and
    /// prunes before it ends.
    Ended { task: tokio::task::Id },
}

/// A run ready to be spawned: holding its admission slot, or queued for one
/// (`queue`).
pub struct RunTask {
    /// The job file.
    pub id: JobId,
    /// The version that runs.
    pub job: Arc<Job>,
    /// Its row in the history.
    pub start: RunStart,
    /// Cancel token, pool and limits.
    pub ctx: RunContext,
    /// Who triggered it and waits for the run id.
    pub reply: Option<Reply>,
    /// `None`: it holds its slot and runs at once. `Some`: it is recorded
    /// `queued` and waits for the supervisor's word ([`Go`]) before it runs.
    pub queue: Option<oneshot::Receiver<Go>>,
    /// The fleet's claim it must win before it begins (a shared history,
    /// a trigger other than manual), else `None`.
    pub claim: Option<crate::store::Claim>,
    /// Its semaphore, held across the fleet (a shared history), else `None`.
    pub fleet_semaphore: Option<super::fleet::semaphore::Needed>,
    /// Cancelled when the daemon begins to stop: a run still waiting for
    /// its semaphore across the fleet never starts then.
    pub stopping: tokio_util::sync::CancellationToken,
    /// The run history.
    pub store: Arc<dyn RunStore>,
    /// Counters fed by the run's events.
    pub metrics: Arc<Metrics>,
    /// Where the API finds the run's live stream.
    pub live: Live,
    /// The loop's inbox.
    pub notes: mpsc::UnboundedSender<RunNote>,
    /// A failpoint for the supervisor's tests: the task panics once its run
    /// is recorded.
    #[cfg(test)]
    pub panic: bool,
}

impl RunTask {
    /// Records the run, runs it through its sinks, applies retention.
    pub async fn run(mut self) -> RunOutcome {
        let task = tokio::task::id();
        let cause = self.start.trigger;
        // In a fleet: this node runs it only if its claim wins; a node
        // without room claims late, so one with room wins (`fleet/claim.rs`).
        if let Some(claim) = self.claim.take()
            && let Err(not_here) =
                super::fleet::claim::decide(&*self.store, &claim, self.queue.is_some(), &self.ctx.cancel).await
        {
            let _ = self.notes.send(RunNote::NotRunHere { task });
            return RunOutcome { status: Status::Cancelled, result: None, error: Some(not_here.reason()) };
        }
        // Its semaphore across the fleet: taken now if free; else it is
        // recorded queued and waits for it (below), as for a local slot.
        let node = self.start.node.clone();
        let mut held = None;
        if let Some(needed) = &self.fleet_semaphore
            && self.queue.is_none()
        {
            held = super::fleet::semaphore::try_take(&*self.store, needed, &node).await;
            self.start.queued = held.is_none();
        }
        let queued = self.start.queued;
        // The run's id is the store's; without a store row the run still
        // runs (and is logged), it just is not in the history — except a
        // one-shot: it runs only once its row is committed (the store answers
        // its `begin_run` then), so a restart never runs it again; while the
        // history cannot be written it waits, until cancelled (its file
        // removed, shutdown).
        let one_shot = cause == RunTrigger::File;
        if one_shot && let Some(why) = self.store.health().borrow().clone() {
            tracing::warn!(job = %self.id, reason = %why, "the run history cannot be written: this one-shot waits until it can");
        }
        let mut begin = self.store.begin_run(self.start);
        let begun = tokio::select! {
            // Cancel first: when both are ready, the check below decides.
            biased;
            () = self.ctx.cancel.cancelled(), if one_shot => {
                // Cancelled as its row committed (the answer is in, unread):
                // it never started, and says so, rather than staying
                // `running` (read `interrupted` at the next start). Given up
                // before the commit, the writer drops the row.
                if let Some(Ok(run_id)) = futures::FutureExt::now_or_never(begin.as_mut()) {
                    tracing::info!(job = %self.id, run_id, "the one-shot was cancelled before it started");
                    let recorder = self.store.recorder();
                    recorder.record(run_id, crate::store::not_started_end());
                }
                Err(StoreError::Unwritable("cancelled while waiting".into()))
            }
            begun = &mut begin => begun,
        };
        drop(begin);
        let run_id = match begun {
            Ok(run_id) => Some(run_id),
            Err(e) if one_shot => {
                tracing::error!(job = %self.id, error = %e, "the run history could not record this one-shot; not running it (save a new version to run it)");
                let _ = self.notes.send(RunNote::Recorded { task, run_id: None });
                if let Some(held) = held {
                    super::fleet::semaphore::release(&*self.store, held, &node).await;
                }
                let error = Some(format!("not run: the run history could not record it ({e})"));
                return RunOutcome { status: crate::exec::Status::Cancelled, result: None, error };
            }
            Err(e) => {
                tracing::error!(job = %self.id, error = %e, "cannot record the run in the store");
                None
            }
        };
        // The run's live stream exists before the trigger's caller hears
        // of its id (a subscription right after the answer finds it), and
        // the loop hears of the id before the caller can use it.
        let sinks = RunSinks::new(self.id.clone(), run_id, cause, self.metrics, &self.live, self.store.recorder());
        let _ = self.notes.send(RunNote::Recorded { task, run_id });
        if let Some(reply) = self.reply {
            let status = if queued { RecordedStatus::Queued } else { RecordedStatus::Running };
            let started = run_id
                .map(|run_id| Started { run_id, status })
                .ok_or_else(|| ControlError::NotStarted("the run store failed; see the log".into()));
            let _ = reply.send(started);
        }
        if let Some(queue) = self.queue {
            // Queued: wait for the slot, or for a cancel before it starts.
            let cancelled = tokio::select! {
                go = queue => match go {
                    Ok(Go::Start(environment)) => {
                        self.ctx.environment = environment;
                        None
                    }
                    Ok(Go::Cancel(why)) => Some(why),
                    // The supervisor is gone without a word: it stopped.
                    Err(_) => Some(QUEUED_AT_STOP_ERROR),
                },
                () = self.ctx.cancel.cancelled() => Some(QUEUED_AT_STOP_ERROR),
            };
            if let Some(why) = cancelled {
                tracing::info!(job = %self.id, run_id, reason = why, "the queued run was cancelled before it started");
                sinks.never_started(Status::Cancelled, why);
                let _ = self.notes.send(RunNote::Ended { task });
                return RunOutcome { status: Status::Cancelled, result: None, error: Some(why.to_string()) };
            }
        }
        if let Some(needed) = &self.fleet_semaphore
            && held.is_none()
        {
            tracing::info!(job = %self.id, run_id, semaphore = %needed.name, "queued: its semaphore is held on other nodes");
            let waited =
                super::fleet::semaphore::wait(&*self.store, needed, &node, &self.ctx.cancel, &self.stopping).await;
            let why = match waited {
                super::fleet::semaphore::Waited::Held(slot) => {
                    held = Some(slot);
                    None
                }
                super::fleet::semaphore::Waited::Cancelled => Some(SEMAPHORE_CANCELLED),
                super::fleet::semaphore::Waited::Stopping => Some(QUEUED_AT_STOP_ERROR),
            };
            if let Some(why) = why {
                tracing::info!(job = %self.id, run_id, reason = why, "the queued run was cancelled before it started");
                sinks.never_started(Status::Cancelled, why);
                let _ = self.notes.send(RunNote::Ended { task });
                return RunOutcome { status: Status::Cancelled, result: None, error: Some(why.to_string()) };
            }
        }
        #[cfg(test)]
        if self.panic {
            panic!("failpoint: the run task of {} panics", self.id);
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // The sinks take the events on a task of their own (owned and awaited
        // here), as `gatherd run`'s report does: sharing this task's poll,
        // each of the events received spent the cooperative budget the run's
        // tree needed, and a large fan-out's group re-polled its whole set of
        // ready steps for every few it could finish — quadratic (a
        // 100,000-step gather took 13 s instead of 1).
        let notes = self.notes.clone();
        let feed = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if matches!(event, RunEvent::RunFinished { .. }) {
                    let _ = notes.send(RunNote::Ended { task });
                }
                sinks.event(event);
            }
            sinks
        });
        // Its steps' processes get it as GATHERD_RUN_ID.
        let ctx = RunContext { run_id, ..self.ctx };
        let outcome = exec::run(self.job, ctx, tx).await;
        let sinks = match feed.await {
            Ok(sinks) => sinks,
            // The sinks panicked: the run's end is handled as a failed task.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        if let Some(held) = held {
            super::fleet::semaphore::release(&*self.store, held, &node).await;
        }
        // Retention is the supervisor's chore once this task has ended
        // (`Supervisor::prune_later`): pruning here held the job's slot past
        // its "run finished", and a trigger right after it was refused.
        drop(sinks);
        outcome
    }
}
