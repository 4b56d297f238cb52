//! `exec` (argv, no shell) and `shell` (`sh -c COMMAND`): run a program, capture
//! its stdout as the step's output and the tail of its stderr for the error.
//!
//! Each program is started in its own process group (`process_group(0)`), so the
//! step can signal everything it started at once: on cancel, SIGTERM to the
//! group, `Limits::kill_grace` for the leader to exit, then SIGKILL to the group;
//! after the leader exits on its own, SIGKILL to whatever is left of the group
//! (systemd's `KillMode=control-group`). Background children therefore cannot
//! keep the step (or its stdout pipe) open.
//!
//! With `blocking = true` the program is the same, but the wait for it happens
//! on a thread of the run's [`crate::exec::BlockingPool`] (`std::process`),
//! holding one of its permits; pipes are still read on the async side, so the
//! output bounds and cancellation are identical.
//!
//! Every program is forked on the spawner thread with a death signal
//! (`child.rs`), so it dies with gatherd even on `kill -9`; its group is
//! told to the run's [`ProcessLedger`] when it starts and when it ends, so
//! the daemon can kill at its next start what the death signal did not reach.
//!
//! Architecture Invariant: no child process outlives its step, nor the
//! daemon. Every path out of an attempt — success, failure, cancel, or the
//! attempt's future being dropped — ends with SIGKILL to the step's process
//! group; the daemon's death kills the leader at once and the rest of the
//! group at the daemon's next start.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use super::capture::{Head, Tail, os_error, trim_one_newline};
use super::child;
use super::pipe::{Sink, read_all};
use super::{StepEnv, StepError, StepLines, StepOutput};
use crate::exec::ledger::{ProcessGroup, ProcessLedger};
use crate::exec::pool::PoolPermit;
use crate::exec::{Limits, Stream};
use crate::job::{ExecStep, ProcessSpec, ShellStep};

/// How long the pipes may stay open after the leader has exited and its group
/// was killed. Only a process that left the group (`setsid`) yet kept our
/// stdout can hold them longer; then the step ends without the rest.
const PIPE_DRAIN: Duration = Duration::from_secs(2);

/// Runs one attempt of an `exec` step.
pub(super) async fn run_exec(
    step: &ExecStep,
    blocking: bool,
    env: &StepEnv<'_>,
    cancel: &CancellationToken,
) -> Result<StepOutput, StepError> {
    let mut argv = Vec::with_capacity(step.argv.len());
    for (i, t) in step.argv.iter().enumerate() {
        argv.push(env.render(&format!("argv[{i}]"), t, cancel).await?);
    }
    if argv.is_empty() {
        return Err(StepError::Failed("`exec` has no program to run".into()));
    }
    let program = argv.remove(0);
    let prepared = prepare(program, argv, &step.process, env, cancel).await?;
    run(prepared, blocking, env, cancel).await
}

/// Runs one attempt of a `shell` step: `sh -c COMMAND`.
pub(super) async fn run_shell(
    step: &ShellStep,
    blocking: bool,
    env: &StepEnv<'_>,
    cancel: &CancellationToken,
) -> Result<StepOutput, StepError> {
    let command = env.render("command", &step.command, cancel).await?;
    let prepared = prepare("sh".into(), vec!["-c".into(), command], &step.process, env, cancel).await?;
    run(prepared, blocking, env, cancel).await
}

/// A program with every template rendered and every path resolved.
struct Prepared {
    /// The job's `user` / `user_group`, if it has them.
    identity: Option<Arc<crate::job::Identity>>,
    program: String,
    args: Vec<String>,
    /// What every step starts from (the minimal set, `pass_env`): the
    /// process gets nothing else of gatherd's environment.
    base: Arc<crate::exec::Environment>,
    /// The job's env, the step's (which wins) and gatherd's `GATHERD_*`.
    env: Vec<(String, String)>,
    cwd: PathBuf,
    stdin: Option<String>,
}

