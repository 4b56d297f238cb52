//! Walking the run tree: groups await their children with asyncio's semantics,
//! steps run their attempts with retries and timeouts, and every start and end
//! becomes a [`RunEvent`].
//!
//! All children of a group are polled from the group's own task through a
//! `FuturesUnordered`: no task or thread per step, so a 100,000-step gather costs
//! one boxed future per running step and nothing quadratic.
//!
//! Architecture Invariant: a node's future returns only once every future it
//! started has finished (cancelled children are awaited, not dropped), so the
//! events of a node's subtree always precede its own `NodeFinished`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::step::{self, Inputs, RunLines, StepEnv, StepError, StepLines};
use super::{NodeKind, RunContext, RunEvent, RunOutcome, Status};
use crate::job::{Group, GroupMode, Job, Node, OnError, Step, StepKind, Template, Trigger};

/// Why a node did not produce a value.
#[derive(Debug, Clone)]
pub(super) struct NodeFailure {
    pub(super) status: Status,
    pub(super) error: String,
}

impl NodeFailure {
    pub(super) fn new(status: Status, error: impl Into<String>) -> NodeFailure {
        NodeFailure { status, error: error.into() }
    }
}

pub(super) type NodeResult = Result<Value, NodeFailure>;

/// Runs the whole job; see [`super::run`].
pub(super) async fn run(job: Arc<Job>, ctx: RunContext, events: UnboundedSender<RunEvent>) -> RunOutcome {
    let start = Instant::now();
    let started_at = chrono::Utc::now();
    let outcome_steps = outcome_steps(&job);
    // Statuses are kept only when a handler or a `finally` may read them.
    let tracks_ends = job.handlers.iter().next().is_some() || !outcome_steps.is_empty();
    let runner = Runner {
        wanted: referenced_names(&job),
        outputs: Mutex::new(HashMap::new()),
        ends: tracks_ends.then(|| Mutex::new(HashMap::new())),
        outcome_steps,
        run_end: Mutex::new(None),
        job_info: serde_json::json!({ "name": job.name, "timezone": timezone(&job) }),
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        // The job's `max_output` wins over the config's.
        lines: RunLines::new(start, events.clone(), ctx.limits.max_output.with(&job.max_output))
            .masked(ctx.environment.masker().clone()),
        start,
        job: job.clone(),
        events,
        ctx,
    };
    runner.emit(RunEvent::RunStarted { job: job.name.as_str().into(), started_at });
    let token = runner.ctx.cancel.child_token();
    let (result, timed_out) = guarded(job.timeout, &token, runner.node(&job.root, "", token.clone(), None)).await;
    let outcome = match result {
        Ok(value) => RunOutcome { status: Status::Succeeded, result: Some(value), error: None },
        Err(f) if timed_out => RunOutcome {
            status: Status::TimedOut,
            result: None,
            error: Some(format!("job timed out after {}", humantime::format_duration(job.timeout.unwrap_or_default()))),
        }
        .with_cause(&f),
        Err(f) => RunOutcome { status: f.status, result: None, error: Some(f.error) },
    };
    runner.handlers(&outcome).await;
    // What the caller is told is masked as the events are.
    let mut outcome = outcome;
    let masker = runner.ctx.environment.masker();
    if let Some(e) = &mut outcome.error {
        masker.mask_string(e);
    }
    if let Some(v) = &mut outcome.result {
        masker.mask_value(v);
    }
    runner.emit(RunEvent::RunFinished {
        status: outcome.status,
        result: outcome.result.clone(),
        error: outcome.error.clone(),
        duration: runner.start.elapsed(),
    });
    outcome
}

impl RunOutcome {
    fn with_cause(mut self, f: &NodeFailure) -> RunOutcome {
        if f.status != Status::Cancelled
            && let Some(e) = &mut self.error
        {
            e.push_str(&format!(" ({})", f.error));
        }
        self
    }
}

/// Which outputs to keep for later steps to read.
enum Wanted {
    /// Only these names: the ones some template reads.
    Names(HashSet<String>),
    /// All of them: a `script` step may read any `steps.NAME.output`.
    All,
}

