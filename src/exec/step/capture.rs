//! Bounded capture of what steps produce: the head of an output (stdout, an HTTP
//! body, a file) up to `Limits::output_bytes`, and the tail of a stderr.
//!
//! Architecture Invariant: no step keeps more than its bound in memory, however
//! much the program, server or file produces.

use std::collections::VecDeque;

/// The first `limit` bytes of a stream, and whether more came.
#[derive(Debug)]
pub(crate) struct Head {
    buf: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Head {
    /// An empty capture keeping at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Head {
        Head { buf: Vec::new(), limit, truncated: false }
    }

    /// Adds a chunk; bytes past the bound are dropped and mark it truncated.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        let room = self.limit.saturating_sub(self.buf.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// Whether anything past the bound was seen.
    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }

    /// Whether the bound is reached, so further chunks are only counted.
    pub(crate) fn full(&self) -> bool {
        self.buf.len() >= self.limit
    }

    /// The text (lossy UTF-8). When cut, a character split by the cut is dropped
    /// rather than shown as a replacement character.
    pub(crate) fn into_text(self) -> (String, bool) {
        let mut bytes = self.buf;
        if self.truncated {
            let keep = utf8_prefix_len(&bytes);
            bytes.truncate(keep);
        }
        (lossy(bytes), self.truncated)
    }
}

/// The last `limit` bytes of a stream.
#[derive(Debug)]
pub(crate) struct Tail {
    buf: VecDeque<u8>,
    limit: usize,
    cut: bool,
}

impl Tail {
    /// An empty capture keeping the last `limit` bytes.
    pub(crate) fn new(limit: usize) -> Tail {
        Tail { buf: VecDeque::new(), limit, cut: false }
    }

    /// Adds a chunk, forgetting the oldest bytes past the bound.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        let chunk = if chunk.len() > self.limit {
            self.cut = true;
            &chunk[chunk.len() - self.limit..]
        } else {
            chunk
        };
        let over = (self.buf.len() + chunk.len()).saturating_sub(self.limit);
        if over > 0 {
            self.cut = true;
            self.buf.drain(..over);
        }
        self.buf.extend(chunk);
    }

    /// The tail as text, trimmed, with `…` in front when older text was dropped.
    pub(crate) fn into_text(self) -> String {
        let mut bytes: Vec<u8> = self.buf.into();
        if self.cut {
            // Skip UTF-8 continuation bytes of a character split by the cut.
            let skip = bytes.iter().take(3).take_while(|b| (**b & 0xC0) == 0x80).count();
            bytes.drain(..skip);
        }
        let text = lossy(bytes);
        let text = text.trim();
        if self.cut && !text.is_empty() { format!("…{text}") } else { text.to_string() }
    }
}

/// Bytes as text, replacing invalid UTF-8 without copying valid text twice.
pub(crate) fn lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// The length of `bytes` without a trailing, incomplete UTF-8 character.
fn utf8_prefix_len(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        // `error_len() == None` means the input ended mid-character.
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => bytes.len(),
    }
}

/// Removes one trailing line ending (`\n` or `\r\n`), as shells do for `$(...)`
/// but only once: the output of `echo hi` is `hi`.
pub(crate) fn trim_one_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

/// An OS error as a person reads it: "No such file or directory", without the
/// "(os error 2)" that `io::Error`'s `Display` adds.
pub(crate) fn os_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_keeps_the_bound_and_flags_the_rest() {
        let mut h = Head::new(5);
        h.push(b"abc");
        assert!(!h.full());
        h.push(b"defgh");
        assert!(h.full());
        assert_eq!(h.into_text(), ("abcde".to_string(), true));
    }

    #[test]
    fn head_exactly_at_the_bound_is_not_truncated() {
        let mut h = Head::new(3);
        h.push(b"abc");
        h.push(b"");
        assert_eq!(h.into_text(), ("abc".to_string(), false));
    }

    #[test]
    fn head_cut_inside_a_character_drops_it() {
        let mut h = Head::new(2);
        h.push("aé".as_bytes()); // 'é' is two bytes
        assert_eq!(h.into_text(), ("a".to_string(), true));
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut t = Tail::new(4);
        t.push(b"hello ");
        t.push(b"world");
        assert_eq!(t.into_text(), "…orld");
        let mut t = Tail::new(40);
        t.push(b"oops\n");
        assert_eq!(t.into_text(), "oops");
    }

    #[test]
    fn one_trailing_newline_is_trimmed() {
        assert_eq!(trim_one_newline("a\n\n".into()), "a\n");
        assert_eq!(trim_one_newline("a\r\n".into()), "a");
        assert_eq!(trim_one_newline("a".into()), "a");
    }

    #[test]
    fn os_errors_read_plainly() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(os_error(&e), "No such file or directory");
    }
}
