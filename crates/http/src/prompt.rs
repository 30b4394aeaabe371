//! From validated chat messages to the engine's prompt: the checkpoint's chat
//! template, image bytes, tokenization and the length check.

use medgemma_core::Prompt;
use medgemma_preprocess::{PreprocessError, TemplateMessage};
use medgemma_protocol::chat::ValidChat;
use medgemma_protocol::{ContentPart, MessageContent, ValidMessage, ValidTools};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::images::{image_bytes, RequestImage};
use crate::state::{AppState, Engine};

/// A request's messages as the chat template takes them.
pub struct Templated {
    pub messages: Vec<TemplateMessage>,
    /// The image bytes the messages refer to, in order.
    pub images: Vec<RequestImage>,
    /// For each templated message, the request's index of its first message
    /// (same-role neighbours are merged).
    origin: Vec<usize>,
}

impl Templated {
    /// Renders the conversation; a template error names the request's message.
    pub fn render(&self, engine: &Engine, add_generation_prompt: bool) -> Result<String, ApiError> {
        engine
            .text
            .render_chat(&self.messages, add_generation_prompt)
            .map_err(|e| match e {
                PreprocessError::Template { at: Some(k), msg } => PreprocessError::Template {
                    at: Some(self.origin.get(k).copied().unwrap_or(k)),
                    msg,
                },
                other => other,
            })
            .map_err(ApiError::from)
    }
}

/// The template's messages for `messages`, with the image bytes they refer to.
pub fn template_messages(
    messages: &[ValidMessage],
    tools: Option<&ValidTools>,
    state: &AppState,
) -> Result<Templated, ApiError> {
    let mut out = Templated {
        messages: Vec::with_capacity(messages.len()),
        images: Vec::new(),
        origin: Vec::with_capacity(messages.len()),
    };
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "developer" => "system",
            // A tool's result comes back in the user's turn.
            "tool" => "user",
            other => other,
        };
        let mut content = match &m.content {
            MessageContent::Text(t) => Value::String(t.clone()),
            MessageContent::Parts(parts) => {
                let mut items = Vec::with_capacity(parts.len());
                for (j, p) in parts.iter().enumerate() {
                    items.push(match p {
                        ContentPart::Text { text } => json!({"type": "text", "text": text}),
                        ContentPart::ImageUrl { url } => {
                            let param = format!("messages[{i}].content[{j}].image_url.url");
                            let bytes = image_bytes(url, &state.images, &param)?;
                            out.images.push(RequestImage { bytes, param });
                            json!({"type": "image"})
                        }
                    });
                }
                Value::Array(items)
            }
        };
        if let Some(id) = &m.tool_call_id {
            content = Value::String(crate::tools::result_text(
                id,
                call_name(&messages[..i], id),
                &text_of(&content),
            ));
        }
        if !m.tool_calls.is_empty() {
            let calls = crate::tools::history_text(&m.tool_calls);
            let text = text_of(&content);
            content = Value::String(match text.is_empty() {
                true => calls,
                false => format!("{text}\n{calls}"),
            });
        }
        let merged = push_merged(
            &mut out.messages,
            TemplateMessage {
                role: role.to_string(),
                content,
            },
        );
        if !merged {
            out.origin.push(i);
        }
    }
    if let Some(tools) = tools {
        add_system_text(&mut out, crate::tools::system_text(tools));
    }
    Ok(out)
}

/// Puts `text` at the end of the system turn, making one first if there is none.
fn add_system_text(out: &mut Templated, text: String) {
    let m = TemplateMessage {
        role: "system".into(),
        content: Value::String(text),
    };
    if out.messages.first().is_some_and(|f| f.role == "system") {
        // Merged after the client's own system text.
        let mut head = vec![out.messages.remove(0)];
        push_merged(&mut head, m);
        out.messages.splice(0..0, head);
    } else {
        out.messages.insert(0, m);
        out.origin.insert(0, 0);
    }
}

/// The name of the call `id` among the history's assistant calls.
fn call_name<'a>(history: &'a [ValidMessage], id: &str) -> Option<&'a str> {
    history
        .iter()
        .rev()
        .flat_map(|m| m.tool_calls.iter())
        .find(|c| c.id == id)
        .map(|c| c.name.as_str())
}

/// The text of a message's content (its text parts joined).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Appends `m`, joining it to the previous message when both have the same role:
/// Gemma's template takes strictly alternating turns, while OpenAI clients may
/// send two user messages in a row (text, then an image) or a system and a
/// developer message. Adjacent texts are joined by a blank line. Returns whether
/// `m` was merged.
fn push_merged(out: &mut Vec<TemplateMessage>, m: TemplateMessage) -> bool {
    let Some(prev) = out.last_mut().filter(|p| p.role == m.role) else {
        out.push(m);
        return false;
    };
    let mut parts = into_parts(std::mem::take(&mut prev.content));
    let mut more = into_parts(m.content).into_iter();
    // Only the seam between the two messages is joined; each keeps its own parts.
    if let Some(first) = more.next() {
        match (parts.last_mut(), first.get("text").and_then(Value::as_str)) {
            (Some(last), Some(text)) if last["type"] == "text" => {
                let joined = format!("{}\n\n{text}", last["text"].as_str().unwrap_or_default());
                last["text"] = Value::String(joined);
            }
            _ => parts.push(first),
        }
    }
    parts.extend(more);
    prev.content = Value::Array(parts);
    true
}

fn into_parts(content: Value) -> Vec<Value> {
    match content {
        Value::Array(parts) => parts,
        Value::String(text) => vec![json!({"type": "text", "text": text})],
        other => vec![other],
    }
}

/// Renders, expands images and tokenizes a chat request.
pub fn chat_prompt(
    chat: &ValidChat,
    state: &AppState,
    engine: &Engine,
) -> Result<Prompt, ApiError> {
    let tools = chat.tools.as_ref();
    messages_prompt(
        &chat.messages,
        tools,
        true,
        chat.pan_and_scan,
        state,
        engine,
    )
}

/// Renders `messages` with the chat template, expands their images and tokenizes.
pub fn messages_prompt(
    messages: &[ValidMessage],
    tools: Option<&ValidTools>,
    add_generation_prompt: bool,
    pan_and_scan: Option<bool>,
    state: &AppState,
    engine: &Engine,
) -> Result<Prompt, ApiError> {
    let templated = template_messages(messages, tools, state)?;
    let rendered = templated.render(engine, add_generation_prompt)?;
    let images = templated.images;
    if images.is_empty() {
        let token_ids = engine.text.encode(&rendered)?;
        refuse_image_tokens(engine, &token_ids, "messages")?;
        return Ok(Prompt {
            token_ids,
            images: Vec::new(),
        });
    }
    let vision = engine.vision.as_ref().ok_or_else(|| {
        ApiError::bad_request("this model does not accept images", Some("messages"))
    })?;
    vision.build_prompt(&rendered, &images, pan_and_scan)
}

/// Refuses a prompt without images that holds the image soft token of a model
/// that reads images: the model would put an image's features there, and there
/// is none (with images, the placeholders are checked against them instead).
pub fn refuse_image_tokens(engine: &Engine, ids: &[u32], param: &str) -> Result<(), ApiError> {
    let Some(vision) = engine.vision.as_ref() else {
        return Ok(());
    };
    let image_token = vision.image_token_id();
    match ids.iter().position(|&t| t == image_token) {
        None => Ok(()),
        Some(at) => Err(ApiError::bad_request(
            format!(
                "the prompt holds the image token (id {image_token}, at token {at}) without an \
                 image for it; send images as image_url content parts"
            ),
            Some(param),
        )),
    }
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
