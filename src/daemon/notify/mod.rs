//! The notifier: turns what happens to jobs (a run's end, a missed fire, a
//! run found interrupted, a file gone invalid) into notifications to the
//! config's targets (`[notify.NAME]`), and delivers them.
//!
//! It is one task of its own, owned by the supervisor (started with it,
//! awaited at its shutdown), fed by [`NotifyHandle`] — a channel send that
//! never waits, so a slow or dead target never holds up the supervisor's
//! loop or a run. The task keeps each job's failure streak (`streak.rs`,
//! the "no storms" rule) in memory and in the store (`notify_state`), so a
//! restart neither sends a streak's `failure` again nor forgets its
//! `recovery`. Each notification is a row in `notifications`, updated after
//! every attempt; attempts are retried with a doubling wait (the target's
//! `retry_delay`, up to 5 min) for the target's `retry_for`, then marked
//! failed and logged. `gatherd_notifications_total{target,status}` counts
//! the ends.
//!
//! Architecture Invariant: delivery never blocks or fails a run: the
//! supervisor only sends on an unbounded channel.
//!
//! Masking seam: every text a notification carries (the run's error, the
//! message) goes through [`Notifier::mask`] before it is rendered or
//! stored, masked with the config's secrets.

mod command;
mod email;
mod notice;
mod sign;
mod streak;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use self::notice::Notice;
pub use self::streak::Subscription;
use crate::api::Metrics;
use crate::config::{Config, MAX_RETRY_WAIT, NotifyTarget};
use crate::exec::Status;
use crate::job::{Backoff, DEFAULT_NOTIFY_ON, Notify, NotifyEvent};
use crate::store::{DeliveryStatus, NotifyState, RunId, RunStore};

/// How long deliveries still going at shutdown may go on before they are
/// given up (recorded failed): a stop must not wait for a dead target.
const DRAIN: Duration = Duration::from_secs(5);

/// What the notifier is told.
#[derive(Debug)]
pub enum Input {
    /// A run ended.
    RunEnded { job: String, run_id: Option<RunId>, status: Status, error: Option<String>, settings: Notify },
    /// Something else happened to a job (missed, interrupted, invalid, stale).
    Event { job: String, run_id: Option<RunId>, event: NotifyEvent, error: Option<String>, settings: Notify },
    /// A job's valid version was loaded, with its settings (its dead-man
    /// window among them).
    Job { job: String, settings: Notify },
    /// A job's file is gone.
    Removed { job: String },
    /// The config was reloaded.
    Config(Box<Targets>),
}

/// The config's part the notifier uses.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    targets: BTreeMap<String, NotifyTarget>,
    default_notify: Vec<String>,
    default_on: Option<Vec<NotifyEvent>>,
    /// `http://ADDR` of the API's TCP listener, for links to runs.
    api_base: Option<String>,
    /// The config's environment: its secrets are masked in every text a
    /// notification carries, and a `command` target runs with its base
    /// variables (never gatherd's own environment), as a step does.
    environment: Arc<crate::exec::Environment>,
}

impl Targets {
    /// The notification part of `config`; links to runs go to `api_listen`.
    pub fn from_config(config: &Config, api_listen: Option<std::net::SocketAddr>) -> Targets {
        Targets {
            targets: config.notify.clone(),
            default_notify: config.default_notify.clone(),
            default_on: config.default_notify_on.clone(),
            api_base: api_listen.map(|a| format!("http://{a}")),
            environment: Arc::default(),
        }
    }

    /// The same, with the config's environment: its secrets masked, its
    /// base variables for `command` targets.
    pub fn with_environment(mut self, environment: &Arc<crate::exec::Environment>) -> Targets {
        self.environment = environment.clone();
        self
    }

    /// A job's subscription: its own settings, else the config's defaults.
    /// `expect_success_within` subscribes to `stale` (that is all it does).
    pub fn subscription(&self, settings: &Notify) -> Subscription {
        let mut on =
            settings.on.clone().or_else(|| self.default_on.clone()).unwrap_or_else(|| DEFAULT_NOTIFY_ON.to_vec());
        if settings.expect_success_within.is_some() && !on.contains(&NotifyEvent::Stale) {
            on.push(NotifyEvent::Stale);
        }
        Subscription {
            targets: settings.targets.clone().unwrap_or_else(|| self.default_notify.clone()),
            on,
            after: settings.after.unwrap_or(1),
            repeat_every: settings.repeat_every,
        }
    }
}

