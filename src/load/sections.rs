//! The layout of a TOML job: where the top-level settings end and where each
//! `[[step]]`, `[[group]]` and `[script_limits]` table starts.
//!
//! A big job is thousands of small tables. Parsing the whole document at once
//! keeps a spanned tree of every one of them alive together (~1 KiB a step,
//! plus the token list), so `toml_job.rs` reads a job of this plain layout one
//! table at a time instead, and frees each table once it is read.
//!
//! Found with `toml_parser`'s lexer (the one `toml` itself uses), so strings,
//! multi-line strings, comments and multi-line arrays are never mistaken for
//! headers. Any other layout — sub-tables such as `[step.http]`, dotted or
//! quoted header keys, `[script_limits]` twice — gives `None`, and the whole
//! document is parsed as one; so does anything the lexer finds odd.

use std::ops::Range;

use toml_parser::Source;
use toml_parser::lexer::TokenKind;

/// What a top-level table header opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    /// `[[step]]`
    Step,
    /// `[[group]]`
    Group,
    /// `[script_limits]`
    ScriptLimits,
    /// `[handlers]`
    Handlers,
}

/// A job file cut at its top-level headers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The settings before the first header.
    pub(crate) preamble: Range<usize>,
    /// Each table: what it is, and its text from its header to the next one.
    pub(crate) tables: Vec<(Section, Range<usize>)>,
}

/// The layout of `source`, when it is the plain one (see the module docs).
pub(crate) fn layout(source: &str) -> Option<Layout> {
    let mut tokens = Source::new(source).lex().filter(|t| t.kind() != TokenKind::Whitespace).peekable();
    let mut starts: Vec<(Section, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut line_start = true;
    while let Some(token) = tokens.next() {
        match token.kind() {
            TokenKind::Newline => {
                line_start = depth == 0;
                continue;
            }
            TokenKind::Comment => continue,
            TokenKind::Eof => break,
            // At the start of a line and outside any value: a table header.
            TokenKind::LeftSquareBracket if line_start => {
                let double = tokens.next_if(|t| t.kind() == TokenKind::LeftSquareBracket).is_some();
                let key = tokens.next().filter(|t| t.kind() == TokenKind::Atom)?;
                let closes = if double { 2 } else { 1 };
                for _ in 0..closes {
                    tokens.next().filter(|t| t.kind() == TokenKind::RightSquareBracket)?;
                }
                let section = match (double, &source[key.span().start()..key.span().end()]) {
                    (true, "step") => Section::Step,
                    (true, "group") => Section::Group,
                    (false, "script_limits") if !starts.iter().any(|(s, _)| *s == Section::ScriptLimits) => {
                        Section::ScriptLimits
                    }
                    (false, "handlers") if !starts.iter().any(|(s, _)| *s == Section::Handlers) => Section::Handlers,
                    _ => return None,
                };
                starts.push((section, token.span().start()));
            }
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => depth += 1,
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => depth = depth.checked_sub(1)?,
            _ => {}
        }
        line_start = false;
    }
    if depth != 0 {
        return None;
    }
    let ends = starts.iter().skip(1).map(|&(_, start)| start).chain([source.len()]);
    let tables = starts.iter().zip(ends).map(|(&(section, start), end)| (section, start..end)).collect();
    Some(Layout { preamble: 0..starts.first().map_or(source.len(), |&(_, start)| start), tables })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(source: &str) -> Option<Vec<(Section, &str)>> {
        let l = layout(source)?;
        let mut out = vec![(Section::ScriptLimits, &source[l.preamble])];
        out.extend(l.tables.into_iter().map(|(s, r)| (s, &source[r])));
        Some(out)
    }

    #[test]
    fn cuts_at_every_top_level_header() {
        let src = "timeout = \"5s\"\n# a comment\n[[group]]\nname = \"main\"\ngather = [\n  \"a\",\n  \"b\",\n]\n\n  [[step]]\nname = \"a\"\nsleep = \"1s\"\n[script_limits]\nmax_operations = 10\n[[step]] # b\nname = \"b\"\nhttp = { url = \"http://x/\", headers = [[\"a\", \"b\"]] }\n";
        let parts = cut(src).expect("plain layout");
        let kinds: Vec<Section> = parts.iter().skip(1).map(|(s, _)| *s).collect();
        assert_eq!(kinds, [Section::Group, Section::Step, Section::ScriptLimits, Section::Step]);
        assert_eq!(parts[0].1, "timeout = \"5s\"\n# a comment\n");
        assert!(parts[1].1.starts_with("[[group]]") && parts[1].1.ends_with("]\n\n  "), "{:?}", parts[1].1);
        assert!(parts[4].1.starts_with("[[step]] # b") && parts[4].1.ends_with("]] }\n"));
        let joined: String = parts.iter().map(|(_, t)| *t).collect();
        assert_eq!(joined, src, "the pieces are the whole file");
    }

    #[test]
    fn brackets_inside_strings_and_values_are_not_headers() {
        let src = "[[step]]\nname = \"a\"\nshell = '''\n[[step]]\n[group]\n'''\n[[step]]\nname = \"b\"\nexec = [\n\"[x]\",\n[\"nested\"]\n]\n";
        let parts = cut(src).expect("plain layout");
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert!(parts[1].1.contains("'''\n[[step]]\n[group]\n'''"));
    }

    #[test]
    fn any_other_layout_is_left_to_the_whole_document_parser() {
        for src in [
            "[[step]]\nname = \"a\"\n[step.http]\nurl = \"http://x/\"\n",
            "[[step.x]]\n",
            "[[\"step\"]]\n",
            "[step]\nname = \"a\"\n",
            "[[steps]]\n",
            "[[group]\n",
            "[script_limits]\n[script_limits]\n",
            "[[step]]\nexec = [\"a\"\n",
            "[[step]]\nexec = ]\n",
        ] {
            assert_eq!(layout(src), None, "{src:?}");
        }
    }

    #[test]
    fn a_file_without_headers_is_all_preamble() {
        let l = layout("timeout = \"1s\"\n").expect("plain");
        assert_eq!(l.preamble, 0..15);
        assert!(l.tables.is_empty());
    }
}
