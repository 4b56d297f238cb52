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
//! command and await the child through a oneshot, so no runtime worker is
//! parked while the spawner is busy with others' forks. The same thread
//! tells the run's [`ProcessLedger`] of each group right after the fork
//! (after answering the caller, who does not wait for the file), and of
//! its end ([`ended`]), so the records are written in the order things
//! happened. A caller dropped while it waits gets nothing forked for it
//! left alive: the spawner kills the group it cannot hand over.
//!
//! The death signal reaches only the step's direct child, not what it
//! started in the background; the daemon's ledger covers those at its next
//! start (ARCHITECTURE.md, "Processes").
//!
//! The same `pre_exec` puts back the open-files limit the daemon was
//! started with ([`remember_open_files_limit`]): the daemon raises its own.
//!
//! Architecture Invariant: every step process is forked on the spawner
//! thread with its death signal armed; nothing else forks for a step.

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use nix::sys::resource::{Resource, getrlimit, rlim_t, setrlimit};

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

/// Queues `work` on the spawner thread; does not wait.
fn on_spawner(work: impl FnOnce() + Send + 'static) -> io::Result<()> {
    spawner()?.send(Box::new(work)).map_err(|_| io::Error::other("the process spawner thread is gone"))
}

/// Forks with `fork` on the spawner thread and awaits its answer (through a
/// oneshot: no runtime worker is held while the spawner is busy); right
/// after answering, the spawner records the child's group in `ledger`.
async fn spawn_on_spawner<C: Forked>(
    ledger: Option<Arc<dyn ProcessLedger>>,
    fork: impl FnOnce() -> io::Result<(C, u32)> + Send + 'static,
) -> io::Result<(C, Option<Recorded>)> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    on_spawner(move || {
        let (spawned, recorded) = match fork() {
            Ok((child, pid)) => {
                let recorded = group_of(pid, ledger);
                (Ok((Unclaimed(Some(child)), recorded.clone())), recorded)
            }
            Err(e) => (Err(e), None),
        };
        // The caller need not wait for the record's file: it guards against
        // a `kill -9` of the daemon, which can strike between the fork and
        // the write whoever waits. What matters is that the write follows
        // the fork at once, on this thread, before the group's `ended`
        // (which the caller queues here after this work).
        // Sent: the ledger is told. Not sent, the caller's future was dropped
        // while it waited: nobody guards this group, so it ends here (the
        // `Unclaimed` dropped with the answer kills it), as a dropped
        // attempt's does.
        if reply.send(spawned).is_ok()
            && let Some((ledger, group)) = recorded
        {
            ledger.started(&group);
        }
    })?;
    let (child, recorded) = answer.await.map_err(|_| io::Error::other("the process spawner thread failed"))??;
    Ok((child.claim(), recorded))
}

/// A child on its way to its caller: until the caller takes it, dropping it
/// kills its group. The answer may be sent and the caller's future dropped
/// before it reads it (an aborted task that was not polled in between), and
/// the child would then be dropped inside the channel, unguarded, its group
/// left running.
struct Unclaimed<C: Forked>(Option<C>);

impl<C: Forked> Unclaimed<C> {
    /// The child, now the caller's to guard.
    fn claim(mut self) -> C {
        self.0.take().expect("an unclaimed child is claimed once")
    }
}

impl<C: Forked> Drop for Unclaimed<C> {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            child.abandon();
        }
    }
}

/// A child forked for a caller that is gone.
trait Forked: Send + 'static {
    /// SIGKILLs its group and lets it be reaped without anyone waiting.
    fn abandon(self);
}

/// SIGKILLs the group `pid` leads (`process_group(0)`); never 0 or 1.
fn kill_group(pid: Option<u32>) {
    if let Some(pgid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 1) {
        let _ = nix::sys::signal::killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

impl Forked for tokio::process::Child {
    fn abandon(self) {
        kill_group(self.id());
        // tokio reaps a dropped child in the background.
    }
}

impl Forked for std::process::Child {
    fn abandon(mut self) {
        kill_group(Some(self.id()));
        // Not on this thread: a process may take its time to die.
        let _ = std::thread::Builder::new().name("gatherd-reaper".into()).spawn(move || self.wait());
    }
}

/// A group told to a ledger, with the ledger to tell of its end.
pub(super) type Recorded = (Arc<dyn ProcessLedger>, ProcessGroup);

/// The daemon's open-files limit (soft, hard) before it raised its own, put
/// back in every step's process: programs that still use `select()` break
/// past 1024, and close-every-fd loops get slow (systemd's advice).
static OPEN_FILES_LIMIT: OnceLock<(rlim_t, rlim_t)> = OnceLock::new();

/// Remembers the open-files limit as it is now, for the steps' processes;
/// call it before raising the limit (the first call wins).
pub fn remember_open_files_limit() {
    if let Ok(limit) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = OPEN_FILES_LIMIT.set(limit);
    }
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
    let open_files = OPEN_FILES_LIMIT.get().copied();
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe work is allowed. It makes at most three system
    // calls (setrlimit, prctl, getppid) through nix's direct wrappers, reads
    // captured `Pid` and limits (Copy), takes no lock and allocates
    // nothing: an error is an `io::Error` made from a raw errno.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((soft, hard)) = open_files {
                // Only ever lowers the soft limit back (the hard one is
                // unchanged), which needs no privilege; if even that fails
                // the step runs with the daemon's limit, as before.
                let _ = setrlimit(Resource::RLIMIT_NOFILE, soft, hard);
            }
            arm_death_signal(parent)
        });
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
pub(super) async fn spawn_async(
    cmd: std::process::Command,
    ledger: Option<Arc<dyn ProcessLedger>>,
) -> io::Result<(tokio::process::Child, Option<Recorded>)> {
    let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    let mut cmd = tokio::process::Command::from(cmd);
    spawn_on_spawner(ledger, move || {
        // tokio registers the child with the caller's runtime.
        let _entered = runtime.enter();
        let child = cmd.spawn()?;
        // `id()` is only `None` once the child has been reaped, not before.
        let pid = child.id().ok_or_else(|| io::Error::other("the child was reaped before it was recorded"))?;
        Ok((child, pid))
    })
    .await
}

