//! A job's notification settings: `notify`, `notify_on`, `notify_after`,
//! `repeat_every` and `expect_success_within` (read for TOML and Rhai jobs
//! alike through [`read_notify`]). Which targets exist is the config's
//! business: a job naming an unknown one is warned about by the daemon.

use toml::de::{DeTable, DeValue};

use super::fields::{Ctx, Value, list};
use crate::job::{Job, NotifyEvent};

/// Reads the notification settings of `doc` into `job`.
pub(crate) fn read_notify(ctx: &mut Ctx, doc: &DeTable<'_>, job: &mut Job) {
    if let Some(v) = doc.get("notify") {
        job.notify.targets = names(ctx, "notify", v, |ctx, v, name| {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                ctx.error(v.span(), format!("invalid notification target name {name:?}"))
                    .label("expected letters, digits, `_` or `-`")
                    .help("name a `[notify.NAME]` table of the config");
                return None;
            }
            Some(name.to_string())
        });
    }
    if let Some(v) = doc.get("notify_on") {
        job.notify.on = names(ctx, "notify_on", v, |ctx, v, name| match NotifyEvent::parse(name) {
            Some(NotifyEvent::Test) | None => {
                let words: Vec<&str> =
                    NotifyEvent::ALL.iter().filter(|e| **e != NotifyEvent::Test).map(|e| e.as_str()).collect();
                let help = super::diagnostic::did_you_mean(name, words.iter().copied())
                    .unwrap_or_else(|| format!("the events are {}", list(&words)));
                ctx.error(v.span(), format!("unknown notification event {name:?}")).label("unknown event").help(help);
                None
            }
            Some(event) => Some(event),
        });
    }
    if let Some(v) = doc.get("notify_after") {
        let rule = "a count of consecutive failures from 1 to 1000000";
        job.notify.after = ctx.integer_in("notify_after", v, 1, 1_000_000, rule).and_then(|n| u32::try_from(n).ok());
    }
    if let Some(v) = doc.get("repeat_every") {
        job.notify.repeat_every = ctx.duration("repeat_every", v, false);
    }
    if let Some(v) = doc.get("expect_success_within") {
        job.notify.expect_success_within = ctx.duration("expect_success_within", v, false);
    }
}

/// An array of strings, each read by `item`; `None` after a reported mistake.
fn names<T>(
    ctx: &mut Ctx,
    key: &str,
    v: &Value<'_>,
    mut item: impl FnMut(&mut Ctx, &Value<'_>, &str) -> Option<T>,
) -> Option<Vec<T>> {
    let DeValue::Array(items) = v.get_ref() else {
        ctx.wrong_type(key, v, "an array of strings");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for i in items {
        match i.get_ref() {
            DeValue::String(s) => match item(ctx, i, s) {
                Some(x) => out.push(x),
                None => ok = false,
            },
            _ => {
                ctx.wrong_type(key, i, "an array of strings");
                ok = false;
            }
        }
    }
    ok.then_some(out)
}
