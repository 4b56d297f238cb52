//! Reading a process's stdout or stderr to its end, handing every chunk to
//! what the step keeps of it (its value's head, its stderr's tail) and to
//! its lines.
//!
//! A pipe is read on the async side first: most steps print little, and a
//! thread each would cost them more than the reading does. A writer that
//! proves chatty ([`THREAD_AFTER`] bytes) gets a thread of its own for the
//! rest, reading with plain `read(2)` like `cat`: on the async side every
//! read that catches up with the writer (a fast writer's pipe is mostly
//! empty: `head -c` writes 4 KiB at a time) costs the reactor's wake-up, a
//! task wake across the runtime's workers and a poll of the step's whole
//! future; on the thread it costs the kernel's wake-up alone (issue 13's
//! 200 MB bench: per 20 MB read, ~2,300 reads, ~4,900 `epoll_wait`s and
//! ~8,500 futex calls before).
//!
//! Architecture Invariant: a pipe is read until it ends or the step stops
//! reading it (`stop`), so a writer never blocks on gatherd; a reader thread
//! ends when its pipe ends, when the step stops reading, or when the reading
//! future is dropped (a dropped step), never later, and it is not from the
//! run's blocking pool: a reader must never wait for a permit while its
//! writer waits for it.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{ChildStderr, ChildStdout};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::capture::{Head, Tail};
use super::lines::LineSender;
use crate::exec::Stream;

/// Bytes read on the async side before a pipe gets a thread: past the
/// default head of lines (1 MiB) a step is a flood, not a log.
pub(super) const THREAD_AFTER: usize = 1024 * 1024;

/// The async side's read buffer: a default pipe's whole 64 KiB in one read.
const ASYNC_BUF: usize = 64 * 1024;

/// The reader thread's buffer: a grown pipe's 1 MiB in four reads.
const THREAD_BUF: usize = 256 * 1024;

/// How long a reader thread lets a fast writer fill its pipe past the head
/// before reading again: ~400 KB at `head -c`'s 1.5 GB/s, less than a grown
/// pipe's 1 MiB, so the writer seldom has to wait; and far below the
/// millisecond a line's time is kept to.
const BATCH: std::time::Duration = std::time::Duration::from_micros(250);

/// What a step keeps of one stream's bytes.
pub(super) trait Keep: Send + 'static {
    fn keep(&mut self, chunk: &[u8]);
}

impl Keep for Head {
    fn keep(&mut self, chunk: &[u8]) {
        self.push(chunk);
    }
}

impl Keep for Tail {
    fn keep(&mut self, chunk: &[u8]) {
        self.push(chunk);
    }
}

/// Where one stream's bytes go: what the step keeps of them (shared, so a
/// reader thread can fill it and the step take it back whatever happened
/// to the thread) and the step's lines.
pub(super) struct Sink<K> {
    kept: Arc<Mutex<K>>,
    lines: LineSender,
    stream: Stream,
}

impl<K> Clone for Sink<K> {
    fn clone(&self) -> Self {
        Sink { kept: self.kept.clone(), lines: self.lines.clone(), stream: self.stream }
    }
}

impl<K: Keep> Sink<K> {
    /// `keep`'s capture of `stream`, and its lines through `lines`.
    pub(super) fn new(keep: K, lines: LineSender, stream: Stream) -> Sink<K> {
        Sink { kept: Arc::new(Mutex::new(keep)), lines, stream }
    }

    fn take(&self, chunk: &[u8]) {
        lock(&self.kept).keep(chunk);
        self.lines.push(self.stream, chunk);
    }

    /// What was kept, once the reading is over (`replacement` is left in
    /// its place).
    pub(super) fn kept(&self, replacement: K) -> K {
        std::mem::replace(&mut *lock(&self.kept), replacement)
    }
}

fn lock<K>(kept: &Mutex<K>) -> MutexGuard<'_, K> {
    kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A child's output pipe as tokio holds it.
pub(super) trait Pipe: AsyncRead + Unpin + AsFd {
    /// The pipe taken out of the reactor, for a thread to read.
    fn into_fd(self) -> io::Result<OwnedFd>;
}

impl Pipe for ChildStdout {
    fn into_fd(self) -> io::Result<OwnedFd> {
        self.into_owned_fd()
    }
}

