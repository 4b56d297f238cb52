//! `gatherd daemon`: the long-running service on a jobs folder.

use std::path::PathBuf;

use clap::Args;

use super::exit;
use crate::config::{Config, LogFormat};
use crate::daemon::{self, Options};

/// Arguments of `gatherd daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The folder of job files (*.toml, *.rhai), watched recursively.
    #[arg(long, value_name = "DIR", env = "GATHERD_JOBS")]
    pub jobs: Option<PathBuf>,
    /// Where the daemon keeps its state; default $STATE_DIRECTORY (set by
    /// systemd), else ~/.local/state/gatherd.
    #[arg(long, value_name = "DIR", env = "GATHERD_STATE")]
    pub state: Option<PathBuf>,
    /// The run history: a postgres:// URL (wins over the config's `store`);
    /// default the SQLite file gatherd.db in the state folder.
    #[arg(long, value_name = "URL", env = "GATHERD_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// A configuration file (see examples/config.toml); re-read on SIGHUP.
    #[arg(long, value_name = "FILE", env = "GATHERD_CONFIG")]
    pub config: Option<PathBuf>,
    /// How to write logs (on stderr); default journald when stderr is the journal, else pretty.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `gatherd=debug` (RUST_LOG works too).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Threads of the blocking pool (wins over the config).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub blocking_threads: Option<u16>,
    /// At most this many runs at once (wins over the config).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_runs: Option<u32>,
    /// A TCP address for the control API besides its socket STATE/gatherd.sock
    /// (none by default; needs api_token_file or api_token; port 0 = any free port).
    #[arg(long, value_name = "ADDR", env = "GATHERD_API_LISTEN")]
    pub api_listen: Option<std::net::SocketAddr>,
    /// The config file as read the first time it was asked for: logging is
    /// set up from it before the daemon starts, and both see one reading.
    #[arg(skip)]
    loaded: std::sync::OnceLock<Box<Result<Config, crate::config::ConfigError>>>,
}

impl DaemonArgs {
    /// The config file, or the defaults when none is given; read once.
    pub fn load_config(&self) -> Result<&Config, &crate::config::ConfigError> {
        let loaded: &Result<Config, _> =
            self.loaded.get_or_init(|| Box::new(Config::load_or_default(self.config.as_deref())));
        loaded.as_ref()
    }
}

/// Runs the daemon; exit 0 after a clean stop, 2 for bad arguments or config,
/// 1 when it cannot start.
pub async fn daemon(args: DaemonArgs) -> anyhow::Result<u8> {
    let config = args.load_config().map_err(|e| super::invalid(anyhow::anyhow!("{e}")))?.clone();
    let Some(jobs) = args.jobs.clone().or_else(|| config.jobs_dir.clone()) else {
        return Err(super::invalid(anyhow::anyhow!("no jobs folder: pass --jobs DIR or set jobs_dir in the config")));
    };
    let state = config.state_dir(args.state.clone());
    // A secret that cannot be read is an invalid config: no start (exit 2).
    let secrets = config.read_secrets(args.config.as_deref()).map_err(super::invalid)?;
    let opts = Options {
        jobs,
        state,
        config_path: args.config.clone(),
        config,
        blocking_threads: args.blocking_threads.map(usize::from),
        max_concurrent_runs: args.max_concurrent_runs.and_then(|n| usize::try_from(n).ok()),
        api_listen: args.api_listen,
        store: args.store.clone(),
        secrets,
    };
    daemon::run(opts).await?;
    Ok(exit::OK)
}
