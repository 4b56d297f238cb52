//! What a run's end tells, given where the job's failure streak stands: the
//! "no storms" rule. Pure: the caller passes the state, the subscription and
//! `now`, and stores the state it gets back.
//!
//! - A run that did not succeed (failed, timed out) lengthens the streak; the
//!   streak's `failure` is sent once, when it reaches `notify_after`
//!   consecutive failures (1 by default), then again only every
//!   `repeat_every` if set.
//! - A success ends the streak: `recovery` once, if its `failure` was sent
//!   (or the job does not subscribe to `failure`, so there was none to send),
//!   or if the job was told `stale` (its dead-man check).
//! - A cancelled run neither lengthens nor ends a streak: someone (or a
//!   shutdown) stopped it; it says nothing about the job's health.

use chrono::{DateTime, Utc};

use crate::exec::Status;
use crate::job::NotifyEvent;
use crate::store::NotifyState;

/// A job's subscription, resolved against the config's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The config's targets to tell.
    pub targets: Vec<String>,
    /// The events told.
    pub on: Vec<NotifyEvent>,
    /// Consecutive failures before a streak is told (≥ 1).
    pub after: u32,
    /// A streak still failing is told again this often.
    pub repeat_every: Option<std::time::Duration>,
}

impl Subscription {
    fn wants(&self, event: NotifyEvent) -> bool {
        self.on.contains(&event)
    }
}

/// Updates `state` for a run that ended with `status` and returns the events
/// to send for it.
pub fn after_run(state: &mut NotifyState, status: Status, sub: &Subscription, now: DateTime<Utc>) -> Vec<NotifyEvent> {
    let mut events = Vec::new();
    match status {
        Status::Succeeded => {
            let streak_told = state.failures > 0 && (state.told || !sub.wants(NotifyEvent::Failure));
            if (streak_told || state.stale) && sub.wants(NotifyEvent::Recovery) {
                events.push(NotifyEvent::Recovery);
            }
            if sub.wants(NotifyEvent::Success) {
                events.push(NotifyEvent::Success);
            }
            *state = NotifyState::default();
        }
        Status::Failed | Status::TimedOut => {
            state.failures = state.failures.saturating_add(1);
            if !sub.wants(NotifyEvent::Failure) {
                return events;
            }
            let due = if !state.told {
                state.failures >= sub.after.max(1)
            } else {
                match (sub.repeat_every, state.told_at) {
                    (Some(every), Some(at)) => chrono::Duration::from_std(every).is_ok_and(|every| now - at >= every),
                    _ => false,
                }
            };
            if due {
                state.told = true;
                state.told_at = Some(now);
                events.push(NotifyEvent::Failure);
            }
        }
        _ => {}
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(after: u32, repeat: Option<u64>) -> Subscription {
        Subscription {
            targets: vec!["ops".into()],
            on: crate::job::DEFAULT_NOTIFY_ON.to_vec(),
            after,
            repeat_every: repeat.map(std::time::Duration::from_secs),
        }
    }

    fn run(state: &mut NotifyState, statuses: &[Status], sub: &Subscription) -> Vec<Vec<NotifyEvent>> {
        let t0 = Utc::now();
        statuses
            .iter()
            .enumerate()
            .map(|(i, s)| after_run(state, *s, sub, t0 + chrono::Duration::minutes(i as i64)))
            .collect()
    }

    use NotifyEvent::{Failure, Recovery};
    use Status::{Cancelled, Failed, Succeeded, TimedOut};

    #[test]
    fn a_streak_is_told_once_and_its_end_once() {
        let mut state = NotifyState::default();
        let got = run(&mut state, &[Failed, TimedOut, Failed, Succeeded, Succeeded], &sub(1, None));
        assert_eq!(got, [vec![Failure], vec![], vec![], vec![Recovery], vec![]]);
        assert_eq!(state, NotifyState::default());
    }

    #[test]
    fn notify_after_tells_the_streak_at_its_nth_failure_and_a_short_one_not_at_all() {
        let mut state = NotifyState::default();
        let got = run(&mut state, &[Failed, Succeeded, Failed, Failed, Failed, Succeeded], &sub(2, None));
        assert_eq!(got, [vec![], vec![], vec![], vec![Failure], vec![], vec![Recovery]]);
    }

    #[test]
    fn repeat_every_tells_a_long_streak_again() {
        let mut state = NotifyState::default();
        // One run a minute, repeated every 2 minutes.
        let got = run(&mut state, &[Failed, Failed, Failed, Failed], &sub(1, Some(120)));
        assert_eq!(got, [vec![Failure], vec![], vec![Failure], vec![]]);
    }

    #[test]
    fn a_success_after_a_stale_sends_recovery_and_clears_it() {
        let mut state = NotifyState { stale: true, ..NotifyState::default() };
        assert_eq!(run(&mut state, &[Succeeded, Succeeded], &sub(1, None)), [vec![Recovery], vec![]]);
        assert_eq!(state, NotifyState::default());
    }

    #[test]
    fn a_cancelled_run_neither_lengthens_nor_ends_a_streak() {
        let mut state = NotifyState::default();
        let got = run(&mut state, &[Failed, Cancelled, Failed], &sub(2, None));
        assert_eq!(got, [vec![], vec![], vec![Failure]]);
        assert_eq!(state.failures, 2);
    }
}
