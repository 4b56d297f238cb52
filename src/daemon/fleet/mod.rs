//! The daemon's part of a fleet (several daemons on one PostgreSQL
//! history, issue 16): `claim.rs` decides whether this node runs a fire or
//! a one-shot version (one claim per unit of work in the fleet, made by the
//! run task before its run begins), `semaphore.rs` holds named semaphores'
//! slots across the fleet. (`node.rs` and `takeover.rs` are the nodes'.)
//!
//! Architecture Invariant: on a history that is not shared (SQLite) none
//! of this asks the store anything: the single-node path has no round trip
//! more.

pub mod claim;
pub mod semaphore;
