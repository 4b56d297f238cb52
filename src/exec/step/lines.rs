//! A step's output as lines: every line a process writes to stdout or stderr
//! becomes a [`RunEvent::Log`] as it is read, within the step's bounds
//! ([`OutputBounds`]: `head` bytes live, then the last `tail` bytes at the
//! step's end after one marker line saying how much was dropped). A
//! script's `print`/`debug` lines and an http status line are whole lines
//! within the same bounds.
//!
//! Line rules: lines end at `\n` (the `\r` of a `\r\n` is removed, any other
//! `\r` is kept, so a progress bar is one line of its frames); a line longer
//! than [`PIECE`] bytes is cut into pieces of that size; a last line without
//! a newline is kept; bytes that are not UTF-8 are replaced (lossy), never an
//! error.
//!
//! Architecture Invariant: a step keeps at most `tail` bytes of lines in
//! memory, run records included (plus four of them, and one partial line of at most [`PIECE`] bytes per stream), and
//! at most `head + tail` bytes of lines (plus the marker) ever become events,
//! however much it writes. Past the head, bytes are only copied into a ring:
//! no event, no `String`, no line split per dropped line.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use crate::exec::{NodePath, RunEvent, Stream};

/// The longest line kept whole; a longer one is cut into pieces this long.
pub const PIECE: usize = 16 * 1024;

/// How much of a step's lines become events: the first `head` bytes as they
/// are read, then the last `tail` bytes when the step ends. Bytes are counted
/// as written (newlines included), both streams and every attempt together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputBounds {
    /// Bytes of lines emitted as they are read.
    pub head: usize,
    /// Bytes of the last lines kept past the head, emitted at the step's end.
    pub tail: usize,
}

impl Default for OutputBounds {
    fn default() -> Self {
        OutputBounds { head: 1024 * 1024, tail: 1024 * 1024 }
    }
}

impl OutputBounds {
    /// These bounds with what `set` sets instead (a job's `max_output`
    /// over the config's).
    pub fn with(self, set: &crate::job::MaxOutput) -> OutputBounds {
        let bytes = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        OutputBounds { head: set.head.map_or(self.head, bytes), tail: set.tail.map_or(self.tail, bytes) }
    }
}

/// What every step of a run needs to send its lines: the run's clock and
/// event channel, and the job's bounds.
#[derive(Debug, Clone)]
pub struct RunLines {
    start: Instant,
    events: UnboundedSender<RunEvent>,
    bounds: OutputBounds,
    /// Every line's text goes through it before it is sent (`exec::secrets`).
    masker: crate::exec::Masker,
}

impl RunLines {
    /// Lines timed from `start` (the run's), sent on `events`.
    pub fn new(start: Instant, events: UnboundedSender<RunEvent>, bounds: OutputBounds) -> RunLines {
        RunLines { start, events, bounds, masker: crate::exec::Masker::default() }
    }

    /// These lines with every secret of `masker` masked before it is sent.
    pub fn masked(self, masker: crate::exec::Masker) -> RunLines {
        RunLines { masker, ..self }
    }

    fn send(&self, path: &NodePath, stream: Stream, mut text: String, at: Duration) {
        self.masker.mask_string(&mut text);
        // A closed receiver is not the step's problem.
        let _ = self.events.send(RunEvent::Log { path: path.clone(), stream, text, at });
    }
}

/// One step's lines. Shared by the step's attempts, so the bounds count
/// them together; [`StepLines::finish`] ends it when the step ends.
pub struct StepLines<'a> {
    run: &'a RunLines,
    path: &'a NodePath,
    /// Made at the first output: a step that prints nothing costs no more.
    /// Shared with the step's [`LineSender`]s (a script's thread).
    state: OnceLock<Arc<Mutex<State>>>,
}

/// A handle a script's thread can keep: it sends whole lines of one step (a
/// script step's, or a Rhai job's script node's), within the same bounds
/// as the step's other lines.
#[derive(Clone)]
pub struct LineSender {
    run: RunLines,
    path: NodePath,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for LineSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineSender").field("path", &self.path).finish_non_exhaustive()
    }
}

impl LineSender {
    /// Lines of the node at `path` with a state of their own: a Rhai job's
    /// script node; [`LineSender::finish`] ends them.
    pub fn new(run: &RunLines, path: &NodePath) -> LineSender {
        LineSender { run: run.clone(), path: path.clone(), state: Arc::new(Mutex::new(State::new(run.bounds))) }
    }

