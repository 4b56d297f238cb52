//! The job model: what a job file means, as plain data.
//!
//! A [`Job`] is a tree of [`Node`]s — [`Group`]s (gather, as_completed, race,
//! sequence) whose leaves are [`Step`]s — plus the settings that say when and how
//! it runs. The loaders in `crate::load` build it; the executor in `crate::exec`
//! walks it.
//!
//! Architecture Invariant: this module is pure data. No I/O, no tokio, no
//! parsing of files: anything here can be built by hand in a unit test.

mod backoff;
mod format;
mod identity;
mod kind;
mod name;
mod notify;
mod script;
mod template;
pub(crate) mod word;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

pub use backoff::Backoff;
pub use format::JobFormat;
pub use identity::{Identity, UserIdentity};
pub use kind::NodeKind;
pub use name::{NameError, closest, resolve as resolve_name};
pub use notify::{DEFAULT_NOTIFY_ON, Notify, NotifyEvent};
pub use script::{CallFn, CallStep, CancelProbe, LimitOverrides, ScriptLimits, ScriptNode, ScriptSource, ScriptStep};
pub use template::{NAMES as TEMPLATE_NAMES, RENDER_FUEL, RenderError, Template, TemplateError};

/// One job, loaded from one file and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job's name: the file name without its extension (`seed-gather`).
    pub name: String,
    /// The file it was loaded from, as given to the loader.
    pub file: PathBuf,
    /// The folder relative paths in steps resolve against (the file's folder).
    pub dir: PathBuf,
    /// Free text for people reading `gatherd jobs`.
    pub description: Option<String>,
    /// Limit on the whole run (`asyncio.wait_for` on `main()`).
    pub timeout: Option<Duration>,
    /// When the daemon runs it.
    pub trigger: Trigger,
    /// What the daemon does when a run is due while the last is still going.
    pub overlap: Overlap,
    /// What a fleet does with this job's run when the node running it is
    /// lost (README "Nodes, leases and takeover").
    pub on_node_loss: OnNodeLoss,
    /// Jobs naming the same semaphore never run more at once than its count
    /// (set in the config; default 1).
    pub semaphore: Option<String>,
    /// Upper bound of a delay added to each scheduled fire; the delay itself is
    /// derived from the job's identity, so it is the same across restarts.
    pub jitter: Option<Duration>,
    /// What to do, at start, with the fires missed while the daemon was down.
    pub catch_up: CatchUp,
    /// Only missed fires this recent may be caught up (the rest are recorded
    /// missed); `None` = the built-in default window.
    pub catch_up_window: Option<Duration>,
    /// Keep at most this many runs of this job in the history.
    pub keep_runs: Option<u64>,
    /// Keep runs of this job for this long.
    pub keep_for: Option<Duration>,
    /// `user` / `user_group`: who its processes run as; `None` = as gatherd.
    pub identity: Option<std::sync::Arc<Identity>>,
    /// `max_output`: how much of each step's output lines it keeps; unset
    /// parts are the config's (or the built-in defaults).
    pub max_output: MaxOutput,
    /// Job-level `env` and `env_file` variables (the table's win over the
    /// file's), which every `exec`/`shell` step gets; a step's own `env` wins.
    pub env: Vec<(String, Template)>,
    /// Job-level `cwd`: the working folder of steps without their own,
    /// relative to the job's folder.
    pub cwd: Option<Template>,
    /// `notify`, `notify_on`, `notify_after`, `repeat_every`,
    /// `expect_success_within`: what the daemon's notifier tells whom.
    pub notify: Notify,
    /// The root of the run tree: the first group, or the steps in sequence.
    pub root: Node,
    /// `[handlers]`: what runs after the root, by how it ended.
    pub handlers: Handlers,
}

/// `[handlers]`: steps or groups outside the main tree that run after it,
/// in this order, each when it applies. They read how the run and every
/// step ended (`run.status`, `steps.NAME.status`); their own failure is
/// recorded and leaves the run's status as it was.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Handlers {
    /// Runs when the main tree failed or timed out.
    pub on_failure: Option<Box<Node>>,
    /// Runs when the main tree succeeded.
    pub on_success: Option<Box<Node>>,
    /// Runs after either (not after a cancelled run).
    pub on_exit: Option<Box<Node>>,
}

