//! `GET /runs/{id}/logs?step=&after=SEQ&limit=N`: a run's lines (process output and
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
//!
//! A response holds at most `limit` lines (default 10,000, at most 100,000),
//! read with a SQL `LIMIT`, so one request never holds a whole chatty run;
//! when there are more, the `x-next-after: SEQ` header says so and is the
//! `after` of the next page.

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
    limit: Option<String>,
}

/// How many lines a page has when the query does not say.
pub const DEFAULT_LIMIT: usize = 10_000;
/// The most lines a page may have.
pub const MAX_LIMIT: usize = 100_000;
/// The response header that says there are more lines: the `seq` to give
/// as `after` for the next page.
pub const NEXT_AFTER: &str = "x-next-after";

impl LogsQuery {
    fn filter(self) -> Result<LogFilter, ApiError> {
        let after =
            match self.after.as_deref() {
                None | Some("") => None,
                Some(s) => Some(s.parse::<u64>().map_err(|_| {
                    ApiError::BadRequest(format!("after must be an event id (a number ≥ 0), not `{s}`"))
                })?),
            };
        let limit = match self.limit.as_deref() {
            None | Some("") => DEFAULT_LIMIT,
            Some(s) => s.parse::<usize>().ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| {
                ApiError::BadRequest(format!("limit must be a number from 1 to {MAX_LIMIT}, not `{s}`"))
            })?,
        };
        Ok(LogFilter { step: self.step.filter(|s| !s.is_empty()), after, limit: Some(limit) })
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
    let mut filter = query.filter()?;
    let limit = filter.limit.unwrap_or(DEFAULT_LIMIT);
    // One more than a page, to know whether there are more.
    filter.limit = Some(limit + 1);
    if let Err(e) = state.store.recorder().flush().await {
        tracing::debug!(run_id = id, error = %e, "cannot flush the run history before reading lines");
    }
    let mut lines = state.store.logs(id, filter).await?.ok_or_else(|| ApiError::NotFound(format!("no run {id}")))?;
    let more = lines.len() > limit;
    lines.truncate(limit);
    // The next page starts after this page's last line; a line stored
    // without a number (older history) cannot be placed, so no header then.
    let next = lines.last().and_then(|l| l.seq).filter(|_| more);
    // The body is built once, at about its final size; each line is
    // dropped as it is written.
    let mut body = Vec::with_capacity(lines.iter().map(|l| l.text.len() + l.path.len() + 64).sum());
    for line in lines {
        serde_json::to_writer(&mut body, &line).map_err(|e| ApiError::Internal(format!("cannot write a line: {e}")))?;
        body.push(b'\n');
    }
    let mut response = ([(header::CONTENT_TYPE, NDJSON)], body).into_response();
    if let Some(seq) = next {
        response.headers_mut().insert(NEXT_AFTER, header::HeaderValue::from(seq));
    }
    Ok(response)
}
