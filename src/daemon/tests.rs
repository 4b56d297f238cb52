//! The supervisor's decisions, driven by hand on tokio's paused clock: no
//! signals, no API server, no watcher — a real job folder and a real run
//! history in a temp folder, file events and commands handed to the
//! handlers, and each run's end awaited from the `JoinSet` and handed to
//! `on_run_end` as the loop would. A job that sleeps an hour holds its run in
//! flight for as long as a test needs it; nothing waits on real time.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::control::Command;
use super::supervisor::{CANCELLED_WHILE_QUEUED, REMOVED_WHILE_QUEUED, Supervisor};
use super::{Options, table};
use crate::api::{ControlError, JobView, Started};
use crate::config::Config;
use crate::exec::Status;
use futures::future::BoxFuture;

use crate::store::{
    ClaimKey, JobRecord, Missed, RecordedStatus, Recorder, RunDetail, RunFilter, RunId, RunRow, RunStart, RunStore,
    StoreError,
};

type StoreResult<T> = Result<T, StoreError>;
use crate::watch::{JobFileEvent, JobId};

/// The id of the job file `name` at the top of the jobs folder.
fn id(name: &str) -> JobId {
    JobId::from_path(std::path::Path::new("/jobs"), &std::path::Path::new("/jobs").join(name)).expect("a job file name")
}

/// One hour of sleep: a run that stays in flight until the test ends it.
const LONG: &str = "[[step]]\nname = \"nap\"\nsleep = \"1h\"\n";

struct Harness {
    sup: Supervisor,
    store: Arc<dyn RunStore>,
    /// The same store, for its test hooks.
    sqlite: Arc<crate::store::SqliteStore>,
    jobs: tempfile::TempDir,
    _state: tempfile::TempDir,
}

impl Harness {
    /// A supervisor past its start-up scan, with `config` (TOML) as its config.
    async fn new(config: &str) -> Harness {
        let jobs = tempfile::tempdir().expect("temp folder");
        let state = tempfile::tempdir().expect("temp folder");
        let config = Config::parse(std::path::Path::new("config.toml"), config).expect("a valid test config");
        let sqlite = Arc::new(crate::store::open_sqlite(state.path().join("gatherd.db")).await.expect("store"));
        let store: Arc<dyn RunStore> = sqlite.clone();
        let opts = Options {
            jobs: jobs.path().to_path_buf(),
            state: state.path().to_path_buf(),
            config_path: None,
            config,
            blocking_threads: Some(2),
            max_concurrent_runs: None,
            api_listen: None,
            store: None,
            secrets: Default::default(),
        };
        let mut sup = Supervisor::new(opts, store.clone(), "test-node".into());
        sup.started = true;
        Harness { sup, store, sqlite, jobs, _state: state }
    }

    /// Writes a job file and hands the supervisor its event.
    async fn drop_job(&mut self, name: &str, content: &str) -> JobId {
        std::fs::write(self.jobs.path().join(name), content).expect("write a job file");
        let id = id(name);
        self.sup.on_file_events(vec![JobFileEvent::Changed { id: id.clone() }]).await;
        id
    }

    /// Awaits the next run to end and hands it to the supervisor; returns
    /// its status (`None`: its task failed).
    async fn end_next(&mut self) -> Option<Status> {
        let ended = self.sup.runs.join_next_with_id().await.expect("a run in flight");
        let status = ended.as_ref().ok().map(|(_, outcome)| outcome.status);
        self.sup.on_run_end(ended);
        status
    }

    /// Cancels every run of `id` in flight (as the API would).
    fn cancel_all(&self, id: &JobId) {
        for task in &self.sup.table[id].running {
            self.sup.in_flight[task].cancel.cancel();
        }
    }

    fn running(&self, id: &JobId) -> usize {
        self.sup.table.get(id).map_or(0, |e| e.running.len())
    }

    async fn trigger(&mut self, job: &str) -> Result<RunId, ControlError> {
        self.trigger_started(job).await.map(|started| started.run_id)
    }

    /// A trigger's whole answer: the run's id and state.
    async fn trigger_started(&mut self, job: &str) -> Result<Started, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.sup.on_command(Command::Trigger(job.into(), tx));
        rx.await.expect("the trigger is answered")
    }

    async fn cancel(&mut self, run: RunId) -> Result<(), ControlError> {
        let (tx, rx) = oneshot::channel();
        self.sup.on_command(Command::Cancel(run, tx));
        rx.await.expect("the cancel is answered")
    }

    /// `job`'s runs in the history, oldest first: (status, error).
    async fn history(&self, job: &str) -> Vec<(String, Option<String>)> {
        self.store.recorder().flush().await.expect("flush the history");
        let filter = RunFilter { job: Some(job.into()), ..RunFilter::default() };
        let mut rows = self.store.runs(filter).await.expect("read the history");
        rows.reverse();
        rows.into_iter().map(|r| (r.status.to_string(), r.error)).collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_run_gives_its_slot_back_and_is_recorded_failed() {
    let mut h = Harness::new("max_concurrent_runs = 1\n").await;
    let boom = id("boom.toml");
    h.sup.panic_jobs.insert(boom.clone());
    h.drop_job("boom.toml", LONG).await;
    let next = h.drop_job("next.toml", "[[step]]\nname = \"t\"\nsleep = \"0s\"\n").await;
    assert_eq!((h.sup.admission.running(), h.sup.admission.waiting()), (1, 1));

    assert_eq!(h.end_next().await, None, "the panicking task ends without an outcome");
    assert_eq!(h.running(&boom), 0, "its running entry is gone");
    assert_eq!(h.running(&next), 1, "the slot went to the run that waited");
    assert!(h.sup.in_flight.values().all(|r| r.job == next));
    assert_eq!(h.end_next().await, Some(Status::Succeeded));
    assert_eq!((h.sup.admission.running(), h.sup.admission.waiting()), (0, 0));

    let history = h.history("boom.toml").await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].0, "failed");
    let error = history[0].1.as_deref().unwrap_or_default();
    assert!(error.starts_with("internal error") && error.contains("failpoint"), "{error}");
    assert!(h.sup.live.lock().expect("live").is_empty(), "no live stream is left behind");
}

#[tokio::test(start_paused = true)]
async fn a_skip_job_whose_run_panicked_runs_again() {
    let mut h = Harness::new("").await;
    let boom = id("boom.toml");
    h.sup.panic_jobs.insert(boom.clone());
    h.drop_job("boom.toml", LONG).await;
    assert_eq!(h.end_next().await, None);
    h.sup.panic_jobs.clear();
    let run = h.trigger("boom.toml").await;
    assert!(run.is_ok(), "not skipped forever: {run:?}");
    assert_eq!(h.running(&boom), 1);
}

#[tokio::test(start_paused = true)]
async fn overlap_skip_refuses_a_trigger_while_the_run_goes_on() {
    let mut h = Harness::new("").await;
    let id = h.drop_job("j.toml", LONG).await;
    let refused = h.trigger("j.toml").await;
    assert!(matches!(&refused, Err(ControlError::NotStarted(why)) if why.contains("\"skip\"")), "{refused:?}");
    assert_eq!(h.running(&id), 1);
}

#[tokio::test(start_paused = true)]
async fn overlap_queue_keeps_one_fire_and_starts_it_when_the_run_ends() {
    let mut h = Harness::new("").await;
    let id = h.drop_job("j.toml", &format!("overlap = \"queue\"\n{LONG}")).await;
    let queued = h.trigger("j.toml").await;
    assert!(matches!(&queued, Err(ControlError::NotStarted(why)) if why.starts_with("queued")), "{queued:?}");
    let dropped = h.trigger("j.toml").await;
    assert!(matches!(&dropped, Err(ControlError::NotStarted(why)) if why.contains("already waits")), "{dropped:?}");
    assert!(h.sup.table[&id].queued.is_some());

    h.cancel_all(&id);
    assert_eq!(h.end_next().await, Some(Status::Cancelled));
    assert_eq!(h.running(&id), 1, "the queued fire started when the run ended");
    assert!(h.sup.table[&id].queued.is_none());
}

#[tokio::test(start_paused = true)]
async fn overlap_replace_cancels_the_running_one_and_starts_anew() {
    let mut h = Harness::new("").await;
    let id = h.drop_job("j.toml", &format!("overlap = \"replace\"\n{LONG}")).await;
    let second = h.trigger("j.toml").await;
    assert!(second.is_ok(), "{second:?}");
    assert_eq!(h.running(&id), 2, "the new run starts while the old one winds down");
    assert_eq!(h.end_next().await, Some(Status::Cancelled));
    assert_eq!(h.running(&id), 1);
}

