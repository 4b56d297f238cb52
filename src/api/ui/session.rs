//! Dashboard sessions: the token, given once to the login form, becomes a
//! random session id in an `HttpOnly; SameSite=Strict` cookie; and the CSRF
//! rule of the dashboard's forms.
//!
//! Sessions live in memory only (a restart logs everyone out), each with an
//! expiry ([`SESSION_TTL`]) and the SHA-256 of the token it was opened
//! with: when the daemon's token changes (SIGHUP with a new one) every
//! session opened with the old one stops working at once, as the old
//! bearer token does. At most [`MAX_SESSIONS`] are kept (the oldest goes).
//!
//! CSRF: a dashboard `POST` needs an `Origin` (or, without one, a
//! `Referer`) naming the request's own `Host`, and a hidden `csrf` field
//! equal to its session's token (a random value per session; without
//! sessions — the unix socket, no token — one random value per listener).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::super::AppState;
use super::{html_response, layout};

/// The session cookie's name.
pub const COOKIE: &str = "gatherd_session";

/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The most sessions kept at once; a new login past it ends the oldest.
pub const MAX_SESSIONS: usize = 1024;

/// One logged-in browser.
#[derive(Clone)]
struct Session {
    /// SHA-256 of the token it logged in with.
    token: [u8; 32],
    expires: Instant,
    csrf: String,
}

/// The sessions of one listener, and the CSRF value of requests without one.
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    /// The CSRF value for requests that need no session.
    anonymous_csrf: String,
}

impl Sessions {
    /// No sessions yet.
    pub fn new() -> Sessions {
        Sessions { open: Mutex::new(HashMap::new()), anonymous_csrf: random_hex() }
    }

    /// Opens a session for `token` (already checked): its id and CSRF value.
    fn open(&self, token: &str) -> (String, String) {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        open.retain(|_, s| s.expires > now);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().min_by_key(|(_, s)| s.expires).map(|(id, _)| id.clone())
        {
            open.remove(&oldest);
        }
        let (id, csrf) = (random_hex(), random_hex());
        open.insert(id.clone(), Session { token: digest(token), expires: now + SESSION_TTL, csrf: csrf.clone() });
        (id, csrf)
    }

    /// The CSRF value of the live session `id` opened with `token` (the
    /// current one); `None`, and the session forgotten, if it expired or
    /// was opened with another token.
    fn check(&self, id: &str, token: &str) -> Option<String> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let session = open.get(id)?;
        if session.expires > Instant::now() && session.token == digest(token) {
            return Some(session.csrf.clone());
        }
        open.remove(id);
        None
    }

    fn close(&self, id: &str) {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
    }
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::new()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// 32 random bytes as hex, from the kernel's generator.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    // The kernel's generator does not fail on Linux once booted; if it ever
    // did, a value from the clock and the address space is still unique,
    // and a session id must never be a constant.
    if getrandom::fill(&mut bytes).is_err() {
        let fallback = format!("{:?}{:p}", std::time::SystemTime::now(), &bytes);
        bytes = Sha256::digest(fallback.as_bytes()).into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session id in a request's `Cookie` headers.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// What a request may do, as the gate saw it.
pub(in crate::api) enum Access {
    /// No credentials needed here (the unix socket, no token configured).
    Open,
    /// A live session: its CSRF value.
    Session(String),
    /// Neither: the login form.
    Denied,
}

/// Whether a request's cookie opens a live session for `token` (the
/// current one; `None`: nothing to log in to).
pub(in crate::api) fn access(state: &AppState, headers: &HeaderMap) -> Access {
    if state.unix {
        return Access::Open;
    }
    state.config.token.with(|token| match token {
        None => Access::Open,
        Some(token) => match cookie(headers).and_then(|id| state.sessions.check(id, token)) {
            Some(csrf) => Access::Session(csrf),
            None => Access::Denied,
        },
    })
}

/// The CSRF value a form rendered for this request carries.
pub(super) fn csrf_for(state: &AppState, headers: &HeaderMap) -> String {
    match access(state, headers) {
        Access::Session(csrf) => csrf,
        Access::Open | Access::Denied => state.sessions.anonymous_csrf.clone(),
    }
}

/// Whether the page shows "Log out" (there is a session to end).
pub(super) fn logged_in(state: &AppState, headers: &HeaderMap) -> bool {
    matches!(access(state, headers), Access::Session(_))
}

/// The CSRF check of a dashboard `POST`: the `Origin` (else the `Referer`)
/// must name the request's `Host`, and `given` must be the CSRF value of
/// its session (or the listener's, without one). `Err` is the 403 page.
pub(super) fn check_csrf(state: &AppState, headers: &HeaderMap, given: Option<&str>) -> Result<(), Refused> {
    same_origin(headers)?;
    let expected = csrf_for(state, headers);
    match given {
        Some(given) if super::super::auth::same(given.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(forbidden("the form's CSRF token is missing or stale: reload the page and try again")),
    }
}

/// The `Origin` (else `Referer`) names the request's own `Host`.
fn same_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .filter(|v| *v != "null");
    let Some(source) = source else {
        return Err(forbidden("a form must come from this dashboard's own page (no Origin or Referer was sent)"));
    };
    let source_host = source.split_once("://").map(|(_, rest)| rest.split('/').next().unwrap_or(rest));
    match (source_host, host) {
        (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => Ok(()),
        _ => Err(forbidden(&format!("a form from `{source}` is refused: it is not this dashboard's page"))),
    }
}

fn forbidden(why: &str) -> Refused {
    Refused(why.to_string())
}

/// A form refused by the CSRF rule: why, answered as a 403 page.
pub(super) struct Refused(String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = html! {
            h1 { "403 Forbidden" }
            p.error role="alert" { (self.0) }
            p { a href="/ui/" { "Back to the jobs" } }
        };
        html_response(StatusCode::FORBIDDEN, layout("Forbidden", None, body))
    }
}

/// `GET /ui/login`: the token form.
pub(super) async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let open = matches!(access(&state, &headers), Access::Open);
    html_response(StatusCode::OK, login_form(open, None))
}

