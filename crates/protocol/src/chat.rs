//! POST /v1/chat/completions: request, response and stream chunk.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ProtocolError;
use crate::sampling::{SamplingFields, ValidSampling};
use crate::tools::{history_calls, validate_tools, HistoryCall, ToolCall, ValidTools};

#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    /// Per-request pan-and-scan for images (an extension).
    pub do_pan_and_scan: Option<bool>,
    /// Tool calling (checked by [`validate_tools`]); the deprecated `functions`
    /// and `function_call` are refused (see [`refuse_unsupported`]), never
    /// silently ignored. (`response_format` is a sampling field, shared with
    /// completions.)
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub functions: Option<Value>,
    pub function_call: Option<Value>,
    /// Read from the same body separately (see `parse_with_sampling`), so that a
    /// wrong type names its field.
    #[serde(skip)]
    pub sampling: SamplingFields,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// A message as sent; its content is checked by [`validate_messages`].
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<serde_json::Value>,
    pub name: Option<String>,
    pub tool_calls: Option<Value>,
    pub tool_call_id: Option<String>,
}

/// A checked message.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidMessage {
    pub role: String,
    pub content: MessageContent,
    /// An assistant message's tool calls.
    pub tool_calls: Vec<HistoryCall>,
    /// A tool message's answer to this call.
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ContentPart {
    Text { text: String },
    ImageUrl { url: String },
}

/// A checked chat request.
#[derive(Debug, Clone)]
pub struct ValidChat {
    pub messages: Vec<ValidMessage>,
    pub stream: bool,
    pub include_usage: bool,
    /// `Some(n)`: return logprobs with the top n alternatives.
    pub logprobs: Option<usize>,
    pub sampling: ValidSampling,
    pub pan_and_scan: Option<bool>,
    /// Tools the model may call.
    pub tools: Option<ValidTools>,
}

pub const MAX_TOP_LOGPROBS: i64 = 20;

impl ChatCompletionRequest {
    pub fn validate(self) -> Result<ValidChat, ProtocolError> {
        refuse_unsupported(&self)?;
        let messages = validate_messages(&self.messages)?;
        let logprobs = match (self.logprobs.unwrap_or(false), self.top_logprobs) {
            (_, Some(n)) if !(0..=MAX_TOP_LOGPROBS).contains(&n) => {
                return Err(ProtocolError::param(
                    "top_logprobs",
                    format!("'top_logprobs' must be between 0 and {MAX_TOP_LOGPROBS}, got {n}"),
                ))
            }
            (false, Some(n)) if n > 0 => {
                return Err(ProtocolError::param(
                    "top_logprobs",
                    "'top_logprobs' needs 'logprobs': true",
                ))
            }
            (true, n) => Some(n.unwrap_or(0) as usize),
            (false, _) => None,
        };
        let stream = self.stream.unwrap_or(false);
        let tools = validate_tools(
            self.tools.as_ref(),
            self.tool_choice.as_ref(),
            self.parallel_tool_calls,
        )?;
        Ok(ValidChat {
            tools,
            sampling: self.sampling.validate()?,
            messages,
            stream,
            include_usage: stream
                && self
                    .stream_options
                    .and_then(|o| o.include_usage)
                    .unwrap_or(false),
            logprobs,
            pan_and_scan: self.do_pan_and_scan,
        })
    }
}

/// The deprecated `functions` and `function_call`: a client that sends them
/// relies on them, so the request is refused (naming `tools`) rather than
/// answered without.
fn refuse_unsupported(r: &ChatCompletionRequest) -> Result<(), ProtocolError> {
    for (param, value) in [
        ("functions", &r.functions),
        ("function_call", &r.function_call),
    ] {
        let given = match value {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::String(s)) => s != "none" && s != "auto",
            Some(_) => true,
        };
        if given {
            return Err(ProtocolError::param(
                param,
                format!("'{param}' is not supported: use 'tools' and 'tool_choice'"),
            ));
        }
    }
    Ok(())
}

/// Checks roles and content parts, naming the offending message and part.
pub fn validate_messages(messages: &[ChatMessage]) -> Result<Vec<ValidMessage>, ProtocolError> {
    if messages.is_empty() {
        return Err(ProtocolError::param(
            "messages",
            "'messages' must contain at least one message",
        ));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| check_message(i, m))
        .collect()
}