#[tokio::test(start_paused = true)]
async fn overlap_allow_runs_side_by_side() {
    let mut h = Harness::new("").await;
    let id = h.drop_job("j.toml", &format!("overlap = \"allow\"\n{LONG}")).await;
    assert!(h.trigger("j.toml").await.is_ok());
    assert!(h.trigger("j.toml").await.is_ok());
    assert_eq!(h.running(&id), 3);
}

#[tokio::test(start_paused = true)]
async fn a_job_removed_while_its_run_waits_for_a_slot_never_starts() {
    let mut h = Harness::new("max_concurrent_runs = 1\n").await;
    let first = h.drop_job("first.toml", LONG).await;
    let waiting = h.drop_job("waiting.toml", LONG).await;
    assert_eq!(h.sup.admission.waiting(), 1);
    std::fs::remove_file(waiting.path(h.jobs.path())).expect("remove");
    h.sup.on_file_events(vec![JobFileEvent::Removed { id: waiting.clone() }]).await;
    assert_eq!(h.sup.admission.waiting(), 0, "its waiting run is dropped");
    // Its queued run ends at once, recorded as never started.
    assert_eq!(still(h.end_next()).await, Some(Status::Cancelled));
    assert_eq!(h.running(&first), 1);

    h.cancel_all(&first);
    assert_eq!(h.end_next().await, Some(Status::Cancelled));
    assert!(h.sup.runs.is_empty(), "nothing started in its place");
    let history = h.history("waiting.toml").await;
    assert_eq!(history, [("cancelled".to_string(), Some(REMOVED_WHILE_QUEUED.to_string()))]);
}

/// Awaits `f` with the paused clock held still for up to 10 real seconds:
/// while a blocking task is in flight tokio does not advance it, so the
/// timers of runs in flight (an hour's sleep) cannot fire while `f` waits
/// for the history's writer thread.
async fn still<T>(f: impl std::future::Future<Output = T>) -> T {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let hold = tokio::task::spawn_blocking(move || {
        let _ = held.recv_timeout(std::time::Duration::from_secs(10));
    });
    let out = f.await;
    let _ = release.send(());
    hold.await.expect("the clock's hold ends");
    out
}

/// Awaits `rx` (a trigger's answer) with the paused clock held still for up
/// to 10 real seconds (while a blocking task is in flight tokio does not
/// advance it, so a run's timers cannot fire while the history's writer
/// thread commits), handling ends of runs as the loop would; returns the
/// answer and the clock's time it took.
async fn answer_of<T>(h: &mut Harness, rx: oneshot::Receiver<T>) -> (T, std::time::Duration) {
    let asked = tokio::time::Instant::now();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let hold = tokio::task::spawn_blocking(move || {
        let _ = held.recv_timeout(std::time::Duration::from_secs(10));
    });
    tokio::pin!(rx);
    let answer = loop {
        tokio::select! {
            answer = &mut rx => break answer.expect("the trigger is answered"),
            Some(ended) = h.sup.runs.join_next_with_id() => h.sup.on_run_end(ended),
        }
    };
    let took = asked.elapsed();
    let _ = release.send(());
    hold.await.expect("the clock's hold ends");
    (answer, took)
}

/// The job listed by the API as `name`.
async fn view(h: &mut Harness, name: &str) -> JobView {
    let (tx, rx) = oneshot::channel();
    h.sup.on_command(Command::Jobs(tx));
    rx.await.expect("the jobs are listed").into_iter().find(|v| v.job == name).expect("the job is listed")
}

#[tokio::test(start_paused = true)]
async fn a_trigger_of_a_job_blocked_by_its_semaphore_is_answered_queued_at_once_and_runs_when_it_frees() {
    let mut h = Harness::new("[semaphores]\nbackup = 1\n").await;
    let holder = h.drop_job("holder.toml", &format!("semaphore = \"backup\"\n{LONG}")).await;
    let waits = h.drop_job("waits.toml", &format!("schedule = \"0 0 3 1 1 *\"\nsemaphore = \"backup\"\n{LONG}")).await;
    let (tx, rx) = oneshot::channel();
    h.sup.on_command(Command::Trigger("waits.toml".into(), tx));
    let (answer, took) = answer_of(&mut h, rx).await;
    assert!(
        took < std::time::Duration::from_millis(100),
        "answered after {took:?}: the trigger waited for the semaphore"
    );
    let started = answer.expect("queued, not refused");
    assert_eq!(started.status, RecordedStatus::Queued);
    assert_eq!(h.running(&holder), 1, "the semaphore's holder still runs");
    assert_eq!(h.running(&waits), 0);
    assert_eq!(still(h.history("waits.toml")).await, [("queued".to_string(), None)], "recorded queued at once");
    let listed = view(&mut h, "waits.toml").await;
    assert_eq!((listed.running, listed.queued), (vec![], vec![started.run_id]));
    assert!(h.sup.metrics.render().contains("gatherd_runs_queued 1\n"), "{}", h.sup.metrics.render());

    h.cancel_all(&holder);
    assert_eq!(h.end_next().await, Some(Status::Cancelled));
    assert_eq!(h.running(&waits), 1, "it starts when the semaphore frees");
    let listed = view(&mut h, "waits.toml").await;
    assert_eq!((listed.running, listed.queued), (vec![started.run_id], vec![]));
    assert!(h.sup.metrics.render().contains("gatherd_runs_queued 0\n"));
    // Its `RunStarted` is recorded once the task has it.
    while still(h.history("waits.toml")).await[0].0 == "queued" {
        tokio::task::yield_now().await;
    }
    assert_eq!(still(h.history("waits.toml")).await, [("running".to_string(), None)]);
}

#[tokio::test(start_paused = true)]
async fn a_queued_run_cancelled_never_starts_and_gives_its_place_up() {
    let mut h = Harness::new("max_concurrent_runs = 1\n").await;
    let first = h.drop_job("first.toml", LONG).await;
    let waits = h.drop_job("waits.toml", &format!("schedule = \"0 0 3 1 1 *\"\n{LONG}")).await;
    h.drop_job("after.toml", &format!("schedule = \"0 0 3 1 1 *\"\n{LONG}")).await;
    let (tx, rx) = oneshot::channel();
    h.sup.on_command(Command::Trigger("waits.toml".into(), tx));
    let run = answer_of(&mut h, rx).await.0.expect("queued").run_id;
    let (tx, rx) = oneshot::channel();
    h.sup.on_command(Command::Trigger("after.toml".into(), tx));
    let after = answer_of(&mut h, rx).await.0.expect("queued").run_id;
    assert_eq!(h.sup.admission.waiting(), 2);

    assert_eq!(h.cancel(run).await, Ok(()));
    assert_eq!(still(h.end_next()).await, Some(Status::Cancelled), "the queued run ends at once");
    assert_eq!(h.sup.admission.waiting(), 1, "its place is given up");
    assert_eq!(h.cancel(run).await, Err(ControlError::NotRunning(run)));
    let history = still(h.history("waits.toml")).await;
    assert_eq!(history, [("cancelled".to_string(), Some(CANCELLED_WHILE_QUEUED.to_string()))]);
    let detail = still(h.store.run(run)).await.expect("read").expect("the run");
    assert!(detail.steps.is_empty(), "no step of it ever started: {:?}", detail.steps);

    h.cancel_all(&first);
    assert_eq!(h.end_next().await, Some(Status::Cancelled));
    assert_eq!(h.running(&waits), 0, "the cancelled run never starts");
    assert_eq!(view(&mut h, "after.toml").await.running, vec![after], "the next in line does");
}

