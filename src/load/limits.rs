//! The sandbox's limits and the values each may take, wherever it is set:
//! `[script_limits]` in a TOML job, top-level `const`s in a Rhai job, and the
//! config's `[script_limits]` defaults. One reader for both job formats and
//! one table of ranges for all three, so the same value means the same thing
//! (and fails the same way) everywhere.

use toml::de::DeTable;

use super::fields::Ctx;
use crate::job::LimitOverrides;

/// Every limit a job may set.
pub(crate) const LIMIT_KEYS: &[&str] = &[
    "max_operations",
    "max_call_depth",
    "max_expr_depth",
    "max_string_bytes",
    "max_array_len",
    "max_map_len",
    "wall_time",
];

/// The highest `max_expr_depth` allowed. Rhai's parser recurses once per
/// level of nesting; past this a crafted script could overflow a 2 MiB
/// thread stack in a debug build (measured: 256 fits, 512 does not) and
/// abort the daemon.
pub(crate) const MAX_EXPR_DEPTH: usize = 128;

/// An integer limit and the values it may take: from 1 (0 would mean
/// "unlimited" to Rhai, or fail every script) to `max`.
#[derive(Debug)]
pub(crate) struct IntegerLimit {
    /// The key, as a job file and the config write it.
    pub(crate) key: &'static str,
    /// The highest value allowed.
    pub(crate) max: i64,
}

impl IntegerLimit {
    /// The lowest value allowed.
    pub(crate) const MIN: i64 = 1;

    /// Whether `n` is allowed.
    pub(crate) fn allows(&self, n: i64) -> bool {
        (Self::MIN..=self.max).contains(&n)
    }

    /// The allowed values in words, as messages say them.
    pub(crate) fn rule(&self) -> String {
        if self.max == i64::MAX { "a positive integer".to_string() } else { format!("from 1 to {}", self.max) }
    }
}

/// The integer limits, in the order their problems are reported.
pub(crate) const INTEGER_LIMITS: [IntegerLimit; 6] = [
    IntegerLimit { key: "max_operations", max: i64::MAX },
    IntegerLimit { key: "max_call_depth", max: i64::MAX },
    IntegerLimit { key: "max_string_bytes", max: i64::MAX },
    IntegerLimit { key: "max_array_len", max: i64::MAX },
    IntegerLimit { key: "max_map_len", max: i64::MAX },
    IntegerLimit { key: "max_expr_depth", max: MAX_EXPR_DEPTH as i64 },
];

/// Whether `wall_time` may be zero: no, a zero limit would fail every script at once.
const WALL_TIME_ZERO_OK: bool = false;

/// Checks limits already parsed elsewhere (the config's `[script_limits]`):
/// each set integer against [`INTEGER_LIMITS`], and `wall_time`. The message
/// names the key as `prefix` + key and the allowed range.
pub(crate) fn check_limits(limits: &LimitOverrides, prefix: &str) -> Result<(), String> {
    for limit in &INTEGER_LIMITS {
        let Some(n) = integer_slot(limits, limit.key) else { continue };
        if !i64::try_from(n).is_ok_and(|n| limit.allows(n)) {
            return Err(format!("`{prefix}{}` must be {}, found {n}", limit.key, limit.rule()));
        }
    }
    match limits.wall_time {
        Some(d) if d.is_zero() && !WALL_TIME_ZERO_OK => Err(format!("`{prefix}wall_time` must be longer than zero")),
        _ => Ok(()),
    }
}

/// The value of integer limit `key` in `limits`, if set.
fn integer_slot(limits: &LimitOverrides, key: &str) -> Option<u64> {
    let n = match key {
        "max_operations" => return limits.max_operations,
        "max_call_depth" => limits.max_call_depth,
        "max_string_bytes" => limits.max_string_bytes,
        "max_array_len" => limits.max_array_len,
        "max_map_len" => limits.max_map_len,
        "max_expr_depth" => limits.max_expr_depth,
        _ => None,
    };
    n.map(|n| n as u64)
}

/// Sets integer limit `key` in `limits` to `n` (already checked).
fn set_integer(limits: &mut LimitOverrides, key: &str, n: i64) {
    let n = n.unsigned_abs();
    let size = usize::try_from(n).unwrap_or(usize::MAX);
    match key {
        "max_operations" => limits.max_operations = Some(n),
        "max_call_depth" => limits.max_call_depth = Some(size),
        "max_string_bytes" => limits.max_string_bytes = Some(size),
        "max_array_len" => limits.max_array_len = Some(size),
        "max_map_len" => limits.max_map_len = Some(size),
        "max_expr_depth" => limits.max_expr_depth = Some(size),
        _ => {}
    }
}

/// Reads the limits in `table` (other keys are ignored); unset ones stay
/// unset, for the global defaults to fill in. Problems are reported to `ctx`.
pub(crate) fn read_limits(ctx: &mut Ctx, table: &DeTable<'_>) -> LimitOverrides {
    let mut limits = LimitOverrides::default();
    for limit in &INTEGER_LIMITS {
        if let Some(n) =
            table.get(limit.key).and_then(|v| ctx.integer_in(limit.key, v, IntegerLimit::MIN, limit.max, &limit.rule()))
        {
            set_integer(&mut limits, limit.key, n);
        }
    }
    if let Some(d) = table.get("wall_time").and_then(|v| ctx.duration("wall_time", v, WALL_TIME_ZERO_OK)) {
        limits.wall_time = Some(d);
    }
    limits
}
