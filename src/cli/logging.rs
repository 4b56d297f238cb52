//! Setting up logging once, at start: the format (pretty, JSON lines, or the
//! journal) and the level, from flags, `RUST_LOG` and the config.

use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

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
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Pretty => {
            registry.with(tracing_subscriber::fmt::layer().with_writer(|| OneLine(std::io::stderr()))).init();
        }
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Journald => match tracing_journald::layer() {
            // Fields as JOB=, RUN_ID=, STATUS=, so `journalctl -u gatherd JOB=x` works.
            Ok(layer) => registry.with(layer.with_syslog_identifier("gatherd".into()).with_field_prefix(None)).init(),
            Err(e) => {
                registry.with(tracing_subscriber::fmt::layer().with_writer(|| OneLine(std::io::stderr()))).init();
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
