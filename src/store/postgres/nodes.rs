//! The `nodes` table (migration 0002): registration, heartbeats and the
//! takeover of dead nodes, all timed by the database's clock (`now()`),
//! never a node's. The daemon's side is `daemon::fleet`.
//!
//! Takeover is one transaction: `UPDATE nodes ... WHERE state = 'alive' AND
//! heartbeat_at < now() - lease RETURNING` declares the dead nodes — a row's
//! lock makes a second node's same UPDATE see it `dead` and skip it, so each
//! dead node is taken over by one node — then the runs left
//! `running`/`queued` under any id that is not alive are locked with `FOR
//! UPDATE SKIP LOCKED` and marked `interrupted`: each run by one node.
//!
//! A database that restarted gives every node a lease from its start to
//! heartbeat again (`greatest(heartbeat_at, pg_postmaster_start_time())`):
//! no node could heartbeat while it was down, and the first one back must
//! not take the others over for that.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use tokio_postgres::Row;

use super::read;
use crate::store::{
    NodeRow, NodeState, RecordedStatus, RunRow, Skew, StoreError, TakenOver, orphan_error, taken_over_error,
};

/// How long a stopped or dead node's row is kept (for `gatherd nodes`).
const KEPT_ENDED: &str = "1 day";

/// A node's columns, and how many of its jobs another live node has in
/// another version (its version skew).
const NODE_COLUMNS: &str = "id, label, version, started_at, heartbeat_at, runs_in_flight, state, lease_ms, taken_over_by, \
     (SELECT count(DISTINCT a.job) FROM node_jobs a JOIN node_jobs b ON b.job = a.job AND b.node <> a.node \
     AND b.content_hash <> a.content_hash JOIN nodes o ON o.id = b.node AND o.state = 'alive' WHERE a.node = nodes.id)";

fn node_row(row: &Row) -> Result<NodeRow, tokio_postgres::Error> {
    let state: String = row.try_get(6)?;
    let in_flight: i64 = row.try_get(5)?;
    let lease: i64 = row.try_get(7)?;
    Ok(NodeRow {
        id: row.try_get(0)?,
        label: row.try_get(1)?,
        version: row.try_get(2)?,
        started_at: row.try_get(3)?,
        heartbeat_at: row.try_get(4)?,
        runs_in_flight: u64::try_from(in_flight).unwrap_or(0),
        state: NodeState::parse(&state).unwrap_or(NodeState::Dead),
        lease_ms: u64::try_from(lease).unwrap_or(0),
        taken_over_by: row.try_get(8)?,
        skewed_jobs: u64::try_from(row.try_get::<_, i64>(9)?).unwrap_or(0),
    })
}

/// Inserts `node` as `alive`, started and heartbeaten now (the database's now).
pub(super) async fn register(c: &impl GenericClient, node: &NodeRow) -> Result<(), StoreError> {
    let in_flight = i64::try_from(node.runs_in_flight).unwrap_or(i64::MAX);
    let lease = i64::try_from(node.lease_ms).unwrap_or(i64::MAX);
    c.execute(
        "INSERT INTO nodes (id, label, version, runs_in_flight, lease_ms) VALUES ($1, $2, $3, $4, $5)",
        &[&node.id, &node.label, &node.version, &in_flight, &lease],
    )
    .await
    .map_err(StoreError::postgres("register this node"))?;
    Ok(())
}

/// Heartbeats `node`; `false` when its row is not `alive` any more.
pub(super) async fn heartbeat(c: &impl GenericClient, node: &str, in_flight: u64) -> Result<bool, StoreError> {
    let in_flight = i64::try_from(in_flight).unwrap_or(i64::MAX);
    let beat = c
        .execute(
            "UPDATE nodes SET heartbeat_at = now(), runs_in_flight = $2 WHERE id = $1 AND state = 'alive'",
            &[&node, &in_flight],
        )
        .await
        .map_err(StoreError::postgres("heartbeat"))?;
    Ok(beat == 1)
}

/// Marks `node` stopped.
pub(super) async fn stopped(c: &impl GenericClient, node: &str) -> Result<(), StoreError> {
    c.execute(
        "UPDATE nodes SET state = 'stopped', ended_at = now(), runs_in_flight = 0 WHERE id = $1 AND state = 'alive'",
        &[&node],
    )
    .await
    .map_err(StoreError::postgres("mark this node stopped"))?;
    Ok(())
}

