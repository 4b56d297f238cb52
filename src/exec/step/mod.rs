//! Running one attempt of one step. One file per kind; this file dispatches.
//!
//! Contract with the run tree (`crate::exec::tree`): an attempt returns its output
//! or an error; when `cancel` fires it stops promptly, releases what it holds
//! (a child process group gets SIGTERM, then SIGKILL after the grace) and returns
//! [`StepError::Cancelled`]. Whether a cancel was a timeout is the caller's
//! business: steps never measure their own `timeout`.
//!
//! The seam for new kinds (Rhai `script` steps): a variant in
//! `crate::job::StepKind`, a file here, an arm in [`run_attempt`].
//!
//! `blocking = true` moves a step's blocking part onto the run's
//! [`crate::exec::BlockingPool`] (`asyncio.to_thread`); it means nothing for
//! `http`, which is always async.

mod capture;
mod child;
mod file;
mod http;
mod identity;
mod lines;
mod pipe;
mod process;
mod script;
mod sleep;

pub use child::remember_open_files_limit;
pub use child::settle as settle_process_records;
pub use lines::{LineSender, OutputBounds, PIECE, RunLines, StepLines, grouped};

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::exec::RunContext;
use crate::job::{Job, Step, StepKind, Template};

/// A step's result and whether it was cut at the output bound.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// Text as a JSON string, or structured JSON.
    pub value: Value,
    /// Whether the text was cut at `Limits::output_bytes`.
    pub truncated: bool,
}

impl StepOutput {
    /// An output that was not cut.
    pub fn whole(value: impl Into<Value>) -> StepOutput {
        StepOutput { value: value.into(), truncated: false }
    }
}

/// Why an attempt did not produce an output.
#[derive(Debug, Clone, PartialEq)]
pub enum StepError {
    /// It failed; the message says why (exit code and stderr tail, HTTP status, …).
    Failed(String),
    /// A process ran and failed (the message says why); what it wrote to
    /// stdout is kept as the step's recorded output.
    FailedWithOutput(String, Box<StepOutput>),
    /// Its cancel token fired and it stopped.
    Cancelled,
}

/// What a step attempt may use besides the step itself.
pub struct StepEnv<'a> {
    /// The job (for its folder).
    pub job: &'a Job,
    /// The run's pool, limits and clock.
    pub ctx: &'a RunContext,
    /// Gathers what the step may read (`steps`, `input`) on demand: only
    /// templates and scripts ask, so plain steps cost nothing.
    pub inputs: &'a (dyn Fn() -> Inputs + Send + Sync),
    /// Where the step's lines go (its process's stdout and stderr, a
    /// script's prints, an http failure's status line).
    pub lines: StepLines<'a>,
    /// The attempt under way, 1-based (`GATHERD_ATTEMPT`); the run tree
    /// sets it before each attempt.
    pub attempt: std::sync::atomic::AtomicU32,
}

/// What a step can read of the run so far: `steps.NAME.output`, `job` and
/// `run` and, in an `each` step, `input`. Serialises to the shape templates
/// and scripts see.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Inputs {
    /// `NAME → {"output": value}` for the outputs that were kept; in a
    /// handler or a `finally`, also `status` and `error`, and `output` null
    /// for a node that did not succeed.
    pub steps: serde_json::Map<String, Value>,
    /// The result that triggered an `each` step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// `{"name", "timezone"}`: the job's name, and the zone `date` writes
    /// in (the job's `timezone`, or the host's UTC offset at the run's start).
    pub job: Value,
    /// `{"id", "started_at"}` (`id` null under `gatherd run`); in a handler
    /// or a `finally`, also `status` and `error`.
    pub run: Value,
}

/// Engine operations a render may take inline, on the step's own task:
/// every template people write (a loop over a few hundred items) fits, in
/// well under a millisecond. One that needs more starts again on the
/// blocking pool with the whole budget ([`crate::job::RENDER_FUEL`]),
/// so a costly render never holds an async worker, and a cancel, a timeout or
/// shutdown does not wait for it.
pub const INLINE_RENDER_FUEL: u64 = 50_000;