async fn prepare(
    program: String,
    args: Vec<String>,
    spec: &ProcessSpec,
    env: &StepEnv<'_>,
    cancel: &CancellationToken,
) -> Result<Prepared, StepError> {
    let mut vars = Vec::with_capacity(env.job.env.len() + spec.env.len() + 4);
    // The job's first, so the step's own win (the last value set is kept).
    for (k, t) in env.job.env.iter().filter(|(k, _)| !spec.env.iter().any(|(s, _)| s == k)) {
        vars.push((k.clone(), env.render(&format!("job env.{k}"), t, cancel).await?));
    }
    for (k, t) in &spec.env {
        vars.push((k.clone(), env.render(&format!("env.{k}"), t, cancel).await?));
    }
    vars.push(("GATHERD_JOB".into(), env.job.name.clone()));
    if let Some(id) = env.ctx.run_id {
        vars.push(("GATHERD_RUN_ID".into(), id.to_string()));
    }
    vars.push(("GATHERD_STEP".into(), env.lines.path().to_string()));
    vars.push(("GATHERD_ATTEMPT".into(), env.attempt.load(std::sync::atomic::Ordering::Relaxed).to_string()));
    let cwd = match (&spec.cwd, &env.job.cwd) {
        (Some(t), _) => env.resolve(&env.render("cwd", t, cancel).await?),
        (None, Some(t)) => env.resolve(&env.render("job cwd", t, cancel).await?),
        (None, None) => env.job.dir.clone(),
    };
    if !cwd.as_os_str().is_empty() {
        match tokio::fs::metadata(&cwd).await {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(StepError::Failed(format!("working folder `{}` is not a folder", cwd.display())));
            }
            Err(e) => {
                return Err(StepError::Failed(format!("working folder `{}`: {}", cwd.display(), os_error(&e))));
            }
        }
    }
    let stdin = match &spec.stdin {
        Some(t) => Some(env.render("stdin", t, cancel).await?),
        None => None,
    };
    let base = env.ctx.environment.clone();
    Ok(Prepared { identity: env.job.identity.clone(), program, args, base, env: vars, cwd, stdin })
}

impl Prepared {
    /// The command, in its own process group, with piped stdout/stderr, armed
    /// to die with gatherd (spawn it with `child::spawn_*`).
    fn command(&self) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(&self.program);
        // Nothing of gatherd's own environment but the base set.
        cmd.env_clear().envs(self.base.base().iter().map(|(k, v)| (k, v)));
        // Then: its env comes before the step's, its `pre_exec` before any other.
        super::identity::apply(&mut cmd, self.identity.as_ref());
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if !self.cwd.as_os_str().is_empty() {
            cmd.current_dir(&self.cwd);
        }
        child::die_with_parent(&mut cmd);
        cmd
    }

    fn spawn_error(&self, e: &io::Error) -> StepError {
        StepError::Failed(format!("cannot run `{}`: {}", self.program, os_error(e)))
    }
}

/// The process the step started, waited for on the async side or on a pool
/// thread.
enum Leader {
    Async(tokio::process::Child),
    Pooled { thread: Option<JoinHandle<io::Result<ExitStatus>>>, status: Option<ExitStatus> },
}

impl Leader {
    /// Waits for the leader to exit and reaps it. Cancel-safe, and returns the
    /// same status again once it has exited.
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Leader::Async(child) => child.wait().await,
            Leader::Pooled { thread, status } => {
                if let Some(s) = status {
                    return Ok(*s);
                }
                let Some(handle) = thread.as_mut() else {
                    return Err(io::Error::other("the process was already lost"));
                };
                let joined = handle.await;
                *thread = None;
                let s =
                    joined.map_err(|e| io::Error::other(format!("the pool thread waiting for it failed: {e}")))??;
                *status = Some(s);
                Ok(s)
            }
        }
    }
}

