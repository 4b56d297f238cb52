//! The local HTTP API of a running daemon (axum): health, jobs, runs,
//! trigger, cancel, the live events of a run (server-sent events) and
//! Prometheus metrics.
//!
//! The API is a thin projection: what the daemon knows now comes from
//! [`Control`] (the job table, runs in flight, their live events), what
//! happened comes from the [`RunStore`]. A stored run is served in the shape of
//! `gatherd run --json` ([`RunDetail::document`](crate::store::RunDetail::document)),
//! so a client needs one parser for both.
//!
//! ## Routes
//! | route | answer |
//! | --- | --- |
//! | `GET /healthz` | `{"status":"ok"}` |
//! | `GET /metrics` | [`Metrics::render`], OpenMetrics text |
//! | `GET /jobs` | `{"jobs": [JobView + last_run]}` |
//! | `GET /jobs/{job}` | one job + `last_run` (404 if unknown) |
//! | `POST /jobs/{job}/trigger`, `POST /trigger/{job}` | at once: 201 `{"run_id": N, "status": "running", "events": "/runs/N/events?from=0"}`, or 202 with `"status": "queued"` when it waits for a slot or its semaphore |
//! | `POST /jobs/{job}/pause`, `POST /jobs/{job}/resume` | 200 `{"job": J, "paused": B}` once saved (404 unknown job, 503 not saved) |
//! | `GET /runs?job=&status=&limit=&before=` | `{"runs": [...], "next_before": id or null}` |
//! | `GET /runs/{id}` | the run as `gatherd show --json` |
//! | `POST /runs/{id}/cancel` | 202 `{"run_id": N, "cancelling": true}` |
//! | `GET /runs/{id}/events[?from=N]` | server-sent events (`id:`, `Last-Event-ID`), see [`events`] |
//! | `GET /runs/{id}/logs[?step=&after=SEQ]` | the run's lines as JSON lines (`application/x-ndjson`), see `logs` |
//! | `GET /notifications[?job=&run_id=&limit=]` | `{"notifications": [...]}`, newest first, each with its delivery |
//! | `GET /` (303 to `/ui/`), `/ui/...` | the dashboard: HTML pages and their forms, see `ui` |
//!
//! Job ids contain `/` (subfolders), so `{job}` is a catch-all: matchit (axum's
//! router) allows a catch-all only at the end of a route, hence
//! `POST /jobs/{*rest}` strips a final `/trigger` itself; `POST /trigger/{*job}`
//! is the same without the parsing. A job whose own name ends in `/trigger`
//! cannot exist (job files end in `.toml` or `.rhai`).
//!
//! Architecture Invariant: every answer that is not a success is JSON
//! `{"error": "..."}` with a status that says why (see [`ApiError`]); the API
//! never changes a job or a run except through [`Control`].
//!
//! Architecture Invariant: the API listens on a unix socket (mode 0660, so
//! the file system says who may connect: the daemon's user and group) and,
//! only when asked to, on TCP — where every route needs the token (the
//! daemon opens no TCP listener without one, [`require_token`]; [`serve`]
//! itself refuses a non-loopback one without, [`check`]). Over the socket no
//! token is asked for: whoever can connect could read the token file anyway.
//!
//! Architecture Invariant: over TCP, no route answers a `Host` that is not
//! the API's (listen address, `localhost`, `api_hosts`), and no state change
//! is made for a request whose `Origin` is foreign: a web page the user
//! visits can neither drive the loopback API nor, re-bound by DNS, read it.
//! (A browser cannot reach a unix socket; a proxy in front of one still
//! meets the `Origin` rule.)

mod auth;
mod conn;
pub mod control;
mod error;
pub mod events;
mod jobs;
mod logs;
mod metrics;
mod runs;
mod token;
mod ui;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

