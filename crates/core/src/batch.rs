//! One engine step: the sequences scheduled together and what came out.

use crate::{BlockTable, ExecutorError, ImageInput, KvLayout, SamplingParams, TokenLogprobs};

/// Identifies a sequence for the lifetime of its request.
pub type SeqId = u64;

/// One sequence's share of a step.
#[derive(Debug, Clone)]
pub struct ScheduledSeq {
    pub seq_id: SeqId,
    /// The tokens to run now: a prefill chunk, or the single last sampled token.
    pub tokens: Vec<u32>,
    /// Position of `tokens[0]` in the sequence (the number of tokens already in the KV state).
    pub start_pos: usize,
    /// Sample a token after this chunk (false for a prefill chunk that is not the last).
    pub sample: bool,
    /// Sampling parameters; read when the executor first sees the sequence.
    pub sampling: SamplingParams,
    /// Images whose soft tokens lie in this chunk (positions relative to the sequence).
    pub images: Vec<ImageInput>,
    /// The sequence's KV blocks, one table per layer group (see `KvLayout::groups`),
    /// covering every token this chunk writes and reads.
    pub block_tables: Vec<BlockTable>,
    /// The tokens before `start_pos`, sent once with the first chunk of a
    /// sequence that starts from a cached prefix (the executor never ran them,
    /// and its sampler's penalties count them); empty otherwise.
    pub cached_prefix: Vec<u32>,
}

/// Everything run in one batched forward.
#[derive(Debug, Clone, Default)]
pub struct StepBatch {
    pub seqs: Vec<ScheduledSeq>,
    /// The scheduler expects to admit a waiting request next step (one waits, and
    /// a sequence slot and free blocks are there), so the next step will likely
    /// not be this one's sequences alone: an executor need not run it ahead.
    pub admitting: bool,
}

/// A sequence's result of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqOutput {
    pub seq_id: SeqId,
    /// The sampled token, when the sequence asked for one.
    pub token: Option<u32>,
    pub logprobs: Option<TokenLogprobs>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutput {
    pub outputs: Vec<SeqOutput>,
}

/// Runs batched forwards for the scheduler. Implemented by the candle engine and,
/// in tests, by fakes.
pub trait Executor: Send {
    /// Runs one step over every scheduled sequence and samples where asked.
    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, ExecutorError>;
    /// Forgets a sequence (its sampler state). Its KV blocks belong to whoever
    /// handed them out; a preempted sequence is not released, it restarts at 0.
    fn release(&mut self, seq: SeqId);
    fn kv_layout(&self) -> KvLayout;
    /// Images the executor encoded, and those it served from its encoder cache.
    fn images_encoded(&self) -> (u64, u64) {
        (0, 0)
    }
    /// Positions past a decoding sequence's next token that its blocks should
    /// already hold: an executor that runs the next decode step ahead (before the
    /// scheduler has seen this step's tokens) writes there. The scheduler reserves
    /// them only where free blocks allow; the executor checks before using them.
    fn lookahead_slots(&self) -> usize {
        0
    }
    /// Decode steps the executor ran ahead, and those of them that answered the
    /// scheduler's next step.
    fn steps_run_ahead(&self) -> (u64, u64) {
        (0, 0)
    }
}