    /// One whole line: sent now while the head lasts, else kept in the
    /// ring for the end.
    pub fn line(&self, stream: Stream, text: String) {
        line(&self.run, &self.path, &self.state, stream, text);
    }

    /// Bytes read from a process's `stream`, as [`StepLines::push`] takes
    /// them: for a pipe read on a thread of its own.
    pub fn push(&self, stream: Stream, chunk: &[u8]) {
        push(&self.run, &self.path, &self.state, stream, chunk);
    }

    /// Whether the head is spent: what comes now is only kept for the
    /// step's end, so nobody waits for it to be read at once.
    pub fn past_head(&self) -> bool {
        lock(&self.state).ring.is_some()
    }

    /// The node ended: the marker of what was dropped, then the tail.
    pub fn finish(&self) {
        finish(&self.run, &self.path, &self.state);
    }
}

fn push(run: &RunLines, path: &NodePath, state: &Mutex<State>, stream: Stream, chunk: &[u8]) {
    if chunk.is_empty() {
        return;
    }
    let at = run.start.elapsed();
    let mut emit = |s: Stream, text: String, at: Duration| run.send(path, s, text, at);
    lock(state).push(index(stream), chunk, at, &mut emit);
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// One whole line into `state`: within the head it goes out as it is (one
/// event, whatever it holds); past it, its bytes and a newline go to the
/// ring.
fn line(run: &RunLines, path: &NodePath, state: &Mutex<State>, stream: Stream, text: String) {
    let at = run.start.elapsed();
    let mut emit = |s: Stream, text: String, at: Duration| run.send(path, s, text, at);
    lock(state).line(index(stream), text, at, &mut emit);
}

fn finish(run: &RunLines, path: &NodePath, state: &Mutex<State>) {
    let at = run.start.elapsed();
    let mut emit = |s: Stream, text: String, at: Duration| run.send(path, s, text, at);
    let mut state = lock(state);
    state.close(at, &mut emit);
    state.flush(at, &mut emit);
}

impl<'a> StepLines<'a> {
    /// The lines of the step at `path`.
    pub fn new(run: &'a RunLines, path: &'a NodePath) -> StepLines<'a> {
        StepLines { run, path, state: OnceLock::new() }
    }

    /// The step's path (`main/fetch`).
    pub fn path(&self) -> &NodePath {
        self.path
    }

    /// A handle that sends whole lines of this step from another thread,
    /// counted with the step's other lines.
    pub fn sender(&self) -> LineSender {
        LineSender { run: self.run.clone(), path: self.path.clone(), state: self.shared().clone() }
    }

    /// One whole line (an http step's status line), within the bounds.
    pub fn line(&self, stream: Stream, text: String) {
        line(self.run, self.path, self.shared(), stream, text);
    }

    fn shared(&self) -> &Arc<Mutex<State>> {
        self.state.get_or_init(|| Arc::new(Mutex::new(State::new(self.run.bounds))))
    }

    #[cfg(test)]
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(self.shared())
    }

    /// Takes bytes read from a process's `stream` (stdout or stderr).
    pub fn push(&self, stream: Stream, chunk: &[u8]) {
        if !chunk.is_empty() {
            push(self.run, self.path, self.shared(), stream, chunk);
        }
    }

    /// The process's streams ended (its attempt is over): a line left
    /// without its newline ends here, and the next attempt starts afresh.
    pub fn close(&self) {
        if let Some(state) = self.state.get() {
            let at = self.run.start.elapsed();
            let mut emit = |s: Stream, text: String, at: Duration| self.run.send(self.path, s, text, at);
            lock(state).close(at, &mut emit);
        }
    }

    /// The step ended: the marker of what was dropped, if anything was, then
    /// the lines kept past the head. Call once, before the step's end event.
    pub fn finish(&self) {
        if let Some(state) = self.state.get() {
            finish(self.run, self.path, state);
        }
    }
}

/// The streams a step's lines come on, by index in the bookkeeping.
const STREAMS: [Stream; N] = [Stream::Stdout, Stream::Stderr, Stream::Print, Stream::Debug];
const N: usize = 4;

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::Print => 2,
        Stream::Debug => 3,
    }
}

type Emit<'e> = dyn FnMut(Stream, String, Duration) + 'e;

