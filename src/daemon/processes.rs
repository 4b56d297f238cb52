//! The daemon's record of its steps' process groups, for after a `kill -9`.
//!
//! A step's leader dies with the daemon (its death signal, `exec/step/
//! child.rs`), but what the leader started in the background does not: it
//! stays in the leader's process group, orphaned. So every group a step
//! starts is recorded as a file `STATE/processes/<pgid>-<leader start>`
//! (the boot, the session and the job inside) as it starts, and the file is
//! removed when the group is reaped. At start, before any run, [`sweep`]
//! kills every group a record names that still exists, and removes the
//! records.
//!
//! A file per group, not a table in the history: the record is written by
//! the one spawner thread right after the fork, needs no database (nor a
//! working one), and a write to the page cache survives `kill -9` (after a
//! power loss no process survives either, so no fsync).
//!
//! Architecture Invariant: a record never kills a process that is not of
//! the group it recorded. A group id is recycled only after the whole group
//! is gone, so a record's group is ours when its leader is alive with the
//! recorded start time; or, when the leader is gone, when every member
//! started after it in the recorded session on the same boot and is an
//! orphan (its parent is of the group, pid 1, or outside the session). That
//! last case is not airtight: a group of the same session that took the id
//! after ours ended, whose own leader then died leaving orphans, would pass
//! (it takes the pid space wrapping around in between); under systemd the
//! session is the dead daemon's, which only its steps' processes share.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::exec::ledger::{ProcStat, ProcessGroup, ProcessLedger, read_stat};

/// The folder in the state folder that holds the records.
pub const PROCESSES_DIR: &str = "processes";

/// Where the kernel names this boot; a record from another boot names
/// nothing alive.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The folder of records, and the boot they are made in.
#[derive(Debug, Clone)]
pub struct ProcessRecords {
    dir: PathBuf,
    boot: Arc<str>,
}

impl ProcessRecords {
    /// The records in `state`'s `processes/` folder (created if missing).
    pub fn open(state: &Path) -> io::Result<ProcessRecords> {
        let dir = state.join(PROCESSES_DIR);
        std::fs::create_dir_all(&dir)?;
        let boot = std::fs::read_to_string(BOOT_ID).map(|b| b.trim().to_owned()).unwrap_or_default();
        Ok(ProcessRecords { dir, boot: boot.into() })
    }

    /// The ledger of one run of `job`.
    pub fn for_job(&self, job: &str) -> Arc<dyn ProcessLedger> {
        Arc::new(JobProcesses { records: self.clone(), job: job.into() })
    }

    fn path(&self, group: &ProcessGroup) -> PathBuf {
        self.dir.join(format!("{}-{}", group.pgid, group.leader_start))
    }
}

/// The ledger a run gets: records its groups under its job's name.
#[derive(Debug)]
struct JobProcesses {
    records: ProcessRecords,
    job: Box<str>,
}

impl ProcessLedger for JobProcesses {
    fn started(&self, group: &ProcessGroup) {
        let path = self.records.path(group);
        let mut text = String::new();
        let _ =
            write!(text, "boot={}\nsession={}\njob={}\n", self.records.boot, group.session, self.job.escape_debug());
        if let Err(e) = std::fs::write(&path, text) {
            tracing::warn!(job = %self.job, pgid = group.pgid, path = %path.display(), error = %e,
                "cannot record a step's process group: if the daemon is killed, what it leaves in the background is not cleaned up at the next start");
        }
    }

    fn ended(&self, group: &ProcessGroup) {
        let path = self.records.path(group);
        // NotFound: its `started` could not write it (and said so).
        if let Err(e) =
            std::fs::remove_file(&path).or_else(|e| if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
        {
            tracing::warn!(job = %self.job, pgid = group.pgid, path = %path.display(), error = %e, "cannot remove the record of a reaped process group");
        }
    }
}

/// What [`sweep`] did about one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swept {
    /// The group was still there and got SIGKILL.
    Killed {
        /// The job whose step started it.
        job: String,
        /// The group.
        pgid: i32,
        /// How many live processes were in it.
        processes: usize,
    },
    /// Nothing of the group was left (or its id now names someone else's).
    Gone {
        /// The group.
        pgid: i32,
    },
    /// The record could not be read or removed.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: String,
    },
}

