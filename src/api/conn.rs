//! The connections the API accepts and how each is served: at most
//! `max_connections` at once; each closed once it has read and written
//! nothing for `idle_timeout`, or when a request's head has not fully
//! arrived `header_timeout` after hyper began to wait for it.
//!
//! axum's `serve` has none of these knobs, so the API runs its own accept
//! loop over hyper's HTTP/1 connection (what axum's `serve` does inside):
//! the permit of a connection is held by its stream and freed when hyper
//! drops it; the idle clock restarts at every byte in or out, so a kept-alive
//! connection nobody uses and a client that stopped reading end, while an
//! SSE stream (a keep-alive comment every 15 s) lives on; hyper's
//! `header_read_timeout` ends a client that trickles a request line forever
//! (which the idle clock alone would not).
//!
//! Accept errors that are the machine's, not the client's (`EMFILE`,
//! `ENFILE`, `ENOBUFS`, `ENOMEM`), do not end the listener and do not spin:
//! the loop waits (10 ms, doubling to 1 s) and tries again, logging once
//! when the trouble starts and once when it is over.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::job::Backoff;

/// A listener the API serves: TCP (opt-in, with a token) or the unix socket.
pub enum Listener {
    /// `api_listen`.
    Tcp(TcpListener),
    /// `STATE/gatherd.sock`.
    Unix(UnixListener),
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Listener {
        Listener::Tcp(listener)
    }
}

impl From<UnixListener> for Listener {
    fn from(listener: UnixListener) -> Listener {
        Listener::Unix(listener)
    }
}

/// The shortest and the longest wait after an accept error.
const ACCEPT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));

/// A listener that caps and times out its connections.
pub(super) struct Guarded {
    listener: Listener,
    slots: Arc<Semaphore>,
    idle: Duration,
    /// Whether accepting fails (logged once, when it starts).
    failing: bool,
}

impl Guarded {
    pub(super) fn new(listener: Listener, max_connections: usize, idle: Duration) -> Guarded {
        Guarded { listener, slots: Arc::new(Semaphore::new(max_connections.max(1))), idle, failing: false }
    }

    /// The next connection, once a slot is free.
    pub(super) async fn accept(&mut self) -> Conn {
        // Wait for a free slot before accepting: the next client waits in
        // the kernel's backlog, not in a file descriptor of ours.
        // The semaphore is never closed, so this is always a permit.
        let permit = self.slots.clone().acquire_owned().await.ok();
        let mut backoff = ACCEPT_BACKOFF;
        loop {
            let accepted = match &self.listener {
                Listener::Tcp(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
                Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
            };
            match accepted {
                Ok(stream) => {
                    if std::mem::take(&mut self.failing) {
                        tracing::info!("the control API accepts connections again");
                    }
                    let idle = self.idle;
                    return Conn { stream, _permit: permit, idle, deadline: Box::pin(tokio::time::sleep(idle)) };
                }
                // The client's trouble (it went away before we took it).
                Err(e) if client_error(&e) => {}
                Err(e) => {
                    if !std::mem::replace(&mut self.failing, true) {
                        tracing::warn!(error = %e, "the control API cannot accept connections; retrying");
                    }
                    tokio::time::sleep(backoff.next_wait()).await;
                }
            }
        }
    }
}

fn client_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Serves `router` on `listener` until `shutdown`, then lets each
/// connection finish the request it is on (hyper's graceful shutdown) and
/// returns once all have ended.
pub(super) async fn serve(
    mut listener: Guarded,
    router: axum::Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let conn = tokio::select! {
            conn = listener.accept() => conn,
            () = shutdown.cancelled() => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_timeout);
            let served = http.serve_connection(hyper_util::rt::TokioIo::new(conn), service);
            let mut served = std::pin::pin!(served);
            tokio::select! {
                _ = served.as_mut() => return,
                () = shutdown.cancelled() => served.as_mut().graceful_shutdown(),
            }
            // Errors here are the client's (it went away, sent garbage, timed out).
            let _ = served.await;
        });
    }
    connections.close();
    connections.wait().await;
}

