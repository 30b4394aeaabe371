//! Streaming detokenization: text deltas whose concatenation equals decoding all
//! the ids at once. An incomplete UTF-8 sequence (shown as U+FFFD) is held back
//! until the tokens that complete it arrive.

use crate::error::PreprocessError;
use crate::tokenizer::TextProcessor;

#[derive(Debug, Default, Clone)]
pub struct IncrementalDetokenizer {
    ids: Vec<u32>,
    /// Start of the ids decoded as context for the next delta.
    prefix_offset: usize,
    /// End of the ids whose text has been emitted.
    read_offset: usize,
    skip_special_tokens: bool,
}

impl IncrementalDetokenizer {
    pub fn new(skip_special_tokens: bool) -> Self {
        Self {
            skip_special_tokens,
            ..Self::default()
        }
    }

    /// Adds a token; returns the text it completes (possibly empty).
    pub fn push(&mut self, text: &TextProcessor, id: u32) -> Result<String, PreprocessError> {
        self.ids.push(id);
        let prefix = text.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special_tokens,
        )?;
        let full = text.decode(&self.ids[self.prefix_offset..], self.skip_special_tokens)?;
        if full.ends_with('\u{FFFD}') || full.len() <= prefix.len() || !full.starts_with(&prefix) {
            return Ok(String::new());
        }
        let delta = full[prefix.len()..].to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(delta)
    }

    /// The text still held back (an incomplete character at the end).
    pub fn finish(&mut self, text: &TextProcessor) -> Result<String, PreprocessError> {
        let prefix = text.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special_tokens,
        )?;
        let full = text.decode(&self.ids[self.prefix_offset..], self.skip_special_tokens)?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(full
            .get(prefix.len()..)
            .map(String::from)
            .unwrap_or_default())
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}
