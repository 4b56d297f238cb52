//! The API's errors: each one a status and a JSON `{"error": "..."}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::ControlError;
use crate::store::StoreError;

/// Why a request failed; the variant is the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: a query or path parameter that does not parse.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or the wrong one.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a foreign `Host`, or a state change from a foreign `Origin`.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such job, run or route.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: the run is not running, the job was not started or cannot run.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than `max_body`.
    #[error("{0}")]
    TooLarge(String),
    /// 500: the store failed.
    #[error("{0}")]
    Internal(String),
    /// 503: the daemon is stopping.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(error = %self, "API request failed");
        }
        let mut response = (status, Json(serde_json::json!({"error": self.to_string()}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        let message = e.to_string();
        match e {
            ControlError::NoSuchJob(_) => ApiError::NotFound(message),
            ControlError::NotRunnable(_) | ControlError::NotStarted(_) | ControlError::NotRunning(_) => {
                ApiError::Conflict(message)
            }
            ControlError::Stopping | ControlError::NotSaved(_) => ApiError::Unavailable(message),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        // A store error already says it is about the run history.
        ApiError::Internal(e.to_string())
    }
}
