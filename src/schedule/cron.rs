//! A cron expression matched against a time zone's wall clock, with the DST
//! rules of the module doc.
//!
//! The search never gives croner a zone with DST: between two offset changes
//! a zone is a fixed UTC offset, where wall time and instants advance
//! together, so croner's next match in that offset is the next real match as
//! long as no offset change comes first. When one does, the search goes on
//! from the change in the new offset, after applying the fixed-time rules
//! for the gap or the repeated hour it made.

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc};
use croner::Cron;

use super::DstRule;

/// How far apart the zone's offset is probed to find its changes. Real zones
/// change offset months apart (days at the very least), never twice in an
/// hour, so no pair of changes can hide between two probes.
const PROBE: TimeDelta = TimeDelta::hours(1);

/// Offset changes and repeated hours one search may cross before giving up;
/// a real zone has a couple a year, and croner itself stops at year 5000.
const MAX_ROUNDS: usize = 64;

/// A parsed cron expression in a zone.
#[derive(Debug, Clone)]
pub(super) struct CronRule {
    cron: Cron,
    zone: Option<chrono_tz::Tz>,
    fixed_time: bool,
}

impl CronRule {
    /// `zone: None` is the host's local time.
    pub(super) fn new(cron: Cron, zone: Option<chrono_tz::Tz>) -> CronRule {
        let fixed_time = is_fixed_time(&cron);
        CronRule { cron, zone, fixed_time }
    }

    /// The first fire strictly after `t`.
    pub(super) fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_explained(t).map(|(fire, _)| fire)
    }

    /// The first fire strictly after `t`, and the DST rule that placed it
    /// if one did (`gatherd check --next`).
    pub(super) fn next_explained(&self, t: DateTime<Utc>) -> Option<(DateTime<Utc>, Option<DstRule>)> {
        match &self.zone {
            Some(tz) => explained(&self.cron, self.fixed_time, tz, t),
            None => explained(&self.cron, self.fixed_time, &chrono::Local, t),
        }
    }
}

/// [`next_in`] with the DST rule that placed the fire.
fn explained<Z: TimeZone>(
    cron: &Cron,
    fixed_time: bool,
    tz: &Z,
    after: DateTime<Utc>,
) -> Option<(DateTime<Utc>, Option<DstRule>)> {
    let (fire, skipped) = next_in(cron, fixed_time, tz, after)?;
    if let Some(skipped) = skipped {
        return Some((fire, Some(DstRule::AfterGap { skipped })));
    }
    let rule = match tz.from_local_datetime(&fire.with_timezone(tz).naive_local()) {
        LocalResult::Ambiguous(first, _) if fixed_time => {
            // Only the first pass can be a fixed-time job's fire.
            (first.with_timezone(&Utc) == fire).then_some(DstRule::FirstPassOnly)
        }
        LocalResult::Ambiguous(first, _) => {
            Some(DstRule::RepeatedHour { second_pass: first.with_timezone(&Utc) != fire })
        }
        _ => None,
    };
    Some((fire, rule))
}

/// Whether the job names its times: no `*` and no `/` step in the second,
/// minute and hour fields (Vixie cron's rule; croner's own counts a list as
/// an interval). Any `/` counts, even `2/1`: croner keeps no step of one,
/// so the fields' text is read for it.
fn is_fixed_time(cron: &Cron) -> bool {
    let p = &cron.pattern;
    let fields: Vec<&str> = cron.as_str().split_whitespace().collect();
    // Six fields have seconds first; a nickname is one word with no `/`.
    let time_fields = if fields.len() == 6 { 3 } else { 2 };
    let stepped = fields.iter().take(time_fields).any(|field| field.contains('/'));
    !stepped && [&p.seconds, &p.minutes, &p.hours].iter().all(|field| !field.from_wildcard && field.step <= 1)
}

/// The first fire of `cron` in `tz` strictly after `after`, and, when a
/// fixed-time job's wall time fell in a spring-forward gap and it runs at
/// the gap's end instead, that wall time.
fn next_in<Z: TimeZone>(
    cron: &Cron,
    fixed_time: bool,
    tz: &Z,
    after: DateTime<Utc>,
) -> Option<(DateTime<Utc>, Option<NaiveDateTime>)> {
    // Cron has a resolution of one second; "after 12:00:00.5" is "from 12:00:01".
    let mut from = after.with_nanosecond(0)?;
    let mut inclusive = false;
    for _ in 0..MAX_ROUNDS {
        if fixed_time && let Some(end) = second_pass_end(tz, from) {
            // Every wall time of the repeated hour already came in its first pass.
            from = end;
            inclusive = true;
        }
        let offset = offset_at(tz, from);
        let candidate = cron.find_next_occurrence(&from.with_timezone(&offset), inclusive).ok()?.with_timezone(&Utc);
        let Some(change) = first_offset_change(tz, offset, from, candidate) else {
            return Some((candidate, None));
        };
        if fixed_time && let Some(skipped) = gap_match(cron, tz, offset, change) {
            return Some((change, Some(skipped)));
        }
        from = change;
        inclusive = true;
    }
    None
}