impl StepEnv<'_> {
    /// Renders a template field of the step, naming the field in the error.
    /// Plain strings cost nothing; a render that passes
    /// [`INLINE_RENDER_FUEL`] goes to the blocking pool (holding one of its
    /// threads, as a `to_thread` would), and a cancel wins while it runs —
    /// the abandoned render stops at its budget.
    pub async fn render(&self, field: &str, t: &Template, cancel: &CancellationToken) -> Result<String, StepError> {
        let failed =
            |e: crate::job::RenderError| StepError::Failed(format!("rendering `{field}`{}: {e}", self.place(t)));
        if !t.is_dynamic() {
            return Ok(t.source().to_owned());
        }
        let ctx = self.template_context(field, t)?;
        match t.render_within(ctx.clone(), INLINE_RENDER_FUEL) {
            Err(crate::job::RenderError::OutOfFuel(_)) => {}
            done => return done.map_err(failed),
        }
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(StepError::Cancelled),
            permit = self.ctx.pool.acquire() => permit,
        };
        let template = t.clone();
        let render = permit.spawn(move || template.render_within(ctx, crate::job::RENDER_FUEL));
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(StepError::Cancelled),
            done = render => match done {
                Ok(done) => done.map_err(failed),
                Err(e) => Err(StepError::Failed(format!(
                    "rendering `{field}`{}: the render's thread failed: {e}",
                    self.place(t)
                ))),
            },
        }
    }

    /// What template `t` of `field` sees: the run so far (`steps`, `input`)
    /// and the secrets it names (`secrets.NAME`), only those. A name the
    /// config does not define fails the step, naming it.
    fn template_context(&self, field: &str, t: &Template) -> Result<minijinja::Value, StepError> {
        let inputs = minijinja::Value::from_serialize((self.inputs)());
        if t.secrets().is_empty() {
            return Ok(inputs);
        }
        let defined = self.ctx.environment.secrets();
        let mut secrets = std::collections::BTreeMap::new();
        for name in t.secrets() {
            let Some(value) = defined.get(name) else {
                return Err(StepError::Failed(unknown_secret(name, &format!("`{field}`"), defined)));
            };
            secrets.insert(name.as_str(), value);
        }
        Ok(minijinja::context! { secrets => secrets, ..inputs })
    }

    /// ` (backup.toml:12)`: the job file and line `t` was written on, for
    /// a render's error; empty when `t` was not read from a file.
    fn place(&self, t: &Template) -> String {
        match (t.line(), self.job.file.file_name()) {
            (Some(line), Some(file)) => format!(" ({}:{line})", file.to_string_lossy()),
            _ => String::new(),
        }
    }

    /// Resolves a path against the job's folder.
    pub fn resolve(&self, path: &str) -> PathBuf {
        resolve(&self.job.dir, path)
    }
}

/// Why secret `name`, read in `place`, cannot be had: the config's
/// `[secrets]` does not define it.
pub fn unknown_secret(name: &str, place: &str, defined: &crate::exec::Secrets) -> String {
    let names: Vec<String> = defined.names().map(|n| format!("`{n}`")).collect();
    let known = if names.is_empty() { "none".to_string() } else { names.join(", ") };
    format!("unknown secret `{name}` in {place}: the config's [secrets] does not define it (defined: {known})")
}

/// `path` if absolute, else `dir/path`.
pub fn resolve(dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() { p.to_path_buf() } else { dir.join(p) }
}