impl Wanted {
    fn contains(&self, name: &str) -> bool {
        match self {
            Wanted::Names(names) => names.contains(name),
            Wanted::All => true,
        }
    }
}

/// The zone the `date` filter writes in: the job's `timezone`, else the
/// host's UTC offset now (at the run's start).
fn timezone(job: &Job) -> String {
    match &job.trigger {
        Trigger::Cron { timezone: Some(tz), .. } => tz.name().to_string(),
        _ => chrono::Local::now().offset().to_string(),
    }
}

/// The steps inside a handler or a `finally` (their `each` steps too): they
/// read statuses, and a null `output` for a node that did not succeed.
fn outcome_steps(job: &Job) -> HashSet<Arc<str>> {
    fn all(node: &Node, out: &mut HashSet<Arc<str>>) {
        match node {
            Node::Step(s) => {
                out.insert(s.name.clone());
            }
            Node::Script(_) => {}
            Node::Group(g) => {
                for child in g.children.iter().chain(g.finally.as_deref()) {
                    all(child, out);
                }
                if let Some(each) = &g.each {
                    out.insert(each.name.clone());
                }
            }
        }
    }
    fn finallies(node: &Node, out: &mut HashSet<Arc<str>>) {
        if let Node::Group(g) = node {
            for child in &g.children {
                finallies(child, out);
            }
            if let Some(f) = &g.finally {
                all(f, out);
            }
        }
    }
    let mut out = HashSet::new();
    finallies(&job.root, &mut out);
    for (_, handler) in job.handlers.iter() {
        all(handler, &mut out);
    }
    out
}

/// The names (steps and groups) some template reads `steps.NAME.output` of: only
/// their outputs are kept, so a big fan-out keeps nothing extra.
fn referenced_names(job: &Job) -> Wanted {
    fn templates(step: &Step) -> Option<Vec<&Template>> {
        Some(match &step.kind {
            StepKind::Sleep(_) | StepKind::Call(_) => Vec::new(),
            StepKind::Script(_) => return None,
            StepKind::Exec(e) => {
                let mut v: Vec<&Template> = e.argv.iter().collect();
                v.extend(process_templates(&e.process));
                v
            }
            StepKind::Shell(s) => {
                let mut v = vec![&s.command];
                v.extend(process_templates(&s.process));
                v
            }
            StepKind::Http(h) => {
                let mut v = vec![&h.url];
                v.extend(h.headers.iter().map(|(_, t)| t));
                v.extend(h.body.iter());
                v
            }
            StepKind::ReadFile(r) => vec![&r.path],
            StepKind::WriteFile(w) => vec![&w.path, &w.content],
        })
    }
    fn process_templates(p: &crate::job::ProcessSpec) -> impl Iterator<Item = &Template> {
        p.env.iter().map(|(_, t)| t).chain(p.cwd.iter()).chain(p.stdin.iter())
    }
    fn walk(node: &Node, out: &mut HashSet<String>) -> Option<()> {
        match node {
            Node::Step(s) => add(s, out),
            // A script gets its steps' results as return values, not by name.
            Node::Script(_) => Some(()),
            Node::Group(g) => {
                for child in g.children.iter().chain(g.finally.as_deref()) {
                    walk(child, out)?;
                }
                match &g.each {
                    Some(each) => add(each, out),
                    None => Some(()),
                }
            }
        }
    }
    fn add(s: &Step, out: &mut HashSet<String>) -> Option<()> {
        for t in templates(s)? {
            out.extend(t.steps().iter().cloned());
        }
        Some(())
    }
    let mut out = HashSet::new();
    let walked = walk(&job.root, &mut out)
        .and_then(|()| job.handlers.iter().try_for_each(|(_, handler)| walk(handler, &mut out)));
    match walked {
        Some(()) => Wanted::Names(out),
        None => Wanted::All,
    }
}

/// Runs `fut` (which must stop soon after `token` is cancelled); if `timeout`
/// passes first, cancels `token`, waits for `fut` to wind down and reports that
/// the timeout fired. The `asyncio.wait_for` of the executor.
async fn guarded<F: Future>(timeout: Option<Duration>, token: &CancellationToken, fut: F) -> (F::Output, bool) {
    match timeout {
        None => (fut.await, false),
        // Boxed: the race with a timer is big, and most steps have no
        // timeout to pay for.
        Some(limit) => Box::pin(race_timer(limit, token, fut)).await,
    }
}

