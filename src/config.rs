//! The configuration file: settings for the whole process, which flags on the
//! command line override. `gatherd run --config FILE` and `gatherd daemon
//! --config FILE` read the same file; `run` uses only what concerns one run.
//!
//! Architecture Invariant: nothing here is a job's setting. A job's own
//! values (e.g. `[script_limits]`) win over these defaults when it runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::exec::{BlockingPool, Limits, Secrets};
use crate::job::{LimitOverrides, MaxOutput, NotifyEvent, ScriptLimits};

mod notify;
pub use notify::{Email, EmailTls, MAX_RETRY_WAIT, NotifyTarget, Webhook, WebhookFormat, WebhookRequest};

/// The default `lease` of a fleet node.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// The shortest `lease` taken (tests use it).
pub const MIN_LEASE: Duration = Duration::from_secs(1);

/// The parsed configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The jobs folder the daemon watches (`--jobs` wins).
    pub jobs_dir: Option<PathBuf>,
    /// Where the daemon keeps its state (`--state` wins; then
    /// `$STATE_DIRECTORY`; then a user default).
    pub state_dir: Option<PathBuf>,
    /// The run history: a `postgres://USER:PASSWORD@HOST:PORT/DB` URL for a
    /// PostgreSQL database (`--store` and `GATHERD_STORE` win); none: the
    /// SQLite file `gatherd.db` in the state folder.
    pub store: Option<String>,
    /// Threads of the blocking pool; default min(32, CPUs + 4).
    pub blocking_threads: Option<usize>,
    /// At most this many runs at once across all jobs; fires beyond it wait
    /// in order. Default 64.
    pub max_concurrent_runs: Option<usize>,
    /// On SIGTERM, how long runs in flight may go on before they are cancelled.
    #[serde(default, deserialize_with = "humantime_opt")]
    pub shutdown_grace: Option<Duration>,
    /// `pretty`, `json` or `journald` (`--log-format` wins; default: journald
    /// when stdout is the journal, else pretty).
    pub log_format: Option<LogFormat>,
    /// A tracing filter such as `info` or `gatherd=debug` (`--log-level` and
    /// `RUST_LOG` win).
    pub log_level: Option<String>,
    /// Whether the lines steps print (stdout, stderr) go to the daemon's log
    /// too, besides the run history. Default: yes under journald, no in the
    /// `pretty` and `json` formats (the history keeps them anyway; a terminal
    /// or a JSON log of every line of every job is noise).
    pub log_output: Option<bool>,
    /// Keep at most this many runs per job in the history (a job's own
    /// `keep_runs` wins); 0 = no count limit. Default:
    /// [`DEFAULT_KEEP_RUNS`] ([`Config::keep_runs`]).
    pub keep_runs: Option<u64>,
    /// Keep runs this long (a job's own `keep_for` wins); `"0s"` = no age
    /// limit. Default: [`DEFAULT_KEEP_FOR`] ([`Config::keep_for`]).
    #[serde(default, deserialize_with = "humantime_opt")]
    pub keep_for: Option<Duration>,
    /// A TCP address for the control API besides its unix socket
    /// (`STATE/gatherd.sock`, always there); none by default. Needs a token:
    /// `api_token_file` or `api_token`.
    pub api_listen: Option<std::net::SocketAddr>,
    /// A token the API's TCP clients must send as `Authorization: Bearer
    /// TOKEN`: printable ASCII without spaces, not empty.
    pub api_token: Option<String>,
    /// A file holding the token (instead of `api_token`), relative to the
    /// state folder unless absolute; created at the daemon's first start if
    /// missing (mode 0640, so the CLI of the daemon's group reads it too).
    pub api_token_file: Option<PathBuf>,
    /// Host names the API answers to besides its listen address and
    /// `localhost` (a request with another `Host` is refused, against DNS
    /// rebinding): e.g. the name a reverse proxy forwards.
    #[serde(default)]
    pub api_hosts: Vec<String>,
    /// The label of this daemon's node id (default: the host name): each
    /// start records its runs as `{node_name}-{8 random hex}` (README
    /// "Nodes, leases and takeover"). `node` is the older name of the key.
    #[serde(alias = "node")]
    pub node_name: Option<String>,
    /// In a fleet (a PostgreSQL store): a node whose last heartbeat (on the
    /// database's clock) is older than this is dead, and a live node takes
    /// its runs over. Nodes heartbeat every lease/3. Default 15 s, at least
    /// 1 s.
    #[serde(default, deserialize_with = "humantime_opt")]
    pub lease: Option<Duration>,
    /// Counts of named semaphores (`semaphore = "NAME"` in jobs); unnamed
    /// ones count 1.
    #[serde(default)]
    pub semaphores: BTreeMap<String, usize>,
    /// Default limits of the Rhai sandbox, for every script without its own.
    #[serde(default)]
    pub script_limits: ScriptLimitsConfig,
    /// How much of each step's output lines is kept, for every job without
    /// its own `max_output`.
    #[serde(default)]
    pub max_output: MaxOutputConfig,
    /// `[notify.NAME]`: notification targets (README "Alerting").
    #[serde(default)]
    pub notify: BTreeMap<String, NotifyTarget>,
    /// The targets of every job without its own `notify`. Default: none.
    #[serde(default)]
    pub default_notify: Vec<String>,
    /// The events of every job without its own `notify_on`. Default:
    /// failure and recovery.
    pub default_notify_on: Option<Vec<NotifyEvent>>,
    /// Variables of gatherd's environment that steps' processes get too
    /// (names, or patterns with `*` such as `AWS_*`), besides the minimal set
    /// (`exec::Environment`). Default: none.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// `[secrets]`: values jobs read as `{{ secrets.NAME }}` (TOML) or
    /// `secret("NAME")` (Rhai), each from a file, a variable of gatherd's
    /// environment or a systemd credential; read at start and on SIGHUP, and
    /// masked (`********`) in everything a run reports.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
}

