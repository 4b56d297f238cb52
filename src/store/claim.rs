//! What a fleet claims (ARCHITECTURE.md "Fleets"): a unit of work — a
//! scheduled fire or a one-shot version — taken once in the whole fleet,
//! and the answer to taking it.
//!
//! A single daemon (SQLite) never asks: [`RunStore::shared`] is false and
//! the trait's defaults answer "yours" without a round trip.
//!
//! [`RunStore::shared`]: super::RunStore::shared

use super::ClaimKey;

/// A claim a run task makes before its run begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The unit of work: `(job, fire:<slot>)` or `(job, sha256:<hash>)`.
    pub key: ClaimKey,
    /// The node claiming it.
    pub node: String,
    /// The version of the job file that would run (kept in the claim).
    pub content_hash: [u8; 32],
    /// Settle the claim without running when a run of the job is going on
    /// (or queued) on another node: the job's `overlap` is not `allow`.
    pub exclusive: bool,
}

/// The answer to a [`Claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// This node has it: run.
    Won,
    /// Another node has it (it runs or ran there): record nothing.
    Lost,
    /// This node has it, but the job runs on `node` (the claim was
    /// `exclusive`): the fire is skipped, everywhere.
    Busy {
        /// The node where a run of the job goes on.
        node: String,
    },
}