/// The supervisor's end of the notifier: sends never wait.
#[derive(Debug, Clone)]
pub struct NotifyHandle {
    tx: mpsc::UnboundedSender<Input>,
}

impl NotifyHandle {
    /// Tells the notifier; a notifier that is gone (shutdown) is ignored.
    pub fn send(&self, input: Input) {
        if self.tx.send(input).is_err() {
            tracing::debug!("the notifier has stopped; nothing more is notified");
        }
    }
}

/// The notifier's task and its state.
pub struct Notifier {
    store: Arc<dyn RunStore>,
    metrics: Arc<Metrics>,
    targets: Targets,
    states: HashMap<String, NotifyState>,
    /// Jobs with a dead-man check: their settings and their last success
    /// (or, never having succeeded, when this daemon first loaded them).
    deadman: HashMap<String, (Notify, chrono::DateTime<Utc>)>,
    /// Each job's last success, from the history at start and from runs since.
    last_success: HashMap<String, chrono::DateTime<Utc>>,
    client: reqwest::Client,
    /// Deliveries under way, each ending with its lane's key.
    deliveries: JoinSet<Lane>,
    /// Per (job, target), the notifications waiting for the one under way:
    /// a lane delivers in order, so a `recovery` never overtakes the
    /// `failure` it ends while that one is being retried. A lane with a
    /// delivery under way has an entry (empty when nothing waits).
    lanes: HashMap<Lane, std::collections::VecDeque<Delivery>>,
    /// Bounds the attempts made at once, all targets together, so an
    /// outage that fails hundreds of jobs does not start hundreds of
    /// requests or commands at once.
    attempts: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the drain at shutdown is over.
    stop: CancellationToken,
}

/// Starts the notifier's task; the supervisor owns the handle it returns
/// and awaits it at shutdown, after dropping every [`NotifyHandle`].
pub fn start(
    store: Arc<dyn RunStore>,
    metrics: Arc<Metrics>,
    targets: Targets,
) -> (NotifyHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let notifier = Notifier {
        store,
        metrics,
        targets,
        states: HashMap::new(),
        deadman: HashMap::new(),
        last_success: HashMap::new(),
        client: reqwest::Client::new(),
        deliveries: JoinSet::new(),
        lanes: HashMap::new(),
        attempts: Arc::new(tokio::sync::Semaphore::new(MAX_ATTEMPTS_AT_ONCE)),
        stop: CancellationToken::new(),
    };
    (NotifyHandle { tx }, tokio::spawn(notifier.serve(rx)))
}

impl Notifier {
    /// Every text of a notification passes here before it is sent or
    /// stored: the config's secrets read `********` (a run's own error is
    /// masked by the executor already; this covers the rest, such as an
    /// interrupted run's or an invalid file's message).
    fn mask(&self, mut text: String) -> String {
        self.targets.environment.masker().mask_string(&mut text);
        text
    }