pub use self::conn::{Listener, bind_socket};
pub use self::control::{Control, ControlError, JobDetail, JobView, SOURCE_LIMIT, Started};
pub use self::error::ApiError;
pub use self::metrics::Metrics;
pub use self::token::{create_token_file, read_token_file, valid_token};
use crate::store::RunStore;

/// The unix socket's name in the state folder: where the daemon listens and
/// the CLI connects by default.
pub const SOCKET_FILE: &str = "gatherd.sock";

/// An address for a TCP listener (`api_listen` has no default: TCP is opt-in).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 7327));

/// The default body limit: the API's requests carry no bodies worth more.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// How the API listens and whom it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// The address to bind (the daemon binds it; [`serve`] takes the listener).
    pub listen: SocketAddr,
    /// With a token, every request needs `Authorization: Bearer TOKEN`.
    /// Shared with the daemon, which sets a new one on reload (SIGHUP).
    pub token: SharedToken,
    /// The largest request body accepted, in bytes (413 beyond).
    pub max_body: usize,
    /// Host names a request's `Host` (any port) may carry besides the listen
    /// address and `localhost:PORT` (`api_hosts`): a name a proxy or DNS
    /// gives the daemon. See `auth::guard_origin`.
    pub hosts: Vec<String>,
    /// A connection that reads and writes nothing this long is closed
    /// (a stalled header, an idle keep-alive): [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: std::time::Duration,
    /// Connections served at once; more wait in the kernel's backlog:
    /// [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// A request whose head (request line and headers) has not fully
    /// arrived this long after the connection began to wait for it is
    /// answered by closing the connection: [`DEFAULT_HEADER_TIMEOUT`].
    pub header_timeout: std::time::Duration,
}

/// The default of [`ApiConfig::header_timeout`]: a request head is a few
/// hundred bytes, so 10 s is slow networks' worth, not a trickling client's.
pub const DEFAULT_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The default of [`ApiConfig::idle_timeout`]: above SSE's 15 s keep-alive.
pub const DEFAULT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The default of [`ApiConfig::max_connections`]: far below the default
/// limit of 1024 open files, so the watcher and the store keep theirs.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            listen: DEFAULT_LISTEN,
            token: SharedToken::default(),
            max_body: DEFAULT_MAX_BODY,
            hosts: Vec::new(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// The API's token (or none), shared between the API, which reads it on
/// every request, and the daemon, which replaces it when its config is
/// reloaded: a revoked token stops working at once. Its `Debug` never shows
/// the value.
#[derive(Clone, Default)]
pub struct SharedToken(Arc<std::sync::RwLock<Option<String>>>);

impl SharedToken {
    /// A token shared from now on.
    pub fn new(token: Option<String>) -> SharedToken {
        SharedToken(Arc::new(std::sync::RwLock::new(token)))
    }

    /// The current token.
    pub fn get(&self) -> Option<String> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces the token; the next request needs the new one.
    pub fn set(&self, token: Option<String>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = token;
    }

    /// Runs `f` on the current token without copying it.
    fn with<T>(&self, f: impl FnOnce(Option<&str>) -> T) -> T {
        f(self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).as_deref())
    }
}

impl std::fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.with(|t| t.is_some()) { "SharedToken(set)" } else { "SharedToken(none)" })
    }
}

impl PartialEq for SharedToken {
    fn eq(&self, other: &SharedToken) -> bool {
        self.get() == other.get()
    }
}

impl Eq for SharedToken {}

/// Refuses a configuration that would let anyone on the network steer the
/// daemon: a non-loopback address without a (non-empty) token. [`serve`]'s
/// safety net for embedders, who may serve loopback without one (tests,
/// tools); the daemon asks more, [`require_token`].
pub fn check(config: &ApiConfig) -> Result<(), String> {
    tcp_rule(config.listen, config.token.get().as_deref(), Loopback::Open)
}

/// The daemon's rule: a TCP listener, loopback or not, needs a token (any
/// local user can reach loopback, and so can web pages the user opens).
pub fn require_token(listen: SocketAddr, token: Option<&str>) -> Result<(), String> {
    tcp_rule(listen, token, Loopback::NeedsToken)
}