impl Handlers {
    /// The handlers set, each with the key that names it, in running order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Node)> {
        [("on_failure", &self.on_failure), ("on_success", &self.on_success), ("on_exit", &self.on_exit)]
            .into_iter()
            .filter_map(|(key, node)| node.as_deref().map(|n| (key, n)))
    }
}

impl Job {
    /// A job loaded from `file` (in folder `dir`) named `name`, with `root`
    /// and every setting at its default: the one place the defaults live.
    pub fn new(name: impl Into<String>, file: PathBuf, dir: PathBuf, root: Node) -> Job {
        Job {
            name: name.into(),
            file,
            dir,
            description: None,
            timeout: None,
            trigger: Trigger::OnChange,
            overlap: Overlap::default(),
            on_node_loss: OnNodeLoss::default(),
            semaphore: None,
            jitter: None,
            catch_up: CatchUp::default(),
            catch_up_window: None,
            keep_runs: None,
            keep_for: None,
            identity: None,
            max_output: MaxOutput::default(),
            env: Vec::new(),
            cwd: None,
            notify: Notify::default(),
            root,
            handlers: Handlers::default(),
        }
    }

    /// A job named `name` in `dir` with `root` and every setting at its default.
    #[cfg(test)]
    pub(crate) fn for_test(name: &str, dir: &std::path::Path, root: Node) -> Job {
        Job::new(name, dir.join(format!("{name}.toml")), dir.to_path_buf(), root)
    }
}

impl Job {
    /// The config's secrets this job's templates read (`secrets.NAME`):
    /// its `env` and `cwd` and every step's. (A script's `secret("NAME")` is
    /// known only when it runs.)
    pub fn secrets_read(&self) -> std::collections::BTreeSet<String> {
        fn walk<'a>(node: &'a Node, out: &mut Vec<&'a Template>) {
            match node {
                Node::Step(s) => out.extend(s.templates()),
                Node::Group(g) => {
                    g.children.iter().for_each(|c| walk(c, out));
                    if let Some(each) = &g.each {
                        out.extend(each.templates());
                    }
                }
                Node::Script(_) => {}
            }
        }
        let mut templates: Vec<&Template> = self.env.iter().map(|(_, t)| t).chain(self.cwd.iter()).collect();
        walk(&self.root, &mut templates);
        templates.iter().flat_map(|t| t.secrets().iter().cloned()).collect()
    }
}

impl Step {
    /// Every template field of the step.
    pub fn templates(&self) -> Vec<&Template> {
        fn process(p: &ProcessSpec) -> impl Iterator<Item = &Template> {
            p.env.iter().map(|(_, t)| t).chain(p.cwd.iter()).chain(p.stdin.iter())
        }
        match &self.kind {
            StepKind::Sleep(_) | StepKind::Call(_) | StepKind::Script(_) => Vec::new(),
            StepKind::Exec(e) => e.argv.iter().chain(process(&e.process)).collect(),
            StepKind::Shell(s) => std::iter::once(&s.command).chain(process(&s.process)).collect(),
            StepKind::Http(h) => {
                std::iter::once(&h.url).chain(h.headers.iter().map(|(_, t)| t)).chain(h.body.iter()).collect()
            }
            StepKind::ReadFile(r) => vec![&r.path],
            StepKind::WriteFile(w) => vec![&w.path, &w.content],
        }
    }
}

/// `max_output = { head = BYTES, tail = BYTES }`, in a job or the config:
/// each step's output lines are kept up to `head` bytes as they come, then
/// the last `tail` bytes. `None` = not set here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaxOutput {
    /// Bytes of lines kept from the start.
    pub head: Option<u64>,
    /// Bytes of lines kept from the end.
    pub tail: Option<u64>,
}

impl MaxOutput {
    /// The most either may be: 1 GiB (the tail is held in memory per step).
    pub const MAX_BYTES: u64 = 1 << 30;
}

/// When a job runs under the daemon. `gatherd run` ignores it.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// No trigger key: once when the file appears, again when its content changes.
    OnChange,
    /// `schedule = "<cron>"`, 5 or 6 fields, in `timezone` (default: the host's).
    Cron {
        /// The cron expression as written (validated by the loader).
        expr: String,
        /// An IANA timezone name, validated against chrono-tz; `None` = local time.
        timezone: Option<chrono_tz::Tz>,
    },
    /// `every = "30s"`: a fixed interval measured from the scheduled time.
    Every(Duration),
}

