//! Who a job's processes run as: the `user` / `user_group` of a job file,
//! resolved to ids when the file was loaded.

use std::path::PathBuf;

/// The identity an `exec` / `shell` step's process takes (initgroups
/// semantics) before it runs its program. Resolved by the loader from the
/// system's user and group databases, so running it needs no lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `user = "..."`: the user, or `None` when only `user_group` is set (then
    /// only the gid changes).
    pub user: Option<UserIdentity>,
    /// The primary gid: the `user_group`'s if given, else the user's.
    pub gid: u32,
    /// The name `user_group` gave, for messages.
    pub group_name: Option<String>,
    /// Whether a process of the job takes this identity (`setgroups`,
    /// `setgid`, `setuid`): decided by the loader, true under a root
    /// gatherd. One that is not root was allowed only its own user and
    /// group, so it only sets `HOME`, `USER`, `LOGNAME`.
    pub switch: bool,
}

/// The user part of an [`Identity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdentity {
    /// Its name: `USER` and `LOGNAME`.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its supplementary groups: its groups in the group database, plus
    /// the job's `user_group` if given.
    pub groups: Vec<u32>,
    /// Its home folder: `HOME`.
    pub home: PathBuf,
    /// Its login shell: `SHELL`.
    pub shell: PathBuf,
}

impl Identity {
    /// What it is called in messages: `user = "x"` or `user_group = "y"`.
    pub fn describe(&self) -> String {
        match (&self.user, &self.group_name) {
            (Some(u), _) => format!("`user = \"{}\"`", u.name),
            (None, Some(g)) => format!("`user_group = \"{g}\"`"),
            (None, None) => format!("gid {}", self.gid),
        }
    }
}
