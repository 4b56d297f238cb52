//! When is the next fire: cron schedules in wall-clock time and fixed
//! intervals, plus the per-job jitter that spreads fires out.
//!
//! The daemon builds one [`Schedule`] per scheduled job and asks it
//! [`Schedule::next_after`] the instant it is at; it adds [`stable_jitter`]
//! to the slot it gets back.
//!
//! **Cron** (`schedule`, 5 fields, or 6 with seconds first) is matched against
//! the wall clock of the job's `timezone` (the host's local time without one).
//! Daylight saving time follows the Vixie cron / croner rules, which depend
//! on the job's kind, read from its second, minute and hour fields:
//! - a *fixed-time* job names its times (`30 2 * * *`, `0 0 9,17 * * *`,
//!   `0 0-30 2 * * *`): no `*` and no `/` step in those three fields (any
//!   `/` counts, a step of one such as `2/1` too);
//! - an *interval* job has a `*` or a step in at least one of them
//!   (`*/10 * * * * *`, `0 * * * *`, `*/30 2 * * *`).
//!
//! | transition | fixed-time job | interval job |
//! | --- | --- | --- |
//! | spring forward (02:00 → 03:00 skipped) | a time in the gap fires **once, at the first instant after the gap** (03:00 new time), still once if it also names 03:00 | times in the gap do not exist and are skipped; it goes on at its next wall-clock match |
//! | fall back (02:00–03:00 happens twice) | fires **once, in the first pass**; the repeated hour is skipped | fires at every real instant whose wall time matches, in both passes: an every-minute job fires every real minute, no pause, no double fire |
//!
//! croner 3 documents these rules, but applies them in a search over naive
//! local time that goes wrong at the edges (each case is a test here):
//! `find_next_occurrence` returns only the first copy of a repeated wall
//! time, so an every-second job pauses for the repeated hour; asked from the
//! second pass it returns an instant *before* the one asked about; a
//! fixed-time search that merely walks through a gap snaps to its end, so
//! `59 1 * * *` runs at 01:59 and again at 03:00; it counts a list of hours
//! (`0 30 2,14 * * *`) as an interval job that runs twice at 02:30; and it
//! keeps the fraction of a second of the instant asked about. So `cron.rs`
//! asks croner only in a fixed UTC offset, where there is no DST, one offset
//! period at a time, and applies the rules above itself.
//!
//! **Every** (`every = "30s"`) fires at `anchor + k·interval`, the anchor
//! being when the job was scheduled. The interval is measured from the
//! scheduled slots, never from when a run ended, so fires never drift; after
//! a pause (a busy or suspended daemon) the next fire is the next slot after
//! `now`, never a burst of the slots missed.
//!
//! **Jitter** is a per-job constant in `[0, max)` derived from the job's
//! identity, so a fleet of jobs on `0 * * * *` spreads over the first
//! minutes of the hour, and each job keeps its place across restarts. Add it
//! to the slot, and ask for the next slot after the *slot* (not after the
//! jittered run), or a jitter longer than the interval would skip slots.
//!
//! Architecture Invariant: pure functions of their arguments. No I/O, no
//! tokio, no clock reads: the caller passes `now`. (The host's time zone
//! rules, used when a job sets no `timezone`, come from chrono's `Local`,
//! which chrono reads and caches itself.)

mod cron;
mod jitter;

#[cfg(test)]
mod tests;

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};

pub use jitter::stable_jitter;

use crate::job::Trigger;

/// Parses a cron expression the one way gatherd reads them: 5 fields, or 6
/// with seconds first; no year field; the nicknames croniter and Debian cron
/// accept (`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
/// `@midnight`, `@hourly`, in any case). `@reboot` is refused: a job with no
/// `schedule` already runs once when its file appears.
///
/// The loader validates `schedule` with this and [`Schedule`] runs it, so a
/// job that loads always schedules.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, croner::errors::CronError> {
    let expr = expr.trim();
    let expr = if expr.eq_ignore_ascii_case("@midnight") {
        // croner knows every other nickname, not this one.
        "@daily"
    } else if expr.eq_ignore_ascii_case("@reboot") {
        return Err(croner::errors::CronError::InvalidPattern(
            "`@reboot` is not a schedule; remove `schedule` to make a one-shot job, which runs once when \
             its file appears"
                .to_string(),
        ));
    } else {
        expr
    };
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr)
}

/// A trigger that fires on its own: a cron schedule in a time zone, or a
/// fixed interval from an anchor. Answers "when is the next fire after t".
#[derive(Debug, Clone)]
pub struct Schedule {
    rule: Rule,
}