/// Binds the unix socket at `path` with mode 0660 (the daemon's user and
/// group may connect, no one else), replacing a stale socket a crash left.
///
/// `bind` gives a socket the umask's mode, and a client that connects before
/// the chmod waits in the backlog and is served later. So the socket is
/// bound inside a fresh private folder (`.NAME.d`, mode 0700: no one else
/// can reach into it), given its mode, renamed into place, and the folder
/// removed: it is never reachable with a looser mode. The caller holds the
/// state folder's lock, so no other daemon serves on `path` or uses the
/// folder (one a crash left is removed first); anything at `path` that is
/// not a socket is left alone and refused.
pub fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.file_type().is_socket()
    {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket: move it away", path.display()),
        ));
    }
    let name = path.file_name().map_or_else(|| "gatherd.sock".into(), |n| n.to_string_lossy().into_owned());
    let private: PathBuf = path.with_file_name(format!(".{name}.d"));
    ok_if_absent(std::fs::remove_dir_all(&private))?;
    // `create` fails if the folder exists: it is the one made here, 0700
    // from the start (the umask can only take bits away; the chmod puts the
    // owner's back should it have taken those).
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let bound = std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).and_then(|()| {
        // A short name: `sun_path` holds 107 bytes, and `private/s` is no
        // longer than the `.NAME.new` this replaced.
        let temporary = private.join("s");
        let listener = std::os::unix::net::UnixListener::bind(&temporary)?;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o660))?;
        std::fs::rename(&temporary, path)?;
        Ok(listener)
    });
    // Empty once the socket is in place; on an error, the socket with it.
    let removed = ok_if_absent(std::fs::remove_dir_all(&private));
    let listener = bound?;
    removed?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// The result of removing something, where "it was not there" is what
/// was wanted too (`NotFound` is fine).
fn ok_if_absent(removed: io::Result<()>) -> io::Result<()> {
    match removed {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// An accepted stream of either kind.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// One accepted connection: its slot and its idle clock.
pub(super) struct Conn {
    stream: Stream,
    _permit: Option<OwnedSemaphorePermit>,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl Conn {
    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// After the stream said Pending: an error once the idle time is up
    /// (hyper then drops the connection), else Pending with a wake-up set.
    fn idle_check<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = match &mut self.stream {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        };
        match polled {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.idle_check(cx),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = match &mut self.stream {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, data),
        };
        match polled {
            Poll::Ready(result) => {
                self.touch();
                Poll::Ready(result)
            }
            Poll::Pending => self.idle_check(cx),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// What another user could reach in `dir` right now: a socket there
    /// whose mode grants more than 0660, or a folder open to the group or
    /// others (a socket inside one would be reachable with its umask mode).
    fn too_open(dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
            let mode = meta.permissions().mode() & 0o7777;
            let name = entry.file_name().to_string_lossy().into_owned();
            if meta.file_type().is_socket() && mode & !0o660 != 0 {
                found.push(format!("socket {name} with mode {mode:o}"));
            }
            if meta.is_dir() && mode & 0o077 != 0 {
                found.push(format!("folder {name} with mode {mode:o}"));
            }
        }
        found
    }

    #[tokio::test]
    async fn the_socket_is_never_reachable_with_a_mode_looser_than_0660() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatherd.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let observer = {
            let (dir, stop) = (dir.path().to_path_buf(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    seen.extend(too_open(&dir));
                }
                seen
            })
        };
        // A stale socket is replaced every time, as at each daemon start.
        for _ in 0..2000 {
            drop(bind_socket(&path).unwrap());
        }
        stop.store(true, Ordering::Relaxed);
        let seen = observer.join().unwrap();
        assert!(seen.is_empty(), "reachable while binding: {:?}", &seen[..seen.len().min(5)]);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["gatherd.sock"], "nothing else is left in the state folder");
    }
}
