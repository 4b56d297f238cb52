//! `user` / `user_group`: who a job's processes run as, resolved to ids when the
//! file is loaded, and whether this gatherd may switch to them.
//!
//! The names are looked up in the system's user and group databases (NSS:
//! `/etc/passwd`, `/etc/group`, or whatever the host configures) — the one
//! read the loader makes beyond the job file and its `script_file`s, so that
//! an unknown name is a diagnostic at its key, in `gatherd check` as in the
//! daemon, and running a step needs no lookup.
//!
//! A job file that does not belong to root may give `user_group` only a group
//! its `user` is in ([`group_refusal`]): cron's rule lets a user write a job
//! that runs as them, so such a file must not add a group (root, docker, disk)
//! they do not have.
//!
//! Architecture Invariant: the decisions whether a gatherd running as a given
//! uid may take an identity ([`refusal`], [`group_refusal`]) are pure: the
//! caller passes the uids. [`effective_ids`] is the one place gatherd asks the
//! OS who it runs as.

use std::ffi::CString;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use nix::unistd::{Gid, Group, User, getgrouplist};
use toml::de::DeTable;

use super::fields::{Ctx, Value};
use crate::job::{Identity, Job, UserIdentity};

/// Who loads a file: `gatherd check` (the names must exist), or a gatherd
/// that is to run the job as effective `uid` / `gid` (it must be able to
/// switch to them), from a file that belongs to `owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Purpose {
    /// Validate only.
    #[default]
    Check,
    /// Run it, as this effective uid and gid; the job file belongs to `owner`.
    Run { uid: u32, gid: u32, owner: u32 },
}

impl Purpose {
    /// The purpose of this process loading a file, whose (`fstat`) metadata
    /// is `file`, to run it.
    pub(crate) fn run_here(file: &std::fs::Metadata) -> Purpose {
        let (uid, gid) = effective_ids();
        Purpose::Run { uid, gid, owner: file.uid() }
    }
}

