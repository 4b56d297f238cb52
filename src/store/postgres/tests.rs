//! What is PostgreSQL's own: the URL, the migrations' bookkeeping, the
//! messages at open. (The store's behaviour is `store::tests`, on both
//! backends.)

use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::*;
use crate::exec::{NodeKind, RunEvent, Status};
use crate::store::BATCH_EVENTS;

fn start(job: &str) -> RunStart {
    RunStart {
        job: job.into(),
        trigger: RunTrigger::Manual,
        fire_time: Utc::now(),
        content_hash: [1; 32],
        node: "node-a".into(),
        queued: false,
    }
}

/// A run of `n` steps that each start and succeed, then its end.
fn steps_events(n: usize) -> Vec<RunEvent> {
    let mut events = vec![RunEvent::RunStarted { job: "big".into(), started_at: Utc::now() }];
    for i in 0..n {
        let path: crate::exec::NodePath = format!("main/s{i}").into();
        let name: std::sync::Arc<str> = format!("s{i}").into();
        events.push(RunEvent::NodeStarted {
            path: path.clone(),
            name: name.clone(),
            kind: NodeKind::Sleep,
            at: Duration::ZERO,
        });
        events.push(RunEvent::NodeFinished {
            path,
            name,
            kind: NodeKind::Sleep,
            status: Status::Succeeded,
            attempts: 1,
            started: Some(Duration::ZERO),
            at: Duration::from_millis(1),
            output: Some(serde_json::json!(i)),
            error: None,
            truncated: false,
        });
    }
    events.push(RunEvent::RunFinished {
        status: Status::Succeeded,
        result: None,
        error: None,
        duration: Duration::from_millis(2),
    });
    events
}

#[tokio::test]
async fn ten_thousand_steps_are_written_in_few_pipelined_transactions() {
    let store = open_postgres(&Cluster::fresh_db()).await.unwrap();
    let id = store.begin_run(start("big.toml")).await.unwrap();
    let (events, recorder) = (steps_events(10_000), store.recorder());
    let n = events.len() as u64;
    let began = Instant::now();
    for e in events {
        recorder.record(id, e);
    }
    let queued = began.elapsed();
    recorder.flush().await.unwrap();
    let written = began.elapsed();
    let batches = store.batches_written();
    assert_eq!(store.events_written(), n);
    assert!(batches <= 2 * n / BATCH_EVENTS as u64 + 2, "{batches} transactions for {n} events");
    // The figure for ARCHITECTURE.md (run with --nocapture).
    eprintln!("postgres: {n} events queued in {queued:?}, written in {written:?} ({batches} transactions)");
    let detail = store.run(id).await.unwrap().unwrap();
    assert_eq!(detail.steps.len(), 10_000);
    assert_eq!(detail.steps[9_999].output, serde_json::json!(9_999));
    assert_eq!(detail.run.status, RecordedStatus::Finished(Status::Succeeded));
    store.close().await.unwrap();
}

#[tokio::test]
async fn what_runs_record_while_the_database_is_down_is_written_when_it_is_back() {
    let cluster = Cluster::start();
    let store = open_postgres(&cluster.create_db("outage")).await.unwrap();
    let id = store.begin_run(start("a.toml")).await.unwrap();
    let mut health = store.health();
    cluster.stop();
    let recorder = store.recorder();
    for e in steps_events(3) {
        recorder.record(id, e);
    }
    let flushed = recorder.flush().await;
    assert!(matches!(flushed, Err(StoreError::Unwritable(_))), "{flushed:?}");
    let why = health.borrow_and_update().clone().expect("the store says it cannot write");
    assert!(!why.is_empty());
    cluster.start_again();
    tokio::time::timeout(Duration::from_secs(60), health.wait_for(Option::is_none))
        .await
        .expect("well again within a minute (retries back off to 30 s at most)")
        .unwrap();
    let detail = store.run(id).await.unwrap().expect("the run");
    assert_eq!(detail.run.status, RecordedStatus::Finished(Status::Succeeded), "its real end, written late");
    assert_eq!(detail.steps.len(), 3);
    store.close().await.unwrap();
}

