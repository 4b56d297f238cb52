//! Nodes, leases and takeover end to end: real daemons on one throwaway
//! PostgreSQL (`support::postgres::Cluster`, one per test process, a
//! database per test), each on its own jobs and state folders.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use support::postgres::Cluster;
use support::{Daemon, http};

/// The database name of a URL from `Cluster::fresh_db`.
fn db_of(url: &str) -> &str {
    url.rsplit('/').next().expect("a database in the URL")
}

/// A config file setting `lease`, in a temp folder kept alive by the caller.
fn config_with_lease(lease: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("config dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("lease = \"{lease}\"\n")).expect("write config");
    let path = path.to_str().expect("utf-8 path").to_string();
    (dir, path)
}

/// The node id a daemon joined the fleet under (its log's "joined the fleet").
fn joined_as(daemon: &Daemon) -> String {
    daemon
        .lines()
        .iter()
        .find(|l| l["message"] == "joined the fleet")
        .and_then(|l| l["node"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("never joined: {}", daemon.dump()))
}

/// `GET /nodes` of a daemon.
fn nodes_of(daemon: &Daemon) -> Vec<Value> {
    let (status, body) = http(daemon.api(), "GET", "/nodes", &[], "");
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("JSON");
    doc["nodes"].as_array().expect("a list of nodes").clone()
}

fn is_node_id(id: &str) -> bool {
    id.rsplit_once('-').is_some_and(|(label, hex)| {
        !label.is_empty() && hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[test]
fn two_daemons_on_one_host_are_two_nodes_with_their_own_ids_on_their_runs() {
    let url = Cluster::fresh_db();
    let db = db_of(&url).to_string();
    let hello = "[[step]]\nname = \"greet\"\nshell = \"echo hi\"\n";
    // One job deployed in two versions (it never fires: a yearly schedule).
    let skewed = |step: &str| format!("schedule = \"0 0 1 1 *\"\n[[step]]\nname = \"{step}\"\nsleep = \"1s\"\n");
    let (v1, v2) = (skewed("old"), skewed("new"));
    let a = Daemon::start(&[("a.toml", hello), ("skewed.toml", &v1)], &["--store", &url], &[]);
    let b = Daemon::start(&[("b.toml", hello), ("skewed.toml", &v2)], &["--store", &url], &[]);
    for (daemon, job) in [(&a, "a.toml"), (&b, "b.toml")] {
        assert!(
            daemon.wait_for(Duration::from_secs(30), |l| support::finished(l, job, "succeeded")),
            "{}",
            daemon.dump()
        );
    }
    let cluster = Cluster::shared();
    let distinct = cluster.psql(&db, "SELECT count(DISTINCT node) FROM runs WHERE job IN ('a.toml', 'b.toml')");
    assert_eq!(
        distinct,
        "2",
        "two daemons on one host recorded one node: {}",
        cluster.psql(&db, "SELECT string_agg(node, ',') FROM runs")
    );
    let (id_a, id_b) = (joined_as(&a), joined_as(&b));
    assert_ne!(id_a, id_b, "one host, two daemons: two nodes");
    assert!(is_node_id(&id_a) && is_node_id(&id_b), "{id_a} {id_b}");
    let recorded = cluster.psql(
        &db,
        "SELECT string_agg(job || '=' || node, ',' ORDER BY job) FROM runs WHERE job IN ('a.toml', 'b.toml')",
    );
    assert_eq!(recorded, format!("a.toml={id_a},b.toml={id_b}"));
    // Both are alive in the fleet's table, one label (the host's), this version.
    let nodes = nodes_of(&a);
    let alive: Vec<&str> = nodes.iter().filter(|n| n["state"] == "alive").filter_map(|n| n["id"].as_str()).collect();
    assert!(alive.contains(&id_a.as_str()) && alive.contains(&id_b.as_str()), "{nodes:?}");
    assert_eq!(nodes[0]["label"], nodes[1]["label"], "{nodes:?}");
    assert_eq!(nodes[0]["version"], env!("CARGO_PKG_VERSION"));
    // `gatherd nodes`: through a daemon's socket (a table), and from the
    // database with no daemon (`--store`, JSON as `GET /nodes`).
    let table = support::gatherd().args(["nodes", "--state"]).arg(a.state.path()).output().expect("gatherd nodes");
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.starts_with("NODE") && table.contains(&id_a) && table.contains(&id_b), "{table}");
    let out =
        support::gatherd().args(["nodes", "--json", "--store", &url]).env_remove("GATHERD_STORE").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ids: Vec<&str> = doc["nodes"].as_array().into_iter().flatten().filter_map(|n| n["id"].as_str()).collect();
    assert!(ids.contains(&id_a.as_str()) && ids.contains(&id_b.as_str()), "{doc}");
    // Version skew: each node logs it once (job, both nodes, both hashes
    // short); `GET /jobs` names the other node; `gatherd nodes` counts it.
    for (daemon, other) in [(&a, &id_b), (&b, &id_a)] {
        let skew = |l: &Value| {
            l["message"] == "version skew: another live node has another version of this job file"
                && l["job"] == "skewed.toml"
                && l["other_node"] == other.as_str()
                && l["ours"].as_str().is_some_and(|h| h.len() == 8)
                && l["theirs"].as_str().is_some_and(|h| h.len() == 8)
        };
        assert!(daemon.wait_for(Duration::from_secs(20), skew), "{}", daemon.dump());
        let (_, jobs) = http(daemon.api(), "GET", "/jobs/skewed.toml", &[], "");
        let jobs: Value = serde_json::from_str(&jobs).expect("JSON");
        assert_eq!(jobs["skew"], serde_json::json!([other]), "{jobs}");
        let (_, jobs) = http(daemon.api(), "GET", "/jobs/a.toml", &[], "");
        assert!(!jobs.contains("\"skew\""), "no skew, no key: {jobs}");
    }
    let skewed_jobs = cluster.psql(&db, "SELECT count(*) FROM node_jobs WHERE job = 'skewed.toml'");
    assert_eq!(skewed_jobs, "2");
    let nodes = nodes_of(&b);
    assert!(nodes.iter().filter(|n| n["state"] == "alive").all(|n| n["skewed_jobs"] == 1), "{nodes:?}");
    // A clean stop marks the node stopped (nobody takes it over).
    let (code, _) = a.stop();
    assert_eq!(code, Some(0));
    let state = cluster.psql(&db, &format!("SELECT state FROM nodes WHERE id = '{id_a}'"));
    assert_eq!(state, "stopped");
    drop(b);
}

#[test]
fn a_single_node_answers_get_nodes_from_memory_and_recovers_every_run_its_folder_left() {
    let daemon = Daemon::start(&[], &[], &[]);
    let nodes = nodes_of(&daemon);
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["state"], "alive");
    assert!(is_node_id(nodes[0]["id"].as_str().unwrap_or("")), "{nodes:?}");
    assert_eq!(nodes[0]["version"], env!("CARGO_PKG_VERSION"));
}

/// Triggers `job` on `daemon` and returns the run's id.
fn trigger(daemon: &Daemon, job: &str) -> i64 {
    let (status, body) = http(daemon.api(), "POST", &format!("/jobs/{job}/trigger"), &[], "");
    assert_eq!(status, 201, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("JSON");
    doc["run_id"].as_i64().expect("a run id")
}

/// Polls `sql` (one value) until it equals `want`, up to `limit`; returns
/// how long it took.
fn until(db: &str, sql: &str, want: &str, limit: Duration) -> Duration {
    let began = Instant::now();
    loop {
        let got = Cluster::shared().psql(db, sql);
        if got == want {
            return began.elapsed();
        }
        assert!(began.elapsed() < limit, "{sql}: still {got:?} after {limit:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_node_is_taken_over_within_two_leases_and_a_paused_one_comes_back_under_a_new_id_without_overwriting() {
    let url = Cluster::fresh_db();
    let db = db_of(&url).to_string();
    let (_config_dir, config) = config_with_lease("1s");
    let lease = Duration::from_secs(1);
    // The same jobs on every node (deployed alike); they fire only when
    // triggered (a yearly schedule), so no claims are needed.
    let yearly = "schedule = \"0 0 1 1 *\"\n";
    let rerun = format!("{yearly}on_node_loss = \"rerun\"\n[[step]]\nname = \"long\"\nsleep = \"60s\"\n");
    let record = format!("{yearly}[[step]]\nname = \"short\"\nsleep = \"2s\"\n");
    let files = [("rerun.toml", rerun.as_str()), ("record.toml", record.as_str())];
    let args = ["--store", url.as_str(), "--config", config.as_str()];
    let a = Daemon::start(&files, &args, &[]);
    let b = Daemon::start(&files, &args, &[]);
    let c = Daemon::start(&files, &args, &[]);
    let ids = [joined_as(&a), joined_as(&b), joined_as(&c)];

    // kill -9 of a node mid-run.
    let on_a = [trigger(&a, "rerun.toml"), trigger(&a, "record.toml")];
    until(&db, "SELECT count(*) FROM runs WHERE status = 'running'", "2", Duration::from_secs(20));
    let killed = Instant::now();
    drop(a.end_with(Signal::SIGKILL));
    let sql = format!("SELECT count(*) FROM runs WHERE id IN ({}, {}) AND status = 'interrupted'", on_a[0], on_a[1]);
    until(&db, &sql, "2", Duration::from_secs(20));
    let took = killed.elapsed();
    // The figure for README (run with --nocapture).
    eprintln!("fleet: runs of a node killed with -9 interrupted {took:?} after the kill (lease {lease:?})");
    assert!(took <= 2 * lease, "interrupted {took:?} after the kill, lease {lease:?}");
    let error = Cluster::shared().psql(&db, &format!("SELECT error FROM runs WHERE id = {}", on_a[0]));
    assert!(error.starts_with(&format!("node {} stopped heartbeating (last ", ids[0])), "{error}");
    assert!(error.contains("taken over by "), "{error}");
    assert_eq!(Cluster::shared().psql(&db, &format!("SELECT state FROM nodes WHERE id = '{}'", ids[0])), "dead");
    // `rerun` runs again on the node that took it over; `record` does not.
    until(
        &db,
        "SELECT count(*) FROM runs WHERE job = 'rerun.toml' AND status = 'running' AND trigger = 'manual'",
        "1",
        Duration::from_secs(20),
    );
    let rerun_on = Cluster::shared().psql(&db, "SELECT node FROM runs WHERE job = 'rerun.toml' AND status = 'running'");
    assert!(error.ends_with(&format!("taken over by {rerun_on}")), "{error} / rerun on {rerun_on}");
    assert_eq!(Cluster::shared().psql(&db, "SELECT count(*) FROM runs WHERE job = 'record.toml'"), "1");

    // SIGSTOP of the node running the rerun, for 3 leases, with a short run
    // of its own that ends while it is stopped.
    let (paused, other) = if rerun_on == ids[1] { (b, c) } else { (c, b) };
    let paused_old = rerun_on.clone();
    let short = trigger(&paused, "record.toml");
    until(&db, &format!("SELECT status FROM runs WHERE id = {short}"), "running", Duration::from_secs(20));
    let stale = Cluster::shared()
        .psql(&db, &format!("SELECT string_agg(id::text, ',' ORDER BY id) FROM runs WHERE node = '{paused_old}'"));
    paused.signal(Signal::SIGSTOP);
    std::thread::sleep(3 * lease);
    // Taken over meanwhile by the other node, which reruns `rerun.toml`.
    let sql = format!("SELECT count(*) FROM runs WHERE node = '{paused_old}' AND status <> 'interrupted'");
    until(&db, &sql, "0", Duration::from_secs(20));
    paused.signal(Signal::SIGCONT);
    assert!(
        paused.wait_for(Duration::from_secs(20), |l| l["message"]
            == "rejoined the fleet under a new id; the old id's runs are cancelled"),
        "{}",
        paused.dump()
    );
    let rejoined = paused
        .lines()
        .iter()
        .find(|l| l["old_node"] == paused_old.as_str())
        .and_then(|l| l["node"].as_str().map(str::to_string));
    let new_id = rejoined.unwrap_or_else(|| panic!("no new id: {}", paused.dump()));
    assert_ne!(new_id, paused_old);
    let nodes = nodes_of(&paused);
    let state_of = |id: &str| nodes.iter().find(|n| n["id"] == id).map(|n| n["state"].clone());
    assert_eq!(state_of(&new_id), Some(Value::from("alive")), "{nodes:?}");
    assert_eq!(state_of(&paused_old), Some(Value::from("dead")), "{nodes:?}");
    // The paused node's runs ended on it (the short one succeeded, the long
    // one was cancelled); a clean stop writes all it recorded: none of it
    // lands over the takeover.
    assert!(
        paused.wait_for(Duration::from_secs(20), |l| support::finished(l, "record.toml", "succeeded")
            || support::finished(l, "record.toml", "cancelled")),
        "{}",
        paused.dump()
    );
    let (code, _) = paused.stop();
    assert_eq!(code, Some(0));
    let after = Cluster::shared().psql(
        &db,
        &format!(
            "SELECT string_agg(id::text || ':' || status || ':' || (error LIKE 'node {paused_old} stopped heartbeating%')::text, ',' ORDER BY id) \
             FROM runs WHERE node = '{paused_old}'"
        ),
    );
    let want: Vec<String> = stale.split(',').map(|id| format!("{id}:interrupted:true")).collect();
    assert_eq!(after, want.join(","), "the takeover's rows stay");
    // The rerun of the rerun: on the node left (under its first id, or a
    // new one had it lost a heartbeat on this loaded box).
    let other_ids = format!(
        "SELECT id FROM nodes WHERE label = '{}' AND id <> '{paused_old}' AND id <> '{new_id}' AND id <> '{}'",
        joined_as(&other).rsplit_once('-').map_or("", |(l, _)| l),
        ids[0]
    );
    let sql =
        format!("SELECT count(*) FROM runs WHERE job = 'rerun.toml' AND status = 'running' AND node IN ({other_ids})");
    let rerun_again = support::eventually(Duration::from_secs(20), || Cluster::shared().psql(&db, &sql) == "1");
    assert!(
        rerun_again,
        "no rerun on the node left: {}\nnodes: {}\n{}",
        Cluster::shared().psql(&db, "SELECT string_agg(id || ' ' || job || ' ' || node || ' ' || status || ' ' || coalesce(error, ''), E'\n' ORDER BY id) FROM runs"),
        Cluster::shared().psql(&db, "SELECT string_agg(id || ' ' || state || ' ' || coalesce(taken_over_by, ''), E'\n') FROM nodes"),
        other.dump()
    );
    drop(other);
}

/// A pause holds fleet-wide: `gatherd pause` on one node pauses the job on
/// every node (within lease/3: each heartbeat reads the fleet's pauses),
/// whose fires are then recorded `missed`, not run; a resume on another
/// node resumes it everywhere.
#[test]
fn a_pause_on_one_node_holds_on_every_node_and_a_resume_on_another_ends_it() {
    let url = Cluster::fresh_db();
    let db = db_of(&url).to_string();
    let (_dir, config) = config_with_lease("1s");
    let tick = "every = \"1s\"\noverlap = \"allow\"\n[[step]]\nname = \"t\"\nsleep = \"10ms\"\n";
    let args = ["--store", url.as_str(), "--config", config.as_str()];
    let a = Daemon::start(&[("tick.toml", tick)], &args, &[]);
    let b = Daemon::start(&[("tick.toml", tick)], &args, &[]);
    let cluster = Cluster::shared();
    let runs = |status: &str| {
        cluster.psql(&db, &format!("SELECT count(*) FROM runs WHERE job = 'tick.toml' AND status = '{status}'"))
    };
    let until = |what: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(30);
        while !what() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
        }
        what()
    };
    assert!(until(&|| runs("succeeded") != "0"), "{}", a.dump());

    let (status, body) = http(a.api(), "POST", "/jobs/tick.toml/pause", &[], "");
    assert_eq!(status, 200, "{body}");
    let paused_by_fleet = |l: &Value| {
        support::is(
            l,
            "tick.toml",
            "paused: its fires are recorded missed and its file's new versions wait until it is resumed; runs in flight go on",
        ) && l["by"] == "the fleet's history"
    };
    assert!(b.wait_for(Duration::from_secs(10), paused_by_fleet), "node b never heard of the pause: {}", b.dump());
    // From now on no node runs it: its fires are recorded missed.
    let succeeded = runs("succeeded");
    let missed = runs("missed");
    assert!(
        until(&|| runs("missed").parse::<u32>().unwrap_or(0) >= missed.parse::<u32>().unwrap_or(0) + 3),
        "{}",
        b.dump()
    );
    assert_eq!(runs("succeeded"), succeeded, "a paused job ran on a node: {}", b.dump());

    let (status, body) = http(b.api(), "POST", "/jobs/tick.toml/resume", &[], "");
    assert_eq!(status, 200, "{body}");
    let resumed_by_fleet = |l: &Value| support::is(l, "tick.toml", "resumed") && l["by"] == "the fleet's history";
    assert!(a.wait_for(Duration::from_secs(10), resumed_by_fleet), "node a never heard of the resume: {}", a.dump());
    assert!(until(&|| runs("succeeded") != succeeded), "not run again after the resume: {}", a.dump());
}

/// `gatherd_last_success_timestamp_seconds` on any node follows the fleet:
/// a success on one node shows on another's /metrics (read from the
/// history every 12 heartbeats: 4 s with a 1 s lease).
#[test]
fn a_success_on_one_node_shows_in_the_last_success_metric_of_another() {
    let url = Cluster::fresh_db();
    let (_dir, config) = config_with_lease("1s");
    let args = ["--store", url.as_str(), "--config", config.as_str()];
    let hello = "schedule = \"0 0 1 1 *\"\n[[step]]\nname = \"greet\"\nshell = \"echo hi\"\n";
    let a = Daemon::start(&[("only-on-a.toml", hello)], &args, &[]);
    let b = Daemon::start(&[], &args, &[]);
    let (status, body) = http(a.api(), "POST", "/jobs/only-on-a.toml/trigger", &[], "");
    assert_eq!(status, 201, "{body}");
    assert!(
        a.wait_for(Duration::from_secs(30), |l| support::finished(l, "only-on-a.toml", "succeeded")),
        "{}",
        a.dump()
    );
    let metric = "gatherd_last_success_timestamp_seconds{job=\"only-on-a.toml\"}";
    let end = Instant::now() + Duration::from_secs(20);
    let mut metrics = String::new();
    while Instant::now() < end {
        metrics = http(b.api(), "GET", "/metrics", &[], "").1;
        if metrics.contains(metric) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(metrics.contains(metric), "node b's /metrics never showed node a's success:\n{metrics}");
}