/// [`guarded`] with a timeout.
async fn race_timer<F: Future>(limit: Duration, token: &CancellationToken, fut: F) -> (F::Output, bool) {
    tokio::pin!(fut);
    tokio::select! {
        biased;
        out = &mut fut => (out, false),
        () = tokio::time::sleep(limit) => {
            token.cancel();
            (fut.await, true)
        }
    }
}

/// A node as its `NodeStarted` named it: what its `NodeFinished` repeats.
#[derive(Debug, Clone)]
pub(super) struct NodeStart {
    pub(super) path: Arc<str>,
    pub(super) name: Arc<str>,
    pub(super) kind: NodeKind,
    /// When it started; `None` for a node skipped before its turn.
    pub(super) started: Option<Duration>,
}

/// How each node ended: its status and error, by name.
type Ends = HashMap<String, (Status, Option<String>)>;

pub(super) struct Runner {
    pub(super) job: Arc<Job>,
    pub(super) ctx: RunContext,
    events: UnboundedSender<RunEvent>,
    start: Instant,
    /// Where steps send their lines (the same clock and channel).
    pub(super) lines: RunLines,
    /// Outputs of finished nodes that some template reads.
    outputs: Mutex<HashMap<String, Value>>,
    wanted: Wanted,
    /// How the wanted nodes ended (status, error), when a handler or a
    /// `finally` may read it; `None` when nothing can.
    ends: Option<Mutex<Ends>>,
    /// The steps that see statuses (see [`outcome_steps`]).
    outcome_steps: HashSet<Arc<str>>,
    /// How the main tree ended, once it has: what handlers read as `run`.
    run_end: Mutex<Option<(Status, Option<String>)>>,
    /// `job` in templates.
    job_info: Value,
    /// `run.started_at`, RFC 3339 in UTC.
    started_at: String,
}

/// Which of a group's futures finished: child `i`, or the `each` run for the
/// `i`-th result to arrive.
#[derive(Clone, Copy)]
enum Slot {
    Child(usize),
    Each(usize),
}

/// A node's future tagged with its slot in the group: the tag travels with
/// the box it wraps, so a child costs no second allocation. Not polled once
/// the task's budget is spent (see [`budget_spent`]).
struct Tagged<'a> {
    slot: Slot,
    fut: BoxFuture<'a, NodeResult>,
}

#[cfg(test)]
thread_local! {
    /// How many times a group's children were polled on this thread: what
    /// the fan-out tests count.
    pub(super) static CHILD_POLLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Future for Tagged<'_> {
    type Output = (Slot, NodeResult);

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        #[cfg(test)]
        CHILD_POLLS.with(|c| c.set(c.get() + 1));
        if budget_spent(cx) {
            return std::task::Poll::Pending;
        }
        let slot = self.slot;
        self.fut.as_mut().poll(cx).map(|result| (slot, result))
    }
}

/// Whether the task's cooperative budget is spent; if so, the child about to
/// be polled is woken to be polled again (on the task's next turn) and must
/// not be polled now.
///
/// A child's poll would be refused anyway (tokio's sleeps, channels and
/// timers return `Pending` on an empty budget), but tokio defers the refused
/// child's wake until the task yields, so the `FuturesUnordered` sees no
/// child woken and goes on polling every ready one, each refused: a set of
/// `n` ready steps cost `n` polls per 128 it finished, quadratic, under any
/// runtime scheduler (the daemon's run task) but not on `gatherd run`'s
/// `block_on` thread, where tokio wakes at once. Woken here, the set yields
/// after two such children (its own rule) and the task comes back with a
/// fresh budget.
pub(super) fn budget_spent(cx: &std::task::Context<'_>) -> bool {
    if tokio::task::coop::has_budget_remaining() {
        return false;
    }
    cx.waker().wake_by_ref();
    true
}

