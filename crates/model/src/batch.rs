//! The input of one batched forward: several sequences' new tokens, packed.

use medgemma_core::BlockTable;

/// One sequence's slice of the packed tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqSpan {
    /// Index of this sequence's first new token in the packed batch.
    pub offset: usize,
    /// Number of new tokens.
    pub len: usize,
    /// Absolute position of the first new token (must equal the KV state's length).
    pub start_pos: usize,
    /// Image group of each new token for bidirectional attention among one image's
    /// soft tokens (prefill); `-1` for text. `None`: purely causal.
    pub image_groups: Option<Vec<i32>>,
    /// Return logits for the last new token.
    pub want_logits: bool,
    /// The sequence's KV blocks, one table per layer group of the pool.
    pub block_tables: Vec<BlockTable>,
}

impl SeqSpan {
    /// One new token and no image: attention can be batched with other decodes.
    pub fn is_decode(&self) -> bool {
        self.len == 1 && self.image_groups.is_none()
    }
}

/// Several sequences' new tokens, packed in sequence order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ForwardBatch {
    pub token_ids: Vec<u32>,
    pub spans: Vec<SeqSpan>,
}

impl ForwardBatch {
    /// Appends a sequence's tokens; returns its index in the batch.
    pub fn push(&mut self, tokens: &[u32], start_pos: usize, want_logits: bool) -> usize {
        self.spans.push(SeqSpan {
            offset: self.token_ids.len(),
            len: tokens.len(),
            start_pos,
            image_groups: None,
            want_logits,
            block_tables: Vec::new(),
        });
        self.token_ids.extend_from_slice(tokens);
        self.spans.len() - 1
    }

    /// Absolute position of every packed token.
    pub fn positions(&self) -> Vec<usize> {
        self.spans
            .iter()
            .flat_map(|s| s.start_pos..s.start_pos + s.len)
            .collect()
    }

    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }
}
