//! gatherd: a job-runner daemon with Python asyncio's execution model.
//!
//! The binary (`src/main.rs`) is a thin shell over this library: `load` turns
//! files into [`job::Job`]s, `exec` runs them and emits [`exec::RunEvent`]s, and
//! `cli` renders those events for people and programs.

pub mod api;
// The CLI renders for people and programs: the one module that prints (to
// stdout only through `cli::out`, which ends quietly on a closed pipe).
#[allow(clippy::print_stderr)]
pub mod cli;
pub mod config;
pub mod daemon;
pub mod exec;
pub mod job;
pub mod load;
pub mod schedule;
pub mod script;
pub mod store;
pub mod watch;
