//! Operating a fleet's database, end to end: daemons on one throwaway
//! PostgreSQL cluster (`support::postgres::Cluster`, started by the test,
//! never skipped) while it restarts, stops for a while, or cannot be
//! reached at all.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::postgres::Cluster;
use support::{Daemon, eventually, http};

/// How many daemons share the database. Each has its own node name and its
/// own jobs (until claims make a fire the fleet's, a job in two folders
/// would run on both), all recording into the one database.
const NODES: usize = 3;

/// Every daemon's interval jobs: many short runs.
const TICKERS: usize = 4;
const TICK: &str = "every = \"200ms\"\n[[step]]\nname = \"t\"\nsleep = \"20ms\"\n";
const ONCE: &str = "[[step]]\nname = \"t\"\nsleep = \"20ms\"\n";

const LONG: Duration = Duration::from_secs(30);

/// A one-shot that waits for the file `go`, then prints 20 MB in 4 KB
/// lines, all recorded (`head` past it): more than the writer keeps in
/// memory while the database is away.
fn chatty(go: &std::path::Path) -> String {
    format!(
        "max_output = {{ head = 33554432, tail = 1024 }}\n[[step]]\nname = \"chatty\"\nshell = \"while [ ! -e {} ]; \
         do sleep 0.05; done; head -c 20000000 /dev/zero | tr '\\\\0' x | fold -w 4000\"\n",
        go.display()
    )
}

/// Whether `/healthz` answers 503 naming the store.
fn store_degraded(daemon: &Daemon) -> bool {
    let (status, body) = http(daemon.api(), "GET", "/healthz", &[], "");
    status == 503 && body.contains("store")
}

fn healthy(daemon: &Daemon) -> bool {
    http(daemon.api(), "GET", "/healthz", &[], "").0 == 200
}

fn finished_runs(daemon: &Daemon) -> usize {
    daemon.count(|l| l["message"] == "run finished" && !support::is_barrier(l))
}

/// Starts `NODES` daemons on `url`, each with its node name and its jobs.
fn fleet(url: &str) -> Vec<Daemon> {
    (0..NODES)
        .map(|n| {
            let config = tempfile::NamedTempFile::new().expect("config file");
            std::fs::write(config.path(), format!("node = \"n{n}\"\n")).expect("write config");
            let mut files: Vec<(String, &str)> = (0..TICKERS).map(|t| (format!("tick{t}.toml"), TICK)).collect();
            files.push(("first.toml".into(), ONCE));
            let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), *t)).collect();
            let path = config.path().to_str().expect("utf-8").to_string();
            let daemon = Daemon::start(&files, &["--store", url, "--config", &path], &[]);
            // The daemon read its config at start.
            drop(config);
            daemon
        })
        .collect()
}

/// Waits until each daemon has finished `more` runs past `before`.
fn each_makes_progress(fleet: &[Daemon], before: &[usize], more: usize) {
    for (daemon, before) in fleet.iter().zip(before) {
        assert!(
            eventually(LONG, || finished_runs(daemon) >= before + more),
            "a daemon made no progress ({} runs finished, {before} before):\n{}",
            finished_runs(daemon),
            daemon.dump()
        );
    }
}

/// The run ids a daemon's log says began, and the status each ended with.
fn logged_runs(lines: &[Value]) -> (BTreeSet<i64>, BTreeMap<i64, String>) {
    let mut started = BTreeSet::new();
    let mut ended = BTreeMap::new();
    for l in lines.iter().filter(|l| !support::is_barrier(l)) {
        let Some(id) = l["run_id"].as_i64() else { continue };
        if l["message"] == "run started" {
            started.insert(id);
        } else if l["message"] == "run finished" {
            ended.insert(id, l["status"].as_str().unwrap_or("").to_string());
        }
    }
    (started, ended)
}