#[derive(Debug, Clone)]
enum Rule {
    /// Boxed: a parsed pattern is ten times the size of an interval.
    Cron(Box<cron::CronRule>),
    Every {
        interval: Duration,
        anchor: DateTime<Utc>,
    },
}

/// Why a trigger cannot be scheduled. The loader refuses both, so a loaded
/// job never gives one.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The `schedule` expression does not parse.
    #[error("invalid cron schedule \"{expr}\": {source}")]
    InvalidCron {
        /// The expression as written.
        expr: String,
        /// croner's reason.
        #[source]
        source: croner::errors::CronError,
    },
    /// `every` of zero would fire without end.
    #[error("an `every` interval must be longer than zero")]
    ZeroInterval,
}

impl Schedule {
    /// The schedule of `trigger`; `None` for [`Trigger::OnChange`], which the
    /// daemon runs when the file changes, not on a clock.
    ///
    /// `anchor` is when the job was scheduled (loaded): an `every` job fires
    /// at `anchor + k·interval` (so first one interval after it). A cron
    /// schedule ignores it.
    pub fn new(trigger: &Trigger, anchor: DateTime<Utc>) -> Result<Option<Schedule>, ScheduleError> {
        let rule = match trigger {
            Trigger::OnChange => return Ok(None),
            Trigger::Cron { expr, timezone } => {
                let cron =
                    parse_cron(expr).map_err(|source| ScheduleError::InvalidCron { expr: expr.clone(), source })?;
                Rule::Cron(Box::new(cron::CronRule::new(cron, *timezone)))
            }
            Trigger::Every(interval) if interval.is_zero() => return Err(ScheduleError::ZeroInterval),
            Trigger::Every(interval) => Rule::Every { interval: *interval, anchor },
        };
        Ok(Some(Schedule { rule }))
    }

    /// The first fire strictly after `t`, or `None` if there is none (a cron
    /// date that never comes, such as `0 0 30 2 *`, or past the year 5000).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.rule {
            Rule::Cron(rule) => rule.next_after(t),
            Rule::Every { interval, anchor } => next_slot(*anchor, *interval, t),
        }
    }
}

/// A fire of a schedule, and the daylight-saving rule that placed it, if
/// one did (`gatherd check --next`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fire {
    /// When it fires.
    pub at: DateTime<Utc>,
    /// The DST rule applied, if any.
    pub dst: Option<DstRule>,
}

/// A daylight-saving rule of the module doc, as applied to one fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstRule {
    /// Spring forward skipped `skipped`, a wall time a fixed-time job
    /// names: it runs once, at the first instant after the gap.
    AfterGap {
        /// The wall time that did not exist.
        skipped: NaiveDateTime,
    },
    /// Fall back: this wall time comes twice; a fixed-time job runs in the
    /// first pass only.
    FirstPassOnly,
    /// Fall back: an interval job runs in both passes of the repeated hour;
    /// this is the first or the second.
    RepeatedHour {
        /// Whether this is the second pass.
        second_pass: bool,
    },
}

impl Schedule {
    /// The next `n` fires strictly after `t`, each with the DST rule that
    /// placed it (fewer if the schedule ends).
    pub fn next_fires(&self, t: DateTime<Utc>, n: usize) -> Vec<Fire> {
        let mut fires = Vec::with_capacity(n.min(1024));
        let mut t = t;
        while fires.len() < n {
            let next = match &self.rule {
                Rule::Cron(rule) => rule.next_explained(t),
                Rule::Every { interval, anchor } => next_slot(*anchor, *interval, t).map(|at| (at, None)),
            };
            let Some((at, dst)) = next else { break };
            fires.push(Fire { at, dst });
            t = at;
        }
        fires
    }
}

/// The first `anchor + k·interval` (k ≥ 0) strictly after `t`.
fn next_slot(anchor: DateTime<Utc>, interval: Duration, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let step = i128::try_from(interval.as_nanos()).ok().filter(|n| *n > 0)?;
    let elapsed = nanos(t) - nanos(anchor);
    let k = if elapsed < 0 { 0 } else { elapsed / step + 1 };
    let offset = i64::try_from(k.checked_mul(step)?).ok()?;
    anchor.checked_add_signed(TimeDelta::nanoseconds(offset))
}

/// Nanoseconds since the epoch, wide enough for any `DateTime<Utc>`.
fn nanos(t: DateTime<Utc>) -> i128 {
    i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos())
}
