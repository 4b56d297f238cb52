//! The nodes of a fleet as the history keeps them (a PostgreSQL store's
//! `nodes` table): plain data, backend-neutral. The daemon's side (ids,
//! heartbeats, takeover) is `daemon::fleet`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::RunRow;

/// Where a node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// It heartbeats (or its lease has not run out yet).
    Alive,
    /// It stopped cleanly (SIGTERM).
    Stopped,
    /// Its lease ran out: another node declared it dead and took its runs over.
    Dead,
}

impl NodeState {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Alive => "alive",
            NodeState::Stopped => "stopped",
            NodeState::Dead => "dead",
        }
    }

    /// The state a stored word names.
    pub fn parse(word: &str) -> Option<NodeState> {
        [NodeState::Alive, NodeState::Stopped, NodeState::Dead].into_iter().find(|s| s.as_str() == word)
    }
}

/// One node: what `gatherd nodes` and `GET /nodes` show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    /// `{label}-{8 hex}`, new at each start of a daemon.
    pub id: String,
    /// `node_name`, or the host name.
    pub label: String,
    /// The gatherd version it runs.
    pub version: String,
    /// When it started (the database's clock in a fleet).
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat (the database's clock in a fleet).
    pub heartbeat_at: DateTime<Utc>,
    /// Its runs in flight (and queued for a slot) at its last heartbeat.
    pub runs_in_flight: u64,
    /// Alive, stopped or dead.
    pub state: NodeState,
    /// Its lease, in milliseconds: dead once `heartbeat_at` is older.
    pub lease_ms: u64,
    /// The node that declared it dead and took its runs over.
    pub taken_over_by: Option<String>,
    /// How many of its jobs another live node has in another version
    /// (content hash): version skew.
    #[serde(default)]
    pub skewed_jobs: u64,
}

/// A job two live nodes have in different versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Skew {
    /// The job.
    pub job: String,
    /// The other node.
    pub node: String,
    /// This node's content hash of it.
    pub ours: [u8; 32],
    /// The other node's.
    pub theirs: [u8; 32],
}

/// A node declared dead by [`RunStore::take_over`](super::RunStore::take_over),
/// with its runs this node marked `interrupted`.
#[derive(Debug, Clone, PartialEq)]
pub struct TakenOver {
    /// The dead node's id, or the id runs were left under by a node that is
    /// no longer alive (a run begun after its node was declared dead, or by
    /// a daemon from before node ids).
    pub node: String,
    /// Its last heartbeat (`None`: it was not alive already).
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Its runs, as marked (`interrupted`, with the error saying why).
    pub runs: Vec<RunRow>,
}

/// The error of a run taken over from a node that stopped heartbeating.
pub fn taken_over_error(node: &str, last_heartbeat: DateTime<Utc>, by: &str) -> String {
    format!(
        "node {node} stopped heartbeating (last {}); taken over by {by}",
        last_heartbeat.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// The error of a run left under a node id that is no longer alive.
pub fn orphan_error(node: &str, by: &str) -> String {
    format!("node {node} is not alive (it stopped, was declared dead, or predates node ids); taken over by {by}")
}