/// Runs one attempt of `step`.
pub async fn run_attempt(step: &Step, env: &StepEnv<'_>, cancel: &CancellationToken) -> Result<StepOutput, StepError> {
    if cancel.is_cancelled() {
        return Err(StepError::Cancelled);
    }
    // Each kind's future is boxed so a step in flight costs the size of its own
    // kind's state, not that of the largest kind (an HTTP request's is KiBs):
    // a 100,000-step gather of sleeps stays small.
    let attempt: BoxFuture<'_, Result<StepOutput, StepError>> = match &step.kind {
        StepKind::Sleep(s) => Box::pin(sleep::run(s, step.blocking, env, cancel)),
        StepKind::Exec(s) => Box::pin(process::run_exec(s, step.blocking, env, cancel)),
        StepKind::Shell(s) => Box::pin(process::run_shell(s, step.blocking, env, cancel)),
        StepKind::Http(s) => Box::pin(http::run(s, step.timeout, env, cancel)),
        StepKind::ReadFile(s) => Box::pin(file::read(s, step.blocking, env, cancel)),
        StepKind::WriteFile(s) => Box::pin(file::write(s, step.blocking, env, cancel)),
        StepKind::Script(s) => Box::pin(script::run(s, env, cancel)),
        StepKind::Call(c) => Box::pin(script::call(c, env, cancel)),
    };
    attempt.await
}

#[cfg(test)]
pub(crate) mod testing {
    //! Running one attempt of a hand-built step, for the kinds' tests.

    use std::path::Path;

    use tokio_util::sync::CancellationToken;

    use super::{RunLines, StepEnv, StepError, StepLines, StepOutput, run_attempt};
    use crate::exec::{BlockingPool, Limits, NodePath, RunContext, RunEvent, Stream};
    use crate::job::{Job, Node, Retry, Step, StepKind};

    /// A step named `s` doing `kind`, with no timeout or retries.
    pub(crate) fn step(kind: StepKind, blocking: bool) -> Step {
        Step { name: "s".into(), kind, blocking, timeout: None, retry: Retry::default() }
    }

    /// A job in `dir` made of `step` alone.
    pub(crate) fn job(dir: &Path, step: &Step) -> Job {
        Job::for_test("t", dir, Node::Step(step.clone()))
    }

    /// Short kill grace so cancel tests do not wait 5 s per process.
    pub(crate) fn limits() -> Limits {
        Limits { kill_grace: std::time::Duration::from_millis(300), ..Limits::default() }
    }

    /// Runs one attempt with `pool`, `limits` and a template context where
    /// `steps.prev.output` is `"PREV"` and `input` is `"IN"`.
    pub(crate) async fn attempt_with(
        step: &Step,
        dir: &Path,
        pool: BlockingPool,
        limits: Limits,
        cancel: &CancellationToken,
    ) -> Result<StepOutput, StepError> {
        attempt_lines(step, dir, pool, limits, cancel).await.0
    }

    /// [`attempt_with`], and the lines the step sent (stream, text), the
    /// step ended as the run tree ends it.
    pub(crate) async fn attempt_lines(
        step: &Step,
        dir: &Path,
        pool: BlockingPool,
        limits: Limits,
        cancel: &CancellationToken,
    ) -> (Result<StepOutput, StepError>, Vec<(Stream, String)>) {
        let job = job(dir, step);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let run = RunLines::new(tokio::time::Instant::now(), tx, limits.max_output);
        let ctx = RunContext { cancel: cancel.clone(), limits, ..RunContext::new(pool) };
        let inputs = || super::Inputs {
            steps: serde_json::json!({ "prev": { "output": "PREV" } }).as_object().cloned().unwrap_or_default(),
            input: Some(serde_json::json!("IN")),
            ..Default::default()
        };
        let path: NodePath = "main/s".into();
        let env =
            StepEnv { job: &job, ctx: &ctx, inputs: &inputs, lines: StepLines::new(&run, &path), attempt: 1.into() };
        let result = run_attempt(step, &env, cancel).await;
        env.lines.finish();
        let mut got = Vec::new();
        while let Ok(event) = rx.try_recv() {
            if let RunEvent::Log { stream, text, .. } = event {
                got.push((stream, text));
            }
        }
        (result, got)
    }

    /// Runs one attempt with a real pool of 2, test limits and no cancel.
    pub(crate) async fn attempt(kind: StepKind, blocking: bool, dir: &Path) -> Result<StepOutput, StepError> {
        let step = step(kind, blocking);
        attempt_with(&step, dir, BlockingPool::new(2), limits(), &CancellationToken::new()).await
    }
}

