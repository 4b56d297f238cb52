//! The run history against hostile values and faults: whatever a job
//! returns, every reader of the history keeps working; a full disk, a
//! deleted or a read-only database are reported, and nothing a run did is
//! lost while they last.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Daemon, finished, gatherd, http, is, is_root};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn a_result_nested_200_deep_leaves_every_history_reader_working() {
    let daemon = Daemon::start(&[("deep.rhai", "let a = []; for i in 0..200 { a = [a]; } a\n")], &[], &[]);
    assert!(daemon.wait_for(LONG, |l| finished(l, "deep.rhai", "succeeded")), "{}", daemon.dump());
    let addr = daemon.api().to_string();
    let state = daemon.state.path().to_str().expect("a UTF-8 temp path").to_string();
    let cli = |args: &[&str], place: [&str; 2]| {
        let out = gatherd().args(args).args(place).output().expect("gatherd runs");
        assert!(out.status.success(), "gatherd {args:?} {place:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    for place in [["--addr", addr.as_str()], ["--state", state.as_str()]] {
        let runs: Value = serde_json::from_slice(&cli(&["runs", "--json"], place)).expect("runs --json is JSON");
        let id = runs[0]["id"].as_i64().expect("the run is listed");
        let shown: Value =
            serde_json::from_slice(&cli(&["show", &id.to_string(), "--json"], place)).expect("show --json is JSON");
        assert!(shown["result"].to_string().contains("nested deeper than 64 levels"), "{shown}");
        cli(&["runs"], place);
        cli(&["show", &id.to_string()], place);
    }
    cli(&["jobs", "--json"], ["--addr", addr.as_str()]);
    let api = daemon.api();
    for path in ["/runs", "/runs/1", "/jobs"] {
        let (status, body) = http(api, "GET", path, &[], "");
        assert_eq!(status, 200, "GET {path}: {body}");
    }
}

const TICK: &str = "every = \"200ms\"\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\n";
const ONCE: &str = "[[step]]\nname = \"t\"\nsleep = \"10ms\"\n";

/// Whether `/healthz` answers 503 naming `what` and a reason containing `why`.
fn degraded(daemon: &Daemon, what: &str, why: &str) -> bool {
    let (status, body) = http(daemon.api(), "GET", "/healthz", &[], "");
    status == 503 && body.contains(what) && body.contains(why)
}

/// The `gatherd_degraded{what="store"}` sample of `/metrics`.
fn store_degraded_metric(daemon: &Daemon) -> String {
    let (_, body) = http(daemon.api(), "GET", "/metrics", &[], "");
    body.lines().find(|l| l.starts_with("gatherd_degraded{what=\"store\"}")).unwrap_or("").to_string()
}

/// A tmpfs mounted on a temp folder for the test's life (needs root).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` on `dir`, or says why not.
    fn mount(dir: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the file system of `dir` with one file until it is full; returns the file.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.flush();
    // The last partial blocks: byte by byte is too slow; small chunks do.
    while file.write_all(&chunk[..512]).is_ok() {}
    path
}

