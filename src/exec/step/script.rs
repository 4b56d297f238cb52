//! `script` steps (Rhai, inline or from a file) and `to_thread` closures: both
//! are synchronous code, so both run on the blocking pool, holding a thread for
//! as long as they compute.
//!
//! A `script` step is pure computation: it sees `steps` (each earlier output as
//! `steps.NAME.output`) and `input`, and its value is the step's output. It
//! cannot start steps; a Rhai *job* does that.

use std::sync::Arc;

use rhai::{Dynamic, Scope};
use tokio_util::sync::CancellationToken;

use super::{StepEnv, StepError, StepOutput};
use crate::exec::Stream;
use crate::job::{CallStep, ScriptStep};
use crate::script::{self, Sandbox};

/// Runs one attempt of a `script` step on the blocking pool.
pub(super) async fn run(
    step: &ScriptStep,
    env: &StepEnv<'_>,
    cancel: &CancellationToken,
) -> Result<StepOutput, StepError> {
    let inputs = rhai::serde::to_dynamic((env.inputs)())
        .map_err(|e| StepError::Failed(format!("cannot hand the earlier results to the script: {e}")))?;
    let code = step.code.clone();
    let limits = env.ctx.script_limits.merged(&step.limits);
    // The token is checked from the pool thread at every operation.
    let token = cancel.clone();
    let lines = env.lines.sender();
    let lookup = crate::exec::environment::script_lookup(env.job, &env.ctx.environment);
    let work = env.ctx.pool.run(move || {
        let sandbox = Sandbox { limits: limits.clone(), cancelled: Arc::new(move || token.is_cancelled()) };
        let mut engine = script::sandbox(&sandbox);
        script::lookup::register(&mut engine, &lookup);
        // `print` and `debug` are the step's lines, as in a Rhai job.
        let debug = lines.clone();
        engine.on_print(move |text| lines.line(Stream::Print, text.to_string()));
        engine.on_debug(move |text, _, _| debug.line(Stream::Debug, text.to_string()));
        let mut scope = Scope::new();
        let mut inputs = inputs.try_cast::<rhai::Map>().unwrap_or_default();
        scope.push_constant_dynamic(
            "steps",
            inputs.remove("steps").unwrap_or_else(|| Dynamic::from_map(rhai::Map::new())),
        );
        scope.push_constant_dynamic("input", inputs.remove("input").unwrap_or(Dynamic::UNIT));
        // `job.name`, `run.id`, `run.started_at` (and, in a handler or a
        // finally, `run.status` and `run.error`), as templates read them.
        for name in ["job", "run"] {
            scope.push_constant_dynamic(name, inputs.remove(name).unwrap_or(Dynamic::UNIT));
        }
        match engine.eval_with_scope::<Dynamic>(&mut scope, &code) {
            Ok(value) => Ok(value),
            Err(e) if script::is_cancellation(&e) => Err(None),
            Err(e) => Err(Some(script::describe_error(&e, &limits))),
        }
    });
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(StepError::Cancelled),
        done = work => match done {
            Ok(Ok(value)) => to_output(&value),
            Ok(Err(None)) => Err(StepError::Cancelled),
            Ok(Err(Some(message))) => Err(StepError::Failed(message)),
            Err(e) => Err(StepError::Failed(e.to_string())),
        }
    }
}

/// Runs a `to_thread` closure on the blocking pool.
pub(super) async fn call(
    step: &CallStep,
    env: &StepEnv<'_>,
    cancel: &CancellationToken,
) -> Result<StepOutput, StepError> {
    let call = step.call.clone();
    let token = cancel.clone();
    let work = env.ctx.pool.run(move || call(Arc::new(move || token.is_cancelled())));
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(StepError::Cancelled),
        done = work => match done {
            Ok(Ok(value)) => Ok(StepOutput::whole(value)),
            Ok(Err(message)) => Err(StepError::Failed(message)),
            Err(e) => Err(StepError::Failed(e.to_string())),
        }
    }
}

/// A script's value as the step's output (JSON).
fn to_output(value: &Dynamic) -> Result<StepOutput, StepError> {
    rhai::serde::from_dynamic::<serde_json::Value>(value)
        .map(StepOutput::whole)
        .map_err(|e| StepError::Failed(format!("the script returned a value that is not data: {e}")))
}
