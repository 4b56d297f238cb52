//! Running a Rhai job's body: the script runs on a thread of its own and asks
//! for steps through `crate::script::api`; this driver runs them with the same
//! machinery as TOML steps and groups (so they are recorded, timed, retried and
//! cancelled the same way) and answers.
//!
//! Where the script runs. A script waits for its steps, so it must not hold a
//! thread of the bounded blocking pool (a script waiting on its own
//! `to_thread` would deadlock a full pool); it gets a plain thread, owned and
//! joined here. Its `to_thread` closures do go to the pool.
//!
//! When the driver waits. On the multi-threaded runtime (the binary), the
//! driver waits for the script's next request and for its steps at the same
//! time, so steps make progress while the script computes. On a current-thread
//! runtime (the paused-clock tests) it blocks while the script computes —
//! exactly asyncio's model, where code between two awaits holds the event loop —
//! so the paused clock cannot jump ahead of the script and every time is exact.
//!
//! Architecture Invariant: when the script ends, every step it left running is
//! cancelled and awaited (`asyncio.run` does the same), so a script node's
//! `NodeFinished` follows the events of everything it started.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use tokio::runtime::RuntimeFlavor;
use tokio_util::sync::CancellationToken;

use super::step::LineSender;
use super::tree::{Budgeted, NodeFailure, NodeResult, NodeStart, Runner};
use super::{NodeKind, RunEvent, Status, Stream};
use crate::job::{Group, GroupMode, Node, OnError, ScriptNode, Step};
use crate::script::Sandbox;
use crate::script::api::{self, Outcome, Request, ScriptEnd};

/// The stack of a script's thread: Rhai recursion is deep (each script call
/// level takes tens of KiB in a debug build), so the default 2 MiB is not
/// enough for the call-depth limit to be reached before the stack runs out.
pub(crate) const SCRIPT_STACK: usize = 16 * 1024 * 1024;

/// What to do with a finished piece of work.
enum Pending {
    /// Answer the script with the result.
    Reply(Sender<Outcome>),
    /// Answer with the single result of a `wait_for` group.
    Single(Sender<Outcome>),
    /// Hand the result to a collection (`as_completed`, settled `gather`) as
    /// its child number `index`.
    Collect { iter: u64, index: usize },
    /// Keep the result for a spawned step's handle.
    Handle(u64),
}

/// Children whose results the driver collects itself: an `as_completed` (the
/// script takes them one by one) or a settled `gather` (answered at the end).
struct Iter {
    /// Results not yet taken by the script, in finish order.
    ready: VecDeque<Outcome>,
    /// Children not finished yet: running, or waiting in `queue`.
    running: usize,
    /// Children waiting for a place in the window (`#{ limit: N }`), in
    /// the order given, each with its index; the next starts when one ends.
    queue: VecDeque<(usize, Node)>,
    /// The token every child runs under.
    token: CancellationToken,
    /// The script waiting for the next results.
    waiting: Option<Sender<Vec<Outcome>>>,
    /// The group node the children are recorded under.
    group: OpenGroup,
    /// Failures become error maps (`return_exceptions=True`), not errors.
    settle: bool,
    /// For a settled gather: the results by child, and who waits for them.
    ordered: Option<(Vec<Value>, Sender<Outcome>)>,
}

/// A group node whose end the driver records itself.
struct OpenGroup {
    path: Arc<str>,
    name: Arc<str>,
    kind: NodeKind,
    started: Duration,
    failures: Vec<String>,
    results: Vec<Value>,
}

/// A spawned step.
struct Spawned {
    token: CancellationToken,
    result: Option<Outcome>,
    waiting: Vec<Sender<Outcome>>,
}

/// A piece of work: its id, the node it ran (for its name), its result.
/// Not polled once the task's budget is spent, as a group's children are.
type Work<'a> = Budgeted<BoxFuture<'a, (u64, Node, NodeResult)>>;

