//! `GET /ui/runs`: the history of every run (the fleet's, with the
//! PostgreSQL store), newest first, filtered by job, status and node, a
//! page at a time with the API's `before` cursor. The job page's history is
//! the same table ([`history_table`]).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::Utc;
use maud::{Markup, html};
use serde::Deserialize;

use super::super::{ApiError, AppState};
use super::{PageError, duration, encode_query, html_response, job_url, layout, session, time_cell};
use crate::store::{RecordedStatus, RunFilter, RunId, RunRow};

/// Runs on a page.
pub(super) const PAGE: usize = 50;

/// With a node filter, the most runs one page reads before it stops and
/// offers "older" from where it stopped (the store filters by job and
/// status; the node is matched here, see ARCHITECTURE.md).
const NODE_SCAN: usize = 5000;

/// The filters of a history page, as text (a mistake is a 400 page).
#[derive(Debug, Default, Deserialize)]
pub(super) struct HistoryQuery {
    job: Option<String>,
    status: Option<String>,
    node: Option<String>,
    before: Option<String>,
}

/// `GET /ui/runs?job=&status=&node=&before=`.
pub(super) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let job = query.job.clone().filter(|j| !j.is_empty());
    let form = html! {
        form #runs-filter.filter method="get" action="/ui/runs" role="search" {
            label for="job" { "Job" }
            input #job type="text" name="job" value=(job.as_deref().unwrap_or(""));
            label for="status" { "Status" }
            select #status name="status" {
                option value="" { "any" }
                @for s in RecordedStatus::all() {
                    option value=(s.as_str()) selected[query.status.as_deref() == Some(s.as_str())] { (s.as_str()) }
                }
            }
            label for="node" { "Node" }
            input #node type="text" name="node" value=(query.node.as_deref().unwrap_or(""));
            button type="submit" { "Filter" }
        }
    };
    let table = history_table(&state, job, query, "/ui/runs", "runs").await?;
    let body = html! {
        h1 { "Runs" }
        (form)
        (table)
    };
    let csrf = session::csrf_for(&state, &headers);
    Ok(html_response(
        StatusCode::OK,
        layout("Runs", session::logged_in(&state, &headers).then_some(csrf.as_str()), body),
    ))
}

/// A page of runs as `table#{id}` (one `tr[data-run-id]` each) and the
/// "older" link (`a[rel=next]`) to `base` with the same filters.
pub(super) async fn history_table(
    state: &AppState,
    job: Option<String>,
    query: HistoryQuery,
    base: &str,
    id: &str,
) -> Result<Markup, PageError> {
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(RecordedStatus::parse(s).ok_or_else(|| ApiError::BadRequest(format!("unknown status `{s}`")))?),
    };
    let mut before = match query.before.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            Some(s.parse::<RunId>().map_err(|_| ApiError::BadRequest(format!("before must be a run id, not `{s}`")))?)
        }
    };
    let node = query.node.as_deref().filter(|n| !n.is_empty());
    let mut shown: Vec<RunRow> = Vec::new();
    let mut next_before = None;
    let mut scanned = 0usize;
    loop {
        let limit = if node.is_some() { 500 } else { PAGE as u32 + 1 };
        let filter = RunFilter { job: job.clone(), status, limit, before };
        let runs = state.store.runs(filter).await?;
        let exhausted = runs.len() < limit as usize;
        scanned += runs.len();
        before = runs.last().map(|r| r.id);
        for run in runs {
            if node.is_some_and(|n| run.node != n) {
                continue;
            }
            if shown.len() == PAGE {
                next_before = shown.last().map(|r| r.id);
                break;
            }
            shown.push(run);
        }
        if next_before.is_some() || exhausted {
            break;
        }
        if scanned >= NODE_SCAN {
            // Stop reading; "older" goes on from the last run read.
            next_before = before;
            break;
        }
    }
    let now = Utc::now();
    let mut older = format!("{base}?before={}", next_before.unwrap_or_default());
    for (key, value) in [("job", query.job.as_deref()), ("status", query.status.as_deref()), ("node", node)] {
        if let Some(value) = value.filter(|v| !v.is_empty())
            && !(key == "job" && base != "/ui/runs")
        {
            older.push_str(&format!("&{key}={}", encode_query(value)));
        }
    }
    Ok(html! {
        div.scroll {
            table id=(id) {
                thead { tr {
                    th scope="col" { "Run" } th scope="col" { "Job" } th scope="col" { "Status" }
                    th scope="col" { "Trigger" } th scope="col" { "Started" } th scope="col" { "Took" }
                    th scope="col" { "Node" } th scope="col" { "Error" }
                } }
                tbody {
                    @for r in &shown {
                        tr data-run-id=(r.id) data-status=(r.status.as_str()) {
                            th scope="row" { a href={ "/ui/runs/" (r.id) } { "#" (r.id) } }
                            td { a href=(job_url(&r.job)) { (r.job) } }
                            td.status data-status=(r.status.as_str()) { (r.status.as_str()) }
                            td { (r.trigger) }
                            td { (time_cell(r.started_at, None, now)) }
                            td { @if let Some(ms) = r.duration_ms { (duration(ms)) } }
                            td { (r.node) }
                            td.error { @if let Some(e) = &r.error { (first_line(e)) } }
                        }
                    }
                }
            }
        }
        @if shown.is_empty() { p.empty { "No runs." } }
        @if node.is_some() && next_before.is_some() && shown.len() < PAGE {
            p.muted { "Read " (scanned) " runs for this node; older ones may match too." }
        }
        @if next_before.is_some() {
            p.pager { a rel="next" href=(older) { "Older runs →" } }
        }
    })
}

/// The first line of a message, cut at 200 characters.
pub(super) fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    match line.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None if text.lines().nth(1).is_some() => format!("{line} …"),
        None => line.to_string(),
    }
}
