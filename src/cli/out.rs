//! The one way the CLI writes to stdout: `out!` and `outln!` (`print!`/`println!` are denied in `src/cli/`
//! by clippy's `print_stdout`, and `std::io::stdout` by `disallowed-methods`
//! in clippy.toml, except here).
//!
//! A reader that has gone (`gatherd runs | head -1`) ends the process at
//! once, quietly, with exit 0 — what ripgrep does, and what a shell sees of
//! `ls | head` unless it sets `pipefail`. `println!` would panic instead
//! (Rust ignores SIGPIPE, so a write to a closed pipe is an `EPIPE` error).
//! SIGPIPE itself is not reset: `gatherd run` writes steps' stdin pipes and
//! the daemon writes sockets, and those must keep getting `EPIPE` as an
//! error, not kill the process.
//!
//! Architecture Invariant: nothing in the CLI writes to stdout but through
//! this module.

use std::io::{ErrorKind, Write};

/// Writes `args` to stdout. Ends the process (exit 0) when the reader has
/// gone; any other failure (a full disk under `> file`) is an error that
/// says it was stdout.
pub fn write_fmt(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    #[allow(clippy::disallowed_methods)] // the one place
    let mut stdout = std::io::stdout().lock();
    settle(stdout.write_fmt(args))
}

/// Writes `args` to stdout, as [`write_fmt`] does, but a reader gone is
/// `Ok(false)` instead of the end of the process: for `run --follow`, which
/// has a run to cancel (and its processes to kill) before it ends.
pub fn write_fmt_unless_gone(args: std::fmt::Arguments<'_>) -> anyhow::Result<bool> {
    #[allow(clippy::disallowed_methods)] // the one place
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// Writes `bytes` to stdout, as [`write_fmt`] does.
pub fn write_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    #[allow(clippy::disallowed_methods)] // the one place
    let mut stdout = std::io::stdout().lock();
    settle(stdout.write_all(bytes).and_then(|()| stdout.flush()))
}

/// Hands `write` a buffered, locked stdout for a writer that streams
/// (`serde_json::to_writer_pretty`: a 100,000-step document is tens of MB,
/// better not built as one string first), then flushes it; as
/// [`write_fmt`] does, a closed pipe ends the process quietly.
pub fn stream(write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> anyhow::Result<()> {
    #[allow(clippy::disallowed_methods)] // the one place
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    settle(write(&mut stdout).and_then(|()| stdout.flush()))
}

/// `value` as pretty JSON and a newline on stdout, through [`stream`].
pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    stream(|out| {
        serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::from)?;
        out.write_all(b"\n")
    })
}

/// A write's result: a closed pipe ends the process quietly.
fn settle(result: std::io::Result<()>) -> anyhow::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => reader_gone(),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// The width to fit tables to: stdout's, when it is a terminal; `None`
/// (never cut) when it is a pipe or a file.
pub fn width() -> Option<usize> {
    #[allow(clippy::disallowed_methods)] // asks, does not write
    let stdout = std::io::stdout();
    terminal_size::terminal_size_of(&stdout).map(|(terminal_size::Width(w), _)| usize::from(w))
}

/// Whether stdout is a terminal (not a file or a pipe): where tables are
/// fitted and lines printed are escaped ([`super::render::for_terminal`]).
pub fn is_terminal() -> bool {
    #[allow(clippy::disallowed_methods)] // asks, does not write
    let stdout = std::io::stdout();
    std::io::IsTerminal::is_terminal(&stdout)
}

/// Whether `e` is stdout's reader having gone: an `EPIPE` anywhere in its
/// chain (a writer that did not go through this module, e.g. a `--json`
/// document streamed with serde).
pub fn is_reader_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == ErrorKind::BrokenPipe))
}

/// Ends the process as a command whose output nobody reads any more: exit
/// 0, nothing said. Nothing is left to clean up at that point: a run the
/// CLI follows (`trigger --wait`, `logs --follow`) goes on in the daemon;
/// `gatherd run` prints its report once the run is over, and a `run
/// --follow` whose reader goes cancels its run first (see
/// [`write_fmt_unless_gone`]).
pub fn reader_gone() -> ! {
    std::process::exit(i32::from(super::exit::OK))
}

/// `print!` to stdout through [`write_fmt`]: an `anyhow::Result<()>`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::write_fmt(format_args!($($arg)*))
    };
}

/// `println!` to stdout through [`write_fmt`]: an `anyhow::Result<()>`.
macro_rules! outln {
    () => {
        $crate::cli::out::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

// `use super::out::{out, outln};` in the CLI's files.
pub(crate) use {out, outln};