#[tokio::test(start_paused = true)]
async fn runs_queued_when_the_daemon_stops_are_recorded_as_never_started() {
    let mut h = Harness::new("max_concurrent_runs = 1\nshutdown_grace = \"1s\"\n").await;
    h.drop_job("first.toml", LONG).await;
    let once = h.drop_job("once.toml", LONG).await;
    assert_eq!(h.sup.admission.waiting(), 1);
    let hash = h.sup.table[&once].valid_hash.expect("a valid version");
    // Its row is written (a one-shot's run waits for that).
    while still(h.history("once.toml")).await.is_empty() {
        tokio::task::yield_now().await;
    }
    let store = h.store.clone();
    h.sup.shutdown().await.expect("a clean stop");
    let rows = store.runs(RunFilter { job: Some("once.toml".into()), ..RunFilter::default() }).await.expect("read");
    let rows: Vec<(String, Option<String>)> = rows.into_iter().map(|r| (r.status.to_string(), r.error)).collect();
    assert_eq!(rows, [("cancelled".to_string(), Some(crate::store::QUEUED_AT_STOP_ERROR.to_string()))]);
    let status = store.one_shot_status(once.as_str(), &hash).await.expect("read the history");
    assert_eq!(status, None, "a one-shot queued at the stop never ran: it runs at the next start");
}

#[tokio::test(start_paused = true)]
async fn a_removed_job_cancels_its_run_in_flight() {
    let mut h = Harness::new("").await;
    let id = h.drop_job("j.toml", LONG).await;
    std::fs::remove_file(id.path(h.jobs.path())).expect("remove");
    h.sup.on_file_events(vec![JobFileEvent::Removed { id: id.clone() }]).await;
    assert_eq!(h.end_next().await, Some(Status::Cancelled));
    assert!(!h.sup.table.contains_key(&id));
}

#[tokio::test(start_paused = true)]
async fn a_reload_with_a_higher_limit_starts_the_runs_that_waited() {
    let mut h = Harness::new("max_concurrent_runs = 1\n").await;
    h.drop_job("a.toml", LONG).await;
    let b = h.drop_job("b.toml", LONG).await;
    assert_eq!(h.running(&b), 0);
    let config = Config::parse(std::path::Path::new("config.toml"), "max_concurrent_runs = 2\n").expect("config");
    h.sup.set_config(config);
    assert_eq!(h.running(&b), 1, "the waiting run started under the new limit");
    assert_eq!(h.sup.admission.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn trigger_answers_with_the_run_id_and_cancel_stops_only_a_run_in_flight() {
    let mut h = Harness::new("").await;
    h.drop_job("j.toml", &format!("schedule = \"0 0 3 1 1 *\"\n{LONG}")).await;
    assert!(matches!(h.trigger("nope.toml").await, Err(ControlError::NoSuchJob(j)) if j == "nope.toml"));

    let run = h.trigger("j.toml").await.expect("started");
    let (tx, rx) = oneshot::channel();
    h.sup.on_command(Command::Jobs(tx));
    let jobs = rx.await.expect("jobs");
    assert_eq!(jobs[0].running, vec![run], "the run's id is known as soon as the trigger has it");

    assert_eq!(h.cancel(run).await, Ok(()));
    assert_eq!(h.end_next().await, Some(Status::Cancelled));
    assert_eq!(h.cancel(run).await, Err(ControlError::NotRunning(run)));
    assert_eq!(h.history("j.toml").await[0].0, "cancelled");
}

#[tokio::test(start_paused = true)]
async fn a_run_is_over_for_cancel_once_its_end_passed_its_sinks() {
    let mut h = Harness::new("").await;
    h.drop_job("j.toml", "schedule = \"0 0 3 1 1 *\"\n[[step]]\nname = \"t\"\nsleep = \"0s\"\n").await;
    let run = h.trigger("j.toml").await.expect("started");
    // The history says it finished; its task has not been joined yet (it
    // may still be pruning): cancel must say it is not running.
    while h.history("j.toml").await[0].0 == "running" {
        tokio::task::yield_now().await;
    }
    assert_eq!(h.sup.runs.len(), 1, "the supervisor has not heard the task end");
    assert_eq!(h.cancel(run).await, Err(ControlError::NotRunning(run)));
}

#[tokio::test(start_paused = true)]
async fn an_invalid_version_keeps_the_last_valid_one_and_is_counted() {
    let mut h = Harness::new("").await;
    let id = h.drop_job("j.toml", &format!("schedule = \"0 0 3 1 1 *\"\n{LONG}")).await;
    let slot = h.sup.table[&id].slot;
    h.drop_job("j.toml", "[[step]]\nname = \"t\"\nslep = \"1s\"\n").await;
    assert_eq!(h.sup.invalid_jobs, 1);
    assert!(h.sup.table[&id].job.is_some(), "the last valid version stays");
    assert_eq!(h.sup.table[&id].slot, slot, "and keeps its schedule");
    h.drop_job("j.toml", &format!("schedule = \"0 0 3 1 1 *\"\n{LONG}\n")).await;
    assert_eq!(h.sup.invalid_jobs, 0);
}

/// A run history whose one-shot lookups fail (a corrupt page, a deleted
/// file); everything else is the real store's.
struct UnreadableHistory(Arc<dyn RunStore>);

impl RunStore for UnreadableHistory {
    fn recover<'a>(&'a self, node: &'a str, reason: &'a str) -> BoxFuture<'a, StoreResult<Vec<RunRow>>> {
        self.0.recover(node, reason)
    }
    fn notify_states(&self) -> BoxFuture<'_, StoreResult<Vec<(String, crate::store::NotifyState)>>> {
        self.0.notify_states()
    }
    fn save_notify_state<'a>(
        &'a self,
        job: &'a str,
        state: crate::store::NotifyState,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.0.save_notify_state(job, state)
    }
    fn begin_notification<'a>(
        &'a self,
        job: &'a str,
        run_id: Option<RunId>,
        target: &'a str,
        event: &'a str,
    ) -> BoxFuture<'a, StoreResult<crate::store::NotificationId>> {
        self.0.begin_notification(job, run_id, target, event)
    }
    fn update_notification<'a>(
        &'a self,
        id: crate::store::NotificationId,
        status: crate::store::DeliveryStatus,
        attempts: u32,
        error: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.0.update_notification(id, status, attempts, error)
    }
    fn notifications(
        &self,
        filter: crate::store::NotificationFilter,
    ) -> BoxFuture<'_, StoreResult<Vec<crate::store::Notification>>> {
        self.0.notifications(filter)
    }
    fn last_successes(&self) -> BoxFuture<'_, StoreResult<crate::store::LastSuccesses>> {
        self.0.last_successes()
    }
    fn begin_run(&self, start: RunStart) -> BoxFuture<'_, StoreResult<RunId>> {
        self.0.begin_run(start)
    }
    fn recorder(&self) -> Recorder {
        self.0.recorder()
    }
    fn record_job(&self, job: JobRecord) {
        self.0.record_job(job)
    }
    fn one_shot_status<'a>(
        &'a self,
        _: &'a str,
        _: &'a [u8; 32],
    ) -> BoxFuture<'a, StoreResult<Option<RecordedStatus>>> {
        Box::pin(async { Err(StoreError::Worker("database disk image is malformed".into())) })
    }
    fn record_missed(&self, missed: Missed) -> BoxFuture<'_, StoreResult<u64>> {
        self.0.record_missed(missed)
    }
    fn record_paused(&self, missed: Missed) -> BoxFuture<'_, StoreResult<()>> {
        self.0.record_paused(missed)
    }
    fn set_paused<'a>(&'a self, job: &'a str, paused: bool) -> BoxFuture<'a, StoreResult<()>> {
        self.0.set_paused(job, paused)
    }
    fn paused(&self) -> BoxFuture<'_, StoreResult<Vec<crate::store::PausedJob>>> {
        self.0.paused()
    }
    fn last_fire<'a>(&'a self, job: &'a str) -> BoxFuture<'a, StoreResult<Option<chrono::DateTime<chrono::Utc>>>> {
        self.0.last_fire(job)
    }
    fn prune<'a>(
        &'a self,
        job: &'a str,
        keep_runs: Option<u64>,
        keep_for: Option<std::time::Duration>,
    ) -> BoxFuture<'a, StoreResult<u64>> {
        self.0.prune(job, keep_runs, keep_for)
    }
    fn runs(&self, filter: RunFilter) -> BoxFuture<'_, StoreResult<Vec<RunRow>>> {
        self.0.runs(filter)
    }
    fn run(&self, id: RunId) -> BoxFuture<'_, StoreResult<Option<RunDetail>>> {
        self.0.run(id)
    }
    fn claim<'a>(
        &'a self,
        key: &'a ClaimKey,
        node: &'a str,
        lease: std::time::Duration,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.0.claim(key, node, lease)
    }
    fn renew_claims<'a>(&'a self, node: &'a str, lease: std::time::Duration) -> BoxFuture<'a, StoreResult<()>> {
        self.0.renew_claims(node, lease)
    }
    fn close(&self) -> BoxFuture<'_, StoreResult<()>> {
        self.0.close()
    }
}

