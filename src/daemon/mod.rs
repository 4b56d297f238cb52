//! The supervisor: `gatherd daemon`. It keeps the job table (one row per job
//! file), turns file events and timers into fires, decides overlap and
//! admission, starts runs through the executor, and handles signals and
//! systemd.
//!
//! Everything happens on one task, in one `select!` loop, over state that only
//! that loop touches: file events (from `crate::watch`), timers (a
//! `DelayQueue` of scheduled fires), ends of runs (a `JoinSet` that owns every
//! run), signals and the watchdog. Nothing in it polls: when no timer is due and
//! no file changes, the process sleeps.
//!
//! Architecture Invariant: a job file's problem is the job's problem. An
//! invalid file is logged (file:line:col) and skipped; its last valid version
//! keeps its schedule; a failing run is logged; nothing a job does stops the
//! daemon or disturbs other jobs.
//!
//! Architecture Invariant: every run is owned by the supervisor's `JoinSet` and
//! holds a child of the shutdown token, so shutdown can wait for all of them.

pub mod admit;
mod catch_up;
mod control;
mod log_sink;
mod systemd;
mod table;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use futures::StreamExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use self::admit::Admission;
use self::control::{Command, DaemonControl, Live, LiveRun};
use self::log_sink::RunLog;
use self::systemd::Systemd;
use self::table::{Entry, Loaded, Running};
use crate::api::{ApiConfig, ControlError, JobView, Metrics};
use crate::config::Config;
use crate::exec::{self, BlockingPool, Limits, RunContext, RunOutcome};
use crate::job::{Overlap, Trigger};
use crate::schedule::{Schedule, stable_jitter};
use crate::store::{self, JobKind, JobRecord, Missed, RecordedStatus, RunStart, RunStore, RunTrigger};
use crate::watch::{JobFileEvent, JobId, Watcher};

/// How the daemon was asked to run: the config file and the flags that win
/// over it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The folder of job files.
    pub jobs: PathBuf,
    /// Where state lives (created if missing).
    pub state: PathBuf,
    /// The config file, re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// The config as read at start.
    pub config: Config,
    /// `--blocking-threads`, winning over the config.
    pub blocking_threads: Option<usize>,
    /// `--max-concurrent-runs`, winning over the config.
    pub max_concurrent_runs: Option<usize>,
    /// `--api-listen`, winning over the config.
    pub api_listen: Option<std::net::SocketAddr>,
}

impl Options {
    fn blocking_threads(&self) -> usize {
        self.blocking_threads.unwrap_or_else(|| self.config.blocking_threads())
    }

    fn max_concurrent_runs(&self) -> usize {
        self.max_concurrent_runs.unwrap_or_else(|| self.config.max_concurrent_runs())
    }

    fn semaphores(&self) -> Vec<(String, usize)> {
        self.config.semaphores.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// A run that is due: which job, why, and its nominal time.
#[derive(Debug)]
struct Fire {
    job: JobId,
    cause: RunTrigger,
    due: chrono::DateTime<Utc>,
    /// Who asked for it (a manual trigger) and waits for its run id.
    reply: Option<tokio::sync::oneshot::Sender<Result<store::RunId, ControlError>>>,
}

/// A run that ended.
struct Done {
    job: JobId,
    /// The supervisor's own number for the run (the store's id may be missing).
    seq: u64,
    semaphore: Option<String>,
    outcome: RunOutcome,
}

/// The debounce of file events. A close-after-write or a rename-into already
/// says the file is complete, so the watcher reports it at once; the debounce
/// only folds what follows for the same path (an editor's second write) into
/// one report once the path has been quiet this long. A duplicate would be
/// harmless anyway (the content hash tells an unchanged file), so it is short.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// The most file events handled (their files read in one blocking call) in
/// one turn of the loop, so timers, commands and ends of runs are not held
/// up for long by a burst.
const FILE_BATCH: usize = 256;

/// Runs the daemon until SIGTERM or SIGINT; returns after every run has ended.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    if !opts.jobs.is_dir() {
        bail!("the jobs folder {} does not exist or is not a folder", opts.jobs.display());
    }
    std::fs::create_dir_all(&opts.state)
        .with_context(|| format!("cannot create the state folder {}", opts.state.display()))?;
    let _lock = lock_state(&opts.state)?;
    let db = opts.state.join(store::DB_FILE);
    let store: Arc<dyn RunStore> =
        Arc::new(store::open_sqlite(&db).await.with_context(|| format!("cannot open the run store {}", db.display()))?);
    let node = opts.config.node();
    let reason = "the daemon stopped while it ran (crash, kill -9 or power loss); it was not retried";
    for run in store.recover(&node, reason).await.context("cannot recover runs left running")? {
        tracing::warn!(job = %run.job, run_id = run.id, started_at = %run.started_at, "run interrupted: {reason}");
    }
    let (watcher, file_events) = Watcher::start(&opts.jobs, DEBOUNCE)
        .with_context(|| format!("cannot watch the jobs folder {}", opts.jobs.display()))?;
    let mut file_events = Some(file_events);
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;

