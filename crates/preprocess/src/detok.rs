//! Streaming detokenization: text deltas whose concatenation equals decoding all
//! the ids at once. An incomplete UTF-8 sequence (shown as U+FFFD) is held back
//! until the tokens that complete it arrive. With SentencePiece byte fallback
//! (Gemma's tokenizer), a run of `<0xNN>` pieces decodes as a whole, to its text
//! or, if any byte of it is invalid, to one U+FFFD per byte: so a run's text is
//! held back until a token that is not a byte ends it (or the generation does).

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
        // Ids of a byte-fallback run still open at the end wait for its end; ids
        // the decode leaves out (skipped special tokens) do not end a run.
        let open_run = self.ids[self.read_offset..]
            .iter()
            .rev()
            .take_while(|&&i| {
                text.is_fallback_byte(i) || text.decodes_to_nothing(i, self.skip_special_tokens)
            })
            .count();
        let end = self.ids.len() - open_run;
        if end <= self.read_offset {
            return Ok(String::new());
        }
        let prefix = self.decode(text, self.read_offset)?;
        let full = self.decode(text, end)?;
        if full.ends_with('\u{FFFD}') || full.len() <= prefix.len() || !full.starts_with(&prefix) {
            return Ok(String::new());
        }
        let delta = full[prefix.len()..].to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = end;
        Ok(delta)
    }

    /// The text still held back (an incomplete character, an open byte run).
    pub fn finish(&mut self, text: &TextProcessor) -> Result<String, PreprocessError> {
        let prefix = self.decode(text, self.read_offset)?;
        let full = self.decode(text, self.ids.len())?;
        let rest = match full.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.to_string(),
            // Decoding in context changed text already out: nothing held back may
            // be lost, so the held ids are decoded on their own.
            None => text.decode(&self.ids[self.read_offset..], self.skip_special_tokens)?,
        };
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(rest)
    }

    /// Text of the ids from `prefix_offset` to `end`.
    fn decode(&self, text: &TextProcessor, end: usize) -> Result<String, PreprocessError> {
        text.decode(&self.ids[self.prefix_offset..end], self.skip_special_tokens)
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}