#[test]
fn a_postgresql_restart_and_a_5_s_outage_under_load_lose_no_run_and_the_daemons_recover_by_themselves() {
    let cluster = Cluster::start();
    let url = cluster.create_db("fleet");
    let fleet = fleet(&url);
    let counts = |f: &[Daemon]| f.iter().map(finished_runs).collect::<Vec<_>>();
    each_makes_progress(&fleet, &[0; NODES], 10);
    for daemon in &fleet {
        assert!(healthy(daemon), "{}", daemon.dump());
    }

    // A restart (`pg_ctl restart -m fast`: the connections are cut).
    cluster.stop();
    cluster.start_again();
    each_makes_progress(&fleet, &counts(&fleet), 10);

    // An outage of about 5 s, one-shots dropped while it lasts, and a run
    // that began before it printing more than the writer keeps meanwhile.
    let go = tempfile::tempdir().expect("temp dir");
    let go = go.path().join("go");
    fleet[0].drop_file("chatty.toml", &chatty(&go));
    assert!(fleet[0].wait_for(LONG, |l| support::is(l, "chatty.toml", "run started")), "{}", fleet[0].dump());
    let chatty_run =
        fleet[0].lines().iter().find(|l| support::is(l, "chatty.toml", "run started")).expect("started")["run_id"]
            .as_i64()
            .expect("a run id");
    let before = counts(&fleet);
    cluster.stop();
    let down = Instant::now();
    std::fs::write(&go, "").expect("write the go file");
    for daemon in &fleet {
        daemon.drop_file("during.toml", ONCE);
    }
    for daemon in &fleet {
        assert!(eventually(LONG, || store_degraded(daemon)), "/healthz never said degraded:\n{}", daemon.dump());
    }
    // Said while it happens, not only once the database is back.
    let dropping = |l: &Value| {
        l["message"].as_str().is_some_and(|m| m.contains("step events and log lines are dropped from now on"))
            && l["run_id"] == chatty_run
    };
    assert!(
        fleet[0].wait_for(LONG, dropping),
        "the writes dropped were not logged as it happened:\n{}",
        fleet[0].dump()
    );
    assert!(store_degraded(&fleet[0]), "the database came back too early for this test");
    std::thread::sleep(Duration::from_secs(5).saturating_sub(down.elapsed()));
    cluster.start_again();
    for daemon in &fleet {
        assert!(eventually(LONG, || healthy(daemon)), "/healthz never said ok again:\n{}", daemon.dump());
    }
    each_makes_progress(&fleet, &before, 20);
    // The same one-shot in every node's folder runs once in the fleet
    // (its claim): the one dropped during the outage once the database is
    // back (its claim was asked again until then), one dropped after too.
    for daemon in &fleet {
        daemon.drop_file("after.toml", ONCE);
        daemon.barrier();
    }
    for job in ["during.toml", "after.toml"] {
        let ran = || {
            cluster.psql("fleet", &format!("SELECT count(*) FROM runs WHERE job = '{job}' AND status = 'succeeded'"))
        };
        assert!(eventually(LONG, || ran() == "1"), "{job} ran {} times in the fleet:\n{}", ran(), fleet[0].dump());
    }

    // What the log said: the outage, and that what was kept got written.
    let mut all_started = BTreeSet::new();
    let mut all_ended = BTreeMap::new();
    for daemon in fleet {
        let (code, lines) = daemon.stop();
        assert_eq!(code, Some(0), "{lines:?}");
        let said = |m: &str| lines.iter().any(|l| l["message"].as_str().is_some_and(|s| s.contains(m)));
        assert!(said("the run history cannot be written"), "the outage was not logged: {lines:?}");
        assert!(said("the run history can be written again"), "the recovery was not logged: {lines:?}");
        let named = lines
            .iter()
            .any(|l| l["dropped_from"].as_str().is_some_and(|runs| runs.contains(&format!("run {chatty_run}: "))));
        assert_eq!(named, lines.iter().any(|l| support::is(l, "chatty.toml", "run started")), "{lines:?}");
        let (started, ended) = logged_runs(&lines);
        assert_eq!(
            started.iter().collect::<Vec<_>>(),
            ended.keys().collect::<Vec<_>>(),
            "every run that started ended (the daemons stopped cleanly)"
        );
        all_started.extend(started);
        all_ended.extend(ended);
    }

    // The database has every run that began, each with its real end, and
    // none still `running` (or `queued`).
    let rows = cluster.psql(
        "fleet",
        "SELECT id || ' ' || status || ' ' || (finished_at IS NOT NULL) FROM runs \
         WHERE job NOT LIKE 'zz-barrier-%' ORDER BY id",
    );
    let recorded: BTreeMap<i64, (String, bool)> = rows
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].parse().expect("an id"), (f[1].to_string(), f[2] == "true"))
        })
        .collect();
    let lost: Vec<_> = all_started.iter().filter(|id| !recorded.contains_key(id)).collect();
    assert!(lost.is_empty(), "runs that began are not in the database: {lost:?}");
    for (id, status) in &all_ended {
        let (row, ended) = &recorded[id];
        assert!(*ended && row == status, "run {id} ended {status} but is recorded {row} (ended: {ended})");
    }
    let unfinished: Vec<_> = recorded.iter().filter(|(_, (s, _))| s == "running" || s == "queued").collect();
    assert!(unfinished.is_empty(), "runs left unfinished: {unfinished:?}");
    assert!(all_started.len() >= NODES * 40, "too few runs for a load: {}", all_started.len());
}

