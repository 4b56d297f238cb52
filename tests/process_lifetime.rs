//! Nothing a step starts outlives the daemon: after `kill -9` of the daemon,
//! its steps' processes die with it (their death signal), and what they
//! started in the background dies at the next start (the process records).

mod support;

use std::time::Duration;

use gatherd::exec::ledger::read_stat;
use nix::sys::signal::Signal;
use support::{Daemon, eventually, open_files_limit};

/// A live (not zombie) process: its pid and its parent's.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Proc {
    pid: i32,
    ppid: i32,
}

/// Every live process whose environment holds `GATHERD_TEST_MARK=marker`.
fn marked(marker: &str) -> Vec<Proc> {
    let needle = format!("GATHERD_TEST_MARK={marker}");
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            if !environ.split(|b| *b == 0).any(|var| var == needle.as_bytes()) {
                return None;
            }
            let stat = read_stat(pid)?;
            (stat.state != 'Z').then_some(Proc { pid, ppid: stat.ppid })
        })
        .collect()
}

fn unique_marker() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

#[test]
fn after_kill_9_of_the_daemon_no_step_process_is_left_and_the_next_start_kills_their_background_children() {
    let marker = unique_marker();
    // Three steps at once: an async exec, a blocking exec, and a shell whose
    // background child is not the shell's leader.
    let job = format!(
        r#"
[[group]]
name = "main"
gather = ["direct", "blocking", "shell"]

[[step]]
name = "direct"
exec = {{ argv = ["sleep", "60"], env = {{ GATHERD_TEST_MARK = "{marker}" }} }}

[[step]]
name = "blocking"
exec = {{ argv = ["sleep", "60"], env = {{ GATHERD_TEST_MARK = "{marker}" }} }}
blocking = true

[[step]]
name = "shell"
shell = {{ command = "sleep 60 & wait", env = {{ GATHERD_TEST_MARK = "{marker}" }} }}
"#
    );
    let daemon = Daemon::start(&[("lifetime.toml", &job)], &[], &[]);
    let pid = daemon.pid();
    assert!(
        eventually(Duration::from_secs(20), || marked(&marker).len() == 4),
        "the steps never started their 4 processes: {:?}\n{}",
        marked(&marker),
        daemon.dump()
    );
    let before = marked(&marker);
    let direct: Vec<i32> = before.iter().filter(|p| p.ppid == pid).map(|p| p.pid).collect();
    assert_eq!(direct.len(), 3, "the daemon's own children: {before:?}");
    // The spawner writes each group's record just after it hands the child
    // over; the kill comes once all three are on disk.
    let records = daemon.state.path().join("processes");
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_dir(&records).map(|d| d.count() == 3).unwrap_or(false)),
        "the three groups were never all recorded:\n{}",
        daemon.dump()
    );

    let (jobs, state) = daemon.end_with(Signal::SIGKILL);
    assert!(
        eventually(Duration::from_secs(10), || marked(&marker).iter().all(|p| !direct.contains(&p.pid))),
        "the steps' processes outlived the daemon's kill -9: {:?} (its children were {direct:?})",
        marked(&marker)
    );

    let daemon = Daemon::start_with(jobs, state, &[], &[]);
    assert!(
        eventually(Duration::from_secs(10), || marked(&marker).is_empty()),
        "a step's background process outlived the next start: {:?}\n{}",
        marked(&marker),
        daemon.dump()
    );
    assert_kill_logged_once(&daemon, "lifetime.toml");
    let (code, _) = daemon.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn steps_that_end_leave_no_process_record_behind() {
    let job = r#"
[[step]]
name = "quick"
shell = "sleep 0.1 & echo done"

[[step]]
name = "blocking"
exec = ["true"]
blocking = true
"#;
    let daemon = Daemon::start(&[("quick.toml", job)], &[], &[]);
    assert!(
        daemon.wait_for(Duration::from_secs(20), |l| support::finished(l, "quick.toml", "succeeded")),
        "{}",
        daemon.dump()
    );
    let records = daemon.state.path().join("processes");
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_dir(&records).map(|d| d.count() == 0).unwrap_or(false)),
        "records left in {}: {:?}",
        records.display(),
        std::fs::read_dir(&records).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    let (code, _) = daemon.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_step_gets_the_open_files_limit_the_daemon_was_started_with_not_the_raised_one() {
    let (_, hard) = open_files_limit(std::process::id());
    if hard.parse::<u64>().is_ok_and(|h| h <= 512) {
        eprintln!("skipped: the hard limit ({hard}) leaves nothing to raise");
        return;
    }
    let out = tempfile::tempdir().expect("temp");
    let file = out.path().join("limit");
    let job = format!("[[step]]\nname = \"limit\"\nshell = \"ulimit -n > '{}'\"\n", file.display());
    let jobs = tempfile::tempdir().expect("temp");
    support::write(jobs.path(), "limit.toml", &job);
    let daemon = Daemon::start_via(
        &["sh", "-c", "ulimit -S -n 512 && exec \"$0\" \"$@\""],
        jobs,
        tempfile::tempdir().expect("temp"),
        &[],
        &[],
    );
    assert!(
        daemon.wait_for(Duration::from_secs(20), |l| support::finished(l, "limit.toml", "succeeded")),
        "{}",
        daemon.dump()
    );
    assert_eq!(open_files_limit(daemon.pid().unsigned_abs()), (hard.clone(), hard), "the daemon's own (soft, hard)");
    let step = std::fs::read_to_string(&file).expect("the step wrote its limit");
    assert_eq!(step.trim(), "512", "the step's soft open-files limit");
    let (code, _) = daemon.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_step_run_as_another_user_is_recorded_and_its_background_child_killed_at_the_next_start() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: switching users needs root, and this test runs as uid {}", nix::unistd::geteuid());
        return;
    }
    if !matches!(nix::unistd::User::from_name("nobody"), Ok(Some(_))) {
        eprintln!("SKIPPED: this host has no user `nobody`");
        return;
    }
    let marker = unique_marker();
    let job = format!(
        r#"
user = "nobody"

[[step]]
name = "shell"
shell = {{ command = "sleep 60 & wait", cwd = "/", env = {{ GATHERD_TEST_MARK = "{marker}" }} }}
"#
    );
    let daemon = Daemon::start(&[("nobody.toml", &job)], &[], &[]);
    assert!(
        eventually(Duration::from_secs(20), || marked(&marker).len() == 2),
        "the step never started its 2 processes: {:?}\n{}",
        marked(&marker),
        daemon.dump()
    );
    let records = daemon.state.path().join("processes");
    // The spawner writes the record just after it hands the child over.
    let recorded = || std::fs::read_dir(&records).map(|d| d.count()).unwrap_or(0);
    assert!(
        eventually(Duration::from_secs(10), || recorded() == 1),
        "the group of a step run as nobody is recorded ({} records):\n{}",
        recorded(),
        daemon.dump()
    );
    let (jobs, state) = daemon.end_with(Signal::SIGKILL);
    let daemon = Daemon::start_with(jobs, state, &[], &[]);
    assert!(
        eventually(Duration::from_secs(10), || marked(&marker).is_empty()),
        "the background process of a step run as nobody outlived the next start: {:?}\n{}",
        marked(&marker),
        daemon.dump()
    );
    assert_kill_logged_once(&daemon, "nobody.toml");
    let (code, _) = daemon.stop();
    assert_eq!(code, Some(0));
}

/// The next start logged killing what `job`'s steps left, once, with the job.
fn assert_kill_logged_once(daemon: &Daemon, job: &str) {
    let kills = daemon.count(|l| {
        l["job"] == job
            && l["message"]
                == "killed the processes a step left running when the last daemon stopped without cleaning up"
    });
    assert_eq!(kills, 1, "the kill is logged once, with the job:\n{}", daemon.dump());
}
