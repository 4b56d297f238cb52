//! The daemon's side of the control API: requests from the API become
//! [`Command`]s on the supervisor's loop (which alone touches the job table),
//! and the live events of runs in flight are broadcast for server-sent events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::api::control::Numbered;
use crate::api::{Control, ControlError, JobDetail, JobView, Started};
use crate::store::RunId;

/// A request for the supervisor's loop.
pub enum Command {
    /// The job table.
    Jobs(oneshot::Sender<Vec<JobView>>),
    /// One job's file text, next fires (as many as asked) and diagnostics.
    Job(String, usize, oneshot::Sender<Option<JobDetail>>),
    /// Start a run of a job now (or queue it for a slot).
    Trigger(String, oneshot::Sender<Result<Started, ControlError>>),
    /// Pause (`true`) or resume (`false`) a job; answered once saved.
    Pause(String, bool, oneshot::Sender<Result<(), ControlError>>),
    /// Cancel a run in flight or queued.
    Cancel(RunId, oneshot::Sender<Result<(), ControlError>>),
}

/// Live event streams of the runs in flight, by store id.
pub type Live = Arc<Mutex<HashMap<RunId, LiveRun>>>;

/// The live event stream of one run: its broadcast channel is made by the
/// first subscriber, so a run nobody watches costs no channel (a channel of
/// [`LIVE_CAPACITY`] slots is allocated whole, which a burst of short runs
/// felt).
pub type LiveRun = Arc<OnceLock<broadcast::Sender<Numbered>>>;

/// How many events a live subscriber may fall behind before it lags.
const LIVE_CAPACITY: usize = 1024;

/// What the API holds: a way into the supervisor's loop, and the live streams.
pub struct DaemonControl {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) live: Live,
}

impl DaemonControl {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| ControlError::Stopping)?;
        rx.await.map_err(|_| ControlError::Stopping)
    }
}

impl Control for DaemonControl {
    fn jobs(&self) -> BoxFuture<'_, Vec<JobView>> {
        async move { self.ask(Command::Jobs).await.unwrap_or_default() }.boxed()
    }

    fn trigger<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<Started, ControlError>> {
        async move { self.ask(|tx| Command::Trigger(job.to_string(), tx)).await? }.boxed()
    }

    fn pause<'a>(&'a self, job: &'a str, paused: bool) -> BoxFuture<'a, Result<(), ControlError>> {
        async move { self.ask(|tx| Command::Pause(job.to_string(), paused, tx)).await? }.boxed()
    }

    fn job_detail<'a>(&'a self, job: &'a str, fires: usize) -> BoxFuture<'a, Option<JobDetail>> {
        async move { self.ask(|tx| Command::Job(job.to_string(), fires, tx)).await.ok().flatten() }.boxed()
    }

    fn cancel(&self, run: RunId) -> BoxFuture<'_, Result<(), ControlError>> {
        async move { self.ask(|tx| Command::Cancel(run, tx)).await? }.boxed()
    }

    fn events(&self, run: RunId) -> Option<broadcast::Receiver<Numbered>> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.get(&run).map(|run| run.get_or_init(|| broadcast::channel(LIVE_CAPACITY).0).subscribe())
    }
}