#[tokio::test(start_paused = true)]
async fn at_start_a_one_shot_the_history_cannot_vouch_for_does_not_run() {
    let mut h = Harness::new("").await;
    h.sup.store = Arc::new(UnreadableHistory(h.store.clone()));
    h.sup.started = false;
    let id = h.drop_job("once.toml", LONG).await;
    assert_eq!(h.running(&id), 0, "a history that cannot answer must not re-run one-shots (fail closed)");
    assert!(h.sup.runs.is_empty());
    let problems = h.sup.metrics.problems();
    assert!(matches!(problems.as_slice(), [("history", why)] if why.contains("could not vouch")), "{problems:?}");
    // A new version is new whatever the history says: it runs.
    h.sup.started = true;
    h.drop_job("once.toml", &format!("{LONG}\n")).await;
    assert_eq!(h.running(&id), 1);
}

/// Makes the history's writer fail for real: the file is capped at its size
/// and a run's log lines need more pages. Returns once the store says so.
async fn fill_the_history(h: &mut Harness) {
    let filler = h.store.begin_run(RunStart {
        job: "filler.rhai".into(),
        trigger: crate::store::RunTrigger::Manual,
        fire_time: chrono::Utc::now(),
        content_hash: [0; 32],
        node: "test-node".into(),
        queued: false,
    });
    let filler = filler.await.expect("a run begins");
    h.sqlite.cap_size(true).await;
    let mut health = h.store.health();
    for n in 0..50 {
        let text = "x".repeat(4000);
        let at = std::time::Duration::from_millis(n);
        let path: crate::exec::NodePath = "main".into();
        h.store
            .recorder()
            .record(filler, crate::exec::RunEvent::Log { path, stream: crate::exec::Stream::Print, text, at });
    }
    assert!(h.store.recorder().flush().await.is_err(), "the capped history cannot take the log lines");
    health.wait_for(Option::is_some).await.expect("the store's health");
}

#[tokio::test(start_paused = true)]
async fn a_one_shot_dropped_while_the_history_cannot_be_written_waits_and_runs_once_it_can() {
    let mut h = Harness::new("").await;
    fill_the_history(&mut h).await;
    h.sup.on_store_health();
    let problems = h.sup.metrics.problems();
    assert!(matches!(problems.as_slice(), [("store", why)] if why.contains("full")), "{problems:?}");

    let once = h.drop_job("once.toml", "[[step]]\nname = \"t\"\nsleep = \"1s\"\n").await;
    assert_eq!(h.running(&once), 1, "its task waits for the history");
    // A manual run is not held up: it gets its id at once and runs.
    let manual = h.drop_job("manual.toml", "schedule = \"0 0 1 1 *\"\n[[step]]\nname = \"t\"\nsleep = \"0s\"\n").await;
    h.trigger(manual.as_str()).await.expect("a manual run starts while the history cannot be written");
    assert_eq!(h.end_next().await, Some(Status::Succeeded));
    let ran = h.store.runs(RunFilter { job: Some(once.to_string()), ..RunFilter::default() }).await.expect("read");
    assert!(ran.is_empty(), "the one-shot has not begun: {ran:?}");

    h.sqlite.cap_size(false).await;
    assert_eq!(h.end_next().await, Some(Status::Succeeded), "the one-shot runs once the history can record it");
    assert_eq!(h.history(once.as_str()).await, [("succeeded".to_string(), None)]);
    assert_eq!(h.history(manual.as_str()).await, [("succeeded".to_string(), None)], "the manual run is written too");
    h.store.health().wait_for(Option::is_none).await.expect("the store's health");
    h.sup.on_store_health();
    assert!(h.sup.metrics.problems().is_empty(), "{:?}", h.sup.metrics.problems());
}

#[test]
fn a_job_file_is_read_with_its_hash_and_diagnostics() {
    let dir = tempfile::tempdir().expect("temp folder");
    let path = dir.path().join("j.toml");
    std::fs::write(&path, LONG).expect("write");
    let a = table::read(&path, None).expect("read");
    std::fs::write(&path, "[[step]]\nname = \"t\"\nslep = \"1s\"\n").expect("write");
    let b = table::read(&path, None).expect("read");
    assert!(a.job.is_ok() && b.job.is_err());
    assert_ne!(a.hash, b.hash);
}

#[tokio::test(start_paused = true)]
async fn a_job_file_not_read_for_lack_of_file_descriptors_is_read_again_and_runs() {
    let mut h = Harness::new("").await;
    let path = h.jobs.path().join("once.toml");
    std::fs::write(&path, LONG).expect("write a job file");
    table::failpoint::fail_once(&path);
    h.sup.on_file_events(vec![JobFileEvent::Changed { id: id("once.toml") }]).await;
    assert_eq!(h.running(&id("once.toml")), 0, "its read failed with EMFILE");
    let at = h.sup.retries.at.expect("a read that failed for lack of file descriptors must be tried again");
    tokio::time::advance(at - tokio::time::Instant::now()).await;
    h.sup.retry_reads().await;
    assert_eq!(h.running(&id("once.toml")), 1, "read again, it runs");
    assert!(h.sup.retries.at.is_none(), "nothing more to retry");
}

#[tokio::test(start_paused = true)]
async fn a_job_file_not_read_during_a_rescan_for_lack_of_file_descriptors_is_read_again() {
    let mut h = Harness::new("").await;
    let path = h.jobs.path().join("once.toml");
    std::fs::write(&path, LONG).expect("write a job file");
    table::failpoint::fail_once(&path);
    h.sup.rescan().await;
    assert_eq!(h.running(&id("once.toml")), 0);
    let at = h.sup.retries.at.expect("tried again");
    tokio::time::advance(at - tokio::time::Instant::now()).await;
    h.sup.retry_reads().await;
    assert_eq!(h.running(&id("once.toml")), 1);
}

/// The jobs the API lists: (name, valid, diagnostic).
async fn listed(h: &mut Harness) -> Vec<(String, bool, String)> {
    let (tx, rx) = oneshot::channel();
    h.sup.on_command(Command::Jobs(tx));
    let views = rx.await.expect("the jobs are listed");
    views.into_iter().map(|v| (v.job, v.valid, v.diagnostic.unwrap_or_default())).collect()
}

#[tokio::test(start_paused = true)]
async fn a_symlink_loop_is_listed_invalid_with_why_and_loads_once_it_is_a_file() {
    let mut h = Harness::new("").await;
    let jobs = h.jobs.path().to_path_buf();
    std::os::unix::fs::symlink("b.toml", jobs.join("a.toml")).expect("symlink");
    std::os::unix::fs::symlink("a.toml", jobs.join("b.toml")).expect("symlink");
    h.sup.on_file_events(vec![JobFileEvent::Changed { id: id("a.toml") }]).await;
    let jobs_listed = listed(&mut h).await;
    assert!(
        matches!(jobs_listed.as_slice(), [(name, false, why)] if name == "a.toml" && why.contains("symlink loop")),
        "{jobs_listed:?}"
    );
    assert_eq!(h.sup.invalid_jobs, 1, "counted in gatherd_invalid_job_files");
    // Fixed: a file in its place loads and runs.
    std::fs::remove_file(jobs.join("a.toml")).expect("remove the link");
    std::fs::write(jobs.join("a.toml"), LONG).expect("write a job file");
    h.sup.on_file_events(vec![JobFileEvent::Changed { id: id("a.toml") }]).await;
    assert_eq!(h.sup.invalid_jobs, 0);
    assert_eq!(h.running(&id("a.toml")), 1);
}

