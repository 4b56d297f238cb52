//! `GET /runs/{id}/logs?step=&after=SEQ`: a run's lines (process output and
//! script log lines) as JSON lines, `application/x-ndjson`, one object per
//! line: `{"seq","path","at_ms","stream","text"}`, in the order streamed.
//!
//! `seq` is the line's number in the run's event stream, the `id:` of its
//! `output`/`log` server-sent event, so the two are one sequence: a client
//! reads the backlog here and goes on with `?after=` (polling) or with
//! `/runs/{id}/events` and `Last-Event-ID: SEQ` (live), with no gap and no
//! repeat. `step` is a step's path (`main/fetch`) or its name (or trailing
//! parts of its path). Lines stored without a number (a history older than
//! the numbers) have `seq: null` and are left out when `after` is given.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::store::LogFilter;

/// The media type of JSON lines.
pub const NDJSON: &str = "application/x-ndjson";

/// The query, as text: parsed by hand so a mistake is a JSON 400.
#[derive(Debug, Default, Deserialize)]
pub(super) struct LogsQuery {
    step: Option<String>,
    after: Option<String>,
}

impl LogsQuery {
    fn filter(self) -> Result<LogFilter, ApiError> {
        let after =
            match self.after.as_deref() {
                None | Some("") => None,
                Some(s) => Some(s.parse::<u64>().map_err(|_| {
                    ApiError::BadRequest(format!("after must be an event id (a number ≥ 0), not `{s}`"))
                })?),
            };
        Ok(LogFilter { step: self.step.filter(|s| !s.is_empty()), after })
    }
}

/// `GET /runs/{id}/logs`: see the module doc. The recorder is flushed
/// first, so every line the daemon streamed before the request is in it.
pub(super) async fn lines(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = super::runs::run_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let filter = query.filter()?;
    if let Err(e) = state.store.recorder().flush().await {
        tracing::debug!(run_id = id, error = %e, "cannot flush the run history before reading lines");
    }
    let lines = state.store.logs(id, filter).await?.ok_or_else(|| ApiError::NotFound(format!("no run {id}")))?;
    let mut body = Vec::with_capacity(lines.len() * 80);
    for line in &lines {
        serde_json::to_writer(&mut body, line).map_err(|e| ApiError::Internal(format!("cannot write a line: {e}")))?;
        body.push(b'\n');
    }
    Ok(([(header::CONTENT_TYPE, NDJSON)], body).into_response())
}