/// The bounds' bookkeeping of one step.
struct State {
    /// Bytes that may still be emitted live.
    head_left: usize,
    tail: usize,
    /// Each stream's line begun and not ended yet (head phase only).
    pending: [Vec<u8>; N],
    /// Past the head: the last `tail` bytes.
    ring: Option<Ring>,
}

impl State {
    fn new(bounds: OutputBounds) -> State {
        State { head_left: bounds.head, tail: bounds.tail, pending: Default::default(), ring: None }
    }

    /// One whole line (a script's `print`, an http status line): emitted
    /// as it is while it fits the head, else its bytes and a newline go to
    /// the ring like a process's.
    fn line(&mut self, s: usize, text: String, at: Duration, emit: &mut Emit<'_>) {
        let len = text.len() + 1;
        if self.ring.is_none() && len <= self.head_left && self.pending[s].is_empty() {
            self.head_left -= len;
            emit(STREAMS[s], text, at);
            return;
        }
        let mut bytes = text.into_bytes();
        bytes.push(b'\n');
        match &mut self.ring {
            Some(ring) => ring.push(s, &bytes, at),
            None => self.enter_ring(s, at).push(s, &bytes, at),
        }
    }

    fn push(&mut self, s: usize, chunk: &[u8], at: Duration, emit: &mut Emit<'_>) {
        if let Some(ring) = &mut self.ring {
            ring.push(s, chunk, at);
            return;
        }
        let head_left = &mut self.head_left;
        let refused = split(&mut self.pending[s], chunk, |line| {
            if line.len() > *head_left {
                return false;
            }
            *head_left -= line.len();
            emit(STREAMS[s], text(line), at);
            true
        });
        if let Some(from) = refused {
            self.enter_ring(s, at).push(s, &chunk[from..], at);
        }
    }

    /// The head is spent: from now on bytes go to the ring, starting with
    /// the lines begun (their beginnings are older than what comes next).
    fn enter_ring(&mut self, s: usize, at: Duration) -> &mut Ring {
        self.head_left = 0;
        let mut ring = Ring::new(self.tail);
        for s in (0..N).filter(|&o| o != s).chain([s]) {
            let pending = std::mem::take(&mut self.pending[s]);
            ring.push(s, &pending, at);
        }
        self.ring.insert(ring)
    }

    fn close(&mut self, at: Duration, emit: &mut Emit<'_>) {
        if let Some(ring) = &mut self.ring {
            ring.close();
            return;
        }
        for (s, stream) in STREAMS.into_iter().enumerate() {
            let line = &self.pending[s];
            if line.is_empty() {
                continue;
            }
            if line.len() > self.head_left {
                self.enter_ring(s, at).close();
                return;
            }
            self.head_left -= line.len();
            emit(stream, text(line), at);
            self.pending[s].clear();
        }
    }

    fn flush(&mut self, at: Duration, emit: &mut Emit<'_>) {
        if let Some(ring) = self.ring.take() {
            ring.flush(at, emit);
        }
    }
}

/// Cuts `chunk`, which continues the line begun in `pending`, into lines
/// (raw, with their `\n`; pieces of [`PIECE`] bytes for longer ones) and
/// hands each to `take`. A line `take` refuses stops the cut: its start in
/// `chunk` is returned and `pending` is left as it was. The rest of a
/// chunk without a newline is kept in `pending`.
fn split(pending: &mut Vec<u8>, chunk: &[u8], mut take: impl FnMut(&[u8]) -> bool) -> Option<usize> {
    let mut off = 0;
    while off < chunk.len() {
        let rest = &chunk[off..];
        let room = PIECE - pending.len();
        let window = &rest[..rest.len().min(room + 1)];
        let len = match memchr::memchr(b'\n', window) {
            Some(i) => i + 1,
            None if window.len() > room => room,
            None => {
                pending.extend_from_slice(rest);
                return None;
            }
        };
        let taken = if pending.is_empty() {
            take(&rest[..len])
        } else {
            let before = pending.len();
            pending.extend_from_slice(&rest[..len]);
            let taken = take(pending);
            if taken {
                pending.clear();
            } else {
                pending.truncate(before);
            }
            taken
        };
        if !taken {
            return Some(off);
        }
        off += len;
    }
    None
}

/// A raw line as text: its `\n` (and the `\r` before it) removed, invalid
/// UTF-8 replaced.
fn text(line: &[u8]) -> String {
    let line = match line.strip_suffix(b"\n") {
        Some(l) => l.strip_suffix(b"\r").unwrap_or(l),
        None => line,
    };
    String::from_utf8_lossy(line).into_owned()
}

