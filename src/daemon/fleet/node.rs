//! This daemon's node: its id, its row, its heartbeats.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::{NodeRow, NodeState, RunStore, Skew, TakenOver};

/// A node id: `{label}-{8 lowercase hex}`, random for each process start (or
/// rejoin), so two daemons on one host — or one daemon before and after a
/// restart — are never taken for one node.
pub fn node_id(label: &str) -> String {
    use std::hash::{BuildHasher, Hash, Hasher};
    // std's RandomState is seeded from the OS's random source; the time and
    // the pid tell apart two ids made by one process.
    let mut hasher = std::hash::RandomState::new().build_hasher();
    std::process::id().hash(&mut hasher);
    std::time::SystemTime::now().hash(&mut hasher);
    let random = hasher.finish();
    format!("{label}-{:08x}", (random ^ (random >> 32)) as u32)
}

/// This daemon's node, shared by the supervisor (which counts its runs),
/// the API (`GET /nodes` on a single-node store) and the heartbeat task
/// (which replaces the id on a rejoin).
#[derive(Debug)]
pub struct Node {
    id: RwLock<String>,
    /// `node_name`, or the host name.
    pub label: String,
    /// When this process started (its own clock: a single node has no other).
    pub started_at: DateTime<Utc>,
    /// Dead once its heartbeat is older than this.
    pub lease: Duration,
    in_flight: AtomicU64,
}

impl Node {
    /// A node labelled `label` with a fresh id.
    pub fn new(label: String, lease: Duration) -> Node {
        Node { id: RwLock::new(node_id(&label)), label, started_at: Utc::now(), lease, in_flight: AtomicU64::new(0) }
    }

