//! `gatherd backup FILE`: a consistent copy of the run history, taken with
//! SQLite's online backup API while the daemon writes to it.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use support::*;

/// Every run row of the database at `db` that has ended: id → status.
fn ended_runs(db: &Path) -> BTreeMap<i64, String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open the database");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    let mut stmt = conn.prepare("SELECT id, status FROM runs WHERE status != 'running'").expect("prepare");
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}

/// Under a job every 100 ms, each backup opens on its own (no -wal beside
/// it), passes `PRAGMA integrity_check`, and holds every run that had
/// ended before the backup started, with the same status.
#[test]
fn a_backup_under_write_load_is_whole_and_has_every_run_committed_before_it() {
    let job = "every = \"100ms\"\n[[step]]\nname = \"tick\"\nsleep = \"20ms\"\n";
    let daemon = Daemon::start(&[("tick.toml", job)], &[], &[]);
    assert!(
        daemon.wait_for_n(Duration::from_secs(20), 5, |l| finished(l, "tick.toml", "succeeded")),
        "no runs:\n{}",
        daemon.dump()
    );
    let out = tempfile::tempdir().expect("temp dir");
    let db = daemon.state.path().join("gatherd.db");
    // Backups one after another until the daemon has recorded ten more
    // runs meanwhile (and at least five backups): each is taken under writes.
    let first = ended_runs(&db).len();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while i < 5 || ended_runs(&db).len() < first + 10 {
        assert!(std::time::Instant::now() < deadline, "the daemon stopped recording:\n{}", daemon.dump());
        let before = ended_runs(&db);
        let file = out.path().join(format!("backup-{i}.db"));
        let output = gatherd().arg("backup").arg(&file).arg("--state").arg(daemon.state.path()).output().expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "backup {i}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.path().join(format!("backup-{i}.db-wal")).exists(), "the backup is one file");
        let copy = Connection::open_with_flags(&file, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("the backup opens");
        let integrity: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
        assert_eq!(integrity, "ok", "backup {i}");
        drop(copy);
        let copied = ended_runs(&file);
        for (id, status) in &before {
            assert_eq!(copied.get(id), Some(status), "backup {i} lacks run {id} ({status}), ended before it started");
        }
        i += 1;
    }
    let (code, _) = daemon.stop();
    assert_eq!(code, Some(0));
}

/// A backup never overwrites a file, and a missing history is said plainly.
#[test]
fn a_backup_refuses_an_existing_file_and_a_missing_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = tempfile::tempdir().expect("state dir");
    let output =
        gatherd().arg("backup").arg(dir.path().join("b.db")).arg("--state").arg(state.path()).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no run history at") && stderr.contains("gatherd.db"), "{stderr}");
    std::fs::write(state.path().join("gatherd.db"), "").expect("write");
    let existing = dir.path().join("exists.db");
    std::fs::write(&existing, "keep me").expect("write");
    let output = gatherd().arg("backup").arg(&existing).arg("--state").arg(state.path()).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&existing).expect("read"), "keep me");
}

/// The copy holds every line jobs printed: it is made 0600 (its owner's
/// only), whatever the umask, here the usual 022 that would give 0644.
#[test]
fn a_backup_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().expect("state dir");
    let history = Connection::open(state.path().join("gatherd.db")).expect("create a history");
    history
        .execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT);
             INSERT INTO runs (status) VALUES ('succeeded');",
        )
        .expect("fill the history");
    drop(history);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("b.db");
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_gatherd"))
        .arg("backup")
        .arg(&file)
        .arg("--state")
        .arg(state.path())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let mode = std::fs::metadata(&file).expect("the backup exists").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "the backup's mode is {mode:o}, not 600");
    assert_eq!(ended_runs(&file).len(), 1);
}
