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

use std::path::{Path, PathBuf};

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
        StepOutput {
            value: value.into(),
            truncated: false,
        }
    }
}

/// Why an attempt did not produce an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// It failed; the message says why (exit code and stderr tail, HTTP status, …).
    Failed(String),
    /// Its cancel token fired and it stopped.
    Cancelled,
}

/// What a step attempt may use besides the step itself.
pub struct StepEnv<'a> {
    /// The job (for its folder).
    pub job: &'a Job,
    /// The run's pool, limits and clock.
    pub ctx: &'a RunContext,
    /// Builds the template context (`steps`, `input`) on demand.
    pub vars: &'a (dyn Fn() -> minijinja::Value + Send + Sync),
}

impl StepEnv<'_> {
    /// Renders a template field of the step, naming the field in the error.
    pub fn render(&self, field: &str, t: &Template) -> Result<String, StepError> {
        t.render(self.vars)
            .map_err(|e| StepError::Failed(format!("rendering `{field}`: {e}")))
    }

    /// Resolves a path against the job's folder.
    pub fn resolve(&self, path: &str) -> PathBuf {
        resolve(&self.job.dir, path)
    }
}

/// `path` if absolute, else `dir/path`.
pub fn resolve(dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// Runs one attempt of `step`.
pub async fn run_attempt(
    step: &Step,
    env: &StepEnv<'_>,
    cancel: &CancellationToken,
) -> Result<StepOutput, StepError> {
    let _ = (env, cancel);
    match &step.kind {
        StepKind::Sleep(_)
        | StepKind::Exec(_)
        | StepKind::Shell(_)
        | StepKind::Http(_)
        | StepKind::ReadFile(_)
        | StepKind::WriteFile(_) => Err(StepError::Failed(format!(
            "`{}` steps are not implemented yet",
            step.kind.key()
        ))),
    }
}
