//! Diagnostics: what is wrong in a job file, where, and what was expected.
//!
//! A [`Diagnostic`] carries the file's text and a byte span, so it can be shown
//! two ways: one line (`FILE:LINE:COL: message; help`) for logs, and a full
//! rustc-style rendering through miette for people at a terminal.
//!
//! Architecture Invariant: rendering is pure: it never reads the file again
//! (the text is kept from load time) and never depends on the terminal it runs
//! in — colour and width are fixed by the caller, so snapshots are stable.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents, SourceCode, SourceSpan,
    SpanContents,
};

/// The width diagnostics are wrapped at, fixed so renderings are stable.
const RENDER_WIDTH: usize = 100;

/// One problem in a job file, with the place it was found.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    file: Arc<str>,
    source: Option<Arc<str>>,
    span: Option<Range<usize>>,
    line_col: Option<(usize, usize)>,
    message: String,
    label: Option<String>,
    help: Option<String>,
    notes: Vec<(Range<usize>, String)>,
    /// Where it sorts among the job file's diagnostics, when its span is in
    /// another file (a `script_file`): the offset of what refers to that file.
    anchor: Option<usize>,
}

impl Diagnostic {
    /// A diagnostic about the file as a whole (I/O, size): no place in it.
    pub(crate) fn whole_file(file: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: display_name(file),
            source: None,
            span: None,
            line_col: None,
            message: message.into(),
            label: None,
            help: None,
            notes: Vec::new(),
            anchor: None,
        }
    }

    /// A diagnostic at `span` of `source`; `line_col` is where the span starts.
    pub(crate) fn at(
        file: Arc<str>,
        source: Arc<str>,
        span: Range<usize>,
        line_col: (usize, usize),
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            file,
            source: Some(source),
            span: Some(span),
            line_col: Some(line_col),
            message: message.into(),
            label: None,
            help: None,
            notes: Vec::new(),
            anchor: None,
        }
    }

    /// Says what was expected, under the caret.
    pub(crate) fn label(&mut self, label: impl Into<String>) -> &mut Self {
        self.label = Some(label.into());
        self
    }

    /// How to fix it (`did you mean ...?`).
    pub(crate) fn help(&mut self, help: impl Into<String>) -> &mut Self {
        self.help = Some(help.into());
        self
    }

    /// Points at a second place that explains the first (`first defined here`).
    pub(crate) fn note(&mut self, span: Range<usize>, label: impl Into<String>) -> &mut Self {
        self.notes.push((span, label.into()));
        self
    }

    /// Sorts this diagnostic at `offset` of the job file: for a diagnostic
    /// in another file that the job file refers to there.
    pub(crate) fn anchor(&mut self, offset: usize) -> &mut Self {
        self.anchor = Some(offset);
        self
    }

    /// The offset it sorts at among the job file's diagnostics.
    pub(crate) fn order(&self) -> usize {
        self.anchor.or_else(|| self.span.as_ref().map(|s| s.start)).unwrap_or(0)
    }

    /// Where the problem starts: 1-based line and column (in characters), if
    /// it has a place in the file.
    pub fn line_col(&self) -> Option<(usize, usize)> {
        self.line_col
    }

    /// The file the problem is in, as shown in messages (a job's
    /// `script_file` for a problem there).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// What is wrong, without place or help.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How to fix it, if there is a suggestion.
    pub fn help_text(&self) -> Option<&str> {
        self.help.as_deref()
    }

    /// The byte range of the file the problem is at.
    pub fn span(&self) -> Option<Range<usize>> {
        self.span.clone()
    }

    /// `FILE:LINE:COL` (or just `FILE`).
    fn location(&self) -> String {
        match self.line_col {
            Some((line, col)) => format!("{}:{line}:{col}", self.file),
            None => self.file.to_string(),
        }
    }

    /// One line for logs: `FILE:LINE:COL: message; did you mean `x`?`.
    pub fn one_line(&self) -> String {
        match &self.help {
            Some(help) => format!("{}: {}; {help}", self.location(), self.message),
            None => format!("{}: {}", self.location(), self.message),
        }
    }

    /// The full rustc-style rendering: the message, `FILE:LINE:COL`, the source
    /// line with the offending span underlined and labelled, and `help:`.
    /// Notes far from the main span follow as their own snippets, so the
    /// first snippet is always the one the message is about.
    pub fn render(&self, color: bool) -> String {
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_width(RENDER_WIDTH)
            .with_links(false)
            .without_syntax_highlighting();
        let (near, far) = self.split_notes();
        let mut reports = vec![Report::main(self, near)];
        reports.extend(far.into_iter().map(|(span, label)| Report::note(self, span, label)));
        let mut out = String::new();
        for report in &reports {
            if handler.render_report(&mut out, report).is_err() {
                // miette only fails on a span outside the text, which the
                // loader never builds; the one-line form still says everything.
                return self.one_line();
            }
        }
        out
    }

    /// Notes within a few lines of the main span (drawn in its snippet), and
    /// the others.
    #[allow(clippy::type_complexity)]
    fn split_notes(&self) -> (Vec<(Range<usize>, String)>, Vec<(Range<usize>, String)>) {
        let (Some(text), Some(span)) = (&self.source, &self.span) else {
            return (Vec::new(), Vec::new());
        };
        self.notes.iter().cloned().partition(|(note, _)| {
            let (a, b) = if note.start < span.start { (note.start, span.start) } else { (span.start, note.start) };
            text.get(a..b).is_some_and(|between| between.matches('\n').count() <= NEAR_LINES)
        })
    }
}

