//! Rendering a finished run for people: a summary line, one line per step, and
//! an ASCII timeline on a shared time axis so overlap shows at a glance.

use std::borrow::Cow;
use std::fmt::Write;

use serde_json::Value;

use crate::exec::{RecordedStatus, RunReport, Status, StepReport};

/// Width of the timeline's bars, in characters.
const TIMELINE_WIDTH: usize = 50;
/// Beyond this many lines, the step list and timeline show only what did not
/// succeed, plus counts: a 100,000-step gather must not flood the terminal.
const MAX_LINES: usize = 60;
/// Output and errors are cut to this many characters on a step's line.
const CELL_CHARS: usize = 60;

/// The whole human report: summary, script log lines (unless they were already
/// shown live), steps, timeline; with `color`, each status (and its symbol)
/// in its colour ([`super::color::status`]).
pub fn report(r: &RunReport, with_logs: bool, color: bool) -> String {
    let mut out = String::new();
    let paint = |text: &str| super::color::status(text, r.status, color);
    let (mark, status) = (paint(symbol(r.status)), paint(r.status.as_str()));
    let _ = writeln!(out, "{mark} {} {status} in {}", r.job, seconds(r.duration_ms));
    match r.status {
        RecordedStatus::Finished(Status::Succeeded) => {
            let _ = writeln!(out, "result: {}", one_line(&r.result, 200));
        }
        _ => {
            if let Some(e) = &r.error {
                let _ = writeln!(out, "error: {e}");
            }
        }
    }
    // Scripts' lines only: a process's output lines are `gatherd logs`'s
    // (and `run --follow`'s), up to megabytes per step.
    if with_logs && r.logs.iter().any(|l| !l.stream.is_output()) {
        out.push_str("\nlog:\n");
        for l in r.logs.iter().filter(|l| !l.stream.is_output()) {
            let _ = writeln!(out, "  {:>7}  {}", seconds(l.at_ms), l.text);
        }
    }
    let shown = shown_lines(r);
    out.push('\n');
    out.push_str(&steps(r, &shown, color));
    out.push('\n');
    out.push_str(&timeline(r, &shown));
    out
}

/// One line a step printed, as `run --follow` shows it: `STEP STREAM TEXT`
/// (the step's path, then `stdout`, `stderr`, `print` or `debug`); for a
/// `terminal`, with its control characters escaped ([`for_terminal`]).
pub fn followed_line(path: &str, stream: crate::exec::Stream, text: &str, terminal: bool) -> String {
    if terminal {
        format!("{} {stream} {}", for_terminal(path), for_terminal(text), stream = stream.as_str())
    } else {
        format!("{path} {stream} {text}", stream = stream.as_str())
    }
}

/// Whether `c` is a control character a terminal acts on: C0 but tab, DEL,
/// C1 (`\u{9b}` is CSI on some terminals).
fn is_control(c: char) -> bool {
    (c.is_ascii_control() && c != '\t') || ('\u{80}'..='\u{9f}').contains(&c)
}

/// `text` safe to show on a terminal: each control character but tab
/// written as Rust writes it in a string, `\r`, `\n`, other C0 and DEL as
/// `\xHH` (`\x1b`), C1 as `\u{HH}` (`\u{9b}`), so a step's `\r` or escape
/// sequence cannot overwrite the `TIME STEP STREAM` prefix or drive the
/// terminal. A backslash stays as it is (this is for reading, not parsing:
/// `--json` and output that is not a terminal keep the bytes). Borrowed
/// when there is nothing to escape.
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if c.is_ascii_control() && c != '\t' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if is_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The lines worth showing: all of them, or past [`MAX_LINES`] the ones that did
/// not succeed (up to the cap).
fn shown_lines(r: &RunReport) -> Vec<&StepReport> {
    if r.steps.len() <= MAX_LINES {
        return r.steps.iter().collect();
    }
    r.steps
        .iter()
        .filter(|s| depth(&s.path) == 0 || s.status != RecordedStatus::Finished(Status::Succeeded))
        .take(MAX_LINES)
        .collect()
}

fn symbol(status: RecordedStatus) -> &'static str {
    match status {
        RecordedStatus::Finished(Status::Succeeded) => "✓",
        RecordedStatus::Finished(Status::Failed) => "✗",
        RecordedStatus::Finished(Status::TimedOut) => "⏱",
        RecordedStatus::Finished(Status::Cancelled) => "⊘",
        RecordedStatus::Finished(Status::Skipped) => "·",
        RecordedStatus::Interrupted => "↯",
        RecordedStatus::Missed => "○",
        RecordedStatus::Running => "…",
        RecordedStatus::Queued => "⋯",
    }
}

