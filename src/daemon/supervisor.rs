//! The supervisor's state and its loop: one `select!` over file events,
//! timers, commands from the API, notes and ends of runs, signals and the
//! watchdog. Each input has its handler here; what a job file's new version
//! does is in `apply.rs`, how a run is built in `run_task.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use tokio::signal::unix::Signal;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use super::admit::Admission;
use super::apply::scheduled_cause;
use super::control::{Command, Live};
use super::notify::{Input as NotifyInput, Targets};
use super::overlap::{self, Busy, Decision};
use super::retry::Retries;
use super::run_task::{Go, Reply, RunNote, RunTask};
use super::systemd::Systemd;
use super::table::{self, Entry, Loaded, Unread};
use super::{FILE_BATCH, Options, describe};
use crate::api::{ControlError, JobDetail, JobView, Metrics, SharedToken};
use crate::config::Config;
use crate::exec::{BlockingPool, RunContext, RunEvent, RunOutcome, Status};
use crate::store::{Missed, QUEUED_AT_STOP_ERROR, RunId, RunStart, RunStore, RunTrigger};
use crate::watch::{JobFileEvent, JobId, Watcher};

/// The `/healthz` problem of a jobs folder that cannot be scanned.
const JOBS_FOLDER: &str = "jobs_folder";

/// The `/healthz` problem of a run history that cannot be written.
const STORE: &str = "store";

/// A run that is due: which job, why, and its nominal time.
#[derive(Debug)]
pub(super) struct Fire {
    pub job: JobId,
    pub cause: RunTrigger,
    pub due: chrono::DateTime<Utc>,
    /// Who asked for it (a manual trigger) and waits for its run id.
    pub reply: Option<Reply>,
}

/// A run queued in admission for its slot: its task is spawned, recorded
/// `queued`, and waits for the word ([`Go`]).
#[derive(Debug)]
pub(super) struct Waiting {
    pub job: JobId,
    pub task: tokio::task::Id,
    pub go: tokio::sync::oneshot::Sender<Go>,
}

/// Why a queued run never started, as recorded (status `cancelled`).
pub(super) const CANCELLED_WHILE_QUEUED: &str = "cancelled while queued: it never started";
pub(super) const REMOVED_WHILE_QUEUED: &str = "not started: its job file was removed while it was queued";
const REPLACED_WHILE_QUEUED: &str = "not started: replaced by a newer run while it was queued (overlap = \"replace\")";
pub(super) const SUPERSEDED_WHILE_QUEUED: &str = "not started: a new version of the file was saved while it was queued";

/// A run in flight (or queued for its slot), by the id of its task in
/// [`Supervisor::runs`].
#[derive(Debug)]
pub(super) struct InFlight {
    pub job: JobId,
    /// It waits in admission ([`Waiting`]) and holds no slot yet.
    pub queued: bool,
    /// The admission slot it holds, given back when it ends.
    pub semaphore: Option<String>,
    /// Its id in the store, once the task has said it ([`RunNote`]).
    pub run_id: Option<RunId>,
    /// Its `RunFinished` was handled: it is over for the API.
    pub ended: bool,
    /// The fleet's claim was not this node's: it did not run here, and its
    /// end tells no one and prunes nothing.
    pub not_here: bool,
    /// Cancels it (file removed, `replace`, the API, shutdown).
    pub cancel: CancellationToken,
    /// When it was spawned, for the duration of a run whose task failed.
    pub spawned: tokio::time::Instant,
}

/// What the loop listens to besides its own state, and the services it
/// stops on the way out.
pub(super) struct Inputs {
    pub file_events: Option<mpsc::Receiver<JobFileEvent>>,
    pub commands: mpsc::Receiver<Command>,
    pub sigterm: Signal,
    pub sigint: Signal,
    pub sighup: Signal,
    /// Dropped when the loop ends: no file events after that.
    pub watcher: Watcher,
    /// The control API's task and its stop token.
    pub api: (tokio::task::JoinHandle<std::io::Result<()>>, CancellationToken),
}

/// The daemon's state, written only by its loop ([`Supervisor::serve`]).
pub(super) struct Supervisor {
    pub opts: Options,
    pub pool: BlockingPool,
    pub table: BTreeMap<JobId, Entry>,
    pub timers: DelayQueue<JobId>,
    pub admission: Admission<Waiting>,
    /// Every run's task; each one's bookkeeping is in `in_flight`.
    pub runs: JoinSet<RunOutcome>,
    /// Writes to the history the loop does not wait for (a pause saved, a
    /// paused fire recorded): owned here, drained by the loop, awaited at
    /// shutdown before the history closes.
    pub chores: JoinSet<()>,
    /// The paused jobs, by id (as saved in the history's `paused_jobs`).
    pub paused: HashSet<String>,
    pub in_flight: HashMap<tokio::task::Id, InFlight>,
    /// What runs tell the loop (their store ids, their ends).
    pub notes: mpsc::UnboundedReceiver<RunNote>,
    pub notes_tx: mpsc::UnboundedSender<RunNote>,
    /// Parent of every run's token.
    pub shutdown: CancellationToken,
    /// Cancelled when shutdown begins: runs waiting for their semaphore
    /// across the fleet (`fleet/semaphore.rs`) never start, like local waits.
    pub stopping_token: CancellationToken,
    pub systemd: Systemd,
    pub watchdog: Option<tokio::time::Interval>,
    /// Run history.
    pub store: Arc<dyn RunStore>,
    /// Whether the history can be written (`None`) or why not.
    pub store_health: tokio::sync::watch::Receiver<Option<String>>,
    /// This daemon's node id in the store (`fleet::node_id`; a rejoin
    /// replaces it).
    pub node: String,
    /// This daemon's node, which the API and the heartbeats read (set by
    /// start-up).
    pub fleet_node: Option<Arc<super::fleet::Node>>,
    /// The heartbeat task, in a fleet (a shared store).
    pub heartbeats: Option<super::fleet::Heartbeats>,
    /// Version skew, as the heartbeat task last found it: job → the live
    /// nodes that have it in another version.
    pub skew: BTreeMap<String, Vec<String>>,
    /// Set around a takeover's rerun (`fleet/takeover.rs`): the run spawned
    /// now is not claimed. Its fire's claim is the dead node's, so a claim
    /// would lose to it; the takeover itself (one node per dead node, in a
    /// transaction) already made this node the only one to run it again.
    pub(super) unclaimed: bool,
    /// Live event streams of runs in flight, for the API.
    pub live: Live,
    /// Prometheus metrics, fed by every run.
    pub metrics: Arc<Metrics>,
    /// How many entries of `table` are invalid (kept as a count so the status
    /// reported after every event does not walk the table).
    pub invalid_jobs: usize,
    /// Entries of the jobs folder refused at the last scan that cannot be in
    /// `table` (a name that is not text has no `JobId`): the path relative
    /// to the folder (shown lossily) and why. Listed and counted invalid.
    pub refused: BTreeMap<String, String>,
    /// Reads to try again (a passing shortage of file descriptors or memory).
    pub retries: Retries,
    /// Whether the start-up scan is done. Before it, a job file's history
    /// decides (a one-shot that ran is not re-run; missed fires are caught
    /// up); a file that appears later is new and runs as such.
    pub started: bool,
    /// Whether shutdown has begun: no run starts any more.
    pub stopping: bool,
    /// The control API's address and its token, which a reload replaces.
    pub api: Option<(std::net::SocketAddr, SharedToken)>,
    /// The state folder's lock, held until the supervisor is gone.
    pub lock: Option<nix::fcntl::Flock<std::fs::File>>,
    /// Where runs record their steps' process groups (`processes.rs`).
    pub processes: Option<super::processes::ProcessRecords>,
    /// What runs' steps get from outside their job: the base environment
    /// (`pass_env`), the secrets and their masker; remade on SIGHUP.
    pub environment: Arc<crate::exec::Environment>,
    /// The notifier's handle and its task (`notify/`), awaited at shutdown.
    pub notifier: Option<(super::notify::NotifyHandle, tokio::task::JoinHandle<()>)>,
    /// Jobs whose run tasks panic (the supervisor's tests).
    #[cfg(test)]
    pub panic_jobs: std::collections::HashSet<JobId>,
}