#[tokio::test(start_paused = true)]
async fn a_scan_lists_what_cannot_be_a_job_with_why() {
    use std::os::unix::ffi::OsStrExt;
    let mut h = Harness::new("").await;
    let jobs = h.jobs.path().to_path_buf();
    std::fs::write(jobs.join("ok.toml"), LONG).expect("write");
    std::fs::write(jobs.join(std::ffi::OsStr::from_bytes(b"caf\xe9.toml")), LONG).expect("write");
    std::os::unix::fs::symlink("loop.toml", jobs.join("loop.toml")).expect("symlink");
    std::os::unix::fs::symlink("nowhere.toml", jobs.join("dangling.toml")).expect("symlink");
    nix::unistd::mkfifo(&jobs.join("pipe.toml"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    h.sup.rescan().await;
    let jobs_listed = listed(&mut h).await;
    let invalid: Vec<(&str, &str)> =
        jobs_listed.iter().filter(|(_, valid, _)| !valid).map(|(n, _, why)| (n.as_str(), why.as_str())).collect();
    let names: Vec<&str> = invalid.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["caf\u{fffd}.toml", "dangling.toml", "loop.toml", "pipe.toml"], "{jobs_listed:?}");
    assert!(invalid[0].1.contains("not valid UTF-8"), "{invalid:?}");
    assert!(invalid[1].1.contains("does not exist"), "{invalid:?}");
    assert!(invalid[2].1.contains("symlink loop"), "{invalid:?}");
    assert!(invalid[3].1.contains("not a regular file"), "{invalid:?}");
    h.sup.report_status();
    let metrics = h.sup.metrics.render();
    assert!(metrics.contains("gatherd_invalid_job_files 4\n"), "{metrics}");
    assert_eq!(h.running(&id("ok.toml")), 1, "the rest loads and runs");
}

#[tokio::test(start_paused = true)]
async fn a_file_that_becomes_unreadable_says_why_even_if_its_last_error_quoted_the_reason() {
    let mut h = Harness::new("").await;
    let jobs = h.jobs.path().to_path_buf();
    // Invalid, with a diagnostic that quotes the words of a refusal.
    let not_a_file = crate::load::NOT_A_FILE;
    std::fs::write(jobs.join("a.toml"), format!("{not_a_file:?} = 1\n")).expect("write");
    h.sup.on_file_events(vec![JobFileEvent::Changed { id: id("a.toml") }]).await;
    let before = listed(&mut h).await;
    assert!(matches!(before.as_slice(), [(_, false, why)] if why.contains(not_a_file)), "{before:?}");
    // Now it cannot be read at all: that is news, not "said already".
    std::fs::remove_file(jobs.join("a.toml")).expect("remove");
    nix::unistd::mkfifo(&jobs.join("a.toml"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    h.sup.on_file_events(vec![JobFileEvent::Changed { id: id("a.toml") }]).await;
    let after = listed(&mut h).await;
    assert!(after != before, "the refusal replaces the old diagnostic: {after:?}");
    assert!(matches!(after.as_slice(), [(_, false, why)] if why.ends_with(not_a_file)), "{after:?}");
    assert_eq!(h.sup.invalid_jobs, 1);
}

/// A run history that cancels `cancel` as it answers a `begin_run`, and
/// answers one poll later: the run task sees its row begun and its cancel at
/// the same time (a one-shot removed, or a shutdown, just as its row commits).
struct CancelsAsItAnswers {
    inner: Arc<dyn RunStore>,
    cancel: tokio_util::sync::CancellationToken,
}

impl RunStore for CancelsAsItAnswers {
    fn recover<'a>(&'a self, node: &'a str, reason: &'a str) -> BoxFuture<'a, StoreResult<Vec<RunRow>>> {
        self.inner.recover(node, reason)
    }
    fn notify_states(&self) -> BoxFuture<'_, StoreResult<Vec<(String, crate::store::NotifyState)>>> {
        self.inner.notify_states()
    }
    fn save_notify_state<'a>(
        &'a self,
        job: &'a str,
        state: crate::store::NotifyState,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.save_notify_state(job, state)
    }
    fn begin_notification<'a>(
        &'a self,
        job: &'a str,
        run_id: Option<RunId>,
        target: &'a str,
        event: &'a str,
    ) -> BoxFuture<'a, StoreResult<crate::store::NotificationId>> {
        self.inner.begin_notification(job, run_id, target, event)
    }
    fn update_notification<'a>(
        &'a self,
        id: crate::store::NotificationId,
        status: crate::store::DeliveryStatus,
        attempts: u32,
        error: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.update_notification(id, status, attempts, error)
    }
    fn notifications(
        &self,
        filter: crate::store::NotificationFilter,
    ) -> BoxFuture<'_, StoreResult<Vec<crate::store::Notification>>> {
        self.inner.notifications(filter)
    }
    fn last_successes(&self) -> BoxFuture<'_, StoreResult<crate::store::LastSuccesses>> {
        self.inner.last_successes()
    }
    fn begin_run(&self, start: RunStart) -> BoxFuture<'_, StoreResult<RunId>> {
        Box::pin(async move {
            let begun = self.inner.begin_run(start).await;
            self.cancel.cancel();
            tokio::task::yield_now().await;
            begun
        })
    }
    fn recorder(&self) -> Recorder {
        self.inner.recorder()
    }
    fn record_job(&self, job: JobRecord) {
        self.inner.record_job(job)
    }
    fn one_shot_status<'a>(
        &'a self,
        job: &'a str,
        hash: &'a [u8; 32],
    ) -> BoxFuture<'a, StoreResult<Option<RecordedStatus>>> {
        self.inner.one_shot_status(job, hash)
    }
    fn record_missed(&self, missed: Missed) -> BoxFuture<'_, StoreResult<u64>> {
        self.inner.record_missed(missed)
    }
    fn record_paused(&self, missed: Missed) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.record_paused(missed)
    }
    fn set_paused<'a>(&'a self, job: &'a str, paused: bool) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.set_paused(job, paused)
    }
    fn paused(&self) -> BoxFuture<'_, StoreResult<Vec<crate::store::PausedJob>>> {
        self.inner.paused()
    }
    fn last_fire<'a>(&'a self, job: &'a str) -> BoxFuture<'a, StoreResult<Option<chrono::DateTime<chrono::Utc>>>> {
        self.inner.last_fire(job)
    }
    fn prune<'a>(
        &'a self,
        job: &'a str,
        keep_runs: Option<u64>,
        keep_for: Option<std::time::Duration>,
    ) -> BoxFuture<'a, StoreResult<u64>> {
        self.inner.prune(job, keep_runs, keep_for)
    }
    fn runs(&self, filter: RunFilter) -> BoxFuture<'_, StoreResult<Vec<RunRow>>> {
        self.inner.runs(filter)
    }
    fn run(&self, id: RunId) -> BoxFuture<'_, StoreResult<Option<RunDetail>>> {
        self.inner.run(id)
    }
    fn claim<'a>(
        &'a self,
        key: &'a ClaimKey,
        node: &'a str,
        lease: std::time::Duration,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.inner.claim(key, node, lease)
    }
    fn renew_claims<'a>(&'a self, node: &'a str, lease: std::time::Duration) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.renew_claims(node, lease)
    }
    fn close(&self) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.close()
    }
}

#[tokio::test(start_paused = true)]
async fn a_one_shot_cancelled_as_its_row_commits_is_recorded_cancelled_and_runs_at_the_next_start() {
    let mut h = Harness::new("").await;
    h.sup.store = Arc::new(CancelsAsItAnswers { inner: h.store.clone(), cancel: h.sup.shutdown.clone() });
    let once = h.drop_job("once.toml", LONG).await;
    assert_eq!(h.end_next().await, Some(Status::Cancelled));
    // Left `running`, the row would read `interrupted` after a restart, and
    // that version would never run although it never started.
    let history = h.history(once.as_str()).await;
    assert!(
        matches!(history.as_slice(), [(status, Some(why))] if status == "cancelled" && why.contains("before it started")),
        "{history:?}"
    );
    // It never started: after a restart that version runs (as it would with
    // no row, cancelled while its row waited to be written).
    let hash = h.sup.table[&once].valid_hash.expect("a valid version");
    let status = h.store.one_shot_status(once.as_str(), &hash).await.expect("read the history");
    assert_eq!(status, None, "a one-shot cancelled before it started does not count as run");
}

/// Pauses (`true`) or resumes `job` as the API would; the answer once saved.
async fn pause(h: &mut Harness, job: &str, paused: bool) -> Result<(), ControlError> {
    let (tx, rx) = oneshot::channel();
    h.sup.on_command(Command::Pause(job.into(), paused, tx));
    still(rx).await.expect("the pause is answered")
}

/// Hands the supervisor its next timer, as the loop would.
async fn next_timer(h: &mut Harness) {
    use futures::StreamExt;
    let expired = h.sup.timers.next().await.expect("a timer");
    h.sup.on_timer(expired.into_inner());
}

