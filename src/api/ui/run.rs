//! `GET /ui/runs/{id}`: one run — status, times, trigger, node, the SVG
//! timeline, the steps table, each step's output lines (the head/tail
//! marker included, as recorded), the script's log lines and the
//! notifications sent; while it runs, the page's script follows the API's
//! `/runs/{id}/events` from the first event the page does not show, and a
//! cancel form (`POST /ui/runs/{id}/cancel`).
//!
//! A big run is paged: the steps table and the outputs show
//! [`STEPS_PAGE`] steps at a time (`?page=N`), at most [`LINES_PER_STEP`]
//! lines per step, and the timeline aggregates (see `timeline.rs`).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use maud::{Markup, html};
use serde::Deserialize;

use super::super::runs::run_id;
use super::super::{ApiError, AppState};
use super::job::{ActionForm, back_to};
use super::{PageError, duration, html_response, job_url, layout, session, time_cell, timeline};
use crate::exec::{LogLine, StepReport};
use crate::store::{NotificationFilter, RunTimeline};

/// Steps per page of the steps table and outputs.
pub const STEPS_PAGE: usize = 500;
/// The most lines shown of one step's output.
pub const LINES_PER_STEP: usize = 1000;

/// The run page's query.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RunQuery {
    page: Option<String>,
}

/// `GET /ui/runs/{id}`.
pub(super) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let id = run_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let page: usize = match query.page.as_deref().filter(|p| !p.is_empty()) {
        None => 1,
        Some(p) => p
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| ApiError::BadRequest(format!("page must be a number from 1, not `{p}`")))?,
    };
    // What the daemon sent its history so far is readable after a flush:
    // the page shows it, and the live stream goes on from the next event.
    if let Err(e) = state.store.recorder().flush().await {
        tracing::debug!(run_id = id, error = %e, "cannot flush the run history before a page");
    }
    let timeline = state.store.timeline(id).await?.ok_or_else(|| ApiError::NotFound(format!("no run {id}")))?;
    let notifications =
        state.store.notifications(NotificationFilter { run_id: Some(id), ..NotificationFilter::default() }).await?;
    let from = next_event(&timeline);
    let RunTimeline { detail, .. } = timeline;
    let run = &detail.run;
    let now = Utc::now();
    let going = run.status.is_going();
    let elapsed_ms = if going {
        u64::try_from((now - run.started_at).num_milliseconds()).unwrap_or(0)
    } else {
        run.duration_ms.unwrap_or(0)
    };
    let latest_end = detail.steps.iter().filter_map(|s| s.end_ms.or(s.start_ms)).max().unwrap_or(0);
    let total_ms = elapsed_ms.max(latest_end).max(run.duration_ms.unwrap_or(0));
    let csrf = session::csrf_for(&state, &headers);
    let here = format!("/ui/runs/{id}");

    let order = timeline::tree_order(&detail.steps);
    let pages = order.len().div_ceil(STEPS_PAGE).max(1);
    if page > pages {
        return Err(ApiError::NotFound(format!("run {id} has {pages} page(s) of steps")).into());
    }
    let on_page: Vec<&StepReport> =
        order.iter().skip((page - 1) * STEPS_PAGE).take(STEPS_PAGE).map(|&i| &detail.steps[i]).collect();
    let mut lines: HashMap<&str, Vec<&LogLine>> = HashMap::new();
    let mut script_log: Vec<&LogLine> = Vec::new();
    for line in &detail.logs {
        if line.stream.is_output() {
            lines.entry(line.path.as_str()).or_default().push(line);
        } else {
            script_log.push(line);
        }
    }

    let body = html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/ui/runs" { "Runs" } " / " a href=(job_url(&run.job)) { (run.job) } " / "
        }
        div #run data-run=(id) data-from=(from) data-live=(going) data-elapsed=(elapsed_ms)
            data-total=(total_ms) data-paged=(pages > 1) {
            h1 { "Run #" (id) " of " a href=(job_url(&run.job)) { (run.job) } }
            p.status-line {
                span #run-status.badge data-status=(run.status.as_str()) role="status" aria-live="polite" {
                    (run.status.as_str())
                }
                @if going {
                    " "
                    form.inline method="post" action={ (here) "/cancel" } #cancel-form {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="back" value=(here);
                        button.danger type="submit" data-action="cancel" { "Cancel run" }
                    }
                }
            }
            dl.facts {
                dt { "Trigger" } dd { (run.trigger) }
                dt { "Node" } dd { (run.node) }
                dt { "Due" } dd { (time_cell(run.fire_time, None, now)) }
                dt { "Started" } dd { (time_cell(run.started_at, None, now)) }
                dt { "Finished" } dd #run-finished {
                    @if let Some(t) = run.finished_at { (time_cell(t, None, now)) } @else { "—" }
                }
                dt { "Took" } dd #run-took { @if let Some(ms) = run.duration_ms { (duration(ms)) } @else { "—" } }
                @if let Some(e) = &run.error { dt { "Error" } dd { pre.error #run-error { (e) } } }
                @if !run.result.is_null() {
                    dt { "Result" } dd { pre.result { (serde_json::to_string_pretty(&run.result).unwrap_or_default()) } }
                }
            }
            section #timeline-section {
                h2 { "Timeline" }
                @if detail.steps.len() > timeline::FULL_LIMIT {
                    p.muted { (detail.steps.len()) " steps: each group's steps are drawn together, one mark per column "
                        "(darker: more steps at once; the colour of the worst status). The table below lists them." }
                }
                div.scroll.timeline-box { (timeline::svg(&detail.steps, total_ms, elapsed_ms)) }
                p #bar-info.muted aria-live="polite" { "Focus or hover a bar for its step." }
            }
            section {
                h2 { "Steps (" (detail.steps.len()) ")" }
                (pager(&here, page, pages))
                div.scroll {
                    table #steps {
                        thead { tr {
                            th scope="col" { "Step" } th scope="col" { "Kind" } th scope="col" { "Status" }
                            th scope="col" { "Start" } th scope="col" { "Took" } th scope="col" { "Attempts" }
                            th scope="col" { "Error" }
                        } }
                        tbody {
                            @for s in &on_page { (step_row(s, elapsed_ms)) }
                        }
                    }
                }
            }
            section #outputs {
                h2 { "Output" }
                @for s in on_page.iter().filter(|s| lines.contains_key(&*s.path)) {
                    (output(s, &lines[&*s.path]))
                }
                @if !on_page.iter().any(|s| lines.contains_key(&*s.path)) { p.muted #no-output { "No step printed anything." } }
                (pager(&here, page, pages))
            }
            section #script-log-section {
                h2 { "Script log" }
                pre #log.log {
                    @for l in &script_log {
                        span.line data-stream=(l.stream) data-path=(l.path) { "[" (l.path) "] " (l.text) "\n" }
                    }
                }
                @if script_log.is_empty() { p.muted #no-log { "No script log lines." } }
            }
            section {
                h2 { "Notifications" }
                @if notifications.is_empty() {
                    p.muted { "None sent about this run." }
                } @else {
                    div.scroll { table #notifications {
                        thead { tr { th { "Target" } th { "Event" } th { "Delivery" } th { "Attempts" } th { "Error" } th { "When" } } }
                        tbody {
                            @for n in &notifications {
                                tr { td { (n.target) } td { (n.event) } td data-status=(n.status) { (n.status) }
                                     td { (n.attempts) } td { @if let Some(e) = &n.error { (e) } }
                                     td { (time_cell(n.updated_at, None, now)) } }
                            }
                        }
                    } }
                }
            }
        }
    };
    let title = format!("Run #{id}");
    Ok(html_response(
        StatusCode::OK,
        layout(&title, session::logged_in(&state, &headers).then_some(csrf.as_str()), body),
    ))
}