/// Kills every recorded group that still exists and removes its record.
/// Call it before any run starts, holding the state folder's lock.
pub fn sweep(records: &ProcessRecords) -> Vec<Swept> {
    let entries = match std::fs::read_dir(&records.dir) {
        Ok(entries) => entries,
        Err(e) => return vec![Swept::Unreadable { path: records.dir.clone(), error: e.to_string() }],
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    if files.is_empty() {
        return Vec::new();
    }
    let live = processes_by_group();
    // Never our own group, whatever a record says.
    let own = nix::unistd::getpgrp().as_raw();
    files
        .into_iter()
        .map(|path| {
            let swept = match Record::read(&path) {
                Ok(rec) => rec.sweep(records, &live, own),
                Err(error) => Swept::Unreadable { path: path.clone(), error },
            };
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                return Swept::Unreadable { path, error: format!("cannot remove it: {e}") };
            }
            swept
        })
        .collect()
}

/// One record, as read back.
#[derive(Debug)]
struct Record {
    group: ProcessGroup,
    boot: String,
    job: String,
}

impl Record {
    fn read(path: &Path) -> Result<Record, String> {
        let name = path.file_name().and_then(|n| n.to_str()).ok_or("not a record's name")?;
        let (pgid, start) = name.split_once('-').ok_or("not a record's name (PGID-START)")?;
        let pgid = pgid.parse().map_err(|_| "not a record's name (PGID-START)")?;
        let leader_start = start.parse().map_err(|_| "not a record's name (PGID-START)")?;
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let field = |key: &str| {
            text.lines().find_map(|l| l.strip_prefix(key).and_then(|l| l.strip_prefix('='))).unwrap_or("").to_owned()
        };
        let session = field("session").parse().map_err(|_| "no session in the record")?;
        Ok(Record { group: ProcessGroup { pgid, leader_start, session }, boot: field("boot"), job: field("job") })
    }

    fn sweep(&self, records: &ProcessRecords, live: &HashMap<i32, Vec<ProcStat>>, own: i32) -> Swept {
        let ProcessGroup { pgid, leader_start, session } = self.group;
        let gone = Swept::Gone { pgid };
        let other_boot = !self.boot.is_empty() && !records.boot.is_empty() && self.boot != *records.boot;
        if other_boot || pgid <= 1 || pgid == own {
            return gone;
        }
        let members = live.get(&pgid).map(Vec::as_slice).unwrap_or_default();
        let ours = match read_stat(pgid) {
            // The leader (or a zombie of it) is there: its start time says.
            // Not its group: a zombie being reaped reads as group 0.
            Some(leader) => leader.start == leader_start,
            // The leader is gone: the id is not recycled while any member
            // lives, but a new group may have taken it since ours ended.
            None => members.iter().all(|m| m.start >= leader_start && m.session == session && orphaned(m, pgid)),
        };
        if !ours || members.is_empty() {
            return gone;
        }
        match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
            Ok(()) => Swept::Killed { job: self.job.clone(), pgid, processes: members.len() },
            Err(nix::errno::Errno::ESRCH) => gone,
            Err(e) => Swept::Unreadable {
                path: records.path(&self.group),
                error: format!("cannot kill process group {pgid}: {}", e.desc()),
            },
        }
    }
}

/// Whether `member` of group `pgid`, whose leader is gone, has the parent
/// an orphan of a step has: a process of its own group, or none of its
/// session (init, pid 1, or a subreaper outside it, which adopted it when
/// its step's processes died with the daemon). A group that took a recycled
/// id from someone alive in the session — a shell's pipeline whose first
/// process exited — has its parent there: not ours.
fn orphaned(member: &ProcStat, pgid: i32) -> bool {
    if member.ppid <= 1 {
        return true;
    }
    match read_stat(member.ppid) {
        Some(parent) => parent.pgrp == pgid || parent.session != member.session,
        // The parent just exited: it will be adopted as above.
        None => true,
    }
}