/// The stored status of every run of `job`, by id.
fn statuses(state: &std::path::Path, job: &str) -> std::collections::BTreeMap<i64, String> {
    let db =
        rusqlite::Connection::open_with_flags(state.join("gatherd.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the history");
    let mut stmt = db.prepare("SELECT id, status FROM runs WHERE job = ?1").expect("a query");
    stmt.query_map([job], |r| Ok((r.get(0)?, r.get(1)?))).expect("runs").map(|r| r.expect("a row")).collect()
}

#[test]
fn a_full_disk_while_running_is_reported_retried_and_every_run_gets_its_real_status_when_space_returns() {
    let state = tempfile::tempdir().expect("state dir");
    let mounted = match Tmpfs::mount(state.path(), "4m") {
        Ok(m) => m,
        Err(why) => return eprintln!("SKIPPED: a real full disk needs a tmpfs, which needs root ({why})"),
    };
    let jobs = tempfile::tempdir().expect("jobs dir");
    support::write(jobs.path(), "tick.toml", TICK);
    let daemon = Daemon::start_with(jobs, state, &[], &[]);
    assert!(daemon.wait_for(LONG, |l| finished(l, "tick.toml", "succeeded")), "{}", daemon.dump());

    let filler = fill(daemon.state.path());
    assert!(
        daemon.wait_for(LONG, |l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("the run history cannot be written"))),
        "the full disk was never reported: {}",
        daemon.dump()
    );
    let failing_at = daemon.lines().len();
    assert!(support::eventually(LONG, || degraded(&daemon, "store", "full")), "healthz: {}", daemon.dump());
    assert!(store_degraded_metric(&daemon).ends_with(" 1"), "{}", store_degraded_metric(&daemon));
    // Scheduled runs go on; a one-shot dropped now waits.
    daemon.drop_file("once.toml", ONCE);
    assert!(
        daemon.wait_for(LONG, |l| is(
            l,
            "once.toml",
            "the run history cannot be written: this one-shot waits until it can"
        )),
        "{}",
        daemon.dump()
    );
    let ran_meanwhile =
        |d: &Daemon| d.lines()[failing_at..].iter().filter(|l| finished(l, "tick.toml", "succeeded")).count();
    assert!(support::eventually(LONG, || ran_meanwhile(&daemon) >= 3), "{}", daemon.dump());
    assert_eq!(
        daemon.count(|l| finished(l, "once.toml", "succeeded")),
        0,
        "a one-shot ran before it could be recorded"
    );

    std::fs::remove_file(filler).expect("free the space");
    assert!(
        daemon.wait_for(LONG, |l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("the run history can be written again"))),
        "never recovered: {}",
        daemon.dump()
    );
    assert!(support::eventually(LONG, || http(daemon.api(), "GET", "/healthz", &[], "").0 == 200), "{}", daemon.dump());
    assert!(store_degraded_metric(&daemon).ends_with(" 0"), "{}", store_degraded_metric(&daemon));
    assert!(daemon.wait_for(LONG, |l| finished(l, "once.toml", "succeeded")), "{}", daemon.dump());

    let lines = daemon.lines();
    let (_jobs, state) = daemon.end_with(nix::sys::signal::Signal::SIGTERM);
    let state = state.path();
    let logged: Vec<i64> =
        lines.iter().filter(|l| finished(l, "tick.toml", "succeeded")).filter_map(|l| l["run_id"].as_i64()).collect();
    let stored = statuses(state, "tick.toml");
    for id in &logged {
        assert_eq!(stored.get(id).map(String::as_str), Some("succeeded"), "run {id}: stored {stored:?}");
    }
    assert!(logged.len() >= 4, "{lines:?}");
    assert_eq!(statuses(state, "once.toml").into_values().collect::<Vec<_>>(), ["succeeded"]);
    drop(mounted);
}

#[test]
fn a_database_deleted_while_running_is_reported_and_one_shots_wait() {
    let daemon = Daemon::start(&[("tick.toml", TICK)], &[], &[]);
    assert!(daemon.wait_for(LONG, |l| finished(l, "tick.toml", "succeeded")), "{}", daemon.dump());
    std::fs::remove_file(daemon.state.path().join("gatherd.db")).expect("delete the history");
    assert!(support::eventually(LONG, || degraded(&daemon, "store", "deleted")), "healthz: {}", daemon.dump());
    assert!(
        daemon.wait_for(LONG, |l| l["error"]
            .as_str()
            .is_some_and(|e| e.contains("deleted") && e.contains("restart gatherd"))),
        "the log does not say the way out: {}",
        daemon.dump()
    );
    daemon.drop_file("once.toml", ONCE);
    assert!(
        daemon.wait_for(LONG, |l| is(
            l,
            "once.toml",
            "the run history cannot be written: this one-shot waits until it can"
        )),
        "{}",
        daemon.dump()
    );
}

#[test]
fn a_read_only_database_is_refused_at_start_with_the_file_and_the_way_out() {
    let first = Daemon::start(&[], &[], &[]);
    let (jobs, state) = first.end_with(nix::sys::signal::Signal::SIGTERM);
    let db = state.path().join("gatherd.db");
    // Root ignores file modes: an immutable file is read-only even for root.
    let immutable = std::process::Command::new("chattr").arg("+i").arg(&db).status().is_ok_and(|s| s.success());
    if !immutable {
        let mut perms = std::fs::metadata(&db).expect("the history").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
        std::fs::set_permissions(&db, perms).expect("make it read-only");
        if is_root() {
            return eprintln!("SKIPPED: as root a read-only file needs `chattr +i`, which failed here");
        }
    }
    let (code, stderr) = support::refused_start(jobs.path(), state.path(), &[]);
    if immutable {
        let _ = std::process::Command::new("chattr").arg("-i").arg(&db).status();
    }
    assert!(code.is_some_and(|c| c != 0), "a daemon started on a read-only history: {stderr}");
    assert!(stderr.contains(&db.display().to_string()) && stderr.contains("cannot be written"), "{stderr}");
    assert!(stderr.contains("move it aside"), "{stderr}");
    assert!(!state.path().join("gatherd.sock").exists(), "the socket outlived the daemon");
}
