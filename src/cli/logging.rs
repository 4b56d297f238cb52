//! Setting up logging once, at start: the format (pretty, JSON lines, or the
//! journal), the level, and whether the lines steps print are logged
//! (`log_output`), from flags, `RUST_LOG` and the config. Like the level and
//! the format, `log_output` is read at start only (a SIGHUP does not change
//! it): the subscriber is global and built once.

mod journald;

use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;
use crate::daemon::OUTPUT_TARGET;

/// What the logs should look like.
#[derive(Debug, Clone, Default)]
pub struct LogSettings {
    /// The format; `None` = journald when stderr is the journal, else pretty.
    pub format: Option<LogFormat>,
    /// A filter; `--log-level` beats `RUST_LOG` beats the config.
    pub level: Option<String>,
    /// The level when nothing says otherwise.
    pub default_level: &'static str,
    /// The config's level (below `RUST_LOG`).
    pub config_level: Option<String>,
    /// The config's `log_output`: whether the lines steps print are logged;
    /// `None` = the format's default ([`output_shown`]).
    pub output: Option<bool>,
}

/// Whether the lines steps print (target [`OUTPUT_TARGET`]) are logged in
/// `format`: as `log_output` says, else only into the journal. The run
/// history keeps every line anyway; in a terminal or a JSON log file every
/// line of every job drowns the daemon's own events, while the journal is
/// where an operator expects a service's output (`journalctl -f`), indexed
/// by its fields so one job's lines are one query away.
pub fn output_shown(format: LogFormat, log_output: Option<bool>) -> bool {
    log_output.unwrap_or(format == LogFormat::Journald)
}

/// `filter`, with the output lines left out unless [`output_shown`]: by a
/// directive for their target (more specific than any level-only or
/// `gatherd=` directive, so it wins over them), which makes their callsites
/// ones the filter never enables: skipped before a line is formatted.
fn with_output(filter: EnvFilter, format: LogFormat, log_output: Option<bool>) -> EnvFilter {
    if output_shown(format, log_output) {
        return filter;
    }
    filter.add_directive(format!("{OUTPUT_TARGET}=off").parse().expect("a `target=off` directive parses"))
}

/// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM`
/// to the `device:inode` of the stream it connected.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else { return false };
    stream.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}

/// A log filter as written by a user: `EnvFilter` directives, except that
/// journald's and syslog's level word `warning` means `warn` (tracing reads a
/// bare `warning` as a target name, which silenced every log line). An
/// unparsable filter is an error, never an empty filter.
pub fn parse_filter(filter: &str) -> Result<EnvFilter, String> {
    let directives: Vec<String> = filter
        .split(',')
        .map(|d| match d.trim().rsplit_once('=') {
            Some((target, level)) if level.trim().eq_ignore_ascii_case("warning") => format!("{target}=warn"),
            None if d.trim().eq_ignore_ascii_case("warning") => "warn".to_string(),
            _ => d.to_string(),
        })
        .collect();
    EnvFilter::builder()
        .parse(directives.join(","))
        .map_err(|e| format!("invalid log filter \"{filter}\": {e} (or directives such as \"info,gatherd=debug\")"))
}

/// A writer for the pretty format that keeps each event on one line: the fmt
/// layer writes an event as one buffer ending in a newline, and any newline
/// before that end came from a value (a file name, a `print()` text) and would
/// let it forge a log line. Those are written as `\n` (and `\r` as `\r`).
/// JSON escapes them itself; the journal keeps a message as one entry.
struct OneLine<W>(W);

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        if !body.contains(&b'\n') && !body.contains(&b'\r') {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut line = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                _ => line.push(b),
            }
        }
        line.extend_from_slice(end);
        // One write, so lines from two threads never interleave.
        self.0.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Whether what goes to stderr may be coloured ([`super::color::on_stderr`]):
/// by default only on a terminal, and not when `NO_COLOR` is set to anything
/// but the empty string (no-color.org). Logs into a file, a pipe,
/// supervisord or docker, and `check`'s diagnostics there, are plain text
/// unless `--color always`.
pub fn color_on_stderr() -> bool {
    super::color::on_stderr()
}

/// The `pretty` format's layer, writing to what `make` gives (stderr), in
/// colour when `ansi`.
fn pretty<S, M, W>(make: M, ansi: bool) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    M: Fn() -> W + Send + Sync + 'static,
    W: std::io::Write + 'static,
{
    tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(move || OneLine(make()))
}

/// The `json` format's layer: one flat object per event.
fn json<S, M, W>(make: M) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    M: Fn() -> W + Send + Sync + 'static,
    W: std::io::Write + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(make)
}

