//! A job's subscription to notifications (`notify`, `notify_on`,
//! `notify_after`, `repeat_every`, `expect_success_within`): plain data. The
//! daemon's notifier decides from it what to send; the targets themselves
//! are the config's (`[notify.NAME]`).

use std::time::Duration;

use super::word::word_enum;

word_enum! {
    /// Something that happened to a job that a notification can tell.
    pub enum NotifyEvent {
        /// A run did not succeed (failed, timed out, cancelled): once per
        /// failure streak (see `notify_after`, `repeat_every`).
        Failure = "failure",
        /// The first success after a failure streak that was told.
        Recovery = "recovery",
        /// Every successful run.
        Success = "success",
        /// A scheduled fire was missed while the daemon was down.
        Missed = "missed",
        /// A run was found interrupted at start (the daemon died under it).
        Interrupted = "interrupted",
        /// Dead-man: no run succeeded within `expect_success_within`.
        Stale = "stale",
        /// The job file became invalid.
        Invalid = "invalid",
        /// `gatherd notify test NAME`: a test of a target.
        Test = "test",
    }
}

/// The events a job is told of when neither it nor the config says.
pub const DEFAULT_NOTIFY_ON: &[NotifyEvent] = &[NotifyEvent::Failure, NotifyEvent::Recovery];

/// A job's notification settings; all optional (`Default` is "unset").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notify {
    /// `notify = ["ops"]`: the config's targets to tell; `None` = the
    /// config's `default_notify`.
    pub targets: Option<Vec<String>>,
    /// `notify_on = [...]`: which events; `None` = the config's
    /// `default_notify_on`, else [`DEFAULT_NOTIFY_ON`].
    pub on: Option<Vec<NotifyEvent>>,
    /// `notify_after = N`: a failure streak is told when it reaches N
    /// consecutive failures (default 1: at the first).
    pub after: Option<u32>,
    /// `repeat_every = "6h"`: a streak still failing is told again this long
    /// after it was last told (default: never).
    pub repeat_every: Option<Duration>,
    /// `expect_success_within = "26h"`: a dead-man check.
    pub expect_success_within: Option<Duration>,
}

impl Notify {
    /// Whether any of these settings is set.
    pub fn is_set(&self) -> bool {
        *self != Notify::default()
    }
}