/// Where one secret's value is read from: exactly one of the three.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// A file holding the value (one trailing newline is dropped); relative
    /// to the config file's folder unless absolute.
    pub file: Option<PathBuf>,
    /// A variable of gatherd's own environment.
    pub env: Option<String>,
    /// A systemd credential (`LoadCredential=NAME:PATH` in the unit): the
    /// file `$CREDENTIALS_DIRECTORY/NAME`.
    pub credential: Option<String>,
}

/// `[max_output]` in the config: `head` and `tail` in bytes, each optional.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxOutputConfig {
    /// Bytes of a step's lines kept from the start (default 1 MiB).
    pub head: Option<u64>,
    /// Bytes of a step's lines kept from the end (default 1 MiB).
    pub tail: Option<u64>,
}

impl MaxOutputConfig {
    fn overrides(self) -> MaxOutput {
        MaxOutput { head: self.head, tail: self.tail }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines on stderr.
    Pretty,
    /// One JSON object per line on stderr.
    Json,
    /// Straight to the systemd journal, with structured fields.
    Journald,
}

/// The default of `max_concurrent_runs`.
pub const DEFAULT_MAX_CONCURRENT_RUNS: usize = 64;
/// The default of `shutdown_grace`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// `[script_limits]` in the config: each key optional, the rest built in.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptLimitsConfig {
    max_operations: Option<u64>,
    max_call_depth: Option<usize>,
    max_expr_depth: Option<usize>,
    max_string_bytes: Option<usize>,
    max_array_len: Option<usize>,
    max_map_len: Option<usize>,
    #[serde(default, deserialize_with = "humantime_opt")]
    wall_time: Option<Duration>,
}

impl ScriptLimitsConfig {
    /// The limits set here, in place of the built-in ones.
    fn overrides(&self) -> LimitOverrides {
        LimitOverrides {
            max_operations: self.max_operations,
            max_call_depth: self.max_call_depth,
            max_expr_depth: self.max_expr_depth,
            max_string_bytes: self.max_string_bytes,
            max_array_len: self.max_array_len,
            max_map_len: self.max_map_len,
            wall_time: self.wall_time,
        }
    }
}

