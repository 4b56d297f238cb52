//! `env(name)` and `secret(name)`: what a script may read of its job's
//! environment and of the config's secrets. The driver says what they
//! answer ([`Lookup`]); the script reaches nothing else of the host.
//!
//! `env(name)` reads only the environment the job declares — its `env`,
//! `env_file` and the config's `pass_env` — never gatherd's own, and gives
//! `()` for a name not declared. `secret(name)` of a name the config does
//! not define is an error naming it.

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Position};

/// Which of the two a script asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    /// `env(name)`.
    Env,
    /// `secret(name)`.
    Secret,
}

/// Answers `env(name)` (`Ok(None)`: not declared) and `secret(name)` (an
/// error for an unknown name, saying why).
pub type Lookup = Arc<dyn Fn(LookupKind, &str) -> Result<Option<String>, String> + Send + Sync>;

/// A lookup that knows nothing: for engines that only compile.
pub fn nothing() -> Lookup {
    Arc::new(|kind, name| match kind {
        LookupKind::Env => Ok(None),
        LookupKind::Secret => Err(format!("secret `{name}` is not available here")),
    })
}

/// Registers `env(name)` and `secret(name)` on `engine`, answered by `lookup`.
pub fn register(engine: &mut Engine, lookup: &Lookup) {
    let l = lookup.clone();
    engine.register_fn("env", move |name: ImmutableString| -> Result<Dynamic, Box<EvalAltResult>> {
        match l(LookupKind::Env, &name) {
            Ok(Some(value)) => Ok(Dynamic::from(value)),
            Ok(None) => Ok(Dynamic::UNIT),
            Err(e) => Err(Box::new(EvalAltResult::ErrorRuntime(Dynamic::from(e), Position::NONE))),
        }
    });
    let l = lookup.clone();
    engine.register_fn("secret", move |name: ImmutableString| -> Result<String, Box<EvalAltResult>> {
        match l(LookupKind::Secret, &name) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(Box::new(EvalAltResult::ErrorRuntime(
                Dynamic::from(format!("unknown secret `{name}`")),
                Position::NONE,
            ))),
            Err(e) => Err(Box::new(EvalAltResult::ErrorRuntime(Dynamic::from(e), Position::NONE))),
        }
    });
}
