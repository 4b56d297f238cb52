//! The `nodes` table, the takeover and the writer's fencing, on a real
//! PostgreSQL (the shared throwaway cluster).

use std::time::Duration;

use chrono::Utc;

use super::super::cluster::Cluster;
use crate::exec::{NodeKind, RecordedStatus, RunEvent, Status};
use crate::store::{NodeRow, NodeState, RunStart, RunStore, RunTrigger, open_postgres};

fn node(id: &str, lease: Duration) -> NodeRow {
    NodeRow {
        id: id.into(),
        label: id.split('-').next().unwrap_or(id).into(),
        version: "test".into(),
        started_at: Utc::now(),
        heartbeat_at: Utc::now(),
        runs_in_flight: 0,
        state: NodeState::Alive,
        lease_ms: lease.as_millis() as u64,
        taken_over_by: None,
        skewed_jobs: 0,
    }
}

fn start(job: &str, node: &str) -> RunStart {
    RunStart {
        job: job.into(),
        trigger: RunTrigger::Manual,
        fire_time: Utc::now(),
        content_hash: [1; 32],
        node: node.into(),
        queued: false,
    }
}

fn step_started(name: &str) -> RunEvent {
    RunEvent::NodeStarted {
        path: format!("main/{name}").into(),
        name: name.into(),
        kind: NodeKind::Sleep,
        at: Duration::ZERO,
    }
}

