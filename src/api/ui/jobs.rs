//! `GET /ui/`: every job at a glance — trigger, next fire, paused or
//! queued, runs in flight, the last status and when, a strip of its last
//! 20 runs; the files that do not load, with their diagnostics; a filter.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::Utc;
use maud::{Markup, html};
use serde::Deserialize;

use super::super::{AppState, JobView};
use super::{PageError, html_response, job_url, layout, session, time_cell};
use crate::store::{RunFilter, RunRow};

/// How many runs a job's strip shows.
pub(super) const STRIP: u32 = 20;

/// The filter form's fields.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filter {
    q: Option<String>,
    status: Option<String>,
}

/// The words the status filter offers besides a run's own status.
const STATE_WORDS: [&str; 4] = ["paused", "invalid", "never", "in-flight"];

/// `GET /ui/`.
pub(super) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    query: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let Query(filter) = query.map_err(|e| super::super::ApiError::BadRequest(e.body_text()))?;
    let q = filter.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(str::to_lowercase);
    let status = filter.status.as_deref().filter(|s| !s.is_empty());
    let csrf = session::csrf_for(&state, &headers);
    let now = Utc::now();
    let views = state.control.jobs().await;
    let total = views.len();
    let mut rows = Vec::new();
    let mut invalid = Vec::new();
    for view in views {
        if !view.valid {
            let excerpt = state.control.job_detail(&view.job, 0).await.and_then(|d| d.excerpt);
            invalid.push((view.job.clone(), excerpt.or_else(|| view.diagnostic.clone()).unwrap_or_default()));
        }
        if q.as_ref().is_some_and(|q| !view.job.to_lowercase().contains(q.as_str())) {
            continue;
        }
        let filter = RunFilter { job: Some(view.job.clone()), limit: STRIP, ..RunFilter::default() };
        let runs = state.store.runs(filter).await?;
        if let Some(status) = status
            && !matches_status(&view, runs.first(), status)
        {
            continue;
        }
        rows.push((view, runs));
    }
    let body = html! {
        h1 { "Jobs" }
        (super::job::triggered_notice(&uri))
        (filter_form(filter.q.as_deref(), status))
        p.summary { (rows.len()) " of " (total) " jobs" }
        div.scroll {
            table #jobs {
                thead { tr {
                    th scope="col" { "Job" } th scope="col" { "Trigger" } th scope="col" { "Next fire" }
                    th scope="col" { "State" } th scope="col" { "Last" } th scope="col" { "When" }
                    th scope="col" { "Last " (STRIP) " runs" } th scope="col" { span.visually-hidden { "Actions" } }
                } }
                tbody {
                    @for (view, runs) in &rows { (row(view, runs, &csrf, now)) }
                }
            }
        }
        @if rows.is_empty() { p.empty { "No job matches." } }
        @if !invalid.is_empty() {
            section #invalid {
                h2 { "Files that do not load (" (invalid.len()) ")" }
                @for (job, diagnostic) in &invalid {
                    article.invalid data-job=(job) {
                        h3 { a href=(job_url(job)) { (job) } }
                        pre.diagnostic { (diagnostic) }
                    }
                }
            }
        }
    };
    Ok(html_response(
        StatusCode::OK,
        layout("Jobs", session::logged_in(&state, &headers).then_some(csrf.as_str()), body),
    ))
}

/// Whether a job passes the status filter: its last run's status word, or
/// one of [`STATE_WORDS`].
fn matches_status(view: &JobView, last: Option<&RunRow>, status: &str) -> bool {
    match status {
        "paused" => view.paused,
        "invalid" => !view.valid,
        "never" => last.is_none(),
        "in-flight" => !view.running.is_empty() || !view.queued.is_empty(),
        word => last.is_some_and(|r| r.status.as_str() == word),
    }
}

fn filter_form(q: Option<&str>, status: Option<&str>) -> Markup {
    let words: Vec<&str> = crate::store::RecordedStatus::all().map(|s| s.as_str()).collect();
    html! {
        form #filter method="get" action="/ui/" role="search" {
            label for="q" { "Name" }
            input #q type="search" name="q" value=(q.unwrap_or("")) placeholder="part of a job's name";
            label for="status" { "Status" }
            select #status name="status" {
                option value="" selected[status.is_none()] { "any" }
                @for word in STATE_WORDS.iter().chain(words.iter()) {
                    option value=(word) selected[status == Some(*word)] { (word) }
                }
            }
            button type="submit" { "Filter" }
        }
    }
}

fn row(view: &JobView, runs: &[RunRow], csrf: &str, now: chrono::DateTime<Utc>) -> Markup {
    let last = runs.first();
    let zone = view.timezone.as_deref();
    html! {
        tr data-job=(view.job) {
            th scope="row" { a href=(job_url(&view.job)) { (view.job) } }
            td.trigger { (view.trigger) }
            td.next {
                @if let Some(next) = view.next_fire { (time_cell(next, zone, now)) } @else { span.muted { "—" } }
            }
            td.state {
                @if view.paused { span.badge.paused { "paused" } " " }
                @if !view.valid { span.badge.invalid { "invalid" } " " }
                @for id in &view.running { a.badge.running href={ "/ui/runs/" (id) } { "running #" (id) } " " }
                @if !view.queued.is_empty() { span.badge.queued { (view.queued.len()) " queued" } }
            }
            td.status data-status=(last.map_or("never", |r| r.status.as_str())) {
                (last.map_or("never", |r| r.status.as_str()))
            }
            td.when {
                @if let Some(r) = last { (time_cell(r.started_at, None, now)) }
            }
            td.strip-cell {
                span.strip aria-label="last runs, newest first" {
                    @for r in runs {
                        a.run href={ "/ui/runs/" (r.id) } data-status=(r.status.as_str())
                            title={ "#" (r.id) " " (r.status.as_str()) " " (r.started_at.format("%Y-%m-%d %H:%M:%S UTC")) } {
                            span.visually-hidden { "#" (r.id) " " (r.status.as_str()) }
                        }
                    }
                }
            }
            td.actions {
                @if view.runnable {
                    form.inline method="post" action={ (job_url(&view.job)) "/trigger" } {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="back" value="/ui/";
                        button type="submit" data-action="trigger" aria-label={ "Trigger " (view.job) } { "Trigger" }
                    }
                }
            }
        }
    }
}