/// The driver's state for one script run.
struct Driver<'a> {
    runner: &'a Runner,
    path: Arc<str>,
    /// Parent of every step the script starts: cancelled when the script ends.
    children: CancellationToken,
    work: FuturesUnordered<Work<'a>>,
    pending: HashMap<u64, Pending>,
    iters: HashMap<u64, Iter>,
    spawned: HashMap<u64, Spawned>,
    next_id: u64,
    /// Uses of each name, for unique paths (`sleep_1`, `fetch`, `fetch#2`).
    /// An unnamed step counts under its kind and `_` (`sleep_`).
    names: HashMap<String, u32>,
    /// Scratch space for the `sleep_` key, so counting needs no allocation.
    key: String,
    /// Whether the script is blocked waiting for an answer.
    script_waits: bool,
    /// The script's `print`/`debug` lines, within the job's `max_output`.
    lines: LineSender,
}

impl Runner {
    /// Runs a Rhai job's body under `token`, emitting its start and end.
    pub(super) async fn script_node(&self, s: &ScriptNode, path: Arc<str>, token: CancellationToken) -> NodeResult {
        let node = self.start_node(path, s.name.as_str().into(), NodeKind::Script);
        let result = self.drive(s, &node.path, &token).await;
        if let Ok(v) = &result {
            self.remember(&s.name, v);
        }
        self.finish(node, 1, &result, false);
        result
    }

    async fn drive(&self, s: &ScriptNode, path: &Arc<str>, token: &CancellationToken) -> NodeResult {
        let probe = token.clone();
        let limits = self.ctx.script_limits.merged(&s.limits);
        // The wall-time limit counts waits too: the script's own probe
        // counts only while it computes, so the driver watches the deadline
        // while the script waits, and on it stops the script (`expired`) and
        // cancels its steps.
        let expired = Arc::new(AtomicBool::new(false));
        let flag = expired.clone();
        let wall_time_message = crate::script::wall_time_reached(&limits);
        let deadline = tokio::time::sleep(limits.wall_time);
        tokio::pin!(deadline);
        let sandbox =
            Sandbox { limits, cancelled: Arc::new(move || probe.is_cancelled() || flag.load(Ordering::Relaxed)) };
        let run = api::RunInfo { job_name: self.job.name.clone(), run_id: self.ctx.run_id };
        let (link, mut requests) = api::connect(sandbox, run);
        link.set_lookup(super::environment::script_lookup(&self.job, &self.ctx.environment));
        let code = s.code.clone();
        // A handler calls its function with what the run's end was.
        let entry = s.entry.clone().map(|function| (function, self.run_view()));
        let thread = std::thread::Builder::new()
            .name("gatherd-script".into())
            .stack_size(SCRIPT_STACK)
            .spawn(move || api::run_script(&code, link, entry))
            .map_err(|e| NodeFailure::new(Status::Failed, format!("cannot start the script's thread: {e}")))?;

        let mut driver = Driver {
            runner: self,
            path: path.clone(),
            children: token.child_token(),
            work: FuturesUnordered::new(),
            pending: HashMap::new(),
            iters: HashMap::new(),
            spawned: HashMap::new(),
            next_id: 0,
            names: HashMap::new(),
            key: String::new(),
            script_waits: false,
            lines: LineSender::new(&self.lines, path),
        };
        let blocking = tokio::runtime::Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread;
        let end = loop {
            let request = if blocking && !driver.script_waits {
                // The script is computing: hold the loop, as asyncio does.
                requests.next_blocking()
            } else if driver.work.is_empty() {
                tokio::select! {
                    request = requests.next() => request,
                    () = &mut deadline => break ScriptEnd::Failed(wall_time_message),
                }
            } else {
                tokio::select! {
                    request = requests.next() => request,
                    Some((id, node, result)) = driver.work.next() => {
                        driver.complete(id, node.name(), result);
                        continue;
                    }
                    () = &mut deadline => break ScriptEnd::Failed(wall_time_message),
                }
            };
            match request {
                Some(Request::Finished(end)) => break end,
                Some(request) => driver.handle(request),
                None => break ScriptEnd::Failed("the script's thread stopped without a result".into()),
            }
        };
        // `asyncio.run`: whatever the script left running is cancelled, and
        // every piece of work is awaited so its end is recorded.
        expired.store(matches!(end, ScriptEnd::Failed(_)), Ordering::Relaxed);
        driver.children.cancel();
        while let Some((id, node, result)) = driver.work.next().await {
            driver.complete(id, node.name(), result);
        }
        // The script's lines end before its node does.
        driver.lines.finish();
        // A script stopped mid-wait may ask for more before its probe stops
        // it: with nobody left to answer, its asks fail at once.
        drop(driver);
        drop(requests);
        if thread.join().is_err() {
            return Err(NodeFailure::new(Status::Failed, "the script's thread panicked"));
        }
        match end {
            ScriptEnd::Returned(value) => Ok(value),
            ScriptEnd::Failed(error) => Err(NodeFailure::new(Status::Failed, error)),
            ScriptEnd::Cancelled => Err(NodeFailure::new(Status::Cancelled, "cancelled")),
        }
    }
}

