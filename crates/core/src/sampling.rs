//! Sampling parameters of one request, already validated by the caller.

use serde::{Deserialize, Serialize};

use crate::constraint::Constraint;

/// How the next token is chosen. A temperature of 0 means greedy decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1.0 disables top-p.
    pub top_p: f32,
    /// 0.0 disables min-p.
    pub min_p: f32,
    /// Seed of this request's own random generator; `None` draws one.
    pub seed: Option<u64>,
    /// Added to the logit of a token before anything else (OpenAI `logit_bias`).
    pub logit_bias: Vec<(u32, f32)>,
    /// Hugging Face style: divides positive logits of seen tokens (prompt and output), multiplies negative ones. 1.0 disables.
    pub repetition_penalty: f32,
    /// OpenAI style: subtracts `count * frequency_penalty` for each token generated so far.
    pub frequency_penalty: f32,
    /// OpenAI style: subtracts `presence_penalty` once for each token generated so far.
    pub presence_penalty: f32,
    /// Return the top-n log probabilities of each generated token (`Some(0)`: only the chosen one).
    pub logprobs: Option<usize>,
    /// Tokens that may never be chosen (e.g. end-of-sequence while `min_tokens` is not reached).
    pub suppress_tokens: Vec<u32>,
    /// `end_tokens` may not be chosen before this many tokens were generated.
    pub min_tokens: usize,
    /// The tokens that end the output (held back by `min_tokens`).
    pub end_tokens: Vec<u32>,
    /// Only tokens this allows may be chosen (JSON mode).
    #[serde(skip)]
    pub constraint: Option<Constraint>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: None,
            logit_bias: Vec::new(),
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logprobs: None,
            suppress_tokens: Vec::new(),
            min_tokens: 0,
            end_tokens: Vec::new(),
            constraint: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }
}