#[tokio::test]
async fn migrations_are_recorded_in_schema_version_and_a_newer_schema_is_refused_with_the_way_out() {
    let url = Cluster::fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    open_postgres(&url).await.unwrap().close().await.unwrap();
    open_postgres(&url).await.expect("a second open finds it up to date").close().await.unwrap();
    let applied = Cluster::shared()
        .psql(&db, "SELECT string_agg(version || ' ' || name, ',' ORDER BY version) FROM schema_version");
    assert_eq!(applied, "1 0001_init.sql,2 0002_nodes.sql,3 0003_claims.sql");
    Cluster::shared().psql(&db, "INSERT INTO schema_version (version, name) VALUES (99, '0099_future.sql')");
    let err = open_postgres(&url).await.expect_err("a newer schema is refused").to_string();
    assert!(err.contains("schema version 99, newer than this gatherd knows (3): upgrade gatherd"), "{err}");
}

#[tokio::test]
async fn an_unreachable_database_is_said_with_its_url_and_never_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://gatherd:s3cret-pw@127.0.0.1:{port}/history?connect_timeout=5");
    let err = open_postgres(&url).await.expect_err("nothing listens there").to_string();
    assert!(
        err.starts_with(&format!("cannot open the run history at postgres://gatherd@127.0.0.1:{port}/history: ")),
        "{err}"
    );
    assert!(!err.contains("s3cret-pw"), "{err}");
    let err = open_postgres("mysql://x").await.expect_err("not a PostgreSQL URL").to_string();
    assert!(err.contains("it is not a PostgreSQL URL"), "{err}");
}

#[tokio::test]
async fn a_wrong_password_is_the_servers_own_words() {
    let url = Cluster::fresh_db().replace(super::cluster::PASSWORD, "wrong");
    let err = open_postgres(&url).await.expect_err("refused").to_string();
    assert!(err.contains("password authentication failed for user \"postgres\""), "{err}");
    assert!(!err.contains(":wrong@"), "{err}");
}

#[tokio::test]
async fn a_write_postgresql_refuses_is_lost_alone_and_the_batch_around_it_is_written() {
    let store = open_postgres(&Cluster::fresh_db()).await.unwrap();
    let id = store.begin_run(start("a.toml")).await.unwrap();
    let recorder = store.recorder();
    let events = steps_events(50);
    let (first, rest) = events.split_at(40);
    for e in first {
        recorder.record(id, e.clone());
    }
    // No such run: its step's row breaks the foreign key, in mid-batch.
    recorder.record(id + 1000, events[1].clone());
    for e in rest {
        recorder.record(id, e.clone());
    }
    recorder.flush().await.expect("the batch is written without the refused write");
    assert_eq!(store.health().borrow().clone(), None, "one bad write is not the database's trouble");
    let detail = store.run(id).await.unwrap().expect("the run");
    assert_eq!(detail.steps.len(), 50);
    assert_eq!(detail.run.status, RecordedStatus::Finished(Status::Succeeded));
    assert!(store.run(id + 1000).await.unwrap().is_none());
    store.close().await.unwrap();
}

