//! Who may own a job file that gatherd runs as root (cron's rule for
//! crontabs): a root gatherd runs a file's commands as root or as its
//! `user`, so whoever can write the file can run commands as them.
//!
//! The same holds for the `script_file`s a TOML job names: their value
//! may feed the commands the job runs.
//!
//! A file is refused unless it belongs to root or to the job's `user`, and
//! neither its group nor others may write it. A gatherd that is not root
//! runs every job as itself, so the rule does not apply to it.
//!
//! Architecture Invariant: [`refusal`] is pure (owner, mode and uids are
//! passed in); who this process is comes with the loader's `Purpose`.

use std::os::unix::fs::MetadataExt;

use super::identity::Purpose;
use crate::job::Identity;

/// Why a job file, or a `script_file` of a job with `identity`, whose
/// metadata is `file` (taken from the open file, not the path), must not be
/// run for `purpose`, or `None`: nothing when only checked.
pub(crate) fn refusal_for(purpose: Purpose, file: &std::fs::Metadata, identity: Option<&Identity>) -> Option<String> {
    match purpose {
        Purpose::Check => None,
        Purpose::Run { uid, .. } => refusal(uid, file.uid(), file.mode(), job_user(identity)),
    }
}

/// The uid and name of an identity's user.
fn job_user(identity: Option<&Identity>) -> Option<(u32, &str)> {
    identity.and_then(|i| i.user.as_ref()).map(|u| (u.uid, u.name.as_str()))
}

/// Why a gatherd running as `euid` must not run a job file owned by `owner`
/// with permission bits `mode`, whose `user` is `job_user` (uid, name).
pub(crate) fn refusal(euid: u32, owner: u32, mode: u32, job_user: Option<(u32, &str)>) -> Option<String> {
    if euid != 0 {
        return None;
    }
    let runs_as = job_user.map_or_else(|| "root".to_string(), |(_, name)| format!("`{name}`"));
    if owner != 0 && job_user.is_none_or(|(uid, _)| uid != owner) {
        let may = job_user.map_or_else(|| "root".to_string(), |(_, name)| format!("root or `{name}` (its `user`)"));
        return Some(format!(
            "refused: the file belongs to uid {owner}, and gatherd runs as root: a job file must belong to {may}, \
             since its commands run as {runs_as} (`chown root FILE`)"
        ));
    }
    let writable = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "group- and world-writable",
        (true, false) => "group-writable",
        (false, true) => "world-writable",
        (false, false) => return None,
    };
    Some(format!(
        "refused: the file is {writable} (mode {:04o}), and gatherd runs as root: whoever can write it could run \
         commands as {runs_as}; make it writable by its owner only (`chmod go-w FILE`)",
        mode & 0o7777
    ))
}

#[cfg(test)]
mod tests {
    use super::refusal;

    #[test]
    fn a_gatherd_that_is_not_root_accepts_any_file() {
        assert_eq!(refusal(1000, 1001, 0o100666, None), None);
    }

    #[test]
    fn root_accepts_a_file_of_root_or_of_the_jobs_user_writable_by_its_owner_only() {
        assert_eq!(refusal(0, 0, 0o100644, None), None);
        assert_eq!(refusal(0, 65534, 0o100600, Some((65534, "nobody"))), None);
        assert_eq!(refusal(0, 0, 0o100644, Some((65534, "nobody"))), None);
    }

    #[test]
    fn root_refuses_a_file_of_another_user() {
        let why = refusal(0, 1000, 0o100644, None).expect("refused");
        assert!(why.contains("belongs to uid 1000") && why.contains("must belong to root"), "{why}");
        let why = refusal(0, 1000, 0o100644, Some((65534, "nobody"))).expect("refused");
        assert!(why.contains("root or `nobody` (its `user`)"), "{why}");
    }

    #[test]
    fn root_refuses_a_group_or_world_writable_file() {
        let why = refusal(0, 0, 0o100664, None).expect("refused");
        assert!(why.contains("group-writable (mode 0664)"), "{why}");
        let why = refusal(0, 0, 0o100646, None).expect("refused");
        assert!(why.contains("world-writable (mode 0646)"), "{why}");
    }
}