fn login_form(open: bool, error: Option<&str>) -> maud::Markup {
    let body = html! {
        h1 { "Log in" }
        @if open {
            p { "This listener needs no token: " a href="/ui/" { "go to the jobs" } "." }
        } @else {
            p { "Paste the daemon's API token (" code { "api_token_file" } ", e.g. "
                code { "cat /var/lib/gatherd/api-token" } ")." }
        }
        @if let Some(error) = error {
            p.error role="alert" id="login-error" { (error) }
        }
        form #login method="post" action="/ui/login" {
            label for="token" { "Token" }
            input #token type="password" name="token" autocomplete="current-password" required autofocus;
            button type="submit" { "Log in" }
        }
    };
    layout("Log in", None, body)
}

/// The login form's fields.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /ui/login`: the right token opens a session (cookie, 303 to the
/// jobs); a wrong one is a 401 page, and no cookie.
pub(super) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Err(refused) = same_origin(&headers) {
        return refused.into_response();
    }
    let given = form.ok().map(|Form(f)| f.token).unwrap_or_default();
    let given = given.trim();
    let Some(token) = state.config.token.get() else {
        return axum::response::Redirect::to("/ui/").into_response();
    };
    if given.is_empty() || !super::super::auth::same(given.as_bytes(), token.as_bytes()) {
        let why = if given.is_empty() { "Enter the token." } else { "Wrong token: it is not this daemon's API token." };
        return html_response(StatusCode::UNAUTHORIZED, login_form(false, Some(why)));
    }
    let (id, _) = state.sessions.open(&token);
    let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}", SESSION_TTL.as_secs());
    let mut response = axum::response::Redirect::to("/ui/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The logout form's field.
#[derive(Deserialize)]
pub(super) struct CsrfForm {
    csrf: Option<String>,
}

/// `POST /ui/logout`: ends the session, clears the cookie.
pub(super) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let given = form.ok().and_then(|Form(f)| f.csrf);
    if let Err(refused) = check_csrf(&state, &headers, given.as_deref()) {
        return refused.into_response();
    }
    if let Some(id) = cookie(&headers) {
        state.sessions.close(id);
    }
    let mut response = axum::response::Redirect::to("/ui/login").into_response();
    let clear = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_session_ends_at_its_expiry_with_a_new_token_and_the_oldest_goes_past_the_cap() {
        let sessions = Sessions::new();
        let (id, csrf) = sessions.open("tok");
        assert_eq!(id.len(), 64, "256 random bits as hex");
        assert_ne!(id, csrf);
        assert_eq!(sessions.check(&id, "tok"), Some(csrf.clone()));
        assert_eq!(sessions.check(&id, "other"), None, "another token ends it");
        assert_eq!(sessions.check(&id, "tok"), None, "and it stays ended");

        let (id, csrf) = sessions.open("tok");
        tokio::time::advance(SESSION_TTL - Duration::from_secs(1)).await;
        assert_eq!(sessions.check(&id, "tok"), Some(csrf));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(sessions.check(&id, "tok"), None, "expired");

        let first = sessions.open("tok").0;
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..MAX_SESSIONS {
            sessions.open("tok");
        }
        assert_eq!(sessions.open.lock().unwrap().len(), MAX_SESSIONS);
        assert_eq!(sessions.check(&first, "tok"), None, "the oldest went");
    }
}