impl Supervisor {
    pub fn new(opts: Options, store: Arc<dyn RunStore>, node: String) -> Supervisor {
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let metrics = Arc::new(Metrics::new());
        let environment =
            Arc::new(crate::exec::Environment::of_this_process(&opts.config.pass_env, opts.secrets.clone()));
        let targets = Targets::from_config(&opts.config, opts.api_listen.or(opts.config.api_listen))
            .with_environment(&environment);
        let notifier = Some(super::notify::start(store.clone(), metrics.clone(), targets));
        let sup = Supervisor {
            notifier,
            store_health: store.health(),
            store,
            node,
            fleet_node: None,
            heartbeats: None,
            skew: BTreeMap::new(),
            unclaimed: false,
            started: false,
            stopping: false,
            live: Live::default(),
            metrics,
            pool: BlockingPool::new(opts.blocking_threads()),
            environment,
            admission: Admission::new(opts.max_concurrent_runs(), opts.semaphores()),
            opts,
            table: BTreeMap::new(),
            timers: DelayQueue::new(),
            runs: JoinSet::new(),
            chores: JoinSet::new(),
            paused: HashSet::new(),
            in_flight: HashMap::new(),
            notes,
            notes_tx,
            shutdown: CancellationToken::new(),
            stopping_token: CancellationToken::new(),
            systemd: Systemd,
            watchdog: Systemd.watchdog_interval().map(tokio::time::interval),
            invalid_jobs: 0,
            refused: BTreeMap::new(),
            retries: Retries::default(),
            lock: None,
            processes: None,
            api: None,
            #[cfg(test)]
            panic_jobs: Default::default(),
        };
        sup.watch_pool();
        sup
    }