#[test]
fn a_daemon_stopped_while_the_database_is_down_names_the_runs_whose_ends_it_could_not_write() {
    let cluster = Cluster::start();
    let url = cluster.create_db("stop");
    let go = tempfile::tempdir().expect("temp dir");
    let go = go.path().join("go");
    let waits = format!("[[step]]\nname = \"w\"\nshell = \"while [ ! -e {} ]; do sleep 0.05; done\"\n", go.display());
    // A lease of 1 s: the next node takes this one's run over soon after.
    let config_dir = tempfile::tempdir().expect("temp dir");
    let config = config_dir.path().join("config.toml");
    std::fs::write(&config, "lease = \"1s\"\n").expect("write the config");
    let config = config.to_str().expect("a UTF-8 path");
    let daemon = Daemon::start(&[("waits.toml", &waits)], &["--store", &url, "--config", config], &[]);
    assert!(daemon.wait_for(LONG, |l| support::is(l, "waits.toml", "run started")), "{}", daemon.dump());
    let run = daemon.lines().iter().find(|l| support::is(l, "waits.toml", "run started")).expect("started")["run_id"]
        .as_i64()
        .expect("a run id");
    cluster.stop();
    std::fs::write(&go, "").expect("write the go file");
    assert!(daemon.wait_for(LONG, |l| support::finished(l, "waits.toml", "succeeded")), "{}", daemon.dump());
    assert!(eventually(LONG, || store_degraded(&daemon)), "{}", daemon.dump());
    let (_, lines) = daemon.stop();
    let lost = lines
        .iter()
        .find(|l| {
            l["message"].as_str().is_some_and(|m| m.starts_with("stopping with writes the run history could not take"))
        })
        .unwrap_or_else(|| panic!("the lost writes were not logged: {lines:?}"));
    assert_eq!(lost["ends_of_runs"], run.to_string(), "{lost}");
    // What the fleet makes of it: the stopped node could not say it
    // stopped, so the next node takes it over once its lease is past, and
    // the run reads `interrupted`.
    cluster.start_again();
    let again = Daemon::start(&[], &["--store", &url, "--config", config], &[]);
    let status = || cluster.psql("stop", &format!("SELECT status FROM runs WHERE id = {run}"));
    assert!(eventually(LONG, || status() == "interrupted"), "{}: {}", status(), again.dump());
}

#[test]
fn a_daemon_refuses_to_start_on_an_unreachable_database_or_a_newer_schema_saying_why_and_exits_1() {
    let (jobs, state) = (tempfile::tempdir().expect("jobs"), tempfile::tempdir().expect("state"));
    let port = support::closed_port();
    let url = format!("postgres://gatherd:s3cret-pw@127.0.0.1:{port}/history?connect_timeout=5");
    let (code, stderr) = support::refused_start(jobs.path(), state.path(), &["--store", &url]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot open the run history at postgres://gatherd@127.0.0.1:{port}/history: ")),
        "the URL without its password: {stderr}"
    );
    assert!(stderr.contains("Connection refused"), "the server's (here the system's) own words: {stderr}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");

    let cluster = Cluster::shared();
    let wrong = Cluster::fresh_db().replace(support::postgres::PASSWORD, "wrong");
    let (code, stderr) = support::refused_start(jobs.path(), state.path(), &["--store", &wrong]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("password authentication failed for user \"postgres\""), "{stderr}");
    assert!(!stderr.contains(":wrong@"), "{stderr}");

    let url = Cluster::fresh_db();
    let db = url.rsplit('/').next().expect("a database name");
    cluster.psql(
        db,
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
         applied_at TIMESTAMPTZ NOT NULL DEFAULT now()); \
         INSERT INTO schema_version (version, name) VALUES (99, '0099_future.sql')",
    );
    let (code, stderr) = support::refused_start(jobs.path(), state.path(), &["--store", &url]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("schema version 99, newer than this gatherd knows"), "{stderr}");
    assert!(stderr.contains("upgrade gatherd"), "{stderr}");
    assert!(!stderr.contains(support::postgres::PASSWORD), "{stderr}");
    assert!(!state.path().join("gatherd.db").exists(), "no SQLite history made instead");
}

#[test]
fn a_database_address_that_accepts_but_never_answers_is_refused_at_start_within_the_connect_limit() {
    let (jobs, state) = (tempfile::tempdir().expect("jobs"), tempfile::tempdir().expect("state"));
    // A TCP server that takes the connection and never says a word: a
    // wrong port, a proxy with nothing behind it, a half-dead server.
    let silent = support::http_server(support::Reply::Hang);
    let url = format!("postgres://gatherd:s3cret-pw@{silent}/history");
    let began = Instant::now();
    let (code, stderr) = support::refused_start(jobs.path(), state.path(), &["--store", &url]);
    assert_eq!(code, Some(1), "still waiting after 20 s (None) or another exit: {stderr}");
    assert!(began.elapsed() < Duration::from_secs(15), "{:?}", began.elapsed());
    assert!(
        stderr.contains(&format!("cannot open the run history at postgres://gatherd@{silent}/history: ")),
        "{stderr}"
    );
    assert!(stderr.contains("no answer within 10 s"), "{stderr}");
}