    let api_config = ApiConfig {
        listen: opts.api_listen.unwrap_or_else(|| opts.config.api_listen()),
        token: opts.config.api_token.clone(),
        max_body: 64 * 1024,
    };
    crate::api::check(&api_config).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(api_config.listen)
        .await
        .with_context(|| format!("cannot listen on {} for the control API (api_listen)", api_config.listen))?;
    let api_addr = listener.local_addr().context("the control API's address")?;

    let mut sup = Supervisor::new(opts, store, node);
    sup.watch_pool();
    let (commands_tx, mut commands) = tokio::sync::mpsc::channel(64);
    let control = Arc::new(DaemonControl { commands: commands_tx, live: sup.live.clone() });
    let api_stop = CancellationToken::new();
    // Owned here and awaited at shutdown.
    let api = tokio::spawn(crate::api::serve(
        listener,
        api_config,
        control,
        sup.store.clone(),
        sup.metrics.clone(),
        api_stop.clone(),
    ));
    tracing::info!(addr = %api_addr, "control API listening");
    tracing::info!(jobs = %sup.opts.jobs.display(), state = %sup.opts.state.display(), "gatherd daemon starting");
    sup.rescan().await;
    sup.started = true;
    sup.systemd.ready(&sup.status_line());
    tracing::info!(jobs = sup.table.len(), "ready");

    let systemd = sup.systemd;
    let mut watchdog = systemd.watchdog_interval().map(tokio::time::interval);
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => sup.reload().await,
            event = async { match file_events.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => match event {
                Some(event) => {
                    // With those already waiting: a burst is read in batches.
                    let mut events = vec![event];
                    while events.len() < FILE_BATCH
                        && let Some(event) = file_events.as_mut().and_then(|rx| rx.try_recv().ok())
                    {
                        events.push(event);
                    }
                    sup.on_file_events(events).await;
                }
                None => {
                    // Scheduled jobs go on; new files are found on SIGHUP.
                    tracing::error!("the folder watcher stopped: file changes are no longer seen until a reload (SIGHUP)");
                    file_events = None;
                }
            },
            Some(expired) = sup.timers.next() => sup.on_timer(expired.into_inner()),
            Some(command) = commands.recv() => sup.on_command(command),
            Some(done) = sup.runs.join_next() => match done {
                Ok(done) => sup.on_done(done),
                Err(e) => tracing::error!("a run's task failed: {e}"),
            },
            _ = async { match watchdog.as_mut() { Some(w) => { w.tick().await; } None => std::future::pending().await } } => {
                systemd.watchdog();
            }
        }
    }
    drop(watcher);
    // The API goes first: nothing would answer its requests any more.
    api_stop.cancel();
    match api.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("the control API stopped with an error: {e}"),
        Err(e) => tracing::warn!("the control API's task failed: {e}"),
    }
    let store = sup.store.clone();
    sup.shutdown(watchdog).await;
    store.close().await.context("cannot write the last of the run history")?;
    Ok(())
}

/// Takes an exclusive lock on the state folder, so two daemons never share it.
fn lock_state(state: &std::path::Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = state.join("gatherd.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!(
            "another gatherd daemon uses the state folder {} ({}): stop it or pass another --state",
            state.display(),
            e.desc()
        )
    })
}