#[tokio::test]
async fn a_node_past_its_lease_is_taken_over_once_and_its_heartbeat_then_says_it_is_dead() {
    let store = open_postgres(&Cluster::fresh_db()).await.unwrap();
    let lease = Duration::from_millis(300);
    store.register_node(&node("web1-00000001", lease)).await.unwrap();
    store.register_node(&node("web2-00000002", Duration::from_secs(60))).await.unwrap();
    store.register_node(&node("web3-00000003", Duration::from_secs(60))).await.unwrap();
    let lost = store.begin_run(start("a.toml", "web1-00000001")).await.unwrap();
    let kept = store.begin_run(start("b.toml", "web2-00000002")).await.unwrap();
    // web1 holds the one slot of a fleet-wide semaphore.
    assert_eq!(store.acquire_semaphore("db", 1, "web1-00000001").await.unwrap(), Some(0));
    assert_eq!(store.acquire_semaphore("db", 1, "web2-00000002").await.unwrap(), None, "held by web1");
    store.recorder().record(lost, step_started("x"));
    store.recorder().flush().await.unwrap();
    assert!(store.take_over("web2-00000002").await.unwrap().is_empty(), "web1 is within its lease");
    assert!(store.heartbeat("web1-00000001", 1).await.unwrap());

    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    // Two nodes take over at once: one of them gets web1 and its run.
    let (a, b) = tokio::join!(store.take_over("web2-00000002"), store.take_over("web3-00000003"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 1, "{a:?} {b:?}");
    let (taker, taken) = if a.is_empty() { ("web3-00000003", &b[0]) } else { ("web2-00000002", &a[0]) };
    assert_eq!(taken.node, "web1-00000001");
    assert_eq!(taken.runs.iter().map(|r| r.id).collect::<Vec<_>>(), [lost]);
    let error = taken.runs[0].error.clone().unwrap();
    assert!(error.starts_with("node web1-00000001 stopped heartbeating (last "), "{error}");
    assert!(error.ends_with(&format!("UTC); taken over by {taker}")), "{error}");

    let detail = store.run(lost).await.unwrap().unwrap();
    assert_eq!((detail.run.status, detail.run.error.as_deref()), (RecordedStatus::Interrupted, Some(&*error)));
    assert_eq!(detail.steps[0].status, RecordedStatus::Interrupted);
    assert_eq!(store.run(kept).await.unwrap().unwrap().run.status, RecordedStatus::Running, "a live node's run");
    assert!(!store.heartbeat("web1-00000001", 0).await.unwrap(), "declared dead: it must rejoin under a new id");
    // Declared dead, it claims nothing more under that id (its timer may
    // fire before its heartbeat hears of it): the fire stays for the others.
    let claim = crate::store::Claim {
        key: crate::store::ClaimKey::fire("c.toml", Utc::now()),
        node: "web1-00000001".into(),
        content_hash: [2; 32],
        exclusive: false,
    };
    assert_eq!(store.claim_once(&claim).await.unwrap(), crate::store::Claimed::Lost, "a dead node's claim");
    let live = crate::store::Claim { node: "web3-00000003".into(), ..claim.clone() };
    assert_eq!(store.claim_once(&live).await.unwrap(), crate::store::Claimed::Won, "the fire is still free");
    assert_eq!(store.acquire_semaphore("other", 1, "web1-00000001").await.unwrap(), None, "a dead node's slot");
    assert_eq!(
        store.acquire_semaphore("db", 1, "web2-00000002").await.unwrap(),
        Some(0),
        "the takeover gives the dead node's semaphore slot back"
    );

    let nodes = store.nodes().await.unwrap().unwrap();
    let web1 = nodes.iter().find(|n| n.id == "web1-00000001").unwrap();
    assert_eq!((web1.state, web1.taken_over_by.as_deref()), (NodeState::Dead, Some(taker)));
    assert_eq!(nodes.last().unwrap().id, "web1-00000001", "alive nodes first: {nodes:?}");
    assert_eq!(web1.runs_in_flight, 1, "its last heartbeat's count");
    store.node_stopped("web2-00000002").await.unwrap();
    let nodes = store.nodes().await.unwrap().unwrap();
    assert_eq!(nodes.iter().find(|n| n.id == "web2-00000002").unwrap().state, NodeState::Stopped);
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_writer_of_a_node_that_was_taken_over_does_not_overwrite_the_interrupted_run() {
    let store = open_postgres(&Cluster::fresh_db()).await.unwrap();
    store.register_node(&node("old-0000000a", Duration::from_millis(200))).await.unwrap();
    store.register_node(&node("new-0000000b", Duration::from_secs(60))).await.unwrap();
    let run = store.begin_run(start("a.toml", "old-0000000a")).await.unwrap();
    let recorder = store.recorder();
    recorder.record(run, RunEvent::RunStarted { job: "a.toml".into(), started_at: Utc::now() });
    recorder.record(run, step_started("before"));
    recorder.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let taken = store.take_over("new-0000000b").await.unwrap();
    assert_eq!(taken[0].runs[0].id, run);
    let error = taken[0].runs[0].error.clone();

    // The old node comes back and writes what its run did meanwhile.
    recorder.record(run, step_started("after"));
    recorder.record(
        run,
        RunEvent::Log {
            path: "main/after".into(),
            stream: crate::exec::Stream::Print,
            text: "late".into(),
            at: Duration::ZERO,
        },
    );
    recorder.record(
        run,
        RunEvent::RunFinished {
            status: Status::Succeeded,
            result: None,
            error: None,
            duration: Duration::from_secs(1),
        },
    );
    recorder.flush().await.unwrap();
    let detail = store.run(run).await.unwrap().unwrap();
    assert_eq!(detail.run.status, RecordedStatus::Interrupted, "the takeover's end stays");
    assert_eq!(detail.run.error, error);
    assert_eq!(
        detail.steps.iter().map(|s| &*s.path).collect::<Vec<_>>(),
        ["main/before"],
        "no step after the takeover"
    );
    assert!(detail.logs.is_empty(), "no line after the takeover: {:?}", detail.logs);
    store.close().await.unwrap();
}

#[tokio::test]
async fn after_a_database_restart_every_node_has_a_lease_to_heartbeat_again_before_it_is_taken_over() {
    let cluster = Cluster::start();
    let store = open_postgres(&cluster.create_db("restart")).await.unwrap();
    let lease = Duration::from_millis(800);
    store.register_node(&node("a-00000001", lease)).await.unwrap();
    store.register_node(&node("b-00000002", lease)).await.unwrap();
    cluster.stop();
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    cluster.start_again();
    // b is back first: a's heartbeat is older than its lease, but only
    // because nobody could heartbeat.
    let beat = async {
        loop {
            if let Ok(true) = store.heartbeat("b-00000002", 0).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), beat).await.expect("b heartbeats again");
    assert!(store.take_over("b-00000002").await.unwrap().is_empty(), "the database restarted: a gets a lease");
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    store.heartbeat("b-00000002", 0).await.unwrap();
    let taken = store.take_over("b-00000002").await.unwrap();
    assert_eq!(taken.iter().map(|t| t.node.as_str()).collect::<Vec<_>>(), ["a-00000001"], "a lease after the restart");
    store.close().await.unwrap();
}

fn job(name: &str, hash: u8) -> crate::store::JobRecord {
    crate::store::JobRecord {
        job: name.into(),
        kind: crate::job::JobFormat::Toml,
        content_hash: [hash; 32],
        valid: true,
        diagnostic: None,
    }
}

#[tokio::test]
async fn each_node_records_its_job_versions_and_sees_another_live_nodes_other_version_as_skew() {
    let url = Cluster::fresh_db();
    let (one, two) = (open_postgres(&url).await.unwrap(), open_postgres(&url).await.unwrap());
    one.register_node(&node("one-00000001", Duration::from_secs(60))).await.unwrap();
    two.register_node(&node("two-00000002", Duration::from_secs(60))).await.unwrap();
    one.record_job(job("a.toml", 1));
    one.record_job(job("same.toml", 7));
    two.record_job(job("a.toml", 2));
    two.record_job(job("same.toml", 7));
    one.recorder().flush().await.unwrap();
    two.recorder().flush().await.unwrap();
    let skew = one.skew("one-00000001").await.unwrap();
    assert_eq!(
        skew,
        [crate::store::Skew { job: "a.toml".into(), node: "two-00000002".into(), ours: [1; 32], theirs: [2; 32] }]
    );
    let nodes = one.nodes().await.unwrap().unwrap();
    assert!(nodes.iter().all(|n| n.skewed_jobs == 1), "{nodes:?}");
    // The file removed from one node: no skew left; a stopped node's
    // versions do not count either.
    two.forget_node_job("two-00000002", "a.toml").await.unwrap();
    assert!(one.skew("one-00000001").await.unwrap().is_empty());
    two.record_job(job("a.toml", 3));
    two.recorder().flush().await.unwrap();
    assert_eq!(one.skew("one-00000001").await.unwrap().len(), 1);
    two.node_stopped("two-00000002").await.unwrap();
    assert!(one.skew("one-00000001").await.unwrap().is_empty(), "a stopped node's version is no skew");
    one.close().await.unwrap();
    two.close().await.unwrap();
}

#[tokio::test]
async fn the_takeover_gives_back_the_dead_nodes_semaphore_slots_and_leaves_its_claims() {
    let url = Cluster::fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    let store = open_postgres(&url).await.unwrap();
    Cluster::shared().psql(
        &db,
        "INSERT INTO semaphore_slots (name, slot, node) VALUES ('db', 0, 'lost-00000001'), ('db', 1, 'live-00000002'); \
         INSERT INTO claims (job, slot, node, claimed_at, lease_until) VALUES ('a.toml', 'fire:x', 'lost-00000001', now(), 'infinity')",
    );
    store.register_node(&node("lost-00000001", Duration::from_millis(200))).await.unwrap();
    store.register_node(&node("live-00000002", Duration::from_secs(60))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.take_over("live-00000002").await.unwrap().len(), 1);
    let slots = Cluster::shared().psql(&db, "SELECT string_agg(node, ',') FROM semaphore_slots");
    assert_eq!(slots, "live-00000002", "the dead node's slot is free, the live node's kept");
    let claims = Cluster::shared().psql(&db, "SELECT node || ' ' || lease_until FROM claims");
    assert_eq!(claims, "lost-00000001 infinity", "a claim says the work was taken: it stays");
    store.close().await.unwrap();
}

/// A slot a stopped node could not give back (a release lost to a database
/// blip, a run task that panicked) is freed at the next look for dead
/// nodes, not held for ever.
#[tokio::test]
async fn a_semaphore_slot_left_by_a_stopped_node_is_freed_by_the_next_takeover_look() {
    let store = open_postgres(&Cluster::fresh_db()).await.unwrap();
    store.register_node(&node("web1-00000011", Duration::from_secs(60))).await.unwrap();
    store.register_node(&node("web2-00000012", Duration::from_secs(60))).await.unwrap();
    assert_eq!(store.acquire_semaphore("db", 1, "web1-00000011").await.unwrap(), Some(0));
    store.node_stopped("web1-00000011").await.unwrap();
    assert_eq!(store.acquire_semaphore("db", 1, "web2-00000012").await.unwrap(), None, "still held");
    assert!(store.take_over("web2-00000012").await.unwrap().is_empty(), "nothing to take over");
    assert_eq!(
        store.acquire_semaphore("db", 1, "web2-00000012").await.unwrap(),
        Some(0),
        "the stopped node's slot is given back"
    );
    store.close().await.unwrap();
}