/// How many runs per job the history keeps when neither the job nor the
/// config says: with [`DEFAULT_KEEP_FOR`], a finite history by default (a
/// 30-second health check reaches it in 3.5 days; README "Retention").
pub const DEFAULT_KEEP_RUNS: u64 = 10_000;

/// How long the history keeps a run when neither the job nor the config says.
pub const DEFAULT_KEEP_FOR: Duration = Duration::from_secs(90 * 24 * 3600);

impl Config {
    /// The history's count limit per job for jobs that set none: the
    /// config's `keep_runs`, [`DEFAULT_KEEP_RUNS`] when unset, `None` (no
    /// limit) for 0.
    pub fn keep_runs(&self) -> Option<u64> {
        match self.keep_runs {
            None => Some(DEFAULT_KEEP_RUNS),
            Some(0) => None,
            Some(n) => Some(n),
        }
    }

    /// The history's age limit for jobs that set none: the config's
    /// `keep_for`, [`DEFAULT_KEEP_FOR`] when unset, `None` (no limit) for 0.
    pub fn keep_for(&self) -> Option<Duration> {
        match self.keep_for {
            None => Some(DEFAULT_KEEP_FOR),
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        }
    }
}

fn humantime_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?} ({e}); write e.g. \"30s\"")))
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid (toml's message names the line and column).
    #[error("invalid config file {}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
    /// A secret's value cannot be read (or is unfit): the message names the
    /// secret and the file or variable.
    #[error("config file {}: {message}", path.display())]
    Secret {
        /// The file.
        path: PathBuf,
        /// Which secret, where it was looked for and why it failed.
        message: String,
    },
}

