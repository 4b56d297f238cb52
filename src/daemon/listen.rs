//! Where the control API listens: always the unix socket `STATE/gatherd.sock`
//! (mode 0660: the daemon's user and group), and a TCP listener only when
//! `api_listen` (or `--api-listen`) asks for one — never without a token.
//! Also the open-files limit, raised before anything is opened.

use std::sync::Arc;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use super::Options;
use crate::api::{self, ApiConfig, Control, Metrics, SharedToken};
use crate::store::RunStore;

/// The API's listeners, bound.
pub(super) struct Listeners {
    /// The unix socket, and its path.
    pub unix: (tokio::net::UnixListener, std::path::PathBuf),
    /// The TCP listener and its real address, when asked for.
    pub tcp: Option<(tokio::net::TcpListener, std::net::SocketAddr)>,
    /// The TCP listener's token (none without one), replaced on SIGHUP.
    pub token: SharedToken,
}

/// Binds the socket and, when configured, the TCP listener with its token
/// (creating the token file at the first start).
pub(super) async fn bind(opts: &Options) -> anyhow::Result<Listeners> {
    let socket = opts.state.join(api::SOCKET_FILE);
    // File system work (mkdir, chmod, rename) off the runtime's threads; the
    // blocking pool's threads are in the runtime, so the listener registers.
    let path = socket.clone();
    let unix = tokio::task::spawn_blocking(move || api::bind_socket(&path))
        .await
        .context("binding the control API's socket")?
        .with_context(|| format!("cannot make the control API's socket {}", socket.display()))?;
    tracing::info!(socket = %socket.display(), "control API listening");
    let token = SharedToken::default();
    let Some(listen) = opts.api_listen.or(opts.config.api_listen) else {
        return Ok(Listeners { unix: (unix, socket), tcp: None, token });
    };
    if opts.config.api_token.is_none() {
        let Some(file) = opts.config.api_token_file(&opts.state) else {
            bail!(
                "the control API's TCP listener (api_listen {listen}) needs a token: set api_token_file \
                 in the config (gatherd creates the file at its first start, readable by its group) or \
                 api_token; the CLI on this machine needs neither, it uses the socket {}",
                socket.display()
            );
        };
        tokio::task::spawn_blocking(move || {
            if !file.exists() {
                api::create_token_file(&file)
                    .with_context(|| format!("cannot create the API token file {} (api_token_file)", file.display()))?;
                tracing::info!(file = %file.display(), "created the API token file");
            }
            anyhow::Ok(())
        })
        .await
        .context("creating the API token file")??;
    }
    let (config, state) = (opts.config.clone(), opts.state.clone());
    let secret = tokio::task::spawn_blocking(move || config.api_token(&state))
        .await
        .context("reading the API token")?
        .map_err(anyhow::Error::msg)?;
    token.set(secret);
    api::require_token(listen, token.get().as_deref()).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for the control API (api_listen)"))?;
    let addr = listener.local_addr().context("the control API's address")?;
    tracing::info!(addr = %addr, "control API listening");
    Ok(Listeners { unix: (unix, socket), tcp: Some((listener, addr)), token })
}

/// Serves the API on every listener until `stop`; the first error ends it.
pub(super) async fn serve(
    listeners: Listeners,
    hosts: Vec<String>,
    control: Arc<dyn Control>,
    store: Arc<dyn RunStore>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let config = ApiConfig { token: listeners.token, hosts, ..ApiConfig::default() };
    let (socket, path) = listeners.unix;
    let serve = |listener: api::Listener| {
        api::serve(listener, config.clone(), control.clone(), store.clone(), metrics.clone(), stop.clone())
    };
    let on_socket = serve(socket.into());
    let served = match listeners.tcp {
        Some((listener, _)) => {
            let (a, b) = tokio::join!(on_socket, serve(listener.into()));
            a.and(b)
        }
        None => on_socket.await,
    };
    // Still under the state folder's lock: the socket is ours to remove, so
    // a CLI finds no socket rather than one nobody answers.
    if let Err(e) = tokio::fs::remove_file(&path).await {
        tracing::debug!(socket = %path.display(), error = %e, "cannot remove the control API's socket");
    }
    served
}

/// Raises the soft limit of open files to the hard one, as systemd advises
/// daemons that need many (API connections, step processes' pipes, the
/// watcher): the soft default of 1024 is for programs that still use
/// `select()`, so every step's process gets the limit as it was (remembered
/// here, put back in the child by `exec`). Logged at debug; a failure only
/// at warn.
pub(super) fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    crate::exec::step::remember_open_files_limit();
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open files limit"),
            Err(e) => tracing::warn!(limit = soft, error = %e, "cannot raise the open files limit"),
        },
        Ok((soft, _)) => tracing::debug!(limit = soft, "the open files limit is already the hard limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read the open files limit"),
    }
}
