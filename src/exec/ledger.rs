//! The process ledger: an optional hook through which whoever runs a job
//! learns of every process group a step starts and reaps, so it can keep a
//! record that outlives it (the daemon keeps one file per group in its state
//! folder and, at its next start, kills what a `kill -9` left behind).
//!
//! A group is named by its id *and* by facts a recycled id would not share:
//! the leader's start time (clock ticks since boot, `/proc/PID/stat` field
//! 22) and its session. [`read_stat`] reads them.
//!
//! Architecture Invariant: the executor only reports to the ledger; it never
//! reads it back, and a run without one (`gatherd run`, tests) runs the same.

use std::fmt::Debug;

/// A step's process group as the ledger records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessGroup {
    /// The group's id: its leader's pid (`process_group(0)`).
    pub pgid: i32,
    /// The leader's start time in clock ticks since boot (`/proc/PID/stat`
    /// field 22): with `pgid`, it tells this group from a later one that got
    /// the same id.
    pub leader_start: u64,
    /// The session the group belongs to (field 6): the daemon's.
    pub session: i32,
}

/// Told of every process group a step starts and of its end.
///
/// Both calls are made on the one thread that starts every step's process
/// (`exec::step::child`), in the order things happened, so a group's `ended`
/// always follows its `started`. Keep them short: `started` is made right
/// after the fork, and the next spawn waits behind it — the record exists
/// before the step's program has run for more than an instant.
pub trait ProcessLedger: Send + Sync + Debug {
    /// A step started `group` (its leader has just been exec'd).
    fn started(&self, group: &ProcessGroup);
    /// `group`'s leader was reaped and the rest of the group killed.
    fn ended(&self, group: &ProcessGroup);
}

/// What `/proc/PID/stat` says of a process, for telling groups apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The process id.
    pub pid: i32,
    /// The state letter (`R`, `S`, `Z` for a zombie, …).
    pub state: char,
    /// Its parent (field 4).
    pub ppid: i32,
    /// Its process group (field 5).
    pub pgrp: i32,
    /// Its session (field 6).
    pub session: i32,
    /// Its start time in clock ticks since boot (field 22).
    pub start: u64,
}

/// Reads `/proc/PID/stat`; `None` when the process does not exist (or
/// there is no `/proc`).
pub fn read_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses the text of a `/proc/PID/stat`. `comm` (field 2) is in
/// parentheses and may hold spaces or parentheses itself, so the fields are
/// counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let (head, rest) = text.rsplit_once(')')?;
    let pid = head.split_once(' ')?.0.trim().parse().ok()?;
    // rest: " state ppid pgrp session tty_nr tpgid flags minflt cminflt
    // majflt cmajflt utime stime cutime cstime priority nice num_threads
    // itrealvalue starttime …" — field 3 is the first.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    Some(ProcStat {
        pid,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        session: field(6)?.parse().ok()?,
        start: field(22)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_and_parentheses_in_its_name_is_read() {
        let text = "4242 (my (odd) name) S 1 4242 4100 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 100";
        let stat = parse_stat(text).unwrap();
        assert_eq!(stat, ProcStat { pid: 4242, state: 'S', ppid: 1, pgrp: 4242, session: 4100, start: 987654 });
    }

    #[test]
    fn our_own_stat_is_read() {
        let me = i32::try_from(std::process::id()).unwrap();
        let stat = read_stat(me).unwrap();
        assert_eq!(stat.pid, me);
        assert!(stat.start > 0);
        assert_eq!(read_stat(i32::MAX), None);
    }
}