    /// Its current id.
    pub fn id(&self) -> String {
        self.id.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_id(&self, id: String) {
        *self.id.write().unwrap_or_else(PoisonError::into_inner) = id;
    }

    /// Sets its runs in flight (and queued), as the supervisor counts them.
    pub fn set_in_flight(&self, runs: usize) {
        self.in_flight.store(u64::try_from(runs).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Its runs in flight at the last count.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Its row as the `nodes` table would have it now: what a fleet
    /// registers, and the one node a single-node store's `GET /nodes` shows.
    pub fn row(&self) -> NodeRow {
        NodeRow {
            id: self.id(),
            label: self.label.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.started_at,
            heartbeat_at: Utc::now(),
            runs_in_flight: self.in_flight(),
            state: NodeState::Alive,
            lease_ms: u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX),
            taken_over_by: None,
            skewed_jobs: 0,
        }
    }
}

/// What the heartbeat task tells the supervisor's loop.
#[derive(Debug)]
pub(in crate::daemon) enum FleetNote {
    /// This node declared a node dead (or found runs under an id no longer
    /// alive) and marked its runs `interrupted`.
    TakenOver(TakenOver),
    /// This node was declared dead while it could not heartbeat (paused,
    /// cut off): it now goes on as `new`; its runs in flight are stale.
    Rejoined { old: String, new: String },
    /// The jobs another live node has in another version, now (sent when
    /// it changes): job → those nodes.
    Skew(BTreeMap<String, Vec<String>>),
    /// Jobs paused and resumed in the fleet's history since the last beat
    /// (by any node: a pause holds fleet-wide, within lease/3).
    Paused { paused: Vec<String>, resumed: Vec<String> },
    /// Each job's last success in the fleet's history (read every
    /// [`SUCCESSES_EVERY`] beats), for `gatherd_last_success_timestamp_seconds`:
    /// a success on another node counts on this one's /metrics too.
    LastSuccesses(crate::store::LastSuccesses),
}

/// Every this many heartbeats (lease/3 each: a minute with the default
/// 15 s lease) the fleet's last successes are read again: one grouped
/// query over the history, too heavy for every beat.
const SUCCESSES_EVERY: u32 = 12;

/// The heartbeat task's handle, held by the supervisor: its notes, and how
/// to stop it (at shutdown, before the node is marked stopped).
pub(in crate::daemon) struct Heartbeats {
    pub notes: mpsc::UnboundedReceiver<FleetNote>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeats {
    /// Starts heartbeating `node` (registered already) in `store`.
    /// `paused`: the paused jobs as the start read them, the baseline of
    /// the pauses the beats pass on (one made meanwhile is a change).
    pub fn start(node: Arc<Node>, store: Arc<dyn RunStore>, paused: BTreeSet<String>) -> Heartbeats {
        let (tx, notes) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(beat(node, store, tx, stop.clone(), paused));
        Heartbeats { notes, stop, task }
    }

    /// Stops the task and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the heartbeat task failed");
        }
    }
}

/// Every lease/3: heartbeat, then take dead nodes over; a heartbeat that
/// finds this node declared dead rejoins under a new id.
async fn beat(
    node: Arc<Node>,
    store: Arc<dyn RunStore>,
    notes: mpsc::UnboundedSender<FleetNote>,
    stop: CancellationToken,
    paused: BTreeSet<String>,
) {
    let mut ticks = tokio::time::interval((node.lease / 3).max(Duration::from_millis(100)));
    // After a pause (SIGSTOP) one beat, not a burst of the missed ones.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut skew = BTreeSet::new();
    // The paused jobs as the history last said (first: as the start read them).
    let mut paused = Some(paused);
    let mut beats = 0u32;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let id = node.id();
        match store.heartbeat(&id, node.in_flight()).await {
            Ok(true) => {}
            Ok(false) => {
                rejoin(&node, &*store, &notes, id).await;
                continue;
            }
            Err(e) => {
                if !failing {
                    tracing::error!(node = %id, error = %e, "cannot heartbeat: past the lease, another node takes this one's runs over");
                }
                failing = true;
                continue;
            }
        }
        if std::mem::take(&mut failing) {
            tracing::info!(node = %id, "heartbeating again");
        }
        match store.take_over(&id).await {
            Ok(taken) => {
                for t in taken {
                    let _ = notes.send(FleetNote::TakenOver(t));
                }
            }
            Err(e) => tracing::warn!(node = %id, error = %e, "cannot look for dead nodes to take over"),
        }
        match store.skew(&id).await {
            Ok(now) => {
                let now: BTreeSet<Skew> = now.into_iter().collect();
                if now != skew {
                    for s in now.difference(&skew) {
                        tracing::warn!(
                            job = %s.job,
                            node = %id,
                            other_node = %s.node,
                            ours = %short(&s.ours),
                            theirs = %short(&s.theirs),
                            "version skew: another live node has another version of this job file"
                        );
                    }
                    let mut by_job: BTreeMap<String, Vec<String>> = BTreeMap::new();
                    for s in &now {
                        by_job.entry(s.job.clone()).or_default().push(s.node.clone());
                    }
                    let _ = notes.send(FleetNote::Skew(by_job));
                    skew = now;
                }
            }
            Err(e) => tracing::debug!(node = %id, error = %e, "cannot read the version skew"),
        }
        match store.paused().await {
            Ok(now) => {
                let now: BTreeSet<String> = now.into_iter().map(|(job, _)| job).collect();
                // Changes only, as this node's own pause may not be saved
                // yet: a delta never undoes what the loop did itself.
                if let Some(before) = paused.as_ref().filter(|before| **before != now) {
                    let _ = notes.send(FleetNote::Paused {
                        paused: now.difference(before).cloned().collect(),
                        resumed: before.difference(&now).cloned().collect(),
                    });
                }
                paused = Some(now);
            }
            Err(e) => tracing::debug!(node = %id, error = %e, "cannot read the paused jobs"),
        }
        beats = beats.wrapping_add(1);
        if beats.is_multiple_of(SUCCESSES_EVERY) {
            match store.last_successes().await {
                Ok(found) => {
                    let _ = notes.send(FleetNote::LastSuccesses(found));
                }
                Err(e) => tracing::debug!(node = %id, error = %e, "cannot read the fleet's last successes"),
            }
        }
    }
}

/// The first 8 hex digits of a content hash, as the log shows it.
fn short(hash: &[u8; 32]) -> String {
    hash[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// This node was declared dead: it never goes on under that id (its runs
/// were taken over); it registers a new one and tells the loop.
async fn rejoin(node: &Node, store: &dyn RunStore, notes: &mpsc::UnboundedSender<FleetNote>, old: String) {
    let new = node_id(&node.label);
    let mut row = node.row();
    row.id.clone_from(&new);
    if let Err(e) = store.register_node(&row).await {
        return tracing::error!(node = %old, error = %e, "declared dead by the fleet, and cannot rejoin yet (trying again)");
    }
    tracing::error!(
        node = %old,
        new_node = %new,
        lease = %humantime::format_duration(node.lease),
        "this node was declared dead (it did not heartbeat within its lease: paused, or cut off from the database) \
         and its runs were taken over: cancelling its stale runs and rejoining under a new id"
    );
    node.set_id(new.clone());
    let _ = notes.send(FleetNote::Rejoined { old, new });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_is_the_label_and_8_hex_digits_new_each_time() {
        let a = node_id("web1");
        let (label, hex) = a.rsplit_once('-').unwrap();
        assert_eq!(label, "web1");
        assert_eq!(hex.len(), 8, "{a}");
        assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{a}");
        let many: std::collections::HashSet<String> = (0..1000).map(|_| node_id("web1")).collect();
        assert_eq!(many.len(), 1000, "ids repeat");
    }
}