impl<'a> Driver<'a> {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A unique name: the one given, or the kind and a counter.
    fn name(&mut self, given: &str, kind: &str) -> String {
        use std::fmt::Write as _;
        let auto = given.is_empty();
        if auto {
            self.key.clear();
            self.key.push_str(kind);
            self.key.push('_');
        }
        let key = if auto { self.key.as_str() } else { given };
        // Only a name's first use allocates its key.
        let n = match self.names.get_mut(key) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                self.names.insert(key.to_string(), 1);
                1
            }
        };
        let mut name = String::with_capacity(key.len() + 8);
        name.push_str(key);
        if auto {
            let _ = write!(name, "{n}");
        } else if n > 1 {
            let _ = write!(name, "#{n}");
        }
        name
    }

    fn named(&mut self, mut step: Step) -> Step {
        step.name = self.name(&step.name, step.kind.key()).into();
        step
    }

    /// Starts `node` under `parent` (a path) as work `id`.
    fn start(&mut self, id: u64, node: Node, parent: Arc<str>, token: CancellationToken) {
        let runner = self.runner;
        self.work.push(Budgeted(Box::pin(async move {
            let node = node;
            let result = runner.node(&node, &parent, token, None).await;
            (id, node, result)
        })));
    }

    fn group(
        &mut self,
        mode: GroupMode,
        steps: Vec<Step>,
        limit: Option<NonZeroUsize>,
        timeout: Option<Duration>,
    ) -> Node {
        let label = match (mode, timeout) {
            (_, Some(_)) => "wait_for",
            (m, None) => m.key(),
        };
        let name = self.name("", label);
        let children = steps.into_iter().map(|s| Node::Step(self.named(s))).collect();
        Node::Group(Group {
            name,
            mode,
            children,
            limit,
            on_error: OnError::Cancel,
            timeout,
            each: None,
            finally: None,
        })
    }

    fn handle(&mut self, request: Request) {
        let token = self.children.child_token();
        let here = self.path.clone();
        self.script_waits = request.expects_reply();
        match request {
            Request::Await { step, reply } => {
                let id = self.id();
                let node = Node::Step(self.named(step));
                self.pending.insert(id, Pending::Reply(reply));
                self.start(id, node, here, token);
            }
            Request::Group { mode, steps, limit, reply } => {
                let id = self.id();
                let node = self.group(mode, steps, limit, None);
                self.pending.insert(id, Pending::Reply(reply));
                self.start(id, node, here, token);
            }
            Request::WaitFor { step, timeout, reply } => {
                let id = self.id();
                let node = self.group(GroupMode::Sequence, vec![step], None, Some(timeout));
                self.pending.insert(id, Pending::Single(reply));
                self.start(id, node, here, token);
            }
            Request::AsCompleted { steps, settle, limit, reply } => {
                let iter = self.collect(GroupMode::AsCompleted, steps, settle, limit, None, token);
                self.answer(reply, iter);
            }
            Request::Settled { steps, limit, reply } => {
                let slots = vec![Value::Null; steps.len()];
                self.collect(GroupMode::Gather, steps, true, limit, Some((slots, reply)), token);
            }
            // Every result already in is handed over at once: one round trip
            // per batch, not per result. Empty: nothing more will come.
            Request::Next { iter, reply } => match self.iters.get_mut(&iter) {
                Some(it) if !it.ready.is_empty() => {
                    let batch: Vec<Outcome> = it.ready.drain(..).collect();
                    self.answer(reply, batch);
                }
                Some(it) if it.running > 0 => it.waiting = Some(reply),
                _ => self.answer(reply, Vec::new()),
            },
            Request::Spawn { step, reply } => {
                let id = self.id();
                let node = Node::Step(self.named(step));
                self.spawned.insert(id, Spawned { token: token.clone(), result: None, waiting: Vec::new() });
                self.pending.insert(id, Pending::Handle(id));
                self.start(id, node, here, token);
                self.answer(reply, id);
            }
            Request::Done { handle, reply } => {
                let done = self.spawned.get(&handle).is_some_and(|s| s.result.is_some());
                self.answer(reply, done);
            }
            Request::Result { handle, reply } => match self.spawned.get_mut(&handle) {
                Some(Spawned { result: Some(outcome), .. }) => {
                    let outcome = outcome.clone();
                    self.answer(reply, outcome);
                }
                Some(s) => s.waiting.push(reply),
                None => self.answer(reply, Err("no such handle".to_string())),
            },
            Request::Cancel { handle, reply } => {
                if let Some(s) = self.spawned.get(&handle) {
                    s.token.cancel();
                }
                self.answer(reply, ());
            }
            Request::Log { debug: from_debug, text } => {
                // The log is a sink too: masked, as the line's event is.
                let shown = self.runner.ctx.environment.masker().mask(&text);
                tracing::info!(job = %self.runner.job.name, path = %self.path, from_debug, "{shown}");
                self.lines.line(if from_debug { Stream::Debug } else { Stream::Print }, text);
            }
            Request::Finished(_) => unreachable!("the driver's loop ends on Finished"),
        }
    }

    /// Starts `steps` under a group node the driver records itself, routing each
    /// result to the returned collection. With a `limit`, only that many run
    /// at once: the rest wait in the collection's queue, in order, and the
    /// next starts when one finishes (a TOML group's sliding window).
    fn collect(
        &mut self,
        mode: GroupMode,
        steps: Vec<Step>,
        settle: bool,
        limit: Option<NonZeroUsize>,
        ordered: Option<(Vec<Value>, Sender<Outcome>)>,
        token: CancellationToken,
    ) -> u64 {
        let iter = self.id();
        let name = self.name("", mode.key());
        let path: Arc<str> = format!("{}/{name}", self.path).into();
        let started = self.runner.now();
        self.runner.emit(RunEvent::NodeStarted {
            path: path.clone(),
            name: name.as_str().into(),
            kind: mode.node_kind(),
            at: started,
        });
        let running = steps.len();
        let window = limit.map_or(usize::MAX, NonZeroUsize::get);
        let mut queue = VecDeque::new();
        for (index, step) in steps.into_iter().enumerate() {
            // Named in the order given, whenever they start.
            let node = Node::Step(self.named(step));
            if index >= window {
                queue.push_back((index, node));
                continue;
            }
            let id = self.id();
            self.pending.insert(id, Pending::Collect { iter, index });
            // Nothing cancels one child alone: they can share the token.
            self.start(id, node, path.clone(), token.clone());
        }
        let group = OpenGroup {
            path,
            name: name.as_str().into(),
            kind: mode.node_kind(),
            started,
            failures: Vec::new(),
            results: Vec::new(),
        };
        self.iters.insert(
            iter,
            Iter { ready: VecDeque::new(), running, queue, token, waiting: None, group, settle, ordered },
        );
        if running == 0 {
            self.close_iter(iter);
        }
        iter
    }

    /// Sends an answer; the script goes on computing.
    fn answer<T>(&mut self, reply: Sender<T>, value: T) {
        // A script that stopped waiting (cancelled) no longer listens: fine.
        let _ = reply.send(value);
        self.script_waits = false;
    }

    /// A piece of work finished: route its result.
    fn complete(&mut self, id: u64, name: &str, result: NodeResult) {
        match self.pending.remove(&id) {
            Some(Pending::Reply(reply)) => self.answer(reply, outcome(name, result)),
            Some(Pending::Single(reply)) => {
                let single = outcome(name, result).map(|v| match v {
                    Value::Array(mut items) if items.len() == 1 => items.pop().unwrap_or_default(),
                    other => other,
                });
                self.answer(reply, single);
            }
            Some(Pending::Collect { iter, index }) => {
                let Some(it) = self.iters.get_mut(&iter) else { return };
                it.running -= 1;
                let outcome = match result {
                    Ok(v) => {
                        it.group.results.push(v.clone());
                        Ok(v)
                    }
                    Err(f) => {
                        let error = describe(name, &f);
                        it.group.failures.push(error.clone());
                        if it.settle {
                            Ok(serde_json::json!({ "step": name, "status": f.status, "error": f.error }))
                        } else {
                            Err(error)
                        }
                    }
                };
                if let Some((slots, _)) = &mut it.ordered {
                    slots[index] = outcome.unwrap_or_default();
                } else {
                    match it.waiting.take() {
                        Some(reply) => self.answer(reply, vec![outcome]),
                        None => it.ready.push_back(outcome),
                    }
                }
                self.start_queued(iter);
                if self.iters.get(&iter).is_some_and(|it| it.running == 0) {
                    self.close_iter(iter);
                }
            }
            Some(Pending::Handle(handle)) => {
                if let Some(s) = self.spawned.get_mut(&handle) {
                    let outcome = outcome(name, result);
                    s.result = Some(outcome.clone());
                    let waiting = std::mem::take(&mut s.waiting);
                    for reply in waiting {
                        self.answer(reply, outcome.clone());
                    }
                }
            }
            None => {}
        }
    }

    /// A child of collection `iter` finished: the next one waiting starts —
    /// unless the collection is being cancelled (the script ended), and then
    /// every one waiting is recorded skipped, as a TOML group's would be.
    fn start_queued(&mut self, iter: u64) {
        let Some(it) = self.iters.get_mut(&iter) else { return };
        if it.queue.is_empty() {
            return;
        }
        let path = it.group.path.clone();
        let token = it.token.clone();
        if token.is_cancelled() {
            let skipped: Vec<(usize, Node)> = it.queue.drain(..).collect();
            it.running -= skipped.len();
            for (_, node) in &skipped {
                it.group.failures.push(format!("`{}` skipped: not started", node.name()));
            }
            for (_, node) in &skipped {
                self.runner.skip(node, &path);
            }
            return;
        }
        let Some((index, node)) = it.queue.pop_front() else { return };
        let id = self.id();
        self.pending.insert(id, Pending::Collect { iter, index });
        self.start(id, node, path, token);
    }

    /// Records the end of a collection's group once its last child is done,
    /// and answers whoever waits for it.
    fn close_iter(&mut self, iter: u64) {
        let Some(it) = self.iters.get_mut(&iter) else { return };
        let g = &it.group;
        let result = match (&it.ordered, g.failures.len()) {
            // A settled gather's result is every child's, in order.
            (Some((slots, _)), _) => Ok(Value::Array(slots.clone())),
            (None, 0) => Ok(Value::Array(g.results.clone())),
            // Settled: the failures were handed on; the group did its job.
            (None, _) if it.settle => Ok(Value::Array(g.results.clone())),
            (None, n) => Err(NodeFailure::new(
                Status::Failed,
                format!("{n} of its steps did not succeed: {}", g.failures.join("; ")),
            )),
        };
        let node = NodeStart { path: g.path.clone(), name: g.name.clone(), kind: g.kind, started: Some(g.started) };
        self.runner.finish(node, 1, &result, false);
        let waiting = it.waiting.take();
        let ordered = it.ordered.take();
        if let Some(reply) = waiting {
            self.answer(reply, Vec::new());
        }
        if let Some((slots, reply)) = ordered {
            self.answer(reply, Ok(Value::Array(slots)));
        }
    }
}

/// A node's result as the script sees it; an error names the step.
fn outcome(name: &str, result: NodeResult) -> Outcome {
    result.map_err(|f| describe(name, &f))
}

/// A failure as the script sees it: the step named.
fn describe(name: &str, f: &NodeFailure) -> String {
    format!("`{name}` {}: {}", f.status, f.error)
}