/// SIGKILLs the process group when dropped while armed, so even an attempt
/// whose future is dropped mid-way leaves no process behind; then tells the
/// ledger the group has ended.
struct GroupGuard {
    pgid: Pid,
    armed: bool,
    recorded: Option<(Arc<dyn ProcessLedger>, ProcessGroup)>,
}

impl GroupGuard {
    /// An armed guard over the group led by `pid` (`process_group(0)` makes
    /// the group id the leader's pid), and the ledger it was told to, if any.
    fn new(pid: u32, recorded: Option<(Arc<dyn ProcessLedger>, ProcessGroup)>) -> GroupGuard {
        // Pids fit in i32 on every Unix; never let a bad value become 0 or -1,
        // which would signal our own group or every process we may signal.
        let pgid = i32::try_from(pid).ok().filter(|p| *p > 1).unwrap_or(i32::MAX);
        GroupGuard { pgid: Pid::from_raw(pgid), armed: true, recorded }
    }

    fn kill(&self, signal: Signal) {
        // ESRCH (nobody left) is the usual, good answer.
        let _ = killpg(self.pgid, signal);
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.kill(Signal::SIGKILL);
        }
        if let Some((ledger, group)) = self.recorded.take() {
            child::ended(ledger, group);
        }
    }
}

/// A started process: its leader, the guard over its group, its pipes.
struct Started {
    leader: Leader,
    guard: GroupGuard,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

async fn run(
    p: Prepared,
    blocking: bool,
    env: &StepEnv<'_>,
    cancel: &CancellationToken,
) -> Result<StepOutput, StepError> {
    let started = if blocking {
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(StepError::Cancelled),
            permit = env.ctx.pool.acquire() => permit,
        };
        start_pooled(&p, permit, env.ctx.ledger.as_ref()).await?
    } else {
        start_async(&p, env.ctx.ledger.as_ref()).await?
    };
    let program = env.ctx.environment.masker().mask(&p.program).into_owned();
    tracing::debug!(program = %program, pgid = %started.guard.pgid, blocking, "process started");
    let Started { leader, mut guard, stdin, stdout, stderr } = started;
    let stdin = stdin.zip(p.stdin);
    let pipes = Pipes { stdin, stdout, stderr };
    let result = supervise(leader, &guard, pipes, &env.lines, &env.ctx.limits, cancel).await;
    // `supervise` has reaped the leader and killed the group on every path.
    guard.armed = false;
    env.lines.close();
    result
}

/// Starts the process with tokio; the wait is async.
async fn start_async(p: &Prepared, ledger: Option<&Arc<dyn ProcessLedger>>) -> Result<Started, StepError> {
    let (mut child, recorded) =
        child::spawn_async(p.command(), ledger.cloned()).await.map_err(|e| p.spawn_error(&e))?;
    // `id()` is only `None` once the child has been reaped, not before.
    let pid = child.id().expect("a child that was just spawned has not been reaped");
    Ok(Started {
        guard: GroupGuard::new(pid, recorded),
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        leader: Leader::Async(child),
    })
}

/// Starts the process with `std::process` and waits for it on a pool thread
/// holding `permit`; the pipes are handed to tokio.
async fn start_pooled(
    p: &Prepared,
    permit: PoolPermit,
    ledger: Option<&Arc<dyn ProcessLedger>>,
) -> Result<Started, StepError> {
    let (mut child, recorded) = child::spawn_std(p.command(), ledger.cloned()).await.map_err(|e| p.spawn_error(&e))?;
    let guard = GroupGuard::new(child.id(), recorded);
    let pipes = (
        child.stdin.take().map(ChildStdin::from_std).transpose(),
        child.stdout.take().map(ChildStdout::from_std).transpose(),
        child.stderr.take().map(ChildStderr::from_std).transpose(),
    );
    let leader = Leader::Pooled { thread: Some(permit.spawn(move || child.wait())), status: None };
    match pipes {
        (Ok(stdin), Ok(stdout), Ok(stderr)) => Ok(Started { leader, guard, stdin, stdout, stderr }),
        // Dropping the armed guard kills the group; the pool thread reaps it.
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            Err(StepError::Failed(format!("cannot read the output of `{}`: {}", p.program, os_error(&e))))
        }
    }
}

