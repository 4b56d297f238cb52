//! Building a Rhai engine that can't reach the host and stops a runaway script.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rhai::{Array, Dynamic, Engine, EvalAltResult, NativeCallContext, Position};

use crate::job::ScriptLimits;

/// What stops a script besides its counted limits: the wall-clock limit and a
/// cancel probe (the run's token), checked every [`PROBE_EVERY`] operations.
#[derive(Clone)]
pub struct Sandbox {
    /// The limits in force.
    pub limits: ScriptLimits,
    /// Returns true once the script must stop (timeout, Ctrl-C, file removed).
    pub cancelled: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// The marker a terminated script carries, so messages can say why it stopped.
const WALL_TIME: &str = "wall time";
const CANCELLED: &str = "cancelled";

/// How many operations pass between two looks at the clock and the cancel
/// token. Each look costs a clock read and a mutex; once per operation that
/// was a few percent of a script's time, and 64 operations take
/// microseconds, so a cancel or the wall-time limit is still met at once.
pub const PROBE_EVERY: u64 = 64;

/// A sandboxed engine with `sandbox`'s limits. `print` and `debug` go nowhere
/// until the caller routes them (the run's log).
pub fn sandbox(sandbox: &Sandbox) -> Engine {
    let mut engine = Engine::new();
    let limits = &sandbox.limits;
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_depth)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_bytes)
        .set_max_array_size(limits.max_array_len)
        .set_max_map_size(limits.max_map_len)
        .set_max_modules(0)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
        .disable_symbol("eval");
    // Rhai measures a collection after a call on it (`m.len()`, `a.push(x)`)
    // but not after `m[key] = v` adds a key, so a map filled by index grew
    // past `max_map_len` unchecked. Every read of a variable looks at the
    // length of the array or map it holds (O(1), not the whole tree), so a
    // loop growing one stops at its next turn.
    let (max_array, max_map) = (limits.max_array_len, limits.max_map_len);
    // Rhai marks `on_var` deprecated only to say it is volatile (its own note).
    #[allow(deprecated)]
    engine.on_var(move |name, _, context| {
        let Some(value) = context.scope().get(name) else {
            return Ok(None);
        };
        if max_map > 0 && value.is_map() && value.read_lock::<rhai::Map>().is_some_and(|m| m.len() > max_map) {
            return Err(EvalAltResult::ErrorDataTooLarge("Size of object map".into(), Position::NONE).into());
        }
        if max_array > 0 && value.is_array() && value.read_lock::<rhai::Array>().is_some_and(|a| a.len() > max_array) {
            return Err(EvalAltResult::ErrorDataTooLarge("Size of array".into(), Position::NONE).into());
        }
        Ok(None)
    });
    // Rhai re-measures an array after every call on it (its size limit), so
    // `push` costs the array's length, not one operation: a push loop to the
    // default limit took minutes of CPU with `max_operations` far off. Each
    // push is charged its length on top of the operations Rhai counts.
    let charged = Arc::new(AtomicU64::new(0));
    let max_operations = limits.max_operations;
    engine.register_fn("push", move |ctx: NativeCallContext, array: &mut Array, item: Dynamic| {
        let len = array.len() as u64;
        let spent = charged.fetch_add(len, Ordering::Relaxed).saturating_add(len);
        if max_operations > 0 && ctx.global_runtime_state().num_operations().saturating_add(spent) > max_operations {
            return Err(Box::new(EvalAltResult::ErrorTooManyOperations(ctx.call_position())));
        }
        array.push(item);
        Ok(())
    });
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    let started = Instant::now();
    let wall_time = limits.wall_time;
    let cancelled = sandbox.cancelled.clone();
    engine.on_progress(move |operations| {
        // The first operation is probed too, so a script cancelled before it
        // starts does not run at all.
        if operations % PROBE_EVERY != 1 {
            None
        } else if cancelled() {
            Some(Dynamic::from(CANCELLED))
        } else if started.elapsed() > wall_time {
            Some(Dynamic::from(WALL_TIME))
        } else {
            None
        }
    });
    engine
}

/// A script error for people: which limit a runaway script hit, or Rhai's
/// message, with the line where it happened.
pub fn describe_error(err: &EvalAltResult, limits: &ScriptLimits) -> String {
    let at = |pos: Position| match pos.line() {
        Some(line) => format!(" (line {line}, column {})", pos.position().unwrap_or(1)),
        None => String::new(),
    };
    match err {
        EvalAltResult::ErrorTooManyOperations(pos) => {
            format!("stopped: the operations limit ({}) was reached{}", limits.max_operations, at(*pos))
        }
        EvalAltResult::ErrorStackOverflow(pos) => {
            format!("stopped: the call depth limit ({}) was reached{}", limits.max_call_depth, at(*pos))
        }
        EvalAltResult::ErrorDataTooLarge(what, pos) => {
            let limit = match what.as_str() {
                w if w.contains("string") || w.contains("String") => format!("{} bytes", limits.max_string_bytes),
                w if w.contains("array") || w.contains("Array") => format!("{} items", limits.max_array_len),
                w if w.contains("map") || w.contains("Map") => format!("{} entries", limits.max_map_len),
                _ => "its limit".to_string(),
            };
            format!("stopped: {what} grew past the size limit ({limit}){}", at(*pos))
        }
        EvalAltResult::ErrorTerminated(why, pos) if why.clone().into_string().as_deref() == Ok(WALL_TIME) => {
            format!("{}{}", wall_time_reached(limits), at(*pos))
        }
        EvalAltResult::ErrorTerminated(_, pos) => format!("cancelled{}", at(*pos)),
        EvalAltResult::ErrorInFunctionCall(name, _, inner, _) if name.is_empty() || name.starts_with('$') => {
            describe_error(inner, limits)
        }
        EvalAltResult::ErrorRuntime(value, pos) => format!("{}{}", plain(value), at(*pos)),
        other => other.to_string(),
    }
}

