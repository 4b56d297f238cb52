//! The two gates every request passes: the bearer token, then the body limit.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// With a token configured, answers 401 unless the request carries
/// `Authorization: Bearer TOKEN` (the scheme in any case).
pub(super) async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = state.config.token.as_deref() {
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
        match given {
            None => return ApiError::Unauthorized("missing `Authorization: Bearer <token>`".into()).into_response(),
            Some(given) if !same(given.trim().as_bytes(), token.as_bytes()) => {
                return ApiError::Unauthorized("wrong token".into()).into_response();
            }
            Some(_) => {}
        }
    }
    next.run(request).await
}

/// The credentials of `Authorization: Bearer TOKEN`; the scheme is
/// case-insensitive (RFC 7235 §2.1), so `bearer TOKEN` counts too.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("Bearer").then_some(credentials)
}

/// Compares in time that depends on the lengths only, so the token cannot
/// be guessed byte by byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Answers 413 to a body larger than `max_body`: at once from its
/// `Content-Length`, else (chunked) once that many bytes have arrived. The
/// bodies the API takes are small, so buffering them costs nothing.
pub(super) async fn limit_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let max = state.config.max_body;
    let too_large = || ApiError::TooLarge(format!("the request body is larger than {max} bytes")).into_response();
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(bytes) => bytes,
        Err(_) => return too_large(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
