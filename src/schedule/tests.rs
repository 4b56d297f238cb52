//! When schedules fire, as specs with exact instants. Europe/Berlin in 2026
//! springs forward on 29 March (02:00 CET → 03:00 CEST, at 01:00 UTC) and
//! falls back on 25 October (03:00 CEST → 02:00 CET, at 01:00 UTC).

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::*;

/// An instant written in RFC 3339, with its offset (`...+02:00` or `Z`).
fn at(s: &str) -> DateTime<Utc> {
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) => t.with_timezone(&Utc),
        Err(e) => panic!("bad test instant {s}: {e}"),
    }
}

fn cron(expr: &str, tz: Option<Tz>) -> Schedule {
    let trigger = Trigger::Cron { expr: expr.to_string(), timezone: tz };
    match Schedule::new(&trigger, at("2000-01-01T00:00:00Z")) {
        Ok(Some(s)) => s,
        other => panic!("expected a schedule for {expr}, got {other:?}"),
    }
}

fn berlin(expr: &str) -> Schedule {
    cron(expr, Some(chrono_tz::Europe::Berlin))
}

/// The next `n` fires after `after`, each as RFC 3339 in `tz`.
fn fires(s: &Schedule, tz: Tz, after: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    let mut t = at(after);
    for _ in 0..n {
        t = match s.next_after(t) {
            Some(next) => next,
            None => panic!("no fire after {t}"),
        };
        out.push(t.with_timezone(&tz).to_rfc3339());
    }
    out
}

// ---- cron expressions -----------------------------------------------------

#[test]
fn five_fields_fire_on_the_minute() {
    let s = cron("*/15 * * * *", Some(Tz::UTC));
    assert_eq!(
        fires(&s, Tz::UTC, "2026-05-04T12:07:30Z", 3),
        ["2026-05-04T12:15:00+00:00", "2026-05-04T12:30:00+00:00", "2026-05-04T12:45:00+00:00"]
    );
}

#[test]
fn six_fields_have_seconds_first() {
    let s = cron("*/10 * * * * *", Some(Tz::UTC));
    assert_eq!(
        fires(&s, Tz::UTC, "2026-05-04T12:00:05.5Z", 3),
        ["2026-05-04T12:00:10+00:00", "2026-05-04T12:00:20+00:00", "2026-05-04T12:00:30+00:00"]
    );
}

#[test]
fn the_next_fire_is_strictly_after_t() {
    let s = cron("*/10 * * * * *", Some(Tz::UTC));
    assert_eq!(s.next_after(at("2026-05-04T12:00:10Z")), Some(at("2026-05-04T12:00:20Z")));
    assert_eq!(s.next_after(at("2026-05-04T12:00:09.999Z")), Some(at("2026-05-04T12:00:10Z")));
    assert_eq!(s.next_after(at("2026-05-04T12:00:10.001Z")), Some(at("2026-05-04T12:00:20Z")));
}

#[test]
fn nicknames_fields_and_names_parse_like_in_the_loader() {
    let s = cron("@daily", Some(Tz::UTC));
    assert_eq!(s.next_after(at("2026-05-04T12:00:00Z")), Some(at("2026-05-05T00:00:00Z")));
    // 2026-05-04 is a Monday.
    let s = cron("0 9 * * MON-FRI", Some(Tz::UTC));
    assert_eq!(s.next_after(at("2026-05-08T10:00:00Z")), Some(at("2026-05-11T09:00:00Z")));
}

#[test]
fn every_cron_nickname_parses() {
    let monday_noon = at("2026-05-04T12:00:00Z");
    for (nick, next) in [
        ("@yearly", "2027-01-01T00:00:00Z"),
        ("@annually", "2027-01-01T00:00:00Z"),
        ("@monthly", "2026-06-01T00:00:00Z"),
        ("@weekly", "2026-05-10T00:00:00Z"),
        ("@daily", "2026-05-05T00:00:00Z"),
        ("@midnight", "2026-05-05T00:00:00Z"),
        ("@Midnight", "2026-05-05T00:00:00Z"),
        ("@hourly", "2026-05-04T13:00:00Z"),
    ] {
        assert_eq!(cron(nick, Some(Tz::UTC)).next_after(monday_noon), Some(at(next)), "{nick}");
    }
}

#[test]
fn reboot_is_refused_with_the_one_shot_job_instead() {
    let err = parse_cron("@reboot").map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("one-shot job"), "{err}");
}