    async fn serve(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        match self.store.notify_states().await {
            Ok(states) => self.states = states.into_iter().collect(),
            Err(e) => tracing::error!(error = %e, "cannot read the notification states; failure streaks start over"),
        }
        match self.store.last_successes().await {
            Ok(found) => self.last_success = found.into_iter().collect(),
            Err(e) => tracing::error!(error = %e, "cannot read the last successes; dead-man checks count from now"),
        }
        loop {
            let due = self.next_stale();
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => self.handle(input).await,
                    None => break,
                },
                Some(done) = self.deliveries.join_next() => self.lane_done(done),
                () = sleep_until_wall(due.as_ref().map(|(_, at)| *at)) => {
                    if let Some((job, _)) = due {
                        self.stale(job).await;
                    }
                }
            }
        }
        // Shutdown: what is being delivered gets a moment, then is given up.
        let drain = tokio::time::sleep(DRAIN);
        tokio::pin!(drain);
        while !self.deliveries.is_empty() {
            tokio::select! {
                Some(done) = self.deliveries.join_next() => self.lane_done(done),
                () = &mut drain, if !self.stop.is_cancelled() => self.stop.cancel(),
            }
        }
    }

    /// The dead-man check due first: a job whose window since its last
    /// success ends soonest, and has not been told `stale` yet.
    fn next_stale(&self) -> Option<(String, chrono::DateTime<Utc>)> {
        self.deadman
            .iter()
            .filter(|(job, _)| !self.states.get(*job).is_some_and(|s| s.stale))
            .filter_map(|(job, (settings, since))| {
                let window = chrono::Duration::from_std(settings.expect_success_within?).ok()?;
                Some((job.clone(), since.checked_add_signed(window)?))
            })
            .min_by_key(|(_, at)| *at)
    }

    /// `job` has not succeeded within its window: `stale`, once until its
    /// next success.
    async fn stale(&mut self, job: String) {
        let Some((settings, since)) = self.deadman.get(&job).cloned() else { return };
        let state = self.states.entry(job.clone()).or_default();
        state.stale = true;
        let state = state.clone();
        if let Err(e) = self.store.save_notify_state(&job, state).await {
            tracing::warn!(job = %job, error = %e, "cannot save the job's notification state");
        }
        let window = settings.expect_success_within.map(|w| humantime::format_duration(w).to_string());
        let error = match self.last_success.get(&job) {
            Some(at) => format!("no run has succeeded since {at} (expected within {})", window.unwrap_or_default()),
            None => format!("no run has succeeded since {since} (expected within {})", window.unwrap_or_default()),
        };
        tracing::warn!(job = %job, error = %error, "job is stale");
        let sub = self.targets.subscription(&settings);
        self.notify(&sub, &job, None, NotifyEvent::Stale, None, Some(error), 0);
    }

    async fn handle(&mut self, input: Input) {
        match input {
            Input::Config(targets) => self.targets = *targets,
            Input::Job { job, settings } => {
                // A valid version: the next mistake is news again.
                if let Some(state) = self.states.get_mut(&job).filter(|s| s.invalid.is_some()) {
                    state.invalid = None;
                    let state = state.clone();
                    if let Err(e) = self.store.save_notify_state(&job, state).await {
                        tracing::warn!(job = %job, error = %e, "cannot save the job's notification state");
                    }
                }
                if settings.expect_success_within.is_some() {
                    let since = self.last_success.get(&job).copied().unwrap_or_else(Utc::now);
                    let since = self.deadman.get(&job).map_or(since, |(_, s)| *s);
                    self.deadman.insert(job, (settings, since));
                } else {
                    self.deadman.remove(&job);
                }
            }
            Input::Removed { job } => {
                self.deadman.remove(&job);
            }
            Input::RunEnded { job, run_id, status, error, settings } => {
                let sub = self.targets.subscription(&settings);
                let state = self.states.entry(job.clone()).or_default();
                let before = state.clone();
                let now = Utc::now();
                let events = streak::after_run(state, status, &sub, now);
                if status == Status::Succeeded {
                    self.last_success.insert(job.clone(), now);
                    if let Some((_, since)) = self.deadman.get_mut(&job) {
                        *since = now;
                    }
                }
                let (state, failures) = (state.clone(), state.failures.max(before.failures));
                if state != before
                    && let Err(e) = self.store.save_notify_state(&job, state).await
                {
                    tracing::warn!(job = %job, error = %e, "cannot save the job's notification state");
                }
                for event in events {
                    let failures = if event == NotifyEvent::Failure { failures } else { 0 };
                    let status = Some(status.as_str().to_string());
                    self.notify(&sub, &job, run_id, event, status, error.clone(), failures);
                }
            }
            Input::Event { job, run_id, event: NotifyEvent::Invalid, error, settings } => {
                // Told once per mistake: a restart reads every file anew
                // and finds the same invalid version again.
                let told = self.states.get(&job).and_then(|s| s.invalid.clone());
                let now = Some(error.clone().unwrap_or_default());
                if told == now {
                    return tracing::debug!(job = %job, "invalid again with the same diagnostic: told already");
                }
                let state = self.states.entry(job.clone()).or_default();
                state.invalid = now;
                let state = state.clone();
                if let Err(e) = self.store.save_notify_state(&job, state).await {
                    tracing::warn!(job = %job, error = %e, "cannot save the job's notification state");
                }
                let sub = self.targets.subscription(&settings);
                if sub.on.contains(&NotifyEvent::Invalid) {
                    self.notify(&sub, &job, run_id, NotifyEvent::Invalid, None, error, 0);
                }
            }
            Input::Event { job, run_id, event, error, settings } => {
                let sub = self.targets.subscription(&settings);
                if sub.on.contains(&event) {
                    self.notify(&sub, &job, run_id, event, None, error, 0);
                }
            }
        }
    }

    /// Queues `event` of `job` to each of `sub`'s targets.
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &mut self,
        sub: &Subscription,
        job: &str,
        run_id: Option<RunId>,
        event: NotifyEvent,
        status: Option<String>,
        error: Option<String>,
        failures: u32,
    ) {
        let error = error.map(|e| self.mask(e));
        let message = self.mask(Notice::describe(event, job, failures, error.as_deref()));
        for name in &sub.targets {
            let Some(target) = self.targets.targets.get(name) else {
                tracing::warn!(job = %job, target = %name, event = %event, "no `[notify.{name}]` in the config; not notified");
                continue;
            };
            let notice = Notice {
                event,
                job: job.to_string(),
                run_id,
                status: status.clone(),
                error: error.clone(),
                failures,
                run_url: run_id.map(|id| format!("{}/runs/{id}", self.targets.api_base.as_deref().unwrap_or(""))),
                at: Utc::now(),
                message: message.clone(),
                target: name.clone(),
            };
            let delivery = Delivery {
                store: self.store.clone(),
                metrics: self.metrics.clone(),
                client: self.client.clone(),
                target: target.clone(),
                notice,
                stop: self.stop.clone(),
                environment: self.targets.environment.clone(),
                attempts: self.attempts.clone(),
            };
            let lane = (job.to_string(), name.clone());
            match self.lanes.get_mut(&lane) {
                Some(waiting) => waiting.push_back(delivery),
                None => {
                    self.lanes.insert(lane.clone(), std::collections::VecDeque::new());
                    self.deliveries.spawn(delivery.run(lane));
                }
            }
        }
    }

    /// A delivery of `done`'s lane ended: the next one waiting there starts.
    fn lane_done(&mut self, done: Result<Lane, tokio::task::JoinError>) {
        let Ok(lane) = done else {
            // A delivery task that panicked: its lane is unknown; nothing
            // waits forever, since every lane is looked at again below.
            return self.restart_idle_lanes();
        };
        match self.lanes.get_mut(&lane).and_then(std::collections::VecDeque::pop_front) {
            Some(next) => {
                self.deliveries.spawn(next.run(lane));
            }
            None => {
                self.lanes.remove(&lane);
            }
        }
    }

    /// After a delivery task failed: lanes with waiting notifications but
    /// (as far as can be told) nothing under way are started again.
    fn restart_idle_lanes(&mut self) {
        if !self.deliveries.is_empty() {
            return;
        }
        let lanes: Vec<Lane> = self.lanes.keys().cloned().collect();
        for lane in lanes {
            match self.lanes.get_mut(&lane).and_then(std::collections::VecDeque::pop_front) {
                Some(next) => {
                    self.deliveries.spawn(next.run(lane));
                }
                None => {
                    self.lanes.remove(&lane);
                }
            }
        }
    }
}

