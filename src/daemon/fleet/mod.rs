//! The daemon in a fleet: several daemons sharing one PostgreSQL history.
//!
//! - `node.rs`: this daemon's node — its id (`{label}-{8 hex}`, new at each
//!   start), its row in the `nodes` table, and the heartbeat task that
//!   keeps it alive (every lease/3, on the database's clock) and takes dead
//!   nodes over.
//! - `takeover.rs`: what the supervisor's loop does with what that task
//!   reports: reruns of the runs taken over (`on_node_loss = "rerun"`), and
//!   rejoining under a new id when this node finds itself declared dead.
//!
//! On a single-node store (SQLite) there is no heartbeat task: the node is
//! only the id recorded on runs and the one row `GET /nodes` answers.
//!
//! Architecture Invariant: the supervisor's loop never waits for the
//! database here: the heartbeat task does the round trips and sends its
//! findings to the loop as [`FleetNote`]s.

mod node;
mod takeover;

pub use node::Node;
pub(super) use node::{FleetNote, Heartbeats};
