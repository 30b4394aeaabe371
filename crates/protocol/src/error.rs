//! The OpenAI error body: `{"error":{"message","type","param","code"}}`.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A request the protocol layer rejects (always a 400).
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolError {
    pub message: String,
    pub param: Option<String>,
}

impl ProtocolError {
    pub fn invalid(message: impl Into<String>, param: Option<String>) -> Self {
        Self {
            message: message.into(),
            param,
        }
    }

    pub fn param(param: &str, message: impl Into<String>) -> Self {
        Self::invalid(message, Some(param.to_string()))
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProtocolError {}