/// How the wait for the leader ended.
enum Ended {
    Exited(ExitStatus),
    Cancelled,
    WaitFailed(io::Error),
}

/// The process's pipes, as the step holds them.
struct Pipes {
    stdin: Option<(ChildStdin, String)>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

async fn supervise(
    mut leader: Leader,
    guard: &GroupGuard,
    pipes: Pipes,
    lines: &StepLines<'_>,
    limits: &Limits,
    cancel: &CancellationToken,
) -> Result<StepOutput, StepError> {
    let out = Sink::new(Head::new(limits.output_bytes), lines.sender(), Stream::Stdout);
    let err = Sink::new(Tail::new(limits.stderr_tail_bytes), lines.sender(), Stream::Stderr);
    let Pipes { stdin, stdout, stderr } = pipes;
    // Cancelled when the step gives up on its pipes: the readers end
    // (a thread reading one too) and `io` completes at once.
    let stop = CancellationToken::new();
    let mut io = Box::pin(async {
        tokio::join!(write_stdin(stdin), read_all(stdout, out.clone(), &stop), read_all(stderr, err.clone(), &stop))
    });
    let mut io_done = false;
    let ended = {
        let mut status = None;
        // Armed once the leader has exited. No timer exists before that, so a
        // paused-clock test has nothing to jump to while a process runs.
        let mut drain: Option<Pin<Box<Sleep>>> = None;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break Ended::Cancelled,
                st = leader.wait(), if status.is_none() => match st {
                    Ok(st) => {
                        // The leader is done: nothing else of its group may
                        // live on, nor hold our pipes open.
                        guard.kill(Signal::SIGKILL);
                        status = Some(st);
                        drain = Some(Box::pin(tokio::time::sleep(PIPE_DRAIN)));
                    }
                    Err(e) => break Ended::WaitFailed(e),
                },
                _ = &mut io, if !io_done => io_done = true,
                _ = async { match drain.as_mut() {
                    Some(d) => d.await,
                    None => std::future::pending().await,
                } }, if drain.is_some() && !io_done => {
                    tracing::warn!(pgid = %guard.pgid, "a process outside the step's group kept its output open; stopped reading");
                    stop.cancel();
                    (&mut io).await;
                    io_done = true;
                }
            }
            if let (true, Some(st)) = (io_done, status) {
                break Ended::Exited(st);
            }
        }
    };
    match ended {
        Ended::Exited(status) => {
            drop(io);
            finish(status, out.kept(Head::new(0)), err.kept(Tail::new(0)))
        }
        Ended::Cancelled => {
            guard.kill(Signal::SIGTERM);
            let _ = tokio::time::timeout(limits.kill_grace, leader.wait()).await;
            guard.kill(Signal::SIGKILL);
            let _ = leader.wait().await;
            // What the group wrote before it died is still in the pipes:
            // read it (they close with the group), so a cancelled or timed
            // out step keeps everything it printed.
            if !io_done && tokio::time::timeout(PIPE_DRAIN, &mut io).await.is_err() {
                stop.cancel();
                io.await;
            }
            Err(StepError::Cancelled)
        }
        Ended::WaitFailed(e) => {
            guard.kill(Signal::SIGKILL);
            Err(StepError::Failed(format!("waiting for the process failed: {e}")))
        }
    }
}