struct Supervisor {
    opts: Options,
    pool: BlockingPool,
    table: BTreeMap<JobId, Entry>,
    timers: DelayQueue<JobId>,
    admission: Admission<Fire>,
    runs: JoinSet<Done>,
    /// Parent of every run's token.
    shutdown: CancellationToken,
    next_seq: u64,
    systemd: Systemd,
    /// Run history.
    store: Arc<dyn RunStore>,
    /// This daemon's name in the store.
    node: String,
    /// Live event streams of runs in flight, for the API.
    live: Live,
    /// Prometheus metrics, fed by every run.
    metrics: Arc<Metrics>,
    /// How many entries of `table` are invalid (kept as a count so the status
    /// reported after every event does not walk the table).
    invalid_jobs: usize,
    /// Whether the start-up scan is done. Before it, a job file's history
    /// decides (a one-shot that ran is not re-run; missed fires are caught
    /// up); a file that appears later is new and runs as such.
    started: bool,
}

impl Supervisor {
    fn new(opts: Options, store: Arc<dyn RunStore>, node: String) -> Supervisor {
        Supervisor {
            store,
            node,
            started: false,
            live: Live::default(),
            metrics: Arc::new(Metrics::new()),
            pool: BlockingPool::new(opts.blocking_threads()),
            admission: Admission::new(opts.max_concurrent_runs(), opts.semaphores()),
            opts,
            table: BTreeMap::new(),
            timers: DelayQueue::new(),
            runs: JoinSet::new(),
            shutdown: CancellationToken::new(),
            next_seq: 0,
            systemd: Systemd,
            invalid_jobs: 0,
        }
    }

    /// Lets the metrics read the blocking pool's busy threads at each scrape.
    fn watch_pool(&self) {
        let pool = self.pool.clone();
        self.metrics.read_pool_busy_from(move || i64::try_from(pool.busy()).unwrap_or(i64::MAX));
    }

    /// The one-line status; O(1), as it is reported after every event.
    fn status_line(&self) -> String {
        debug_assert_eq!(self.invalid_jobs, self.table.values().filter(|e| e.invalid.is_some()).count());
        // Every entry with a timer has its one key in `timers`.
        debug_assert_eq!(self.timers.len(), self.table.values().filter(|e| e.timer.is_some()).count());
        format!(
            "{} jobs ({} scheduled, {} invalid); {} runs in flight, {} waiting",
            self.table.len(),
            self.timers.len(),
            self.invalid_jobs,
            self.admission.running(),
            self.admission.waiting()
        )
    }

    fn report_status(&self) {
        self.systemd.status(&self.status_line());
        self.metrics.set_invalid_jobs(self.invalid_jobs);
    }

    /// Reads every job file again and applies what changed: the start-up scan,
    /// SIGHUP, and the answer to lost events.
    async fn rescan(&mut self) {
        let root = self.opts.jobs.clone();
        let found = tokio::task::spawn_blocking(move || -> Result<Vec<(JobId, std::io::Result<Loaded>)>, String> {
            let ids = crate::watch::scan(&root).map_err(|e| e.to_string())?;
            Ok(ids.into_iter().map(|id| (id.clone(), table::read(&id.path(&root)))).collect())
        })
        .await;
        let found = match found {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => return tracing::error!("cannot scan the jobs folder: {e}"),
            Err(e) => return tracing::error!("the scan of the jobs folder failed: {e}"),
        };
        let present: std::collections::HashSet<JobId> = found.iter().map(|(id, _)| id.clone()).collect();
        let gone: Vec<JobId> = self.table.keys().filter(|id| !present.contains(*id)).cloned().collect();
        for id in gone {
            self.remove(&id);
        }
        for (id, loaded) in found {
            match loaded {
                Ok(loaded) => self.apply(id, loaded).await,
                Err(e) => tracing::warn!(job = %id, "cannot read the job file: {e}"),
            }
        }
        self.report_status();
    }

