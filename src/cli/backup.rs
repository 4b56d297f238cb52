//! `gatherd backup FILE`: a consistent copy of the run history, safe while
//! the daemon runs (never `cp` a WAL database that is being written).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::exit;
use crate::config::Config;
use crate::store;

/// Arguments of `gatherd backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The new file to write the copy to (never overwritten).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The state folder whose history to copy (default: the config's, then
    /// `$STATE_DIRECTORY`, then `~/.local/state/gatherd`).
    #[arg(long, value_name = "DIR", env = "GATHERD_STATE")]
    pub state: Option<PathBuf>,
    /// The daemon's config file, for its `state_dir`.
    #[arg(long, value_name = "FILE", env = "GATHERD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Copies the history; exit 1 (with why) if no copy was made.
pub async fn backup(args: BackupArgs) -> anyhow::Result<u8> {
    let config = Config::load_or_default(args.config.as_deref())?;
    let db = config.state_dir(args.state.clone()).join(store::DB_FILE);
    let file = args.file.clone();
    let report =
        tokio::task::spawn_blocking(move || store::backup(&db, &file)).await.context("the backup's thread ended")??;
    super::out::outln!(
        "backed up {} runs (schema version {}, {} KiB) to {}",
        report.runs,
        report.schema_version,
        report.bytes.div_ceil(1024),
        args.file.display()
    )?;
    Ok(exit::OK)
}
