//! Whether this node runs a unit of work: a scheduled fire (its nominal
//! slot), a caught-up fire, a fire kept by `overlap = "queue"`, or a
//! one-shot version (its content hash). The run task asks, before its run
//! begins ([`decide`]); the node whose claim wins runs it, the others
//! record nothing and give their admission slot back at once.
//!
//! Load spreading: a node without room for the run (at its
//! `max_concurrent_runs`, or its semaphore full here) claims only after
//! [`BUSY_CLAIM_DELAY`], so a node with room, which claims at once, wins
//! the race; when every node is full one of them still wins after the
//! delay and runs it when it has room (queued): a fire is never lost to
//! load.
//!
//! Manual triggers are not claimed: the node whose API was asked runs it.
//!
//! While the database is unreachable a claim is asked again (100 ms
//! doubling to 5 s) until it is answered or the run is cancelled: the fire
//! is neither run unclaimed (the fleet could not vouch it runs once) nor
//! lost — it runs when the database is back, with its nominal fire time,
//! as a run that begins meanwhile waits for its row.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::job::Overlap;
use crate::store::{Claim, ClaimKey, Claimed, RunStart, RunStore, RunTrigger};

/// How long a node without room waits before it claims (see the module
/// doc). Long beside a claim's round trip (about a millisecond on a LAN,
/// `store::postgres::tests::claims_are_won_once_among_nodes_racing_and_answer_fast`),
/// short beside the fire's own period (a second at least for `every`).
pub const BUSY_CLAIM_DELAY: Duration = Duration::from_millis(250);

/// The claim a run of `start` must win before it runs, on a shared
/// history; `None` for a manual trigger (never claimed) and on a history
/// that is not shared (one daemon: no claim at all).
pub fn claim_for(store: &dyn RunStore, start: &RunStart, overlap: Overlap) -> Option<Claim> {
    if !store.shared() {
        return None;
    }
    let key = match start.trigger {
        RunTrigger::Manual => return None,
        RunTrigger::File => ClaimKey::one_shot(start.job.as_str(), &start.content_hash),
        RunTrigger::Schedule | RunTrigger::Interval => ClaimKey::fire(start.job.as_str(), start.fire_time),
    };
    Some(Claim {
        key,
        node: start.node.clone(),
        content_hash: start.content_hash,
        // `allow` runs beside the job's other runs; the other policies do
        // not start while it runs on another node (README "Exactly once").
        exclusive: overlap != Overlap::Allow,
    })
}

/// Why this node does not run a claimed unit of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotHere {
    /// Another node's claim won: it runs (or ran) there.
    Lost,
    /// This node's claim won, but the job runs on another node and its
    /// overlap policy is not `allow`: skipped in the whole fleet.
    Busy(String),
    /// Cancelled (its file removed, shutdown) before it was claimed.
    Cancelled,
}

impl NotHere {
    /// The outcome's error: why it did not run here.
    pub fn reason(&self) -> String {
        match self {
            NotHere::Lost => "not run here: another node claimed it".into(),
            NotHere::Busy(node) => {
                format!("skipped: the job's last run is still going on node {node} (overlap across the fleet)")
            }
            NotHere::Cancelled => "cancelled before it was claimed".into(),
        }
    }
}

/// Claims `claim` — after [`BUSY_CLAIM_DELAY`] when this node has no room
/// (`busy`) — and says whether this node runs it; logs the answer.
pub async fn decide(
    store: &dyn RunStore,
    claim: &Claim,
    busy: bool,
    cancel: &CancellationToken,
) -> Result<(), NotHere> {
    if busy {
        tokio::select! {
            () = tokio::time::sleep(BUSY_CLAIM_DELAY) => {}
            () = cancel.cancelled() => return Err(NotHere::Cancelled),
        }
    }
    let job = claim.key.job.as_str();
    let slot = claim.key.slot.as_str();
    let mut backoff = crate::job::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failed = false;
    let answer = loop {
        let answer = tokio::select! {
            answer = store.claim_once(claim) => answer,
            () = cancel.cancelled() => return Err(NotHere::Cancelled),
        };
        match answer {
            Ok(answer) => break answer,
            Err(e) => {
                if !std::mem::replace(&mut failed, true) {
                    tracing::warn!(job, slot, error = %e, "cannot claim the fire in the fleet's history: asking again until the database answers");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_wait()) => {}
                    () = cancel.cancelled() => return Err(NotHere::Cancelled),
                }
            }
        }
    };
    if failed {
        tracing::info!(job, slot, "the fleet's history answered the claim");
    }
    match answer {
        Claimed::Won => {
            tracing::debug!(job, slot, busy, "claimed: it runs on this node");
            Ok(())
        }
        Claimed::Lost => {
            tracing::debug!(job, slot, "claimed by another node: not run here");
            Err(NotHere::Lost)
        }
        Claimed::Busy { node } => {
            tracing::info!(job, slot, on = %node, "skipped: the job's last run is still going on another node");
            Err(NotHere::Busy(node))
        }
    }
}
