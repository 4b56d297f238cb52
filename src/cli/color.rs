//! Whether what the CLI prints is coloured, and the colours of statuses.
//!
//! `--color auto` (the default) colours only a terminal, and not when
//! `NO_COLOR` is set to anything but the empty string (no-color.org);
//! `--color always` colours even a pipe or a file, `NO_COLOR` or not (an
//! explicit flag wins over the environment, as clig.dev says: a user who
//! types `--color always` into `| less -R` means it); `--color never` never.
//! The choice is made once, in `main`, before logging is set up, so the
//! daemon's pretty log follows it too.

use std::sync::OnceLock;

use crate::exec::{RecordedStatus, Status};

/// The `--color` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour on a terminal, unless `NO_COLOR` is set.
    #[default]
    Auto,
    /// Always colour, even into a pipe or a file, whatever `NO_COLOR` says.
    Always,
    /// Never colour.
    Never,
}

static CHOICE: OnceLock<ColorChoice> = OnceLock::new();

/// Records the command line's choice; the first call wins (the process
/// makes it once, in `main`).
pub fn choose(choice: ColorChoice) {
    let _ = CHOICE.set(choice);
}

fn choice() -> ColorChoice {
    CHOICE.get().copied().unwrap_or_default()
}

/// Whether `NO_COLOR` asks for no colour: set, and not empty.
fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// The rule: `always` and `never` say it; `auto` colours a terminal unless
/// `NO_COLOR`.
pub fn decide(choice: ColorChoice, terminal: bool, no_color: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => terminal && !no_color,
    }
}

/// Whether what goes to stderr (logs, diagnostics, progress) may be coloured.
pub fn on_stderr() -> bool {
    use std::io::IsTerminal;
    decide(choice(), std::io::stderr().is_terminal(), no_color_env())
}

/// Whether what goes to stdout (reports, `check`'s lines) may be coloured.
pub fn on_stdout() -> bool {
    decide(choice(), super::out::is_terminal(), no_color_env())
}

/// The SGR colour of a status: green succeeded; red failed, timed out,
/// interrupted; yellow cancelled, skipped, missed, running.
fn sgr(status: RecordedStatus) -> &'static str {
    match status {
        RecordedStatus::Finished(Status::Succeeded) => GREEN,
        RecordedStatus::Finished(Status::Failed | Status::TimedOut) | RecordedStatus::Interrupted => RED,
        // Cancelled, skipped, missed, running (and any state added later).
        _ => YELLOW,
    }
}

/// Green.
pub const GREEN: &str = "32";
/// Red.
pub const RED: &str = "31";
/// Yellow.
pub const YELLOW: &str = "33";

/// `text` in colour `sgr` when `color`, else as it is.
pub fn paint(text: &str, sgr: &str, color: bool) -> String {
    if color { format!("\x1b[{sgr}m{text}\x1b[0m") } else { text.to_string() }
}

/// `text` in `status`'s colour when `color`.
pub fn status(text: &str, status: RecordedStatus, color: bool) -> String {
    paint(text, sgr(status), color)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_no_color_and_auto_needs_a_terminal_without_no_color() {
        for (choice, terminal, no_color, want) in [
            (ColorChoice::Always, false, true, true),
            (ColorChoice::Never, true, false, false),
            (ColorChoice::Auto, true, false, true),
            (ColorChoice::Auto, true, true, false),
            (ColorChoice::Auto, false, false, false),
        ] {
            assert_eq!(decide(choice, terminal, no_color), want, "{choice:?} terminal={terminal} NO_COLOR={no_color}");
        }
    }

    #[test]
    fn statuses_are_green_red_or_yellow() {
        let on = |s| status("x", s, true);
        assert_eq!(on(RecordedStatus::Finished(Status::Succeeded)), "\x1b[32mx\x1b[0m");
        for s in [Status::Failed, Status::TimedOut] {
            assert_eq!(on(RecordedStatus::Finished(s)), "\x1b[31mx\x1b[0m");
        }
        assert_eq!(on(RecordedStatus::Interrupted), "\x1b[31mx\x1b[0m");
        for s in [RecordedStatus::Finished(Status::Cancelled), RecordedStatus::Finished(Status::Skipped)] {
            assert_eq!(on(s), "\x1b[33mx\x1b[0m");
        }
        assert_eq!(on(RecordedStatus::Missed), "\x1b[33mx\x1b[0m");
        assert_eq!(on(RecordedStatus::Running), "\x1b[33mx\x1b[0m");
        assert_eq!(status("x", RecordedStatus::Running, false), "x");
    }
}
