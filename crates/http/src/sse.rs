//! Server-sent event helpers: JSON data lines, errors in the OpenAI shape, `[DONE]`.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
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

/// The SSE response of a generation: the choices' events interleaved as they come,
/// then the usage event (built once every choice has finished, when asked for),
/// then `[DONE]`.
pub fn sse_response(
    choices: Vec<BoxStream<'static, Event>>,
    usage: Option<Box<dyn FnOnce() -> Event + Send>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = stream::select_all(choices)
        .chain(stream::iter(usage).map(|make| make()))
        .chain(stream::once(async { done_event() }))
        .map(Ok);
    Sse::new(events).keep_alive(KeepAlive::default())
}