/// A lane of deliveries: (job, target).
type Lane = (String, String);

/// At most this many notification attempts (requests, commands) at once.
const MAX_ATTEMPTS_AT_ONCE: usize = 16;

/// One notification to one target, until delivered or given up.
struct Delivery {
    store: Arc<dyn RunStore>,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    target: NotifyTarget,
    notice: Notice,
    stop: CancellationToken,
    /// The config's environment: its masker for every error recorded or
    /// logged, its base variables for a command, its secrets for a
    /// target's `password_secret`.
    environment: Arc<crate::exec::Environment>,
    attempts: Arc<tokio::sync::Semaphore>,
}

impl Delivery {
    /// Delivers, retrying, then returns `lane` for the next in it.
    async fn run(self, lane: Lane) -> Lane {
        self.deliver().await;
        lane
    }

    async fn deliver(self) {
        let n = &self.notice;
        let begun = self.store.begin_notification(&n.job, n.run_id, &n.target, n.event.as_str()).await;
        let id = begun.map_err(|e| tracing::warn!(error = %e, "cannot record a notification")).ok();
        let started = tokio::time::Instant::now();
        let mut backoff = Backoff::new(self.target.retry_delay(), MAX_RETRY_WAIT);
        let mut attempts = 0u32;
        // Kept when it is delivered at last: why it took more than one attempt.
        let mut last_error: Option<String> = None;
        loop {
            attempts += 1;
            let tried = tokio::select! {
                tried = async {
                    let _slot = self.attempts.acquire().await;
                    self.attempt().await
                } => tried,
                () = self.stop.cancelled() => Err("the daemon stopped before it was delivered".to_string()),
            };
            // What a target answered may quote a secret (a command's stderr).
            let tried = tried.map_err(|mut e| {
                self.environment.masker().mask_string(&mut e);
                e
            });
            let error = match tried {
                Ok(()) => {
                    // Recorded and counted before it is logged: the log line says it is all done.
                    self.record(id, DeliveryStatus::Delivered, attempts, last_error.as_deref()).await;
                    self.metrics.notification(&n.target, DeliveryStatus::Delivered.as_str());
                    return tracing::info!(job = %n.job, run_id = n.run_id, target = %n.target, event = %n.event, attempts, "notification delivered");
                }
                Err(e) => e,
            };
            let wait = backoff.next_wait();
            if self.stop.is_cancelled() || started.elapsed() + wait > self.target.retry_for() {
                self.record(id, DeliveryStatus::Failed, attempts, Some(&error)).await;
                self.metrics.notification(&n.target, DeliveryStatus::Failed.as_str());
                return tracing::warn!(job = %n.job, run_id = n.run_id, target = %n.target, event = %n.event, attempts, error = %error, "notification not delivered; given up");
            }
            self.record(id, DeliveryStatus::Pending, attempts, Some(&error)).await;
            tracing::debug!(job = %n.job, target = %n.target, event = %n.event, attempts, error = %error, retry_in = ?wait, "notification attempt failed; retrying");
            last_error = Some(error);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.stop.cancelled() => {}
            }
        }
    }

    async fn record(&self, id: Option<i64>, status: DeliveryStatus, attempts: u32, error: Option<&str>) {
        let Some(id) = id else { return };
        if let Err(e) = self.store.update_notification(id, status, attempts, error).await {
            tracing::warn!(error = %e, "cannot record a notification's delivery");
        }
    }

    /// One attempt: the request (or the command, or the mail), bounded by
    /// the target's `timeout`.
    async fn attempt(&self) -> Result<(), String> {
        attempt(&self.client, &self.target, &self.environment, &self.notice).await
    }
}