/// This process's effective uid and gid: the one place gatherd asks the OS
/// who it runs as.
fn effective_ids() -> (u32, u32) {
    (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
}

/// Whether this process runs as root: it then switches to a job's identity,
/// holds job files to cron's rule, and confines symlinks to its jobs folder.
pub fn is_root() -> bool {
    effective_ids().0 == 0
}

/// Reads `user` and `user_group` into `job.identity`, reporting names that do
/// not exist and identities this gatherd cannot take.
pub(crate) fn read_identity(ctx: &mut Ctx, doc: &DeTable<'_>, job: &mut Job) {
    let user = doc.get_key_value("user");
    let group = doc.get_key_value("user_group");
    if user.is_none() && group.is_none() {
        return;
    }
    let errors = ctx.diagnostics.len();
    let group_found = group.and_then(|(_, v)| lookup_group(ctx, v));
    let user_found = user.and_then(|(_, v)| lookup_user(ctx, v));
    if ctx.diagnostics.len() > errors {
        return;
    }
    let identity = match user_found {
        Some((u, span)) => {
            let name = CString::new(u.name.as_str()).unwrap_or_default();
            let mut groups: Vec<u32> = match getgrouplist(&name, u.gid) {
                Ok(gids) => gids.into_iter().map(Gid::as_raw).collect(),
                Err(e) => {
                    ctx.error(span, format!("cannot list the groups of user `{}`: {e}", u.name))
                        .label("its supplementary groups are needed to run as it");
                    return;
                }
            };
            if let Some((g, _)) = &group_found
                && !groups.contains(&g.gid.as_raw())
            {
                if let Some(why) = group_refusal(ctx.purpose(), &u.name, &g.name) {
                    let (k, v) = group.expect("a group was found");
                    ctx.error(k.span().start..v.span().end, why)
                        .label(format!("not a group of `{}`", u.name))
                        .help("`chown root FILE` if root means it, or add the user to the group in the group database");
                    return;
                }
                groups.push(g.gid.as_raw());
            }
            Identity {
                gid: group_found.as_ref().map_or(u.gid.as_raw(), |(g, _)| g.gid.as_raw()),
                group_name: group_found.map(|(g, _)| g.name),
                user: Some(UserIdentity { name: u.name, uid: u.uid.as_raw(), groups, home: u.dir, shell: u.shell }),
                switch: switches(ctx.purpose()),
            }
        }
        None => match group_found {
            Some((g, _)) => {
                Identity { user: None, gid: g.gid.as_raw(), group_name: Some(g.name), switch: switches(ctx.purpose()) }
            }
            None => return,
        },
    };
    if let Purpose::Run { uid, gid, .. } = ctx.purpose()
        && let Some(why) = refusal(&identity, uid, gid)
    {
        // Point at the setting that asks for the switch: `user`, else `user_group`.
        let (k, v) = user.or(group).expect("one of them is set");
        ctx.error(k.span().start..v.span().end, why).label("gatherd cannot switch to this identity").help(
            "run gatherd as root (see examples/gatherd-root.service), or remove the setting to run as gatherd's user",
        );
        return;
    }
    job.identity = Some(Arc::new(identity));
}

/// Whether a job loaded for `purpose` switches credentials when it starts a
/// process: only under a root gatherd. One that is not root was allowed only
/// its own user and group ([`refusal`]), so there is nothing to switch; a
/// job only checked is never run, and would fail rather than run unswitched.
fn switches(purpose: Purpose) -> bool {
    match purpose {
        Purpose::Check => true,
        Purpose::Run { uid, .. } => uid == 0,
    }
}

/// Why a job file loaded for `purpose` may not give `user` the group
/// `group`, which is not one of the user's (its primary group or one the
/// group database lists it in), or `None`: under a root gatherd, only a file
/// that belongs to root may. A file of the user's own (cron's rule lets them
/// write it) must not grant a group they do not have.
pub(crate) fn group_refusal(purpose: Purpose, user: &str, group: &str) -> Option<String> {
    match purpose {
        Purpose::Run { uid: 0, owner, .. } if owner != 0 => Some(format!(
            "`user_group = \"{group}\"` is refused: `{user}` is not a member of group `{group}`, and the file \
             belongs to uid {owner}, not root: only a job file of root's may give a job a group its user is not in"
        )),
        _ => None,
    }
}

/// Why a gatherd running as `uid` / `gid` cannot take `identity`, or `None`
/// if it can: root can take any; another user only its own (then nothing is
/// switched, only `HOME`, `USER` and `LOGNAME` are set).
pub(crate) fn refusal(identity: &Identity, uid: u32, gid: u32) -> Option<String> {
    if uid == 0 {
        return None;
    }
    match (&identity.user, &identity.group_name) {
        (Some(u), _) if u.uid != uid => {
            Some(format!("`user = \"{}\"` needs gatherd to run as root; it runs as uid {uid}", u.name))
        }
        (_, Some(g)) if identity.gid != gid => {
            Some(format!("`user_group = \"{g}\"` needs gatherd to run as root; it runs as uid {uid} (gid {gid})"))
        }
        _ => None,
    }
}

/// The user named by `v`, or a diagnostic.
fn lookup_user(ctx: &mut Ctx, v: &Value<'_>) -> Option<(User, Range<usize>)> {
    let name = non_empty(ctx, "user", v)?;
    match User::from_name(name) {
        Ok(Some(u)) => Some((u, v.span())),
        Ok(None) => {
            ctx.error(v.span(), format!("no user `{name}` on this system"))
                .label("unknown user")
                .help("`user` names an account of the host gatherd runs on (its user database, e.g. /etc/passwd)");
            None
        }
        Err(e) => {
            ctx.error(v.span(), format!("cannot look up user `{name}`: {e}")).label("looked up here");
            None
        }
    }
}

/// The group named by `v`, or a diagnostic.
fn lookup_group(ctx: &mut Ctx, v: &Value<'_>) -> Option<(Group, Range<usize>)> {
    let name = non_empty(ctx, "user_group", v)?;
    match Group::from_name(name) {
        Ok(Some(g)) => Some((g, v.span())),
        Ok(None) => {
            ctx.error(v.span(), format!("no group `{name}` on this system"))
                .label("unknown group")
                .help("`user_group` names a group of the host gatherd runs on (its group database, e.g. /etc/group)");
            None
        }
        Err(e) => {
            ctx.error(v.span(), format!("cannot look up group `{name}`: {e}")).label("looked up here");
            None
        }
    }
}

/// A string setting that is not empty.
fn non_empty<'v>(ctx: &mut Ctx, key: &str, v: &'v Value<'_>) -> Option<&'v str> {
    let name = ctx.string(key, v)?;
    if name.is_empty() || name.contains('\0') {
        ctx.error(v.span(), format!("`{key}` must be a name")).label("not a name");
        return None;
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn user(uid: u32) -> Identity {
        Identity {
            user: Some(UserIdentity {
                name: "nobody".into(),
                uid,
                groups: vec![65534],
                home: PathBuf::from("/"),
                shell: PathBuf::from("/usr/sbin/nologin"),
            }),
            gid: 65534,
            group_name: None,
            switch: true,
        }
    }

    #[test]
    fn root_may_take_any_identity() {
        assert_eq!(refusal(&user(65534), 0, 0), None);
    }

    #[test]
    fn another_user_is_refused_when_gatherd_is_not_root() {
        assert_eq!(
            refusal(&user(65534), 1000, 1000).as_deref(),
            Some("`user = \"nobody\"` needs gatherd to run as root; it runs as uid 1000")
        );
    }

    #[test]
    fn its_own_user_is_allowed_without_root() {
        assert_eq!(refusal(&user(1000), 1000, 1000), None);
    }

    #[test]
    fn a_group_other_than_its_own_is_refused_without_root() {
        let g = Identity { user: None, gid: 65534, group_name: Some("nogroup".into()), switch: true };
        assert_eq!(
            refusal(&g, 1000, 1000).as_deref(),
            Some("`user_group = \"nogroup\"` needs gatherd to run as root; it runs as uid 1000 (gid 1000)")
        );
        assert_eq!(refusal(&g, 1000, 65534), None);
    }

    #[test]
    fn a_group_the_user_is_not_in_needs_a_file_of_roots() {
        let run = |uid, owner| Purpose::Run { uid, gid: uid, owner };
        let why = group_refusal(run(0, 65534), "nobody", "root").expect("refused");
        assert!(
            why.contains("`nobody` is not a member of group `root`") && why.contains("uid 65534, not root"),
            "{why}"
        );
        assert_eq!(group_refusal(run(0, 0), "nobody", "root"), None);
        assert_eq!(group_refusal(Purpose::Check, "nobody", "root"), None);
        // A gatherd that is not root is held to its own group by `refusal`.
        assert_eq!(group_refusal(run(1000, 1000), "alice", "staff"), None);
    }
}