/// How many run records the ring holds without counting them against its
/// cap (so a tiny tail still keeps a few lines of both streams); past them,
/// each record counts its size, so interleaved streams cannot hold more
/// than the tail plus this constant in memory.
const FREE_RUNS: usize = 4;

/// Bytes of one stream read at one millisecond, in the ring.
struct Run {
    stream: usize,
    len: usize,
    at_ms: u64,
    /// The stream ended after these bytes (its attempt's process is gone):
    /// a line left open ends here.
    closes: bool,
}

/// The last `cap` bytes of both streams, in the order read, and what was
/// dropped to keep them.
struct Ring {
    cap: usize,
    bytes: VecDeque<u8>,
    runs: VecDeque<Run>,
    dropped: [u64; N],
    /// Whether the stream's first bytes in the ring are the end of a line
    /// whose beginning was dropped.
    cut_line: [bool; N],
}

impl Ring {
    fn new(cap: usize) -> Ring {
        Ring { cap, bytes: VecDeque::new(), runs: VecDeque::new(), dropped: [0; N], cut_line: [false; N] }
    }

    fn push(&mut self, s: usize, chunk: &[u8], at: Duration) {
        if chunk.is_empty() {
            return;
        }
        let kept = if chunk.len() > self.cap {
            self.evict(self.bytes.len());
            let cut = chunk.len() - self.cap;
            self.dropped[s] += cut as u64;
            self.cut_line[s] = chunk[cut - 1] != b'\n';
            &chunk[cut..]
        } else {
            chunk
        };
        if kept.is_empty() {
            return;
        }
        self.bytes.extend(kept);
        let at_ms = crate::exec::millis(at);
        match self.runs.back_mut() {
            Some(run) if run.stream == s && run.at_ms == at_ms && !run.closes => run.len += kept.len(),
            _ => self.runs.push_back(Run { stream: s, len: kept.len(), at_ms, closes: false }),
        }
        self.fit();
    }

    /// The bytes held plus the run records past [`FREE_RUNS`].
    fn used(&self) -> usize {
        self.bytes.len() + self.runs.len().saturating_sub(FREE_RUNS) * std::mem::size_of::<Run>()
    }

    /// Forgets the oldest bytes until what is held fits the cap. A run
    /// evicted whole frees its record too, so at most one run is cut.
    /// A run alone is free, so the newest chunk keeps up to `cap` bytes.
    fn fit(&mut self) {
        loop {
            let over = self.used().saturating_sub(self.cap);
            let front = self.runs.front().map_or(0, |r| r.len);
            if over == 0 || front == 0 {
                return;
            }
            self.evict(over.min(front));
        }
    }

    /// Forgets the oldest `n` bytes.
    fn evict(&mut self, mut n: usize) {
        while n > 0 {
            let Some(run) = self.runs.front_mut() else { return };
            let k = run.len.min(n);
            self.cut_line[run.stream] = self.bytes[k - 1] != b'\n';
            self.dropped[run.stream] += k as u64;
            self.bytes.drain(..k);
            run.len -= k;
            if run.len == 0 {
                // What follows a closed stream starts a line.
                if run.closes {
                    self.cut_line[run.stream] = false;
                }
                self.runs.pop_front();
            }
            n -= k;
        }
    }

    /// Ends each stream's unfinished line (the process is gone).
    fn close(&mut self) {
        for s in 0..N {
            if let Some(run) = self.runs.iter_mut().rev().find(|r| r.stream == s) {
                run.closes = true;
            }
        }
    }