/// One attempt of `target` for `notice`, whatever its kind.
async fn attempt(
    client: &reqwest::Client,
    target: &NotifyTarget,
    environment: &crate::exec::Environment,
    notice: &Notice,
) -> Result<(), String> {
    if let Some(argv) = &target.command {
        return command::run(argv, notice, target.timeout(), environment.base()).await;
    }
    if let Some(mail) = &target.email {
        return email::send(mail, environment.secrets(), notice, target.timeout()).await;
    }
    attempt_webhook(client, target, notice).await
}

/// One request of a webhook target, bounded by its `timeout`.
async fn attempt_webhook(client: &reqwest::Client, target: &NotifyTarget, notice: &Notice) -> Result<(), String> {
    let request = notice::request(target, notice)?;
    let mut builder = client.request(request.method, &request.url).timeout(target.timeout()).body(request.body);
    for (k, v) in &request.headers {
        builder = builder.header(k, v);
    }
    // A webhook's path and query are often its credential (Slack's
    // `/services/T/B/X`, a healthchecks ping id): errors, which are stored,
    // logged and served, name the scheme and host only.
    let shown = redacted_url(&request.url);
    let response = builder.send().await.map_err(|e| format!("{shown}: {}", error_chain(&e.without_url())))?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(format!("{shown} answered HTTP {status}")) }
}

/// `https://hooks.slack.com/…` for `https://hooks.slack.com/services/T/B/X?x=1`.
fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if u.path().len() > 1 || u.query().is_some() { "/…" } else { "" };
            format!("{}://{host}{port}{rest}", u.scheme())
        }
        Err(_) => "the webhook's URL".to_string(),
    }
}

/// Sends one `test` notification to `target` (named `name`), one attempt,
/// nothing recorded: `gatherd notify test NAME`. `environment` is the
/// config's: a command's base variables, the password of a target that
/// logs in.
pub async fn send_test(
    name: &str,
    target: &NotifyTarget,
    environment: &crate::exec::Environment,
) -> Result<(), String> {
    let notice = Notice {
        event: NotifyEvent::Test,
        job: String::new(),
        run_id: None,
        status: None,
        error: None,
        failures: 0,
        run_url: None,
        at: Utc::now(),
        message: Notice::describe(NotifyEvent::Test, "", 0, None),
        target: name.to_string(),
    };
    attempt(&reqwest::Client::new(), target, environment, &notice).await
}

/// Until wall-clock time `at` (checked at least every minute, so a clock
/// step or a suspend does not stretch it), or never when it is `None`.
async fn sleep_until_wall(at: Option<chrono::DateTime<Utc>>) {
    let Some(at) = at else { return std::future::pending().await };
    loop {
        let left = (at - Utc::now()).to_std().unwrap_or_default();
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(Duration::from_secs(60))).await;
    }
}

/// An error with its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