/// What a script stopped by its wall-time limit fails with (the script's
/// own probe, or its driver when the limit passes during a wait).
pub fn wall_time_reached(limits: &ScriptLimits) -> String {
    format!("stopped: the wall-time limit ({}) was reached", humantime::format_duration(limits.wall_time))
}

/// A thrown value as text: strings without quotes.
fn plain(value: &Dynamic) -> String {
    value.clone().into_string().unwrap_or_else(|_| value.to_string())
}

/// Whether `err` is a cancellation (not a failure of the script).
pub fn is_cancellation(err: &EvalAltResult) -> bool {
    match err {
        EvalAltResult::ErrorTerminated(why, _) => why.clone().into_string().as_deref() == Ok(CANCELLED),
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => is_cancellation(inner),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn run(code: &str, limits: ScriptLimits) -> String {
        let sb = Sandbox { limits: limits.clone(), cancelled: Arc::new(|| false) };
        let engine = sandbox(&sb);
        match engine.eval::<Dynamic>(code) {
            Ok(v) => format!("ok: {v}"),
            Err(e) => describe_error(&e, &limits),
        }
    }

    #[test]
    fn an_endless_loop_stops_at_the_operations_limit() {
        let limits = ScriptLimits { max_operations: 10_000, ..ScriptLimits::default() };
        let out = run("let x = 0;\nloop { x += 1; }", limits);
        assert!(out.starts_with("stopped: the operations limit (10000) was reached (line 2"), "{out}");
    }

    #[test]
    fn unbounded_recursion_stops_at_the_call_depth_limit() {
        let out = run("fn f(n) { f(n + 1) }\nf(0)", ScriptLimits::default());
        assert!(out.contains("call depth limit (48)"), "{out}");
    }

    #[test]
    fn a_string_doubling_forever_stops_at_the_size_limit() {
        let limits = ScriptLimits { max_string_bytes: 1024, ..ScriptLimits::default() };
        let out = run("let s = \"x\";\nloop { s += s; }", limits);
        assert!(out.contains("size limit (1024 bytes)"), "{out}");
    }

    #[test]
    fn a_growing_array_stops_at_the_size_limit() {
        let limits = ScriptLimits { max_array_len: 100, ..ScriptLimits::default() };
        let out = run("let a = [];\nloop { a.push(1); }", limits);
        assert!(out.contains("size limit (100 items)"), "{out}");
    }

    #[test]
    fn a_map_growing_by_index_stops_at_the_size_limit() {
        let limits = ScriptLimits { max_map_len: 10, ..ScriptLimits::default() };
        let out = run("let m = #{};\nfor i in 0..100000 { m[\"k\" + i] = i; }\nm.len()", limits.clone());
        assert!(out.contains("size limit (10 entries) (line 2"), "{out}");
        let out = run("let m = #{};\nfor i in 0..100000 { m[\"k\" + i] = i; }\n1", limits.clone());
        assert!(out.contains("size limit (10 entries) (line 2"), "{out}");
        let out = run("let m = #{};\nfor i in 0..100000 { m[\"k\" + i] = i; }", limits);
        assert!(out.contains("size limit (10 entries) (line 2"), "{out}");
    }

    #[test]
    fn an_array_growing_by_index_ops_stops_at_the_size_limit() {
        let limits = ScriptLimits { max_array_len: 10, ..ScriptLimits::default() };
        let out = run("let a = [];\nfor i in 0..100000 { a += [i]; }\na.len()", limits.clone());
        assert!(out.contains("size limit (10 items)"), "{out}");
        let out = run("let a = [[]];\nfor i in 0..100000 { a[0].push(i); }\na[0].len()", limits);
        assert!(out.contains("size limit (10 items)"), "{out}");
    }

    #[test]
    fn a_push_loop_is_charged_for_re_measuring_its_array() {
        // 3,000 pushes are ~12,000 operations, but Rhai re-measures the array
        // after each: ~4.5 million element visits, charged as operations.
        let code = "let a = [];\nfor i in 0..3000 { a.push(i); }\na.len()";
        assert_eq!(run(code, ScriptLimits::default()), "ok: 3000");
        let limits = ScriptLimits { max_operations: 1_000_000, ..ScriptLimits::default() };
        let out = run(code, limits);
        assert!(out.starts_with("stopped: the operations limit (1000000) was reached (line 2"), "{out}");
    }

    #[test]
    fn a_script_past_its_wall_time_is_stopped() {
        let limits = ScriptLimits { wall_time: Duration::ZERO, ..ScriptLimits::default() };
        let out = run("loop { }", limits);
        assert!(out.starts_with("stopped: the wall-time limit"), "{out}");
    }

    #[test]
    fn a_cancelled_script_stops_at_its_next_operation() {
        let limits = ScriptLimits::default();
        let sb = Sandbox { limits: limits.clone(), cancelled: Arc::new(|| true) };
        let err = sandbox(&sb).eval::<Dynamic>("loop { }").expect_err("stopped");
        assert!(is_cancellation(&err));
    }

    #[test]
    fn eval_and_import_are_not_available() {
        let out = run("eval(\"1 + 1\")", ScriptLimits::default());
        assert!(!out.starts_with("ok"), "{out}");
        let out = run("import \"x\" as x; 1", ScriptLimits::default());
        assert!(!out.starts_with("ok"), "{out}");
    }
}
