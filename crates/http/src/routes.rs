//! The small routes: models, tokenize, detokenize, health, readiness, metrics.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use medgemma_protocol::tokenize::{
    DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse,
};
use serde_json::json;

use crate::error::ApiError;
use crate::prompt::messages_prompt;
use crate::state::AppState;

pub async fn models(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({"object": "list", "data": [model_object(&state)]})).into_response()
}

/// `GET /v1/models/{id}`; the id may hold slashes (a hub id or a path), sent
/// percent-encoded or not.
pub async fn model(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match state.check_model(Some(&id)) {
        Ok(()) => axum::Json(model_object(&state)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn model_object(state: &AppState) -> serde_json::Value {
    json!({
        "id": state.model_name,
        "object": "model",
        "created": state.started_unix(),
        "owned_by": "medgemma-server",
        "max_model_len": state.engine.get().map(|e| e.max_model_len),
    })
}

pub async fn health() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.engine.get() {
        Some(_) => (StatusCode::OK, axum::Json(json!({"status": "ready"}))).into_response(),
        None => ApiError::not_ready().into_response(),
    }
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let stats = state.engine.get().map(|e| e.scheduler.stats());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(stats),
    )
        .into_response()
}

pub async fn tokenize(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let result = (|| -> Result<TokenizeResponse, ApiError> {
        let req: TokenizeRequest = medgemma_protocol::parse(&body)?;
        state.check_model(req.model.as_deref())?;
        let engine = state.engine()?;
        let tokens = match (req.prompt, req.messages) {
            (Some(p), None) => engine
                .text
                .encode_with(&p, req.add_special_tokens.unwrap_or(true))?,
            (None, Some(m)) => {
                // As a chat request would be tokenized: images expanded to their
                // placeholders.
                let valid = medgemma_protocol::validate_messages(&m)?;
                let tools = medgemma_protocol::tools::validate_tools(
                    req.tools.as_ref(),
                    req.tool_choice.as_ref(),
                    None,
                )?;
                let generation_prompt = req.add_generation_prompt.unwrap_or(true);
                messages_prompt(
                    &valid,
                    tools.as_ref(),
                    generation_prompt,
                    req.do_pan_and_scan,
                    &state,
                    engine,
                )?
                .token_ids
            }
            _ => {
                return Err(ApiError::bad_request(
                    "give either 'prompt' or 'messages'",
                    Some("prompt"),
                ))
            }
        };
        Ok(TokenizeResponse {
            count: tokens.len(),
            tokens,
            max_model_len: engine.max_model_len,
        })
    })();
    respond(result)
}

pub async fn detokenize(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let result = (|| -> Result<DetokenizeResponse, ApiError> {
        let req: DetokenizeRequest = medgemma_protocol::parse(&body)?;
        state.check_model(req.model.as_deref())?;
        let engine = state.engine()?;
        if let Some(bad) = req
            .tokens
            .iter()
            .find(|&&t| t as usize >= engine.vocab_size)
        {
            return Err(ApiError::bad_request(
                format!("token {bad} is outside the vocabulary"),
                Some("tokens"),
            ));
        }
        Ok(DetokenizeResponse {
            prompt: engine.text.decode(&req.tokens, false)?,
        })
    })();
    respond(result)
}

fn respond<T: serde::Serialize>(r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}
