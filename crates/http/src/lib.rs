//! The axum HTTP layer: OpenAI-compatible routes, SSE, error mapping, auth, limits
//! and metrics.
