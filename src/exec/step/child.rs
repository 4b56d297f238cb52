//! Where every step's process is forked, and how it dies with gatherd.
//!
//! A step's process is given `PR_SET_PDEATHSIG(SIGKILL)` before it execs: the
//! kernel kills it when its parent dies, however that happens — `kill -9`
//! of the daemon included. But the parent the kernel means is the *thread*
//! that forked the child, not the process: a child forked from one of
//! tokio's blocking threads (which end after 10 s idle), or from a worker a
//! `block_in_place` handed off, would be killed in the middle of its step.
//! So every step's process is forked on one thread started for that and
//! never ended, the *spawner*: [`spawn_async`] and [`spawn_std`] hand it the
//! command and wait for the child (the caller waits for its fork as it did
//! when it forked itself). The same thread tells the run's
//! [`ProcessLedger`] of each group right after the fork, and of its end
//! ([`ended`]), so the records are written in the order things happened.
//!
//! The death signal reaches only the step's direct child, not what it
//! started in the background; the daemon's ledger covers those at its next
//! start (ARCHITECTURE.md, "Processes").
//!
//! Architecture Invariant: every step process is forked on the spawner
//! thread with its death signal armed; nothing else forks for a step.

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, mpsc};

use nix::sys::signal::Signal;
use nix::unistd::{Pid, getpid, getppid};

use crate::exec::ledger::{ProcessGroup, ProcessLedger, read_stat};

/// Work for the spawner thread.
type Work = Box<dyn FnOnce() + Send>;

/// The way to the spawner thread, started by the first spawn. The thread
/// ends only if every sender is gone, and this one never is.
static SPAWNER: Mutex<Option<mpsc::Sender<Work>>> = Mutex::new(None);

fn spawner() -> io::Result<mpsc::Sender<Work>> {
    let mut slot = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = slot.as_ref() {
        return Ok(tx.clone());
    }
    let (tx, rx) = mpsc::channel::<Work>();
    std::thread::Builder::new().name("gatherd-spawner".into()).spawn(move || {
        for work in rx {
            // A panic must not end this thread: every child it forked would
            // get its death signal.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(work));
        }
    })?;
    *slot = Some(tx.clone());
    Ok(tx)
}

/// Runs `f` on the spawner thread and waits for what it returns.
fn on_spawner<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> io::Result<R> {
    let (tx, rx) = mpsc::sync_channel(1);
    spawner()?
        .send(Box::new(move || {
            let _ = tx.send(f());
        }))
        .map_err(|_| io::Error::other("the process spawner thread is gone"))?;
    rx.recv().map_err(|_| io::Error::other("the process spawner thread failed"))
}

/// Arms `cmd`'s child to be SIGKILLed when its parent thread dies. Forking
/// it anywhere but on the spawner thread would tie its life to a thread
/// that may end: spawn it with [`spawn_async`] or [`spawn_std`].
///
/// This runs after any credential change `std` makes for `cmd`
/// (`uid`/`gid`/`groups` are applied before every `pre_exec` closure), as
/// it must: changing the effective uid or gid clears the death signal. A
/// `pre_exec` closure that changes credentials must be added before this.
#[allow(unsafe_code)]
pub(super) fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = getpid();
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe work is allowed. It makes two system calls
    // (prctl, getppid) through nix's direct wrappers, reads a captured
    // `Pid` (Copy), takes no lock and allocates nothing: an error is an
    // `io::Error` made from a raw errno.
    unsafe {
        cmd.pre_exec(move || arm_death_signal(parent));
    }
}

/// In the child: SIGKILL when the parent thread dies; and if the parent died
/// before that was armed (the child was already handed to another parent),
/// do not run at all.
fn arm_death_signal(parent: Pid) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
    if getppid() != parent {
        return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
    }
    Ok(())
}

/// Forks `cmd` on the spawner thread as a tokio child (waited for on the
/// runtime of the caller), and tells `ledger` of its group.
pub(super) fn spawn_async(
    cmd: std::process::Command,
    ledger: Option<Arc<dyn ProcessLedger>>,
) -> io::Result<(tokio::process::Child, Option<ProcessGroup>)> {
    let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    let mut cmd = tokio::process::Command::from(cmd);
    on_spawner(move || {
        // tokio registers the child with the caller's runtime.
        let _entered = runtime.enter();
        let child = cmd.spawn()?;
        let group = child.id().and_then(|pid| record(pid, ledger.as_deref()));
        Ok((child, group))
    })?
}

/// Forks `cmd` on the spawner thread as a `std` child, and tells `ledger` of
/// its group.
pub(super) fn spawn_std(
    mut cmd: std::process::Command,
    ledger: Option<Arc<dyn ProcessLedger>>,
) -> io::Result<(std::process::Child, Option<ProcessGroup>)> {
    on_spawner(move || {
        let child = cmd.spawn()?;
        let group = record(child.id(), ledger.as_deref());
        Ok((child, group))
    })?
}

/// The group `pid` leads, as the ledger records it; told to `ledger`.
fn record(pid: u32, ledger: Option<&dyn ProcessLedger>) -> Option<ProcessGroup> {
    let ledger = ledger?;
    let pgid = i32::try_from(pid).ok()?;
    // Not reaped yet (nobody waits for it before this returns), so its stat
    // is there even if it has already exited.
    let Some(stat) = read_stat(pgid) else {
        tracing::warn!(pgid, "cannot read /proc/{pgid}/stat: this process group is not recorded");
        return None;
    };
    let group = ProcessGroup { pgid, leader_start: stat.start, session: stat.session };
    ledger.started(&group);
    Some(group)
}

/// Returns once the spawner has done everything asked of it before, so the
/// ledger's last `ended` calls are made (the daemon, before it exits).
pub fn settle() {
    let _ = on_spawner(|| ());
}

/// Tells `ledger` that `group` ended, on the spawner thread, after every
/// record sent before; does not wait.
pub(super) fn ended(ledger: Arc<dyn ProcessLedger>, group: ProcessGroup) {
    if let Ok(tx) = spawner() {
        let _ = tx.send(Box::new(move || ledger.ended(&group)));
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    use super::*;

    #[test]
    fn a_child_outlives_the_thread_that_asked_for_it() {
        // PR_SET_PDEATHSIG fires when the *thread* that forked the child
        // ends; the spawner thread makes the asking thread's end harmless.
        let child = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("0.5");
            die_with_parent(&mut cmd);
            spawn_std(cmd, None).unwrap().0
        })
        .join()
        .unwrap();
        let mut child = child;
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), None, "killed when the thread that asked for it ended: {status:?}");
        assert!(status.success(), "{status:?}");
    }
}
