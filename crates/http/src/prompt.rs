//! From validated chat messages to the engine's prompt: the checkpoint's chat
//! template, image bytes, tokenization and the length check.

use medgemma_core::Prompt;
use medgemma_preprocess::TemplateMessage;
use medgemma_protocol::chat::ValidChat;
use medgemma_protocol::{ContentPart, MessageContent, ValidMessage};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::images::image_bytes;
use crate::state::{AppState, Engine};

/// Template messages and the image bytes they refer to, in order.
pub fn template_messages(
    messages: &[ValidMessage],
    state: &AppState,
) -> Result<(Vec<TemplateMessage>, Vec<Vec<u8>>), ApiError> {
    let mut out = Vec::with_capacity(messages.len());
    let mut images = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = if m.role == "developer" {
            "system"
        } else {
            m.role.as_str()
        };
        let content = match &m.content {
            MessageContent::Text(t) => Value::String(t.clone()),
            MessageContent::Parts(parts) => {
                let mut items = Vec::with_capacity(parts.len());
                for (j, p) in parts.iter().enumerate() {
                    items.push(match p {
                        ContentPart::Text { text } => json!({"type": "text", "text": text}),
                        ContentPart::ImageUrl { url } => {
                            let param = format!("messages[{i}].content[{j}].image_url.url");
                            images.push(image_bytes(url, &state.images, &param)?);
                            json!({"type": "image"})
                        }
                    });
                }
                Value::Array(items)
            }
        };
        out.push(TemplateMessage {
            role: role.to_string(),
            content,
        });
    }
    Ok((out, images))
}

/// Renders, expands images and tokenizes a chat request.
pub fn chat_prompt(
    chat: &ValidChat,
    state: &AppState,
    engine: &Engine,
) -> Result<Prompt, ApiError> {
    let (messages, images) = template_messages(&chat.messages, state)?;
    let rendered = engine.text.render_chat(&messages, true)?;
    if images.is_empty() {
        return Ok(Prompt {
            token_ids: engine.text.encode(&rendered)?,
            images: Vec::new(),
        });
    }
    let vision = engine.vision.as_ref().ok_or_else(|| {
        ApiError::bad_request("this model does not accept images", Some("messages"))
    })?;
    vision.build_prompt(&rendered, &images, chat.pan_and_scan)
}

/// The number of new tokens a request may generate, checked against the model's limit.
pub fn max_new_tokens(
    prompt_len: usize,
    requested: Option<usize>,
    engine: &Engine,
) -> Result<usize, ApiError> {
    let limit = engine.max_model_len;
    if prompt_len >= limit {
        return Err(ApiError::bad_request(
            format!("the prompt has {prompt_len} tokens, but this model's maximum context length is {limit} tokens"),
            Some("messages"),
        )
        .with_code("context_length_exceeded"));
    }
    match requested.or(engine.defaults.max_tokens) {
        Some(n) if prompt_len + n > limit => Err(ApiError::bad_request(
            format!(
                "this model's maximum context length is {limit} tokens; the prompt has {prompt_len} and max_tokens asks for {n} more ({} in all)",
                prompt_len + n
            ),
            Some("max_tokens"),
        )
        .with_code("context_length_exceeded")),
        Some(n) => Ok(n),
        None => Ok(limit - prompt_len),
    }
}
