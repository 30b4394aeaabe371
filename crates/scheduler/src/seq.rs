//! One request's sequence inside the engine.

use medgemma_core::prefix::{block_hash, chain_root, salted};
use medgemma_core::{
    BlockHash, FinishReason, GenerateRequest, SeqBlocks, SeqId, TokenEvent, Usage,
};
use tokio::sync::mpsc::UnboundedSender;

pub(crate) struct Sequence {
    pub id: SeqId,
    pub req: GenerateRequest,
    pub tx: UnboundedSender<TokenEvent>,
    /// Prompt and generated tokens.
    pub tokens: Vec<u32>,
    /// Tokens already in the executor's KV state.
    pub computed: usize,
    pub generated: usize,
    /// The KV blocks the sequence holds (none while waiting).
    pub blocks: SeqBlocks,
    /// Prompt tokens counted in the metrics (a preempted sequence recomputes them).
    pub prompt_counted: usize,
    /// Times the sequence was preempted.
    pub preemptions: usize,
    /// Content hash of each full block of `tokens` (see `medgemma_core::prefix`).
    pub hashes: Vec<BlockHash>,
    /// Blocks already offered to the prefix cache.
    pub registered: usize,
    /// Prompt tokens that came from the prefix cache when the sequence started.
    pub cached_tokens: usize,
    /// The prefix tokens the executor has yet to be told of (after a cache hit).
    pub unsent_prefix: usize,
    block_size: usize,
}

impl Sequence {
    pub fn new(
        id: SeqId,
        req: GenerateRequest,
        tx: UnboundedSender<TokenEvent>,
        block_size: usize,
    ) -> Self {
        let mut req = req;
        // Image keys as this salt sees them: neither the prefix cache nor the
        // executor's encoder cache serves one tenant's image to another.
        if let Some(salt) = &req.cache_salt {
            for img in &mut req.prompt.images {
                img.key = salted(img.key, salt);
            }
        }
        let tokens = req.prompt.token_ids.clone();
        let mut seq = Self {
            id,
            req,
            tx,
            tokens,
            computed: 0,
            generated: 0,
            blocks: SeqBlocks::default(),
            prompt_counted: 0,
            preemptions: 0,
            hashes: Vec::new(),
            registered: 0,
            cached_tokens: 0,
            unsent_prefix: 0,
            block_size: block_size.max(1),
        };
        seq.hash_full_blocks();
        seq
    }

    /// Hashes the blocks `tokens` filled since the last call.
    fn hash_full_blocks(&mut self) {
        let bs = self.block_size;
        while (self.hashes.len() + 1) * bs <= self.tokens.len() {
            let i = self.hashes.len();
            let (a, b) = (i * bs, (i + 1) * bs);
            let parent = match self.hashes.last() {
                Some(&h) => h,
                None => chain_root(self.req.cache_salt.as_deref()),
            };
            let images: Vec<(BlockHash, usize)> = self
                .req
                .prompt
                .images
                .iter()
                .filter(|img| {
                    img.placeholder_start < b && a < img.placeholder_start + img.placeholder_len
                })
                .map(|img| (img.key, img.placeholder_start))
                .collect();
            self.hashes
                .push(block_hash(parent, &self.tokens[a..b], &images));
        }
    }

    /// Whether the sequence may start after its first `blocks` blocks: never
    /// inside an image (its tokens attend to each other both ways, so they run in
    /// one chunk), and never with nothing left to run (the last token's logits
    /// give the next one).
    pub fn may_start_at(&self, blocks: usize) -> bool {
        let pos = blocks * self.block_size;
        pos < self.tokens.len()
            && !self.req.prompt.images.iter().any(|img| {
                img.placeholder_start < pos && pos < img.placeholder_start + img.placeholder_len
            })
    }

    pub fn prompt_len(&self) -> usize {
        self.req.prompt.token_ids.len()
    }

    /// The client dropped its stream.
    pub fn is_cancelled(&self) -> bool {
        self.tx.is_closed()
    }

    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_len(),
            completion_tokens: self.generated,
            cached_tokens: self.cached_tokens,
        }
    }

    /// Records a sampled token; returns why the sequence ends, if it does.
    pub fn accept(&mut self, token: u32, max_model_len: usize) -> Option<FinishReason> {
        let stop = &self.req.stop;
        if !stop.ignore_eos && stop.stop_token_ids.contains(&token) {
            // Sampled like any token, so counted (as vLLM and TGI count it), but
            // never part of the text.
            self.generated += 1;
            return Some(FinishReason::Stop);
        }
        self.tokens.push(token);
        self.hash_full_blocks();
        self.generated += 1;
        if self.generated >= self.req.max_new_tokens || self.tokens.len() >= max_model_len {
            return Some(FinishReason::Length);
        }
        None
    }
}