fn check_message(i: usize, m: &ChatMessage) -> Result<ValidMessage, ProtocolError> {
    let param = format!("messages[{i}]");
    match m.role.as_str() {
        "system" | "developer" | "user" | "assistant" | "tool" => {}
        "function" => {
            return Err(ProtocolError::invalid(
                format!("messages[{i}]: \"function\" messages are not supported (use \"tool\")"),
                Some(format!("{param}.role")),
            ))
        }
        other => {
            return Err(ProtocolError::invalid(
                format!(
                "messages[{i}].role {other:?} is not supported (system, user, assistant or tool)"
            ),
                Some(format!("{param}.role")),
            ))
        }
    }
    let tool_calls = match &m.tool_calls {
        None | Some(Value::Null) => Vec::new(),
        Some(_) if m.role != "assistant" => {
            return Err(ProtocolError::invalid(
                format!("{param}: only assistant messages have tool_calls"),
                Some(format!("{param}.tool_calls")),
            ))
        }
        Some(calls) => history_calls(calls, &format!("{param}.tool_calls"))?,
    };
    if m.role == "tool" && m.tool_call_id.is_none() {
        return Err(ProtocolError::invalid(
            format!("{param}: a tool message needs 'tool_call_id'"),
            Some(format!("{param}.tool_call_id")),
        ));
    }
    let content = match &m.content {
        Some(Value::String(s)) => MessageContent::Text(s.clone()),
        Some(Value::Array(parts)) => MessageContent::Parts(
            parts
                .iter()
                .enumerate()
                .map(|(j, p)| content_part(p, &format!("{param}.content[{j}]")))
                .collect::<Result<_, _>>()?,
        ),
        // An assistant message may be its tool calls alone.
        None | Some(Value::Null) if !tool_calls.is_empty() => MessageContent::Text(String::new()),
        None | Some(Value::Null) => {
            return Err(ProtocolError::invalid(
                format!("{param} has no content"),
                Some(format!("{param}.content")),
            ))
        }
        Some(_) => {
            return Err(ProtocolError::invalid(
                format!("{param}.content must be a string or a list of content parts"),
                Some(format!("{param}.content")),
            ))
        }
    };
    let has_image = matches!(&content, MessageContent::Parts(p) if p.iter().any(|x| matches!(x, ContentPart::ImageUrl { .. })));
    if has_image && m.role != "user" {
        return Err(ProtocolError::invalid(
            format!("{param}: images are accepted in user messages only"),
            Some(format!("{param}.content")),
        ));
    }
    Ok(ValidMessage {
        role: m.role.clone(),
        content,
        tool_calls,
        // Only a tool message is a result; the field elsewhere means nothing.
        tool_call_id: m.tool_call_id.clone().filter(|_| m.role == "tool"),
    })
}

fn content_part(p: &Value, param: &str) -> Result<ContentPart, ProtocolError> {
    let err = |msg: String| ProtocolError::invalid(msg, Some(param.to_string()));
    match p.get("type").and_then(Value::as_str) {
        Some("text") => match p.get("text").and_then(Value::as_str) {
            Some(t) => Ok(ContentPart::Text {
                text: t.to_string(),
            }),
            None => Err(err(format!("{param}: a text part needs a string 'text'"))),
        },
        Some("image_url") => {
            let url = match p.get("image_url") {
                Some(Value::String(u)) => Some(u.clone()),
                Some(obj) => obj.get("url").and_then(Value::as_str).map(String::from),
                None => None,
            };
            url.map(|url| ContentPart::ImageUrl { url }).ok_or_else(|| {
                err(format!(
                    "{param}: an image_url part needs 'image_url': {{'url': ...}}"
                ))
            })
        }
        Some(other) => Err(err(format!(
            "{param}: content part type {other:?} is not supported (text, image_url)"
        ))),
        None => Err(err(format!("{param}: a content part needs a 'type'"))),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    /// `None` (null) when the answer is tool calls.
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<TokenLogprob>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

/// As OpenAI reports it: prompt tokens served from the prefix cache.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize, cached_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// Left out when `None`; `Some(None)` is an explicit `null` (the first
    /// chunk of an answer that may be tool calls, as OpenAI sends it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Option<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}
