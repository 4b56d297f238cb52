//! `GET /ui/jobs/{job}`: one job — its source (highlighted), next fires,
//! history (paginated with the API's `before` cursor), and the trigger,
//! pause and resume forms (`POST /ui/jobs/{job}/trigger|pause|resume`).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::super::jobs::resolve;
use super::super::{ApiError, AppState, JobView};
use super::runs::{HistoryQuery, history_table};
use super::{PageError, html_response, job_url, layout, local_time, relative, session, time_cell};
use crate::job::JobFormat;

/// How many next fires the page lists.
pub(super) const NEXT_FIRES: usize = 5;

/// `GET /ui/jobs/{job}`.
pub(super) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(job): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let jobs = state.control.jobs().await;
    let id = resolve(&job, &jobs)?;
    let view = jobs.into_iter().find(|j| j.job == id).ok_or_else(|| ApiError::NotFound(format!("no job `{job}`")))?;
    let detail = state.control.job_detail(&view.job, NEXT_FIRES).await.unwrap_or_default();
    let csrf = session::csrf_for(&state, &headers);
    let now = Utc::now();
    let zone = view.timezone.as_deref();
    let back = job_url(&view.job);
    let history = history_table(&state, Some(view.job.clone()), query, &back, "history").await?;
    let format = JobFormat::of(std::path::Path::new(&view.job));
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" { a href="/ui/" { "Jobs" } " / " }
        h1 { (view.job) }
        (triggered_notice(&uri))
        @if view.paused {
            p #paused.badge.paused role="status" { "Paused: scheduled fires are recorded missed until resumed." }
        }
        dl.facts {
            dt { "Trigger" } dd { (view.trigger) }
            dt { "Next fire" } dd {
                @if let Some(next) = view.next_fire { (time_cell(next, zone, now)) } @else { "—" }
            }
            dt { "In flight" } dd {
                @if view.running.is_empty() && view.queued.is_empty() { "nothing" }
                @for id in &view.running { a href={ "/ui/runs/" (id) } { "#" (id) " running" } " " }
                @for id in &view.queued { a href={ "/ui/runs/" (id) } { "#" (id) " queued" } " " }
            }
            dt { "File" } dd {
                @if view.valid { "loads" } @else { span.badge.invalid { "invalid" } }
                @if !view.runnable { " (no valid version to run)" }
            }
        }
        (actions(&view, &csrf, &back))
        @if let Some(excerpt) = &detail.excerpt {
            section #invalid { h2 { "Why it does not load" } pre.diagnostic { (excerpt) } }
        }
        section {
            h2 { "Next fires" }
            @if detail.next_fires.is_empty() {
                p.muted { "Not scheduled." }
            } @else {
                ol #next-fires {
                    @for t in &detail.next_fires {
                        li { time datetime=(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) { (local_time(*t, zone)) }
                             " " span.rel { "(" (relative(*t, now)) ")" } }
                    }
                }
            }
        }
        section {
            h2 { "History" }
            (history)
        }
        section {
            h2 { "Source" }
            @match &detail.source {
                Some(source) => {
                    pre #source { code { (PreEscaped(super::highlight::highlight(source, format))) } }
                }
                None => p.muted { "The file's text is not kept (not UTF-8, refused, or larger than "
                    (crate::api::SOURCE_LIMIT / 1024) " KiB)." },
            }
        }
    };
    let title = view.job.clone();
    Ok(html_response(
        StatusCode::OK,
        layout(&title, session::logged_in(&state, &headers).then_some(csrf.as_str()), body),
    ))
}

/// "Run #N started" after a trigger form brought the browser back here.
/// The run's id comes from the redirect's `?triggered=N`.
pub(super) fn triggered_notice(uri: &axum::http::Uri) -> Markup {
    let id = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("triggered="))
        .and_then(|n| n.parse::<crate::store::RunId>().ok());
    html! {
        @if let Some(id) = id {
            p #notice role="status" { "Run " a #triggered-run href={ "/ui/runs/" (id) } { "#" (id) } " started." }
        }
    }
}

fn actions(view: &JobView, csrf: &str, back: &str) -> Markup {
    let base = job_url(&view.job);
    html! {
        div.actions {
            @if view.runnable {
                (button(&base, "trigger", "Trigger now", csrf, back))
            }
            @if view.paused {
                (button(&base, "resume", "Resume", csrf, back))
            } @else {
                (button(&base, "pause", "Pause", csrf, back))
            }
        }
    }
}

/// A one-button POST form to `{base}/{action}`.
pub(super) fn button(base: &str, action: &str, label: &str, csrf: &str, back: &str) -> Markup {
    html! {
        form.inline method="post" action={ (base) "/" (action) } {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="back" value=(back);
            button type="submit" data-action=(action) { (label) }
        }
    }
}

/// A state-changing form's fields.
#[derive(Debug, Deserialize)]
pub(super) struct ActionForm {
    pub(super) csrf: Option<String>,
    pub(super) back: Option<String>,
}

/// Where to go after a form: its `back` field when it is a dashboard path
/// (never another site), else `fallback`.
pub(super) fn back_to(back: Option<&str>, fallback: &str) -> String {
    match back {
        Some(back)
            if back.starts_with("/ui")
                && !back.contains("//")
                && !back.contains('\\')
                // A `Location` header holds visible ASCII only.
                && back.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            back.to_string()
        }
        _ => fallback.to_string(),
    }
}

/// `POST /ui/jobs/{job}/trigger|pause|resume`: CSRF-checked, then 303 back.
pub(super) async fn action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(rest): Path<String>,
    form: Result<Form<ActionForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, PageError> {
    let form = form.ok().map(|Form(f)| f);
    let (csrf, back) = form.map_or((None, None), |f| (f.csrf, f.back));
    if let Err(refused) = session::check_csrf(&state, &headers, csrf.as_deref()) {
        return Ok(refused.into_response());
    }
    let Some((job, verb)) = rest.rsplit_once('/') else {
        return Err(ApiError::NotFound(format!("no route POST /ui/jobs/{rest}")).into());
    };
    let jobs = state.control.jobs().await;
    let id = resolve(job, &jobs)?;
    let fallback = job_url(&id);
    match verb {
        "trigger" => {
            let started = state.control.trigger(&id).await.map_err(ApiError::from)?;
            let back = back_to(back.as_deref(), &fallback);
            let sep = if back.contains('?') { '&' } else { '?' };
            return Ok(Redirect::to(&format!("{back}{sep}triggered={}", started.run_id)).into_response());
        }
        "pause" | "resume" => state.control.pause(&id, verb == "pause").await.map_err(ApiError::from)?,
        _ => return Err(ApiError::NotFound(format!("no route POST /ui/jobs/{rest}")).into()),
    }
    Ok(Redirect::to(&back_to(back.as_deref(), &fallback)).into_response())
}