/// The step's result from the leader's exit status and what it wrote.
fn finish(status: ExitStatus, out: Head, err: Tail) -> Result<StepOutput, StepError> {
    use std::os::unix::process::ExitStatusExt;
    let what = match (status.code(), status.signal()) {
        (Some(0), _) => {
            let (text, truncated) = out.into_text();
            let text = if truncated { text } else { trim_one_newline(text) };
            return Ok(StepOutput { value: text.into(), truncated });
        }
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        (None, None) => format!("ended with {status}"),
    };
    let tail = err.into_text();
    let error = if tail.is_empty() { what } else { format!("{what}; stderr: {tail}") };
    // What it printed to stdout stays with the failure: often the one line
    // that says why.
    let (text, truncated) = out.into_text();
    if text.is_empty() {
        return Err(StepError::Failed(error));
    }
    let text = if truncated { text } else { trim_one_newline(text) };
    Err(StepError::FailedWithOutput(error, Box::new(StepOutput { value: text.into(), truncated })))
}

/// Writes the stdin text and closes the pipe. A program that exits without
/// reading it is not an error (EPIPE is ignored).
async fn write_stdin(stdin: Option<(ChildStdin, String)>) {
    if let Some((mut pipe, text)) = stdin {
        let _ = pipe.write_all(text.as_bytes()).await;
        let _ = pipe.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use nix::errno::Errno;
    use nix::sys::signal::killpg;
    use nix::unistd::Pid;
    use tokio_util::sync::CancellationToken;

    use crate::exec::step::testing::{attempt, attempt_lines, attempt_with, limits, step};
    use crate::exec::step::{StepError, StepOutput};
    use crate::exec::{BlockingPool, Limits, Stream};
    use crate::job::{ExecStep, ProcessSpec, ShellStep, StepKind, Template};

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    fn exec(argv: &[&str]) -> StepKind {
        StepKind::Exec(Box::new(ExecStep {
            argv: argv.iter().map(|a| t(a)).collect(),
            process: ProcessSpec::default(),
        }))
    }

    fn shell(command: &str) -> StepKind {
        shell_with(command, ProcessSpec::default())
    }

    fn shell_with(command: &str, process: ProcessSpec) -> StepKind {
        StepKind::Shell(Box::new(ShellStep { command: t(command), process }))
    }

    fn failed(r: Result<StepOutput, StepError>) -> String {
        match r {
            Err(StepError::Failed(m) | StepError::FailedWithOutput(m, _)) => m,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    /// Clock ticks since boot, the unit of a process's start time in
    /// `/proc/PID/stat`.
    fn ticks_since_boot() -> u64 {
        let uptime = std::fs::read_to_string("/proc/uptime").unwrap();
        let secs: f64 = uptime.split_whitespace().next().unwrap().parse().unwrap();
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as f64;
        (secs * hz) as u64
    }

    /// Whether any live (non-zombie) process started by `born_by` (clock
    /// ticks since boot) is still in group `pgid`. Zombies are dead: they
    /// only wait for init to reap them, which can be slow here. A process
    /// started later is not ours: on a busy box (pid_max 32768, parallel
    /// builds and tests) a killed group's id is soon reused by another.
    fn group_alive(pgid: i32, born_by: u64) -> bool {
        if killpg(Pid::from_raw(pgid), None) == Err(Errno::ESRCH) {
            return false;
        }
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return true;
        };
        dir.flatten().any(|entry| {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                return false;
            };
            // "pid (comm) state ppid pgrp ..."; comm may hold spaces.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let state = fields.first().copied();
            let pgrp = fields.get(2).and_then(|f| f.parse::<i32>().ok());
            let started = fields.get(19).and_then(|f| f.parse::<u64>().ok());
            pgrp == Some(pgid) && state != Some("Z") && started.is_some_and(|t| t <= born_by)
        })
    }

    /// Polls (a bound, not a speed assert) until the group is gone: every
    /// process of it started before this call.
    async fn assert_group_gone(pgid: i32) {
        let born_by = ticks_since_boot();
        for _ in 0..500 {
            if !group_alive(pgid, born_by) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("process group {pgid} is still alive after 10 s");
    }

    /// Waits for the pid file the command writes once it has started.
    async fn read_pid_file(path: &Path) -> i32 {
        for _ in 0..1000 {
            if let Ok(s) = std::fs::read_to_string(path)
                && let Ok(pid) = s.trim().parse()
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the process never wrote {}", path.display());
    }

    #[tokio::test]
    async fn output_is_captured_with_one_trailing_newline_trimmed() {
        for blocking in [false, true] {
            let out = attempt(exec(&["echo", "hello"]), blocking, Path::new("/")).await;
            assert_eq!(out, Ok(StepOutput::whole("hello")));
            let out = attempt(shell("printf 'a\\n\\n'"), blocking, Path::new("/")).await;
            assert_eq!(out, Ok(StepOutput::whole("a\n")));
        }
    }

    #[tokio::test]
    async fn env_cwd_and_stdin_are_given_to_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().canonicalize().unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        for blocking in [false, true] {
            let spec = ProcessSpec {
                env: vec![("GATHERD_FOO".into(), t("{{ steps.prev.output }}"))],
                cwd: Some(t("sub")),
                stdin: Some(t("typed {{ input }}")),
            };
            let out = attempt(shell_with("printf '%s|' \"$GATHERD_FOO\"; pwd; cat", spec), blocking, &dir).await;
            let want = format!("PREV|{}\ntyped IN", dir.join("sub").display());
            assert_eq!(out, Ok(StepOutput::whole(want)));
        }
    }

    #[tokio::test]
    async fn default_folder_is_the_jobs_and_stdin_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().canonicalize().unwrap();
        let out = attempt(shell("pwd; cat"), false, &dir).await;
        assert_eq!(out, Ok(StepOutput::whole(dir.display().to_string())));
    }

    #[tokio::test]
    async fn missing_folder_is_a_clear_failure() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ProcessSpec { cwd: Some(t("nope")), ..ProcessSpec::default() };
        let msg = failed(attempt(shell_with("true", spec), false, dir.path()).await);
        assert!(msg.starts_with("working folder `"), "{msg}");
        assert!(msg.ends_with("nope`: No such file or directory"), "{msg}");
    }

    #[tokio::test]
    async fn non_zero_exit_fails_with_code_and_stderr_tail() {
        for blocking in [false, true] {
            let msg = failed(attempt(shell("echo out; echo oops >&2; exit 3"), blocking, Path::new("/")).await);
            assert_eq!(msg, "exit status 3; stderr: oops");
            let msg = failed(attempt(exec(&["false"]), blocking, Path::new("/")).await);
            assert_eq!(msg, "exit status 1");
        }
    }

    /// A step that prints little keeps the kernel's 64 KiB pipes: growing
    /// every step's pipes to 1 MiB charges its user's pipe pages at once and,
    /// past `pipe-user-pages-soft`, cuts every new pipe of that user short.
    /// (F_GETPIPE_SZ is 1032; the step asks it of its own stdout, after a
    /// pause that leaves gatherd time to have grown it.)
    #[tokio::test]
    async fn a_quiet_steps_pipes_are_not_grown() {
        let dir = tempfile::tempdir().unwrap();
        let ask = "import fcntl, time; time.sleep(0.2); print(fcntl.fcntl(1, 1032)); \
                   import sys; print(fcntl.fcntl(2, 1032), file=sys.stderr)";
        let (r, lines) = attempt_lines(
            &step(exec(&["python3", "-c", ask]), false),
            dir.path(),
            BlockingPool::new(2),
            limits(),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(r.map(|o| o.value), Ok(serde_json::json!("65536")));
        assert_eq!(lines.last().map(|(_, t)| t.as_str()), Some("65536"), "stderr's pipe: {lines:?}");
    }

    /// A flood read on its own thread (past the first MiB) keeps the same
    /// bounds as one read on the async side: one 50 MB line without a
    /// newline is cut into pieces while the head lasts, the rest of it is
    /// dropped, and the invalid UTF-8 after it is kept lossily.
    #[tokio::test]
    async fn a_50_mb_line_without_a_newline_then_binary_bytes_keep_the_bounds() {
        let s = step(shell("head -c 50000000 /dev/zero | tr '\\0' x; printf '\\n\\377\\376 end\\n'"), false);
        let (r, lines) =
            attempt_lines(&s, Path::new("/"), BlockingPool::new(1), limits(), &CancellationToken::new()).await;
        let piece = "x".repeat(crate::exec::step::PIECE);
        let mut want: Vec<(Stream, String)> = vec![(Stream::Stdout, piece); 64];
        // 50,000,008 bytes: 1 MiB of head, the 7 of the last line kept.
        want.push((Stream::Stdout, "… 48,951,425 bytes dropped …".into()));
        want.push((Stream::Stdout, "\u{FFFD}\u{FFFD} end".into()));
        assert!(lines == want, "{} lines, the last {:?}", lines.len(), &lines[lines.len().saturating_sub(2)..]);
        let out = r.expect("it succeeds");
        assert!(out.truncated);
        assert_eq!(out.value, serde_json::json!("x".repeat(1024 * 1024)));
    }

    #[tokio::test]
    async fn each_line_of_both_streams_is_sent_and_a_failure_keeps_its_stdout() {
        for blocking in [false, true] {
            let s = step(shell("echo out; sleep 0.1; echo oops >&2; sleep 0.1; printf 'last'; exit 3"), blocking);
            let (r, lines) =
                attempt_lines(&s, Path::new("/"), BlockingPool::new(1), limits(), &CancellationToken::new()).await;
            assert_eq!(
                lines,
                vec![(Stream::Stdout, "out".into()), (Stream::Stderr, "oops".into()), (Stream::Stdout, "last".into())],
                "blocking={blocking}"
            );
            let want = StepOutput::whole("out\nlast");
            assert_eq!(r, Err(StepError::FailedWithOutput("exit status 3; stderr: oops".into(), Box::new(want))));
        }
    }

    #[tokio::test]
    async fn stderr_keeps_only_its_tail() {
        let step = step(shell("printf 'aaaaaaaaaa-the-end' >&2; exit 1"), false);
        let limits = Limits { stderr_tail_bytes: 7, ..limits() };
        let r = attempt_with(&step, Path::new("/"), BlockingPool::new(1), limits, &CancellationToken::new()).await;
        assert_eq!(failed(r), "exit status 1; stderr: …the-end");
    }

    #[tokio::test]
    async fn death_by_signal_names_the_signal() {
        let msg = failed(attempt(shell("kill -9 $$"), false, Path::new("/")).await);
        assert_eq!(msg, "killed by signal SIGKILL");
    }

    #[tokio::test]
    async fn missing_program_is_a_clear_failure() {
        for blocking in [false, true] {
            let msg = failed(attempt(exec(&["nosuchprog-gatherd"]), blocking, Path::new("/")).await);
            assert_eq!(msg, "cannot run `nosuchprog-gatherd`: No such file or directory");
        }
    }

    #[tokio::test]
    async fn output_past_the_bound_is_drained_and_marked_truncated() {
        for blocking in [false, true] {
            // 200 kB: more than a pipe buffer, so the rest must be drained.
            let step = step(shell("head -c 200000 /dev/zero | tr '\\0' x"), blocking);
            let limits = Limits { output_bytes: 10, ..limits() };
            let out = attempt_with(&step, Path::new("/"), BlockingPool::new(1), limits, &CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(out.value, "xxxxxxxxxx");
            assert!(out.truncated);
        }
    }

    #[tokio::test]
    async fn templates_in_argv_are_rendered() {
        let out = attempt(exec(&["echo", "{{ steps.prev.output }}-{{ input }}"]), false, Path::new("/")).await;
        assert_eq!(out, Ok(StepOutput::whole("PREV-IN")));
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_process_group() {
        for blocking in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let pid_file = dir.path().join("pid");
            let cancel = CancellationToken::new();
            let pool = BlockingPool::new(1);
            let task = {
                let (cancel, pool, dir) = (cancel.clone(), pool.clone(), dir.path().to_path_buf());
                tokio::spawn(async move {
                    let s = step(shell("echo $$ > pid; sleep 300 & sleep 300"), blocking);
                    attempt_with(&s, &dir, pool, limits(), &cancel).await
                })
            };
            let pgid = read_pid_file(&pid_file).await;
            cancel.cancel();
            let r =
                tokio::time::timeout(Duration::from_secs(30), task).await.expect("a cancelled process step returns");
            assert_eq!(r.unwrap(), Err(StepError::Cancelled));
            assert_group_gone(pgid).await;
            assert_eq!(pool.busy(), 0, "blocking={blocking}: the pool thread is freed");
        }
    }

    #[tokio::test]
    async fn a_group_that_ignores_sigterm_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let task = {
            let (cancel, dir) = (cancel.clone(), dir.path().to_path_buf());
            tokio::spawn(async move {
                let s = step(shell("trap '' TERM; echo $$ > pid; sleep 300 & sleep 300"), false);
                attempt_with(&s, &dir, BlockingPool::new(1), limits(), &cancel).await
            })
        };
        let pgid = read_pid_file(&dir.path().join("pid")).await;
        cancel.cancel();
        assert_eq!(task.await.unwrap(), Err(StepError::Cancelled));
        assert_group_gone(pgid).await;
    }

    #[tokio::test]
    async fn leftover_background_children_are_killed_when_the_leader_exits() {
        for blocking in [false, true] {
            // The background sleep keeps stdout open: the step must not wait
            // for it, and must not leave it running.
            let out = tokio::time::timeout(
                Duration::from_secs(60),
                attempt(shell("echo $$; sleep 300 &"), blocking, Path::new("/")),
            )
            .await
            .expect("the step does not wait for its background child")
            .unwrap();
            let pgid: i32 = out.value.as_str().unwrap().parse().unwrap();
            assert_group_gone(pgid).await;
        }
    }

    /// The name of the threads of `a_step_outlives_the_pool_threads_that_went_idle`'s runtime.
    const THREADS: &str = "gatherd-idle";

    /// How many threads of this process are named `name`.
    fn threads_named(name: &str) -> usize {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
        tasks
            .flatten()
            .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
            .count()
    }

    #[test]
    fn a_step_outlives_the_pool_threads_that_went_idle() {
        // Every process dies with the thread that forked it (its death
        // signal), and tokio ends a blocking thread after `thread_keep_alive`
        // idle: a process forked on one would be killed mid-step.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_keep_alive(Duration::from_millis(20))
            .thread_name(THREADS)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Threads that ran blocking work, then idled out.
            assert_eq!(attempt(exec(&["true"]), true, Path::new("/")).await, Ok(StepOutput::whole("")));
            // Wait (a bound, not a speed assert) until they really ended:
            // only the one worker thread is left.
            let mut idle = false;
            for _ in 0..500 {
                idle = threads_named(THREADS) == 1;
                if idle {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(idle, "the runtime's blocking threads never ended: {} threads", threads_named(THREADS));
            for blocking in [true, false] {
                let churn = tokio::task::spawn_blocking(|| ());
                let out = attempt(exec(&["sleep", "1"]), blocking, Path::new("/")).await;
                assert_eq!(out, Ok(StepOutput::whole("")), "blocking={blocking}");
                churn.await.unwrap();
            }
        });
    }

    #[tokio::test]
    async fn dropping_the_attempt_kills_the_group() {
        for blocking in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let task = {
                let dir = dir.path().to_path_buf();
                tokio::spawn(async move {
                    let s = step(shell("echo $$ > pid; sleep 300"), blocking);
                    attempt_with(&s, &dir, BlockingPool::new(1), limits(), &CancellationToken::new()).await
                })
            };
            let pgid = read_pid_file(&dir.path().join("pid")).await;
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
            assert_group_gone(pgid).await;
        }
    }
}
