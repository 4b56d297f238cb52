//! Catching up after downtime: which fires a scheduled job missed while the
//! daemon was down, which of them run now (`catch_up`) and which are recorded
//! as missed. Pure: the supervisor passes the schedule, the last recorded fire
//! and `now`.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::job::CatchUp;
use crate::schedule::Schedule;

/// How far back missed fires may be caught up when a job does not say.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// At most this many missed fires are looked at (and recorded) per job and
/// start; beyond it only the count is logged.
pub const MAX_MISSED: usize = 10_000;

/// The fires missed between the last recorded one and now, split by policy.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// To run now, oldest first.
    pub run: Vec<DateTime<Utc>>,
    /// To record as missed.
    pub missed: Vec<DateTime<Utc>>,
    /// Missed fires beyond [`MAX_MISSED`], counted only.
    pub uncounted: bool,
}

/// Up to [`MAX_MISSED`] fires of `schedule` in `(from, to]`, and whether
/// there were more.
fn slots(schedule: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> (Vec<DateTime<Utc>>, bool) {
    let mut found = Vec::new();
    let mut t = from;
    while let Some(next) = schedule.next_after(t) {
        if next > to {
            return (found, false);
        }
        if found.len() == MAX_MISSED {
            return (found, true);
        }
        found.push(next);
        t = next;
    }
    (found, false)
}

/// Plans the catch-up of a job whose last recorded fire was `last`: fires
/// older than the window are missed; of the ones inside it, `policy` says
/// which run.
pub fn plan(
    schedule: &Schedule,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: CatchUp,
    window: Option<Duration>,
) -> Plan {
    let window = chrono::Duration::from_std(window.unwrap_or(DEFAULT_WINDOW)).unwrap_or(chrono::Duration::MAX);
    let start = now.checked_sub_signed(window).unwrap_or(last).max(last);
    let (mut missed, old_uncounted) = slots(schedule, last, start);
    let (recent, recent_uncounted) = slots(schedule, start, now);
    let run = match policy {
        CatchUp::Skip => {
            missed.extend(recent);
            Vec::new()
        }
        CatchUp::All => recent,
        CatchUp::Latest => {
            let mut recent = recent;
            let latest = recent.pop();
            missed.extend(recent);
            latest.into_iter().collect()
        }
    };
    Plan { run, missed, uncounted: old_uncounted || recent_uncounted }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::job::Trigger;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, h, m, 0).single().expect("a valid time")
    }

    fn hourly() -> Schedule {
        let every = Trigger::Every(Duration::from_secs(3600));
        Schedule::new(&every, at(0, 0)).expect("valid").expect("scheduled")
    }

    #[test]
    fn skip_records_every_missed_fire() {
        let p = plan(&hourly(), at(1, 0), at(4, 30), CatchUp::Skip, None);
        assert_eq!(p, Plan { run: vec![], missed: vec![at(2, 0), at(3, 0), at(4, 0)], uncounted: false });
    }

    #[test]
    fn latest_runs_the_last_missed_fire_once() {
        let p = plan(&hourly(), at(1, 0), at(4, 30), CatchUp::Latest, None);
        assert_eq!(p.run, vec![at(4, 0)]);
        assert_eq!(p.missed, vec![at(2, 0), at(3, 0)]);
    }

    #[test]
    fn all_runs_each_missed_fire_inside_the_window() {
        let p = plan(&hourly(), at(1, 0), at(4, 30), CatchUp::All, Some(Duration::from_secs(2 * 3600)));
        assert_eq!(p.run, vec![at(3, 0), at(4, 0)]);
        assert_eq!(p.missed, vec![at(2, 0)]);
    }

    #[test]
    fn latest_outside_the_window_is_missed_too() {
        let p = plan(&hourly(), at(1, 0), at(4, 30), CatchUp::Latest, Some(Duration::from_secs(60)));
        assert!(p.run.is_empty());
        assert_eq!(p.missed.len(), 3);
    }

    #[test]
    fn nothing_missed_when_the_next_fire_is_still_ahead() {
        assert_eq!(plan(&hourly(), at(4, 0), at(4, 30), CatchUp::All, None), Plan::default());
    }

    #[test]
    fn a_long_outage_is_bounded_and_latest_is_still_the_latest() {
        let every_second = Schedule::new(&Trigger::Every(Duration::from_secs(1)), at(0, 0)).expect("ok").expect("some");
        let window = Some(Duration::from_secs(3600));
        let p = plan(&every_second, at(0, 0), at(23, 0), CatchUp::Latest, window);
        assert_eq!(p.run, vec![at(23, 0)]);
        assert!(p.uncounted);
        assert!(p.missed.len() <= 2 * MAX_MISSED);
    }
}
