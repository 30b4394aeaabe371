//! The axum HTTP layer: OpenAI-compatible routes, SSE, error mapping, auth, limits
//! and metrics. It never sees candle: the model is behind the scheduler handle.

pub mod auth;
pub mod chat;
pub mod completions;
pub mod error;
pub mod generation;
pub mod images;
pub mod metrics;
pub mod prompt;
pub mod routes;
pub mod sse;
pub mod state;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;
pub use images::{CheckpointImages, ImagePreprocessor, ImageSettings};
pub use state::{AppState, Engine, SamplingDefaults};

/// Limits of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest request body (a base64 CT slice fits in the default).
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 * 1024 * 1024,
        }
    }
}

pub fn router(state: Arc<AppState>, limits: &HttpLimits) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/models", get(routes::models))
        .route("/tokenize", post(routes::tokenize))
        .route("/detokenize", post(routes::detokenize))
        .route("/health", get(routes::health))
        .route("/ready", get(routes::ready))
        .route("/metrics", get(routes::metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn(error::openai_shaped_errors))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        format!("no route {}", uri.path()),
    )
}
