//! `user` / `user_group`: who a job's processes run as, resolved to ids when the
//! file is loaded, and whether this gatherd may switch to them.
//!
//! The names are looked up in the system's user and group databases (NSS:
//! `/etc/passwd`, `/etc/group`, or whatever the host configures) — the one
//! read the loader makes beyond the job file and its `script_file`s, so that
//! an unknown name is a diagnostic at its key, in `gatherd check` as in the
//! daemon, and running a step needs no lookup.
//!
//! Architecture Invariant: the decision whether a gatherd running as a given
//! uid may take an identity ([`refusal`]) is pure: the caller passes the uid.

use std::ffi::CString;
use std::ops::Range;
use std::sync::Arc;

use nix::unistd::{Gid, Group, User, getgrouplist};
use toml::de::DeTable;

use super::fields::{Ctx, Value};
use crate::job::{Identity, Job, UserIdentity};

/// Who loads a file: `gatherd check` (the names must exist), or a gatherd
/// that is to run the job as effective `uid` / `gid` (it must be able to
/// switch to them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Purpose {
    /// Validate only.
    #[default]
    Check,
    /// Run it, as this effective uid and gid.
    Run { uid: u32, gid: u32 },
}

impl Purpose {
    /// The purpose of this process loading a file to run it.
    pub(crate) fn run_here() -> Purpose {
        Purpose::Run { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw() }
    }
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
                groups.push(g.gid.as_raw());
            }
            Identity {
                gid: group_found.as_ref().map_or(u.gid.as_raw(), |(g, _)| g.gid.as_raw()),
                group_name: group_found.map(|(g, _)| g.name),
                user: Some(UserIdentity { name: u.name, uid: u.uid.as_raw(), groups, home: u.dir }),
            }
        }
        None => match group_found {
            Some((g, _)) => Identity { user: None, gid: g.gid.as_raw(), group_name: Some(g.name) },
            None => return,
        },
    };
    if let Purpose::Run { uid, gid } = ctx.purpose()
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
            user: Some(UserIdentity { name: "nobody".into(), uid, groups: vec![65534], home: PathBuf::from("/") }),
            gid: 65534,
            group_name: None,
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
        let g = Identity { user: None, gid: 65534, group_name: Some("nogroup".into()) };
        assert_eq!(
            refusal(&g, 1000, 1000).as_deref(),
            Some("`user_group = \"nogroup\"` needs gatherd to run as root; it runs as uid 1000 (gid 1000)")
        );
        assert_eq!(refusal(&g, 1000, 65534), None);
    }
}
