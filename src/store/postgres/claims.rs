//! The fleet's claims and semaphores in PostgreSQL (ARCHITECTURE.md
//! "Fleets"): what makes several daemons on one database run each
//! scheduled fire and each one-shot version once, and hold a named
//! semaphore's slots once in the whole fleet.
//!
//! - A claim is `INSERT ... ON CONFLICT (job, slot) DO NOTHING`: of all the
//!   nodes that claim a key, the one whose row lands wins, whenever the
//!   others ask (never taken over: a run interrupted with its node is the
//!   takeover's to re-run, not a late claim's). The database's clock
//!   stamps it.
//! - Missed fires (catch-up, paused jobs) are claimed the same way, in the
//!   statement that records them: one `missed` row per slot in the fleet.
//! - A semaphore slot is a row of `semaphore_slots`, primary key
//!   `(name, slot)`: taken by insert, given back by delete.
//!
//! Architecture Invariant: every statement here is one round trip and
//! holds no lock past its own transaction.

use chrono::{DateTime, SubsecRound, Utc};
use tokio_postgres::GenericClient;

use crate::store::{Claim, ClaimKey, Claimed, Missed, StoreError};

/// How long a claim is kept: long past any node's late timer or catch-up
/// of that slot (a catch-up only fires slots after the job's last recorded
/// fire), so the history does not keep a row per fire forever.
pub(super) const CLAIMS_KEPT: &str = "24 hours";

/// The condition that node `param` (a statement's parameter) is known and
/// no longer alive: a node declared dead (paused, cut off) whose timer or
/// buffered claim comes through before its heartbeat hears of it claims
/// nothing — under its dead id the claim's run would be taken over, or
/// cancelled at its rejoin, and the fire lost. (An id the `nodes` table does
/// not know, as in the store's own tests, is not refused.)
fn gone(param: &str) -> String {
    format!("(SELECT 1 FROM nodes WHERE id = {param} AND state <> 'alive')")
}

/// Claims `claim` once in the fleet (see the module doc).
pub(super) async fn claim_once(client: &impl GenericClient, claim: &Claim) -> Result<Claimed, StoreError> {
    let row = client
        .query_one(
            &format!(
                "WITH busy AS (SELECT node FROM runs WHERE $5 AND job = $1 AND node <> $3 \
             AND (status = 'running' OR status = 'queued') LIMIT 1), \
             won AS (INSERT INTO claims (job, slot, node, claimed_at, lease_until, content_hash) \
             SELECT $1, $2, $3, now(), 'infinity', $4 WHERE NOT EXISTS {GONE} \
             ON CONFLICT (job, slot) DO NOTHING RETURNING 1) \
             SELECT EXISTS (SELECT 1 FROM won), (SELECT node FROM busy)",
                GONE = gone("$3")
            ),
            &[&claim.key.job, &claim.key.slot, &claim.node, &&claim.content_hash[..], &claim.exclusive],
        )
        .await
        .map_err(StoreError::postgres("claim a fire"))?;
    let won: bool = row.try_get(0).map_err(StoreError::postgres("read a claim"))?;
    let busy: Option<String> = row.try_get(1).map_err(StoreError::postgres("read a claim"))?;
    Ok(match (won, busy) {
        (false, _) => Claimed::Lost,
        (true, None) => Claimed::Won,
        (true, Some(node)) => Claimed::Busy { node },
    })
}

/// Records `missed`'s fires as `missed` runs with `error`, each only if this
/// node's claim of its slot wins: one statement, so a fleet starting
/// together after an outage records each missed fire once.
pub(super) async fn record_missed(
    client: &impl GenericClient,
    missed: &Missed,
    error: &'static str,
) -> Result<u64, StoreError> {
    let now = Utc::now().trunc_subsecs(6);
    let fires: Vec<DateTime<Utc>> = missed.fire_times.iter().map(|t| t.trunc_subsecs(6)).collect();
    let slots: Vec<String> = fires.iter().map(|t| ClaimKey::fire(missed.job.as_str(), *t).slot).collect();
    let hash = &missed.content_hash[..];
    client
        .execute(
            &format!(
                "WITH f AS (SELECT f, s, n FROM unnest($7::timestamptz[], $8::text[]) WITH ORDINALITY AS t(f, s, n)), \
             c AS (INSERT INTO claims (job, slot, node, claimed_at, lease_until, content_hash) \
             SELECT $1, s, $4, now(), 'infinity', $3 FROM f WHERE NOT EXISTS {GONE} \
             ON CONFLICT (job, slot) DO NOTHING RETURNING slot) \
             INSERT INTO runs (job, trigger, fire_time, content_hash, node, status, started_at, finished_at, \
             duration_ms, error) SELECT $1, $2, f.f, $3, $4, 'missed', $5, $5, 0, $6 \
             FROM f JOIN c ON c.slot = f.s ORDER BY f.n",
                GONE = gone("$4")
            ),
            &[&missed.job, &missed.trigger.as_str(), &hash, &missed.node, &now, &error, &fires, &slots],
        )
        .await
        .map_err(StoreError::postgres("record missed fires"))
}

