//! The sandbox's limits as a job file sets them: `[script_limits]` in a TOML
//! job, top-level `const`s in a Rhai job. One reader for both, so the same
//! value means the same thing (and fails the same way) in either format.

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

/// Reads the limits in `table` (other keys are ignored); unset ones stay
/// unset, for the global defaults to fill in. Problems are reported to `ctx`.
pub(crate) fn read_limits(ctx: &mut Ctx, table: &DeTable<'_>) -> LimitOverrides {
    let mut limits = LimitOverrides::default();
    let positive = "a positive integer";
    if let Some(n) =
        table.get("max_operations").and_then(|v| ctx.integer_in("max_operations", v, 1, i64::MAX, positive))
    {
        limits.max_operations = Some(n.unsigned_abs());
    }
    for (key, slot) in [
        ("max_call_depth", &mut limits.max_call_depth),
        ("max_string_bytes", &mut limits.max_string_bytes),
        ("max_array_len", &mut limits.max_array_len),
        ("max_map_len", &mut limits.max_map_len),
    ] {
        if let Some(n) = table.get(key).and_then(|v| ctx.integer_in(key, v, 1, i64::MAX, positive)) {
            *slot = Some(usize::try_from(n).unwrap_or(usize::MAX));
        }
    }
    let depth_rule = format!("from 1 to {MAX_EXPR_DEPTH}");
    if let Some(n) = table
        .get("max_expr_depth")
        .and_then(|v| ctx.integer_in("max_expr_depth", v, 1, MAX_EXPR_DEPTH as i64, &depth_rule))
    {
        limits.max_expr_depth = Some(usize::try_from(n).unwrap_or(MAX_EXPR_DEPTH));
    }
    if let Some(d) = table.get("wall_time").and_then(|v| ctx.duration("wall_time", v, false)) {
        limits.wall_time = Some(d);
    }
    limits
}
