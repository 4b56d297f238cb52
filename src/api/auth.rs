//! The gates every request passes: its `Host` and `Origin`, the bearer
//! token, then the body limit.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiConfig, ApiError, AppState};

/// Answers 403 to a request whose `Host` is not this API's (DNS rebinding:
/// a page at `evil.example`, re-pointed to 127.0.0.1, reads the API as its
/// own origin), and to a state change (any method but GET, HEAD, OPTIONS,
/// TRACE) whose `Origin` is not this API's (a web page's cross-site POST; a
/// `text/plain` one needs no preflight). The CLI and curl send no `Origin`.
///
/// This API's hosts: the listen address itself (with an unspecified address,
/// any IP literal: an IP cannot be re-bound), `localhost`, both with the listen
/// port, and the names of `api_hosts` with any port (a proxy's).
///
/// On the unix socket any `Host` is fine (no browser reaches a socket, so
/// nothing can be re-bound), and an `Origin` must name the request's own
/// `Host` or a name of `api_hosts` (a proxy in front of the socket).
pub(super) async fn guard_origin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    match host {
        _ if state.unix => {}
        Some(host) if ours(&state.config, host) => {}
        Some(host) => {
            return ApiError::Forbidden(format!(
                "the Host `{host}` is not this API's address (add the name to api_hosts if it is)"
            ))
            .into_response();
        }
        None => return ApiError::Forbidden("a request needs a Host header".into()).into_response(),
    }
    if !request.method().is_safe()
        && let Some(origin) = request.headers().get(header::ORIGIN)
    {
        let text = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        let same_host = |origin: &str| {
            let name = split_host(origin).0;
            host.is_some_and(|host| split_host(host).0.eq_ignore_ascii_case(name))
                || state.config.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
        };
        let fine = origin_host(&text)
            .is_some_and(|origin| if state.unix { same_host(&origin) } else { ours(&state.config, &origin) });
        if !fine {
            return ApiError::Forbidden(format!(
                "a state change from the web page at Origin `{text}` is refused (add its host to api_hosts if it is this API)"
            ))
            .into_response();
        }
    }
    next.run(request).await
}

/// Whether `host` (`name[:port]`, `[v6][:port]`) names this API.
fn ours(config: &ApiConfig, host: &str) -> bool {
    let (name, port) = split_host(host);
    if config.hosts.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        return true;
    }
    if port != Some(config.listen.port()) {
        return false;
    }
    let listen = config.listen.ip().to_canonical();
    match name.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_canonical() == listen || listen.is_unspecified(),
        Err(_) => name.eq_ignore_ascii_case("localhost"),
    }
}

/// `host:port` → (`host`, port); an IPv6 literal keeps its brackets.
fn split_host(host: &str) -> (&str, Option<u16>) {
    let colon = if host.starts_with('[') {
        host.find(']').and_then(|end| host[end..].find(':').map(|c| end + c))
    } else {
        host.rfind(':')
    };
    match colon {
        Some(at) => (&host[..at], host[at + 1..].parse().ok()),
        None => (host, None),
    }
}

/// The `host:port` of an `Origin` (`scheme://host[:port]`), the port from
/// the scheme when it is not written; `None` for `null` and the like.
fn origin_host(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    if split_host(rest).1.is_some() {
        return Some(rest.to_string());
    }
    let port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    Some(format!("{rest}:{port}"))
}

/// With a token configured, answers 401 unless the request carries
/// `Authorization: Bearer TOKEN` (the scheme in any case). Not on the unix
/// socket, whose mode is the gate.
///
/// The dashboard (`/ui/...`) and the live events of a run (`GET
/// /runs/{id}/events`, which its run page follows) take a session cookie
/// instead (see `ui::session`); a dashboard page without either redirects
/// to the login form. The login form, the assets and `/` need neither.
/// The rest of the JSON API takes the bearer token only.
pub(super) async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.unix {
        return next.run(request).await;
    }
    let path = request.uri().path();
    let ui = super::ui::is_ui(path);
    if ui && (path == "/" || path == "/ui" || path == "/ui/login" || path.starts_with("/ui/assets/")) {
        return next.run(request).await;
    }
    let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
    let refused = state.config.token.with(|token| match (token, given) {
        (None, _) => None,
        (Some(_), None) => Some("missing `Authorization: Bearer <token>`"),
        (Some(token), Some(given)) if !same(given.trim().as_bytes(), token.as_bytes()) => Some("wrong token"),
        (Some(_), Some(_)) => None,
    });
    let Some(why) = refused else { return next.run(request).await };
    let events = request.method() == axum::http::Method::GET
        && path
            .strip_prefix("/runs/")
            .and_then(|rest| rest.strip_suffix("/events"))
            .is_some_and(|id| !id.contains('/'));
    if (ui || events)
        && matches!(super::ui::session::access(&state, request.headers()), super::ui::session::Access::Session(_))
    {
        return next.run(request).await;
    }
    if ui {
        return axum::response::Redirect::to("/ui/login").into_response();
    }
    ApiError::Unauthorized(why.into()).into_response()
}

/// The credentials of `Authorization: Bearer TOKEN`; the scheme is
/// case-insensitive (RFC 7235 §2.1), so `bearer TOKEN` counts too.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("Bearer").then_some(credentials)
}

/// Compares in time that depends on the lengths only, so the token cannot
/// be guessed byte by byte from response times.
pub(super) fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Answers 413 to a body larger than `max_body`: at once from its
/// `Content-Length`, else (chunked) once that many bytes have arrived. The
/// bodies the API takes are small, so buffering them costs nothing.
pub(super) async fn limit_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let max = state.config.max_body;
    let too_large = || ApiError::TooLarge(format!("the request body is larger than {max} bytes")).into_response();
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(bytes) => bytes,
        Err(_) => return too_large(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