/// The zone's UTC offset at `t`.
fn offset_at<Z: TimeZone>(tz: &Z, t: DateTime<Utc>) -> FixedOffset {
    tz.offset_from_utc_datetime(&t.naive_utc()).fix()
}

/// The first instant in `(from, to]` where the zone's offset is no longer
/// `offset` (the offset at `from`), to the second.
fn first_offset_change<Z: TimeZone>(
    tz: &Z,
    offset: FixedOffset,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut lo = from;
    while lo < to {
        let mut hi = (lo + PROBE).min(to);
        if offset_at(tz, hi) != offset {
            // The offset is `offset` at lo and another at hi: bisect to the second.
            while hi - lo > TimeDelta::seconds(1) {
                let mid = lo + TimeDelta::seconds((hi - lo).num_seconds() / 2);
                if offset_at(tz, mid) == offset {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            return Some(hi);
        }
        lo = hi;
    }
    None
}

/// The first wall time `cron` matches that the clock jumping forward at
/// `change` (from offset `before`) skipped, if any: a fixed-time job runs
/// then, at the first instant after the gap.
fn gap_match<Z: TimeZone>(cron: &Cron, tz: &Z, before: FixedOffset, change: DateTime<Utc>) -> Option<NaiveDateTime> {
    let after = offset_at(tz, change);
    if after.local_minus_utc() <= before.local_minus_utc() {
        return None;
    }
    // The gap is the wall times from `change` read in the old offset up to
    // `change` read in the new one.
    let gap_end = change.with_timezone(&after).naive_local();
    let first = cron.find_next_occurrence(&change.with_timezone(&before), true).ok()?.naive_local();
    (first < gap_end).then_some(first)
}

/// If `t` is in the second pass of a repeated hour (its wall time came once
/// before), the instant that pass ends.
fn second_pass_end<Z: TimeZone>(tz: &Z, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let wall = t.with_timezone(tz).naive_local();
    let LocalResult::Ambiguous(first, _) = tz.from_local_datetime(&wall) else {
        return None;
    };
    let first = first.with_timezone(&Utc);
    if first == t {
        return None;
    }
    // The second pass began at the change between the two copies of this
    // wall time, and lasts as long as the clock went back.
    let change = first_offset_change(tz, offset_at(tz, first), first, t)?;
    Some(change + (t - first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::parse_cron;

    fn fixed(expr: &str) -> bool {
        is_fixed_time(&parse_cron(expr).expect("a valid expression"))
    }

    #[test]
    fn job_kinds_follow_vixie_cron() {
        assert!(fixed("30 2 * * *"));
        assert!(fixed("0 30 2 * * *"));
        assert!(fixed("0 30 2,14 * * *"));
        assert!(fixed("0 0-30 2 * * *"));
        assert!(fixed("@daily"));
        assert!(!fixed("* * * * *"));
        assert!(!fixed("*/10 * * * * *"));
        assert!(!fixed("0 * * * *"));
        assert!(!fixed("@hourly"));
        assert!(!fixed("*/30 2 * * *"));
        assert!(!fixed("0 0 0-23/2 * * *"));
    }

    #[test]
    fn any_step_makes_a_field_interval_like_even_a_step_of_one() {
        assert!(!fixed("30 2/1 28 3 *"), "30 2/1 28 3 *");
        assert!(!fixed("30/1 2 * * *"), "30/1 2 * * *");
        assert!(!fixed("0 30 2-4/1 * * *"), "0 30 2-4/1 * * *");
        assert!(!fixed("5/1 30 2 * * *"), "5/1 30 2 * * *");
        // A step in the date fields does not make the time interval-like.
        assert!(fixed("30 2 1/1 * *"), "30 2 1/1 * *");
    }

    #[test]
    fn a_step_of_one_in_the_spring_gap_is_skipped_like_an_interval() {
        // Berlin springs forward at 2026-03-29 02:00 CET (01:00 UTC): 02:30
        // does not exist; an interval job goes on at 03:30 CEST, where a
        // fixed-time job would run at 03:00.
        let cron = parse_cron("30 2/1 29 3 *").unwrap();
        let rule = CronRule::new(cron, Some(chrono_tz::Europe::Berlin));
        let from = "2026-03-29T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(rule.next_after(from), Some("2026-03-29T01:30:00Z".parse::<DateTime<Utc>>().unwrap()));
    }

    /// The fires in `(from, to]` by the rules of the module doc, found the
    /// slow way: every second's wall time, and every gap's wall times.
    fn reference<Z: TimeZone>(
        cron: &Cron,
        fixed: bool,
        tz: &Z,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut before = offset_at(tz, from);
        let mut t = from + TimeDelta::seconds(1);
        while t <= to {
            let now = offset_at(tz, t);
            if fixed && now.local_minus_utc() > before.local_minus_utc() {
                // The clock jumped forward at t: does a skipped wall time match?
                let end = t.with_timezone(&now).naive_local();
                let mut wall = t.with_timezone(&before).naive_local();
                while wall < end {
                    let in_old = before.from_local_datetime(&wall).single().expect("fixed offsets are unambiguous");
                    if cron.is_time_matching(&in_old).unwrap_or(false) {
                        out.push(t);
                        break;
                    }
                    wall += TimeDelta::seconds(1);
                }
            }
            before = now;
            let local = t.with_timezone(tz);
            if cron.is_time_matching(&local).unwrap_or(false) {
                let second_pass = match tz.from_local_datetime(&local.naive_local()) {
                    LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc) != t,
                    _ => false,
                };
                if !(fixed && second_pass) && out.last() != Some(&t) {
                    out.push(t);
                }
            }
            t += TimeDelta::seconds(1);
        }
        out
    }

    #[test]
    fn fires_match_a_second_by_second_reference_around_every_offset_change() {
        // A one-hour DST, a half-hour DST (Lord Howe) and changes at midnight (Santiago).
        let zones = [chrono_tz::Europe::Berlin, chrono_tz::Australia::Lord_Howe, chrono_tz::America::Santiago];
        let exprs = [
            "* * * * *",
            "*/7 * * * *",
            "*/20 * * * * *",
            "0 */2 * * *",
            "0 0 * * *",
            "45 0 * * *",
            "59 1 * * *",
            "10 2 * * *",
            "30 2 * * *",
            "0 3 * * *",
            "15 1-3 * * *",
            "0 30 2,14 * * *",
            "0 15,45 1,2 * * *",
        ];
        let year_start = "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let year_end = "2027-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        for tz in zones {
            let mut changes = Vec::new();
            let mut from = year_start;
            while let Some(change) = first_offset_change(&tz, offset_at(&tz, from), from, year_end) {
                changes.push(change);
                from = change;
            }
            assert_eq!(changes.len(), 2, "{tz}");
            for change in changes {
                let (a, b) = (change - TimeDelta::hours(4), change + TimeDelta::hours(4));
                for expr in exprs {
                    let cron = parse_cron(expr).unwrap();
                    let fixed = is_fixed_time(&cron);
                    let want = reference(&cron, fixed, &tz, a, b);
                    let mut got = Vec::new();
                    let mut t = a;
                    while let Some(next) = next_in(&cron, fixed, &tz, t).map(|(fire, _)| fire).filter(|n| *n <= b) {
                        got.push(next);
                        t = next;
                    }
                    assert_eq!(got, want, "{expr} in {tz} around {change}");
                    // Asked from anywhere, not only from a fire.
                    let mut t = a;
                    while let Some(&expected) = want.iter().find(|w| **w > t) {
                        assert_eq!(
                            next_in(&cron, fixed, &tz, t).map(|(fire, _)| fire),
                            Some(expected),
                            "{expr} in {tz} after {t}"
                        );
                        t += TimeDelta::seconds(397);
                    }
                }
            }
        }
    }

    #[test]
    fn offset_changes_are_found_to_the_second() {
        let tz = chrono_tz::Europe::Berlin;
        let from = "2026-03-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let to = "2026-12-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let spring = first_offset_change(&tz, offset_at(&tz, from), from, to).unwrap();
        assert_eq!(spring, "2026-03-29T01:00:00Z".parse::<DateTime<Utc>>().unwrap());
        let autumn = first_offset_change(&tz, offset_at(&tz, spring), spring, to).unwrap();
        assert_eq!(autumn, "2026-10-25T01:00:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(first_offset_change(&tz, offset_at(&tz, autumn), autumn, to), None);
    }
}