#[test]
fn cron_times_are_wall_times_in_the_timezone() {
    let s = berlin("0 9 * * *");
    // CET (+01:00) in winter, CEST (+02:00) in summer.
    assert_eq!(s.next_after(at("2026-01-10T12:00:00Z")), Some(at("2026-01-11T08:00:00Z")));
    assert_eq!(s.next_after(at("2026-07-10T12:00:00Z")), Some(at("2026-07-11T07:00:00Z")));
    let s = cron("0 9 * * *", Some(chrono_tz::America::New_York));
    assert_eq!(s.next_after(at("2026-01-10T12:00:00Z")), Some(at("2026-01-10T14:00:00Z")));
    let s = cron("30 5 * * *", Some(chrono_tz::Asia::Kolkata));
    assert_eq!(s.next_after(at("2026-01-10T00:00:00Z")), Some(at("2026-01-11T00:00:00Z")));
}

#[test]
fn no_timezone_means_the_hosts_local_time() {
    // Seconds line up in every zone the host may be in (offsets are whole
    // minutes), so this holds whatever the host's zone is.
    let s = cron("*/10 * * * * *", None);
    assert_eq!(s.next_after(at("2026-05-04T12:00:05Z")), Some(at("2026-05-04T12:00:10Z")));
    // And a daily job fires once a day, at the same local time.
    let s = cron("0 12 * * *", None);
    let first = s.next_after(at("2026-05-04T00:00:00Z")).unwrap();
    let second = s.next_after(first).unwrap();
    assert!(second - first >= TimeDelta::hours(23) && second - first <= TimeDelta::hours(25));
}

#[test]
fn a_date_that_never_comes_never_fires() {
    let s = cron("0 0 30 2 *", Some(Tz::UTC));
    assert_eq!(s.next_after(at("2026-01-01T00:00:00Z")), None);
}

// ---- spring forward: 2026-03-29, 02:00 CET → 03:00 CEST ------------------

#[test]
fn a_fixed_time_in_the_gap_runs_once_right_after_it() {
    let s = berlin("30 2 * * *");
    assert_eq!(
        fires(&s, chrono_tz::Europe::Berlin, "2026-03-28T12:00:00Z", 3),
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]
    );
    // In UTC: the gap ends at 01:00; the day after, 02:30 CEST is 00:30.
    assert_eq!(s.next_after(at("2026-03-29T00:59:59Z")), Some(at("2026-03-29T01:00:00Z")));
    assert_eq!(s.next_after(at("2026-03-29T01:00:00Z")), Some(at("2026-03-30T00:30:00Z")));
}

#[test]
fn a_fixed_time_at_the_end_of_the_gap_runs_once() {
    // 03:00 exists; it must not also count as "in the gap".
    let s = berlin("0 3 * * *");
    assert_eq!(
        fires(&s, chrono_tz::Europe::Berlin, "2026-03-28T12:00:00Z", 2),
        ["2026-03-29T03:00:00+02:00", "2026-03-30T03:00:00+02:00"]
    );
    // Two fixed times, one in the gap and one right after it: one run.
    let s = berlin("0 30,59 2 * * *");
    assert_eq!(
        fires(&s, chrono_tz::Europe::Berlin, "2026-03-29T00:00:00Z", 2),
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    );
}

#[test]
fn an_interval_job_skips_the_gap() {
    let s = berlin("*/30 2 * * *");
    assert_eq!(
        fires(&s, chrono_tz::Europe::Berlin, "2026-03-28T12:00:00Z", 3),
        ["2026-03-30T02:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:00:00+02:00"]
    );
}

#[test]
fn every_minute_goes_straight_through_the_gap() {
    let s = berlin("* * * * *");
    assert_eq!(
        fires(&s, chrono_tz::Europe::Berlin, "2026-03-29T00:58:00Z", 3),
        ["2026-03-29T01:59:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:01:00+02:00"]
    );
}

#[test]
fn every_second_goes_straight_through_the_gap() {
    let s = berlin("* * * * * *");
    assert_eq!(
        fires(&s, chrono_tz::Europe::Berlin, "2026-03-29T00:59:58Z", 3),
        ["2026-03-29T01:59:59+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:00:01+02:00"]
    );
}

// ---- fall back: 2026-10-25, 03:00 CEST → 02:00 CET -----------------------

