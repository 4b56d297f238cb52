//! `gatherd check --next N JOB...`: the next fires of scheduled jobs in
//! their own zone, and the daylight-saving rule that placed a fire where one
//! did (`systemd-analyze calendar --iterations`).

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};

use crate::job::{Job, Trigger};
use crate::schedule::{DstRule, Fire, Schedule};

/// How an instant is shown in UTC.
const UTC_FORMAT: &str = "%Y-%m-%d %H:%M:%S UTC";

/// The text `check --next` prints for `job` (loaded from `file`): its next
/// `n` fires after `after`, one a line.
pub(super) fn describe(file: &Path, job: &Job, n: usize, after: DateTime<Utc>) -> String {
    let schedule = match Schedule::new(&job.trigger, after) {
        Ok(Some(schedule)) => schedule,
        Ok(None) => return format!("{}: no schedule: runs when its file appears or changes\n", file.display()),
        // The loader refuses both, so a loaded job never gives one.
        Err(e) => return format!("{}: {e}\n", file.display()),
    };
    let fires = schedule.next_fires(after, n);
    let mut out = String::new();
    let after_text = after.format(UTC_FORMAT);
    let lines = match &job.trigger {
        Trigger::Cron { expr, timezone: Some(tz) } => {
            let _ = writeln!(
                out,
                "{}: schedule {expr:?} in {}, the next {n} fires after {after_text}:",
                file.display(),
                tz.name()
            );
            fire_lines(&fires, tz)
        }
        Trigger::Cron { expr, timezone: None } => {
            let _ = writeln!(
                out,
                "{}: schedule {expr:?} in the host's local time, the next {n} fires after {after_text}:",
                file.display()
            );
            fire_lines(&fires, &chrono::Local)
        }
        Trigger::Every(interval) => {
            let _ = writeln!(
                out,
                "{}: every {}, counted from when the daemon loads the job; loaded at {after_text}, it fires:",
                file.display(),
                humantime::format_duration(*interval)
            );
            fire_lines(&fires, &chrono::Local)
        }
        Trigger::OnChange => Vec::new(),
    };
    for line in lines {
        let _ = writeln!(out, "  {line}");
    }
    if fires.is_empty() {
        let _ = writeln!(out, "  (it never fires: the dates it names never come)");
    } else if fires.len() < n {
        let _ = writeln!(out, "  (no fire after these: the dates it names never come again)");
    }
    if let Some(jitter) = job.jitter {
        let _ = writeln!(
            out,
            "  (each plus a jitter of up to {}, fixed per job by its path in the jobs folder)",
            humantime::format_duration(jitter)
        );
    }
    out
}

/// The fires of [`describe`] as JSON: `[{"at", "local", "dst", "skipped"}]`
/// (`at` in UTC, `local` in the job's zone, both RFC 3339; `dst` null or
/// `after_gap` / `first_pass_only` / `repeated_hour_first_pass` /
/// `repeated_hour_second_pass`; `skipped` the wall time a gap skipped).
/// `null` for a job without a schedule.
pub(super) fn fires_json(job: &Job, n: usize, after: DateTime<Utc>) -> serde_json::Value {
    let Ok(Some(schedule)) = Schedule::new(&job.trigger, after) else { return serde_json::Value::Null };
    let fires = schedule.next_fires(after, n);
    let local = |t: DateTime<Utc>| match &job.trigger {
        Trigger::Cron { timezone: Some(tz), .. } => t.with_timezone(tz).to_rfc3339(),
        _ => t.with_timezone(&chrono::Local).to_rfc3339(),
    };
    fires
        .iter()
        .map(|fire| {
            let (dst, skipped) = match fire.dst {
                None => (None, None),
                Some(DstRule::AfterGap { skipped }) => (Some("after_gap"), Some(skipped.to_string())),
                Some(DstRule::FirstPassOnly) => (Some("first_pass_only"), None),
                Some(DstRule::RepeatedHour { second_pass: false }) => (Some("repeated_hour_first_pass"), None),
                Some(DstRule::RepeatedHour { second_pass: true }) => (Some("repeated_hour_second_pass"), None),
            };
            serde_json::json!({ "at": fire.at.to_rfc3339(), "local": local(fire.at), "dst": dst, "skipped": skipped })
        })
        .collect()
}

/// One line per fire: local time with the zone's abbreviation, UTC, and the
/// DST rule applied.
fn fire_lines<Z: TimeZone>(fires: &[Fire], tz: &Z) -> Vec<String>
where
    Z::Offset: std::fmt::Display,
{
    fires
        .iter()
        .map(|fire| {
            let local = fire.at.with_timezone(tz);
            let shown = local.format("%a %Y-%m-%d %H:%M:%S %Z").to_string();
            let mut line = format!("{shown:<28}  ({})", fire.at.format(UTC_FORMAT));
            let wall = |t: chrono::NaiveDateTime| {
                if chrono::Timelike::second(&t) == 0 { t.format("%H:%M") } else { t.format("%H:%M:%S") }.to_string()
            };
            let note = match fire.dst {
                None => None,
                Some(DstRule::AfterGap { skipped }) => {
                    Some(format!("{} does not exist (spring forward): runs once, when the gap ends", wall(skipped)))
                }
                Some(DstRule::FirstPassOnly) => {
                    Some(format!("{} comes twice (fall back): runs in the first pass only", wall(local.naive_local())))
                }
                Some(DstRule::RepeatedHour { second_pass }) => Some(format!(
                    "{} comes twice (fall back): this is the {} pass",
                    wall(local.naive_local()),
                    if second_pass { "second" } else { "first" }
                )),
            };
            if let Some(note) = note {
                line.push_str("  ");
                line.push_str(&note);
            }
            line
        })
        .collect()
}