fn step_row(s: &StepReport, now_ms: u64) -> Markup {
    let depth = s.path.matches('/').count();
    let took = match (s.start_ms, s.end_ms) {
        (Some(a), Some(b)) => duration(b.saturating_sub(a)),
        (Some(a), None) => format!("{} …", duration(now_ms.saturating_sub(a))),
        _ => String::new(),
    };
    html! {
        tr data-path=(s.path) data-kind=(if s.is_group() { "group" } else { "step" }) data-status=(s.status.as_str()) {
            th scope="row" class={ "depth-" (depth.min(8)) } { (s.name) span.path { " " (s.path) } }
            td { (s.kind) }
            td.status data-status=(s.status.as_str()) { (s.status.as_str()) }
            td { @if let Some(ms) = s.start_ms { (duration(ms)) } }
            td.took { (took) }
            td { (s.attempts) }
            td.error { @if let Some(e) = &s.error { (e) } }
        }
    }
}

/// Whether a line is the capture's head/tail marker (`… N bytes dropped …`).
fn is_marker(text: &str) -> bool {
    text.starts_with("… ") && text.ends_with(" …") && text.contains(" dropped")
}

fn output(s: &StepReport, lines: &[&LogLine]) -> Markup {
    let shown = &lines[..lines.len().min(LINES_PER_STEP)];
    html! {
        div.output-box {
            h3 { (s.path) }
            pre.output data-path=(s.path) {
                @for l in shown {
                    span.line.marker[is_marker(&l.text)] data-stream=(l.stream) { (l.text) "\n" }
                }
            }
            @if lines.len() > shown.len() {
                p.muted { (lines.len() - shown.len()) " more lines: " code { "gatherd logs RUN --step " (s.path) } }
            }
        }
    }
}

fn pager(here: &str, page: usize, pages: usize) -> Markup {
    html! {
        @if pages > 1 {
            nav.pager aria-label="Steps pages" {
                @if page > 1 { a rel="prev" href={ (here) "?page=" (page - 1) } { "← steps page " (page - 1) } " " }
                span { "page " (page) " of " (pages) }
                @if page < pages { " " a href={ (here) "?page=" (page + 1) } { "steps page " (page + 1) " →" } }
            }
        }
    }
}

/// The number of the first event the page does not show: one after the
/// highest number its stored facts carry (0 for a run with none yet).
fn next_event(t: &RunTimeline) -> u64 {
    let steps =
        t.steps.iter().flat_map(|s| [s.started, s.finished].into_iter().chain(s.attempts.iter().map(|(seq, _)| *seq)));
    let highest =
        [t.run_started, t.run_finished].into_iter().chain(steps).chain(t.logs.iter().copied()).flatten().max();
    highest.map_or(0, |n| n + 1)
}

/// `POST /ui/runs/{id}/cancel`: CSRF-checked, then 303 back to the run.
pub(super) async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, PageError> {
    let form = form.ok().map(|Form(f)| f);
    if let Err(refused) = session::check_csrf(&state, &headers, form.as_ref().and_then(|f| f.csrf.as_deref())) {
        return Ok(refused.into_response());
    }
    let id = run_id(&id)?;
    if let Err(e) = state.control.cancel(id).await {
        if matches!(e, crate::api::ControlError::NotRunning(_)) && state.store.run(id).await?.is_none() {
            return Err(ApiError::NotFound(format!("no run {id}")).into());
        }
        return Err(ApiError::from(e).into());
    }
    let back = back_to(form.as_ref().and_then(|f| f.back.as_deref()), &format!("/ui/runs/{id}"));
    Ok(Redirect::to(&back).into_response())
}
