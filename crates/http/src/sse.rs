//! Server-sent event helpers: JSON data lines, errors in the OpenAI shape, `[DONE]`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::future;
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

/// One event of a choice's stream.
pub enum ChoiceEvent {
    Chunk(Event),
    /// An error: it ends the whole response (see `sse_response`).
    Error(Event),
}

/// A choice's chunk.
pub fn chunk_event<T: Serialize>(value: &T) -> ChoiceEvent {
    ChoiceEvent::Chunk(json_event(value))
}

/// A choice's error.
pub fn failed_event(e: &ApiError) -> ChoiceEvent {
    ChoiceEvent::Error(error_event(e))
}

/// The SSE response of a generation: the choices' events interleaved as they come,
/// then the usage event (built once every choice has finished, when asked for),
/// then `[DONE]`. The first error ends the response at once: one error event
/// (the choices of a request fail together, on a timeout or a shutdown), no usage,
/// `[DONE]`; dropping the other choices' streams ends their sequences.
pub fn sse_response(
    choices: Vec<BoxStream<'static, ChoiceEvent>>,
    usage: Option<Box<dyn FnOnce() -> Event + Send>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let failed = Arc::new(AtomicBool::new(false));
    let saw_error = failed.clone();
    let events =
        stream::select_all(choices)
            .flat_map(move |ev| {
                let items = match ev {
                    ChoiceEvent::Chunk(e) => vec![Some(e)],
                    ChoiceEvent::Error(e) => {
                        saw_error.store(true, Ordering::Relaxed);
                        vec![Some(e), None]
                    }
                };
                stream::iter(items)
            })
            .take_while(|e| future::ready(e.is_some()))
            .filter_map(future::ready)
            .chain(stream::iter(usage).filter_map(move |make| {
                future::ready((!failed.load(Ordering::Relaxed)).then(make))
            }))
            .chain(stream::once(async { done_event() }))
            .map(Ok);
    Sse::new(events).keep_alive(KeepAlive::default())
}