#[tokio::test(start_paused = true)]
async fn a_paused_job_records_its_fires_missed_a_trigger_still_runs_and_resume_runs_a_one_shot_saved_meanwhile() {
    const QUICK: &str = "[[step]]\nname = \"t\"\nsleep = \"0s\"\n";
    let mut h = Harness::new("").await;
    let tick = h.drop_job("tick.toml", &format!("every = \"1s\"\n{QUICK}")).await;
    assert_eq!(pause(&mut h, "tick.toml", true).await, Ok(()));
    assert!(view(&mut h, "tick.toml").await.paused);
    assert_eq!(pause(&mut h, "tick.toml", true).await, Ok(()), "pausing a paused job is no error");
    assert!(matches!(pause(&mut h, "nope.toml", true).await, Err(ControlError::NoSuchJob(_))));
    next_timer(&mut h).await;
    next_timer(&mut h).await;
    assert!(h.sup.runs.is_empty(), "a paused job's fires do not run");
    while h.sup.chores.join_next().await.is_some() {}
    let missed = (String::from("missed"), Some(crate::store::PAUSED_ERROR.to_string()));
    assert_eq!(h.history("tick.toml").await, [missed.clone(), missed.clone()]);
    assert!(h.sup.table[&tick].timer.is_some(), "its schedule goes on");
    // A manual trigger is explicit: it runs.
    assert!(h.trigger("tick.toml").await.is_ok());
    assert_eq!(h.end_next().await, Some(Status::Succeeded));
    // Resumed: the next fire runs.
    assert_eq!(pause(&mut h, "tick.toml", false).await, Ok(()));
    next_timer(&mut h).await;
    assert_eq!(h.running(&tick), 1);
    assert_eq!(h.end_next().await, Some(Status::Succeeded));

    // A one-shot: paused, a new version waits for resume, then runs once.
    let once = h.drop_job("once.toml", QUICK).await;
    assert_eq!(h.end_next().await, Some(Status::Succeeded));
    assert_eq!(pause(&mut h, "once.toml", true).await, Ok(()));
    h.drop_job("once.toml", &format!("{QUICK}# version 2\n")).await;
    assert!(h.sup.runs.is_empty(), "a paused one-shot's new version waits");
    assert_eq!(pause(&mut h, "once.toml", false).await, Ok(()));
    assert_eq!(h.running(&once), 1, "resumed, the version saved meanwhile runs");
    assert_eq!(h.end_next().await, Some(Status::Succeeded));
    assert_eq!(pause(&mut h, "once.toml", true).await, Ok(()));
    assert_eq!(pause(&mut h, "once.toml", false).await, Ok(()));
    assert!(h.sup.runs.is_empty(), "a version that ran does not run again on resume");
}

#[tokio::test(start_paused = true)]
async fn pausing_does_not_cancel_a_run_in_flight_and_the_pause_is_saved() {
    let mut h = Harness::new("").await;
    let id = h.drop_job("j.toml", &format!("schedule = \"0 0 3 1 1 *\"\n{LONG}")).await;
    let run = h.trigger("j.toml").await.expect("started");
    assert_eq!(pause(&mut h, "j.toml", true).await, Ok(()));
    assert_eq!(h.running(&id), 1, "the run in flight goes on");
    assert_eq!(view(&mut h, "j.toml").await.running, vec![run]);
    assert!(!h.sup.in_flight.values().any(|r| r.cancel.is_cancelled()), "nothing was cancelled");
    let saved = still(h.store.paused()).await.expect("read the pauses");
    assert_eq!(saved.iter().map(|(job, _)| job.as_str()).collect::<Vec<_>>(), ["j.toml"]);
    assert_eq!(pause(&mut h, "j.toml", false).await, Ok(()));
    assert!(still(h.store.paused()).await.expect("read the pauses").is_empty());
}

/// With no `keep_runs`/`keep_for` anywhere, the history is finite: a run
/// that ends prunes its job's history to the default 10,000 runs.
#[tokio::test(start_paused = true)]
async fn the_default_retention_prunes_a_job_to_10_000_runs() {
    let mut h = Harness::new("").await;
    let at = |i: i64| chrono::Utc::now() - chrono::TimeDelta::seconds(100_000 - i);
    let missed = crate::store::Missed {
        job: "tick.toml".into(),
        trigger: crate::store::RunTrigger::Interval,
        fire_times: (0..10_000).map(at).collect(),
        content_hash: [1; 32],
        node: "test-node".into(),
    };
    h.store.record_missed(missed).await.expect("recorded");
    let tick = h.drop_job("tick.toml", "[[step]]\nname = \"t\"\nsleep = \"0s\"\n").await;
    assert_eq!(h.running(&tick), 1);
    assert_eq!(h.end_next().await, Some(Status::Succeeded));
    // The run's task has ended and given its slot back with the prune
    // still to do, as a chore of the loop's: a trigger right after the
    // run's end is not refused as "still going" while its history prunes.
    assert_eq!(h.running(&tick), 0);
    assert!(!h.sup.chores.is_empty(), "the prune is the loop's chore, not the run task's");
    assert!(h.trigger("tick.toml").await.is_ok(), "a trigger right after the end starts");
    assert_eq!(h.end_next().await, Some(Status::Succeeded));
    while h.sup.chores.join_next().await.is_some() {}
    h.store.recorder().flush().await.expect("flush the history");
    let filter = RunFilter { job: Some("tick.toml".into()), limit: 20_000, ..RunFilter::default() };
    let rows = h.store.runs(filter).await.expect("read the history");
    assert_eq!(rows.len(), crate::config::DEFAULT_KEEP_RUNS as usize, "10,001 runs pruned to the default");
    assert_eq!(rows.first().map(|r| r.status.to_string()).as_deref(), Some("succeeded"), "the newest kept");
}

/// A run of a timed job that ends while the daemon stops is handled like
/// any other: the stop clears the timers, and the job table says so too
/// (the status line's bookkeeping check held `timers` against the entries'
/// timers, and a run ending in the grace period panicked the daemon).
#[tokio::test(start_paused = true)]
async fn a_run_of_a_timed_job_ending_during_shutdown_stops_cleanly() {
    let mut h = Harness::new("").await;
    let tick = h.drop_job("tick.toml", "every = \"1h\"\n[[step]]\nname = \"t\"\nsleep = \"1s\"\n").await;
    h.trigger("tick.toml").await.expect("started");
    assert_eq!(h.running(&tick), 1);
    h.sup.shutdown().await.expect("a clean stop");
}

/// A scheduled fire kept by `overlap = "queue"` while a run goes on is not
/// run when that run ends if the job was paused meanwhile: it is recorded
/// missed, like a fire of a paused job; a kept manual trigger still runs.
#[tokio::test(start_paused = true)]
async fn a_fire_kept_by_overlap_queue_is_recorded_missed_once_the_job_is_paused() {
    let mut h = Harness::new("").await;
    let id = h.drop_job("q.toml", &format!("every = \"1m\"\noverlap = \"queue\"\n{LONG}")).await;
    next_timer(&mut h).await;
    assert_eq!(h.running(&id), 1, "the first fire runs");
    next_timer(&mut h).await;
    assert!(h.sup.table[&id].queued.is_some(), "the second is kept");
    assert_eq!(pause(&mut h, "q.toml", true).await, Ok(()));
    h.cancel_all(&id);
    assert_eq!(h.end_next().await, Some(Status::Cancelled));
    assert_eq!(h.running(&id), 0, "the kept fire did not start: the job is paused");
    while h.sup.chores.join_next().await.is_some() {}
    let history = h.history("q.toml").await;
    let missed = (String::from("missed"), Some(crate::store::PAUSED_ERROR.to_string()));
    assert_eq!(history.last(), Some(&missed), "{history:?}");

    // A manual trigger kept the same way is explicit: it runs.
    assert_eq!(pause(&mut h, "q.toml", false).await, Ok(()));
    next_timer(&mut h).await;
    assert_eq!(h.running(&id), 1);
    assert!(matches!(h.trigger("q.toml").await, Err(ControlError::NotStarted(_))), "kept");
    assert_eq!(pause(&mut h, "q.toml", true).await, Ok(()));
    h.cancel_all(&id);
    assert_eq!(h.end_next().await, Some(Status::Cancelled));
    assert_eq!(h.running(&id), 1, "a kept trigger runs while paused");
}