    /// File events, in the order the watcher sent them. The files of
    /// consecutive `Changed` events are read in one blocking call.
    async fn on_file_events(&mut self, events: Vec<JobFileEvent>) {
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
                    tracing::warn!("file events may have been lost ({reason}); rescanning the jobs folder");
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
            ids.into_iter()
                .map(|id| {
                    let loaded = table::read(&id.path(&root));
                    (id, loaded)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let found = match read {
            Ok(found) => found,
            Err(e) => return tracing::error!(files = count, "reading job files failed: {e}"),
        };
        for (id, loaded) in found {
            match loaded {
                Ok(loaded) => self.apply(id, loaded).await,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.remove(&id),
                Err(e) => tracing::warn!(job = %id, "cannot read the job file: {e}"),
            }
        }
    }

    /// A job file was read: take the new version (or report why not) and
    /// (re)schedule it.
    async fn apply(&mut self, id: JobId, loaded: Loaded) {
        let entry = self.table.entry(id.clone()).or_default();
        if entry.hash == Some(loaded.hash) {
            return; // Saved again, unchanged.
        }
        entry.hash = Some(loaded.hash);
        let record = JobRecord {
            job: id.to_string(),
            kind: if id.as_str().ends_with(".rhai") { JobKind::Rhai } else { JobKind::Toml },
            content_hash: loaded.hash,
            valid: loaded.job.is_ok(),
            diagnostic: loaded.job.as_ref().err().map(ToString::to_string),
        };
        self.store.record_job(record);
        let entry = self.table.entry(id.clone()).or_default();
        let job = match loaded.job {
            Ok(job) => job,
            Err(e) => {
                for d in e.diagnostics() {
                    tracing::warn!(job = %id, "invalid job file: {}", d.one_line());
                }
                if entry.job.is_some() {
                    tracing::warn!(job = %id, "keeping the last valid version until the file is fixed or removed");
                }
                if entry.invalid.replace(e).is_none() {
                    self.invalid_jobs += 1;
                }
                return;
            }
        };
        let was_invalid = entry.invalid.take().is_some();
        if was_invalid {
            self.invalid_jobs -= 1;
        }
        let first_version = entry.job.is_none();
        let same_timing = entry.job.as_ref().is_some_and(|old| old.trigger == job.trigger && old.jitter == job.jitter);
        tracing::info!(job = %id, trigger = %describe(&job.trigger), fixed = was_invalid, "job loaded");
        entry.job = Some(Arc::new(job));
        entry.valid_hash = Some(loaded.hash);
        let trigger = entry.job.as_ref().map(|j| j.trigger.clone()).unwrap_or(Trigger::OnChange);
        match trigger {
            Trigger::OnChange => {
                self.cancel_timer(&id);
                let entry = self.table.entry(id.clone()).or_default();
                if entry.last_run_hash == entry.hash {
                    return;
                }
                entry.last_run_hash = entry.hash;
                if self.started {
                    // Appeared (again) while the daemon runs: run it.
                    self.fire(id, RunTrigger::File, Utc::now());
                    return;
                }
                // At start, a version that ran before the restart does not run again.
                match self.store.one_shot_status(id.as_str(), &loaded.hash).await {
                    Ok(Some(RecordedStatus::Interrupted)) => tracing::warn!(
                        job = %id,
                        "this version's run was interrupted when the daemon stopped; not retried (save a new version to run it)"
                    ),
                    Ok(Some(_)) => {
                        tracing::info!(job = %id, "this version already ran to the end; not running it again")
                    }
                    Ok(None) => self.fire(id, RunTrigger::File, Utc::now()),
                    Err(e) => {
                        tracing::error!(job = %id, "cannot ask the store whether this version ran: {e}; running it");
                        self.fire(id, RunTrigger::File, Utc::now());
                    }
                }
            }
            _ if same_timing && self.table.get(&id).is_some_and(|e| e.timer.is_some()) => {}
            trigger => {
                // A job the store saw fire before the daemon stopped continues
                // from its last fire: `every` keeps its grid, and the fires
                // missed in between are caught up or recorded missed.
                let last = if first_version && !self.started {
                    self.store.last_fire(id.as_str()).await.unwrap_or_else(|e| {
                        tracing::error!(job = %id, "cannot read the job's last fire from the store: {e}");
                        None
                    })
                } else {
                    None
                };
                match Schedule::new(&trigger, last.unwrap_or_else(Utc::now)) {
                    Ok(Some(schedule)) => {
                        if let Some(last) = last {
                            self.catch_up(&id, &schedule, last).await;
                        }
                        let entry = self.table.entry(id.clone()).or_default();
                        entry.schedule = Some(schedule);
                        entry.slot = None;
                        self.schedule_next(&id);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(job = %id, "cannot schedule the job: {e}"),
                }
            }
        }
    }

    /// At start: records the fires missed since `last` and runs the ones the
    /// job's `catch_up` asks for, one after another.
    async fn catch_up(&mut self, id: &JobId, schedule: &Schedule, last: chrono::DateTime<Utc>) {
        let Some(entry) = self.table.get_mut(id) else { return };
        let (Some(job), Some(hash)) = (entry.job.clone(), entry.valid_hash) else { return };
        let plan = catch_up::plan(schedule, last, Utc::now(), job.catch_up, job.catch_up_window);
        let cause = match job.trigger {
            Trigger::Cron { .. } => RunTrigger::Schedule,
            _ => RunTrigger::Interval,
        };
        if let (Some(first), Some(latest)) = (plan.missed.first(), plan.missed.last()) {
            tracing::warn!(job = %id, count = plan.missed.len(), first = %first, last = %latest, more = plan.uncounted, "fires missed while the daemon was down; recorded as missed");
            let missed = Missed {
                job: id.to_string(),
                trigger: cause,
                fire_times: plan.missed,
                content_hash: hash,
                node: self.node.clone(),
            };
            if let Err(e) = self.store.record_missed(missed).await {
                tracing::error!(job = %id, "cannot record the missed fires: {e}");
            }
        }
        if plan.run.is_empty() {
            return;
        }
        tracing::info!(job = %id, count = plan.run.len(), policy = ?job.catch_up, "catching up missed fires");
        let mut queue: std::collections::VecDeque<_> = plan.run.into();
        let first = queue.pop_front();
        entry.catch_up = queue;
        entry.catch_up_cause = Some(cause);
        if let Some(due) = first {
            self.fire(id.clone(), cause, due);
        }
    }

    fn cancel_timer(&mut self, id: &JobId) {
        if let Some(entry) = self.table.get_mut(id) {
            if let Some(key) = entry.timer.take() {
                self.timers.remove(&key);
            }
            entry.schedule = None;
            entry.slot = None;
        }
    }

    /// Sets the job's timer for its next slot after the last one (or now).
    fn schedule_next(&mut self, id: &JobId) {
        let Some(entry) = self.table.get_mut(id) else { return };
        let (Some(schedule), Some(job)) = (&entry.schedule, &entry.job) else { return };
        let now = Utc::now();
        let jitter = job.jitter.map_or(Duration::ZERO, |max| stable_jitter(id.as_str(), max));
        // The next slot after the last one, so an interval never drifts; but
        // when the daemon fell behind (busy, suspended), the next one after now.
        let after = entry.slot.unwrap_or(now);
        let mut next = schedule.next_after(after);
        if let Some(n) = next
            && n + jitter < now
        {
            tracing::warn!(job = %id, missed_since = %n, "fell behind the schedule; skipping to the next slot");
            next = schedule.next_after(now);
        }
        if let Some(key) = entry.timer.take() {
            self.timers.remove(&key);
        }
        entry.slot = next;
        if let Some(slot) = next {
            let due = slot + jitter;
            let delay = (due - now).to_std().unwrap_or(Duration::ZERO);
            entry.timer = Some(self.timers.insert(id.clone(), delay));
            tracing::debug!(job = %id, next = %due, "scheduled");
        }
    }

    fn on_timer(&mut self, id: JobId) {
        let (cause, due) = match self.table.get_mut(&id) {
            Some(entry) => {
                entry.timer = None;
                let cause = match entry.job.as_ref().map(|j| &j.trigger) {
                    Some(Trigger::Cron { .. }) => RunTrigger::Schedule,
                    _ => RunTrigger::Interval,
                };
                (cause, entry.slot.unwrap_or_else(Utc::now))
            }
            None => return,
        };
        self.fire(id.clone(), cause, due);
        self.schedule_next(&id);
        self.report_status();
    }

    /// A run of `id` is due: apply its overlap policy, then admission.
    fn fire(&mut self, id: JobId, cause: RunTrigger, due: chrono::DateTime<Utc>) {
        self.fire_for(id, cause, due, None);
    }

    /// [`Supervisor::fire`], answering `reply` (a manual trigger) with the run's
    /// id once it starts, or why it does not.
    fn fire_for(
        &mut self,
        id: JobId,
        cause: RunTrigger,
        due: chrono::DateTime<Utc>,
        reply: Option<tokio::sync::oneshot::Sender<Result<store::RunId, ControlError>>>,
    ) {
        let refuse = |reply: Option<tokio::sync::oneshot::Sender<_>>, why: ControlError| {
            if let Some(reply) = reply {
                let _ = reply.send(Err(why));
            }
        };
        let Some(entry) = self.table.get_mut(&id) else {
            return refuse(reply, ControlError::NoSuchJob(id.to_string()));
        };
        let Some(job) = entry.job.clone() else { return refuse(reply, ControlError::NotRunnable(id.to_string())) };
        if self.shutdown.is_cancelled() {
            return refuse(reply, ControlError::Stopping);
        }
        debug_assert_eq!(entry.waiting > 0, self.admission.is_waiting(|f| f.job == id));
        let busy = !entry.running.is_empty() || entry.waiting > 0;
        if busy {
            match job.overlap {
                Overlap::Skip => {
                    tracing::info!(job = %id, cause = cause.as_str(), "skipped: the last run is still going (overlap = \"skip\")");
                    return refuse(
                        reply,
                        ControlError::NotStarted("the last run is still going (overlap = \"skip\")".into()),
                    );
                }
                Overlap::Queue => {
                    if entry.queued.is_some() {
                        tracing::info!(job = %id, cause = cause.as_str(), "skipped: a run already waits for the last one (overlap = \"queue\")");
                        return refuse(
                            reply,
                            ControlError::NotStarted("a run already waits (overlap = \"queue\")".into()),
                        );
                    }
                    tracing::info!(job = %id, cause = cause.as_str(), "queued behind the running one (overlap = \"queue\")");
                    entry.queued = Some((cause, due));
                    return refuse(
                        reply,
                        ControlError::NotStarted(
                            "queued: it starts when the running one ends (overlap = \"queue\")".into(),
                        ),
                    );
                }
                Overlap::Replace => {
                    tracing::info!(job = %id, cause = cause.as_str(), "cancelling the running one (overlap = \"replace\")");
                    for r in &entry.running {
                        r.cancel.cancel();
                    }
                    self.admission.forget(|f| f.job == id);
                    entry.waiting = 0;
                }
                Overlap::Allow => {}
            }
        }
        let fire = Fire { job: id.clone(), cause, due, reply };
        match self.admission.admit(job.semaphore.as_deref(), fire) {
            Some(fire) => self.start(fire),
            None => {
                tracing::info!(job = %id, semaphore = job.semaphore.as_deref().unwrap_or(""), "waiting for a free slot");
                if let Some(entry) = self.table.get_mut(&id) {
                    entry.waiting += 1;
                }
            }
        }
    }

    /// Starts runs that waited in admission and now hold their slots.
    fn start_released(&mut self, fires: Vec<Fire>) {
        for fire in fires {
            if let Some(entry) = self.table.get_mut(&fire.job) {
                entry.waiting = entry.waiting.saturating_sub(1);
            }
            self.start(fire);
        }
    }

    /// Starts a run that holds its admission slot.
    fn start(&mut self, fire: Fire) {
        let version = self.table.get(&fire.job).and_then(|e| e.job.clone().zip(e.valid_hash));
        let Some((job, content_hash)) = version else {
            // The file went away while the run waited: give the slot back.
            if let Some(reply) = fire.reply {
                let _ = reply.send(Err(ControlError::NoSuchJob(fire.job.to_string())));
            }
            let released = self.admission.release(None);
            self.start_released(released);
            return;
        };
        self.next_seq += 1;
        let seq = self.next_seq;
        let cancel = self.shutdown.child_token();
        let store_id = Arc::new(std::sync::OnceLock::new());
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(entry) = self.table.get_mut(&fire.job) {
            entry.running.push(Running { seq, cancel: cancel.clone(), run_id: store_id.clone(), ended: ended.clone() });
        }
        let live = self.live.clone();
        let metrics = self.metrics.clone();
        let reply = fire.reply;
        let ctx = RunContext {
            cancel,
            pool: self.pool.clone(),
            limits: Limits::default(),
            script_limits: self.opts.config.script_limits(),
        };
        let semaphore = job.semaphore.clone();
        let keep_runs = job.keep_runs.or(self.opts.config.keep_runs);
        let keep_for = job.keep_for.or(self.opts.config.keep_for);
        let store = self.store.clone();
        let start = RunStart {
            job: fire.job.to_string(),
            trigger: fire.cause,
            fire_time: fire.due,
            content_hash,
            node: self.node.clone(),
        };
        let id = fire.job;
        self.runs.spawn(async move {
            // The run's id is the store's; without a store row the run still
            // runs (and is logged), it just is not in the history.
            let run_id = match store.begin_run(start).await {
                Ok(run_id) => Some(run_id),
                Err(e) => {
                    tracing::error!(job = %id, "cannot record the run in the store: {e}");
                    None
                }
            };
            if let Some(run_id) = run_id {
                let _ = store_id.set(run_id);
            }
            if let Some(reply) = reply {
                let _ = reply
                    .send(run_id.ok_or_else(|| ControlError::NotStarted("the run store failed; see the log".into())));
            }
            let log = RunLog { job: id.to_string(), run_id: run_id.unwrap_or(-1), cause: fire.cause };
            let recorder = store.recorder();
            // Live subscribers (server-sent events) of this run; the channel
            // itself is made by the first subscriber.
            let broadcast = run_id.map(|run_id| {
                let slot = LiveRun::default();
                live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(run_id, slot.clone());
                slot
            });
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            // The run's sinks — the log, the store, metrics and live
            // subscribers — fed from one stream.
            let sinks = async {
                while let Some(event) = rx.recv().await {
                    if matches!(event, exec::RunEvent::RunFinished { .. }) {
                        ended.store(true, std::sync::atomic::Ordering::Release);
                    }
                    log.event(&event);
                    observe(&metrics, id.as_str(), &event);
                    if let Some(b) = broadcast.as_ref().and_then(|b| b.get()).filter(|b| b.receiver_count() > 0) {
                        let _ = b.send(event.clone());
                    }
                    if let Some(run_id) = run_id {
                        recorder.record(run_id, event);
                    }
                }
            };
            let (outcome, ()) = tokio::join!(exec::run(job, ctx, tx), sinks);
            if let Some(run_id) = run_id {
                live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&run_id);
            }
            // Retention, after this run is written: the job's oldest runs go.
            if run_id.is_some() && (keep_runs.is_some() || keep_for.is_some()) {
                let pruned = match recorder.flush().await {
                    Ok(()) => store.prune(id.as_str(), keep_runs, keep_for).await,
                    Err(e) => Err(e),
                };
                match pruned {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(job = %id, pruned = n, "old runs pruned"),
                    Err(e) => tracing::warn!(job = %id, "cannot prune old runs: {e}"),
                }
            }
            Done { job: id, seq, semaphore, outcome }
        });
    }

    /// A request from the control API.
    fn on_command(&mut self, command: Command) {
        match command {
            Command::Jobs(reply) => {
                let views = self
                    .table
                    .iter()
                    .map(|(id, e)| JobView {
                        job: id.to_string(),
                        trigger: e.job.as_ref().map_or_else(|| "none".to_string(), |j| describe(&j.trigger)),
                        next_fire: e.slot,
                        valid: e.invalid.is_none(),
                        diagnostic: e.invalid.as_ref().map(ToString::to_string),
                        runnable: e.job.is_some(),
                        running: e.running.iter().filter_map(|r| r.run_id.get().copied()).collect(),
                    })
                    .collect();
                let _ = reply.send(views);
            }
            Command::Trigger(job, reply) => match self.table.keys().find(|k| k.as_str() == job).cloned() {
                Some(id) => {
                    tracing::info!(job = %id, "triggered through the control API");
                    self.fire_for(id, RunTrigger::Manual, Utc::now(), Some(reply));
                }
                None => {
                    let _ = reply.send(Err(ControlError::NoSuchJob(job)));
                }
            },
            Command::Cancel(run, reply) => {
                let found = self
                    .table
                    .values()
                    .flat_map(|e| &e.running)
                    .find(|r| r.run_id.get() == Some(&run))
                    .filter(|r| !r.ended.load(std::sync::atomic::Ordering::Acquire));
                let answer = match found {
                    Some(r) => {
                        tracing::info!(run_id = run, "cancelled through the control API");
                        r.cancel.cancel();
                        Ok(())
                    }
                    None => Err(ControlError::NotRunning(run)),
                };
                let _ = reply.send(answer);
            }
        }
    }

    fn on_done(&mut self, done: Done) {
        tracing::debug!(job = %done.job, seq = done.seq, status = %done.outcome.status, "run ended");
        let mut queued = None;
        if let Some(entry) = self.table.get_mut(&done.job) {
            entry.running.retain(|r| r.seq != done.seq);
            if entry.running.is_empty() {
                queued = entry.queued.take();
            }
        }
        let released = self.admission.release(done.semaphore.as_deref());
        self.start_released(released);
        if let Some((cause, due)) = queued {
            self.fire(done.job.clone(), cause, due);
        }
        // Caught-up fires run one after another.
        let next_catch_up = self
            .table
            .get_mut(&done.job)
            .filter(|e| e.running.is_empty())
            .and_then(|e| Some((e.catch_up.pop_front()?, e.catch_up_cause?)));
        if let Some((due, cause)) = next_catch_up {
            self.fire(done.job, cause, due);
        }
        self.report_status();
    }

    /// The job file is gone: unschedule it and cancel its runs.
    fn remove(&mut self, id: &JobId) {
        self.cancel_timer(id);
        let Some(entry) = self.table.remove(id) else { return };
        if entry.invalid.is_some() {
            self.invalid_jobs -= 1;
        }
        let waiting = self.admission.forget(|f| &f.job == id);
        if !entry.running.is_empty() {
            tracing::info!(job = %id, runs = entry.running.len(), "job file removed; cancelling its runs");
        } else {
            tracing::info!(job = %id, "job file removed");
        }
        for r in entry.running {
            r.cancel.cancel();
        }
        if !waiting.is_empty() {
            tracing::info!(job = %id, "dropped {} waiting runs", waiting.len());
        }
    }

    /// SIGHUP: re-read the config (keeping the old one if the new one is
    /// invalid) and rescan the folder.
    async fn reload(&mut self) {
        self.systemd.reloading();
        tracing::info!("reloading (SIGHUP)");
        if let Some(path) = self.opts.config_path.clone() {
            let read = tokio::task::spawn_blocking(move || Config::load(&path)).await;
            match read {
                Ok(Ok(config)) => {
                    self.opts.config = config;
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
                Ok(Err(e)) => tracing::error!("keeping the old config: {e}"),
                Err(e) => tracing::error!("keeping the old config: reading it failed: {e}"),
            }
        }
        self.rescan().await;
        self.systemd.ready(&self.status_line());
    }

    /// SIGTERM: stop firing, let runs finish for up to `shutdown_grace`, then
    /// cancel what is left and wait for it to wind down.
    async fn shutdown(mut self, mut watchdog: Option<tokio::time::Interval>) {
        self.systemd.stopping();
        self.timers.clear();
        let dropped = self.admission.forget(|_| true).len();
        let grace = self.opts.config.shutdown_grace();
        tracing::info!(runs = self.runs.len(), dropped, grace = %humantime::format_duration(grace), "stopping: letting runs in flight finish");
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        let mut cancelled = false;
        while !self.runs.is_empty() {
            tokio::select! {
                Some(done) = self.runs.join_next() => {
                    if let Ok(done) = done {
                        tracing::debug!(job = %done.job, seq = done.seq, "run ended during shutdown");
                    }
                }
                () = &mut deadline, if !cancelled => {
                    tracing::warn!(runs = self.runs.len(), "the shutdown grace is over; cancelling the runs still going");
                    self.shutdown.cancel();
                    cancelled = true;
                }
                _ = async { match watchdog.as_mut() { Some(w) => { w.tick().await; } None => std::future::pending().await } } => {
                    self.systemd.watchdog();
                }
            }
        }
        tracing::info!("stopped");
    }
}

/// The metrics sink: what one event of a run changes in the counters.
fn observe(metrics: &Metrics, job: &str, event: &exec::RunEvent) {
    match event {
        exec::RunEvent::RunStarted { .. } => metrics.run_started(job),
        exec::RunEvent::NodeFinished { kind, started: Some(started), at, .. } if !kind.is_group() => {
            metrics.step_finished(kind.as_str(), at.saturating_sub(*started));
        }
        exec::RunEvent::RunFinished { status, duration, .. } => metrics.run_finished(job, status.as_str(), *duration),
        _ => {}
    }
}

fn describe(trigger: &Trigger) -> String {
    match trigger {
        Trigger::OnChange => "on change".to_string(),
        Trigger::Cron { expr, timezone } => match timezone {
            Some(tz) => format!("schedule {expr} ({tz})"),
            None => format!("schedule {expr}"),
        },
        Trigger::Every(d) => format!("every {}", humantime::format_duration(*d)),
    }
}