/// Whether a TCP listener on loopback may go without a token.
#[derive(Clone, Copy)]
enum Loopback {
    /// Yes: [`check`], for embedders.
    Open,
    /// No: [`require_token`], the daemon's.
    NeedsToken,
}

/// The one rule behind [`check`] and [`require_token`]: TCP with a
/// (non-empty) token is fine; without one, only loopback and only if
/// `loopback` allows it. The message says what to set.
fn tcp_rule(listen: SocketAddr, token: Option<&str>, loopback: Loopback) -> Result<(), String> {
    if token.is_some_and(|t| !t.is_empty()) {
        return Ok(());
    }
    match loopback {
        Loopback::Open if listen.ip().to_canonical().is_loopback() => Ok(()),
        Loopback::Open => {
            Err(format!("the API listens on {listen}, which is not loopback: set api_token (or listen on 127.0.0.1)"))
        }
        Loopback::NeedsToken => Err(format!(
            "the control API listens on TCP at {listen}, which needs a token (api_token_file or api_token)"
        )),
    }
}

/// What every handler shares.
#[derive(Clone)]
struct AppState {
    config: Arc<ApiConfig>,
    control: Arc<dyn Control>,
    store: Arc<dyn RunStore>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    /// Whether this is the unix socket's router (no token, no `Host` rule).
    unix: bool,
    /// The dashboard's login sessions on this listener.
    sessions: Arc<ui::session::Sessions>,
}

/// Serves the API on `listener` (TCP, or the unix socket) until `shutdown`
/// is cancelled, then lets the requests in progress finish (event streams
/// end at once) and returns.
///
/// Takes a bound listener so the caller can bind port 0 and log the real
/// address. Checks a TCP listener's real address with [`check`] first.
pub async fn serve(
    listener: impl Into<Listener>,
    config: ApiConfig,
    control: Arc<dyn Control>,
    store: Arc<dyn RunStore>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = listener.into();
    let (config, unix) = match &listener {
        Listener::Tcp(tcp) => {
            let listen = tcp.local_addr()?;
            tcp_rule(listen, config.token.get().as_deref(), Loopback::Open)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            // The real address (port 0 is bound by now): requests name it in `Host`.
            (ApiConfig { listen, ..config }, false)
        }
        Listener::Unix(_) => (config, true),
    };
    let header_timeout = config.header_timeout;
    let sessions = Arc::new(ui::session::Sessions::new());
    let state =
        AppState { config: Arc::new(config), control, store, metrics, shutdown: shutdown.clone(), unix, sessions };
    let listener = conn::Guarded::new(listener, state.config.max_connections, state.config.idle_timeout);
    conn::serve(listener, router(state), header_timeout, shutdown).await;
    Ok(())
}

fn router(state: AppState) -> Router {
    let max_body = state.config.max_body;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::serve_metrics))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{*rest}", get(jobs::show).post(jobs::trigger_suffix))
        .route("/trigger/{*job}", post(jobs::trigger))
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(runs::show))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/runs/{id}/events", get(events::stream))
        .route("/runs/{id}/logs", get(logs::lines))
        .route("/notifications", get(runs::notifications))
        .merge(ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::limit_body))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::guard_origin))
        .with_state(state)
}

/// `GET /healthz`: 200 `{"status":"ok"}`, or 503 `{"status":"degraded",
/// "problems":[{"what","why"}]}` while the daemon cannot do all its work
/// (its jobs folder is gone, its history could not vouch for one-shots).
async fn healthz(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let problems = state.metrics.problems();
    if problems.is_empty() {
        return axum::Json(serde_json::json!({"status": "ok"})).into_response();
    }
    let problems: Vec<_> =
        problems.into_iter().map(|(what, why)| serde_json::json!({"what": what, "why": why})).collect();
    let body = serde_json::json!({"status": "degraded", "problems": problems});
    (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}
