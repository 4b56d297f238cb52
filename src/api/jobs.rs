//! `GET /jobs`, `GET /jobs/{job}`, and triggering a job.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::{ApiError, AppState, ControlError, JobView, Started};
use crate::exec::RecordedStatus;
use crate::store::{RunFilter, RunId, RunRow};

/// A job as the daemon knows it, with its last recorded run.
#[derive(Debug, Serialize)]
pub struct JobEntry {
    /// What the daemon knows now.
    #[serde(flatten)]
    pub job: JobView,
    /// Its newest run in the history, if any.
    pub last_run: Option<RunRow>,
}

async fn entry(state: &AppState, job: JobView) -> Result<JobEntry, ApiError> {
    let filter = RunFilter { job: Some(job.job.clone()), limit: 1, ..RunFilter::default() };
    let last_run = state.store.runs(filter).await?.into_iter().next();
    Ok(JobEntry { job, last_run })
}

/// `GET /jobs`: every job, sorted by id, each with its last run.
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let mut jobs = Vec::new();
    for job in state.control.jobs().await {
        jobs.push(entry(&state, job).await?);
    }
    Ok(Json(serde_json::json!({ "jobs": jobs })))
}

/// The id of the job `name` means (with or without its extension, see
/// [`crate::job::resolve_name`]) among `jobs`: 404 with a did-you-mean when
/// none, 400 naming each when it fits more than one.
pub(super) fn resolve(name: &str, jobs: &[JobView]) -> Result<String, ApiError> {
    crate::job::resolve_name(name, jobs.iter().map(|j| j.job.as_str())).map_err(|e| match e {
        crate::job::NameError::Unknown { .. } => ApiError::NotFound(e.to_string()),
        crate::job::NameError::Ambiguous { .. } => ApiError::BadRequest(e.to_string()),
    })
}

/// `GET /jobs/{*job}`: one job (its id with or without the extension); 404
/// if the daemon does not know it.
pub(super) async fn show(State(state): State<AppState>, Path(job): Path<String>) -> Result<Json<JobEntry>, ApiError> {
    let jobs = state.control.jobs().await;
    let id = resolve(&job, &jobs)?;
    let found = jobs.into_iter().find(|j| j.job == id);
    let found = found.ok_or_else(|| ApiError::NotFound(format!("no job `{job}`")))?;
    Ok(Json(entry(&state, found).await?))
}

/// `POST /jobs/{*job}/trigger` (and `/pause`, `/resume`): the catch-all
/// takes the whole rest of the path, so the suffix is parsed here.
pub(super) async fn trigger_suffix(
    State(state): State<AppState>,
    Path(rest): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let job = |suffix: &str| rest.strip_suffix(suffix).filter(|job| !job.is_empty()).map(str::to_string);
    if let Some(job) = job("/trigger") {
        return Ok(trigger(State(state), Path(job)).await?.into_response());
    }
    for (suffix, paused) in [("/pause", true), ("/resume", false)] {
        if let Some(job) = job(suffix) {
            return Ok(pause(&state, job, paused).await?.into_response());
        }
    }
    Err(ApiError::NotFound(format!("no route POST /jobs/{rest} (did you mean /jobs/{rest}/trigger?)")))
}

/// `POST /jobs/{job}/pause` and `/resume`: 200 `{"job": J, "paused": B}`
/// once the daemon has saved it; 404 for an unknown job.
async fn pause(state: &AppState, job: String, paused: bool) -> Result<Json<serde_json::Value>, ApiError> {
    // Named as everywhere else: with or without its extension, a did-you-mean.
    let job = resolve(&job, &state.control.jobs().await)?;
    state.control.pause(&job, paused).await?;
    Ok(Json(serde_json::json!({ "job": job, "paused": paused })))
}

/// The answer to a trigger.
#[derive(Debug, Serialize)]
pub struct Triggered {
    /// The new run's id.
    pub run_id: RunId,
    /// `running`, or `queued` while it waits for a slot or its semaphore.
    pub status: RecordedStatus,
    /// Its event stream from its first event: `/runs/{id}/events?from=0`.
    pub events: String,
}

/// `POST /trigger/{*job}`: a run now (the job named with or without its
/// extension), answered at once with its id and state: 201 when it
/// started, 202 when it is queued for a slot or its semaphore (it starts
/// when its turn comes; its events say when).
pub(super) async fn trigger(
    State(state): State<AppState>,
    Path(job): Path<String>,
) -> Result<(StatusCode, Json<Triggered>), ApiError> {
    // A name no listed job has goes to the daemon as it is (its answer
    // stands), with the did-you-mean if it has none either.
    let jobs = state.control.jobs().await;
    let (id, unknown) = match resolve(&job, &jobs) {
        Ok(id) => (id, None),
        Err(e @ ApiError::NotFound(_)) => (job, Some(e)),
        Err(e) => return Err(e),
    };
    let Started { run_id, status } = state.control.trigger(&id).await.map_err(|e| match (e, unknown) {
        (ControlError::NoSuchJob(_), Some(unknown)) => unknown,
        (e, _) => e.into(),
    })?;
    let events = format!("/runs/{run_id}/events?from=0");
    let code = if status == RecordedStatus::Queued { StatusCode::ACCEPTED } else { StatusCode::CREATED };
    Ok((code, Json(Triggered { run_id, status, events })))
}
