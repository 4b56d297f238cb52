//! Running a step's process as the job's `user` / `user_group` (initgroups
//! semantics): supplementary groups, then gid, then uid, set in the child
//! between `fork` and `exec`, and `HOME`, `USER`, `LOGNAME`, `SHELL` set to the
//! user's unless the step's own `env` sets them.
//!
//! std's `Command::uid`/`gid` cannot be used: when a uid is given, std drops
//! every supplementary group (`setgroups(0)`) and `Command::groups` is
//! unstable, and `pre_exec` closures run *after* std's `setuid`, when
//! `setgroups` is no longer allowed. So all three are done in one `pre_exec`
//! closure. It must be registered before any other closure that sets state
//! the kernel clears on a change of credentials (`PR_SET_PDEATHSIG` is
//! cleared by `setuid`/`setgid`): closures run in the order they were added.
//!
//! `read_file` / `write_file` steps (and Rhai's `to_thread`, TOML's
//! `script`) run in gatherd's own process and cannot switch; file steps are
//! refused in a job with `user` / `user_group` ([`refuse_file_step`]), while
//! scripts reach nothing of the host (the sandbox), so they are harmless.
//!
//! Only a root gatherd switches; one that is not root has already been
//! allowed (`load::identity`) only its own user and group, so it sets the
//! environment and switches nothing. The loader decides which
//! ([`Identity::switch`]): running a step asks the OS nothing.

use std::sync::Arc;

use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};

use super::StepError;
use crate::job::{Identity, Job};

/// A `read_file` / `write_file` step of a job with `user` or `user_group`
/// fails: it would run in gatherd's own process, as gatherd's user (root),
/// not the job's. (TOML jobs are refused at load time already; a Rhai job
/// makes its steps as it runs.)
pub(super) fn refuse_file_step(kind: &str, job: &Job) -> Result<(), StepError> {
    match &job.identity {
        None => Ok(()),
        Some(identity) => Err(StepError::Failed(format!(
            "`{kind}` is refused in a job with {}: it would run as gatherd's own user, not the job's; \
             use a process, e.g. `exec([\"cat\", path])` or `shell(\"cat > out.txt\")`",
            identity.describe()
        ))),
    }
}

/// Makes `cmd` run as `identity`. Call it first among `pre_exec` users.
pub(super) fn apply(cmd: &mut std::process::Command, identity: Option<&Arc<Identity>>) {
    let Some(identity) = identity else { return };
    if let Some(user) = &identity.user {
        // Before the step's own `envs`, which therefore win.
        cmd.env("HOME", &user.home).env("USER", &user.name).env("LOGNAME", &user.name).env("SHELL", &user.shell);
    }
    if !identity.switch {
        return;
    }
    // Everything the child needs is computed here, before `fork`: the child
    // only makes three system calls and allocates nothing.
    let gid = Gid::from_raw(identity.gid);
    let switch = identity
        .user
        .as_ref()
        .map(|u| (Uid::from_raw(u.uid), u.groups.iter().copied().map(Gid::from_raw).collect::<Vec<_>>()));
    switch_in_child(cmd, gid, switch);
}

/// Registers the closure that takes the identity in the child.
#[allow(unsafe_code)]
fn switch_in_child(cmd: &mut std::process::Command, gid: Gid, user: Option<(Uid, Vec<Gid>)>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before `exec`, where only
    // async-signal-safe work is allowed. It allocates nothing (the gid list
    // was built before the fork and is only borrowed) and only calls
    // `setgroups`, `setgid` and `setuid` — the same calls std itself makes
    // there for `Command::uid`/`gid` — and builds an `io::Error` from an
    // errno, which does not allocate either.
    unsafe {
        cmd.pre_exec(move || {
            let os = |e: nix::Error| std::io::Error::from_raw_os_error(e as i32);
            if let Some((_, groups)) = &user {
                setgroups(groups).map_err(os)?;
            }
            setgid(gid).map_err(os)?;
            if let Some((uid, _)) = &user {
                setuid(*uid).map_err(os)?;
            }
            Ok(())
        });
    }
}
