//! The asyncio-style API of Rhai jobs.
//!
//! Step constructors (`sleep`, `http_get`, `exec`, `to_thread`, …) return a
//! [`StepValue`] that has not run — the coroutine-object idea. Running
//! functions (`await_step`, `gather`, `as_completed`, `race`, `wait_for`,
//! `spawn`) send a [`Request`] to the executor's script driver and block the
//! script's own thread until it answers; the driver runs the steps exactly as it
//! runs TOML steps, so they are recorded, timed and cancellable the same way.
//!
//! Architecture Invariant: nothing here runs a step or touches the host; it
//! only describes steps and asks the driver. The driver lives in `crate::exec`.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rhai::{AST, Array, Dynamic, Engine, EvalAltResult, FnPtr, INT, ImmutableString, Map, NativeCallContext, Position};
use serde_json::Value;
use tokio::sync::Notify;

use crate::job::{
    CallStep, CancelProbe, ExecStep, GroupMode, HttpStep, ProcessSpec, ReadFileStep, Retry, ShellStep, SleepStep, Step,
    StepKind, Template, WriteFileStep,
};
use crate::script::{Sandbox, describe_error, is_cancellation, sandbox};

/// A step's result as the script sees it: the output, or why there is none.
pub type Outcome = Result<Value, String>;

/// What a script asks the driver to do. Each carries the sender its answer
/// goes back on; the script's thread waits on the other end.
#[derive(Debug)]
pub enum Request {
    /// Run one step (`await_step`).
    Await {
        /// The step.
        step: Step,
        /// Its result.
        reply: Sender<Outcome>,
    },
    /// Run steps together as a gather (result: the list, in order) or a race
    /// (result: the first success).
    Group {
        /// Gather or Race.
        mode: GroupMode,
        /// The steps.
        steps: Vec<Step>,
        /// At most this many at once (`#{ limit: N }`), as a TOML group's `limit`.
        limit: Option<NonZeroUsize>,
        /// The group's result.
        reply: Sender<Outcome>,
    },
    /// Run a step under a time limit (`wait_for`).
    WaitFor {
        /// The step.
        step: Step,
        /// The limit.
        timeout: Duration,
        /// Its result.
        reply: Sender<Outcome>,
    },
    /// Run steps together and return every result in order, a failure as an
    /// error map instead of an error (`gather(steps, true)`, asyncio's
    /// `return_exceptions=True`).
    Settled {
        /// The steps.
        steps: Vec<Step>,
        /// At most this many at once; the next starts when one finishes.
        limit: Option<NonZeroUsize>,
        /// The list of results.
        reply: Sender<Outcome>,
    },
    /// Start steps whose results are then taken one by one with [`Request::Next`].
    AsCompleted {
        /// The steps.
        steps: Vec<Step>,
        /// Hand failures on as error maps instead of raising them.
        settle: bool,
        /// At most this many at once; the next starts when one finishes.
        limit: Option<NonZeroUsize>,
        /// The id of the iterator.
        reply: Sender<u64>,
    },
    /// The next results of an `as_completed`, in finish order: every one
    /// already in (waiting for one if none is), so a burst of finishes costs
    /// one round trip; empty when all are taken.
    Next {
        /// The iterator.
        iter: u64,
        /// The results.
        reply: Sender<Vec<Outcome>>,
    },
    /// Start a step in the background (`spawn`).
    Spawn {
        /// The step.
        step: Step,
        /// The handle's id.
        reply: Sender<u64>,
    },
    /// Whether a spawned step has finished.
    Done {
        /// The handle.
        handle: u64,
        /// The answer.
        reply: Sender<bool>,
    },
    /// Wait for a spawned step's result.
    Result {
        /// The handle.
        handle: u64,
        /// Its result.
        reply: Sender<Outcome>,
    },
    /// Cancel a spawned step (answered at once; the step winds down).
    Cancel {
        /// The handle.
        handle: u64,
        /// Acknowledged.
        reply: Sender<()>,
    },
    /// A `print` or `debug` line.
    Log {
        /// From `debug` rather than `print`.
        debug: bool,
        /// The text.
        text: String,
    },
    /// The script has ended; always its last request.
    Finished(ScriptEnd),
}

