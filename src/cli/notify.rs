//! `gatherd notify test NAME`: sends a `test` notification to the config's
//! target `[notify.NAME]`, once, straight from the config file — no daemon
//! needed, so a target can be set up before the daemon runs, and what is
//! tested is the file about to be deployed. Not recorded in the history.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};

use super::out::outln;
use crate::config::Config;

/// `gatherd notify ...`
#[derive(Debug, Args)]
pub struct NotifyArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: NotifyCommand,
}

/// The `notify` subcommands.
#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test notification to the target `[notify.NAME]` of the config
    /// (one attempt, nothing recorded); exit 1 with why if it was not taken.
    #[command(after_help = super::man::examples::NOTIFY_TEST)]
    Test {
        /// The target's name.
        name: String,
        /// The config file holding the target.
        #[arg(long, value_name = "FILE", env = "GATHERD_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Runs `gatherd notify ...`.
pub async fn notify(args: NotifyArgs) -> anyhow::Result<u8> {
    let NotifyCommand::Test { name, config } = args.command;
    let config_path = config;
    let config = Config::load_or_default(config_path.as_deref()).map_err(|e| super::invalid(anyhow!("{e}")))?;
    let Some(target) = config.notify.get(&name) else {
        let known: Vec<&str> = config.notify.keys().map(String::as_str).collect();
        let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
        return Err(super::invalid(anyhow!("no target `[notify.{name}]` in the config (targets: {known})")));
    };
    // Read only for a target that logs in: a test of a webhook does not
    // depend on every secret being readable here.
    let logs_in = target.email.as_ref().is_some_and(|e| e.password_secret.is_some());
    let secrets = match logs_in {
        true => config.read_secrets(config_path.as_deref()).map_err(super::invalid)?,
        false => crate::exec::Secrets::default(),
    };
    // As the daemon runs a command target: the config's environment only.
    let environment = crate::exec::Environment::of_this_process(&config.pass_env, secrets);
    crate::daemon::send_test(&name, target, &environment)
        .await
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("the test notification to `{name}` was not delivered"))?;
    outln!("delivered a test notification to {name}")?;
    Ok(super::exit::OK)
}