    /// Emits the marker (if anything was dropped), then the lines kept:
    /// whole lines, except a line longer than the ring, kept as its end.
    fn flush(mut self, at: Duration, emit: &mut Emit<'_>) {
        let bytes = self.bytes.make_contiguous();
        // A stream's first line in the ring lost its beginning: drop the
        // rest of it too, unless it is all the ring holds of that stream.
        let mut skip = [0usize; N];
        for (s, skip) in skip.iter_mut().enumerate() {
            if self.cut_line[s] {
                *skip = first_line_end(bytes, &self.runs, s);
                self.dropped[s] += *skip as u64;
            }
        }
        let dropped: u64 = self.dropped.iter().sum();
        if dropped > 0 {
            // The last of the most: stderr over stdout on a tie.
            let majority = (0..N).max_by_key(|&s| self.dropped[s]).map_or(Stream::Stderr, |s| STREAMS[s]);
            emit(majority, format!("… {} bytes dropped …", grouped(dropped)), at);
        }
        let mut pending: [Vec<u8>; N] = Default::default();
        let mut last_at = [at; N];
        let mut off = 0;
        for run in &self.runs {
            let s = run.stream;
            let mut part = &bytes[off..off + run.len];
            off += run.len;
            let skipped = skip[s].min(part.len());
            skip[s] -= skipped;
            part = &part[skipped..];
            let run_at = Duration::from_millis(run.at_ms);
            last_at[s] = run_at;
            split(&mut pending[s], part, |line| {
                emit(STREAMS[s], text(line), run_at);
                true
            });
            if run.closes && !pending[s].is_empty() {
                emit(STREAMS[s], text(&pending[s]), run_at);
                pending[s].clear();
            }
        }
        for s in 0..N {
            if !pending[s].is_empty() {
                emit(STREAMS[s], text(&pending[s]), last_at[s]);
            }
        }
    }
}

/// How many of stream `s`'s first bytes in the ring end a line cut at its
/// start, to drop: when more lines follow, or nothing of it but its newline
/// is left (0 when its bytes are all one line's end, kept as a piece).
fn first_line_end(bytes: &[u8], runs: &VecDeque<Run>, s: usize) -> usize {
    let total: usize = runs.iter().filter(|r| r.stream == s).map(|r| r.len).sum();
    let mut seen = 0;
    let mut off = 0;
    for run in runs {
        if run.stream == s {
            let end = match memchr::memchr(b'\n', &bytes[off..off + run.len]) {
                Some(i) => Some(seen + i + 1),
                None if run.closes => Some(seen + run.len),
                None => None,
            };
            if let Some(end) = end {
                // Kept only when it is all there is and not just its newline.
                return if end < total || end == 1 { end } else { 0 };
            }
            seen += run.len;
        }
        off += run.len;
    }
    0
}

