//! The parts of the model that Rhai brings: a script-driven node (a Rhai job's
//! body), the TOML `script` step, the `to_thread` closure step, and the limits
//! of the sandbox. Still plain data: sources and numbers, plus an opaque
//! callable for `to_thread`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The sandbox's limits for one script. A runaway script is stopped when it
/// passes any of them and its run is recorded as failed with the limit named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptLimits {
    /// Rhai operations (roughly: expressions evaluated).
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_depth: usize,
    /// Nesting of expressions (parse time) and statements.
    pub max_expr_depth: usize,
    /// Bytes in one string.
    pub max_string_bytes: usize,
    /// Items in one array.
    pub max_array_len: usize,
    /// Entries in one object map.
    pub max_map_len: usize,
    /// Time the script may run, waits for its steps included.
    pub wall_time: Duration,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        ScriptLimits {
            max_operations: 50_000_000,
            max_call_depth: 48,
            max_expr_depth: 64,
            max_string_bytes: 4 * 1024 * 1024,
            max_array_len: 1_000_000,
            max_map_len: 100_000,
            wall_time: Duration::from_secs(3600),
        }
    }
}

/// The limits a job sets for itself (`[script_limits]`, or `const`s in a Rhai
/// job); the rest come from the global defaults ([`ScriptLimits`], from the
/// config) when the job runs, so a changed config applies to every job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    /// See [`ScriptLimits::max_operations`].
    pub max_operations: Option<u64>,
    /// See [`ScriptLimits::max_call_depth`].
    pub max_call_depth: Option<usize>,
    /// See [`ScriptLimits::max_expr_depth`].
    pub max_expr_depth: Option<usize>,
    /// See [`ScriptLimits::max_string_bytes`].
    pub max_string_bytes: Option<usize>,
    /// See [`ScriptLimits::max_array_len`].
    pub max_array_len: Option<usize>,
    /// See [`ScriptLimits::max_map_len`].
    pub max_map_len: Option<usize>,
    /// See [`ScriptLimits::wall_time`].
    pub wall_time: Option<Duration>,
}

impl ScriptLimits {
    /// These limits with the ones `job` sets in their place.
    pub fn merged(&self, job: &LimitOverrides) -> ScriptLimits {
        ScriptLimits {
            max_operations: job.max_operations.unwrap_or(self.max_operations),
            max_call_depth: job.max_call_depth.unwrap_or(self.max_call_depth),
            max_expr_depth: job.max_expr_depth.unwrap_or(self.max_expr_depth),
            max_string_bytes: job.max_string_bytes.unwrap_or(self.max_string_bytes),
            max_array_len: job.max_array_len.unwrap_or(self.max_array_len),
            max_map_len: job.max_map_len.unwrap_or(self.max_map_len),
            wall_time: job.wall_time.unwrap_or(self.wall_time),
        }
    }
}

/// Where a script's text came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptSource {
    /// Written inline in a job file (`script = "..."`), starting at `line` of it.
    Inline {
        /// The 1-based line of the job file where the script's text starts.
        line: usize,
    },
    /// A file of its own (`script_file = "x.rhai"`, or a `.rhai` job).
    File(PathBuf),
}

/// A Rhai job's body: the script runs, and every step it starts becomes a
/// child of this node.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptNode {
    /// The node's name (`main`).
    pub name: String,
    /// The script's text.
    pub code: Arc<str>,
    /// Where it came from.
    pub source: ScriptSource,
    /// The limits the job sets; the rest are the run's defaults.
    pub limits: LimitOverrides,
    /// A Rhai job's handler: the top-level function (`on_failure`, ...) to
    /// call with `run` instead of running the script's body.
    pub entry: Option<String>,
}

/// `script = "..."` or `script_file = "x.rhai"` in a TOML job: pure computation
/// on the blocking pool, with `steps.NAME.output` and `input` in scope.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptStep {
    /// The script's text.
    pub code: Arc<str>,
    /// Where it came from.
    pub source: ScriptSource,
    /// The limits the job sets; the rest are the run's defaults.
    pub limits: LimitOverrides,
}

/// Says whether a step was cancelled; code on a pool thread polls it.
pub type CancelProbe = Arc<dyn Fn() -> bool + Send + Sync>;

/// The function a [`CallStep`] runs: given a probe that says whether the step was
/// cancelled, returns the output or an error message.
pub type CallFn = dyn Fn(CancelProbe) -> Result<serde_json::Value, String> + Send + Sync;

/// A closure to run on the blocking pool (`to_thread(|| ...)` in a Rhai job).
#[derive(Clone)]
pub struct CallStep {
    /// The closure.
    pub call: Arc<CallFn>,
}

impl std::fmt::Debug for CallStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallStep(..)")
    }
}

impl PartialEq for CallStep {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.call, &other.call)
    }
}