/// Every live (not zombie) process, by process group.
fn processes_by_group() -> HashMap<i32, Vec<ProcStat>> {
    let mut groups: HashMap<i32, Vec<ProcStat>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return groups };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if let Some(stat) = read_stat(pid).filter(|s| s.state != 'Z') {
            groups.entry(stat.pgrp).or_default().push(stat);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use super::*;

    /// `sh -c SCRIPT` in a group of its own, as a step's process is.
    fn group(script: &str) -> Child {
        Command::new("sh").args(["-c", script]).stdout(Stdio::piped()).process_group(0).spawn().unwrap()
    }

    fn group_of(child: &Child) -> ProcessGroup {
        let pgid = i32::try_from(child.id()).unwrap();
        let stat = read_stat(pgid).unwrap();
        ProcessGroup { pgid, leader_start: stat.start, session: stat.session }
    }

    fn alive(pid: i32) -> bool {
        read_stat(pid).is_some_and(|s| s.state != 'Z')
    }

    /// Polls (a bound for SIGKILL to land, not a speed assertion).
    fn eventually_dead(pid: i32) -> bool {
        (0..500).any(|_| {
            let dead = !alive(pid);
            if !dead {
                std::thread::sleep(Duration::from_millis(20));
            }
            dead
        })
    }

    fn records() -> (tempfile::TempDir, ProcessRecords) {
        let state = tempfile::tempdir().unwrap();
        let records = ProcessRecords::open(state.path()).unwrap();
        (state, records)
    }

    fn files(records: &ProcessRecords) -> usize {
        std::fs::read_dir(&records.dir).unwrap().count()
    }

    #[test]
    fn a_recorded_group_still_running_is_killed_and_its_record_removed() {
        let (_state, records) = records();
        let mut child = group("exec sleep 60");
        let g = group_of(&child);
        records.for_job("a.toml").started(&g);
        assert_eq!(files(&records), 1);
        assert_eq!(sweep(&records), vec![Swept::Killed { job: "a.toml".into(), pgid: g.pgid, processes: 1 }]);
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        assert_eq!(files(&records), 0);
    }

    #[test]
    fn a_record_whose_pid_now_names_another_process_kills_nothing() {
        let (_state, records) = records();
        let mut child = group("exec sleep 60");
        // The same pid, another start time: the recorded group ended and
        // its id went to this process.
        let recycled = ProcessGroup { leader_start: group_of(&child).leader_start + 1, ..group_of(&child) };
        records.for_job("a.toml").started(&recycled);
        assert_eq!(sweep(&records), vec![Swept::Gone { pgid: recycled.pgid }]);
        assert_eq!(child.try_wait().unwrap(), None, "a process that is not the recorded one was killed");
        assert_eq!(files(&records), 0, "the stale record is removed");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_group_whose_leader_is_gone_is_killed_through_what_it_left() {
        let (_state, records) = records();
        // The leader starts a background sleep and exits: what a shell step
        // leaves when the daemon's death kills the shell.
        let mut child = group("sleep 60 & echo $!");
        let g = group_of(&child);
        records.for_job("bg.toml").started(&g);
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let orphan: i32 = line.trim().parse().unwrap();
        assert!(child.wait().unwrap().success());
        assert!(alive(orphan));
        assert_eq!(sweep(&records), vec![Swept::Killed { job: "bg.toml".into(), pgid: g.pgid, processes: 1 }]);
        assert!(eventually_dead(orphan), "the background child {orphan} is still alive");
    }

    #[test]
    fn a_recycled_group_id_whose_member_has_a_live_parent_in_the_session_is_not_killed() {
        let (_state, records) = records();
        // A shell's pipeline: its first process leads the group and exits,
        // the next (a child of the shell, here of this test) lives on in it.
        let mut first = group("exec sleep 0.5");
        let pgid = i32::try_from(first.id()).unwrap();
        let mut second = Command::new("sleep").arg("60").process_group(pgid).spawn().unwrap();
        let member = read_stat(i32::try_from(second.id()).unwrap()).unwrap();
        assert!(first.wait().unwrap().success());
        // A record of an older group that had the same id, in our session.
        let older = ProcessGroup { pgid, leader_start: member.start.saturating_sub(1), session: member.session };
        records.for_job("a.toml").started(&older);
        assert_eq!(sweep(&records), vec![Swept::Gone { pgid }]);
        assert_eq!(second.try_wait().unwrap(), None, "a process of a group that took a recycled id was killed");
        second.kill().unwrap();
        second.wait().unwrap();
    }

    #[test]
    fn a_record_from_another_boot_is_dropped_without_a_kill() {
        let (_state, records) = records();
        let mut child = group("exec sleep 60");
        let g = group_of(&child);
        let before = ProcessRecords { boot: "another-boot".into(), ..records.clone() };
        before.for_job("a.toml").started(&g);
        assert_eq!(sweep(&records), vec![Swept::Gone { pgid: g.pgid }]);
        assert_eq!(child.try_wait().unwrap(), None);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn an_ended_group_leaves_no_record_and_a_stray_file_is_reported_and_removed() {
        let (_state, records) = records();
        let ledger = records.for_job("a.toml");
        let g = ProcessGroup { pgid: 123_456, leader_start: 42, session: 1 };
        ledger.started(&g);
        ledger.ended(&g);
        assert_eq!(files(&records), 0);
        std::fs::write(records.dir.join("notes.txt"), "hello").unwrap();
        let swept = sweep(&records);
        assert!(matches!(&swept[..], [Swept::Unreadable { error, .. }] if error.contains("PGID-START")), "{swept:?}");
        assert_eq!(files(&records), 0);
    }
}
