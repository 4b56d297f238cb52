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

/// Installs the global subscriber.
pub fn init(settings: LogSettings) {
    let filter = settings
        .level
        .clone()
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .or_else(|| settings.config_level.clone().map(EnvFilter::new))
        .unwrap_or_else(|| EnvFilter::new(settings.default_level));
    let format = settings.format.unwrap_or(if stderr_is_journal() { LogFormat::Journald } else { LogFormat::Pretty });
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).init(),
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
                registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).init();
                tracing::warn!("cannot reach the journal ({e}); logging to stderr");
            }
        },
    }
}