/// A future in a `FuturesUnordered` that does not poll its future once the
/// task's budget is spent; see [`budget_spent`].
pub(super) struct Budgeted<F>(pub(super) F);

impl<F: Future + Unpin> Future for Budgeted<F> {
    type Output = F::Output;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        if budget_spent(cx) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

/// The name of the child (or `each` run) in `slot`, for a failure's message.
fn who(g: &Group, slot: Slot) -> String {
    match slot {
        Slot::Child(i) => g.children[i].name().to_string(),
        Slot::Each(k) => format!("{}[{k}]", g.each.as_ref().map_or("each", |e| &*e.name)),
    }
}

/// The failure of a group (not a race) whose children did not all succeed:
/// `failures` (who, why), at least one.
fn group_failure(g: &Group, failures: &[(String, NodeFailure)]) -> NodeFailure {
    let error = match failures {
        [(who, only)] => format!("`{who}` {}: {}", only.status, only.error),
        _ => {
            let all =
                failures.iter().map(|(w, f)| format!("`{w}` {}: {}", f.status, f.error)).collect::<Vec<_>>().join("; ");
            format!("{} children of `{}` did not succeed: {all}", failures.len(), g.name)
        }
    };
    NodeFailure::new(Status::Failed, error)
}

/// What a group keeps of its children's results: the one part of a group's
/// loop that differs by mode. Each variant holds only what its mode returns.
enum Collector {
    /// gather, sequence: the results by child, in the order written.
    InOrder(Vec<Option<Value>>),
    /// as_completed: the results in the order they arrive.
    Arrived(Vec<Value>),
    /// as_completed with `each`: the `each` results, by the arrival of the
    /// child that started them.
    Each(Vec<Option<Value>>),
    /// race: the first success.
    Race(Option<Value>),
}

/// What became of a success given to [`Collector::add`].
enum Added {
    /// Kept (or dropped: a result that arrived after the group stopped).
    Kept,
    /// The first success of a race: stop the others.
    Won,
    /// Run the `each` step as run `k`, with this input.
    RunEach(usize, Value),
}

impl Collector {
    fn new(g: &Group) -> Collector {
        match g.mode {
            GroupMode::Gather | GroupMode::Sequence => Collector::InOrder(vec![None; g.children.len()]),
            GroupMode::AsCompleted if g.each.is_some() => Collector::Each(Vec::new()),
            GroupMode::AsCompleted => Collector::Arrived(Vec::new()),
            GroupMode::Race => Collector::Race(None),
        }
    }

    /// Takes the success of the child or `each` run in `slot`; `stopping`:
    /// the group is winding down and starts nothing more.
    fn add(&mut self, slot: Slot, value: Value, stopping: bool) -> Added {
        match (self, slot) {
            (Collector::Race(winner), _) => {
                if winner.is_some() {
                    return Added::Kept;
                }
                *winner = Some(value);
                Added::Won
            }
            (Collector::Each(results), Slot::Child(_)) => {
                if stopping {
                    return Added::Kept;
                }
                results.push(None);
                Added::RunEach(results.len() - 1, value)
            }
            (Collector::Each(results), Slot::Each(k)) => {
                results[k] = Some(value);
                Added::Kept
            }
            (Collector::Arrived(results), _) => {
                results.push(value);
                Added::Kept
            }
            (Collector::InOrder(results), Slot::Child(i)) => {
                results[i] = Some(value);
                Added::Kept
            }
            // Only an `each` group starts `each` runs.
            (Collector::InOrder(_), Slot::Each(_)) => Added::Kept,
        }
    }

