//! API keys: every route except /health and /ready needs one when keys are set.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Compares in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0
}

/// The bearer token of a request.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

pub async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if state.api_keys.is_empty() || path == "/health" || path == "/ready" {
        return next.run(req).await;
    }
    let given = bearer(req.headers());
    let ok = given.is_some_and(|g| {
        state.api_keys.iter().fold(false, |acc, k| {
            acc | constant_time_eq(g.as_bytes(), k.as_bytes())
        })
    });
    if ok {
        return next.run(req).await;
    }
    let e = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "a valid API key is required (Authorization: Bearer <key>)",
    )
    .with_code("invalid_api_key");
    e.into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_eq_compares() {
        use super::constant_time_eq as eq;
        assert!(eq(b"secret", b"secret"));
        assert!(!eq(b"secret", b"secreT") && !eq(b"secret", b"secrets") && !eq(b"", b"x"));
    }
}
