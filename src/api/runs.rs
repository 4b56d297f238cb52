//! `GET /runs`, `GET /runs/{id}`, `POST /runs/{id}/cancel`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::store::{Notification, NotificationFilter, RunDocument};
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

pub(super) async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<RunShown>, ApiError> {
    let id = run_id(&id)?;
    let detail = state.store.run(id).await?.ok_or_else(|| ApiError::NotFound(format!("no run {id}")))?;
    let filter = NotificationFilter { run_id: Some(id), ..NotificationFilter::default() };
    let notifications = state.store.notifications(filter).await?;
    Ok(Json(RunShown { document: detail.document(), notifications }))
}

/// `GET /runs/{id}`: the run document, and the notifications sent about the
/// run (left out when there are none, so the document is `show --json`'s).
#[derive(Debug, Serialize)]
pub struct RunShown {
    #[serde(flatten)]
    document: RunDocument,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notifications: Vec<Notification>,
}

/// The query of `GET /notifications`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct NotificationsQuery {
    job: Option<String>,
    run_id: Option<String>,
    limit: Option<String>,
}

/// `GET /notifications[?job=&run_id=&limit=]`: `{"notifications": [...]}`,
/// newest first (limit 1 to 1000, default 100).
pub(super) async fn notifications(
    State(state): State<AppState>,
    query: Result<Query<NotificationsQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let run_id = query.run_id.as_deref().filter(|s| !s.is_empty()).map(run_id).transpose()?;
    let limit = match query.limit.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Some(n),
            _ => return Err(ApiError::BadRequest(format!("`limit` must be from 1 to {MAX_LIMIT}, found `{text}`"))),
        },
    };
    let job = query.job.filter(|j| !j.is_empty());
    let found = state.store.notifications(NotificationFilter { run_id, job, limit }).await?;
    Ok(Json(serde_json::json!({ "notifications": found })))
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