/// What to do when the next run is due while the previous one is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// Do not start the new run; log that it was skipped.
    #[default]
    Skip,
    /// Keep at most one run waiting; start it when the current one ends.
    Queue,
    /// Cancel the running one and start the new one.
    Replace,
    /// Run both.
    Allow,
}

/// What a fleet does with a run of the job when the node running it stops
/// heartbeating (`on_node_loss`): the node that takes it over always records
/// the run `interrupted`; with `Rerun` it also starts the job again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnNodeLoss {
    /// Record the run `interrupted`; nothing runs again.
    #[default]
    Record,
    /// Record it `interrupted`, and start a new run of the job (same
    /// trigger, on the node that took it over): at least once.
    Rerun,
}

/// What a scheduled job does after downtime with the fires it missed
/// (systemd's `Persistent=`, bounded). Every missed fire that does not run is
/// recorded as `missed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// Run none of them.
    #[default]
    Skip,
    /// Run the most recent one, once, at start.
    Latest,
    /// Run each one inside the window, one after another.
    All,
}

/// A node of the run tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A group of children run together (gather, race, …) or in order.
    Group(Group),
    /// A leaf that does one thing.
    Step(Step),
    /// A Rhai job's body: its children are the steps its script starts.
    Script(ScriptNode),
}

impl Node {
    /// The name the node was given in the job file.
    pub fn name(&self) -> &str {
        match self {
            Node::Group(g) => &g.name,
            Node::Step(s) => &s.name,
            Node::Script(s) => &s.name,
        }
    }

    /// The number of steps in this subtree (each `each` step counts once);
    /// `None` when a script decides at run time.
    pub fn step_count(&self) -> Option<usize> {
        match self {
            Node::Step(_) => Some(1),
            Node::Script(_) => None,
            Node::Group(g) => {
                let mut n = usize::from(g.each.is_some());
                for child in g.children.iter().chain(g.finally.as_deref()) {
                    n += child.step_count()?;
                }
                Some(n)
            }
        }
    }
}

/// A group: how its children are awaited together.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Unique among groups and steps of the job.
    pub name: String,
    /// gather, as_completed, race or sequence.
    pub mode: GroupMode,
    /// The children, in the order written.
    pub children: Vec<Node>,
    /// At most this many children run at once (`None` = all).
    pub limit: Option<NonZeroUsize>,
    /// What a child's failure does to its siblings.
    pub on_error: OnError,
    /// Limit on the whole group.
    pub timeout: Option<Duration>,
    /// as_completed only: a step run once per child result, as soon as that child
    /// finishes, with the result as its `{{ input }}`.
    pub each: Option<Box<Step>>,
    /// `finally = "NAME"`: a step or group run when this group is done,
    /// whatever happened to it (not when a cancel came from above); it reads
    /// the children's statuses. Its failure does not change the group's.
    pub finally: Option<Box<Node>>,
}

/// How a group runs its children; the asyncio function it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupMode {
    /// `asyncio.gather`: all at once, results in the order written.
    Gather,
    /// `asyncio.as_completed`: all at once, results in the order they finish.
    AsCompleted,
    /// `asyncio.wait(FIRST_COMPLETED)` + cancel: the first success wins.
    Race,
    /// `await a; await b`: one after another, results in order.
    Sequence,
}

/// What a child's failure does to the rest of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Cancel the running siblings, skip the ones not started, fail the group.
    #[default]
    Cancel,
    /// Let the siblings finish; the group fails at the end if any child failed.
    Continue,
}

/// A leaf of the run tree: one thing to do, with its retry and timeout policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Unique among groups and steps of the job.
    pub name: std::sync::Arc<str>,
    /// What the step does.
    pub kind: StepKind,
    /// Run on the bounded blocking pool (`asyncio.to_thread`).
    pub blocking: bool,
    /// Limit on each attempt.
    pub timeout: Option<Duration>,
    /// How failed attempts are retried.
    pub retry: Retry,
}