    /// Handles every input until SIGTERM or SIGINT, then stops the watcher
    /// and the API and hands itself to [`Supervisor::shutdown`].
    pub async fn serve(mut self, inputs: Inputs) -> anyhow::Result<Supervisor> {
        let Inputs { mut file_events, mut commands, mut sigterm, mut sigint, mut sighup, watcher, api } = inputs;
        loop {
            tokio::select! {
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
                _ = sighup.recv() => self.reload().await,
                Ok(()) = self.store_health.changed() => self.on_store_health(),
                event = recv_or_pending(file_events.as_mut()) => match event {
                    Some(event) => {
                        // With those already waiting: a burst is read in batches.
                        let mut events = vec![event];
                        while events.len() < FILE_BATCH
                            && let Some(event) = file_events.as_mut().and_then(|rx| rx.try_recv().ok())
                        {
                            events.push(event);
                        }
                        self.on_file_events(events).await;
                    }
                    None => {
                        // Scheduled jobs go on; new files are found on SIGHUP.
                        tracing::error!("the folder watcher stopped: file changes are no longer seen until a reload (SIGHUP)");
                        file_events = None;
                    }
                },
                Some(expired) = self.timers.next() => self.on_timer(expired.into_inner()),
                Some(command) = commands.recv() => self.on_command(command),
                Some(note) = self.notes.recv() => self.on_note(note),
                Some(ended) = self.runs.join_next_with_id() => self.on_run_end(ended),
                Some(_) = self.chores.join_next() => {}
                Some(note) = recv_fleet(self.heartbeats.as_mut()) => self.on_fleet_note(note),
                () = sleep_until(self.retries.at) => self.retry_reads().await,
                () = tick(self.watchdog.as_mut()) => self.systemd.watchdog(),
            }
        }
        drop(watcher);
        // The API goes first: nothing would answer its requests any more.
        let (api, api_stop) = api;
        api_stop.cancel();
        match api.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the control API stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "the control API's task failed"),
        }
        Ok(self)
    }

    /// Lets the metrics read the blocking pool's busy threads at each scrape.
    pub fn watch_pool(&self) {
        let pool = self.pool.clone();
        self.metrics.read_pool_busy_from(move || i64::try_from(pool.busy()).unwrap_or(i64::MAX));
    }

    /// The one-line status; O(1), as it is reported after every event.
    pub fn status_line(&self) -> String {
        debug_assert_eq!(self.invalid_jobs, self.table.values().filter(|e| e.invalid.is_some()).count());
        // Every entry with a timer has its one key in `timers`.
        debug_assert_eq!(self.timers.len(), self.table.values().filter(|e| e.timer.is_some()).count());
        format!(
            "{} jobs ({} scheduled, {} invalid); {} runs in flight, {} waiting",
            self.table.len() + self.refused.len(),
            self.timers.len(),
            self.invalid_jobs + self.refused.len(),
            self.admission.running(),
            self.admission.waiting()
        )
    }

    pub fn report_status(&self) {
        if let Some(node) = &self.fleet_node {
            node.set_in_flight(self.admission.running() + self.admission.waiting());
        }
        self.systemd.status(&self.status_line());
        self.metrics.set_invalid_jobs(self.invalid_jobs + self.refused.len());
        self.metrics.set_runs_queued(self.admission.waiting());
    }

    /// Reads every job file again and applies what changed: the start-up scan,
    /// SIGHUP, and the answer to lost events. What cannot be a job (a name
    /// that is not text, a symlink loop, a FIFO...) is listed invalid with
    /// why. A scan that fails for a passing reason (out of file descriptors)
    /// is tried again later.
    pub async fn rescan(&mut self) {
        let root = self.opts.jobs.clone();
        type Found = (Vec<(JobId, Result<Loaded, Unread>)>, Vec<(PathBuf, String)>);
        let found = tokio::task::spawn_blocking(move || -> Result<Found, crate::watch::WatchError> {
            let scanned = crate::watch::scan(&root)?;
            let confine = confinement(&root);
            let read = scanned.ids.into_iter().map(|id| (id.clone(), table::read(&id.path(&root), confine.as_deref())));
            let read = read.collect();
            let refused = scanned.refused.into_iter().map(|r| (r.path, r.reason)).collect();
            Ok((read, refused))
        })
        .await;
        let (found, refused) = match found {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot scan the jobs folder");
                if e.is_transient() {
                    self.retries.rescan = true;
                    self.retries.schedule(tokio::time::Instant::now());
                }
                // Its jobs keep their last versions; a later rescan (the
                // folder back, SIGHUP, the retry) clears this.
                return self.metrics.set_problem(JOBS_FOLDER, Some(format!("cannot scan the jobs folder: {e}")));
            }
            Err(e) => return tracing::error!(error = %e, "the scan of the jobs folder failed"),
        };
        self.metrics.set_problem(JOBS_FOLDER, None);
        let root = self.opts.jobs.clone();
        let mut present: std::collections::HashSet<JobId> = found.iter().map(|(id, _)| id.clone()).collect();
        let mut not_text = BTreeMap::new();
        let mut refused_ids = Vec::new();
        for (path, reason) in refused {
            match JobId::from_path(&root, &path) {
                Some(id) => {
                    present.insert(id.clone());
                    refused_ids.push((id, reason));
                }
                None => {
                    let rel = path.strip_prefix(&root).unwrap_or(&path).to_string_lossy().into_owned();
                    tracing::warn!(path = %path.display(), reason = %reason, "job file not loaded");
                    not_text.insert(rel, reason);
                }
            }
        }
        self.refused = not_text;
        let gone: Vec<JobId> = self.table.keys().filter(|id| !present.contains(*id)).cloned().collect();
        for id in gone {
            self.remove(&id);
        }
        for (id, reason) in refused_ids {
            self.unreadable(&id, reason);
        }
        for (id, loaded) in found {
            match loaded {
                Ok(loaded) => self.apply(id, loaded).await,
                Err(why) => self.unread(id, why),
            }
        }
        self.retries.settled();
        self.report_status();
    }

    /// File events, in the order the watcher sent them. The files of
    /// consecutive `Changed` events are read in one blocking call.
    pub async fn on_file_events(&mut self, events: Vec<JobFileEvent>) {
        let mut changed = Vec::new();
        for event in events {
            match event {
                JobFileEvent::Changed { id } => changed.push(id),
                JobFileEvent::Removed { id } => {
                    self.read_and_apply(std::mem::take(&mut changed)).await;
                    self.remove(&id);
                }
                JobFileEvent::Rescan { reason } => {
                    self.read_and_apply(std::mem::take(&mut changed)).await;
                    tracing::warn!(reason = %reason, "file events may have been lost; rescanning the jobs folder");
                    self.rescan().await;
                }
            }
        }
        self.read_and_apply(changed).await;
        self.report_status();
    }

    /// Reads these job files (off the runtime, in one go) and applies each.
    async fn read_and_apply(&mut self, ids: Vec<JobId>) {
        if ids.is_empty() {
            return;
        }
        let root = self.opts.jobs.clone();
        let count = ids.len();
        let read = tokio::task::spawn_blocking(move || {
            let confine = confinement(&root);
            ids.into_iter()
                .map(|id| {
                    let loaded = table::read(&id.path(&root), confine.as_deref());
                    (id, loaded)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let found = match read {
            Ok(found) => found,
            Err(e) => return tracing::error!(files = count, error = %e, "reading job files failed"),
        };
        for (id, loaded) in found {
            match loaded {
                Ok(loaded) => self.apply(id, loaded).await,
                Err(why) => self.unread(id, why),
            }
        }
        self.retries.settled();
    }

    /// A job file that was not read: gone (removed), for a passing reason
    /// (read again later), or unreadable (listed invalid with why).
    fn unread(&mut self, id: JobId, why: Unread) {
        match why {
            Unread::Gone => self.remove(&id),
            Unread::Transient(e) => {
                tracing::warn!(job = %id, error = %e, "cannot read the job file for now; trying again shortly");
                self.retries.ids.insert(id);
                self.retries.schedule(tokio::time::Instant::now());
            }
            Unread::Unreadable(reason) => self.unreadable(&id, reason),
        }
    }

    /// A job file that is there but cannot be read as one: invalid, with
    /// why; its last valid version (if any) keeps its schedule, as with an
    /// invalid edit, and it is read again when it changes (or its
    /// attributes do: a `chmod`).
    fn unreadable(&mut self, id: &JobId, reason: String) {
        let path = id.path(&self.opts.jobs);
        let entry = self.table.entry(id.clone()).or_default();
        // Whatever it holds when it can be read again is news.
        entry.hash = None;
        if entry.invalid.is_some() && entry.refused.as_ref() == Some(&reason) {
            return; // Said already.
        }
        self.apply_invalid(id, crate::load::LoadError::whole_file(&path, reason.clone()));
        if let Some(entry) = self.table.get_mut(id) {
            entry.refused = Some(reason);
        }
    }

    /// What was waiting to be read again, now that its time has come.
    pub async fn retry_reads(&mut self) {
        let Some((ids, rescan)) = self.retries.take_due(tokio::time::Instant::now()) else { return };
        if rescan {
            tracing::info!("scanning the jobs folder again");
            self.rescan().await;
        } else {
            tracing::info!(files = ids.len(), "reading job files again");
            self.read_and_apply(ids).await;
        }
        self.report_status();
    }

    pub(super) fn on_timer(&mut self, id: JobId) {
        let Some(entry) = self.table.get_mut(&id) else { return };
        entry.timer = None;
        let cause = entry.job.as_ref().map_or(RunTrigger::Interval, |j| scheduled_cause(&j.trigger));
        let due = entry.slot.unwrap_or_else(Utc::now);
        if self.paused.contains(id.as_str()) {
            self.record_paused_fire(&id, cause, due);
        } else {
            self.fire(id.clone(), cause, due, None);
        }
        self.schedule_next(&id);
        self.report_status();
    }

    /// A fire of the paused job `id` (its timer's, or one kept by
    /// `overlap = "queue"` or a catch-up): nothing runs, the fire is in the
    /// history as `missed` (so a restart does not take the pause for a
    /// down time), and the job's history is pruned as a run's end would
    /// prune it, so a paused job stays within its retention.
    fn record_paused_fire(&mut self, id: &JobId, cause: RunTrigger, due: chrono::DateTime<Utc>) {
        tracing::debug!(job = %id, due = %due, "fire not run: the job is paused (recorded missed)");
        let Some(entry) = self.table.get(id) else { return };
        let Some(content_hash) = entry.valid_hash else { return };
        let missed = Missed {
            job: id.to_string(),
            trigger: cause,
            fire_times: vec![due],
            content_hash,
            node: self.node.clone(),
        };
        let store = self.store.clone();
        let prune = self.pruning(id);
        self.chores.spawn(async move {
            let job = missed.job.clone();
            if let Err(e) = store.record_paused(missed).await {
                return tracing::error!(job = %job, error = %e, "cannot record a paused job's fire as missed");
            }
            prune.await;
        });
    }

    /// The retention of `id` as a future for the loop's chores: what was
    /// recorded before is written first (the recorder's flush), then the
    /// job's oldest runs go, per its `keep_runs`/`keep_for` or the
    /// config's. After a run it is spawned from `on_run_end`, so the run's
    /// slot is given back at its end and not after the prune (which held it
    /// past "run finished": a trigger right after was refused as still
    /// going).
    fn pruning(&self, id: &JobId) -> impl std::future::Future<Output = ()> + Send + 'static {
        let job = self.table.get(id).and_then(|e| e.job.as_ref());
        let keep_runs = job.and_then(|j| j.keep_runs).or(self.opts.config.keep_runs());
        let keep_for = job.and_then(|j| j.keep_for).or(self.opts.config.keep_for());
        let store = self.store.clone();
        let id = id.to_string();
        async move {
            if keep_runs.is_none() && keep_for.is_none() {
                return;
            }
            let pruned = match store.recorder().flush().await {
                Ok(()) => store.prune(&id, keep_runs, keep_for).await,
                Err(e) => Err(e),
            };
            match pruned {
                Ok(0) => {}
                Ok(n) => tracing::debug!(job = %id, pruned = n, "old runs pruned"),
                Err(e) => tracing::warn!(job = %id, error = %e, "cannot prune old runs"),
            }
        }
    }

    /// Pauses or resumes `id` now and saves it in the history; `reply`
    /// hears once it is saved. Resuming a one-shot runs the version saved
    /// while it was paused, if that has not run; a scheduled job's timer
    /// was never stopped, so it goes on from its next slot (no burst of the
    /// fires it missed).
    pub fn set_paused(
        &mut self,
        id: &JobId,
        paused: bool,
        reply: Option<tokio::sync::oneshot::Sender<Result<(), ControlError>>>,
    ) {
        self.pause_here(id.as_str(), paused, None);
        let (store, job) = (self.store.clone(), id.to_string());
        self.chores.spawn(async move {
            let saved = store.set_paused(&job, paused).await.map_err(|e| {
                let done = if paused { "paused" } else { "resumed" };
                tracing::error!(job = %job, error = %e, "cannot save the job's pause in the run history");
                ControlError::NotSaved(format!(
                    "{done} {job} for now, but the run history could not save it, so a restart will not remember it: {e}"
                ))
            });
            if let Some(reply) = reply {
                let _ = reply.send(saved);
            }
        });
    }

    /// Pauses or resumes `id` on this node, without saving it: for
    /// [`set_paused`](Self::set_paused), and for a pause another node of a
    /// fleet saved (`by`: said so in the log).
    pub(super) fn pause_here(&mut self, id: &str, paused: bool, by: Option<&str>) {
        let changed = if paused { self.paused.insert(id.to_string()) } else { self.paused.remove(id) };
        let by = by.unwrap_or("this node");
        if changed && paused {
            tracing::info!(job = %id, by, "paused: its fires are recorded missed and its file's new versions wait until it is resumed; runs in flight go on");
        } else if changed {
            tracing::info!(job = %id, by, "resumed");
            let pending = self.table.iter_mut().find(|(k, _)| k.as_str() == id).and_then(|(k, e)| {
                let one_shot = matches!(e.job.as_deref()?.trigger, crate::job::Trigger::OnChange);
                let hash = e.valid_hash.filter(|h| one_shot && e.last_run_hash != Some(*h))?;
                e.last_run_hash = Some(hash);
                Some(k.clone())
            });
            if let Some(id) = pending {
                tracing::info!(job = %id, "running the version saved while it was paused");
                self.fire(id, RunTrigger::File, Utc::now(), None);
            }
        }
    }

    /// A run of `id` is due: apply its overlap policy, then admission.
    /// `reply` (a manual trigger) gets the run's id once it starts, or why it
    /// does not.
    pub fn fire(&mut self, id: JobId, cause: RunTrigger, due: chrono::DateTime<Utc>, reply: Option<Reply>) {
        let refuse = |reply: Option<Reply>, why: ControlError| {
            if let Some(reply) = reply {
                let _ = reply.send(Err(why));
            }
        };
        let Some(entry) = self.table.get_mut(&id) else {
            return refuse(reply, ControlError::NoSuchJob(id.to_string()));
        };
        let Some(job) = entry.job.clone() else { return refuse(reply, ControlError::NotRunnable(id.to_string())) };
        if self.stopping {
            return refuse(reply, ControlError::Stopping);
        }
        debug_assert_eq!(entry.waiting > 0, self.admission.is_waiting(|f| f.job == id));
        let busy = Busy { running: entry.running.len(), waiting: entry.waiting, queued: entry.queued.is_some() };
        let cause_str = cause.as_str();
        match overlap::decide(job.overlap, busy) {
            Decision::Start => {}
            Decision::Drop(why) => {
                tracing::info!(job = %id, cause = cause_str, reason = why.reason(), "skipped");
                return refuse(reply, ControlError::NotStarted(why.reason().into()));
            }
            Decision::Queue => {
                tracing::info!(job = %id, cause = cause_str, "queued behind the running one (overlap = \"queue\")");
                entry.queued = Some((cause, due));
                return refuse(
                    reply,
                    ControlError::NotStarted(
                        "queued: it starts when the running one ends (overlap = \"queue\")".into(),
                    ),
                );
            }
            Decision::Replace => {
                tracing::info!(job = %id, cause = cause_str, "cancelling the running one (overlap = \"replace\")");
                for task in &entry.running {
                    if let Some(run) = self.in_flight.get(task) {
                        run.cancel.cancel();
                    }
                }
                self.drop_queued(|w| w.job == id, REPLACED_WHILE_QUEUED);
            }
        }
        let fire = Fire { job: id.clone(), cause, due, reply };
        let semaphore = job.semaphore.as_deref();
        if self.admission.admit_now(semaphore) {
            self.spawn_run(fire, None);
            return;
        }
        // No slot: the run is recorded `queued` now (its trigger is answered
        // at once) and waits in admission for the word.
        tracing::info!(job = %id, semaphore = semaphore.unwrap_or(""), "queued for a free slot");
        let (go, queue) = tokio::sync::oneshot::channel();
        if let Some(task) = self.spawn_run(fire, Some(queue)) {
            self.admission.enqueue(semaphore, Waiting { job: id.clone(), task, go });
            if let Some(entry) = self.table.get_mut(&id) {
                entry.waiting += 1;
            }
        }
    }

    /// Starts queued runs that now hold their slots.
    fn start_released(&mut self, released: Vec<Waiting>) {
        for waiting in released {
            if let Some(entry) = self.table.get_mut(&waiting.job) {
                entry.waiting = entry.waiting.saturating_sub(1);
                entry.running.push(waiting.task);
            }
            if let Some(run) = self.in_flight.get_mut(&waiting.task) {
                run.queued = false;
            }
            // A task gone meanwhile (it panicked) holds the slot until its
            // end is handled, which gives it back.
            let _ = waiting.go.send(Go::Start(self.environment.clone()));
        }
    }

    /// Takes the queued runs for which `which` holds out of admission and
    /// tells each it never starts, with `why` (its recorded error); returns
    /// how many. Runs that waited behind them may start.
    pub fn drop_queued(&mut self, which: impl FnMut(&Waiting) -> bool, why: &'static str) -> usize {
        let dropped = self.admission.forget(which);
        let count = dropped.len();
        for waiting in dropped {
            if let Some(entry) = self.table.get_mut(&waiting.job) {
                entry.waiting = entry.waiting.saturating_sub(1);
            }
            let _ = waiting.go.send(Go::Cancel(why));
        }
        if count > 0 && !self.stopping {
            let released = self.admission.start_waiting();
            self.start_released(released);
        }
        count
    }

    /// Spawns a run: holding its admission slot (`queue` is `None`), or
    /// queued for it. Returns its task's id, or `None` when the job has no
    /// version to run (its slot, if it holds one, is given back).
    fn spawn_run(&mut self, fire: Fire, queue: Option<tokio::sync::oneshot::Receiver<Go>>) -> Option<tokio::task::Id> {
        let queued = queue.is_some();
        let version = self.table.get(&fire.job).and_then(|e| e.job.clone().zip(e.valid_hash));
        let Some((job, content_hash)) = version else {
            if let Some(reply) = fire.reply {
                let _ = reply.send(Err(ControlError::NoSuchJob(fire.job.to_string())));
            }
            if !queued {
                let released = self.admission.release(None);
                self.start_released(released);
            }
            return None;
        };
        let cancel = self.shutdown.child_token();
        let semaphore = job.semaphore.clone();
        let start = RunStart {
            job: fire.job.to_string(),
            trigger: fire.cause,
            fire_time: fire.due,
            content_hash,
            node: self.node.clone(),
            queued,
        };
        // A fleet: the claim to win, and the semaphore to hold there too.
        let claim = super::fleet::claim::claim_for(&*self.store, &start, job.overlap).filter(|_| !self.unclaimed);
        let fleet_semaphore = semaphore.as_ref().filter(|_| self.store.shared()).map(|name| {
            super::fleet::semaphore::Needed { name: name.clone(), count: self.opts.config.semaphore(name) }
        });
        let task = RunTask {
            id: fire.job.clone(),
            start,
            claim,
            fleet_semaphore,
            stopping: self.stopping_token.clone(),
            ctx: RunContext {
                cancel: cancel.clone(),
                pool: self.pool.clone(),
                limits: self.opts.config.limits(),
                script_limits: self.opts.config.script_limits(),
                ledger: self.processes.as_ref().map(|p| p.for_job(fire.job.as_str())),
                environment: self.environment.clone(),
                run_id: None, // the store's, set by the run task once it has it
            },
            reply: fire.reply,
            queue,
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            live: self.live.clone(),
            notes: self.notes_tx.clone(),
            #[cfg(test)]
            panic: self.panic_jobs.contains(&fire.job),
            job,
        };
        let task = self.runs.spawn(task.run()).id();
        tracing::debug!(job = %fire.job, cause = fire.cause.as_str(), queued, "run spawned");
        if !queued && let Some(entry) = self.table.get_mut(&fire.job) {
            entry.running.push(task);
        }
        let spawned = tokio::time::Instant::now();
        let run =
            InFlight { job: fire.job, queued, semaphore, run_id: None, ended: false, not_here: false, cancel, spawned };
        self.in_flight.insert(task, run);
        Some(task)
    }

    /// What a run task says of itself.
    fn on_note(&mut self, note: RunNote) {
        match note {
            RunNote::Recorded { task, run_id } => {
                if let Some(run) = self.in_flight.get_mut(&task) {
                    run.run_id = run_id;
                }
            }
            RunNote::Ended { task } => {
                if let Some(run) = self.in_flight.get_mut(&task) {
                    run.ended = true;
                }
            }
            RunNote::NotRunHere { task } => {
                if let Some(run) = self.in_flight.get_mut(&task) {
                    run.not_here = true;
                }
            }
        }
    }

    /// Takes in every note sent so far, so what a run said before someone
    /// acted on it (a trigger's caller cancelling the run it was given, a
    /// run's end) is known before that act is handled.
    fn take_notes(&mut self) {
        while let Ok(note) = self.notes.try_recv() {
            self.on_note(note);
        }
    }

    /// A request from the control API.
    pub fn on_command(&mut self, command: Command) {
        self.take_notes();
        match command {
            Command::Jobs(reply) => {
                let mut views: Vec<JobView> = self
                    .table
                    .iter()
                    .map(|(id, e)| JobView {
                        job: id.to_string(),
                        trigger: e.job.as_ref().map_or_else(|| "none".to_string(), |j| describe(&j.trigger)),
                        next_fire: e.slot,
                        timezone: e.job.as_ref().and_then(|j| match &j.trigger {
                            crate::job::Trigger::Cron { timezone: Some(tz), .. } => Some(tz.name().to_string()),
                            _ => None,
                        }),
                        valid: e.invalid.is_none(),
                        diagnostic: e.invalid.as_ref().map(ToString::to_string),
                        runnable: e.job.is_some(),
                        running: e.running.iter().filter_map(|t| self.in_flight.get(t)?.run_id).collect(),
                        queued: if e.waiting == 0 { Vec::new() } else { self.queued_runs(id) },
                        paused: self.paused.contains(id.as_str()),
                        skew: self.skew.get(id.as_str()).cloned().unwrap_or_default(),
                    })
                    .collect();
                views.extend(self.refused.iter().map(|(path, reason)| JobView {
                    job: path.clone(),
                    trigger: "none".to_string(),
                    next_fire: None,
                    timezone: None,
                    valid: false,
                    diagnostic: Some(format!("{path}: {reason}")),
                    runnable: false,
                    running: Vec::new(),
                    queued: Vec::new(),
                    paused: false,
                    skew: Vec::new(),
                }));
                views.sort_by(|a, b| a.job.cmp(&b.job));
                let _ = reply.send(views);
            }
            Command::Trigger(job, reply) => match self.table.keys().find(|k| k.as_str() == job).cloned() {
                Some(id) => {
                    tracing::info!(job = %id, "triggered through the control API");
                    self.fire(id, RunTrigger::Manual, Utc::now(), Some(reply));
                }
                None => {
                    let _ = reply.send(Err(ControlError::NoSuchJob(job)));
                }
            },
            Command::Job(job, fires, reply) => {
                let _ = reply.send(self.job_detail(&job, fires));
            }
            Command::Pause(job, paused, reply) => match self.table.keys().find(|k| k.as_str() == job).cloned() {
                Some(id) => self.set_paused(&id, paused, Some(reply)),
                None => {
                    let _ = reply.send(Err(ControlError::NoSuchJob(job)));
                }
            },
            Command::Cancel(run, reply) => {
                let found = self.in_flight.iter().find(|(_, r)| r.run_id == Some(run) && !r.ended);
                let answer = match found {
                    Some((&task, r)) if r.queued => {
                        tracing::info!(run_id = run, "cancelled through the control API while queued");
                        self.drop_queued(|w| w.task == task, CANCELLED_WHILE_QUEUED);
                        Ok(())
                    }
                    Some((_, r)) => {
                        tracing::info!(run_id = run, "cancelled through the control API");
                        r.cancel.cancel();
                        Ok(())
                    }
                    None => Err(ControlError::NotRunning(run)),
                };
                let _ = reply.send(answer);
            }
        }
        self.metrics.set_runs_queued(self.admission.waiting());
    }

    /// The dashboard's view of one job: its text as last read, its next
    /// `fires` nominal fires (the next slot, then the schedule from it), and
    /// its diagnostics with their excerpts (or why the file was refused).
    fn job_detail(&self, job: &str, fires: usize) -> Option<JobDetail> {
        if let Some((path, reason)) = self.refused.iter().find(|(path, _)| path.as_str() == job) {
            return Some(JobDetail { excerpt: Some(format!("{path}: {reason}")), ..JobDetail::default() });
        }
        let (_, entry) = self.table.iter().find(|(id, _)| id.as_str() == job)?;
        let mut next_fires = Vec::new();
        if let (Some(slot), Some(schedule)) = (entry.slot, &entry.schedule)
            && fires > 0
        {
            next_fires.push(slot);
            next_fires.extend(schedule.next_fires(slot, fires - 1).into_iter().map(|f| f.at));
        }
        Some(JobDetail {
            source: entry.source.clone(),
            next_fires,
            excerpt: entry.invalid.as_ref().map(|e| e.render(false)),
        })
    }

    /// The store ids of `job`'s queued runs, in the order they will start.
    fn queued_runs(&self, job: &JobId) -> Vec<RunId> {
        let mut queued: Vec<(tokio::task::Id, RunId)> = Vec::new();
        self.admission.for_each_waiting(|w| {
            if &w.job == job
                && let Some(run_id) = self.in_flight.get(&w.task).and_then(|r| r.run_id)
            {
                queued.push((w.task, run_id));
            }
        });
        queued.into_iter().map(|(_, id)| id).collect()
    }

    /// A run's task ended — normally, or by a panic, in which case the run
    /// is recorded failed with "internal error". Either way its slot is
    /// given back and what waited for it starts.
    pub fn on_run_end(&mut self, ended: Result<(tokio::task::Id, RunOutcome), tokio::task::JoinError>) {
        self.take_notes();
        let (task, ended) = match ended {
            Ok((task, outcome)) => (task, Ok(outcome)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some(run) = self.in_flight.remove(&task) else {
            return tracing::error!("a run task the supervisor does not know ended");
        };
        // Retention, once this run is written (a queued run that never
        // started has its row too) — by the node that ran it, not by every
        // node whose claim lost.
        if !run.not_here {
            let prune = self.pruning(&run.job);
            self.chores.spawn(prune);
        }
        let (status, error) = match ended {
            Ok(outcome) => {
                tracing::debug!(job = %run.job, run_id = run.run_id, status = %outcome.status, "run ended");
                (outcome.status, outcome.error)
            }
            Err(e) => (Status::Failed, Some(self.record_failed_task(&run, e))),
        };
        // Also a run the history could not record (a one-shot not run for
        // that ends `cancelled`, which tells nothing).
        if !run.not_here {
            let settings = self.notify_settings(run.job.as_str());
            let job = run.job.to_string();
            self.notify(NotifyInput::RunEnded { job, run_id: run.run_id, status, error, settings });
        }
        if run.queued {
            // It never held a slot: only its place in the queue goes (a
            // task that ended before its word came: it panicked).
            self.drop_queued(|w| w.task == task, CANCELLED_WHILE_QUEUED);
            return self.report_status();
        }
        let mut queued = None;
        if let Some(entry) = self.table.get_mut(&run.job) {
            entry.running.retain(|t| *t != task);
            if entry.running.is_empty() {
                queued = entry.queued.take();
            }
        }
        let released = self.admission.release(run.semaphore.as_deref());
        self.start_released(released);
        // A fire kept while this run went on, and caught-up fires, which run
        // one after another: not while the job is paused (recorded missed),
        // unless someone asked for it (a trigger runs a paused job).
        let paused = self.paused.contains(run.job.as_str());
        if let Some((cause, due)) = queued {
            if paused && cause != RunTrigger::Manual {
                self.record_paused_fire(&run.job, cause, due);
            } else {
                self.fire(run.job.clone(), cause, due, None);
            }
        }
        loop {
            let next_catch_up = self
                .table
                .get_mut(&run.job)
                .filter(|e| e.running.is_empty())
                .and_then(|e| Some((e.catch_up.pop_front()?, e.catch_up_cause?)));
            match next_catch_up {
                Some((due, cause)) if paused => self.record_paused_fire(&run.job, cause, due),
                Some((due, cause)) => {
                    self.fire(run.job.clone(), cause, due, None);
                    break;
                }
                None => break,
            }
        }
        self.report_status();
    }

    /// A run's task panicked (or was aborted): its events stopped, so the
    /// history, the metrics and the log hear of its end from here.
    fn record_failed_task(&self, run: &InFlight, e: tokio::task::JoinError) -> String {
        let why = match e.try_into_panic() {
            Ok(p) => p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("a panic")
                .to_string(),
            Err(e) => e.to_string(),
        };
        let error = format!("internal error: the run's task failed ({why})");
        tracing::error!(job = %run.job, run_id = run.run_id, status = "failed", error = %error, "run finished");
        if run.ended {
            return error; // Its end is recorded already.
        }
        let duration = run.spawned.elapsed();
        if run.queued {
            self.metrics.run_not_started(run.job.as_str(), Status::Failed.as_str());
        } else {
            self.metrics.run_finished(run.job.as_str(), Status::Failed.as_str(), duration);
        }
        if let Some(run_id) = run.run_id {
            let event =
                RunEvent::RunFinished { status: Status::Failed, result: None, error: Some(error.clone()), duration };
            self.store.recorder().record(run_id, event);
        }
        error
    }

    /// Tells the notifier (never waits).
    pub fn notify(&self, input: NotifyInput) {
        if let Some((handle, _)) = &self.notifier {
            handle.send(input);
        }
    }

    /// The notification settings of `job`'s last valid version (the
    /// config's defaults apply to a job that never had one).
    pub fn notify_settings(&self, job: &str) -> crate::job::Notify {
        self.table.get(job).and_then(|e| e.job.as_ref()).map(|j| j.notify.clone()).unwrap_or_default()
    }

    /// The job file is gone: unschedule it and cancel its runs.
    pub fn remove(&mut self, id: &JobId) {
        self.cancel_timer(id);
        let Some(entry) = self.table.remove(id) else { return };
        self.notify(NotifyInput::Removed { job: id.to_string() });
        self.forget_node_job(id.as_str());
        if entry.invalid.is_some() {
            self.invalid_jobs -= 1;
        }
        let waiting = self.drop_queued(|w| &w.job == id, REMOVED_WHILE_QUEUED);
        if !entry.running.is_empty() {
            tracing::info!(job = %id, runs = entry.running.len(), "job file removed; cancelling its runs");
        } else {
            tracing::info!(job = %id, "job file removed");
        }
        for task in &entry.running {
            if let Some(run) = self.in_flight.get(task) {
                run.cancel.cancel();
            }
        }
        if waiting > 0 {
            tracing::info!(job = %id, runs = waiting, "cancelled its runs queued for a slot");
        }
    }

    /// SIGHUP: re-read the config (keeping the old one if the new one is
    /// invalid) and rescan the folder.
    pub async fn reload(&mut self) {
        self.systemd.reloading();
        tracing::info!("reloading (SIGHUP)");
        if let Some(path) = self.opts.config_path.clone() {
            // The token file is read again too (rotated in place, say).
            let state = self.opts.state.clone();
            let read = move || {
                let config = Config::load(&path)?;
                // The secrets are read again too; one that cannot be is an
                // invalid config, and the old one (secrets and all) stays.
                let secrets = config.read_secrets(Some(&path))?;
                // Built here too: it looks the user up (NSS, maybe LDAP),
                // which the loop must not wait for.
                let environment = crate::exec::Environment::of_this_process(&config.pass_env, secrets.clone());
                Ok::<_, crate::config::ConfigError>((config.api_token(&state), config, secrets, environment))
            };
            match tokio::task::spawn_blocking(read).await {
                Ok(Ok((token, config, secrets, environment))) => {
                    self.set_api_token(token);
                    self.opts.secrets = secrets;
                    self.set_config_with(config, Arc::new(environment));
                }
                Ok(Err(e)) => tracing::error!(error = %e, "keeping the old config"),
                Err(e) => tracing::error!(error = %e, "keeping the old config"),
            }
        }
        self.rescan().await;
        self.systemd.ready(&self.status_line());
    }

    /// Takes the TCP listener's token as the reloaded config gives it
    /// (`api_token`, or the token file read again): the next request needs
    /// it. One that cannot be read, or none while TCP listens, is refused
    /// and the old token kept.
    pub fn set_api_token(&mut self, token: Result<Option<String>, String>) {
        let Some((listen, shared)) = &self.api else { return };
        let checked = token.and_then(|t| crate::api::require_token(*listen, t.as_deref()).map(|()| t));
        match checked {
            Ok(token) if token == shared.get() => {}
            Ok(token) => {
                shared.set(token);
                tracing::info!("control API token replaced");
            }
            // The rest of the config applies; the API keeps its old token.
            Err(e) => tracing::error!(error = %e, "keeping the control API's token"),
        }
    }

    /// The history's writer failed or is well again: `/healthz` and
    /// `gatherd_degraded{what="store"}` say so (the writer logs it).
    pub fn on_store_health(&mut self) {
        let why = self.store_health.borrow_and_update().clone();
        self.metrics.set_problem(STORE, why.map(|why| format!("the run history cannot be written: {why}")));
    }

    /// Takes a new config: new runs get its pool and limits, and runs that
    /// waited start if the new limits let them.
    #[cfg(test)]
    pub fn set_config(&mut self, config: Config) {
        let environment = crate::exec::Environment::of_this_process(&config.pass_env, self.opts.secrets.clone());
        self.set_config_with(config, Arc::new(environment));
    }

    /// [`Supervisor::set_config`] with the environment (`pass_env`, the
    /// secrets) already built off the loop: new runs get it; runs in
    /// flight keep theirs.
    pub fn set_config_with(&mut self, config: Config, environment: Arc<crate::exec::Environment>) {
        let api = self.opts.api_listen.or(config.api_listen);
        self.opts.config = config;
        self.environment = environment;
        let targets = Targets::from_config(&self.opts.config, api).with_environment(&self.environment);
        self.notify(NotifyInput::Config(Box::new(targets)));
        if self.pool.size() != self.opts.blocking_threads() {
            // Runs in flight keep the old pool; new runs get the new one.
            self.pool = BlockingPool::new(self.opts.blocking_threads());
            self.watch_pool();
        }
        self.admission.set_limits(self.opts.max_concurrent_runs(), self.opts.semaphores());
        let released = self.admission.start_waiting();
        self.start_released(released);
        tracing::info!(
            max_concurrent_runs = self.opts.max_concurrent_runs(),
            blocking_threads = self.pool.size(),
            "config reloaded"
        );
    }

    /// SIGTERM: stop firing, let runs finish for up to `shutdown_grace`, then
    /// cancel what is left and wait for it to wind down; then write the last
    /// of the history.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.systemd.stopping();
        self.stopping = true;
        self.stopping_token.cancel();
        // No more fires: every entry's timer goes with its key in `timers`
        // (the status line, reported as each run ends, checks they agree).
        self.timers.clear();
        for entry in self.table.values_mut() {
            entry.timer = None;
        }
        // Queued runs never start: recorded cancelled, as not started (a
        // one-shot's version runs at the next start).
        let dropped = self.drop_queued(|_| true, QUEUED_AT_STOP_ERROR);
        let grace = self.opts.config.shutdown_grace();
        tracing::info!(runs = self.runs.len(), dropped, grace = %humantime::format_duration(grace), "stopping: letting runs in flight finish");
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        let mut cancelled = false;
        while !self.runs.is_empty() {
            tokio::select! {
                Some(ended) = self.runs.join_next_with_id() => self.on_run_end(ended),
                () = &mut deadline, if !cancelled => {
                    tracing::warn!(runs = self.runs.len(), "the shutdown grace is over; cancelling the runs still going");
                    self.shutdown.cancel();
                    cancelled = true;
                }
                () = tick(self.watchdog.as_mut()) => self.systemd.watchdog(),
            }
        }
        // The records of the groups just reaped are removed (a short wait).
        crate::exec::step::settle_process_records().await;
        // Pauses and paused fires still being saved.
        while self.chores.join_next().await.is_some() {}
        // The notifier sends what the last runs told, within its drain.
        if let Some((handle, task)) = self.notifier.take() {
            drop(handle);
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "the notifier's task failed");
            }
        }
        // No more heartbeats; then the node is `stopped` (after its runs'
        // ends are written), so no other node takes it over.
        if let Some(heartbeats) = self.heartbeats.take() {
            heartbeats.stop().await;
            // The heartbeat task's id: it may have rejoined under a new one
            // the loop has not heard of yet.
            let node = self.fleet_node.as_ref().map_or_else(|| self.node.clone(), |n| n.id());
            if let Err(e) = self.store.node_stopped(&node).await {
                tracing::warn!(node = %node, error = %e, "cannot mark this node stopped in the fleet's history");
            }
        }
        tracing::info!("stopped");
        anyhow::Context::context(self.store.close().await, "cannot write the last of the run history")
    }
}

/// The next message of `rx`, or never when there is none.
async fn recv_or_pending<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The heartbeat task's next note, or never without one.
async fn recv_fleet(heartbeats: Option<&mut super::fleet::Heartbeats>) -> Option<super::fleet::FleetNote> {
    match heartbeats {
        Some(h) => h.notes.recv().await,
        None => std::future::pending().await,
    }
}

/// Until `at`, or never when it is `None`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The canonical jobs folder when the daemon confines symlinks to it (it
/// runs as root), for [`table::read`]; blocking.
fn confinement(root: &std::path::Path) -> Option<PathBuf> {
    if crate::load::daemon_confines_links() { std::fs::canonicalize(root).ok() } else { None }
}

/// The watchdog's next tick, or never when systemd does not watch us.
async fn tick(watchdog: Option<&mut tokio::time::Interval>) {
    match watchdog {
        Some(w) => {
            w.tick().await;
        }
        None => std::future::pending().await,
    }
}