impl Config {
    /// The config file at `path` when one is given, else the defaults: what
    /// every command's `--config` means.
    pub fn load_or_default(path: Option<&Path>) -> Result<Config, ConfigError> {
        path.map_or_else(|| Ok(Config::default()), Config::load)
    }

    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(path, &text)
    }

    /// Parses config text; `path` names it in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Invalid { path: path.into(), message: e.to_string() })?;
        let invalid = |message: String| Err(ConfigError::Invalid { path: path.into(), message });
        if config.blocking_threads == Some(0) {
            return invalid("`blocking_threads` must be at least 1".into());
        }
        if config.lease.is_some_and(|l| l < MIN_LEASE) {
            return invalid(format!(
                "`lease` must be at least {} (a node heartbeats every lease/3)",
                humantime::format_duration(MIN_LEASE)
            ));
        }
        if let Some(name) = &config.node_name
            && !valid_label(name)
        {
            return invalid(format!(
                "`node_name` must be 1 to 48 letters, digits, `.`, `_` or `-` (it starts each node id, \
                 e.g. web1-3f9a2c7e), found {name:?}"
            ));
        }
        if config.max_concurrent_runs == Some(0) {
            return invalid("`max_concurrent_runs` must be at least 1".into());
        }
        if let Some((name, _)) = config.semaphores.iter().find(|(_, n)| **n == 0) {
            return invalid(format!("semaphore `{name}` must count at least 1"));
        }
        // What `Authorization: Bearer TOKEN` can carry: a blank token or one
        // with spaces or non-ASCII could never be sent.
        if let Some(token) = &config.api_token
            && !crate::api::valid_token(token)
        {
            return invalid(
                "`api_token` must be non-blank printable ASCII without spaces (what an HTTP header can carry)".into(),
            );
        }
        if config.api_token.is_some() && config.api_token_file.is_some() {
            return invalid("set `api_token` or `api_token_file`, not both".into());
        }
        if let Some(bad) = config
            .api_hosts
            .iter()
            .find(|h| h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic()) || h.contains(['/', ':']))
        {
            return invalid(format!("`api_hosts` holds host names without port or scheme, found {bad:?}"));
        }
        for (name, source) in &config.secrets {
            if !is_name(name) {
                return invalid(format!(
                    "secret name `secrets.{name}` must be letters, digits and `_`, not starting with a digit \
                     (templates read it as `secrets.NAME`)"
                ));
            }
            let set = [source.file.is_some(), source.env.is_some(), source.credential.is_some()];
            if set.iter().filter(|s| **s).count() != 1 {
                return invalid(format!(
                    "secret `secrets.{name}` needs exactly one of `file`, `env` or `credential`, \
                     e.g. {{ file = \"/etc/gatherd/{name}\" }}"
                ));
            }
            if let Some(credential) = &source.credential
                && (credential.is_empty() || credential.contains('/') || credential.starts_with('.'))
            {
                return invalid(format!(
                    "secret `secrets.{name}`: a credential is a name as in `LoadCredential=NAME:PATH`, \
                     found {credential:?}"
                ));
            }
        }
        if let Some(bad) = config.pass_env.iter().find(|p| {
            p.is_empty() || p.contains('=') || !p.chars().all(|c| c == '*' || c == '_' || c.is_ascii_alphanumeric())
        }) {
            return invalid(format!(
                "`pass_env` holds variable names or patterns with `*` (e.g. \"AWS_*\"), found {bad:?}"
            ));
        }
        // The same rule as a job's own `max_output`: one reader in `load`.
        if let Err(message) = crate::load::check_max_output(&config.max_output.overrides()) {
            return invalid(message);
        }
        // The same ranges as a job's own limits: one table in `load`.
        if let Err(message) = crate::load::check_limits(&config.script_limits.overrides(), "script_limits.") {
            return invalid(message);
        }
        if let Err(message) =
            notify::check(&config.notify, &config.default_notify, config.default_notify_on.as_deref(), &config.secrets)
        {
            return invalid(message);
        }
        Ok(config)
    }

    /// Reads every `[secrets]` value now, as the daemon does at start and on
    /// SIGHUP, and `gatherd run` before it runs: a file relative to the
    /// folder of `config_path`, a variable of this process's environment, or
    /// `$CREDENTIALS_DIRECTORY/NAME`. One that cannot be read, is empty, is
    /// shorter than [`crate::exec::MIN_SECRET_BYTES`] or is not UTF-8 is an
    /// error naming the secret and where it was looked for.
    pub fn read_secrets(&self, config_path: Option<&Path>) -> Result<Secrets, ConfigError> {
        let path = config_path.unwrap_or(Path::new("(no config file)"));
        let base = config_path.and_then(Path::parent).unwrap_or(Path::new("."));
        let mut values = Vec::with_capacity(self.secrets.len());
        for (name, source) in &self.secrets {
            let failed = |message: String| ConfigError::Secret { path: path.into(), message };
            let (value, from) = if let Some(file) = &source.file {
                let file = base.join(file);
                let from = format!("file {}", file.display());
                (
                    read_secret_file(&file)
                        .map_err(|e| failed(format!("secret `{name}`: cannot read its {from}: {e}")))?,
                    from,
                )
            } else if let Some(var) = &source.env {
                let from = format!("variable `{var}`");
                let value = std::env::var(var).map_err(|e| {
                    failed(format!("secret `{name}`: its {from} is not set in gatherd's environment ({e})"))
                })?;
                (value, from)
            } else if let Some(credential) = &source.credential {
                let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) else {
                    return Err(failed(format!(
                        "secret `{name}`: credential `{credential}` needs $CREDENTIALS_DIRECTORY, which systemd \
                         sets for a unit with `LoadCredential={credential}:PATH`; it is not set"
                    )));
                };
                let file = PathBuf::from(dir).join(credential);
                let from = format!("credential `{credential}` ({})", file.display());
                (
                    read_secret_file(&file)
                        .map_err(|e| failed(format!("secret `{name}`: cannot read its {from}: {e}")))?,
                    from,
                )
            } else {
                // `parse` refuses a source with none of the three.
                continue;
            };
            if value.len() < crate::exec::MIN_SECRET_BYTES {
                return Err(failed(format!(
                    "secret `{name}` (from its {from}) is {} bytes long; a secret must be at least {} bytes, \
                     since every occurrence of its value in every log line and output is masked",
                    value.len(),
                    crate::exec::MIN_SECRET_BYTES
                )));
            }
            values.push((name.clone(), value));
        }
        Ok(Secrets::new(values))
    }

    /// The blocking pool's size: the config's, or the default.
    pub fn blocking_threads(&self) -> usize {
        self.blocking_threads.unwrap_or_else(BlockingPool::default_size)
    }

    /// The label of this daemon's node ids: `node_name`, else the host
    /// name (made a valid label), else `localhost`.
    pub fn node_label(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
            label_of(&host)
        })
    }

    /// How long a fleet node may go without heartbeating before it is
    /// dead: `lease`, default [`DEFAULT_LEASE`].
    pub fn lease(&self) -> Duration {
        self.lease.unwrap_or(DEFAULT_LEASE)
    }

    /// The state folder: `flag` (`--state`), else the config's, else
    /// `$STATE_DIRECTORY` (systemd), else `$XDG_STATE_HOME/gatherd`, else
    /// `~/.local/state/gatherd`.
    pub fn state_dir(&self, flag: Option<PathBuf>) -> PathBuf {
        flag.or_else(|| self.state_dir.clone()).unwrap_or_else(default_state_dir)
    }

    /// The token file, if one is configured: relative to the state folder
    /// `state` unless absolute.
    pub fn api_token_file(&self, state: &Path) -> Option<PathBuf> {
        self.api_token_file.as_ref().map(|file| state.join(file))
    }

    /// The API's TCP token: `api_token`, else the content of the token
    /// file (read now), else none. The error names the file and why.
    pub fn api_token(&self, state: &Path) -> Result<Option<String>, String> {
        match (&self.api_token, self.api_token_file(state)) {
            (Some(token), _) => Ok(Some(token.clone())),
            (None, Some(file)) => crate::api::read_token_file(&file).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The global limit on runs at once.
    pub fn max_concurrent_runs(&self) -> usize {
        self.max_concurrent_runs.unwrap_or(DEFAULT_MAX_CONCURRENT_RUNS)
    }

    /// How long runs may finish on SIGTERM.
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE)
    }

    /// The count of semaphore `name` (1 unless configured).
    pub fn semaphore(&self, name: &str) -> usize {
        self.semaphores.get(name).copied().unwrap_or(1)
    }

    /// The sandbox's default limits: the built-in ones with the config's in place.
    pub fn script_limits(&self) -> ScriptLimits {
        ScriptLimits::default().merged(&self.script_limits.overrides())
    }

    /// A run's bounds: the built-in ones with this file's `[max_output]`.
    pub fn limits(&self) -> Limits {
        let defaults = Limits::default();
        Limits { max_output: defaults.max_output.with(&self.max_output.overrides()), ..defaults }
    }
}

