//! The Rhai engine: the sandbox and its limits ([`sandbox`]), and the
//! asyncio-style API that Rhai jobs use to start steps (`api`).
//!
//! Architecture Invariant: a script reaches the host only through the functions
//! registered here. No `eval`, no `import` (no module resolver), no file,
//! process or network access except by starting a step, which the executor
//! runs, records and cancels like any TOML step.

pub mod api;
pub mod lookup;
mod sandbox;

pub use sandbox::{Sandbox, describe_error, is_cancellation, sandbox, wall_time_reached};