/// A fire claimed by three nodes at once, 300 times: one winner each time
/// (the claim is insert-if-absent, never taken over), and the figure of a
/// claim's round trip for benches/ (run with --nocapture).
#[tokio::test]
async fn claims_are_won_once_among_nodes_racing_and_answer_fast() {
    let url = Cluster::fresh_db();
    let stores =
        [open_postgres(&url).await.unwrap(), open_postgres(&url).await.unwrap(), open_postgres(&url).await.unwrap()];
    let base = Utc::now().trunc_subsecs(0);
    let mut latencies = Vec::new();
    for i in 0..300 {
        let slot = base + chrono::Duration::seconds(i);
        let claims: Vec<Claim> = (0..3)
            .map(|n| Claim {
                key: ClaimKey::fire("tick.toml", slot),
                node: format!("node{n}"),
                content_hash: [7; 32],
                exclusive: true,
            })
            .collect();
        let (a, b, c) = tokio::join!(
            timed_claim(&stores[0], &claims[0]),
            timed_claim(&stores[1], &claims[1]),
            timed_claim(&stores[2], &claims[2])
        );
        let answers = [a.0, b.0, c.0];
        let won = answers.iter().filter(|a| **a == Claimed::Won).count();
        assert_eq!(won, 1, "slot {i}: {answers:?}");
        assert_eq!(answers.iter().filter(|a| **a == Claimed::Lost).count(), 2, "slot {i}: {answers:?}");
        latencies.extend([a.1, b.1, c.1]);
        // Asked again later, by the winner or not: the claim stands.
        assert_eq!(stores[0].claim_once(&claims[1]).await.unwrap(), Claimed::Lost);
    }
    latencies.sort();
    let (p50, p99) = (latencies[latencies.len() / 2], latencies[latencies.len() * 99 / 100]);
    eprintln!("postgres: claim latency p50 {p50:?}, p99 {p99:?} ({} claims, 3 nodes racing)", latencies.len());
    let db = url.rsplit('/').next().unwrap().to_string();
    let kept = Cluster::shared().psql(&db, "SELECT count(*) FROM claims WHERE content_hash IS NOT NULL");
    assert_eq!(kept, "300", "each claim keeps the version it ran");
    for store in stores {
        store.close().await.unwrap();
    }
}

/// `claim`'s answer and how long it took.
async fn timed_claim(store: &PostgresStore, claim: &Claim) -> (Claimed, Duration) {
    let began = Instant::now();
    let answer = store.claim_once(claim).await.unwrap();
    (answer, began.elapsed())
}

/// A claim is `Busy` (won, not run) while a run of the job goes on on
/// another node, unless the job allows overlap.
#[tokio::test]
async fn a_claim_of_a_job_running_on_another_node_is_busy_unless_it_allows_overlap() {
    let store = open_postgres(&Cluster::fresh_db()).await.unwrap();
    let _running = store.begin_run(RunStart { trigger: RunTrigger::Interval, ..start("slow.toml") }).await.unwrap();
    let claim = |slot: i64, node: &str, exclusive: bool| Claim {
        key: ClaimKey::fire("slow.toml", Utc::now() + chrono::Duration::seconds(slot)),
        node: node.into(),
        content_hash: [1; 32],
        exclusive,
    };
    assert_eq!(store.claim_once(&claim(1, "node-b", true)).await.unwrap(), Claimed::Busy { node: "node-a".into() });
    assert_eq!(store.claim_once(&claim(2, "node-b", false)).await.unwrap(), Claimed::Won, "allow");
    assert_eq!(
        store.claim_once(&claim(3, "node-a", true)).await.unwrap(),
        Claimed::Won,
        "its own run is the local overlap's"
    );
    store.close().await.unwrap();
}