/// A paused job's fires are pruned like runs: its history stays within
/// `keep_runs` though it never runs.
#[tokio::test(start_paused = true)]
async fn a_paused_jobs_missed_fires_are_pruned_to_its_retention() {
    let mut h = Harness::new("").await;
    h.drop_job("tick.toml", "every = \"1s\"\nkeep_runs = 3\n[[step]]\nname = \"t\"\nsleep = \"0s\"\n").await;
    assert_eq!(pause(&mut h, "tick.toml", true).await, Ok(()));
    for _ in 0..6 {
        next_timer(&mut h).await;
        while h.sup.chores.join_next().await.is_some() {}
    }
    assert_eq!(h.history("tick.toml").await.len(), 3, "pruned to keep_runs");
}

/// A run queued before a SIGHUP starts with the secrets of the config in
/// force when it starts, not the ones it was queued with (a rotated secret
/// is never used after the reload).
#[tokio::test(start_paused = true)]
async fn a_queued_run_starts_with_the_secrets_of_the_config_in_force_when_it_starts() {
    let mut h = Harness::new("[semaphores]\nbackup = 1\n[secrets]\ntok = { env = \"UNUSED\" }\n").await;
    h.sup.opts.secrets = crate::exec::Secrets::new([("tok".to_string(), "old-value".to_string())]);
    let config = h.sup.opts.config.clone();
    h.sup.set_config(config.clone());
    let holder = h.drop_job("holder.toml", &format!("semaphore = \"backup\"\n{LONG}")).await;
    let out = h.jobs.path().join("token.txt");
    let waits = format!(
        "schedule = \"0 0 3 1 1 *\"\nsemaphore = \"backup\"\n[[step]]\nname = \"w\"\nwrite_file = {{ path = {:?}, content = \"{{{{ secrets.tok }}}}\" }}\n",
        out.display().to_string()
    );
    let waits = h.drop_job("waits.toml", &waits).await;
    assert!(h.trigger_started("waits.toml").await.is_ok_and(|s| s.status == RecordedStatus::Queued));
    // SIGHUP: the secret was rotated.
    h.sup.opts.secrets = crate::exec::Secrets::new([("tok".to_string(), "new-value".to_string())]);
    h.sup.set_config(config);
    h.cancel_all(&holder);
    // The holder ends (cancelled, or done if the paused clock ran its hour).
    assert!(h.end_next().await.is_some());
    assert_eq!(h.running(&waits), 1);
    assert_eq!(h.end_next().await, Some(Status::Succeeded));
    assert_eq!(std::fs::read_to_string(&out).expect("written"), "new-value");
}

/// The dashboard's view of `name` (`Control::job_detail`).
async fn detail(h: &mut Harness, name: &str, fires: usize) -> Option<crate::api::JobDetail> {
    let (tx, rx) = oneshot::channel();
    h.sup.on_command(Command::Job(name.into(), fires, tx));
    rx.await.expect("the job's detail is answered")
}

#[tokio::test(start_paused = true)]
async fn the_dashboard_gets_a_jobs_text_next_fires_and_its_diagnostic_excerpt() {
    let mut h = Harness::new("").await;
    let text = "# hourly\nschedule = \"0 * * * *\"\n[[step]]\nname = \"t\"\nsleep = \"0s\"\n";
    h.drop_job("hourly.toml", text).await;
    let got = detail(&mut h, "hourly.toml", 5).await.expect("a known job");
    assert_eq!(got.source.as_deref(), Some(text));
    assert_eq!(got.excerpt, None);
    assert_eq!(got.next_fires.len(), 5);
    assert_eq!(Some(got.next_fires[0]), view(&mut h, "hourly.toml").await.next_fire, "the first is the next slot");
    for pair in got.next_fires.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::hours(1), "{:?}", got.next_fires);
    }
    // An invalid version: its text, and each diagnostic with its caret excerpt.
    let broken = "schedule = \"0 * * * *\"\nnmae = 1\n[[step]]\nname = \"t\"\nsleep = \"0s\"\n";
    h.drop_job("hourly.toml", broken).await;
    let got = detail(&mut h, "hourly.toml", 5).await.expect("a known job");
    assert_eq!(got.source.as_deref(), Some(broken));
    let excerpt = got.excerpt.expect("the diagnostic");
    assert!(excerpt.contains("2 │ nmae = 1"), "the source line: {excerpt}");
    assert!(excerpt.contains("hourly.toml:2:1"), "{excerpt}");
    assert_eq!(detail(&mut h, "nope.toml", 5).await, None);
    // A one-shot is not scheduled.
    h.drop_job("once.toml", "[[step]]\nname = \"t\"\nsleep = \"0s\"\n").await;
    assert!(detail(&mut h, "once.toml", 5).await.expect("known").next_fires.is_empty());
}

/// A history shared with other nodes (a fleet): the real store's, except
/// that its claims of the jobs in `lose` are another node's, and each claim
/// asked is noted with the clock's time.
struct Fleet {
    inner: Arc<dyn RunStore>,
    lose: Vec<String>,
    claims: std::sync::Mutex<Vec<(String, tokio::time::Instant)>>,
    /// Every semaphore's slots are held on other nodes.
    semaphores_full: bool,
}

impl Fleet {
    fn claims(&self) -> Vec<(String, tokio::time::Instant)> {
        self.claims.lock().expect("the claims").clone()
    }
}

impl RunStore for Fleet {
    fn shared(&self) -> bool {
        true
    }
    fn claim_once<'a>(&'a self, claim: &'a crate::store::Claim) -> BoxFuture<'a, StoreResult<crate::store::Claimed>> {
        self.claims.lock().expect("the claims").push((claim.key.job.clone(), tokio::time::Instant::now()));
        let lost = self.lose.contains(&claim.key.job);
        Box::pin(async move { Ok(if lost { crate::store::Claimed::Lost } else { crate::store::Claimed::Won }) })
    }
    fn acquire_semaphore<'a>(&'a self, _: &'a str, _: usize, _: &'a str) -> BoxFuture<'a, StoreResult<Option<u32>>> {
        let full = self.semaphores_full;
        Box::pin(async move { Ok(if full { None } else { Some(0) }) })
    }
    fn recover<'a>(&'a self, node: &'a str, reason: &'a str) -> BoxFuture<'a, StoreResult<Vec<RunRow>>> {
        self.inner.recover(node, reason)
    }
    fn notify_states(&self) -> BoxFuture<'_, StoreResult<Vec<(String, crate::store::NotifyState)>>> {
        self.inner.notify_states()
    }
    fn save_notify_state<'a>(
        &'a self,
        job: &'a str,
        state: crate::store::NotifyState,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.save_notify_state(job, state)
    }
    fn begin_notification<'a>(
        &'a self,
        job: &'a str,
        run_id: Option<RunId>,
        target: &'a str,
        event: &'a str,
    ) -> BoxFuture<'a, StoreResult<crate::store::NotificationId>> {
        self.inner.begin_notification(job, run_id, target, event)
    }
    fn update_notification<'a>(
        &'a self,
        id: crate::store::NotificationId,
        status: crate::store::DeliveryStatus,
        attempts: u32,
        error: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.update_notification(id, status, attempts, error)
    }
    fn notifications(
        &self,
        filter: crate::store::NotificationFilter,
    ) -> BoxFuture<'_, StoreResult<Vec<crate::store::Notification>>> {
        self.inner.notifications(filter)
    }
    fn last_successes(&self) -> BoxFuture<'_, StoreResult<crate::store::LastSuccesses>> {
        self.inner.last_successes()
    }
    fn begin_run(&self, start: RunStart) -> BoxFuture<'_, StoreResult<RunId>> {
        self.inner.begin_run(start)
    }
    fn recorder(&self) -> Recorder {
        self.inner.recorder()
    }
    fn record_job(&self, job: JobRecord) {
        self.inner.record_job(job)
    }
    fn one_shot_status<'a>(
        &'a self,
        job: &'a str,
        hash: &'a [u8; 32],
    ) -> BoxFuture<'a, StoreResult<Option<RecordedStatus>>> {
        self.inner.one_shot_status(job, hash)
    }
    fn record_missed(&self, missed: Missed) -> BoxFuture<'_, StoreResult<u64>> {
        self.inner.record_missed(missed)
    }
    fn record_paused(&self, missed: Missed) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.record_paused(missed)
    }
    fn set_paused<'a>(&'a self, job: &'a str, paused: bool) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.set_paused(job, paused)
    }
    fn paused(&self) -> BoxFuture<'_, StoreResult<Vec<crate::store::PausedJob>>> {
        self.inner.paused()
    }
    fn last_fire<'a>(&'a self, job: &'a str) -> BoxFuture<'a, StoreResult<Option<chrono::DateTime<chrono::Utc>>>> {
        self.inner.last_fire(job)
    }
    fn prune<'a>(
        &'a self,
        job: &'a str,
        keep_runs: Option<u64>,
        keep_for: Option<std::time::Duration>,
    ) -> BoxFuture<'a, StoreResult<u64>> {
        self.inner.prune(job, keep_runs, keep_for)
    }
    fn runs(&self, filter: RunFilter) -> BoxFuture<'_, StoreResult<Vec<RunRow>>> {
        self.inner.runs(filter)
    }
    fn run(&self, id: RunId) -> BoxFuture<'_, StoreResult<Option<RunDetail>>> {
        self.inner.run(id)
    }
    fn claim<'a>(
        &'a self,
        key: &'a ClaimKey,
        node: &'a str,
        lease: std::time::Duration,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.inner.claim(key, node, lease)
    }
    fn renew_claims<'a>(&'a self, node: &'a str, lease: std::time::Duration) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.renew_claims(node, lease)
    }
    fn close(&self) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.close()
    }
}

