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
    let applied = Cluster::shared().psql(&db, "SELECT string_agg(version || ' ' || name, ',') FROM schema_version");
    assert_eq!(applied, "1 0001_init.sql,2 0002_nodes.sql");
    Cluster::shared().psql(&db, "INSERT INTO schema_version (version, name) VALUES (99, '0099_future.sql')");
    let err = open_postgres(&url).await.expect_err("a newer schema is refused").to_string();
    assert!(err.contains("schema version 99, newer than this gatherd knows (2): upgrade gatherd"), "{err}");
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
    let err =
        open_postgres(&format!("{}?sslmode=require", Cluster::fresh_db())).await.expect_err("no TLS yet").to_string();
    assert!(err.contains("does not speak TLS to PostgreSQL yet"), "{err}");
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
