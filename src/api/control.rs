//! What the API asks of the daemon: the job table, triggering a job,
//! cancelling a run, and the live events of a run. The daemon implements
//! [`Control`]; tests use a fake.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::exec::{RecordedStatus, RunEvent};
use crate::store::RunId;

/// A live event with its number in the run (0 for `run_started`, then 1, 2,
/// …): the SSE `id:`, and the `seq` its row is stored with.
pub type Numbered = (u64, RunEvent);

/// One job as the daemon knows it now.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    /// Its identity: the path relative to the jobs folder.
    pub job: String,
    /// `on change`, `schedule ...`, `every ...`.
    pub trigger: String,
    /// When it fires next, for scheduled jobs.
    pub next_fire: Option<DateTime<Utc>>,
    /// The IANA zone its `schedule` is written in, when it names one
    /// (`timezone = "Europe/Berlin"`): the CLI shows NEXT in it.
    pub timezone: Option<String>,
    /// Whether the file as last read is valid.
    pub valid: bool,
    /// Why not (one line per diagnostic, file:line:col).
    pub diagnostic: Option<String>,
    /// Whether a valid version is loaded (an invalid edit keeps the last one).
    pub runnable: bool,
    /// Its runs in flight (store ids).
    pub running: Vec<RunId>,
    /// Its runs recorded `queued`, waiting for a slot or their semaphore
    /// (store ids, in the order they will start).
    pub queued: Vec<RunId>,
    /// Paused (`gatherd pause`): its scheduled fires are recorded `missed`
    /// and a new version of a one-shot waits for `resume`; runs in flight go
    /// on and a manual trigger runs.
    pub paused: bool,
    /// In a fleet: the live nodes that have this job file in another
    /// version (content hash) than this node — version skew. Left out of
    /// the JSON when there is none.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub skew: Vec<String>,
}

/// What the dashboard's job page shows of a job beyond its [`JobView`]:
/// the file as the daemon last read it, its next fires, and its
/// diagnostics with their source excerpts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobDetail {
    /// The file's text as last read; `None` when it was not text, was
    /// refused, or is larger than [`SOURCE_LIMIT`] (memory is kept for the
    /// job files people read, not for generated giants).
    pub source: Option<std::sync::Arc<str>>,
    /// The next scheduled fires (nominal times, before jitter), as many as
    /// asked; empty for a job that is not scheduled.
    pub next_fires: Vec<DateTime<Utc>>,
    /// Why the file as last read is invalid: each diagnostic with its
    /// file:line:col, source line and caret, as `gatherd check` prints it
    /// without colour.
    pub excerpt: Option<String>,
}

/// The largest job file whose text the daemon keeps for [`JobDetail::source`].
pub const SOURCE_LIMIT: usize = 256 * 1024;

/// What a trigger made: the run's id, and whether it runs now (`running`)
/// or waits for a slot or its semaphore (`queued`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Started {
    /// The new run's id.
    pub run_id: RunId,
    /// `running` or `queued`.
    pub status: RecordedStatus,
}

/// Why the daemon did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No job file by that name.
    #[error("no job `{0}`")]
    NoSuchJob(String),
    /// The file has never been valid, so there is nothing to run.
    #[error("job `{0}` has no valid version to run")]
    NotRunnable(String),
    /// The job's overlap policy dropped the run.
    #[error("not started: {0}")]
    NotStarted(String),
    /// No run in flight (or queued) with that id.
    #[error("run {0} is not running")]
    NotRunning(RunId),
    /// The daemon is shutting down.
    #[error("the daemon is stopping")]
    Stopping,
    /// Done for now, but the run history could not save it, so it will not
    /// survive a restart.
    #[error("{0}")]
    NotSaved(String),
}

/// The daemon, as the API sees it.
pub trait Control: Send + Sync {
    /// Every job, sorted by id.
    fn jobs(&self) -> BoxFuture<'_, Vec<JobView>>;
    /// Starts a run of `job` now (trigger `manual`; its overlap policy and
    /// the admission limits apply) and returns its id once it has one, at
    /// once: a run that must wait for a slot is recorded `queued` and
    /// answered as such.
    fn trigger<'a>(&'a self, job: &'a str) -> BoxFuture<'a, Result<Started, ControlError>>;
    /// Pauses (`true`) or resumes (`false`) `job`, saved in the run history
    /// (answered once it is); pausing a paused job (or resuming a running
    /// one) changes nothing and succeeds.
    fn pause<'a>(&'a self, job: &'a str, paused: bool) -> BoxFuture<'a, Result<(), ControlError>>;
    /// What the dashboard shows of one job (its exact id) beyond its
    /// [`JobView`], with up to `fires` next fires; `None` for an unknown job.
    fn job_detail<'a>(&'a self, job: &'a str, fires: usize) -> BoxFuture<'a, Option<JobDetail>>;
    /// Cancels a run in flight, or a queued one (it never starts).
    fn cancel(&self, run: RunId) -> BoxFuture<'_, Result<(), ControlError>>;
    /// The live events of a run in flight, numbered, from now on (`None`
    /// once it has ended: read the store then). Every event is recorded with
    /// its number before it is sent, so an event received, and all before
    /// it, are in the store once the recorder is flushed.
    fn events(&self, run: RunId) -> Option<broadcast::Receiver<Numbered>>;
    /// This daemon's node as it stands now: what `GET /nodes` answers when
    /// the store keeps no `nodes` table (a single node). `None`: unknown.
    fn node(&self) -> Option<crate::store::NodeRow> {
        None
    }
}
