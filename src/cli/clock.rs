//! How the CLI shows an instant to people: in local time with the zone's
//! abbreviation (`2026-11-30 02:00:00 CET`), `TZ` honoured, or in UTC with
//! `--utc`; and how far away it is, as `systemctl list-timers` says it
//! (`in 4min 10s`, `3min 5s ago`). JSON keeps RFC 3339 UTC: programs get
//! one form, people the one they read.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// How instants are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// In UTC (`--utc`).
    Utc,
    /// In this zone: the local one, named by `TZ` or `/etc/localtime`.
    Zone(Tz),
    /// In chrono's local time, when the local zone has no IANA name
    /// (a POSIX `TZ` rule such as `CET-1CEST`): the offset for a name.
    Local,
}

/// The format of an instant.
const FORMAT: &str = "%Y-%m-%d %H:%M:%S %Z";

impl Clock {
    /// UTC with `utc`, else the local zone.
    pub fn new(utc: bool) -> Clock {
        if utc { Clock::Utc } else { local_zone().map_or(Clock::Local, Clock::Zone) }
    }

    /// `t` in this clock's zone, with the zone's abbreviation.
    pub fn show(self, t: DateTime<Utc>) -> String {
        match self {
            Clock::Utc => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            Clock::Zone(tz) => in_zone(t, &tz),
            Clock::Local => t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S %:z").to_string(),
        }
    }

    /// `t` in `zone` (a job's own `timezone`) unless this clock is UTC: a
    /// schedule written in Berlin time is shown in Berlin time, whatever
    /// the reader's zone, so the time shown is the time in the file.
    pub fn show_in(self, t: DateTime<Utc>, zone: Option<Tz>) -> String {
        match (self, zone) {
            (Clock::Utc, _) | (_, None) => self.show(t),
            (_, Some(tz)) => in_zone(t, &tz),
        }
    }
}

fn in_zone<Z: TimeZone>(t: DateTime<Utc>, zone: &Z) -> String
where
    Z::Offset: std::fmt::Display,
{
    t.with_timezone(zone).format(FORMAT).to_string()
}

/// The local zone by its IANA name: `TZ` (`Europe/Berlin`, `:Europe/Berlin`,
/// or a path into a zoneinfo folder; empty means UTC, as POSIX says), else
/// the zone `/etc/localtime` links to. `None` when neither names one.
pub fn local_zone() -> Option<Tz> {
    let named = |name: &str| -> Option<Tz> {
        let name = name.trim_start_matches(':');
        let name = name.rsplit_once("zoneinfo/").map_or(name, |(_, zone)| zone);
        if name.is_empty() { Some(Tz::UTC) } else { name.parse().ok() }
    };
    match std::env::var("TZ") {
        Ok(tz) => named(&tz),
        Err(_) => std::fs::read_link("/etc/localtime").ok().and_then(|link| named(&link.to_string_lossy())),
    }
}

/// How long until `t`, from `now`: `in 4min 10s`; `now` when it is due.
pub fn left(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (t - now).num_seconds();
    if secs <= 0 { "now".to_string() } else { format!("in {}", span(secs.unsigned_abs())) }
}

/// How long ago `t` was, at `now`: `3min 5s ago`.
pub fn passed(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    if secs <= 0 { "just now".to_string() } else { format!("{} ago", span(secs.unsigned_abs())) }
}

/// A span in its two largest units, as systemd writes them: `1d 2h`,
/// `4min 10s`, `12s`.
fn span(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "min"), (1, "s")];
    let Some(i) = UNITS.iter().position(|&(size, _)| secs >= size) else { return "0s".to_string() };
    let (size, unit) = UNITS[i];
    let mut out = format!("{}{unit}", secs / size);
    // The next unit down, unless it is 0 (`1h 0min` says nothing `1h` does not).
    if let Some(&(smaller, unit)) = UNITS.get(i + 1) {
        let n = secs % size / smaller;
        if n > 0 {
            out.push_str(&format!(" {n}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("an RFC 3339 time")
    }

    #[test]
    fn instants_are_shown_in_the_zone_with_its_abbreviation() {
        let t = at("2026-11-30T01:00:00Z");
        assert_eq!(Clock::Zone(chrono_tz::Europe::Berlin).show(t), "2026-11-30 02:00:00 CET");
        assert_eq!(Clock::Zone(chrono_tz::Europe::Berlin).show(at("2026-07-01T00:00:00Z")), "2026-07-01 02:00:00 CEST");
        assert_eq!(Clock::Utc.show(t), "2026-11-30 01:00:00 UTC");
        let ny = Clock::Zone(chrono_tz::America::New_York);
        assert_eq!(ny.show_in(t, Some(chrono_tz::Europe::Berlin)), "2026-11-30 02:00:00 CET", "the job's zone");
        assert_eq!(ny.show_in(t, None), "2026-11-29 20:00:00 EST", "the reader's zone");
        assert_eq!(Clock::Utc.show_in(t, Some(chrono_tz::Europe::Berlin)), "2026-11-30 01:00:00 UTC", "--utc wins");
    }

    #[test]
    fn spans_read_like_systemctl_list_timers() {
        let now = at("2026-11-29T12:00:00Z");
        let s = |secs: i64| now + chrono::TimeDelta::seconds(secs);
        assert_eq!(left(s(250), now), "in 4min 10s");
        assert_eq!(left(s(12), now), "in 12s");
        assert_eq!(left(s(3600), now), "in 1h");
        assert_eq!(left(s(93_784), now), "in 1d 2h");
        assert_eq!(left(s(0), now), "now");
        assert_eq!(left(s(-5), now), "now");
        assert_eq!(passed(s(-185), now), "3min 5s ago");
        assert_eq!(passed(s(-3_601), now), "1h ago");
        assert_eq!(passed(s(0), now), "just now");
    }
}
