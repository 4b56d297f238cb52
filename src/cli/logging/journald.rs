//! The `journald` log format: each tracing event is one journal entry, sent
//! in journald's native protocol (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>)
//! as one datagram of fields `NAME\n<length, u64 LE><value>\n` (binary-safe:
//! a value may hold newlines), or, when too big for a datagram, as a sealed
//! memfd passed over the socket.
//!
//! Fields: `PRIORITY`, `TARGET`, `CODE_FILE`, `CODE_LINE`,
//! `SYSLOG_IDENTIFIER=gatherd`, then the event's own, named as journald
//! wants them (`run_id` → `RUN_ID`, `message` → `MESSAGE`), so `journalctl -t
//! gatherd JOB=backup.toml` selects one job. gatherd opens no spans, so none
//! are written.
//!
//! Why not tracing-journald, which this replaces with the same entries: it
//! sends to a fixed path, so no test could see what the daemon sends; and it
//! gives each level one priority, while a step's stdout line is `info` (6)
//! and the daemon's own INFO events stay `notice` (5), as they were.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::Context;

use crate::daemon::OUTPUT_TARGET;

/// Where journald listens for native messages.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// Every entry's `SYSLOG_IDENTIFIER`: `journalctl -t gatherd`.
const IDENTIFIER: &str = "gatherd";

/// A tracing layer writing each event to the journal as one entry.
pub struct Journald {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Journald {
    /// A layer sending to the journal listening at `path` ([`SOCKET`]); an
    /// error when nothing listens there.
    pub fn new(path: &Path) -> io::Result<Journald> {
        let journal = Journald { socket: UnixDatagram::unbound()?, path: path.to_path_buf() };
        // journald discards an empty datagram: sending one asks whether it listens.
        journal.send(&[])?;
        Ok(journal)
    }

    fn send(&self, entry: &[u8]) -> io::Result<()> {
        match self.socket.send_to(entry, &self.path) {
            // sd_journal_sendv falls back to a memfd on both: too big for a
            // datagram, or for the socket's buffer (ENOBUFS).
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMSGSIZE | libc::ENOBUFS)) => self.send_as_memfd(entry),
            sent => sent.map(drop),
        }
    }

    /// An entry bigger than a datagram can be: written to a memfd, sealed
    /// (journald maps only a file nobody can change any more), and the file
    /// passed over the socket.
    fn send_as_memfd(&self, entry: &[u8]) -> io::Result<()> {
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        use nix::sys::memfd::{MFdFlags, memfd_create};
        use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
        let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
        let mut file = std::fs::File::from(memfd_create(c"gatherd-journal", flags)?);
        file.write_all(entry)?;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL;
        fcntl(&file, FcntlArg::F_ADD_SEALS(seals))?;
        let to = UnixAddr::new(&self.path)?;
        let fds = [file.as_raw_fd()];
        sendmsg(self.socket.as_raw_fd(), &[], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), Some(&to))?;
        Ok(())
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for Journald {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let mut entry = Vec::with_capacity(256);
        put(&mut entry, "PRIORITY", &[priority(meta)]);
        put(&mut entry, "TARGET", meta.target().as_bytes());
        if let Some(file) = meta.file() {
            put(&mut entry, "CODE_FILE", file.as_bytes());
        }
        if let Some(line) = meta.line() {
            put(&mut entry, "CODE_LINE", line.to_string().as_bytes());
        }
        put(&mut entry, "SYSLOG_IDENTIFIER", IDENTIFIER.as_bytes());
        event.record(&mut Fields(&mut entry));
        // Nowhere to say that the journal is gone: it is the log.
        let _ = self.send(&entry);
    }
}

/// The syslog priority of an event, as its ASCII digit: a step's stdout
/// line (INFO) is `info`, its stderr line (WARN) `warning`, so `journalctl -p
/// warning` shows stderr with the failures; the daemon's own INFO events (a
/// run started, a step finished) stay `notice`, as they always were, above
/// the lines of output (`-p notice` leaves stdout out).
fn priority(meta: &Metadata<'_>) -> u8 {
    match *meta.level() {
        Level::ERROR => b'3',
        Level::WARN => b'4',
        Level::INFO if meta.target() == OUTPUT_TARGET => b'6',
        Level::INFO => b'5',
        Level::DEBUG => b'6',
        Level::TRACE => b'7',
    }
}

/// Appends one field, its value length-encoded.
fn put(entry: &mut Vec<u8>, name: &str, value: &[u8]) {
    put_with(entry, name, |entry| entry.extend_from_slice(value));
}

/// Appends one field whose value `write` appends, named as journald wants:
/// `.` as `_`, no leading `_`, only ASCII letters, digits and `_`, upper case.
fn put_with(entry: &mut Vec<u8>, name: &str, write: impl FnOnce(&mut Vec<u8>)) {
    entry.extend(
        name.bytes()
            .map(|b| if b == b'.' { b'_' } else { b })
            .skip_while(|&b| b == b'_')
            .filter(|&b| b == b'_' || b.is_ascii_alphanumeric())
            .map(|b| b.to_ascii_uppercase()),
    );
    entry.push(b'\n');
    let at = entry.len();
    entry.extend_from_slice(&[0; 8]);
    write(entry);
    let len = (entry.len() - at - 8) as u64;
    entry[at..at + 8].copy_from_slice(&len.to_le_bytes());
    entry.push(b'\n');
}

/// An event's fields, appended to its entry.
struct Fields<'a>(&'a mut Vec<u8>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        put(self.0, field.name(), value.as_bytes());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        put_with(self.0, field.name(), |entry| {
            // Writing to a Vec cannot fail.
            let _ = write!(entry, "{value:?}");
        });
    }
}