/// A duration for people: `250ms` below a second, `1.25s` above.
fn seconds(ms: u64) -> String {
    if ms < 1000 { format!("{ms}ms") } else { format!("{:.2}s", ms as f64 / 1000.0) }
}

/// The name shown for a line: the last part of its path, so the runs of an
/// `each` step read `show[0]`, `show[1]`, ….
fn label(s: &StepReport) -> String {
    let last = s.path.rsplit('/').next().unwrap_or(&s.name);
    format!("{}{last}", "  ".repeat(depth(&s.path)))
}

/// A value on one line: text as is, JSON compact; cut at `max` characters.
fn one_line(v: &Value, max: usize) -> String {
    let text = match v {
        Value::String(s) => s.lines().next().unwrap_or("").to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    cut(&text, max)
}

fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Indentation by depth in the tree (`main/inner/a` → 2).
fn depth(path: &str) -> usize {
    path.matches('/').count()
}

/// One line per step: status, name (indented by depth), kind, time, attempts,
/// first line of output or error; with `color`, the symbol and status in
/// the status's colour.
pub fn steps(r: &RunReport, shown: &[&StepReport], color: bool) -> String {
    let mut out = String::new();
    let name_width = shown.iter().map(|s| label(s).chars().count()).max().unwrap_or(4).max(4);
    for s in shown {
        let name = label(s);
        let time = match (s.start_ms, s.end_ms) {
            (Some(a), Some(b)) => seconds(b.saturating_sub(a)),
            _ => "-".to_string(),
        };
        let detail = match (&s.error, s.status) {
            (Some(e), _) => cut(e.lines().next().unwrap_or(""), CELL_CHARS),
            (None, _) if s.is_group() => String::new(),
            (None, _) => one_line(&s.output, CELL_CHARS),
        };
        let attempts = if s.attempts > 1 { format!(" ×{}", s.attempts) } else { String::new() };
        // Padded before it is painted: the escapes have no width.
        let status = super::color::status(&format!("{:<9}", s.status.as_str()), s.status, color);
        let line = format!(
            "{} {name:<name_width$}  {:<12} {status} {time:>7}{attempts}  {detail}",
            super::color::status(symbol(s.status), s.status, color),
            s.kind
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if shown.len() < r.steps.len() {
        let _ = writeln!(out, "({} of {} lines shown: {})", shown.len(), r.steps.len(), counts(r));
    }
    out
}

fn counts(r: &RunReport) -> String {
    let mut parts = Vec::new();
    for &status in Status::ALL {
        let n = r.steps.iter().filter(|s| s.status == RecordedStatus::Finished(status)).count();
        if n > 0 {
            parts.push(format!("{n} {status}"));
        }
    }
    parts.join(", ")
}

/// A column of a [`table`].
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Its header.
    pub header: &'static str,
    /// Right-aligned (numbers, durations).
    pub right: bool,
    /// Whether, and in which turn, it is cut when the table is wider than
    /// the terminal: 0 first, then 1, …; `None` never.
    pub shrink: Option<u8>,
}

impl Column {
    /// A left-aligned column never cut.
    pub const fn new(header: &'static str) -> Column {
        Column { header, right: false, shrink: None }
    }

    /// Right-aligned.
    pub const fn right(self) -> Column {
        Column { right: true, ..self }
    }

    /// Cut in turn `turn` to fit the terminal.
    pub const fn shrink(self, turn: u8) -> Column {
        Column { shrink: Some(turn), ..self }
    }
}

/// The narrowest a column is cut to: its header, and never below this.
const MIN_CUT_WIDTH: usize = 8;

/// The display width of `text` on a terminal (a CJK character takes two
/// columns, a combining mark none).
pub fn display_width(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

/// `text` cut to at most `width` display columns, ending in `…` when cut.
pub fn cut_to_width(text: &str, width: usize) -> String {
    if display_width(text) <= width {
        return text.to_string();
    }
    let mut kept = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        kept.push(c);
        used += w;
    }
    let mut kept = kept.trim_end().to_string();
    kept.push('…');
    kept
}

/// A table for people: a header line, then one line per row, columns two
/// spaces apart and padded by display width (not bytes or chars, and never
/// through `{:width$}` on a value whose `Display` ignores it). With `fit`
/// (the terminal's width), columns marked [`Column::shrink`] are cut, in
/// their turn, down to their header (at least [`MIN_CUT_WIDTH`]) with `…`
/// until the lines fit; without it nothing is cut (a pipe, a file).
/// Trailing spaces are trimmed. Returns the lines, header first.
pub fn table(columns: &[Column], rows: &[Vec<String>], fit: Option<usize>) -> Vec<String> {
    let mut widths: Vec<usize> = columns.iter().map(|c| display_width(c.header)).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(display_width(cell));
        }
    }
    if let Some(fit) = fit {
        let total = |widths: &[usize]| widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
        let mut turns: Vec<(u8, usize)> =
            columns.iter().enumerate().filter_map(|(i, c)| c.shrink.map(|turn| (turn, i))).collect();
        turns.sort_unstable();
        for (_, i) in turns {
            let over = total(&widths).saturating_sub(fit);
            if over == 0 {
                break;
            }
            let floor = display_width(columns[i].header).max(MIN_CUT_WIDTH).min(widths[i]);
            widths[i] -= over.min(widths[i] - floor);
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for ((column, width), cell) in columns.iter().zip(&widths).zip(cells) {
            if !out.is_empty() {
                out.push_str("  ");
            }
            let cell = cut_to_width(cell, *width);
            let pad = " ".repeat(width - display_width(&cell));
            if column.right {
                out.push_str(&pad);
                out.push_str(&cell);
            } else {
                out.push_str(&cell);
                out.push_str(&pad);
            }
        }
        out.trim_end().to_string()
    };
    let mut lines = vec![line(&mut columns.iter().map(|c| c.header))];
    for row in rows {
        lines.push(line(&mut row.iter().map(String::as_str)));
    }
    lines
}

/// The timeline: one bar per line on a shared axis from 0 to the run's length.
/// `#` succeeded, `x` failed, `!` timed out, `-` cancelled; skipped lines have none.
pub fn timeline(r: &RunReport, shown: &[&StepReport]) -> String {
    let total = r.duration_ms.max(1);
    let mut out = String::new();
    let name_width = shown.iter().map(|s| label(s).chars().count()).max().unwrap_or(4).max(8);
    let _ = writeln!(out, "{:name_width$}  0s{:>width$}", "timeline", seconds(r.duration_ms), width = TIMELINE_WIDTH);
    for s in shown {
        let name = label(s);
        let bar = match (s.start_ms, s.end_ms) {
            (Some(a), Some(b)) => {
                let col = |ms: u64| ((ms.min(total) as f64 / total as f64) * TIMELINE_WIDTH as f64).round() as usize;
                let (from, to) = (col(a), col(b).max(col(a) + 1).min(TIMELINE_WIDTH));
                let from = from.min(to.saturating_sub(1));
                let fill = match s.status {
                    RecordedStatus::Finished(Status::Succeeded) => '#',
                    RecordedStatus::Finished(Status::Failed) => 'x',
                    RecordedStatus::Finished(Status::TimedOut) => '!',
                    _ => '-',
                };
                format!("{}{}{}", " ".repeat(from), fill.to_string().repeat(to - from), " ".repeat(TIMELINE_WIDTH - to))
            }
            _ => format!("{:TIMELINE_WIDTH$}", "(skipped)"),
        };
        let _ = writeln!(out, "{name:<name_width$}  |{bar}|");
    }
    let _ = writeln!(out, "{:name_width$}  # succeeded  x failed  ! timed out  - cancelled", "");
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::exec::{NodeKind, RunEvent, Stream};

    #[test]
    fn control_characters_are_escaped_for_a_terminal_except_tab() {
        let text = "x\rFAKE main/other stderr \x1b]0;title\x07\u{9b}2J\ttab\x7f\0\n\u{85} é \\ ✓";
        assert_eq!(
            for_terminal(text),
            "x\\rFAKE main/other stderr \\x1b]0;title\\x07\\u{9b}2J\ttab\\x7f\\x00\\n\\u{85} é \\ ✓"
        );
        assert!(matches!(for_terminal("plain\ttext é"), Cow::Borrowed(_)), "nothing to escape: no copy");
        // Every C0 (but tab), DEL and every C1 is escaped; nothing else.
        for c in (0..=0x10ffff_u32).filter_map(char::from_u32) {
            let control = (c < ' ' && c != '\t') || ('\x7f'..='\u{9f}').contains(&c);
            let shown = for_terminal(&c.to_string()).into_owned();
            assert_eq!(shown != c.to_string(), control, "{c:?} shown as {shown:?}");
            assert!(!shown.chars().any(|s| (s < ' ' && s != '\t') || ('\x7f'..='\u{9f}').contains(&s)), "{shown:?}");
        }
    }

    #[test]
    fn a_followed_line_is_escaped_for_a_terminal_and_byte_exact_otherwise() {
        let text = "x\rFAKE main/other stderr \x1b[2J";
        assert_eq!(
            followed_line("main/a", Stream::Stdout, text, true),
            "main/a stdout x\\rFAKE main/other stderr \\x1b[2J"
        );
        assert_eq!(followed_line("main/a", Stream::Stdout, text, false), format!("main/a stdout {text}"));
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn finished(
        path: &str,
        kind: &'static str,
        status: Status,
        start: Option<u64>,
        end: u64,
        output: Value,
        error: Option<&str>,
    ) -> RunEvent {
        RunEvent::NodeFinished {
            path: Arc::from(path),
            name: Arc::from(path.rsplit('/').next().unwrap_or(path)),
            kind: NodeKind::parse(kind).expect("a kind"),
            status,
            attempts: u32::from(start.is_some()),
            started: start.map(ms),
            at: ms(end),
            output: Some(output),
            error: error.map(str::to_string),
            truncated: false,
        }
    }

    fn seed_report() -> RunReport {
        let mut r = RunReport::new("seed-gather", "jobs/seed-gather.toml");
        let events = [
            RunEvent::NodeStarted {
                path: Arc::from("main"),
                name: Arc::from("main"),
                kind: NodeKind::Gather,
                at: ms(0),
            },
            finished("main/read", "sleep", Status::Succeeded, Some(0), 500, json!("file_content"), None),
            finished("main/fetch", "sleep", Status::Succeeded, Some(0), 1000, json!("url_content"), None),
            finished(
                "main/broken",
                "exec",
                Status::Failed,
                Some(100),
                250,
                Value::Null,
                Some("exit status 1; stderr: no\nmore"),
            ),
            finished("main/late", "sleep", Status::Skipped, None, 250, Value::Null, Some("not started")),
            finished("main", "gather", Status::Succeeded, Some(0), 1000, json!(["url_content", "file_content"]), None),
            RunEvent::RunFinished {
                status: Status::Succeeded,
                result: Some(json!(["url_content", "file_content"])),
                error: None,
                duration: ms(1000),
            },
        ];
        for e in &events {
            r.apply(e);
        }
        r
    }

    #[test]
    fn report_shows_steps_and_a_timeline_on_one_axis() {
        insta::assert_snapshot!(report(&seed_report(), true, false));
    }

    #[test]
    fn a_coloured_report_paints_each_status_and_keeps_the_columns() {
        let plain = report(&seed_report(), true, false);
        let coloured = report(&seed_report(), true, true);
        assert!(!plain.contains('\x1b'), "{plain}");
        assert!(coloured.starts_with("\x1b[32m✓\x1b[0m seed-gather \x1b[32msucceeded\x1b[0m in"), "{coloured}");
        assert!(coloured.contains("\x1b[31mfailed   \x1b[0m"), "the failed step is red:\n{coloured}");
        assert!(coloured.contains("\x1b[33mskipped  \x1b[0m"), "the skipped step is yellow:\n{coloured}");
        let stripped = coloured.replace("\x1b[32m", "").replace("\x1b[31m", "").replace("\x1b[33m", "");
        assert_eq!(stripped.replace("\x1b[0m", ""), plain, "colour adds escapes and nothing else");
    }

    #[test]
    fn table_columns_are_padded_by_display_width_and_cut_with_an_ellipsis() {
        let columns = [Column::new("JOB").shrink(0), Column::new("N").right(), Column::new("END")];
        let rows = vec![
            vec!["日本語のジョブ.toml".to_string(), "7".to_string(), "x".to_string()],
            vec!["a.toml".to_string(), "12345".to_string(), "y".to_string()],
        ];
        let lines = table(&columns, &rows, None);
        let ends: Vec<usize> = lines.iter().map(|l| display_width(l)).collect();
        let job = display_width("日本語のジョブ.toml");
        assert_eq!(ends, [job + 2 + 5 + 2 + 3, job + 2 + 5 + 2 + 1, job + 2 + 5 + 2 + 1], "{lines:#?}");
        let cut = table(&columns, &rows, Some(20));
        assert!(cut.iter().all(|l| display_width(l) <= 20), "{cut:#?}");
        assert_eq!(cut[1], "日本語…       7  x", "{cut:#?}");
    }

    #[test]
    fn long_runs_show_only_what_did_not_succeed() {
        let mut r = RunReport::new("big", "big.toml");
        for i in 0..1000 {
            let status = if i == 7 { Status::Failed } else { Status::Succeeded };
            r.apply(&finished(
                &format!("main/s{i}"),
                "sleep",
                status,
                Some(0),
                10,
                json!("x"),
                (i == 7).then_some("boom"),
            ));
        }
        let text = report(&r, true, false);
        assert!(text.contains("(1 of 1000 lines shown: 999 succeeded, 1 failed)"), "{text}");
        assert!(text.contains("s7"));
        assert!(!text.contains("s8 "));
    }
}
