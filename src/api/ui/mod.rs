//! The dashboard: server-rendered HTML pages under `/ui/` on the API's
//! listeners (issue 17). Jobs (`jobs.rs`), one job (`job.rs`), the runs
//! (`runs.rs`), one run (`run.rs`, its SVG timeline in `timeline.rs`), the
//! login form and sessions (`session.rs`), the embedded CSS and JavaScript
//! (`assets.rs`, `assets/`) and a small highlighter for job files
//! (`highlight.rs`).
//!
//! Templates are maud's `html!`: checked when gatherd is compiled, and every
//! value interpolated is escaped (`PreEscaped` is used only for the
//! highlighter's own spans, whose text is escaped by it). The pages read
//! read-only without JavaScript; the script only follows a running run live
//! (the API's own `/runs/{id}/events` stream) and folds the timeline's groups.
//!
//! Architecture Invariant: the pages take their data where the JSON API
//! does — [`Control`](super::Control) for what the daemon knows now, the
//! [`RunStore`](crate::store::RunStore) for what happened — and change
//! nothing except through `Control`.
//!
//! Architecture Invariant: every page answer carries [`CSP`], `nosniff` and
//! `Referrer-Policy: same-origin` ([`secure_headers`]); no markup of ours
//! needs an inline script or style attribute.

mod assets;
mod highlight;
mod job;
mod jobs;
mod run;
mod runs;
pub(super) mod session;
mod timeline;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::{ApiError, AppState};

/// The Content-Security-Policy of every page: nothing but our own origin,
/// no inline script or style, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The dashboard's routes (the API's gates apply to them, see `auth`).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(jobs::page))
        .route("/ui/jobs/{*rest}", get(job::page).post(job::action))
        .route("/ui/runs", get(runs::page))
        .route("/ui/runs/{id}", get(run::page))
        .route("/ui/runs/{id}/cancel", axum::routing::post(run::cancel))
        .route("/ui/assets/{name}", get(assets::serve))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", axum::routing::post(session::logout))
        .layer(axum::middleware::from_fn(secure_headers))
}

/// Whether `path` is the dashboard's (its pages answer HTML and redirect to
/// the login form rather than answering 401 JSON).
pub(super) fn is_ui(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// Adds the security headers to every answer of the dashboard.
async fn secure_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The frame of every page: head with our stylesheet and script, the
/// navigation, the page's own content.
fn layout(title: &str, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · gatherd" }
                link rel="stylesheet" href=(assets::css_url());
                script src=(assets::js_url()) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/ui/" { "gatherd" }
                        a href="/ui/" { "Jobs" }
                        a href="/ui/runs" { "Runs" }
                        @if let Some(csrf) = csrf {
                            form.logout method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// A rendered page.
/// Appends `text` to `out` escaped as maud escapes the pages' text (`&`,
/// `<`, `>`, `"`): for the markup built by hand (the highlighter, the SVG
/// timeline), so everything a page shows is escaped one way.
fn escape_into(out: &mut String, text: &str) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = maud::Escaper::new(out).write_str(text);
}

fn html_response(status: StatusCode, markup: Markup) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], markup.into_string()).into_response()
}

/// A page's failure, answered as an HTML page with the API's status.
struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        PageError(e)
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(e: crate::store::StoreError) -> PageError {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(error = %self.0, "dashboard request failed");
        }
        let title = status.canonical_reason().unwrap_or("Error");
        let body = html! {
            h1 { (status.as_u16()) " " (title) }
            p.error role="alert" { (self.0.to_string()) }
            p { a href="/ui/" { "Back to the jobs" } }
        };
        html_response(status, layout(title, None, body))
    }
}

/// `t` as people read it: in `zone` (an IANA name) when given, else in the
/// daemon's local zone, with the zone's abbreviation or offset.
fn local_time(t: DateTime<Utc>, zone: Option<&str>) -> String {
    if let Some(tz) = zone.and_then(|z| z.parse::<chrono_tz::Tz>().ok()) {
        return t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z").to_string();
    }
    t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S %:z").to_string()
}

/// How far `t` is from `now`: "in 5 min", "3 h ago", "now".
fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (t - now).num_seconds();
    let amount = seconds.unsigned_abs();
    let text = match amount {
        0..=4 => return "now".to_string(),
        5..=59 => format!("{amount} s"),
        60..=3599 => format!("{} min", amount / 60),
        3600..=86_399 => format!("{} h", amount / 3600),
        _ => format!("{} d", amount / 86_400),
    };
    if seconds > 0 { format!("in {text}") } else { format!("{text} ago") }
}

/// A `<time>` element: the instant in UTC for machines, local for people,
/// and how far from now.
fn time_cell(t: DateTime<Utc>, zone: Option<&str>, now: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) {
            (local_time(t, zone))
        }
        " "
        span.rel { "(" (relative(t, now)) ")" }
    }
}

/// A duration in ms as `1.2 s`, `3 min 4 s`, `250 ms`.
fn duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// A job's page URL (`/` kept, everything else that needs it encoded).
fn job_url(job: &str) -> String {
    format!("/ui/jobs/{}", encode_path(job))
}

/// Percent-encodes a path, keeping `/` and the unreserved characters.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a query value.
fn encode_query(value: &str) -> String {
    encode_path(value).replace('/', "%2F")
}

#[cfg(test)]
mod tests;
