//! Generation of one sequence straight on an executor, without the scheduler:
//! for the `generate` command, tests and benchmarks.

use medgemma_core::{
    DirectBlocks, Executor, ExecutorError, FinishReason, ImageInput, SamplingParams, ScheduledSeq,
    SeqId, StepBatch, TokenLogprobs,
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
    let layout = exec.kv_layout();
    if prompt.len() > layout.max_seq_len {
        return Err(ExecutorError::InvalidBatch(format!(
            "the prompt has {} tokens; the context holds {}",
            prompt.len(),
            layout.max_seq_len
        )));
    }
    // Generation ends with the context: the last sampled token is never cached.
    let max_new_tokens = max_new_tokens.min(layout.max_seq_len - prompt.len() + 1);
    let mut blocks = DirectBlocks::new(&layout);
    let mut pos = 0;
    let mut next = prompt.to_vec();
    let mut images = images.to_vec();
    let mut step_once = |exec: &mut dyn Executor, out: &mut Generation| {
        let mut seq = ScheduledSeq {
            seq_id,
            tokens: std::mem::take(&mut next),
            start_pos: pos,
            sample: true,
            sampling: sampling.clone(),
            images: std::mem::take(&mut images),
            block_tables: Vec::new(),
            cached_prefix: Vec::new(),
        };
        blocks
            .assign(&mut seq)
            .map_err(|e| ExecutorError::InvalidBatch(format!("KV cache full: {e}")))?;
        pos += seq.tokens.len();
        let step = exec.step(&StepBatch {
            seqs: vec![seq],
            admitting: false,
        })?;
        let o = step.outputs.into_iter().next();
        let Some(token) = o.as_ref().and_then(|o| o.token) else {
            return Err(ExecutorError::Step("no token sampled".into()));
        };
        if stop_token_ids.contains(&token) {
            out.finish_reason = FinishReason::Stop;
            return Ok(false);
        }
        out.tokens.push(token);
        out.logprobs.push(o.and_then(|o| o.logprobs));
        next = vec![token];
        Ok(true)
    };
    let mut result = Ok(());
    while out.tokens.len() < max_new_tokens {
        match step_once(exec, &mut out) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    blocks.release(seq_id);
    exec.release(seq_id);
    result.map(|()| out)
}