#[cfg(test)]
mod render_tests {
    //! Where a step's templates render: inline while cheap, on the blocking
    //! pool once they prove costly, where a cancel does not wait for them.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use tokio_util::sync::CancellationToken;

    use super::lines::{RunLines, StepLines};
    use super::testing::{job, limits, step};
    use super::{INLINE_RENDER_FUEL, StepEnv, StepError};
    use crate::exec::{BlockingPool, NodePath, RunContext};
    use crate::job::{SleepStep, StepKind, Template};

    /// Over an `input` of n items, n² loop iterations: at 300, about 90,000,
    /// far past [`INLINE_RENDER_FUEL`] and well within the whole budget.
    const NESTED: &str = "{% for a in input %}{% for b in input %}{% endfor %}{% endfor %}done";

    /// Renders `template` (`input` a list of `n` numbers) with `cancel` beside
    /// a task that counts how often it got the runtime's one thread before
    /// the render ended.
    async fn render_beside_a_ticker(
        template: &str,
        n: usize,
        cancel: &CancellationToken,
    ) -> (Result<String, StepError>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let s = step(StepKind::Sleep(SleepStep { duration: std::time::Duration::ZERO, output: None }), false);
        let job = job(dir.path(), &s);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let limits = limits();
        let run = RunLines::new(tokio::time::Instant::now(), tx, limits.max_output);
        let ctx = RunContext { cancel: cancel.clone(), limits, ..RunContext::new(BlockingPool::new(1)) };
        let inputs =
            || super::Inputs { input: Some(serde_json::json!((0..n).collect::<Vec<_>>())), ..Default::default() };
        let path: NodePath = "main/s".into();
        let env =
            StepEnv { job: &job, ctx: &ctx, inputs: &inputs, lines: StepLines::new(&run, &path), attempt: 1.into() };
        let t = Template::parse(template).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let ticks = Arc::new(AtomicUsize::new(0));
        let render = async {
            let r = env.render("content", &t, cancel).await;
            done.store(true, Ordering::SeqCst);
            r
        };
        let ticker = async {
            while !done.load(Ordering::SeqCst) {
                ticks.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        };
        let (r, ()) = tokio::join!(render, ticker);
        (r, ticks.load(Ordering::SeqCst))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_costly_render_runs_on_the_blocking_pool_and_leaves_the_task_free() {
        let (r, ticks) = render_beside_a_ticker(NESTED, 300, &CancellationToken::new()).await;
        assert_eq!(r, Ok("done".to_string()));
        assert!(ticks > 0, "the render held the runtime's only thread from start to end");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cheap_render_stays_inline() {
        let (r, ticks) =
            render_beside_a_ticker("{% for a in input %}{{ a }}{% endfor %}", 10, &CancellationToken::new()).await;
        assert_eq!(r, Ok("0123456789".to_string()));
        assert_eq!(ticks, 0, "a cheap render went to the pool (a thread hop per step of a fan-out)");
        const { assert!(INLINE_RENDER_FUEL < crate::job::RENDER_FUEL) };
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cancel_wins_over_a_costly_render() {
        let cancel = CancellationToken::new();
        let canceller = {
            let cancel = cancel.clone();
            async move {
                tokio::task::yield_now().await;
                cancel.cancel();
            }
        };
        let ((r, _), ()) = tokio::join!(render_beside_a_ticker(NESTED, 300, &cancel), canceller);
        assert_eq!(r, Err(StepError::Cancelled));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_runaway_render_still_fails_with_the_whole_budget() {
        let (r, _) = render_beside_a_ticker(NESTED, 3000, &CancellationToken::new()).await;
        let Err(StepError::Failed(e)) = r else { panic!("expected the budget error, got {r:?}") };
        assert!(e.contains("rendering `content`") && e.contains("budget of 5000000 operations"), "{e}");
    }
}