    /// The group's result once every child is done: the collected list, or
    /// the failures (`who`, why) in one message.
    fn result(self, g: &Group, failures: &[(String, NodeFailure)]) -> NodeResult {
        let list = match self {
            Collector::Race(winner) => {
                return winner.ok_or_else(|| {
                    let all =
                        failures.iter().map(|(w, f)| format!("`{w}`: {}", f.error)).collect::<Vec<_>>().join("; ");
                    NodeFailure::new(Status::Failed, format!("every child of race `{}` failed: {all}", g.name))
                });
            }
            _ if !failures.is_empty() => return Err(group_failure(g, failures)),
            Collector::Arrived(results) => results,
            Collector::InOrder(results) | Collector::Each(results) => {
                results.into_iter().map(Option::unwrap_or_default).collect()
            }
        };
        Ok(Value::Array(list))
    }
}

impl Runner {
    /// A runner for `job` that keeps every output, for tests that poke at
    /// single nodes.
    #[cfg(test)]
    pub(super) fn for_test(job: Arc<Job>, ctx: RunContext, events: UnboundedSender<RunEvent>) -> Runner {
        let start = Instant::now();
        let lines = RunLines::new(start, events.clone(), ctx.limits.max_output);
        Runner {
            wanted: Wanted::All,
            outputs: Mutex::new(HashMap::new()),
            ends: None,
            outcome_steps: HashSet::new(),
            run_end: Mutex::new(None),
            job_info: serde_json::json!({ "name": job.name, "timezone": timezone(&job) }),
            started_at: String::new(),
            start,
            lines,
            job,
            events,
            ctx,
        }
    }

    pub(super) fn emit(&self, mut event: RunEvent) {
        // The one place events leave the run tree: no sink ever sees a secret.
        self.ctx.environment.masker().mask_event(&mut event);
        // A closed receiver is not our problem: the run goes on.
        let _ = self.events.send(event);
    }

    pub(super) fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub(super) fn remember(&self, name: &str, value: &Value) {
        if self.wanted.contains(name) {
            let mut outputs = self.outputs.lock().unwrap_or_else(|e| e.into_inner());
            outputs.insert(name.to_string(), value.clone());
        }
    }

    /// What a step can read: `steps.NAME.output` for every remembered output,
    /// `job`, `run`, and `input` when there is one. A step in a handler or a
    /// `finally` (`outcome`) sees every wanted name, with its `status` and
    /// `error` (null until it ended) and an `output` null unless it
    /// succeeded, and `run.status` and `run.error`.
    fn inputs(&self, input: Option<&Value>, outcome: bool) -> Inputs {
        let outputs = self.outputs.lock().unwrap_or_else(|e| e.into_inner());
        let mut run = serde_json::json!({ "id": self.ctx.run_id, "started_at": self.started_at });
        let steps = match (&self.ends, outcome) {
            (Some(ends), true) => {
                let ends = ends.lock().unwrap_or_else(|e| e.into_inner());
                let mut steps = serde_json::Map::new();
                if let Wanted::Names(names) = &self.wanted {
                    for name in names {
                        steps
                            .insert(name.clone(), serde_json::json!({ "output": null, "status": null, "error": null }));
                    }
                }
                for (name, (status, error)) in ends.iter() {
                    let output = match status {
                        Status::Succeeded => outputs.get(name).cloned().unwrap_or(Value::Null),
                        _ => Value::Null,
                    };
                    let view = serde_json::json!({ "output": output, "status": status.as_str(), "error": error });
                    steps.insert(name.clone(), view);
                }
                let end = self.run_end.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let (status, error) = end.map_or(("running", None), |(s, e)| (s.as_str(), e));
                run["status"] = status.into();
                run["error"] = error.into();
                steps
            }
            _ => {
                // `check` refuses `run.status` here; a template that reaches
                // it another way (`run["status"]`) reads the truth, not a
                // render error.
                run["status"] = "running".into();
                run["error"] = Value::Null;
                outputs.iter().map(|(k, v)| (k.clone(), serde_json::json!({ "output": v }))).collect()
            }
        };
        Inputs { steps, input: input.cloned(), job: self.job_info.clone(), run }
    }

    /// `run` as a handler sees it (`id`, `started_at`, `status`, `error`).
    pub(super) fn run_view(&self) -> Value {
        self.inputs(None, true).run
    }

