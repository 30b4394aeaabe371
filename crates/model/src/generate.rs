//! Generation of one sequence straight on an executor, without the scheduler:
//! for the `generate` command, tests and benchmarks.

use medgemma_core::{
    Executor, ExecutorError, FinishReason, ImageInput, SamplingParams, ScheduledSeq, SeqId,
    StepBatch, TokenLogprobs,
};

/// A finished single-sequence generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<Option<TokenLogprobs>>,
    pub finish_reason: FinishReason,
}

/// Prefills `prompt` and decodes until a stop token (not included) or `max_new_tokens`.
pub fn generate(
    exec: &mut dyn Executor,
    seq_id: SeqId,
    prompt: &[u32],
    sampling: &SamplingParams,
    stop_token_ids: &[u32],
    max_new_tokens: usize,
) -> Result<Generation, ExecutorError> {
    generate_with_images(
        exec,
        seq_id,
        prompt,
        &[],
        sampling,
        stop_token_ids,
        max_new_tokens,
    )
}

/// As `generate`, with the prompt's images (prefilled in one chunk with the prompt).
pub fn generate_with_images(
    exec: &mut dyn Executor,
    seq_id: SeqId,
    prompt: &[u32],
    images: &[ImageInput],
    sampling: &SamplingParams,
    stop_token_ids: &[u32],
    max_new_tokens: usize,
) -> Result<Generation, ExecutorError> {
    let mut out = Generation {
        tokens: Vec::new(),
        logprobs: Vec::new(),
        finish_reason: FinishReason::Length,
    };
    let mut next = prompt.to_vec();
    let mut pos = 0;
    let mut images = images.to_vec();
    while out.tokens.len() < max_new_tokens {
        let seq = ScheduledSeq {
            seq_id,
            tokens: std::mem::take(&mut next),
            start_pos: pos,
            sample: true,
            sampling: sampling.clone(),
            images: std::mem::take(&mut images),
        };
        pos += seq.tokens.len();
        let step = exec.step(&StepBatch { seqs: vec![seq] });
        let step = match step {
            Ok(s) => s,
            Err(e) => {
                exec.release(seq_id);
                return Err(e);
            }
        };
        let o = step.outputs.into_iter().next();
        let Some(token) = o.as_ref().and_then(|o| o.token) else {
            exec.release(seq_id);
            return Err(ExecutorError::Step("no token sampled".into()));
        };
        if stop_token_ids.contains(&token) {
            out.finish_reason = FinishReason::Stop;
            break;
        }
        out.tokens.push(token);
        out.logprobs.push(o.and_then(|o| o.logprobs));
        next = vec![token];
    }
    exec.release(seq_id);
    Ok(out)
}
