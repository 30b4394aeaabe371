//! OpenAI wire types (chat and text completions, models, errors) and their
//! validation into plain, checked values. Unknown fields are ignored, as OpenAI
//! does; a wrong type or an out-of-range value is an error naming the param.

pub mod chat;
pub mod completion;
pub mod error;
pub mod sampling;
pub mod tokenize;

pub use chat::{
    validate_messages, ChatCompletionRequest, ChatMessage, ContentPart, MessageContent,
    ValidMessage,
};
pub use completion::{CompletionRequest, PromptInput};
pub use error::{ErrorBody, ErrorDetail, ProtocolError};
pub mod tools;
pub use sampling::{OutputFormat, SamplingFields, ValidSampling};
pub use tools::{FunctionCall, HistoryCall, ToolCall, ToolChoice, ToolDef, ValidTools};

/// Parses a JSON body into `T`, naming the offending field in the error.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    from_value(&json_object(body)?)
}

/// The body as a JSON object.
fn json_object(body: &[u8]) -> Result<serde_json::Value, ProtocolError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ProtocolError::invalid(format!("the body is not valid JSON: {e}"), None))?;
    if !value.is_object() {
        return Err(ProtocolError::invalid(
            "the body must be a JSON object",
            None,
        ));
    }
    Ok(value)
}

/// Deserializes `T` from an already parsed body, naming the offending field.
pub fn from_value<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<T, ProtocolError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing field is named as the param (`messages`, `messages[0].role`).
        let missing = inner
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next());
        if path == "." {
            ProtocolError::invalid(
                format!("invalid request: {inner}"),
                missing.map(String::from),
            )
        } else {
            let param = match missing {
                Some(field) => format!("{path}.{field}"),
                None => path.clone(),
            };
            ProtocolError::invalid(format!("invalid value for '{path}': {inner}"), Some(param))
        }
    })
}

/// Seconds since the Unix epoch, for `created`.
pub fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A request type whose sampling fields live at the top level of the body.
pub trait WithSampling: serde::de::DeserializeOwned {
    fn set_sampling(&mut self, s: SamplingFields);
}

impl WithSampling for ChatCompletionRequest {
    fn set_sampling(&mut self, s: SamplingFields) {
        self.sampling = s;
    }
}

impl WithSampling for CompletionRequest {
    fn set_sampling(&mut self, s: SamplingFields) {
        self.sampling = s;
    }
}

/// Parses a chat or completion body: the request and its sampling fields.
pub fn parse_request<T: WithSampling>(body: &[u8]) -> Result<T, ProtocolError> {
    let value = json_object(body)?;
    let mut req: T = from_value(&value)?;
    req.set_sampling(from_value(&value)?);
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing field is named as the param, at the top level and inside.
    #[test]
    fn missing_fields_are_named() {
        let e = parse_request::<ChatCompletionRequest>(br#"{"model": "m"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"), "{}", e.message);
        let e = parse_request::<ChatCompletionRequest>(br#"{"messages": [{"content": "x"}]}"#)
            .unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("messages[0].role"),
            "{}",
            e.message
        );
    }
}