    /// Runs the handlers that apply to how the main tree ended (`outcome`),
    /// in order, each as an extra root after `main`. A cancelled run runs
    /// none: its `on_exit` is recorded skipped.
    async fn handlers(&self, outcome: &RunOutcome) {
        let handlers = &self.job.handlers;
        if handlers.iter().next().is_none() {
            return;
        }
        *self.run_end.lock().unwrap_or_else(|e| e.into_inner()) = Some((outcome.status, outcome.error.clone()));
        for (key, node) in handlers.iter() {
            let applies = match key {
                "on_failure" => matches!(outcome.status, Status::Failed | Status::TimedOut),
                "on_success" => outcome.status == Status::Succeeded,
                _ => true,
            };
            if !applies {
                continue;
            }
            if outcome.status == Status::Cancelled || self.ctx.cancel.is_cancelled() {
                self.skip_because(node, "", "not started: the run was cancelled");
                continue;
            }
            let token = self.ctx.cancel.child_token();
            // A handler's failure is recorded (its own events) and changes
            // nothing else.
            let _ = self.node(node, "", token, None).await;
        }
    }

    /// Runs one node under its own `token`, emitting its start and end.
    pub(super) fn node<'a>(
        &'a self,
        node: &'a Node,
        parent: &'a str,
        token: CancellationToken,
        input: Option<Value>,
    ) -> BoxFuture<'a, NodeResult> {
        // One box per kind of node, so a step in flight costs the size of a
        // step's future, not that of a group's or a script's.
        match node {
            Node::Step(s) => Box::pin(self.step(s, join(parent, &s.name), token, input)),
            Node::Group(g) => Box::pin(self.group_node(g, parent, join(parent, &g.name), token)),
            Node::Script(s) => Box::pin(self.script_node(s, join(parent, &s.name), token)),
        }
    }

    async fn group_node(&self, g: &Group, parent: &str, path: Arc<str>, token: CancellationToken) -> NodeResult {
        let node = self.start_node(path, g.name.as_str().into(), g.mode.node_kind());
        // With a `finally`, the group's own timeout must not cancel `token`:
        // the finally runs under it, and only a cancel from above stops it.
        let own = if g.finally.is_some() { token.child_token() } else { token.clone() };
        let (result, timed_out) = guarded(g.timeout, &own, self.group(g, &node.path, &own)).await;
        let result = match result {
            Err(_) if timed_out => Err(NodeFailure::new(
                Status::TimedOut,
                format!(
                    "group `{}` timed out after {}",
                    g.name,
                    humantime::format_duration(g.timeout.unwrap_or_default())
                ),
            )),
            other => other,
        };
        if let Ok(v) = &result {
            self.remember(&g.name, v);
        }
        self.finish(node, 1, &result, false);
        if let Some(finally) = g.finally.as_deref() {
            self.finally(finally, parent, token).await;
        }
        result
    }

    /// Runs a group's `finally` beside it (its path is the group's sibling)
    /// once the group is done, under the group's own `token`: a cancel from
    /// above skips it or cancels it; the group's own failure, timeout or
    /// `on_error` does not. Its result changes nothing of the group's.
    async fn finally(&self, finally: &Node, parent: &str, token: CancellationToken) {
        if token.is_cancelled() {
            self.skip_because(finally, parent, "not started: cancelled before its turn");
            return;
        }
        let token = match finally {
            Node::Step(_) => token,
            Node::Group(_) | Node::Script(_) => token.child_token(),
        };
        let _ = self.node(finally, parent, token, None).await;
    }

    /// Emits the `NodeStarted` of a node, now; the value names it for its
    /// [`finish`](Runner::finish).
    pub(super) fn start_node(&self, path: Arc<str>, name: Arc<str>, kind: NodeKind) -> NodeStart {
        let at = self.now();
        self.emit(RunEvent::NodeStarted { path: path.clone(), name: name.clone(), kind, at });
        NodeStart { path, name, kind, started: Some(at) }
    }

    /// Emits the `NodeFinished` of `node` after `attempts` attempts.
    pub(super) fn finish(&self, node: NodeStart, attempts: u32, result: &NodeResult, truncated: bool) {
        self.finish_with(node, attempts, result, truncated, None);
    }

    /// [`finish`](Runner::finish), recording `failed_output` as the output
    /// of a node that did not succeed (what a failed process printed).
    fn finish_with(
        &self,
        node: NodeStart,
        attempts: u32,
        result: &NodeResult,
        truncated: bool,
        failed_output: Option<Value>,
    ) {
        let (status, output, error) = match result {
            Ok(v) => (Status::Succeeded, Some(v.clone()), None),
            Err(f) => (f.status, failed_output, Some(f.error.clone())),
        };
        let NodeStart { path, name, kind, started } = node;
        if let Some(ends) = &self.ends
            && self.wanted.contains(&name)
        {
            ends.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), (status, error.clone()));
        }
        self.emit(RunEvent::NodeFinished {
            path,
            name,
            kind,
            status,
            attempts,
            started,
            at: self.now(),
            output,
            error,
            truncated,
        });
    }

    /// The body of a group: start children up to the limit, collect results by
    /// the mode's rule, apply `on_error`, fire `each`.
    async fn group(&self, g: &Group, path: &str, token: &CancellationToken) -> NodeResult {
        let n = g.children.len();
        let limit = match g.mode {
            GroupMode::Sequence => 1,
            _ => g.limit.map_or(n, |l| l.get()),
        };
        // Cancelling this one stops the children (on_error, a race won) without
        // marking the group itself cancelled.
        let children_token = token.child_token();
        let mut running: FuturesUnordered<Tagged<'_>> = FuturesUnordered::new();
        let mut next = 0;
        let mut collected = Collector::new(g);
        let mut failures: Vec<(String, NodeFailure)> = Vec::new();
        let mut stopping = false;

        loop {
            while !stopping && next < n && running.len() < limit && !token.is_cancelled() {
                let child = &g.children[next];
                // A step never cancels its own token (its timeout cancels the
                // attempt's), so steps share the group's; a group or script
                // may cancel its own (a timeout), so it gets a child.
                let child_token = match child {
                    Node::Step(_) => children_token.clone(),
                    Node::Group(_) | Node::Script(_) => children_token.child_token(),
                };
                running.push(Tagged { slot: Slot::Child(next), fut: self.node(child, path, child_token, None) });
                next += 1;
            }
            let Some((slot, result)) = running.next().await else { break };
            match result {
                Ok(value) => match collected.add(slot, value, stopping) {
                    Added::Kept => {}
                    Added::Won => {
                        stopping = true;
                        children_token.cancel();
                    }
                    Added::RunEach(k, input) => {
                        // Only a group with an `each` asks for a run of it.
                        let Some(each) = g.each.as_deref() else { continue };
                        let each_path: Arc<str> = format!("{path}/{}[{k}]", each.name).into();
                        let each_token = children_token.clone();
                        running.push(Tagged {
                            slot: Slot::Each(k),
                            fut: Box::pin(self.step(each, each_path, each_token, Some(input))),
                        });
                    }
                },
                Err(failure) => {
                    // A child cancelled by our own stop is a consequence, not a cause.
                    let consequence = failure.status == Status::Cancelled && (stopping || token.is_cancelled());
                    if !consequence {
                        failures.push((who(g, slot), failure));
                        if g.mode != GroupMode::Race && g.on_error == OnError::Cancel && !stopping {
                            stopping = true;
                            children_token.cancel();
                        }
                    }
                }
            }
        }

        // Children never started (a cancel came first) are recorded as skipped.
        for child in &g.children[next..] {
            self.skip(child, path);
        }
        if token.is_cancelled() {
            return Err(NodeFailure::new(Status::Cancelled, "cancelled"));
        }
        collected.result(g, &failures)
    }

    /// Records `node` and everything under it as skipped.
    pub(super) fn skip(&self, node: &Node, parent: &str) {
        self.skip_because(node, parent, "not started: cancelled before its turn");
    }

    /// Records `node`, everything under it and its `finally` as skipped, `why`.
    fn skip_because(&self, node: &Node, parent: &str, why: &str) {
        let path = join(parent, node.name());
        if let Node::Group(g) = node {
            for child in &g.children {
                self.skip_because(child, &path, why);
            }
        }
        let kind = match node {
            Node::Group(g) => g.mode.node_kind(),
            Node::Step(s) => s.kind.node_kind(),
            Node::Script(_) => NodeKind::Script,
        };
        let result = Err(NodeFailure::new(Status::Skipped, why));
        self.finish(NodeStart { path, name: node.name().into(), kind, started: None }, 0, &result, false);
        if let Node::Group(Group { finally: Some(finally), .. }) = node {
            self.skip_because(finally, parent, why);
        }
    }

    /// Runs a step: attempts, each under the step's `timeout`, with retries.
    pub(super) async fn step(
        &self,
        s: &Step,
        path: Arc<str>,
        token: CancellationToken,
        input: Option<Value>,
    ) -> NodeResult {
        let node = self.start_node(path, s.name.clone(), s.kind.node_kind());
        let inputs = || self.inputs(input.as_ref(), self.outcome_steps.contains(&s.name));
        let env = StepEnv {
            job: &self.job,
            ctx: &self.ctx,
            inputs: &inputs,
            lines: StepLines::new(&self.lines, &node.path),
            attempt: 1.into(),
        };
        let mut attempt = 0;
        let (result, truncated, failed_output) = loop {
            attempt += 1;
            env.attempt.store(attempt, std::sync::atomic::Ordering::Relaxed);
            // Only a timeout cancels an attempt alone; without one the attempt
            // runs under the step's token and costs no token of its own.
            let attempt_token = if s.timeout.is_some() { token.child_token() } else { token.clone() };
            let attempt_run = step::run_attempt(s, &env, &attempt_token);
            // `guarded` inlined: without a timeout the step holds the attempt
            // alone (48 bytes), not guarded's state around it (128).
            let (result, timed_out) = match s.timeout {
                None => (attempt_run.await, false),
                Some(limit) => Box::pin(race_timer(limit, &attempt_token, attempt_run)).await,
            };
            // A block, so what a failed attempt printed is not held across
            // the retry's wait (the step's future stays small).
            let failure = {
                let (failure, printed) = match result {
                    Ok(out) => break (Ok(out.value), out.truncated, None),
                    Err(StepError::Cancelled) if timed_out => (
                        NodeFailure::new(
                            Status::TimedOut,
                            format!("timed out after {}", humantime::format_duration(s.timeout.unwrap_or_default())),
                        ),
                        None,
                    ),
                    Err(StepError::Cancelled) => {
                        break (Err(NodeFailure::new(Status::Cancelled, "cancelled")), false, None);
                    }
                    Err(StepError::Failed(e)) => (NodeFailure::new(Status::Failed, e), None),
                    Err(StepError::FailedWithOutput(e, out)) => (NodeFailure::new(Status::Failed, e), Some(out)),
                };
                if token.is_cancelled() {
                    break (Err(NodeFailure::new(Status::Cancelled, "cancelled")), false, None);
                }
                if attempt > s.retry.retries {
                    // A failed process's stdout is its recorded output.
                    let (value, truncated) = printed.map_or((None, false), |o| (Some(o.value), o.truncated));
                    break (Err(failure), truncated, value);
                }
                failure
            };
            let retry_in = s.retry.delay_before(attempt);
            self.emit(RunEvent::AttemptFailed {
                path: node.path.clone(),
                attempt,
                error: failure.error,
                retry_in,
                at: self.now(),
            });
            if !wait_or_cancel(retry_in, &token).await {
                break (Err(NodeFailure::new(Status::Cancelled, "cancelled")), false, None);
            }
        };
        if let Ok(v) = &result {
            self.remember(&s.name, v);
        }
        // The step's lines end before the step does.
        env.lines.finish();
        drop(env);
        self.finish_with(node, attempt, &result, truncated, failed_output);
        result
    }
}

/// Waits `d` unless `token` fires first; false if it did. Boxed, so a step's
/// future does not carry a timer for retries it may never make.
fn wait_or_cancel(d: Duration, token: &CancellationToken) -> BoxFuture<'_, bool> {
    Box::pin(async move {
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            () = token.cancelled() => false,
        }
    })
}

/// The path of `name` under `parent`, built in one allocation.
fn join(parent: &str, name: &str) -> Arc<str> {
    if parent.is_empty() {
        return name.into();
    }
    let mut path = String::with_capacity(parent.len() + 1 + name.len());
    path.push_str(parent);
    path.push('/');
    path.push_str(name);
    path.into()
}
