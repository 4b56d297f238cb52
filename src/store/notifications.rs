//! What the store keeps for the daemon's notifier: each job's failure streak
//! ([`NotifyState`]) and every notification with its delivery
//! ([`Notification`]). Plain data, backend-neutral.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::RunId;
use crate::job::word::word_enum;

/// Where a job's notifications stand: survives restarts, so a daemon
/// restarted mid-streak does not send `failure` again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyState {
    /// Consecutive runs that did not succeed (0 after a success).
    pub failures: u32,
    /// This streak's `failure` was sent.
    pub told: bool,
    /// When a `failure` of this streak was last sent (for `repeat_every`).
    pub told_at: Option<DateTime<Utc>>,
    /// A `stale` was sent and no run has succeeded since.
    pub stale: bool,
    /// The diagnostic of the invalid version whose `invalid` was told (none
    /// once a valid version loads): told once per mistake, not again at
    /// every restart, which reads every job file anew.
    pub invalid: Option<String>,
}

/// Each job's latest success: `(job, when it finished)`.
pub type LastSuccesses = Vec<(String, DateTime<Utc>)>;

/// A notification's id in the store.
pub type NotificationId = i64;

word_enum! {
    /// Where a notification's delivery stands.
    pub enum DeliveryStatus {
        /// Not delivered yet; more attempts may come.
        Pending = "pending",
        /// The target took it.
        Delivered = "delivered",
        /// Every attempt failed, or the time for retries ran out.
        Failed = "failed",
    }
}

/// A notification and its delivery, as stored and served
/// (`GET /notifications`, `notifications` of `GET /runs/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// Its id.
    pub id: NotificationId,
    /// The job it is about.
    pub job: String,
    /// The run it is about, if any (a `stale` or `invalid` has none).
    pub run_id: Option<RunId>,
    /// The config's target (`[notify.NAME]`).
    pub target: String,
    /// The event's word (`failure`, `recovery`, ...).
    pub event: String,
    /// Where its delivery stands.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// The last failed attempt's error (kept when a later one delivered it).
    pub error: Option<String>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When its last attempt ended.
    pub updated_at: DateTime<Utc>,
}

/// Which notifications [`notifications`](super::RunStore::notifications) lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationFilter {
    /// Only those about this run.
    pub run_id: Option<RunId>,
    /// Only those of this job.
    pub job: Option<String>,
    /// At most this many, newest first (default 100).
    pub limit: Option<u32>,
}
