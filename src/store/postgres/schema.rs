//! Reaching the PostgreSQL database and bringing its schema up to date.
//!
//! Migrations are SQL files under `src/store/migrations/postgres/`,
//! embedded in the binary; the table `schema_version` has one row per
//! migration applied. They run in one transaction that first takes an
//! advisory lock (so daemons of a fleet starting together apply each once)
//! and re-reads the version; PostgreSQL's DDL is transactional, so a
//! migration that fails leaves the database as it was.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config};

use super::tls::{MakeRustls, split_tls};

use crate::store::StoreError;
use crate::store::error::postgres_reason;

/// The migrations, in order: (file name, SQL). Never edit a released one; add
/// the next.
/// A migration's version is the number its file name starts with, so the
/// branches of a fleet's work can each add theirs (0002 nodes, 0003 claims)
/// and a database records which ones it has, whatever their order of merge.
pub(super) const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init.sql", include_str!("../migrations/postgres/0001_init.sql")),
    ("0002_nodes.sql", include_str!("../migrations/postgres/0002_nodes.sql")),
    ("0003_claims.sql", include_str!("../migrations/postgres/0003_claims.sql")),
];

/// The advisory lock the migrations hold (any fixed number: "gatherd").
const MIGRATION_LOCK: i64 = 0x0067_6174_6865_7264;

/// How long a new connection may take, all of it (TCP, TLS, the start-up
/// exchange and the password), unless the URL sets `connect_timeout`: an
/// address that takes the connection and never answers (a wrong port, a
/// proxy with nothing behind it) is an error at start, not a hang.
pub(crate) const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// Data sent and not acknowledged for this long closes the connection
/// (Linux's `TCP_USER_TIMEOUT`), unless the URL sets `tcp_user_timeout`: a
/// network cut between a node and the database is noticed in seconds, not
/// after the kernel's ~15 minutes of retransmissions.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// A store URL read and checked: the driver's config and the URL to show
/// (its password hidden).
#[derive(Clone)]
pub(crate) struct Target {
    pub(super) config: Config,
    pub(super) shown: String,
    /// TLS per the URL's `sslmode`/`sslrootcert` (`tls.rs`).
    pub(super) tls: MakeRustls,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Target {
    /// Reads a `postgres://` URL (or a `key=value` connection string).
    pub(crate) fn parse(url: &str) -> Result<Target, StoreError> {
        let not_a_url = |e: String| StoreError::Connect {
            url: "the store URL".into(),
            reason: format!("it is not a PostgreSQL URL ({e}); expected postgres://USER:PASSWORD@HOST:PORT/DATABASE"),
        };
        let (rest, settings) = split_tls(url).map_err(not_a_url)?;
        let mut config = Config::from_str(&rest).map_err(|e| not_a_url(e.to_string()))?;
        let shown = shown(&config);
        config.ssl_mode(settings.mode.driver());
        let tls = MakeRustls::new(&settings).map_err(|reason| StoreError::Connect { url: shown.clone(), reason })?;
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        Ok(Target { config, shown, tls })
    }

    /// The limit of one connection's whole set-up (see [`CONNECT_LIMIT`]).
    pub(super) fn connect_limit(&self) -> Duration {
        self.config.get_connect_timeout().copied().unwrap_or(CONNECT_LIMIT)
    }

    /// Connects one client; its connection runs as a task of the current
    /// runtime until the client is dropped.
    pub(super) async fn connect(&self) -> Result<Client, StoreError> {
        let limit = self.connect_limit();
        let (client, connection) = tokio::time::timeout(limit, self.config.connect(self.tls.clone()))
            .await
            .map_err(|_| StoreError::Connect {
                url: self.shown.clone(),
                reason: format!(
                    "no answer within {} s (is it a PostgreSQL server? set connect_timeout=SECONDS in the URL to \
                     wait longer)",
                    limit.as_secs()
                ),
            })?
            .map_err(|e| StoreError::Connect { url: self.shown.clone(), reason: postgres_reason(&e) })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("a connection to the run history ended: {}", postgres_reason(&e));
            }
        });
        Ok(client)
    }
}

/// `postgres://user@host:port/db`: what a message may show of a URL.
fn shown(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or(config.get_user().unwrap_or(""))
    )
}

/// Applies the migrations the database lacks; refuses a database newer than
/// this binary.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let fail = StoreError::postgres;
    let tx = client.transaction().await.map_err(fail("begin the migrations"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(fail("lock the schema"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
         applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .map_err(fail("create schema_version"))?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_version", &[])
        .await
        .and_then(|rows| rows.iter().map(|r| r.try_get(0)).collect())
        .map_err(fail("read the schema version"))?;
    let found = applied.iter().copied().max().unwrap_or(0);
    let known = MIGRATIONS.iter().map(|(name, _)| version_of(name)).max().unwrap_or(0);
    if found > known {
        return Err(StoreError::TooNew { found: found.unsigned_abs(), known: known.unsigned_abs() });
    }
    for (name, sql) in MIGRATIONS.iter().filter(|(name, _)| !applied.contains(&version_of(name))) {
        let version = version_of(name);
        tx.batch_execute(sql).await.map_err(|source| StoreError::MigratePostgres { version, name, source })?;
        tx.execute("INSERT INTO schema_version (version, name) VALUES ($1, $2)", &[&version, name])
            .await
            .map_err(|source| StoreError::MigratePostgres { version, name, source })?;
    }
    tx.commit().await.map_err(fail("commit the migrations"))
}

/// The version of a migration: the number its file name starts with
/// (`0003_claims.sql` is 3).
fn version_of(name: &str) -> i32 {
    let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().expect("a migration's file name starts with its version")
}
