//! POST /v1/completions: request and response.

use serde::{Deserialize, Serialize};

use crate::chat::Usage;
use crate::error::ProtocolError;
use crate::sampling::{SamplingFields, ValidSampling};

/// `prompt`: a string, a list of strings, a list of token ids or a list of those.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: PromptInput,
    pub stream: Option<bool>,
    pub stream_options: Option<crate::chat::StreamOptions>,
    pub echo: Option<bool>,
    pub logprobs: Option<i64>,
    pub suffix: Option<String>,
    pub best_of: Option<i64>,
    /// Read from the same body separately (see `parse_with_sampling`), so that a
    /// wrong type names its field.
    #[serde(skip)]
    pub sampling: SamplingFields,
}

/// One prompt of a completion request, as text or as token ids.
#[derive(Debug, Clone, PartialEq)]
pub enum OnePrompt {
    Text(String),
    Ids(Vec<u32>),
}

#[derive(Debug, Clone)]
pub struct ValidCompletion {
    pub prompts: Vec<OnePrompt>,
    pub stream: bool,
    pub include_usage: bool,
    pub echo: bool,
    pub logprobs: Option<usize>,
    pub sampling: ValidSampling,
}

/// OpenAI's default for /v1/completions.
pub const DEFAULT_COMPLETION_TOKENS: usize = 16;

impl CompletionRequest {
    pub fn validate(self) -> Result<ValidCompletion, ProtocolError> {
        let prompts: Vec<OnePrompt> = match self.prompt {
            PromptInput::Text(s) => vec![OnePrompt::Text(s)],
            PromptInput::Texts(v) => v.into_iter().map(OnePrompt::Text).collect(),
            PromptInput::Ids(v) => vec![OnePrompt::Ids(v)],
            PromptInput::IdLists(v) => v.into_iter().map(OnePrompt::Ids).collect(),
        };
        if prompts.is_empty()
            || prompts
                .iter()
                .any(|p| matches!(p, OnePrompt::Ids(v) if v.is_empty()))
        {
            return Err(ProtocolError::param("prompt", "'prompt' must not be empty"));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ProtocolError::param(
                "suffix",
                "'suffix' is not supported by this model",
            ));
        }
        if self
            .best_of
            .is_some_and(|b| b != 1 && Some(b) != self.sampling.n)
        {
            return Err(ProtocolError::param(
                "best_of",
                "'best_of' other than n is not supported",
            ));
        }
        let logprobs = match self.logprobs {
            Some(n) if !(0..=20).contains(&n) => {
                return Err(ProtocolError::param(
                    "logprobs",
                    format!("'logprobs' must be between 0 and 20, got {n}"),
                ))
            }
            other => other.map(|n| n as usize),
        };
        let stream = self.stream.unwrap_or(false);
        Ok(ValidCompletion {
            prompts,
            stream,
            include_usage: stream
                && self
                    .stream_options
                    .and_then(|o| o.include_usage)
                    .unwrap_or(false),
            echo: self.echo.unwrap_or(false),
            logprobs,
            sampling: self.sampling.validate()?,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<serde_json::Map<String, serde_json::Value>>>,
    pub text_offset: Vec<usize>,
}
