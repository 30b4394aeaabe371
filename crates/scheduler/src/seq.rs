//! One request's sequence inside the engine.

use medgemma_core::{FinishReason, GenerateRequest, SeqBlocks, SeqId, TokenEvent, Usage};
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
}

impl Sequence {
    pub fn new(id: SeqId, req: GenerateRequest, tx: UnboundedSender<TokenEvent>) -> Self {
        let tokens = req.prompt.token_ids.clone();
        Self {
            id,
            req,
            tx,
            tokens,
            computed: 0,
            generated: 0,
            blocks: SeqBlocks::default(),
            prompt_counted: 0,
            preemptions: 0,
        }
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
        self.generated += 1;
        if self.generated >= self.req.max_new_tokens || self.tokens.len() >= max_model_len {
            return Some(FinishReason::Length);
        }
        None
    }
}
