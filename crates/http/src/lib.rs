//! The axum HTTP layer: OpenAI-compatible routes, SSE, error mapping, auth, limits
//! and metrics. It never sees candle: the model is behind the scheduler handle.

pub mod access;
pub mod audit;
pub mod auth;
pub mod body_guard;
pub mod chat;
pub mod completions;
pub mod error;
pub mod generation;
pub mod images;
pub mod metrics;
pub mod prompt;
pub mod quota;
pub mod routes;
pub mod sse;
pub mod state;
pub mod text_offset;
pub mod tls;
pub mod tools;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;
pub use images::{CheckpointImages, ImagePreprocessor, ImageSettings};
pub use state::{AppState, Engine, SamplingDefaults, StateOptions};

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
        .route("/v1/models/{*id}", get(routes::model))
        .route("/tokenize", post(routes::tokenize))
        .route("/detokenize", post(routes::detokenize))
        .route("/health", get(routes::health))
        .route("/ready", get(routes::ready))
        .route("/metrics", get(routes::metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            quota::limit_keys,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(cors(&state.cors_origins))
        .layer(axum::middleware::from_fn(error::openai_shaped_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::log_request,
        ))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        format!("no route {}", uri.path()),
    )
}

/// CORS: off unless origins are configured (`*` allows any origin).
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
}
