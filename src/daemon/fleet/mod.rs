//! The daemon in a fleet: several daemons sharing one PostgreSQL history
//! (issue 16).
//!
//! - `node.rs`: this daemon's node — its id (`{label}-{8 hex}`, new at each
//!   start), its row in the `nodes` table, and the heartbeat task that
//!   keeps it alive (every lease/3, on the database's clock) and takes dead
//!   nodes over.
//! - `takeover.rs`: what the supervisor's loop does with what that task
//!   reports: reruns of the runs taken over (`on_node_loss = "rerun"`), and
//!   rejoining under a new id when this node finds itself declared dead.
//! - `claim.rs`: whether this node runs a fire or a one-shot version (one
//!   claim per unit of work in the fleet, made by the run task before its
//!   run begins).
//! - `semaphore.rs`: named semaphores' slots across the fleet.
//!
//! On a single-node store (SQLite) there is no heartbeat task: the node is
//! only the id recorded on runs and the one row `GET /nodes` answers.
//!
//! Architecture Invariant: the supervisor's loop never waits for the
//! database here: the heartbeat task does the round trips and sends its
//! findings to the loop as [`FleetNote`]s.
//!
//! Architecture Invariant: on a history that is not shared (SQLite) none
//! of this asks the store anything: the single-node path has no round trip
//! more.

pub mod claim;
mod node;
pub mod semaphore;
mod takeover;

pub use node::Node;
pub(super) use node::{FleetNote, Heartbeats};
