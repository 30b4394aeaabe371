//! A generation request as the engine sees it: token ids, pixels, sampling.

use std::sync::Arc;
use std::time::Instant;

use crate::{BlockHash, SamplingParams};

/// One preprocessed image: normalized CHW pixels and where its soft tokens sit in the prompt.
#[derive(Debug, Clone)]
pub struct ImageInput {
    /// `channels * height * width` values, channel-major.
    pub pixels: Arc<[f32]>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Index in `Prompt::token_ids` of this image's first soft token.
    pub placeholder_start: usize,
    /// Number of soft tokens this image fills.
    pub placeholder_len: usize,
    /// Hash of the pixels and their shape (`prefix::image_key`), so a prefix
    /// holding this image's soft tokens is reused only for the same image.
    pub key: BlockHash,
}

impl ImageInput {
    /// An image whose pixels fill the soft tokens `placeholder_start..+placeholder_len`.
    pub fn new(
        pixels: Arc<[f32]>,
        [channels, height, width]: [usize; 3],
        placeholder_start: usize,
        placeholder_len: usize,
    ) -> Self {
        let key = crate::prefix::image_key(&pixels, channels, height, width);
        Self {
            pixels,
            channels,
            height,
            width,
            placeholder_start,
            placeholder_len,
            key,
        }
    }
}

/// The tokenized prompt and its images, in prompt order.
#[derive(Debug, Clone, Default)]
pub struct Prompt {
    pub token_ids: Vec<u32>,
    pub images: Vec<ImageInput>,
}

/// When a sequence ends besides the token limit.
#[derive(Debug, Clone, Default)]
pub struct StopCriteria {
    /// Token ids that end the sequence (the checkpoint's end-of-sequence ids); not emitted as text.
    pub stop_token_ids: Vec<u32>,
    /// Strings that end the sequence; matched on the detokenized text, never emitted.
    pub stop_strings: Vec<String>,
    /// Keep generating through end-of-sequence tokens.
    pub ignore_eos: bool,
}

/// Everything the engine needs to generate one completion.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub id: String,
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    pub stop: StopCriteria,
    pub max_new_tokens: usize,
    pub arrival: Instant,
    /// Mixed into the prefix-cache hashes: only requests with the same salt
    /// share cached blocks (and so can time each other's prompts).
    pub cache_salt: Option<String>,
    /// Waiting requests start in order of priority, lower first (as vLLM's
    /// `priority`), then of arrival; 0 by default.
    pub priority: i32,
}