/// Forks `cmd` on the spawner thread as a `std` child, and tells `ledger` of
/// its group.
pub(super) async fn spawn_std(
    mut cmd: std::process::Command,
    ledger: Option<Arc<dyn ProcessLedger>>,
) -> io::Result<(std::process::Child, Option<Recorded>)> {
    spawn_on_spawner(ledger, move || {
        let child = cmd.spawn()?;
        let pid = child.id();
        Ok((child, pid))
    })
    .await
}

/// The group `pid` leads, as the ledger records it (not yet told to it).
fn group_of(pid: u32, ledger: Option<Arc<dyn ProcessLedger>>) -> Option<Recorded> {
    let ledger = ledger?;
    let pgid = i32::try_from(pid).ok()?;
    // Not reaped yet (nobody waits for it before this returns), so its stat
    // is there even if it has already exited.
    let Some(stat) = read_stat(pgid) else {
        tracing::warn!(pgid, "cannot read /proc/{pgid}/stat: this process group is not recorded");
        return None;
    };
    Some((ledger, ProcessGroup { pgid, leader_start: stat.start, session: stat.session }))
}

/// Returns once the spawner has done everything asked of it before, so the
/// ledger's last `ended` calls are made (the daemon, before it exits).
pub async fn settle() {
    let (done, settled) = tokio::sync::oneshot::channel();
    if on_spawner(move || {
        let _ = done.send(());
    })
    .is_ok()
    {
        let _ = settled.await;
    }
}

/// Tells `ledger` that `group` ended, on the spawner thread, after every
/// record sent before; does not wait.
pub(super) fn ended(ledger: Arc<dyn ProcessLedger>, group: ProcessGroup) {
    let _ = on_spawner(move || ledger.ended(&group));
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
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(spawn_std(cmd, None)).unwrap().0
        })
        .join()
        .unwrap();
        let mut child = child;
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), None, "killed when the thread that asked for it ended: {status:?}");
        assert!(status.success(), "{status:?}");
    }

    /// Live (not zombie) processes whose environment holds `mark`.
    fn marked(mark: &str) -> Vec<i32> {
        let needle = format!("GATHERD_TEST_MARK={mark}");
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                environ.split(|b| *b == 0).any(|v| v == needle.as_bytes())
                    && read_stat(*pid).is_some_and(|s| s.state != 'Z')
            })
            .collect()
    }

    #[tokio::test]
    async fn a_spawn_whose_caller_is_dropped_while_it_waits_leaves_no_process() {
        use std::os::unix::process::CommandExt;
        // The spawner is busy: the next spawn waits for its answer.
        let (release, busy) = std::sync::mpsc::channel::<()>();
        on_spawner(move || {
            let _ = busy.recv();
        })
        .unwrap();
        let mark = format!("dropped-{}", std::process::id());
        for blocking in [false, true] {
            let mut cmd = Command::new("sleep");
            cmd.arg("300").env("GATHERD_TEST_MARK", &mark).process_group(0);
            die_with_parent(&mut cmd);
            // Polled once (so its fork is queued), then dropped.
            let wait = std::time::Duration::from_millis(50);
            if blocking {
                assert!(tokio::time::timeout(wait, spawn_std(cmd, None)).await.is_err());
            } else {
                assert!(tokio::time::timeout(wait, spawn_async(cmd, None)).await.is_err());
            }
        }
        release.send(()).unwrap();
        settle().await;
        let gone = (0..500).any(|_| {
            let none = marked(&mark).is_empty();
            if !none {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            none
        });
        assert!(gone, "a process forked for a caller that was gone is alive: {:?}", marked(&mark));
    }

    /// The other order: the answer is sent while the caller still waits,
    /// and the caller is dropped before it reads it (an aborted task not
    /// polled in between). The child must not be dropped unguarded with
    /// the answer (seen as `dropping_the_attempt_kills_the_group` failing
    /// under load: its `sleep 300` outlived the aborted attempt).
    #[tokio::test]
    async fn a_spawn_whose_caller_is_dropped_after_the_answer_is_sent_leaves_no_process() {
        use std::os::unix::process::CommandExt;
        let mark = format!("unread-{}", std::process::id());
        for blocking in [false, true] {
            let mut cmd = Command::new("sleep");
            cmd.arg("300").env("GATHERD_TEST_MARK", &mark).process_group(0);
            die_with_parent(&mut cmd);
            let mut spawn: std::pin::Pin<Box<dyn std::future::Future<Output = bool>>> = if blocking {
                Box::pin(async { spawn_std(cmd, None).await.is_ok() })
            } else {
                Box::pin(async { spawn_async(cmd, None).await.is_ok() })
            };
            // Polled once, so its fork is queued; the spawner forks and
            // answers before it settles; then the caller goes unread.
            assert!(futures::poll!(spawn.as_mut()).is_pending(), "blocking={blocking}");
            settle().await;
            drop(spawn);
        }
        let gone = (0..500).any(|_| {
            let none = marked(&mark).is_empty();
            if !none {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            none
        });
        assert!(gone, "a process answered to a caller that never read it is alive: {:?}", marked(&mark));
    }
}