/// `h`'s supervisor on a shared history where `lose`'s claims are another
/// node's.
fn in_a_fleet(h: &mut Harness, lose: &[&str]) -> Arc<Fleet> {
    in_a_fleet_with(h, lose, false)
}

/// [`in_a_fleet`], with every semaphore held on other nodes when
/// `semaphores_full`.
fn in_a_fleet_with(h: &mut Harness, lose: &[&str], semaphores_full: bool) -> Arc<Fleet> {
    let fleet = Arc::new(Fleet {
        inner: h.store.clone(),
        lose: lose.iter().map(ToString::to_string).collect(),
        claims: Default::default(),
        semaphores_full,
    });
    h.sup.store = fleet.clone();
    fleet
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_fleet_claim_is_lost_records_nothing_and_gives_its_slot_back_at_once() {
    let mut h = Harness::new("max_concurrent_runs = 1\n").await;
    let fleet = in_a_fleet(&mut h, &["lost.toml"]);
    let lost = h.drop_job("lost.toml", LONG).await;
    assert_eq!(h.running(&lost), 1, "spawned: its task claims before it begins");
    assert_eq!(h.end_next().await, Some(Status::Cancelled), "ended as soon as the claim was lost");
    assert_eq!((h.sup.admission.running(), h.sup.admission.waiting()), (0, 0), "its slot is free");
    assert!(h.sup.in_flight.is_empty());
    assert_eq!(still(h.history("lost.toml")).await, [], "nothing recorded on this node");
    assert_eq!(fleet.claims().len(), 1);
    // A manual trigger is not claimed: the node asked runs it.
    let run = h.trigger("lost.toml").await.expect("started");
    assert!(run > 0);
    assert_eq!(fleet.claims().len(), 1, "no claim for a manual trigger");
    assert_eq!(h.running(&lost), 1);
}

#[tokio::test(start_paused = true)]
async fn a_node_without_room_claims_after_the_delay_and_one_with_room_at_once() {
    let mut h = Harness::new("max_concurrent_runs = 1\n").await;
    let fleet = in_a_fleet(&mut h, &[]);
    let began = tokio::time::Instant::now();
    let hog = h.drop_job("hog.toml", LONG).await;
    h.drop_job("late.toml", LONG).await;
    assert_eq!((h.sup.admission.running(), h.sup.admission.waiting()), (1, 1), "late waits for the slot");
    while fleet.claims().len() < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let claims = fleet.claims();
    assert_eq!(claims[0].0, "hog.toml");
    assert!(
        claims[0].1 - began < std::time::Duration::from_millis(50),
        "with room: at once ({:?})",
        claims[0].1 - began
    );
    assert_eq!(claims[1].0, "late.toml");
    let late = claims[1].1 - began;
    assert!(late >= super::fleet::claim::BUSY_CLAIM_DELAY, "without room: after the delay ({late:?})");
    assert!(late < super::fleet::claim::BUSY_CLAIM_DELAY + std::time::Duration::from_millis(50), "{late:?}");
    // Won late, it still runs once there is room: never lost to load.
    h.cancel_all(&hog);
    assert_eq!(h.end_next().await, Some(Status::Cancelled));
    assert_eq!(h.running(&id("late.toml")), 1);
}

#[tokio::test(start_paused = true)]
async fn a_run_waiting_for_its_semaphore_held_on_other_nodes_is_queued_and_never_starts_when_the_daemon_stops() {
    let mut h = Harness::new("shutdown_grace = \"1h\"\n").await;
    in_a_fleet_with(&mut h, &[], true);
    h.drop_job("waits.toml", &format!("semaphore = \"db\"\n{LONG}")).await;
    // Recorded queued while it waits for a slot held elsewhere.
    while still(h.history("waits.toml")).await.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(still(h.history("waits.toml")).await, [("queued".to_string(), None)]);
    let store = h.store.clone();
    let stopping = tokio::time::Instant::now();
    // The clock held still: only a wait for the grace (1 h) can move it.
    still(h.sup.shutdown()).await.expect("a clean stop");
    let took = stopping.elapsed();
    let rows = store.runs(RunFilter { job: Some("waits.toml".into()), ..RunFilter::default() }).await.expect("read");
    let rows: Vec<(String, Option<String>)> = rows.into_iter().map(|r| (r.status.to_string(), r.error)).collect();
    assert_eq!(rows, [("cancelled".to_string(), Some(crate::store::QUEUED_AT_STOP_ERROR.to_string()))]);
    assert!(took < std::time::Duration::from_secs(1), "the stop waited {took:?} for a run that never started");
}

/// A takeover (the heartbeat task's note): the dead node's run of a job
/// with `on_node_loss = "rerun"` runs again here, with its trigger and
/// nominal time; one with the default (`record`) does not, nor one of a job
/// this node does not have.
#[tokio::test(start_paused = true)]
async fn a_run_taken_over_from_a_dead_node_runs_again_here_only_when_its_job_says_rerun() {
    let mut h = Harness::new("").await;
    let yearly = "schedule = \"0 0 1 1 *\"\n";
    let rerun = h.drop_job("rerun.toml", &format!("{yearly}on_node_loss = \"rerun\"\n{LONG}")).await;
    let record = h.drop_job("record.toml", &format!("{yearly}{LONG}")).await;
    // In a fleet whose claims of these jobs are the dead node's: the rerun
    // is not claimed (a claim of its fire would lose to the dead node's).
    let fleet = in_a_fleet(&mut h, &["rerun.toml", "record.toml"]);
    let fire: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:00Z".parse().expect("a time");
    let lost = |id: RunId, job: &str, trigger: crate::store::RunTrigger| RunRow {
        id,
        job: job.into(),
        trigger,
        fire_time: fire,
        content_hash: [0; 32],
        node: "web1-00000001".into(),
        status: RecordedStatus::Interrupted,
        started_at: fire,
        finished_at: Some(fire),
        duration_ms: None,
        error: Some("node web1-00000001 stopped heartbeating".into()),
        result: serde_json::Value::Null,
    };
    let taken = crate::store::TakenOver {
        node: "web1-00000001".into(),
        last_heartbeat: Some(fire),
        runs: vec![
            lost(1001, "rerun.toml", crate::store::RunTrigger::Schedule),
            lost(1002, "record.toml", crate::store::RunTrigger::Manual),
            lost(1003, "elsewhere.toml", crate::store::RunTrigger::Manual),
        ],
    };
    h.sup.on_fleet_note(super::fleet::FleetNote::TakenOver(taken));
    assert_eq!((h.running(&rerun), h.running(&record)), (1, 0), "only the rerun job runs again");
    h.cancel_all(&rerun);
    assert_eq!(h.end_next().await, Some(Status::Cancelled));
    h.store.recorder().flush().await.expect("flush");
    let rows = h.store.runs(RunFilter { job: Some("rerun.toml".into()), ..RunFilter::default() }).await.expect("runs");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].trigger, rows[0].fire_time), (crate::store::RunTrigger::Schedule, fire), "as the original");
    assert!(h.history("record.toml").await.is_empty());
    assert!(fleet.claims().is_empty(), "a rerun claimed: {:?}", fleet.claims());
}