/// Installs the global subscriber. An unparsable `--log-level` or config
/// `log_level` is reported on stderr and gives the exit code to stop with
/// (2, invalid input), rather than running with no logs. A bad `RUST_LOG`
/// is passed over, as before, for the next source.
pub fn init(settings: LogSettings) -> Result<(), std::process::ExitCode> {
    let given = |filter: Option<&String>| -> Result<Option<EnvFilter>, std::process::ExitCode> {
        filter.map(|f| parse_filter(f)).transpose().map_err(|e| {
            eprintln!("error: {e}");
            std::process::ExitCode::from(super::exit::INVALID)
        })
    };
    let filter = match given(settings.level.as_ref())? {
        Some(filter) => filter,
        None => match std::env::var("RUST_LOG").ok().and_then(|f| parse_filter(&f).ok()) {
            Some(filter) => filter,
            None => given(settings.config_level.as_ref())?.unwrap_or_else(|| EnvFilter::new(settings.default_level)),
        },
    };
    let format = settings.format.unwrap_or(if stderr_is_journal() { LogFormat::Journald } else { LogFormat::Pretty });
    let registry = tracing_subscriber::registry().with(with_output(filter, format, settings.output));
    match format {
        LogFormat::Pretty => registry.with(pretty(std::io::stderr, color_on_stderr())).init(),
        LogFormat::Json => registry.with(json(std::io::stderr)).init(),
        LogFormat::Journald => match journald::Journald::new(std::path::Path::new(journald::SOCKET)) {
            // Fields as JOB=, RUN_ID=, STATUS=, so `journalctl -u gatherd JOB=x` works.
            Ok(layer) => registry.with(layer).init(),
            Err(e) => {
                registry.with(pretty(std::io::stderr, color_on_stderr())).init();
                tracing::warn!("cannot reach the journal ({e}); logging to stderr");
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer the test keeps a handle on while the layer writes to it.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_newline_in_a_field_or_message_cannot_start_a_log_line() {
        let out = Shared::default();
        let sink = out.clone();
        let layer = tracing_subscriber::fmt::layer().with_ansi(false).with_writer(move || OneLine(sink.clone()));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let span = tracing::info_span!("run", job = "x\r\nINFO forged span");
            let _enter = span.enter();
            tracing::warn!(file = "a.toml\n2026-01-01T00:00:00Z  INFO forged", "line one\nline two");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(text.ends_with('\n'), "{text}");
        assert!(text.contains("line one\\nline two"), "{text}");
        assert!(text.contains("a.toml\\n2026-01-01T00:00:00Z  INFO forged"), "{text}");
        assert!(text.contains("x\\r\\nINFO forged span"), "{text}");
    }

    /// Feeds `events` to a run's log sink under the subscriber the daemon
    /// builds for `format` (pretty or json, at `info`, with `log_output`),
    /// and returns what it wrote.
    fn logged(format: LogFormat, log_output: Option<bool>, events: &[crate::exec::RunEvent]) -> String {
        let out = Shared::default();
        let sink = out.clone();
        let log =
            crate::daemon::RunLog { job: "backup.toml".into(), run_id: 7, cause: crate::store::RunTrigger::Manual };
        let feed = || {
            for event in events {
                log.event(event);
            }
        };
        let registry = tracing_subscriber::registry().with(with_output(EnvFilter::new("info"), format, log_output));
        match format {
            LogFormat::Pretty => {
                tracing::subscriber::with_default(registry.with(pretty(move || sink.clone(), false)), feed)
            }
            LogFormat::Json => tracing::subscriber::with_default(registry.with(json(move || sink.clone())), feed),
            LogFormat::Journald => unreachable!("the journal has its own test"),
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        // Without the terminal's colours (`ESC [ ... m`).
        let mut plain = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(at) = rest.find('\x1b') {
            plain.push_str(&rest[..at]);
            rest = rest[at..].split_once('m').map_or("", |(_, after)| after);
        }
        plain.push_str(rest);
        plain
    }

    /// The JSON objects the daemon's JSON layer writes for `events`.
    fn json_lines(log_output: Option<bool>, events: &[crate::exec::RunEvent]) -> Vec<serde_json::Value> {
        logged(LogFormat::Json, log_output, events).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn line(stream: crate::exec::Stream, text: &str) -> crate::exec::RunEvent {
        crate::exec::RunEvent::Log {
            path: "main/dump".into(),
            stream,
            text: text.into(),
            at: std::time::Duration::from_millis(5),
        }
    }

    #[test]
    fn an_output_line_is_one_event_of_target_gatherd_output_with_its_text_job_run_step_and_stream() {
        use crate::exec::Stream;
        let lines = json_lines(
            Some(true),
            &[line(Stream::Stdout, "dumped 3 tables"), line(Stream::Stderr, "tar: file changed as we read it")],
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
        for (seen, (level, stream, text)) in lines
            .iter()
            .zip([("INFO", "stdout", "dumped 3 tables"), ("WARN", "stderr", "tar: file changed as we read it")])
        {
            assert_eq!(seen["target"], "gatherd::output", "{seen}");
            assert_eq!(seen["level"], level, "{seen}");
            assert_eq!(seen["message"], text, "{seen}");
            assert_eq!(seen["job"], "backup.toml", "{seen}");
            assert_eq!(seen["run_id"], 7, "{seen}");
            assert_eq!(seen["step"], "main/dump", "{seen}");
            assert_eq!(seen["stream"], stream, "{seen}");
        }
    }

    #[test]
    fn a_script_print_is_still_logged_as_script_output() {
        let lines = json_lines(None, &[line(crate::exec::Stream::Print, "hello")]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["message"], "script output", "{lines:?}");
        assert_eq!(lines[0]["text"], "hello", "{lines:?}");
        assert_eq!(lines[0]["step"], "main/dump", "{lines:?}");
    }

    #[test]
    fn output_lines_are_logged_by_default_only_into_the_journal_and_as_log_output_says() {
        assert!(output_shown(LogFormat::Journald, None));
        assert!(!output_shown(LogFormat::Pretty, None));
        assert!(!output_shown(LogFormat::Json, None));
        assert!(!output_shown(LogFormat::Journald, Some(false)));
        assert!(output_shown(LogFormat::Json, Some(true)));
        let events = [line(crate::exec::Stream::Stdout, "out"), line(crate::exec::Stream::Stderr, "err")];
        let run_started =
            crate::exec::RunEvent::RunStarted { job: "backup.toml".into(), started_at: chrono::Utc::now() };
        for format in [LogFormat::Pretty, LogFormat::Json] {
            let quiet = logged(format, None, &[events[0].clone(), events[1].clone(), run_started.clone()]);
            assert_eq!(quiet.lines().count(), 1, "{format:?}: only the run's own event: {quiet}");
            assert!(quiet.contains("run started") && !quiet.contains("out") && !quiet.contains("err"), "{quiet}");
            let off = logged(format, Some(false), &events);
            assert_eq!(off, "", "{format:?}");
            let on = logged(format, Some(true), &events);
            assert_eq!(on.lines().count(), 2, "{format:?}: {on}");
        }
    }

    /// A step's line is its own: in `pretty` a newline or carriage return in
    /// it is written `\n` / `\r`, so a step cannot forge a log line.
    #[test]
    fn in_pretty_an_output_line_cannot_forge_a_log_line() {
        let text = logged(
            LogFormat::Pretty,
            Some(true),
            &[line(crate::exec::Stream::Stdout, "done\n2026-01-01T00:00:00Z  INFO gatherd: run finished\r")],
        );
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(text.contains("done\\n2026-01-01T00:00:00Z  INFO gatherd: run finished\\r"), "{text}");
        assert!(text.contains("gatherd::output") && text.contains("stream=\"stdout\""), "{text}");
    }

    /// One journal entry's fields, from the native protocol: `NAME=value\n`
    /// or `NAME\n<u64 LE length><value>\n`.
    fn journal_fields(mut entry: &[u8]) -> std::collections::BTreeMap<String, String> {
        let mut fields = std::collections::BTreeMap::new();
        while !entry.is_empty() {
            let end = entry.iter().position(|&b| b == b'\n' || b == b'=').expect("a field name ends");
            let name = String::from_utf8(entry[..end].to_vec()).unwrap();
            let value;
            if entry[end] == b'=' {
                let len = entry[end + 1..].iter().position(|&b| b == b'\n').expect("a value ends");
                value = &entry[end + 1..end + 1 + len];
                entry = &entry[end + 2 + len..];
            } else {
                let len = u64::from_le_bytes(entry[end + 1..end + 9].try_into().unwrap()) as usize;
                value = &entry[end + 9..end + 9 + len];
                assert_eq!(entry[end + 9 + len], b'\n', "{name}: the value ends at its length");
                entry = &entry[end + 10 + len..];
            }
            assert!(fields.insert(name.clone(), String::from_utf8(value.to_vec()).unwrap()).is_none(), "{name} twice");
        }
        fields
    }

    /// A datagram socket standing in for the journal, and the daemon's
    /// journald layer sending to it (its probe already received).
    fn journal() -> (tempfile::TempDir, std::os::unix::net::UnixDatagram, journald::Journald) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.socket");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let layer = journald::Journald::new(&path).unwrap();
        assert_eq!(
            socket.recv(&mut [0; 16]).unwrap(),
            0,
            "the layer asks with an empty datagram whether the journal listens"
        );
        (dir, socket, layer)
    }

    #[test]
    fn under_journald_each_output_line_is_one_entry_with_job_run_id_step_stream_and_its_priority() {
        use crate::exec::Stream;
        let (_dir, socket, layer) = journal();
        // As the daemon builds it: at `info`, `log_output` unset.
        let filter = with_output(EnvFilter::new("info"), LogFormat::Journald, None);
        let log =
            crate::daemon::RunLog { job: "backup.toml".into(), run_id: 7, cause: crate::store::RunTrigger::Manual };
        let run_started =
            crate::exec::RunEvent::RunStarted { job: "backup.toml".into(), started_at: chrono::Utc::now() };
        tracing::subscriber::with_default(tracing_subscriber::registry().with(filter).with(layer), || {
            log.event(&line(Stream::Stdout, "dumped 3 tables"));
            log.event(&line(Stream::Stderr, "tar: file changed\nas we read it"));
            log.event(&run_started);
        });
        let mut buf = vec![0; 1 << 20];
        let mut entries = Vec::new();
        for _ in 0..3 {
            let n = socket.recv(&mut buf).unwrap();
            entries.push(journal_fields(&buf[..n]));
        }
        socket.set_nonblocking(true).unwrap();
        assert!(socket.recv(&mut buf).is_err(), "one entry per event");
        for (entry, (priority, stream, text)) in entries
            .iter()
            .zip([("6", "stdout", "dumped 3 tables"), ("4", "stderr", "tar: file changed\nas we read it")])
        {
            assert_eq!(entry["MESSAGE"], text, "{entry:?}");
            assert_eq!(entry["JOB"], "backup.toml", "{entry:?}");
            assert_eq!(entry["RUN_ID"], "7", "{entry:?}");
            assert_eq!(entry["STEP"], "main/dump", "{entry:?}");
            assert_eq!(entry["STREAM"], stream, "{entry:?}");
            assert_eq!(entry["SYSLOG_IDENTIFIER"], "gatherd", "{entry:?}");
            assert_eq!(entry["PRIORITY"], priority, "{entry:?}");
            assert_eq!(entry["TARGET"], "gatherd::output", "{entry:?}");
        }
        // The daemon's own events are as they were: INFO is `notice`.
        let started = &entries[2];
        assert_eq!(started["MESSAGE"], "run started", "{started:?}");
        assert_eq!(started["PRIORITY"], "5", "{started:?}");
        assert_eq!((started["JOB"].as_str(), started["RUN_ID"].as_str()), ("backup.toml", "7"), "{started:?}");
        assert_eq!(started["CAUSE"], "manual", "{started:?}");
        assert_eq!(started["SYSLOG_IDENTIFIER"], "gatherd", "{started:?}");
        assert_eq!(started["TARGET"], "gatherd::daemon::sinks", "{started:?}");
        assert!(started.contains_key("CODE_FILE") && started.contains_key("CODE_LINE"), "{started:?}");
    }

    /// journald's datagrams are bounded by the socket's send buffer: a
    /// bigger entry goes as a sealed memfd, as journald asks.
    #[test]
    fn an_entry_too_big_for_a_datagram_reaches_the_journal_as_a_sealed_memfd() {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        use std::os::fd::AsRawFd;
        let (_dir, socket, layer) = journal();
        let big = "x".repeat(4 << 20);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::error!(job = "big.toml", "{big}");
        });
        let mut data = [0u8; 16];
        let mut iov = [std::io::IoSliceMut::new(&mut data)];
        let mut space = nix::cmsg_space!(std::os::fd::RawFd);
        let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).unwrap();
        assert_eq!(msg.bytes, 0, "the entry is in the file, not the datagram");
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("a file passed with the datagram");
        let file = std::fs::File::open(format!("/proc/self/fd/{fd}")).unwrap();
        nix::unistd::close(fd).unwrap();
        let seals = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GET_SEALS).unwrap();
        let needed = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        assert_eq!(seals & needed, needed, "sealed: {seals:#x}");
        let entry = journal_fields(&std::fs::read(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap());
        assert_eq!(entry["MESSAGE"].len(), big.len());
        assert_eq!((entry["JOB"].as_str(), entry["PRIORITY"].as_str()), ("big.toml", "3"), "{:?}", entry.get("JOB"));
    }

    #[test]
    fn warning_is_read_as_warn() {
        for (given, read) in [
            ("warning", "warn"),
            ("WARNING", "warn"),
            ("gatherd=warning", "gatherd=warn"),
            ("info,gatherd::daemon=Warning", "gatherd::daemon=warn,info"),
        ] {
            assert_eq!(parse_filter(given).map(|f| f.to_string()), Ok(read.to_string()), "{given}");
        }
    }

    #[test]
    fn an_unparsable_filter_is_an_error() {
        let err = parse_filter("gatherd=loud").map(|f| f.to_string()).unwrap_err();
        assert!(err.contains("gatherd=loud"), "{err}");
    }
}