/// Retry policy: `retries` more attempts after the first, waiting
/// `delay × backoff^(n-1)` before the n-th retry.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Extra attempts after the first (0 = no retry).
    pub retries: u32,
    /// Wait before the first retry.
    pub delay: Duration,
    /// Factor applied to the wait after each retry (1 = constant).
    pub backoff: f64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { retries: 0, delay: Duration::from_secs(1), backoff: 1.0 }
    }
}

impl Retry {
    /// The wait before retry number `n` (1-based).
    pub fn delay_before(&self, n: u32) -> Duration {
        let factor = self.backoff.powi(n.saturating_sub(1).min(i32::MAX as u32) as i32);
        Duration::try_from_secs_f64(self.delay.as_secs_f64() * factor).unwrap_or(Duration::MAX)
    }
}

/// What a step does. One file per kind lives under `crate::exec::step`.
///
/// The kinds bigger than a sleep are boxed, so a step costs what a sleep
/// needs plus a pointer: a 100,000-step fan-out of sleeps stays small.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// Wait, then return `output` (the seed's `await asyncio.sleep(1); return "x"`).
    Sleep(SleepStep),
    /// Run a program (argv, no shell).
    Exec(Box<ExecStep>),
    /// Run a command line with `sh -c`.
    Shell(Box<ShellStep>),
    /// An HTTP request.
    Http(Box<HttpStep>),
    /// Read a text file.
    ReadFile(ReadFileStep),
    /// Write a text file atomically (temp file + rename).
    WriteFile(Box<WriteFileStep>),
    /// Run a Rhai script on the blocking pool; its value is the output.
    Script(Box<ScriptStep>),
    /// Call a closure on the blocking pool (a Rhai job's `to_thread`).
    Call(CallStep),
}

/// `sleep = "1s"` with an optional `output`.
#[derive(Debug, Clone, PartialEq)]
pub struct SleepStep {
    /// How long to wait.
    pub duration: Duration,
    /// The step's result (any TOML value, as JSON); `null` when absent.
    pub output: Option<serde_json::Value>,
}

/// Settings shared by `exec` and `shell`: the process's surroundings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProcessSpec {
    /// Extra environment variables, over the job's `env` (see
    /// `exec::Environment` for the rest of a process's environment).
    pub env: Vec<(String, Template)>,
    /// Working folder; relative to the job's folder. Default: the job's folder.
    pub cwd: Option<Template>,
    /// Text written to the process's standard input (closed when absent).
    pub stdin: Option<Template>,
}

/// `exec = ["prog", "arg"]` or `exec = { argv = [...], env = {...}, cwd, stdin }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecStep {
    /// Program and arguments; never empty.
    pub argv: Vec<Template>,
    /// Environment, folder and stdin.
    pub process: ProcessSpec,
}

/// `shell = "cmd | filter"` or `shell = { command = "...", env, cwd, stdin }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShellStep {
    /// The command line given to `sh -c`.
    pub command: Template,
    /// Environment, folder and stdin.
    pub process: ProcessSpec,
}

/// `http = { url = "...", method, headers, body, timeout, expect_status }`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpStep {
    /// GET, POST, … (upper case).
    pub method: String,
    /// The URL.
    pub url: Template,
    /// Request headers, in the order written.
    pub headers: Vec<(String, Template)>,
    /// Request body.
    pub body: Option<Template>,
    /// Limit on the request alone (the step's `timeout` covers retries' attempts).
    pub timeout: Option<Duration>,
    /// Statuses that count as success; empty = any 2xx.
    pub expect_status: Vec<u16>,
}

/// `read_file = "path"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadFileStep {
    /// The file; relative to the job's folder.
    pub path: Template,
}

/// `write_file = { path = "...", content = "..." }`.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteFileStep {
    /// The file; relative to the job's folder.
    pub path: Template,
    /// The text to write.
    pub content: Template,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_by_backoff() {
        let r = Retry { retries: 3, delay: Duration::from_millis(100), backoff: 2.0 };
        assert_eq!(r.delay_before(1), Duration::from_millis(100));
        assert_eq!(r.delay_before(2), Duration::from_millis(200));
        assert_eq!(r.delay_before(3), Duration::from_millis(400));
    }

    #[test]
    fn constant_backoff_keeps_the_delay() {
        let r = Retry { retries: 2, delay: Duration::from_secs(1), backoff: 1.0 };
        assert_eq!(r.delay_before(1), r.delay_before(2));
    }
}