/// `3145728` as `3,145,728`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

    use super::*;

    fn bounded(head: usize, tail: usize) -> (RunLines, UnboundedReceiver<RunEvent>) {
        let (tx, rx) = unbounded_channel();
        (RunLines::new(Instant::now(), tx, OutputBounds { head, tail }), rx)
    }

    fn sent(rx: &mut UnboundedReceiver<RunEvent>) -> Vec<(Stream, String)> {
        let mut got = Vec::new();
        while let Ok(RunEvent::Log { stream, text, .. }) = rx.try_recv() {
            got.push((stream, text));
        }
        got
    }

    fn out(s: &str) -> (Stream, String) {
        (Stream::Stdout, s.to_string())
    }

    fn err(s: &str) -> (Stream, String) {
        (Stream::Stderr, s.to_string())
    }

    #[tokio::test]
    async fn the_head_is_sent_as_read_and_the_tail_at_the_end_after_the_marker() {
        let (run, mut rx) = bounded(10, 10);
        let path: NodePath = "main/s".into();
        let lines = StepLines::new(&run, &path);
        lines.push(Stream::Stdout, b"l1..\nl2..\n");
        assert_eq!(sent(&mut rx), vec![out("l1.."), out("l2..")], "the head goes out as it is read");
        lines.push(Stream::Stdout, b"l3..\nl4..\n");
        lines.push(Stream::Stderr, b"e5..\n");
        lines.push(Stream::Stdout, b"l6..\n");
        assert_eq!(sent(&mut rx), vec![], "past the head, nothing until the step ends");
        lines.finish();
        // 30 bytes: 10 sent live, the last 10 kept, 10 (l3, l4) dropped.
        assert_eq!(sent(&mut rx), vec![out("… 10 bytes dropped …"), err("e5.."), out("l6..")]);
    }

    #[tokio::test]
    async fn the_ring_keeps_whole_lines_and_a_line_longer_than_it_as_its_end() {
        let (run, mut rx) = bounded(0, 8);
        let path: NodePath = "main/s".into();
        let lines = StepLines::new(&run, &path);
        // The last 8 bytes are "ghij\nxy\n": "ghij" lost its start, so it goes too.
        lines.push(Stream::Stdout, b"abcdefghij\nxy\n");
        lines.finish();
        assert_eq!(sent(&mut rx), vec![out("… 11 bytes dropped …"), out("xy")]);

        let (run4, mut rx) = bounded(0, 4);
        let lines = StepLines::new(&run4, &path);
        lines.push(Stream::Stderr, b"abcdefgh");
        lines.finish();
        assert_eq!(sent(&mut rx), vec![err("… 4 bytes dropped …"), err("efgh")]);
    }

    #[tokio::test]
    async fn the_marker_takes_the_stream_most_of_the_dropped_bytes_came_from() {
        let (run, mut rx) = bounded(0, 3);
        let path: NodePath = "main/s".into();
        let lines = StepLines::new(&run, &path);
        lines.push(Stream::Stdout, b"aaaaaaaa\n");
        lines.push(Stream::Stderr, b"b\n");
        lines.push(Stream::Stdout, b"c\n");
        lines.finish();
        // Dropped: 9 bytes of stdout, all of "b\n" (its newline alone is no line).
        assert_eq!(sent(&mut rx), vec![out("… 11 bytes dropped …"), out("c")]);
    }

    #[tokio::test]
    async fn memory_stays_within_the_tail_however_much_is_written() {
        let (run, mut rx) = bounded(1024, 4096);
        let path: NodePath = "main/s".into();
        let lines = StepLines::new(&run, &path);
        let chunk = b"0123456789abcde\n".repeat(4096);
        for _ in 0..256 {
            lines.push(Stream::Stdout, &chunk);
            let state = lines.state();
            let ring = state.ring.as_ref().expect("past the head");
            assert!(ring.bytes.len() <= 4096, "{}", ring.bytes.len());
            assert!(ring.runs.len() <= 2, "{}", ring.runs.len());
        }
        lines.finish();
        let got = sent(&mut rx);
        let total = 256 * chunk.len() as u64;
        assert_eq!(got.len(), 1024 / 16 + 1 + 4096 / 16);
        assert_eq!(got[64], out(&format!("… {} bytes dropped …", grouped(total - 1024 - 4096))));
    }

    #[tokio::test]
    async fn interleaved_streams_keep_memory_within_the_tail() {
        // Each change of stream starts a run record: they count too.
        let (run, mut rx) = bounded(0, 4096);
        let path: NodePath = "main/s".into();
        let lines = StepLines::new(&run, &path);
        let limit = 4096 + FREE_RUNS * std::mem::size_of::<Run>();
        for _ in 0..100_000 {
            lines.push(Stream::Stdout, b"a\n");
            lines.push(Stream::Stderr, b"b\n");
            let state = lines.state();
            let ring = state.ring.as_ref().expect("past the head");
            let used = ring.bytes.len() + ring.runs.len() * std::mem::size_of::<Run>();
            assert!(used <= limit, "{} bytes and {} runs = {used} > {limit}", ring.bytes.len(), ring.runs.len());
        }
        lines.finish();
        let got = sent(&mut rx);
        assert!(got[0].1.ends_with("bytes dropped …"), "{:?}", got[0]);
        assert!(got.len() > 2, "some of the tail is kept: {got:?}");
        assert_eq!(got.last(), Some(&err("b")), "the last line is kept");
        // What is kept alternates, in the order read.
        for pair in got[1..].windows(2) {
            assert_ne!(pair[0].0, pair[1].0, "{got:?}");
        }
    }

    #[tokio::test]
    async fn an_attempts_last_line_ends_with_it() {
        for head in [0, 100] {
            let (run, mut rx) = bounded(head, 100);
            let path: NodePath = "main/s".into();
            let lines = StepLines::new(&run, &path);
            lines.push(Stream::Stdout, b"try 1");
            lines.close();
            lines.push(Stream::Stdout, b"try 2");
            lines.finish();
            assert_eq!(sent(&mut rx), vec![out("try 1"), out("try 2")], "head={head}");
        }
    }

    #[tokio::test]
    async fn a_long_line_is_cut_into_pieces_and_a_newline_right_after_a_piece_ends_it() {
        let (run, mut rx) = bounded(1 << 20, 0);
        let path: NodePath = "main/s".into();
        let lines = StepLines::new(&run, &path);
        let mut data = vec![b'x'; PIECE];
        data.push(b'\n');
        data.extend(vec![b'y'; PIECE + 1]);
        for part in data.chunks(1000) {
            lines.push(Stream::Stdout, part);
        }
        lines.finish();
        let got = sent(&mut rx);
        let lens: Vec<usize> = got.iter().map(|(_, t)| t.len()).collect();
        assert_eq!(lens, vec![PIECE, PIECE, 1]);
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(3_145_728), "3,145,728");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(0), "0");
    }
}