impl Pipe for ChildStderr {
    fn into_fd(self) -> io::Result<OwnedFd> {
        self.into_owned_fd()
    }
}

/// Where a pipe was read in the end (for the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadOn {
    Async,
    Thread,
}

/// Reads `pipe` to its end into `sink`, until `stop` is cancelled; the sink
/// decides what to keep, so the pipe is always drained and the writer never
/// blocks on gatherd.
pub(super) async fn read_all<K: Keep>(pipe: Option<impl Pipe>, sink: Sink<K>, stop: &CancellationToken) -> ReadOn {
    let Some(mut pipe) = pipe else { return ReadOn::Async };
    let mut buf = vec![0u8; ASYNC_BUF];
    let mut grown = false;
    let mut read = 0usize;
    let mut thread_refused = false;
    loop {
        let n = tokio::select! {
            biased;
            _ = stop.cancelled() => return ReadOn::Async,
            n = pipe.read(&mut buf) => n,
        };
        match n {
            Ok(0) => return ReadOn::Async,
            Ok(n) => {
                if n == buf.len() && !grown {
                    grow_pipe(&pipe);
                    grown = true;
                }
                sink.take(&buf[..n]);
                read += n;
                if read >= THREAD_AFTER && !thread_refused {
                    match Reader::spawn(sink.clone(), grown) {
                        Ok(reader) => return reader.read(pipe, stop).await,
                        Err(e) => {
                            tracing::debug!("no reader thread for a chatty pipe ({e}); reading it here");
                            thread_refused = true;
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return ReadOn::Async,
        }
    }
}

/// A reader thread, started and waiting for its pipe.
struct Reader {
    pipe: std::sync::mpsc::Sender<OwnedFd>,
    done: oneshot::Receiver<()>,
    stop: StopThread,
}

/// Stops a reader thread when dropped: sets its flag (seen between reads)
/// and closes the write end of its wake pipe (seen while it waits for data).
struct StopThread {
    flag: Arc<AtomicBool>,
    _wake: OwnedFd,
}

impl Drop for StopThread {
    fn drop(&mut self) {
        self.flag.store(true, Ordering::Release);
    }
}

impl Reader {
    fn spawn<K: Keep>(sink: Sink<K>, grown: bool) -> io::Result<Reader> {
        let (wake, wake_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let flag = Arc::new(AtomicBool::new(false));
        let (pipe_tx, pipe_rx) = std::sync::mpsc::channel::<OwnedFd>();
        let (done_tx, done) = oneshot::channel();
        // The run's clock: a line's time is read from it (paused in tests).
        let runtime = tokio::runtime::Handle::try_current().ok();
        let stopped = flag.clone();
        std::thread::Builder::new().name("gatherd-pipe".into()).spawn(move || {
            let _clock = runtime.as_ref().map(tokio::runtime::Handle::enter);
            if let Ok(pipe) = pipe_rx.recv() {
                drain(&pipe, &wake, &stopped, &sink, grown);
            }
            let _ = done_tx.send(());
        })?;
        Ok(Reader { pipe: pipe_tx, done, stop: StopThread { flag, _wake: wake_tx } })
    }

    /// Hands `pipe` to the thread and waits for it to end.
    async fn read(self, pipe: impl Pipe, stop: &CancellationToken) -> ReadOn {
        let Reader { pipe: to_thread, mut done, stop: stop_thread } = self;
        let fd = match pipe.into_fd() {
            Ok(fd) => fd,
            Err(e) => {
                // The pipe is gone with the error: the writer will get EPIPE.
                tracing::warn!("cannot hand a step's pipe to its reader thread: {e}; stopped reading");
                return ReadOn::Thread;
            }
        };
        // Tokio hands the pipe back blocking; the thread's reads must not
        // block, or a stop could not reach a thread waiting for more.
        if let Err(e) = nonblocking(&fd) {
            tracing::warn!("cannot hand a step's pipe to its reader thread: {e}; stopped reading");
            return ReadOn::Thread;
        }
        if to_thread.send(fd).is_err() {
            return ReadOn::Thread;
        }
        tokio::select! {
            _ = &mut done => {}
            _ = stop.cancelled() => {
                drop(stop_thread);
                let _ = done.await;
            }
        }
        ReadOn::Thread
    }
}

fn nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

/// The reader thread's loop: `pipe` (non-blocking) to its
/// end, waiting in `poll(2)` on it and on `wake` when it is empty.
fn drain<K: Keep>(pipe: &OwnedFd, wake: &OwnedFd, stopped: &AtomicBool, sink: &Sink<K>, mut grown: bool) {
    let mut buf = vec![0u8; THREAD_BUF];
    let mut capacity = pipe_size(pipe);
    // After a short read the pipe is likely empty: wait for it first
    // rather than try a read that says so.
    let mut wait = false;
    loop {
        if stopped.load(Ordering::Acquire) {
            return;
        }
        if wait {
            let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN), PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                Ok(_) if fds[1].any().unwrap_or(true) => return,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return,
            }
        }
        match nix::unistd::read(pipe, &mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if n >= ASYNC_BUF && !grown {
                    grow_pipe(pipe);
                    grown = true;
                    capacity = pipe_size(pipe);
                }
                sink.take(&buf[..n]);
                wait = n < buf.len();
                if wait && batches(capacity) && sink.lines.past_head() {
                    // The writer is slower than this thread, and nothing it
                    // writes now is shown before the step ends: let it fill
                    // the pipe for a while rather than wake for each of its
                    // writes (`head -c` writes 4 KiB at a time).
                    std::thread::sleep(BATCH);
                }
            }
            Err(Errno::EINTR) => wait = false,
            Err(Errno::EAGAIN) => wait = true,
            Err(_) => return,
        }
    }
}

/// Whether a pipe of `capacity` bytes may be left to fill for [`BATCH`]:
/// only a grown one. A writer at 1.5 GB/s fills a default 64 KiB pipe in
/// ~45 µs, so sleeping on it would cap the writer at 64 KiB per sleep
/// (~260 MB/s) instead of sparing wake-ups.
fn batches(capacity: usize) -> bool {
    capacity >= 1 << 20
}

/// The pipe's capacity in bytes (0 where it cannot be known).
fn pipe_size(pipe: &impl AsFd) -> usize {
    #[cfg(target_os = "linux")]
    let size =
        nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_GETPIPE_SZ).map_or(0, |n| usize::try_from(n).unwrap_or(0));
    #[cfg(not(target_os = "linux"))]
    let size = {
        let _ = pipe;
        0
    };
    size
}

/// A pipe holding 1 MiB (Linux's most for any user by default, up from
/// 64 KiB) lets a fast writer run ahead while gatherd reads: fewer wake-ups
/// per megabyte (issue 13's 200 MB bench). Only for a writer that proved
/// fast (a read found the pipe's 64 KiB full): a pipe's pages are charged to
/// its user at once, and past `pipe-user-pages-soft` (64 MiB) every new pipe
/// of that user — its jobs' own `a | b` too — is cut to two pages, so
/// growing every step's pipes would starve that user after ~32 steps in
/// flight. Best effort: a refusal leaves the pipe as it was.
fn grow_pipe(pipe: &impl AsFd) {
    #[cfg(target_os = "linux")]
    let _ = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    #[cfg(not(target_os = "linux"))]
    let _ = pipe;
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    use std::time::Duration;

    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

    use super::*;
    use crate::exec::step::{OutputBounds, RunLines};
    use crate::exec::{NodePath, RunEvent};

    /// `sh -c script` with its stdout piped, and a sink keeping up to 64 MiB
    /// of it, its lines within `lines` bytes of head (no tail) on the
    /// receiver.
    fn spawn(script: &str, lines: usize) -> (tokio::process::Child, Sink<Head>, UnboundedReceiver<RunEvent>) {
        let child = tokio::process::Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (tx, rx) = unbounded_channel();
        let run = RunLines::new(tokio::time::Instant::now(), tx, OutputBounds { head: lines, tail: 0 });
        let sender = LineSender::new(&run, &NodePath::from("main/s"));
        (child, Sink::new(Head::new(64 << 20), sender, Stream::Stdout), rx)
    }

    fn texts(rx: &mut UnboundedReceiver<RunEvent>) -> Vec<String> {
        let mut got = Vec::new();
        while let Ok(event) = rx.try_recv() {
            if let RunEvent::Log { text, .. } = event {
                got.push(text);
            }
        }
        got
    }

    fn kept(sink: &Sink<Head>) -> String {
        sink.kept(Head::new(0)).into_text().0
    }

    #[tokio::test]
    async fn a_chatty_pipe_goes_to_a_thread_and_every_line_comes_once_in_order() {
        // ~2.3 MB: more than is read before the handover, in reads that
        // end inside lines.
        let (mut child, sink, mut rx) = spawn("seq 1 350000", 64 << 20);
        let on = read_all(child.stdout.take(), sink.clone(), &CancellationToken::new()).await;
        assert_eq!(on, ReadOn::Thread);
        let want: Vec<String> = (1..=350_000).map(|i| i.to_string()).collect();
        let got = texts(&mut rx);
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the lines differ from `seq`'s");
        assert!(kept(&sink) == want.join("\n") + "\n", "the value differs from `seq`'s output");
        child.wait().await.unwrap();
    }

    #[test]
    fn only_a_grown_pipe_is_left_to_fill() {
        assert!(!batches(64 * 1024), "a default pipe would cap the writer");
        assert!(!batches(0), "a pipe of unknown size");
        assert!(batches(1 << 20));
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        assert_eq!(pipe_size(&read), 64 * 1024, "Linux's default");
        grow_pipe(&write);
        // Refused past `pipe-user-pages-soft` when not root: then it is
        // not left to fill either.
        assert_eq!(batches(pipe_size(&read)), pipe_size(&read) == 1 << 20);
    }

    #[tokio::test]
    async fn a_quiet_pipe_is_read_on_the_async_side() {
        let (mut child, sink, mut rx) = spawn("echo one; echo two", 1024);
        let on = read_all(child.stdout.take(), sink, &CancellationToken::new()).await;
        assert_eq!(on, ReadOn::Async);
        assert_eq!(texts(&mut rx), vec!["one", "two"]);
        child.wait().await.unwrap();
    }

    /// 80-byte lines, as fast as `yes` writes them.
    const YES: &str = "yes 'a line of eighty bytes, as fast as yes can print it ......................'";

    /// Stops the reading after `after`: where it read, how long it took to
    /// end once stopped, and how many bytes it read.
    async fn stopped_after(script: &str, after: Duration) -> (ReadOn, Duration, usize) {
        let (mut child, sink, _rx) = spawn(script, 0);
        let stop = CancellationToken::new();
        let stopped = async {
            tokio::time::sleep(after).await;
            stop.cancel();
            tokio::time::Instant::now()
        };
        let (on, at) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(read_all(child.stdout.take(), sink.clone(), &stop), stopped)
        })
        .await
        .expect("the reader ends once stopped");
        let took = at.elapsed();
        child.kill().await.unwrap();
        (on, took, kept(&sink).len())
    }

    #[tokio::test]
    async fn a_reader_thread_waiting_for_more_ends_when_stopped() {
        // 2 MB, then the writer goes quiet but keeps the pipe open.
        let script = format!("{YES} | head -c 2000000; exec sleep 30");
        let (on, took, bytes) = stopped_after(&script, Duration::from_millis(1000)).await;
        assert_eq!((on, bytes), (ReadOn::Thread, 2_000_000));
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_reader_thread_under_a_writer_that_never_stops_ends_when_stopped() {
        let (on, took, bytes) = stopped_after(&format!("exec {YES}"), Duration::from_millis(500)).await;
        assert_eq!(on, ReadOn::Thread);
        assert!(bytes > THREAD_AFTER, "{bytes}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_dropped_reading_closes_the_pipe_its_thread_read() {
        let (mut child, sink, _rx) = spawn(&format!("exec {YES}"), 0);
        let stop = CancellationToken::new();
        let reading = read_all(child.stdout.take(), sink.clone(), &stop);
        let dropped = tokio::time::timeout(Duration::from_millis(500), reading).await;
        assert!(dropped.is_err(), "`yes` never ends on its own");
        let bytes = kept(&sink).len();
        assert!(bytes > THREAD_AFTER, "read on the thread: {bytes} bytes");
        // The thread let go of the pipe: `yes` dies of SIGPIPE.
        let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("`yes` ends").unwrap();
        assert_eq!(status.signal(), Some(nix::sys::signal::Signal::SIGPIPE as i32), "{status:?}");
    }
}