/// Takes a free slot of semaphore `name` (of `count`) for `node`.
pub(super) async fn acquire_semaphore(
    client: &impl GenericClient,
    name: &str,
    count: usize,
    node: &str,
) -> Result<Option<u32>, StoreError> {
    let count = i32::try_from(count).unwrap_or(i32::MAX);
    let row = client
        .query_opt(
            &format!(
                "INSERT INTO semaphore_slots (name, slot, node) SELECT $1, s, $3 FROM generate_series(0, $2 - 1) AS s \
                 WHERE NOT EXISTS (SELECT 1 FROM semaphore_slots h WHERE h.name = $1 AND h.slot = s) \
                 AND NOT EXISTS {GONE} ORDER BY s LIMIT 1 ON CONFLICT (name, slot) DO NOTHING RETURNING slot",
                GONE = gone("$3")
            ),
            &[&name, &count, &node],
        )
        .await
        .map_err(StoreError::postgres("take a semaphore slot"))?;
    let Some(row) = row else { return Ok(None) };
    let slot: i32 = row.try_get(0).map_err(StoreError::postgres("take a semaphore slot"))?;
    Ok(u32::try_from(slot).ok())
}

/// Gives back slot `slot` of semaphore `name`, if `node` holds it.
pub(super) async fn release_semaphore(
    client: &impl GenericClient,
    name: &str,
    slot: u32,
    node: &str,
) -> Result<(), StoreError> {
    let slot = i32::try_from(slot).unwrap_or(i32::MAX);
    client
        .execute("DELETE FROM semaphore_slots WHERE name = $1 AND slot = $2 AND node = $3", &[&name, &slot, &node])
        .await
        .map_err(StoreError::postgres("give a semaphore slot back"))?;
    Ok(())
}

/// Gives back every semaphore slot `node` holds: for the takeover of a dead
/// node (`nodes`' transaction calls it) and for a node's own start (what it
/// held before a crash). Its claims stay: they say the work was taken, and
/// its interrupted runs are the takeover's to re-run (`on_node_loss`), not
/// a late claim's. Returns how many slots were freed.
pub async fn release_node(client: &impl GenericClient, node: &str) -> Result<u64, StoreError> {
    client
        .execute("DELETE FROM semaphore_slots WHERE node = $1", &[&node])
        .await
        .map_err(StoreError::postgres("give a node's semaphore slots back"))
}

/// Gives back every semaphore slot held by a node that is no longer alive
/// (dead, or stopped with a slot it could not give back — a release lost to
/// a database blip, a run task that panicked): the takeover's transaction
/// runs it at every look, so such a slot is held at most until then.
pub async fn release_gone_nodes(client: &impl GenericClient) -> Result<u64, StoreError> {
    client
        .execute(
            "DELETE FROM semaphore_slots s WHERE EXISTS \
             (SELECT 1 FROM nodes n WHERE n.id = s.node AND n.state <> 'alive')",
            &[],
        )
        .await
        .map_err(StoreError::postgres("give the semaphore slots of nodes gone back"))
}

/// Deletes `job`'s claims older than [`CLAIMS_KEPT`] (with its runs'
/// retention): idempotent, so nodes pruning together do not fight.
pub(super) async fn prune_claims(client: &impl GenericClient, job: &str) -> Result<u64, StoreError> {
    client
        .execute(
            &format!("DELETE FROM claims WHERE job = $1 AND claimed_at < now() - interval '{CLAIMS_KEPT}'"),
            &[&job],
        )
        .await
        .map_err(StoreError::postgres("prune claims"))
}
