//! `GET /runs`, `GET /runs/{id}`, `POST /runs/{id}/cancel`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::store::RunDocument;
use crate::store::{RecordedStatus, RunFilter, RunId, RunRow};

/// A page's size when the query gives none.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page.
pub const MAX_LIMIT: u32 = 1000;

/// The query of `GET /runs`, as text: parsed by hand so a mistake is a JSON 400.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RunsQuery {
    job: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

/// A page of runs, newest first.
#[derive(Debug, Serialize)]
pub struct RunsPage {
    /// The runs.
    pub runs: Vec<RunRow>,
    /// `before` for the next page; `null` on the last page.
    pub next_before: Option<RunId>,
}

impl RunsQuery {
    fn filter(self) -> Result<RunFilter, ApiError> {
        let status = match self.status.as_deref() {
            None | Some("") => None,
            Some(s) => Some(RecordedStatus::parse(s).ok_or_else(|| {
                let words: Vec<&str> = RecordedStatus::all().map(RecordedStatus::as_str).collect();
                let (last, rest) = words.split_last().expect("there are statuses");
                ApiError::BadRequest(format!("unknown status `{s}` (expected {} or {last})", rest.join(", ")))
            })?),
        };
        let limit = match self.limit.as_deref() {
            None | Some("") => DEFAULT_LIMIT,
            Some(s) => match s.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "limit must be a number from 1 to {MAX_LIMIT}, not `{s}`"
                    )));
                }
            },
        };
        let before = match self.before.as_deref() {
            None | Some("") => None,
            Some(s) => Some(
                s.parse::<RunId>().map_err(|_| ApiError::BadRequest(format!("before must be a run id, not `{s}`")))?,
            ),
        };
        Ok(RunFilter { job: self.job.filter(|j| !j.is_empty()), status, limit, before })
    }
}

/// `GET /runs?job=&status=&limit=&before=`: newest first; asks for one more
/// than the page so `next_before` is `null` exactly on the last page.
pub(super) async fn list(
    State(state): State<AppState>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<RunsPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let mut filter = query.filter()?;
    let limit = filter.limit as usize;
    filter.limit += 1;
    let mut runs = state.store.runs(filter).await?;
    let next_before = if runs.len() > limit {
        runs.truncate(limit);
        runs.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Json(RunsPage { runs, next_before }))
}

/// A run id from the path; 400 if it is not one.
pub(super) fn run_id(text: &str) -> Result<RunId, ApiError> {
    text.parse().map_err(|_| ApiError::BadRequest(format!("`{text}` is not a run id")))
}

pub(super) async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<RunDocument>, ApiError> {
    let id = run_id(&id)?;
    let detail = state.store.run(id).await?.ok_or_else(|| ApiError::NotFound(format!("no run {id}")))?;
    Ok(Json(detail.document()))
}

/// `POST /runs/{id}/cancel`: 202, the run ends soon (watch its events); 409
/// if it is not running (any more), 404 if there is no such run.
pub(super) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = run_id(&id)?;
    if let Err(e) = state.control.cancel(id).await {
        // Not running: say whether the run ever existed.
        if matches!(e, crate::api::ControlError::NotRunning(_)) && state.store.run(id).await?.is_none() {
            return Err(ApiError::NotFound(format!("no run {id}")));
        }
        return Err(e.into());
    }
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"run_id": id, "cancelling": true}))))
}