#[test]
fn a_fixed_time_in_the_repeated_hour_runs_once_in_the_first_pass() {
    let s = berlin("30 2 * * *");
    assert_eq!(
        fires(&s, chrono_tz::Europe::Berlin, "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    );
    assert_eq!(s.next_after(at("2026-10-25T00:30:00Z")), Some(at("2026-10-26T01:30:00Z")));
}

#[test]
fn asked_during_the_second_pass_a_fixed_time_waits_for_the_next_day() {
    let s = berlin("30 2 * * *");
    // 02:10 CET, the second 02:10 of the night: 02:30 already ran (in CEST).
    assert_eq!(s.next_after(at("2026-10-25T02:10:00+01:00")), Some(at("2026-10-26T02:30:00+01:00")));
    // At the very start of the second pass, too.
    assert_eq!(s.next_after(at("2026-10-25T02:00:00+01:00")), Some(at("2026-10-26T02:30:00+01:00")));
    // And a fixed time just after the repeated hour still runs that day.
    let s = berlin("0 3 * * *");
    assert_eq!(s.next_after(at("2026-10-25T02:10:00+01:00")), Some(at("2026-10-25T03:00:00+01:00")));
}

#[test]
fn a_list_of_fixed_times_also_runs_once_in_the_repeated_hour() {
    // croner alone counts a list of hours as an interval job and runs it twice.
    let s = berlin("0 30 2,14 * * *");
    assert_eq!(
        fires(&s, chrono_tz::Europe::Berlin, "2026-10-24T12:00:00Z", 3),
        ["2026-10-24T14:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T14:30:00+01:00"]
    );
}

#[test]
fn every_minute_keeps_firing_every_real_minute_through_the_repeated_hour() {
    let s = berlin("* * * * *");
    let start = at("2026-10-25T00:58:00Z");
    let fires = fires(&s, chrono_tz::Europe::Berlin, "2026-10-25T00:58:00Z", 130);
    assert_eq!(fires[0], "2026-10-25T02:59:00+02:00");
    assert_eq!(fires[1], "2026-10-25T02:00:00+01:00");
    assert_eq!(fires[31], "2026-10-25T02:30:00+01:00");
    assert_eq!(fires[62], "2026-10-25T03:01:00+01:00");
    for (i, f) in fires.iter().enumerate() {
        let expected = start + TimeDelta::minutes(i as i64 + 1);
        assert_eq!(at(f), expected, "fire {i}");
    }
    // The first pass ran every minute too.
    assert_eq!(s.next_after(at("2026-10-25T02:29:30+02:00")), Some(at("2026-10-25T02:30:00+02:00")));
}

#[test]
fn every_second_keeps_firing_every_real_second_across_the_change() {
    let s = berlin("* * * * * *");
    assert_eq!(
        fires(&s, chrono_tz::Europe::Berlin, "2026-10-25T00:59:58Z", 3),
        ["2026-10-25T02:59:59+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T02:00:01+01:00"]
    );
    // From inside the second pass it goes on, never back into the first.
    assert_eq!(s.next_after(at("2026-10-25T02:15:00+01:00")), Some(at("2026-10-25T02:15:01+01:00")));
}

#[test]
fn an_hourly_job_fires_every_real_hour_through_the_repeated_hour() {
    let s = berlin("0 * * * *");
    assert_eq!(
        fires(&s, chrono_tz::Europe::Berlin, "2026-10-24T23:30:00Z", 4),
        [
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T03:00:00+01:00",
            "2026-10-25T04:00:00+01:00"
        ]
    );
}

#[test]
fn a_yearly_fixed_time_in_the_repeated_hour_is_found_from_a_year_away() {
    // Searching from spring crosses two offset changes of the summer.
    let s = berlin("30 2 25 10 *");
    assert_eq!(s.next_after(at("2026-01-01T00:00:00Z")), Some(at("2026-10-25T02:30:00+02:00")));
    let s = berlin("30 2 29 3 *");
    assert_eq!(s.next_after(at("2025-06-01T00:00:00Z")), Some(at("2026-03-29T03:00:00+02:00")));
}

// ---- every ------------------------------------------------------------------

fn every(interval: Duration, anchor: &str) -> Schedule {
    match Schedule::new(&Trigger::Every(interval), at(anchor)) {
        Ok(Some(s)) => s,
        other => panic!("expected a schedule, got {other:?}"),
    }
}

#[test]
fn every_fires_one_interval_after_the_anchor_and_then_on_slots() {
    let s = every(Duration::from_secs(30), "2026-05-04T12:00:00Z");
    assert_eq!(s.next_after(at("2026-05-04T12:00:00Z")), Some(at("2026-05-04T12:00:30Z")));
    assert_eq!(s.next_after(at("2026-05-04T12:00:30Z")), Some(at("2026-05-04T12:01:00Z")));
    assert_eq!(s.next_after(at("2026-05-04T12:00:59.999Z")), Some(at("2026-05-04T12:01:00Z")));
}

#[test]
fn every_never_drifts_with_the_length_of_runs() {
    // A run that ended 7.3 s after its slot does not move the next slot.
    let s = every(Duration::from_secs(30), "2026-05-04T12:00:00Z");
    assert_eq!(s.next_after(at("2026-05-04T12:00:37.3Z")), Some(at("2026-05-04T12:01:00Z")));
    let mut t = at("2026-05-04T12:00:00Z");
    for _ in 0..1000 {
        t = s.next_after(t + TimeDelta::milliseconds(1234)).unwrap();
    }
    assert_eq!(t, at("2026-05-04T20:20:00Z"));
}

#[test]
fn after_a_pause_every_resumes_at_the_next_slot_without_a_burst() {
    let s = every(Duration::from_secs(30), "2026-05-04T12:00:00Z");
    // The daemon was busy for 17 minutes: one fire at the next slot, not 35.
    assert_eq!(s.next_after(at("2026-05-04T12:17:45Z")), Some(at("2026-05-04T12:18:00Z")));
}

#[test]
fn before_the_anchor_every_fires_at_the_anchor() {
    let s = every(Duration::from_secs(30), "2026-05-04T12:00:00Z");
    assert_eq!(s.next_after(at("2026-05-04T11:59:00Z")), Some(at("2026-05-04T12:00:00Z")));
}

#[test]
fn every_works_below_a_second_and_across_dst() {
    let s = every(Duration::from_millis(250), "2026-05-04T12:00:00Z");
    assert_eq!(s.next_after(at("2026-05-04T12:00:00.300Z")), Some(at("2026-05-04T12:00:00.500Z")));
    // An interval is real time: an hour is an hour across the change.
    let s = every(Duration::from_secs(3600), "2026-10-25T00:00:00Z");
    assert_eq!(
        fires(&s, chrono_tz::Europe::Berlin, "2026-10-25T00:00:00Z", 2),
        ["2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"]
    );
}

// ---- building ---------------------------------------------------------------

#[test]
fn on_change_has_no_schedule() {
    assert!(matches!(Schedule::new(&Trigger::OnChange, at("2026-05-04T12:00:00Z")), Ok(None)));
}

#[test]
fn what_the_loader_refuses_is_an_error() {
    let t = at("2026-05-04T12:00:00Z");
    let e = Schedule::new(&Trigger::Every(Duration::ZERO), t).unwrap_err();
    assert!(matches!(e, ScheduleError::ZeroInterval));
    let bad = Trigger::Cron { expr: "61 * * * *".into(), timezone: None };
    let e = Schedule::new(&bad, t).unwrap_err();
    assert!(e.to_string().starts_with("invalid cron schedule \"61 * * * *\""), "{e}");
    // Seven fields (a year) are refused, like in the loader.
    assert!(parse_cron("0 0 0 1 1 * 2030").is_err());
}

/// `gatherd check --next`: the next fires with the DST rule that placed
/// each. Berlin springs forward on 28 March 2027 (02:00 CET → 03:00 CEST,
/// at 01:00 UTC) and falls back on 31 October 2027 (at 01:00 UTC).
#[test]
fn next_fires_say_which_dst_rule_placed_them() {
    let fixed = berlin("30 2 * * *");
    let got = fixed.next_fires(at("2027-03-25T12:00:00Z"), 5);
    let when: Vec<DateTime<Utc>> = got.iter().map(|f| f.at).collect();
    assert_eq!(
        when,
        [
            at("2027-03-26T02:30:00+01:00"),
            at("2027-03-27T02:30:00+01:00"),
            at("2027-03-28T03:00:00+02:00"),
            at("2027-03-29T02:30:00+02:00"),
            at("2027-03-30T02:30:00+02:00"),
        ]
    );
    let skipped = chrono::NaiveDate::from_ymd_opt(2027, 3, 28).and_then(|d| d.and_hms_opt(2, 30, 0)).expect("date");
    let rules: Vec<Option<DstRule>> = got.iter().map(|f| f.dst).collect();
    assert_eq!(rules, [None, None, Some(DstRule::AfterGap { skipped }), None, None]);

    // Fall back: a fixed-time job runs in the first pass only; an interval
    // job in both, each said.
    let got = fixed.next_fires(at("2027-10-30T12:00:00Z"), 2);
    assert_eq!(got[0].at, at("2027-10-31T02:30:00+02:00"));
    assert_eq!(got[0].dst, Some(DstRule::FirstPassOnly));
    assert_eq!((got[1].at, got[1].dst), (at("2027-11-01T02:30:00+01:00"), None));
    let interval = berlin("30 * * * *");
    let got = interval.next_fires(at("2027-10-31T00:00:00Z"), 3);
    let got: Vec<(DateTime<Utc>, Option<DstRule>)> = got.iter().map(|f| (f.at, f.dst)).collect();
    assert_eq!(
        got,
        [
            (at("2027-10-31T02:30:00+02:00"), Some(DstRule::RepeatedHour { second_pass: false })),
            (at("2027-10-31T02:30:00+01:00"), Some(DstRule::RepeatedHour { second_pass: true })),
            (at("2027-10-31T03:30:00+01:00"), None),
        ]
    );
    // An interval job skips the gap's wall times: nothing to say.
    let got = interval.next_fires(at("2027-03-28T00:00:00Z"), 2);
    assert_eq!((got[1].at, got[1].dst), (at("2027-03-28T03:30:00+02:00"), None));
}