/// Notes at most this many lines from the main span share its snippet.
const NEAR_LINES: usize = 3;

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

/// A job file that could not be loaded, with every problem found in it.
#[derive(Debug, Clone)]
pub struct LoadError {
    file: PathBuf,
    diagnostics: Vec<Diagnostic>,
}

impl LoadError {
    /// An error of `diagnostics`, which must not be empty.
    pub(crate) fn new(file: &Path, diagnostics: Vec<Diagnostic>) -> LoadError {
        debug_assert!(!diagnostics.is_empty());
        LoadError { file: file.to_path_buf(), diagnostics }
    }

    /// An error with a single problem about the whole file.
    pub(crate) fn whole_file(file: &Path, message: impl Into<String>) -> LoadError {
        LoadError::new(file, vec![Diagnostic::whole_file(file, message)])
    }

    /// Every problem found, in the order they appear in the file; at least one.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// The file that failed to load, as given to the loader.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// All diagnostics rendered ([`Diagnostic::render`]), separated by blank lines.
    pub fn render(&self, color: bool) -> String {
        let mut out = String::new();
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&d.render(color));
        }
        out
    }
}

impl fmt::Display for LoadError {
    /// One line per diagnostic: `FILE:LINE:COL: message (help)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {}", d.location(), d.message)?;
            if let Some(help) = &d.help {
                write!(f, " ({help})")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// The file name as shown in messages.
pub(crate) fn display_name(file: &Path) -> Arc<str> {
    Arc::from(file.display().to_string())
}

/// Maps byte offsets to 1-based line and character column, in O(log lines).
#[derive(Clone)]
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// 1-based line and column (in characters) of byte `offset` of `text`.
    pub(crate) fn line_col(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let col = text.get(start..offset).map_or(offset - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    /// The byte offset of 1-based `line` and `col` (in characters) of `text`;
    /// past the end of a line or of the text, its end.
    pub(crate) fn offset(&self, text: &str, line: usize, col: usize) -> usize {
        let Some(&start) = self.starts.get(line.saturating_sub(1)) else {
            return text.len();
        };
        let rest = &text[start..];
        let line_len = rest.find('\n').unwrap_or(rest.len());
        let within = rest[..line_len].char_indices().nth(col.saturating_sub(1)).map_or(line_len, |(i, _)| i);
        start + within
    }
}

/// `did you mean `x`?` for the candidate closest to `word`, if one is close.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The candidate closest to `word` ([`crate::job::closest`], the one rule of
/// every did-you-mean).
pub(crate) fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    crate::job::closest(word, candidates)
}

/// The job file's text as miette sees it: named `FILE`, with columns counted
/// in characters (miette counts bytes) so the snippet header agrees with
/// [`Diagnostic::line_col`].
struct SourceView {
    name: String,
    text: Arc<str>,
}

impl SourceCode for SourceView {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let inner = self.text.as_bytes().read_span(span, context_lines_before, context_lines_after)?;
        let mut column = inner.column();
        if context_lines_before == 0 {
            let start = span.offset().saturating_sub(column);
            if let Some(before) = self.text.get(start..span.offset()) {
                column = before.chars().count();
            }
        }
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            column,
            inner.line_count(),
        )))
    }
}