/// How a script ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptEnd {
    /// It returned this value (the job's result).
    Returned(Value),
    /// It failed: a syntax error, an uncaught error, a limit hit.
    Failed(String),
    /// It was stopped by a cancel (timeout, Ctrl-C, file removed).
    Cancelled,
}

impl Request {
    /// Whether the script waits for an answer to this request.
    pub fn expects_reply(&self) -> bool {
        !matches!(self, Request::Log { .. } | Request::Finished(_))
    }
}

/// The script's side of the connection to its driver. Cheap to clone; usable
/// from the script's thread and from the pool threads of its `to_thread` steps.
#[derive(Clone)]
pub struct Link {
    tx: Sender<Request>,
    notify: Arc<Notify>,
    /// The compiled script, for running `to_thread` closures on other threads.
    ast: Arc<OnceLock<Arc<AST>>>,
    /// The limits, for the engines of `to_thread` closures.
    sandbox: Sandbox,
    /// What `env(name)` and `secret(name)` answer (`script::lookup`).
    lookup: Arc<OnceLock<crate::script::lookup::Lookup>>,
    /// What the script may know of its run.
    run: Arc<RunInfo>,
}

/// What a script may know of its run: `job_name()` and `run_id()`.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    /// The job's name (its file name without the extension).
    pub job_name: String,
    /// The run's id in the daemon's history; `None` under `gatherd run`.
    pub run_id: Option<i64>,
}

/// The driver's side: requests in the order the script sent them.
pub struct Requests {
    rx: mpsc::Receiver<Request>,
    notify: Arc<Notify>,
}

impl Requests {
    /// The next request, waiting asynchronously; `None` once the script (and
    /// every clone of its link) is gone.
    pub async fn next(&mut self) -> Option<Request> {
        loop {
            match self.rx.try_recv() {
                Ok(request) => return Some(request),
                Err(mpsc::TryRecvError::Disconnected) => return None,
                // `notify_one` keeps a permit when nobody waits, so a request
                // sent between `try_recv` and here is not missed.
                Err(mpsc::TryRecvError::Empty) => self.notify.notified().await,
            }
        }
    }

    /// The next request, blocking the calling thread (see the driver for when
    /// that is right); `None` once the script is gone.
    pub fn next_blocking(&mut self) -> Option<Request> {
        self.rx.recv().ok()
    }
}

/// A connected pair: the script's link and the driver's requests.
pub fn connect(sandbox: Sandbox, run: RunInfo) -> (Link, Requests) {
    let (tx, rx) = mpsc::channel();
    let notify = Arc::new(Notify::new());
    let lookup = Arc::new(OnceLock::new());
    let link = Link { tx, notify: notify.clone(), ast: Arc::new(OnceLock::new()), sandbox, lookup, run: Arc::new(run) };
    (link, Requests { rx, notify })
}

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

fn error(message: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(Dynamic::from(message.into()), Position::NONE))
}

impl Link {
    /// Sends a request and waits for its answer.
    fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Request) -> RhaiResult<T> {
        let (reply, answer) = mpsc::channel();
        self.send(make(reply))?;
        answer.recv().map_err(|_| error("the run ended before the step did"))
    }

    fn send(&self, request: Request) -> RhaiResult<()> {
        self.tx.send(request).map_err(|_| error("the run is over"))?;
        self.notify.notify_one();
        Ok(())
    }

    fn log(&self, debug: bool, text: &str) {
        let _ = self.send(Request::Log { debug, text: text.to_string() });
    }

    /// Says what `env(name)` and `secret(name)` answer; before it is set
    /// (an engine that only compiles) they know nothing.
    pub fn set_lookup(&self, lookup: crate::script::lookup::Lookup) {
        let _ = self.lookup.set(lookup);
    }

    /// Records the compiled script so `to_thread` closures can run elsewhere.
    pub fn set_ast(&self, ast: Arc<AST>) {
        let _ = self.ast.set(ast);
    }
}