/// The text of a secret's file, less one trailing newline (`echo x > file`,
/// `systemd-creds`), which is never part of a token.
/// Whether `name` can start a node id: 1 to 48 ASCII letters, digits, `.`,
/// `_` or `-` (what a host name holds), so ids read well in tables and logs.
pub fn valid_label(name: &str) -> bool {
    (1..=48).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A node label from a host name: its characters a label cannot hold become
/// `-`, cut to 48; `localhost` for an empty one.
pub fn label_of(host: &str) -> String {
    let label: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .take(48)
        .collect();
    if label.is_empty() { "localhost".to_string() } else { label }
}

fn read_secret_file(file: &Path) -> Result<String, String> {
    let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
    let mut text = String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// A secret's name: what a template can read as `secrets.NAME`.
fn is_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Where state goes when neither `--state` nor the config says.
fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may pass several, separated by ':'; the first is ours.
        let dir = dir.to_string_lossy().split(':').next().map(PathBuf::from);
        if let Some(dir) = dir {
            return dir;
        }
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("gatherd");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/gatherd"),
        None => PathBuf::from(".gatherd-state"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `examples/config.toml` is installed as is (the Debian package's
    /// /etc/gatherd/config.toml), so it must change nothing: every key is
    /// commented out, and the defaults it shows are the real ones.
    #[test]
    fn the_shipped_example_changes_no_default_and_shows_the_real_ones() {
        let text = include_str!("../examples/config.toml");
        let config = Config::parse(Path::new("examples/config.toml"), text).expect("valid");
        let empty = Config::parse(Path::new("c.toml"), "").expect("valid");
        assert_eq!(format!("{config:?}"), format!("{empty:?}"), "the example as shipped sets a key");
        // The lines that show a default, uncommented, still change nothing.
        let shown: Vec<&str> =
            ["max_concurrent_runs", "shutdown_grace", "log_level", "[script_limits]", "[max_output]", "head", "tail"]
                .into_iter()
                .chain(crate::load::LIMIT_KEYS.iter().copied())
                .collect();
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if shown.iter().any(|k| rest.starts_with(&format!("{k} ")) || rest == *k) => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        // max_concurrent_runs and every script limit but wall_time.
        let shown_max = 1 + crate::load::LIMIT_KEYS.iter().filter(|k| k.starts_with("max_")).count();
        assert_eq!(uncommented.matches("\nmax_").count(), shown_max, "every default is shown: {uncommented}");
        assert!(uncommented.contains("\nwall_time = "), "{uncommented}");
        let defaults = Config::parse(Path::new("examples/config.toml"), &uncommented).expect("valid");
        assert_eq!(defaults.max_concurrent_runs(), empty.max_concurrent_runs());
        assert_eq!(defaults.shutdown_grace(), empty.shutdown_grace());
        assert_eq!((defaults.keep_runs(), defaults.keep_for()), (empty.keep_runs(), empty.keep_for()));
        assert_eq!(defaults.log_level.as_deref(), Some("info"));
        assert_eq!(defaults.script_limits(), ScriptLimits::default());
        assert_eq!(defaults.limits().max_output, crate::exec::step::OutputBounds::default());
    }

    #[test]
    fn node_name_or_its_old_name_node_labels_node_ids_and_lease_has_a_floor() {
        let path = Path::new("c.toml");
        assert_eq!(Config::parse(path, "node_name = \"web1\"\n").unwrap().node_label(), "web1");
        assert_eq!(Config::parse(path, "node = \"worker-1\"\n").unwrap().node_label(), "worker-1");
        let bad = Config::parse(path, "node_name = \"a b\"\n").unwrap_err().to_string();
        assert!(bad.contains("`node_name` must be"), "{bad}");
        assert_eq!(Config::default().lease(), DEFAULT_LEASE);
        assert_eq!(Config::parse(path, "lease = \"1s\"\n").unwrap().lease(), Duration::from_secs(1));
        let short = Config::parse(path, "lease = \"500ms\"\n").unwrap_err().to_string();
        assert!(short.contains("`lease` must be at least 1s"), "{short}");
        assert_eq!(label_of("a host/name"), "a-host-name");
        assert_eq!(label_of(""), "localhost");
    }

    #[test]
    fn unset_keys_keep_the_built_in_defaults() {
        let config = Config::parse(Path::new("c.toml"), "").expect("valid");
        assert_eq!(config.script_limits(), ScriptLimits::default());
        assert_eq!(config.blocking_threads(), BlockingPool::default_size());
        assert_eq!(config.api_listen, None, "TCP is opt-in");
        assert_eq!(config.keep_runs(), Some(DEFAULT_KEEP_RUNS), "a finite history by default");
        assert_eq!(config.keep_for(), Some(DEFAULT_KEEP_FOR));
        let unbounded = Config::parse(Path::new("c.toml"), "keep_runs = 0\nkeep_for = \"0s\"\n").expect("valid");
        assert_eq!((unbounded.keep_runs(), unbounded.keep_for()), (None, None), "0 = no limit");
        let set = Config::parse(Path::new("c.toml"), "keep_runs = 5\nkeep_for = \"1d\"\n").expect("valid");
        assert_eq!((set.keep_runs(), set.keep_for()), (Some(5), Some(Duration::from_secs(86_400))));
    }

    #[test]
    fn mistakes_are_reported_with_their_place() {
        let err = Config::parse(Path::new("c.toml"), "[script_limits]\nmax_operatons = 5\n").expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("c.toml") && text.contains("line 2") && text.contains("max_operatons"), "{text}");
        let err = Config::parse(Path::new("c.toml"), "[script_limits]\nwall_time = \"soon\"\n").expect_err("invalid");
        assert!(err.to_string().contains("invalid duration"), "{err}");
        let err = Config::parse(Path::new("c.toml"), "blocking_threads = 0\n").expect_err("invalid");
        assert!(err.to_string().contains("at least 1"), "{err}");
        let err = Config::parse(Path::new("c.toml"), "log_format = \"xml\"\n").expect_err("invalid");
        assert!(err.to_string().contains("xml"), "{err}");
        let err = Config::parse(Path::new("c.toml"), "[semaphores]\nbackup = 0\n").expect_err("invalid");
        assert!(err.to_string().contains("semaphore `backup`"), "{err}");
    }

    #[test]
    fn log_output_is_read_and_unset_by_default() {
        assert_eq!(Config::parse(Path::new("c.toml"), "").expect("valid").log_output, None);
        let config = Config::parse(Path::new("c.toml"), "log_output = true\n").expect("valid");
        assert_eq!(config.log_output, Some(true));
        let err = Config::parse(Path::new("c.toml"), "log_output = \"yes\"\n").expect_err("invalid");
        assert!(err.to_string().contains("c.toml") && err.to_string().contains("line 1"), "{err}");
    }

    /// A token an HTTP header cannot carry could never be sent: refused.
    #[test]
    fn an_api_token_must_be_printable_ascii_without_spaces() {
        for bad in [" ", "", "   ", "two words", "tab\there", "caf\u{e9}", "new\nline"] {
            let text = format!("api_token = {}\n", toml::Value::String(bad.into()));
            let err = Config::parse(Path::new("c.toml"), &text).expect_err(bad);
            let message = err.to_string();
            assert!(message.contains("c.toml") && message.contains("`api_token` must be"), "{bad:?}: {message}");
        }
        let config = Config::parse(Path::new("c.toml"), "api_token = \"s3cret-~!._\"\n").expect("valid");
        assert_eq!(config.api_token.as_deref(), Some("s3cret-~!._"));
    }

    #[test]
    fn a_token_file_is_relative_to_the_state_folder_and_excludes_api_token() {
        let config = Config::parse(Path::new("c.toml"), "api_token_file = \"api-token\"\n").expect("valid");
        assert_eq!(config.api_token_file(Path::new("/s")), Some(PathBuf::from("/s/api-token")));
        let config = Config::parse(Path::new("c.toml"), "api_token_file = \"/etc/t\"\n").expect("valid");
        assert_eq!(config.api_token_file(Path::new("/s")), Some(PathBuf::from("/etc/t")));
        let both = "api_token = \"x\"\napi_token_file = \"t\"\n";
        let err = Config::parse(Path::new("c.toml"), both).expect_err("both");
        assert!(err.to_string().contains("not both"), "{err}");
    }

    #[test]
    fn api_hosts_are_bare_names() {
        let config = Config::parse(Path::new("c.toml"), "api_hosts = [\"gatherd.lan\"]\n").expect("valid");
        assert_eq!(config.api_hosts, ["gatherd.lan"]);
        for bad in ["\"\"", "\"http://x\"", "\"x:80\"", "\"a b\""] {
            let err = Config::parse(Path::new("c.toml"), &format!("api_hosts = [{bad}]\n")).expect_err(bad);
            assert!(err.to_string().contains("`api_hosts`"), "{err}");
        }
    }

    /// `max_operations = 0` is "unlimited" to Rhai: the config must refuse it
    /// as a job's `[script_limits]` does.
    #[test]
    fn script_limits_of_zero_are_refused() {
        let err = Config::parse(Path::new("c.toml"), "[script_limits]\nmax_operations = 0\n").expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("c.toml"), "{text}");
        assert!(text.contains("`script_limits.max_operations` must be a positive integer, found 0"), "{text}");
        let err = Config::parse(Path::new("c.toml"), "[script_limits]\nwall_time = \"0s\"\n").expect_err("invalid");
        assert!(err.to_string().contains("`script_limits.wall_time` must be longer than zero"), "{err}");
    }

    /// A deep `max_expr_depth` lets a crafted script overflow the parser's
    /// stack: the config allows what a job may set, no more.
    #[test]
    fn script_limits_beyond_the_job_range_are_refused() {
        let err =
            Config::parse(Path::new("c.toml"), "[script_limits]\nmax_expr_depth = 100000\n").expect_err("invalid");
        assert!(
            err.to_string().contains("`script_limits.max_expr_depth` must be from 1 to 128, found 100000"),
            "{err}"
        );
        let config = Config::parse(Path::new("c.toml"), "[script_limits]\nmax_expr_depth = 128\n").expect("valid");
        assert_eq!(config.script_limits().max_expr_depth, 128);
    }

    #[test]
    fn a_secret_needs_one_source_a_name_and_a_plain_credential() {
        let refused = [
            ("[secrets]\na = {}\n", "exactly one of `file`, `env` or `credential`"),
            ("[secrets]\na = { file = \"x\", env = \"Y\" }\n", "exactly one of"),
            ("[secrets]\n\"my-key\" = { env = \"Y\" }\n", "`secrets.my-key` must be letters"),
            ("[secrets]\na = { credential = \"../x\" }\n", "a credential is a name"),
            ("[secrets]\na = { path = \"x\" }\n", "unknown field `path`"),
            ("pass_env = [\"A=B\"]\n", "`pass_env` holds variable names"),
        ];
        for (text, expected) in refused {
            let err = Config::parse(Path::new("c.toml"), text).expect_err(text);
            assert!(err.to_string().contains(expected), "{text:?}: {err}");
        }
        let ok = "pass_env = [\"AWS_*\", \"LANG\"]\n[secrets]\nwebhook = { credential = \"webhook\" }\n";
        let config = Config::parse(Path::new("c.toml"), ok).expect("valid");
        assert_eq!(config.pass_env, ["AWS_*", "LANG"]);
        assert_eq!(config.secrets["webhook"].credential.as_deref(), Some("webhook"));
    }

    #[test]
    fn secrets_are_read_from_their_files_less_a_newline_and_refused_when_too_short() {
        let dir = tempfile::tempdir().expect("temp");
        std::fs::write(dir.path().join("long"), "hunter2-hunter2\r\n").expect("write");
        std::fs::write(dir.path().join("short"), "abc\n").expect("write");
        let config_file = dir.path().join("config.toml");
        let config = Config::parse(&config_file, "[secrets]\nlong = { file = \"long\" }\n").expect("valid");
        let secrets = config.read_secrets(Some(&config_file)).expect("readable");
        assert_eq!(secrets.get("long"), Some("hunter2-hunter2"));
        assert!(!format!("{secrets:?}").contains("hunter2"), "Debug shows names only");
        let config = Config::parse(&config_file, "[secrets]\nshort = { file = \"short\" }\n").expect("valid");
        let err = config.read_secrets(Some(&config_file)).expect_err("too short").to_string();
        assert!(
            err.contains("secret `short`") && err.contains("is 3 bytes long") && err.contains("at least 4"),
            "{err}"
        );
        let config = Config::parse(&config_file, "[secrets]\ngone = { file = \"gone\" }\n").expect("valid");
        let err = config.read_secrets(Some(&config_file)).expect_err("missing").to_string();
        assert!(err.contains("secret `gone`") && err.contains(&dir.path().join("gone").display().to_string()), "{err}");
    }

    #[test]
    fn max_output_sets_the_bounds_of_every_job_without_its_own() {
        let config = Config::parse(Path::new("c.toml"), "[max_output]\nhead = 10\n").expect("valid");
        let bounds = config.limits().max_output;
        assert_eq!((bounds.head, bounds.tail), (10, 1024 * 1024));
        let err = Config::parse(Path::new("c.toml"), "[max_output]\ntail = 2000000000\n").expect_err("invalid");
        assert!(
            err.to_string()
                .contains("`max_output.tail` must be a number of bytes from 0 to 1073741824, found 2000000000"),
            "{err}"
        );
        assert!(Config::parse(Path::new("c.toml"), "[max_output]\nhed = 1\n").is_err());
    }
}