/// A [`Diagnostic`] (or one of its far notes) in the shape miette renders.
struct Report {
    message: String,
    severity: miette::Severity,
    source: Option<SourceView>,
    span: Option<Range<usize>>,
    label: Option<String>,
    notes: Vec<(Range<usize>, String)>,
    help: Option<String>,
}

impl Report {
    fn main(diag: &Diagnostic, notes: Vec<(Range<usize>, String)>) -> Report {
        let source = match (&diag.source, &diag.span) {
            (Some(text), Some(_)) => Some(SourceView { name: diag.file.to_string(), text: text.clone() }),
            _ => None,
        };
        // Without a snippet there is no `[FILE:LINE:COL]` header, so the place
        // goes in front of the message.
        let message =
            if source.is_some() { diag.message.clone() } else { format!("{}: {}", diag.location(), diag.message) };
        Report {
            message,
            severity: miette::Severity::Error,
            source,
            span: diag.span.clone(),
            label: diag.label.clone(),
            notes,
            help: diag.help.clone(),
        }
    }

    fn note(diag: &Diagnostic, span: Range<usize>, label: String) -> Report {
        Report {
            message: format!("note: {label}"),
            severity: miette::Severity::Advice,
            source: diag.source.as_ref().map(|text| SourceView { name: diag.file.to_string(), text: text.clone() }),
            span: Some(span),
            label: None,
            notes: Vec::new(),
            help: None,
        }
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Report {}

impl miette::Diagnostic for Report {
    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source.as_ref()?;
        let span = self.span.clone()?;
        let primary = LabeledSpan::new_primary_with_span(self.label.clone(), span);
        let notes =
            self.notes.iter().map(|(span, label)| LabeledSpan::new_with_span(Some(label.clone()), span.clone()));
        Some(Box::new(std::iter::once(primary).chain(notes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_counts_characters() {
        let text = "a = 1\nβγ = 2\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.line_col(text, 0), (1, 1));
        assert_eq!(idx.line_col(text, 6), (2, 1));
        // after "βγ " (5 bytes, 3 characters)
        assert_eq!(idx.line_col(text, 11), (2, 4));
        assert_eq!(idx.line_col(text, text.len()), (3, 1));
        assert_eq!(idx.offset(text, 2, 4), 11);
        assert_eq!(idx.offset(text, 2, 99), 14);
        assert_eq!(idx.offset(text, 9, 1), text.len());
    }

    #[test]
    fn closest_finds_misspellings() {
        let keys = ["retries", "retry_delay", "backoff", "timeout"];
        assert_eq!(closest("retires", keys), Some("retries"));
        assert_eq!(closest("timout", keys), Some("timeout"));
        assert_eq!(closest("Backoff", keys), Some("backoff"));
        assert_eq!(closest("zzz", keys), None);
    }
}