/// An engine that knows the whole API, for compiling (checking) scripts only:
/// its link leads nowhere, so running anything that starts a step fails.
pub fn engine_for_check(limits: &crate::job::ScriptLimits) -> Engine {
    let sandbox_ = Sandbox { limits: limits.clone(), cancelled: Arc::new(|| false) };
    let mut engine = sandbox(&sandbox_);
    let (link, _requests) = connect(sandbox_, RunInfo::default());
    register(&mut engine, &link);
    engine
}

/// Runs a whole script on the calling thread (the script's own thread),
/// talking to the driver through `link`, and ends with [`Request::Finished`].
/// With an `entry` (a Rhai job's handler), calls that top-level function
/// with its argument (`run`) instead of running the body.
pub fn run_script(code: &str, link: Link, entry: Option<(String, serde_json::Value)>) {
    let end = {
        let mut engine = sandbox(&link.sandbox);
        register(&mut engine, &link);
        match engine.compile(code) {
            Err(e) => ScriptEnd::Failed(format!("syntax error: {e}")),
            Ok(ast) => {
                let ast = Arc::new(ast);
                link.set_ast(ast.clone());
                let done = match entry {
                    None => engine.eval_ast::<Dynamic>(&ast),
                    Some((function, arg)) => rhai::serde::to_dynamic(arg).and_then(|arg| {
                        let options = rhai::CallFnOptions::new().eval_ast(false);
                        engine.call_fn_with_options::<Dynamic>(
                            options,
                            &mut rhai::Scope::new(),
                            &ast,
                            &function,
                            (arg,),
                        )
                    }),
                };
                match done {
                    Ok(value) => match to_json(&value) {
                        Ok(value) => ScriptEnd::Returned(value),
                        Err(e) => ScriptEnd::Failed(format!("the script's result is {e}")),
                    },
                    // A step's "cancelled" error surfacing after a cancel is the
                    // cancel, not a failure of the script.
                    Err(e) if is_cancellation(&e) || (link.sandbox.cancelled)() => ScriptEnd::Cancelled,
                    Err(e) => ScriptEnd::Failed(describe_error(&e, &link.sandbox.limits)),
                }
            }
        }
    };
    let _ = link.send(Request::Finished(end));
}

/// A step that has not run yet: what `sleep(1)` or `http_get(url)` returns.
/// Its name stays empty until `.named()`; the driver names the rest by kind
/// and counter.
#[derive(Debug, Clone)]
pub struct StepValue {
    step: Step,
}

impl StepValue {
    fn new(kind: StepKind) -> StepValue {
        StepValue { step: Step { name: "".into(), kind, blocking: false, timeout: None, retry: Retry::default() } }
    }

    /// The step it describes (name empty when unnamed).
    pub fn into_step(self) -> Step {
        self.step
    }
}

/// A spawned step: `done()`, `result()`, `cancel()`.
#[derive(Clone)]
pub struct Handle {
    id: u64,
    link: Link,
}

/// The iterator `as_completed` returns: each result as soon as it is ready.
#[derive(Clone)]
pub struct AsCompleted {
    id: u64,
    link: Link,
    /// Results the driver handed over and the script has not taken yet,
    /// shared by every copy so a second loop goes on where the first stopped.
    taken: Arc<Mutex<VecDeque<Outcome>>>,
}

impl IntoIterator for AsCompleted {
    type Item = RhaiResult<Dynamic>;
    type IntoIter = AsCompletedIter;
    fn into_iter(self) -> AsCompletedIter {
        AsCompletedIter { inner: self }
    }
}