/// Two nodes recording the same missed fires (a fleet starting after an
/// outage): one `missed` row per fire.
#[tokio::test]
async fn missed_fires_recorded_by_two_nodes_are_recorded_once() {
    let url = Cluster::fresh_db();
    let (a, b) = (open_postgres(&url).await.unwrap(), open_postgres(&url).await.unwrap());
    let base = Utc::now().trunc_subsecs(0) - chrono::Duration::hours(1);
    let fires: Vec<_> = (0..5).map(|i| base + chrono::Duration::minutes(i)).collect();
    let missed = |node: &str, fires: Vec<DateTime<Utc>>| Missed {
        job: "tick.toml".into(),
        trigger: RunTrigger::Interval,
        fire_times: fires,
        content_hash: [1; 32],
        node: node.into(),
    };
    let (x, y) = tokio::join!(
        a.record_missed(missed("node-a", fires.clone())),
        b.record_missed(missed("node-b", fires[2..].to_vec()))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x + y, 5, "each says what it recorded: {x} + {y}");
    let db = url.rsplit('/').next().unwrap().to_string();
    let rows =
        Cluster::shared().psql(&db, "SELECT count(*), count(DISTINCT fire_time) FROM runs WHERE status = 'missed'");
    assert_eq!(rows, "5|5");
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// A semaphore of 2 has two holders at most in the fleet; a slot given
/// back (or all of a node's, at its takeover) is taken again.
#[tokio::test]
async fn a_semaphores_slots_are_held_once_in_the_fleet_and_freed_with_their_node() {
    let url = Cluster::fresh_db();
    let (a, b) = (open_postgres(&url).await.unwrap(), open_postgres(&url).await.unwrap());
    let first = a.acquire_semaphore("db", 2, "node-a").await.unwrap().expect("free");
    let second = b.acquire_semaphore("db", 2, "node-b").await.unwrap().expect("free");
    assert_ne!(first, second);
    assert_eq!(b.acquire_semaphore("db", 2, "node-b").await.unwrap(), None, "both held");
    assert_eq!(a.acquire_semaphore("other", 1, "node-a").await.unwrap(), Some(0), "another semaphore is its own");
    b.release_semaphore("db", first, "node-b").await.unwrap();
    assert_eq!(b.acquire_semaphore("db", 2, "node-b").await.unwrap(), None, "not node-b's to give back");
    a.release_semaphore("db", first, "node-a").await.unwrap();
    assert_eq!(b.acquire_semaphore("db", 2, "node-b").await.unwrap(), Some(first));
    // node-b is taken over: what it held is free.
    let freed = claims::release_node(&**b.client().await.unwrap(), "node-b").await.unwrap();
    assert_eq!(freed, 2);
    assert!(a.acquire_semaphore("db", 2, "node-a").await.unwrap().is_some());
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Retention once: a node pruning a job leaves it to another node pruning
/// that job at that moment (the per-job advisory lock), and nodes pruning
/// together neither fail nor delete more than the retention asks.
#[tokio::test]
async fn nodes_pruning_one_job_at_once_do_not_fight() {
    let url = Cluster::fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    let (a, b) = (open_postgres(&url).await.unwrap(), open_postgres(&url).await.unwrap());
    Cluster::shared().psql(
        &db,
        "INSERT INTO runs (job, trigger, fire_time, content_hash, node, status, started_at, finished_at) \
         SELECT 'a.toml', 'interval', now() - i * interval '1 second', '\\x01', 'node-a', 'succeeded', now(), now() \
         FROM generate_series(1, 2000) AS i",
    );
    Cluster::shared().psql(
        &db,
        "INSERT INTO claims (job, slot, node, claimed_at, lease_until) VALUES \
         ('a.toml', 'fire:old', 'node-a', now() - interval '25 hours', 'infinity'), \
         ('a.toml', 'fire:new', 'node-a', now(), 'infinity')",
    );
    // Another node prunes a.toml right now: this one leaves it to it.
    let mut other = schema::Target::parse(&url).unwrap().connect().await.unwrap();
    let tx = other.transaction().await.unwrap();
    tx.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&PRUNE_LOCK, &"a.toml"]).await.unwrap();
    assert_eq!(a.prune("a.toml", Some(10), None).await.unwrap(), 0, "left to the node pruning it");
    tx.commit().await.unwrap();
    let (x, y) = tokio::join!(a.prune("a.toml", Some(10), None), b.prune("a.toml", Some(10), None));
    let (x, y) = (x.unwrap(), y.unwrap());
    // Whoever came second found nothing left to do, or it was left to the first.
    assert_eq!(x + y, 1990, "{x} + {y}");
    assert_eq!(Cluster::shared().psql(&db, "SELECT count(*) FROM runs WHERE job = 'a.toml'"), "10");
    let claims = Cluster::shared().psql(&db, "SELECT string_agg(slot, ',') FROM claims WHERE job = 'a.toml'");
    assert_eq!(claims, "fire:new", "claims older than a day go with the job's retention");
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// `openssl` with `args` in `dir`; panics with its stderr.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA `NAME.crt`/`NAME.key` (self-signed, EC P-256) in `dir`.
fn make_ca(dir: &std::path::Path, name: &str) {
    let (key, crt, subj) = (format!("{name}.key"), format!("{name}.crt"), format!("/CN=gatherd test CA {name}"));
    openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key]);
    openssl(dir, &["req", "-x509", "-new", "-key", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
}

/// Whether the connection behind `client` is TLS (the server's view).
async fn on_tls(client: &tokio_postgres::Client) -> bool {
    client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn tls_follows_sslmode_verify_full_passes_with_the_test_ca_and_a_wrong_ca_or_name_fails_saying_why() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    make_ca(dir, "ca");
    make_ca(dir, "other");
    // The server's certificate, for the name `localhost` only.
    openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "server.key"]);
    openssl(dir, &["req", "-new", "-key", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
    std::fs::write(dir.join("ext"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    let cluster = Cluster::start();
    cluster.create_db("tls");
    cluster.enable_tls(&dir.join("server.crt"), &dir.join("server.key"));
    let (ca, other) = (dir.join("ca.crt"), dir.join("other.crt"));
    let url = |host: &str, query: &str| {
        format!("postgres://postgres:{}@{host}:{}/tls?{query}", super::cluster::PASSWORD, cluster.port())
    };
    let connect = |url: String| async move { Target::parse(&url)?.connect().await };

    // verify-full with the test CA and the certificate's name: TLS, checked.
    let full = url("localhost", &format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    assert!(on_tls(&connect(full.clone()).await.unwrap()).await);
    // The whole store over it: migrations, the writer, the pool.
    let store = open_postgres(&full).await.unwrap();
    let id = store.begin_run(start("tls.toml")).await.unwrap();
    assert!(store.run(id).await.unwrap().is_some());
    store.close().await.unwrap();
    // verify-ca checks the CA, not the name; verify-full checks the name.
    assert!(
        on_tls(&connect(url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={}", ca.display()))).await.unwrap())
            .await
    );
    let err = connect(url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={}", ca.display())))
        .await
        .expect_err("the certificate does not name 127.0.0.1")
        .to_string();
    assert!(err.contains("TLS handshake") && err.contains("certificate not valid for name \"127.0.0.1\""), "{err}");
    assert!(err.contains("verify-full: the certificate must be signed by"), "{err}");
    // A wrong CA fails, saying which file was trusted.
    let err = connect(url("localhost", &format!("sslmode=verify-full&sslrootcert={}", other.display())))
        .await
        .expect_err("not signed by that CA")
        .to_string();
    assert!(err.contains("TLS handshake") && err.contains("invalid peer certificate"), "{err}");
    eprintln!("a wrong CA reads: {err}");
    assert!(err.contains(&format!("the CA in sslrootcert={}", other.display())), "{err}");
    assert!(!err.contains(super::cluster::PASSWORD), "{err}");
    // require: TLS, the certificate unchecked; prefer (the default): TLS
    // when offered; disable: in clear.
    assert!(on_tls(&connect(url("127.0.0.1", "sslmode=require")).await.unwrap()).await);
    assert!(on_tls(&connect(url("127.0.0.1", "application_name=x")).await.unwrap()).await);
    assert!(!on_tls(&connect(url("127.0.0.1", "sslmode=disable")).await.unwrap()).await);
}

#[tokio::test]
async fn sslmode_require_against_a_server_without_tls_is_refused_in_the_servers_terms() {
    let err = open_postgres(&format!("{}?sslmode=require", Cluster::fresh_db())).await.expect_err("no TLS there");
    let err = err.to_string();
    assert!(err.contains("server does not support TLS"), "{err}");
    // And prefer (the default) falls back to clear there.
    let store = open_postgres(&Cluster::fresh_db()).await.expect("prefer connects in clear");
    store.close().await.unwrap();
}
