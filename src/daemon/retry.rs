//! Reads to try again: a job file (or the whole jobs folder) that could not
//! be read for a passing reason — out of file descriptors (`EMFILE`,
//! `ENFILE`) or memory — is read again later, with a growing delay, until
//! it can be; it is never forgotten. Pure: the caller passes `now` and
//! does the reading.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::job::Backoff;
use crate::watch::JobId;

/// The first delay before reading again.
pub const FIRST: Duration = Duration::from_millis(100);
/// The longest delay between two tries.
pub const MAX: Duration = Duration::from_secs(10);

/// What is waiting to be read again, and when.
#[derive(Debug)]
pub struct Retries {
    /// Job files to read again.
    pub ids: BTreeSet<JobId>,
    /// The whole folder to scan again.
    pub rescan: bool,
    /// When; `None` when nothing waits.
    pub at: Option<Instant>,
    /// The delays: doubling while tries keep failing.
    backoff: Backoff,
}

impl Default for Retries {
    fn default() -> Retries {
        Retries { ids: BTreeSet::new(), rescan: false, at: None, backoff: Backoff::new(FIRST, MAX) }
    }
}

impl Retries {
    /// Something failed for a passing reason at `now`: try again after the
    /// next delay (100 ms, doubling up to 10 s while tries fail). Failures
    /// while a try is already due join it: the delay grows per try, not per
    /// file.
    pub fn schedule(&mut self, now: Instant) {
        if self.at.is_some() {
            return;
        }
        self.at = Some(now + self.backoff.next_wait());
    }

    /// Takes what is due at `now` (nothing before its time).
    pub fn take_due(&mut self, now: Instant) -> Option<(Vec<JobId>, bool)> {
        if self.at.is_none_or(|at| at > now) {
            return None;
        }
        self.at = None;
        let ids = std::mem::take(&mut self.ids).into_iter().collect();
        Some((ids, std::mem::take(&mut self.rescan)))
    }

    /// A try succeeded with nothing left to retry: the next failure starts
    /// from the first delay again.
    pub fn settled(&mut self) {
        if self.ids.is_empty() && !self.rescan {
            self.backoff.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_while_tries_fail_and_starts_over_once_they_succeed() {
        let t0 = Instant::now();
        let mut r = Retries { rescan: true, ..Retries::default() };
        r.schedule(t0);
        assert_eq!(r.at, Some(t0 + FIRST));
        assert!(r.take_due(t0).is_none(), "not before its time");
        assert_eq!(r.take_due(t0 + FIRST), Some((vec![], true)));
        r.rescan = true;
        r.schedule(t0);
        r.schedule(t0);
        assert_eq!(r.at, Some(t0 + FIRST * 2), "one more failure before the try: the same try");
        for _ in 0..20 {
            r.take_due(t0 + MAX * 2);
            r.schedule(t0);
        }
        assert_eq!(r.at, Some(t0 + MAX), "capped");
        r.take_due(t0 + MAX);
        r.settled();
        r.rescan = true;
        r.schedule(t0);
        assert_eq!(r.at, Some(t0 + FIRST), "starts over");
    }
}