/// Iterating an [`AsCompleted`] in a `for` loop.
pub struct AsCompletedIter {
    inner: AsCompleted,
}

impl Iterator for AsCompletedIter {
    type Item = RhaiResult<Dynamic>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut taken = self.inner.taken.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(outcome) = taken.pop_front() {
            return Some(to_script(outcome));
        }
        let id = self.inner.id;
        match self.inner.link.ask(|reply| Request::Next { iter: id, reply }) {
            Ok(batch) => {
                let mut batch = batch.into_iter();
                let first = batch.next()?;
                taken.extend(batch);
                Some(to_script(first))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

/// A step's outcome as a script value, or a catchable error.
fn to_script(outcome: Outcome) -> RhaiResult<Dynamic> {
    match outcome {
        Ok(value) => rhai::serde::to_dynamic(value),
        Err(message) => Err(error(message)),
    }
}

/// A script value as JSON.
pub fn to_json(value: &Dynamic) -> Result<Value, String> {
    rhai::serde::from_dynamic::<Value>(value).map_err(|e| format!("not a data value: {e}"))
}

/// Seconds (an integer or a float, not negative) as a duration.
fn seconds(value: &Dynamic) -> RhaiResult<Duration> {
    let secs = if let Ok(f) = value.as_float() {
        f
    } else if let Ok(i) = value.as_int() {
        i as f64
    } else {
        return Err(error(format!("expected a number of seconds, found {}", value.type_name())));
    };
    if secs.is_nan() || secs < 0.0 {
        return Err(error(format!("expected a number of seconds ≥ 0, found {secs}")));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| {
        error(format!("{secs} seconds is too long: a duration is at most {} seconds", Duration::MAX.as_secs()))
    })
}

fn steps_of(items: Array) -> RhaiResult<Vec<Step>> {
    // Sized up front: collecting into a `Result` would grow by doubling, and
    // for a big fan-out the spare half is megabytes held for the whole run.
    let mut steps = Vec::with_capacity(items.len());
    for item in items {
        let type_name = item.type_name();
        let step = item
            .try_cast::<StepValue>()
            .map(StepValue::into_step)
            .ok_or_else(|| error(format!("expected steps (like sleep(1) or http_get(url)), found {type_name}")))?;
        steps.push(step);
    }
    Ok(steps)
}

/// The options of `gather(list, #{ ... })` and `as_completed(list, #{ ... })`.
#[derive(Debug, Clone, Copy, Default)]
struct GroupOptions {
    /// `limit`: at most this many steps at once (≥ 1).
    limit: Option<NonZeroUsize>,
    /// `return_exceptions`: failures come back as error maps.
    settle: bool,
}

/// The keys `#{ ... }` may have after a `gather` or `as_completed` list.
const GROUP_OPTIONS: [&str; 2] = ["limit", "return_exceptions"];

/// Reads `#{ limit: N, return_exceptions: B }`; an unknown key or a limit
/// below 1 is an error naming it (`func` is the function, for the message).
fn group_options(func: &str, options: &Map) -> RhaiResult<GroupOptions> {
    let mut out = GroupOptions::default();
    for (key, value) in options {
        match key.as_str() {
            "limit" => {
                let n =
                    value.as_int().map_err(|t| error(format!("{func}(): `limit` must be an integer, found {t}")))?;
                let limit = usize::try_from(n).ok().and_then(NonZeroUsize::new).ok_or_else(|| {
                    error(format!("{func}(): `limit` must be at least 1 (at most that many steps at once), found {n}"))
                })?;
                out.limit = Some(limit);
            }
            "return_exceptions" => {
                out.settle = value
                    .as_bool()
                    .map_err(|t| error(format!("{func}(): `return_exceptions` must be true or false, found {t}")))?;
            }
            other => {
                let near = GROUP_OPTIONS.iter().find(|k| strsim::levenshtein(other, k) <= 2);
                let hint = match near {
                    Some(k) => format!("did you mean `{k}`?"),
                    None => "the options are `limit` and `return_exceptions`".to_string(),
                };
                return Err(error(format!("{func}(): unknown option `{other}`; {hint}")));
            }
        }
    }
    Ok(out)
}

fn text_of(map: &Map, key: &str) -> RhaiResult<Option<String>> {
    match map.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) => v.clone().into_string().map(Some).map_err(|t| error(format!("`{key}` must be a string, found {t}"))),
    }
}

/// Registers the whole API on the script's `engine`.
pub fn register(engine: &mut Engine, link: &Link) {
    register_step_values(engine);
    register_range_map(engine);
    register_blocking(engine, link, None);
    let lookup = link.lookup.get().cloned().unwrap_or_else(crate::script::lookup::nothing);
    crate::script::lookup::register(engine, &lookup);
    let l = link.clone();
    engine.on_print(move |text| l.log(false, text));
    let l = link.clone();
    engine.on_debug(move |text, _, _| l.log(true, text));

    let l = link.clone();
    engine.register_fn("to_thread", move |f: FnPtr| -> StepValue {
        let link = l.clone();
        let call = move |cancelled: CancelProbe| -> Result<Value, String> {
            let ast = link.ast.get().cloned().ok_or("the script is not compiled")?;
            let sandbox = Sandbox { limits: link.sandbox.limits.clone(), cancelled: cancelled.clone() };
            let mut engine = sandbox_for_thread(&sandbox, &link, cancelled);
            engine.on_print({
                let l = link.clone();
                move |text| l.log(false, text)
            });
            let value = f.call::<Dynamic>(&engine, &ast, ()).map_err(|e| describe_error(&e, &link.sandbox.limits))?;
            to_json(&value)
        };
        StepValue::new(StepKind::Call(CallStep { call: Arc::new(call) }))
    });

    let l = link.clone();
    engine.register_fn("await_step", move |s: StepValue| {
        to_script(l.ask(|reply| Request::Await { step: s.into_step(), reply })?)
    });
    let l = link.clone();
    let gather = move |items: Array, options: GroupOptions| {
        let steps = steps_of(items)?;
        let GroupOptions { limit, settle } = options;
        if settle {
            to_script(l.ask(|reply| Request::Settled { steps, limit, reply })?)
        } else {
            to_script(l.ask(|reply| Request::Group { mode: GroupMode::Gather, steps, limit, reply })?)
        }
    };
    let g = gather.clone();
    engine.register_fn("gather", move |items: Array| g(items, GroupOptions::default()));
    let g = gather.clone();
    engine.register_fn("gather", move |items: Array, return_exceptions: bool| {
        g(items, GroupOptions { limit: None, settle: return_exceptions })
    });
    engine.register_fn("gather", move |items: Array, options: Map| gather(items, group_options("gather", &options)?));
    let l = link.clone();
    engine.register_fn("job_name", move || l.run.job_name.clone());
    let l = link.clone();
    engine.register_fn("run_id", move || l.run.run_id.map_or(Dynamic::UNIT, Dynamic::from_int));
    engine.register_fn("now", || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    engine.register_fn("is_error", |value: Dynamic| {
        value.read_lock::<Map>().is_some_and(|m| m.contains_key("error") && m.contains_key("status"))
    });
    let l = link.clone();
    engine.register_fn("race", move |items: Array| {
        let steps = steps_of(items)?;
        if steps.is_empty() {
            return Err(error("race() needs at least one step"));
        }
        to_script(l.ask(|reply| Request::Group { mode: GroupMode::Race, steps, limit: None, reply })?)
    });
    let l = link.clone();
    engine.register_fn("wait_for", move |s: StepValue, secs: Dynamic| {
        let timeout = seconds(&secs)?;
        to_script(l.ask(|reply| Request::WaitFor { step: s.into_step(), timeout, reply })?)
    });
    let l = link.clone();
    let start = move |items: Array, options: GroupOptions| -> RhaiResult<AsCompleted> {
        let steps = steps_of(items)?;
        let GroupOptions { limit, settle } = options;
        let id = l.ask(|reply| Request::AsCompleted { steps, settle, limit, reply })?;
        Ok(AsCompleted { id, link: l.clone(), taken: Arc::default() })
    };
    let s = start.clone();
    engine.register_fn("as_completed", move |items: Array| s(items, GroupOptions::default()));
    let s = start.clone();
    engine.register_fn("as_completed", move |items: Array, return_exceptions: bool| {
        s(items, GroupOptions { limit: None, settle: return_exceptions })
    });
    engine.register_fn("as_completed", move |items: Array, options: Map| {
        start(items, group_options("as_completed", &options)?)
    });
    engine.register_type_with_name::<AsCompleted>("AsCompleted").register_iterator_result::<AsCompleted, Dynamic>();

    // `spawn` is a reserved word in Rhai, so `spawn(x)` is custom syntax.
    let l = link.clone();
    let spawn = move |context: &mut rhai::EvalContext, inputs: &[rhai::Expression]| -> RhaiResult<Dynamic> {
        let value = context.eval_expression_tree(&inputs[0])?;
        let type_name = value.type_name();
        let s =
            value.try_cast::<StepValue>().ok_or_else(|| error(format!("spawn() takes a step, found {type_name}")))?;
        let id = l.ask(|reply| Request::Spawn { step: s.into_step(), reply })?;
        Ok(Dynamic::from(Handle { id, link: l.clone() }))
    };
    engine
        .register_custom_syntax(["spawn", "(", "$expr$", ")"], false, spawn)
        .expect("`spawn ( $expr$ )` is valid custom syntax");
    engine
        .register_type_with_name::<Handle>("Handle")
        .register_fn("done", |h: &mut Handle| h.link.ask(|reply| Request::Done { handle: h.id, reply }))
        .register_fn("result", |h: &mut Handle| to_script(h.link.ask(|reply| Request::Result { handle: h.id, reply })?))
        .register_fn("cancel", |h: &mut Handle| h.link.ask(|reply| Request::Cancel { handle: h.id, reply }));
}

/// The engine a `to_thread` closure runs in on a pool thread: the sandbox plus
/// `sleep_blocking`; it cannot start steps (blocking code cannot await).
fn sandbox_for_thread(sandbox_: &Sandbox, link: &Link, cancelled: CancelProbe) -> Engine {
    let mut engine = sandbox(sandbox_);
    register_step_values(&mut engine);
    register_range_map(&mut engine);
    register_blocking(&mut engine, link, Some(cancelled));
    engine
}

/// `sleep_blocking(secs)`: parks the calling thread (like `time.sleep`), waking
/// early when the step is cancelled.
fn register_blocking(engine: &mut Engine, _link: &Link, cancelled: Option<CancelProbe>) {
    engine.register_fn("sleep_blocking", move |secs: Dynamic| -> RhaiResult<()> {
        let total = seconds(&secs)?;
        let start = std::time::Instant::now();
        while start.elapsed() < total {
            if cancelled.as_ref().is_some_and(|c| c()) {
                return Err(error("cancelled"));
            }
            std::thread::sleep((total - start.elapsed()).min(Duration::from_millis(20)));
        }
        Ok(())
    });
}

/// The step constructors and their modifiers: pure descriptions, no I/O.
/// `(0..n).map(|i| ...)` (and `0..=n`): the array of what the closure gives
/// for each number, Python's `[f(i) for i in range(n)]`. The way to build a
/// big list of steps: Rhai re-measures an array after every in-place change
/// such as `push` (its data-size limits), so filling one in a loop costs
/// O(n²); this builds it in one call, checked against `max_array_len` first.
fn register_range_map(engine: &mut Engine) {
    /// The closure's values for `start`, `start + 1`, … (`len` of them).
    fn map(ctx: &NativeCallContext, start: INT, len: u64, f: &FnPtr) -> RhaiResult<Array> {
        let limit = ctx.engine().max_array_size();
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if limit > 0 && len > limit {
            return Err(error(format!(
                "map over {len} numbers would make an array longer than max_array_len ({limit})"
            )));
        }
        (0..len).map(|k| f.call_raw(ctx, None, [Dynamic::from(start.wrapping_add(k as INT))])).collect()
    }
    engine.register_fn("map", |ctx: NativeCallContext, r: std::ops::Range<INT>, f: FnPtr| {
        let len = if r.end > r.start { r.end.abs_diff(r.start) } else { 0 };
        map(&ctx, r.start, len, &f)
    });
    engine.register_fn("map", |ctx: NativeCallContext, r: std::ops::RangeInclusive<INT>, f: FnPtr| {
        let (start, end) = (*r.start(), *r.end());
        let len = if end >= start { end.abs_diff(start).saturating_add(1) } else { 0 };
        map(&ctx, start, len, &f)
    });
}

/// The `Step` type: its modifiers, then its constructors.
fn register_step_values(engine: &mut Engine) {
    register_modifiers(engine);
    register_constructors(engine);
}

/// `Step` and the modifiers chained on it (`.named`, `.timeout`, ...).
fn register_modifiers(engine: &mut Engine) {
    engine
        .register_type_with_name::<StepValue>("Step")
        .register_fn("named", |s: StepValue, name: ImmutableString| StepValue {
            step: Step { name: name.as_str().into(), ..s.step },
        })
        .register_fn("timeout", |s: StepValue, secs: Dynamic| -> RhaiResult<StepValue> {
            let t = seconds(&secs)?;
            if t.is_zero() {
                return Err(error("a timeout must be longer than zero"));
            }
            Ok(StepValue { step: Step { timeout: Some(t), ..s.step } })
        })
        .register_fn("retries", |s: StepValue, n: i64| -> RhaiResult<StepValue> {
            let retries = u32::try_from(n).map_err(|_| error(format!("retries must be 0 or more, found {n}")))?;
            Ok(StepValue { step: Step { retry: Retry { retries, ..s.step.retry.clone() }, ..s.step } })
        })
        .register_fn("retry_delay", |s: StepValue, secs: Dynamic| -> RhaiResult<StepValue> {
            let delay = seconds(&secs)?;
            Ok(StepValue { step: Step { retry: Retry { delay, ..s.step.retry.clone() }, ..s.step } })
        })
        .register_fn("blocking", |s: StepValue| -> RhaiResult<StepValue> {
            if matches!(s.step.kind, StepKind::Http(_)) {
                return Err(error("http steps never block; .blocking() means nothing on them"));
            }
            Ok(StepValue { step: Step { blocking: true, ..s.step } })
        })
        .register_fn("name", |s: &mut StepValue| s.step.name.clone())
        .register_fn("to_string", |s: &mut StepValue| format!("<{} step {}>", s.step.kind.key(), s.step.name));
}

/// The step constructors: `sleep`, `http_get`, `http`, `read_file`,
/// `write_file`, `exec`, `shell`.
fn register_constructors(engine: &mut Engine) {
    // Typed overloads: they must win over Rhai's own blocking `sleep(INT|FLOAT)`.
    fn sleep_step(secs: Dynamic, value: Option<Dynamic>) -> RhaiResult<StepValue> {
        let output = value.map(|v| to_json(&v).map_err(error)).transpose()?;
        Ok(StepValue::new(StepKind::Sleep(SleepStep { duration: seconds(&secs)?, output })))
    }
    engine
        .register_fn("sleep", |secs: i64| sleep_step(Dynamic::from(secs), None))
        .register_fn("sleep", |secs: f64| sleep_step(Dynamic::from(secs), None))
        .register_fn("sleep", |secs: i64, value: Dynamic| sleep_step(Dynamic::from(secs), Some(value)))
        .register_fn("sleep", |secs: f64, value: Dynamic| sleep_step(Dynamic::from(secs), Some(value)));
    engine.register_fn("http_get", |url: ImmutableString| StepValue::new(http("GET", &url)));
    engine.register_fn("http", http_from_map);
    engine.register_fn("read_file", |path: ImmutableString| {
        StepValue::new(StepKind::ReadFile(ReadFileStep { path: Template::literal(path.as_str()) }))
    });
    engine.register_fn("write_file", |path: ImmutableString, content: ImmutableString| {
        StepValue::new(StepKind::WriteFile(Box::new(WriteFileStep {
            path: Template::literal(path.as_str()),
            content: Template::literal(content.as_str()),
        })))
    });
    engine.register_fn("exec", |argv: Array| -> RhaiResult<StepValue> {
        let argv = argv
            .into_iter()
            .map(|a| {
                a.into_string().map(Template::literal).map_err(|t| error(format!("exec() takes strings, found {t}")))
            })
            .collect::<RhaiResult<Vec<_>>>()?;
        if argv.is_empty() {
            return Err(error("exec() needs a program: exec([\"prog\", \"arg\"])"));
        }
        Ok(StepValue::new(StepKind::Exec(Box::new(ExecStep { argv, process: ProcessSpec::default() }))))
    });
    engine.register_fn("shell", |command: ImmutableString| {
        StepValue::new(StepKind::Shell(Box::new(ShellStep {
            command: Template::literal(command.as_str()),
            process: ProcessSpec::default(),
        })))
    });
}

/// `http(#{ url, method, headers, body, timeout, expect_status })`.
fn http_from_map(spec: Map) -> RhaiResult<StepValue> {
    let url = text_of(&spec, "url")?.ok_or_else(|| error("http(#{...}) needs a `url`"))?;
    let method = text_of(&spec, "method")?.unwrap_or_else(|| "GET".into()).to_ascii_uppercase();
    let StepKind::Http(mut h) = http(&method, &url) else { unreachable!("http() builds an http step") };
    h.body = text_of(&spec, "body")?.map(Template::literal);
    if let Some(headers) = spec.get("headers") {
        let headers = headers.clone().try_cast::<Map>().ok_or_else(|| error("`headers` must be a map"))?;
        for (k, v) in headers {
            let v = v.into_string().map_err(|t| error(format!("header `{k}` must be a string, found {t}")))?;
            h.headers.push((k.to_string(), Template::literal(v)));
        }
    }
    if let Some(t) = spec.get("timeout") {
        h.timeout = Some(seconds(t)?);
    }
    if let Some(s) = spec.get("expect_status") {
        let codes: Vec<Dynamic> = match s.clone().try_cast::<Array>() {
            Some(list) => list,
            None => vec![s.clone()],
        };
        for c in codes {
            let code = c.as_int().ok().and_then(|c| u16::try_from(c).ok()).filter(|c| (100..600).contains(c));
            h.expect_status.push(code.ok_or_else(|| error("`expect_status` must be HTTP status codes"))?);
        }
    }
    for key in spec.keys() {
        if !["url", "method", "body", "headers", "timeout", "expect_status"].contains(&key.as_str()) {
            return Err(error(format!(
                "http(#{{...}}) has no key `{key}`; keys are url, method, headers, body, timeout, expect_status"
            )));
        }
    }
    Ok(StepValue::new(StepKind::Http(h)))
}

fn http(method: &str, url: &str) -> StepKind {
    StepKind::Http(Box::new(HttpStep {
        method: method.to_string(),
        url: Template::literal(url),
        headers: Vec::new(),
        body: None,
        timeout: None,
        expect_status: Vec::new(),
    }))
}
