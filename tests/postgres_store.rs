//! The PostgreSQL run store end to end, on a throwaway cluster the test
//! starts itself (`support::postgres::Cluster`): never skipped.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use support::postgres::Cluster;

#[test]
fn the_throwaway_cluster_serves_postgresql_15_on_loopback_and_is_gone_when_dropped() {
    let cluster = Cluster::start();
    let version = cluster.psql("postgres", "SHOW server_version_num");
    assert!(version.starts_with("15"), "server_version_num {version}");
    assert_eq!(cluster.psql("postgres", "SHOW listen_addresses"), "127.0.0.1");
    let url = cluster.create_db("probe");
    assert!(url.starts_with("postgres://postgres:") && url.ends_with("/probe"), "{url}");
    let (port, data) = (cluster.port(), cluster.data());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok(), "nothing listens on 127.0.0.1:{port}");
    drop(cluster);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "the cluster still listens after the drop");
    assert!(!data.exists(), "{} is left behind", data.display());
}

/// `gatherd` with `args`, its stdout as JSON (exit 0 asserted).
fn json_of(args: &[&str]) -> serde_json::Value {
    let out = support::gatherd()
        .args(args)
        .env_remove("GATHERD_STATE")
        .env_remove("GATHERD_STORE")
        .output()
        .expect("gatherd runs");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn a_daemon_records_into_postgresql_and_runs_show_and_logs_read_it_back_without_a_daemon() {
    let cluster = Cluster::start();
    let url = cluster.create_db("fleet");
    let hello = "[[step]]\nname = \"greet\"\nshell = \"echo hi from postgres\"\n";
    let daemon = support::Daemon::start(&[("hello.toml", hello)], &["--store", &url], &[]);
    assert!(
        daemon.wait_for(Duration::from_secs(30), |l| support::finished(l, "hello.toml", "succeeded")),
        "{}",
        daemon.dump()
    );
    let (code, _) = daemon.stop();
    assert_eq!(code, Some(0));

    // No daemon now: the history is read from the database itself.
    let runs = json_of(&["runs", "--store", &url, "--job", "hello.toml", "--json"]);
    let runs = runs.as_array().expect("a list of runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!((runs[0]["status"].as_str(), runs[0]["trigger"].as_str()), (Some("succeeded"), Some("file")));
    let id = runs[0]["id"].as_i64().expect("an id").to_string();
    let shown = json_of(&["show", &id, "--store", &url, "--json"]);
    assert_eq!(shown["steps"][1]["name"], "greet", "{shown:#}");
    assert_eq!(shown["steps"][1]["output"], "hi from postgres", "{shown:#}");
    let logs = support::gatherd().args(["logs", &id, "--store", &url]).output().unwrap();
    assert!(String::from_utf8_lossy(&logs.stdout).contains("hi from postgres"), "{logs:?}");
    // The history went to PostgreSQL only.
    let rows = cluster.psql("fleet", "SELECT count(*) FROM runs WHERE job = 'hello.toml' AND status = 'succeeded'");
    assert_eq!(rows, "1");

    // GATHERD_STORE does the same as --store, and a restarted daemon on the
    // same database does not run the one-shot it recorded again.
    let again = support::Daemon::start(&[("hello.toml", hello)], &[], &[("GATHERD_STORE", url.as_str())]);
    again.barrier();
    assert_eq!(again.count(|l| support::is(l, "hello.toml", "run started")), 0, "{}", again.dump());
    assert!(!again.state.path().join("gatherd.db").exists(), "no SQLite history beside the PostgreSQL one");
    let (code, _) = again.stop();
    assert_eq!(code, Some(0));
    assert_eq!(cluster.psql("fleet", "SELECT count(*) FROM runs WHERE job = 'hello.toml'"), "1");

    let bad = support::gatherd().args(["runs", "--store", "mysql://x/y"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("the store `mysql` is not known"), "{bad:?}");
}
