//! `max_output = { head = BYTES, tail = BYTES }`: how much of each step's
//! output lines a job keeps, wherever it is set: a TOML job's top-level key
//! (inline or as a `[max_output]` table), a Rhai job's `const max_output =
//! #{ head: …, tail: … };`, and the config's `[max_output]` defaults. One
//! reader for both job formats and one rule for all three.

use super::fields::{Ctx, Value};
use crate::job::MaxOutput;
use toml::de::DeValue;

/// The keys of a `max_output` table.
const KEYS: &[&str] = &["head", "tail"];

/// The allowed values, as messages say them.
fn rule() -> String {
    format!("a number of bytes from 0 to {}", MaxOutput::MAX_BYTES)
}

/// Reads a `max_output` value; problems are reported to `ctx` (and the
/// parts in error left unset).
pub(crate) fn read_max_output(ctx: &mut Ctx, v: &Value<'_>) -> MaxOutput {
    let DeValue::Table(table) = v.get_ref() else {
        ctx.wrong_type("max_output", v, "a table such as { head = 1048576, tail = 1048576 }");
        return MaxOutput::default();
    };
    ctx.unknown_keys(table, KEYS, "`max_output`");
    let max = i64::try_from(MaxOutput::MAX_BYTES).unwrap_or(i64::MAX);
    let mut read = |key: &str| {
        let v = table.get(key)?;
        let n = ctx.integer_in(&format!("max_output.{key}"), v, 0, max, &rule())?;
        u64::try_from(n).ok()
    };
    let head = read("head");
    let tail = read("tail");
    MaxOutput { head, tail }
}

/// Checks values parsed elsewhere (the config's `[max_output]`), with the
/// same rule as a job's.
pub(crate) fn check_max_output(m: &MaxOutput) -> Result<(), String> {
    for (key, n) in [("head", m.head), ("tail", m.tail)] {
        if let Some(n) = n
            && n > MaxOutput::MAX_BYTES
        {
            return Err(format!("`max_output.{key}` must be {}, found {n}", rule()));
        }
    }
    Ok(())
}
