//! Server-sent event helpers: JSON data lines, errors in the OpenAI shape, `[DONE]`.

use axum::response::sse::Event;
use serde::Serialize;

use crate::error::ApiError;

pub fn json_event<T: Serialize>(value: &T) -> Event {
    match serde_json::to_string(value) {
        Ok(s) => Event::default().data(s),
        Err(e) => error_event(&ApiError::internal(format!(
            "could not encode a chunk: {e}"
        ))),
    }
}

pub fn error_event(e: &ApiError) -> Event {
    Event::default()
        .data(serde_json::to_string(&e.body()).unwrap_or_else(|_| "{\"error\":{}}".into()))
}

pub fn done_event() -> Event {
    Event::default().data("[DONE]")
}
