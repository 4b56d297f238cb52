//! A doubling delay between tries of something that keeps failing: the
//! store's writer retrying a batch, the API's accept loop, the daemon
//! reading job files again. Pure: it only says how long to wait; the
//! caller waits (with `tokio::time`) and says when a try succeeded.

use std::time::Duration;

/// Waits of `first`, then twice the last one, up to `max`, until
/// [`reset`](Backoff::reset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait (and the one after a reset).
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// The wait `next_wait` gave last; `None` before the first or after a reset.
    last: Option<Duration>,
}

impl Backoff {
    /// A back-off that starts at `first` and doubles up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max, last: None }
    }

    /// The wait before the next try: `first` the first time, then double the
    /// last wait, at most `max`.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.last.map_or(self.first, |d| d.saturating_mul(2)).min(self.max);
        self.last = Some(wait);
        wait
    }

    /// A try succeeded: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_wait_doubles_up_to_the_max_and_starts_over_after_a_reset() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let waits: Vec<_> = (0..6).map(|_| b.next_wait()).collect();
        assert_eq!(waits, [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]);
        b.reset();
        assert_eq!(b.next_wait(), 100 * MS, "starts over");
        assert_eq!(b.next_wait(), 200 * MS);
    }

    #[test]
    fn a_first_wait_above_the_max_is_capped_and_huge_waits_do_not_overflow() {
        assert_eq!(Backoff::new(10 * MS, 5 * MS).next_wait(), 5 * MS);
        let mut b = Backoff::new(Duration::MAX / 2 + MS, Duration::MAX);
        b.next_wait();
        assert_eq!(b.next_wait(), Duration::MAX, "saturates instead of panicking");
    }
}
