//! A small highlighter for job files: comments, strings, TOML keys and
//! table headers, Rhai keywords and numbers — enough to read a job at a
//! glance, not a parser. Its output is HTML: every piece of the source is
//! escaped here, and the only markup is its own `<span class>`.

use crate::job::JobFormat;

/// `source` as escaped HTML with `<span class="c|s|k|h|n|w">` around
/// comments, strings, keys, headers, numbers and keywords.
pub fn highlight(source: &str, format: Option<JobFormat>) -> String {
    let rhai = matches!(format, Some(JobFormat::Rhai));
    let mut out = String::with_capacity(source.len() * 5 / 4);
    for (i, line) in source.split_inclusive('\n').enumerate() {
        let _ = i;
        if rhai { rhai_line(line, &mut out) } else { toml_line(line, &mut out) }
    }
    out
}

fn span(out: &mut String, class: &str, text: &str) {
    out.push_str("<span class=\"");
    out.push_str(class);
    out.push_str("\">");
    super::escape_into(out, text);
    out.push_str("</span>");
}

/// The length of the string starting at `rest` (quote included), to its
/// closing quote or the end of the line.
fn string_len(rest: &str, quote: char) -> usize {
    let mut escaped = false;
    for (i, c) in rest.char_indices().skip(1) {
        match c {
            '\\' if quote != '\'' && !escaped => escaped = true,
            c if c == quote && !escaped => return i + c.len_utf8(),
            '\n' => return i,
            _ => escaped = false,
        }
    }
    rest.len()
}

fn toml_line(line: &str, out: &mut String) {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    super::escape_into(out, indent);
    if trimmed.starts_with('[') {
        let end = trimmed.find(['#', '\n']).unwrap_or(trimmed.len());
        span(out, "h", trimmed[..end].trim_end());
        super::escape_into(out, &trimmed[trimmed[..end].trim_end().len()..end]);
        return rest_of_line(&trimmed[end..], out);
    }
    // A key before `=` (bare or quoted, dotted).
    if let Some(eq) = trimmed.find('=')
        && !trimmed[..eq].contains(['"', '\'', '#'])
        && !trimmed[..eq].trim().is_empty()
    {
        span(out, "k", &trimmed[..eq]);
        out.push('=');
        return rest_of_line(&trimmed[eq + 1..], out);
    }
    rest_of_line(trimmed, out);
}

/// Strings, comments, numbers and the rest of a TOML line.
fn rest_of_line(mut text: &str, out: &mut String) {
    while let Some(c) = text.chars().next() {
        if c == '#' {
            let end = text.find('\n').unwrap_or(text.len());
            span(out, "c", &text[..end]);
            text = &text[end..];
        } else if c == '"' || c == '\'' {
            let n = string_len(text, c);
            span(out, "s", &text[..n]);
            text = &text[n..];
        } else if c.is_ascii_digit() {
            let n = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_')).unwrap_or(text.len());
            span(out, "n", &text[..n]);
            text = &text[n..];
        } else {
            let n = c.len_utf8();
            super::escape_into(out, &text[..n]);
            text = &text[n..];
        }
    }
}

const RHAI_KEYWORDS: &[&str] = &[
    "let", "const", "fn", "if", "else", "for", "in", "while", "loop", "return", "break", "continue", "true", "false",
    "throw", "try", "catch", "switch", "import", "export", "as", "private", "this",
];

fn rhai_line(line: &str, out: &mut String) {
    let mut text = line;
    while let Some(c) = text.chars().next() {
        if text.starts_with("//") {
            let end = text.find('\n').unwrap_or(text.len());
            span(out, "c", &text[..end]);
            text = &text[end..];
        } else if c == '"' || c == '`' || c == '\'' {
            let n = string_len(text, c);
            span(out, "s", &text[..n]);
            text = &text[n..];
        } else if c.is_ascii_alphabetic() || c == '_' {
            let n = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(text.len());
            let word = &text[..n];
            if RHAI_KEYWORDS.contains(&word) {
                span(out, "w", word)
            } else {
                super::escape_into(out, word)
            }
            text = &text[n..];
        } else if c.is_ascii_digit() {
            let n = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_')).unwrap_or(text.len());
            span(out, "n", &text[..n]);
            text = &text[n..];
        } else {
            let n = c.len_utf8();
            super::escape_into(out, &text[..n]);
            text = &text[n..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_keys_strings_comments_and_headers_are_marked_and_escaped() {
        let html = highlight("# a <b>\n[[step]]\nname = \"x<y\" # c\nn = 5\n", Some(JobFormat::Toml));
        assert_eq!(
            html,
            "<span class=\"c\"># a &lt;b&gt;</span>\n<span class=\"h\">[[step]]</span>\n\
             <span class=\"k\">name </span>= <span class=\"s\">&quot;x&lt;y&quot;</span> <span class=\"c\"># c</span>\n\
             <span class=\"k\">n </span>= <span class=\"n\">5</span>\n"
        );
    }

    #[test]
    fn rhai_keywords_strings_and_comments_are_marked() {
        let html = highlight("let x = \"a\"; // </script>\n", Some(JobFormat::Rhai));
        assert_eq!(
            html,
            "<span class=\"w\">let</span> x = <span class=\"s\">&quot;a&quot;</span>; <span class=\"c\">// &lt;/script&gt;</span>\n"
        );
    }
}