/// Every node kept: alive first, then newest first.
pub(crate) async fn list(c: &impl GenericClient) -> Result<Vec<NodeRow>, StoreError> {
    let rows = c
        .query(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY state = 'alive' DESC, started_at DESC, id"), &[])
        .await
        .map_err(StoreError::postgres("read the nodes"))?;
    rows.iter().map(node_row).collect::<Result<_, _>>().map_err(StoreError::postgres("read a node"))
}

/// `node`'s jobs that another live node has in another version.
pub(super) async fn skew(c: &impl GenericClient, node: &str) -> Result<Vec<Skew>, StoreError> {
    let rows = c
        .query(
            "SELECT a.job, b.node, a.content_hash, b.content_hash FROM node_jobs a \
             JOIN node_jobs b ON b.job = a.job AND b.node <> a.node AND b.content_hash <> a.content_hash \
             JOIN nodes o ON o.id = b.node AND o.state = 'alive' WHERE a.node = $1 ORDER BY a.job, b.node",
            &[&node],
        )
        .await
        .map_err(StoreError::postgres("read the version skew"))?;
    let hash = |v: Vec<u8>| <[u8; 32]>::try_from(v.as_slice()).unwrap_or([0; 32]);
    rows.iter()
        .map(|r| {
            Ok(Skew { job: r.try_get(0)?, node: r.try_get(1)?, ours: hash(r.try_get(2)?), theirs: hash(r.try_get(3)?) })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(StoreError::postgres("read the version skew"))
}

/// Forgets `node`'s version of `job` (its file is gone).
pub(super) async fn forget_job(c: &impl GenericClient, node: &str, job: &str) -> Result<(), StoreError> {
    c.execute("DELETE FROM node_jobs WHERE node = $1 AND job = $2", &[&node, &job])
        .await
        .map_err(StoreError::postgres("forget a node's job version"))?;
    Ok(())
}

/// What nodes gone held is given back in the takeover's transaction: the
/// semaphore slots of every node not alive — the ones just declared dead,
/// and any a stopped or dead node still holds (`claims::release_gone_nodes`).
/// Their claims stay: a claim says a unit of work was taken, and is never
/// taken again on a lease (a lagging node's late timer must not run a slot
/// twice); the interrupted runs are the takeover's to re-run
/// (`on_node_loss`).
async fn release_holdings(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
    super::claims::release_gone_nodes(&**tx).await?;
    Ok(())
}

/// The takeover transaction (see the module doc).
pub(super) async fn take_over(client: &mut deadpool_postgres::Object, me: &str) -> Result<Vec<TakenOver>, StoreError> {
    let fail = StoreError::postgres;
    let tx = client.transaction().await.map_err(fail("begin a takeover"))?;
    let dead: Vec<(String, DateTime<Utc>)> = tx
        .query(
            "UPDATE nodes SET state = 'dead', ended_at = now(), taken_over_by = $1 \
             WHERE state = 'alive' AND id <> $1 \
             AND greatest(heartbeat_at, pg_postmaster_start_time()) < now() - lease_ms * interval '1 millisecond' \
             RETURNING id, heartbeat_at",
            &[&me],
        )
        .await
        .and_then(|rows| rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<Vec<_>, _>>())
        .map_err(fail("declare dead nodes"))?;
    release_holdings(&tx).await?;
    let mut runs: Vec<RunRow> = tx
        .query(
            &format!(
                "SELECT {} FROM runs WHERE (status = 'running' OR status = 'queued') AND node <> $1 \
                 AND node NOT IN (SELECT id FROM nodes WHERE state = 'alive') ORDER BY id FOR UPDATE SKIP LOCKED",
                read::RUN_COLUMNS
            ),
            &[&me],
        )
        .await
        .and_then(|rows| rows.iter().map(read::run_row).collect::<Result<Vec<_>, _>>())
        .map_err(fail("find the runs of dead nodes"))?;
    let heartbeats: BTreeMap<&str, DateTime<Utc>> = dead.iter().map(|(id, at)| (id.as_str(), *at)).collect();
    let errors: Vec<String> = runs
        .iter()
        .map(|r| match heartbeats.get(r.node.as_str()) {
            Some(at) => taken_over_error(&r.node, *at, me),
            None => orphan_error(&r.node, me),
        })
        .collect();
    let run_ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let finished: BTreeMap<i64, DateTime<Utc>> = if run_ids.is_empty() {
        BTreeMap::new()
    } else {
        tx.query(
            "UPDATE runs SET status = 'interrupted', finished_at = now(), error = t.error \
             FROM unnest($1::bigint[], $2::text[]) AS t(id, error) WHERE runs.id = t.id RETURNING runs.id, finished_at",
            &[&run_ids, &errors],
        )
        .await
        .map_err(fail("mark a dead node's runs interrupted"))
        .map(|rows| rows.iter().filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?))).collect())?
    };
    if !run_ids.is_empty() {
        tx.execute(
            "UPDATE steps SET status = 'interrupted' WHERE run_id = ANY($1) AND status = 'running'",
            &[&run_ids],
        )
        .await
        .map_err(fail("mark a dead node's steps interrupted"))?;
    }
    tx.execute(
        &format!("DELETE FROM nodes WHERE state <> 'alive' AND ended_at < now() - interval '{KEPT_ENDED}'"),
        &[],
    )
    .await
    .map_err(fail("forget nodes that ended long ago"))?;
    tx.commit().await.map_err(fail("commit a takeover"))?;
    for (run, error) in runs.iter_mut().zip(errors) {
        run.status = RecordedStatus::Interrupted;
        run.error = Some(error);
        run.finished_at = finished.get(&run.id).copied();
    }
    let mut taken: Vec<TakenOver> = dead
        .iter()
        .map(|(id, at)| TakenOver { node: id.clone(), last_heartbeat: Some(*at), runs: Vec::new() })
        .collect();
    for run in runs {
        match taken.iter_mut().find(|t| t.node == run.node) {
            Some(t) => t.runs.push(run),
            None => taken.push(TakenOver { node: run.node.clone(), last_heartbeat: None, runs: vec![run] }),
        }
    }
    Ok(taken)
}

#[cfg(test)]
#[path = "nodes_tests.rs"]
mod tests;
