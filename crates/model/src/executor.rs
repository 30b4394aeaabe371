//! The candle engine behind the scheduler: owns every running sequence's KV state
//! and sampler, and runs each step as one batched forward.

use std::collections::HashMap;

use candle_core::Tensor;

use medgemma_core::{
    Executor, ExecutorError, KvLayout, ScheduledSeq, SeqId, SeqOutput, StepBatch, StepOutput,
};

use crate::batch::ForwardBatch;
use crate::image_plan::{self, StepImages};
use crate::kv::SeqKv;
use crate::model::Gemma3;
use crate::sampling::Sampler;

struct SeqState {
    kv: SeqKv,
    sampler: Sampler,
    sampled_any: bool,
}

pub struct CandleExecutor {
    model: Gemma3,
    seqs: HashMap<SeqId, SeqState>,
}

impl CandleExecutor {
    pub fn new(model: Gemma3) -> Self {
        Self {
            model,
            seqs: HashMap::new(),
        }
    }

    pub fn model(&self) -> &Gemma3 {
        &self.model
    }

    /// Sequences currently holding KV state.
    pub fn active_sequences(&self) -> usize {
        self.seqs.len()
    }

    fn prepare(&mut self, seqs: &[ScheduledSeq]) -> Result<ForwardBatch, ExecutorError> {
        let num_layers = self.model.config.text.num_hidden_layers;
        let mut batch = ForwardBatch::default();
        for (i, s) in seqs.iter().enumerate() {
            if seqs[..i].iter().any(|o| o.seq_id == s.seq_id) {
                return Err(ExecutorError::InvalidBatch(format!(
                    "sequence {} scheduled twice",
                    s.seq_id
                )));
            }
            if s.tokens.is_empty() {
                return Err(ExecutorError::InvalidBatch(format!(
                    "sequence {} has no tokens",
                    s.seq_id
                )));
            }
            let state = self.seqs.entry(s.seq_id).or_insert_with(|| SeqState {
                kv: SeqKv::new(num_layers),
                sampler: Sampler::new(s.sampling.clone()),
                sampled_any: false,
            });
            if state.kv.len() != s.start_pos {
                return Err(ExecutorError::InvalidBatch(format!(
                    "sequence {} starts at {} but holds {} tokens",
                    s.seq_id,
                    s.start_pos,
                    state.kv.len()
                )));
            }
            if !state.sampled_any {
                state.sampler.observe_prompt(&s.tokens);
            }
            self.check_tokens(&s.tokens)?;
            batch.push(&s.tokens, s.start_pos, s.sample);
        }
        Ok(batch)
    }

    /// All images of the step as one `[images, 3, size, size]` tensor (checked
    /// before any sequence state changes), or `None` without images.
    fn stack_pixels(&self, images: &StepImages) -> Result<Option<Tensor>, ExecutorError> {
        if images.is_empty() {
            return Ok(None);
        }
        let vision =
            self.model.vision.as_ref().ok_or_else(|| {
                ExecutorError::InvalidBatch("the model has no vision tower".into())
            })?;
        vision
            .pixels(&images.images, self.model.text.device())
            .map(Some)
            .map_err(ExecutorError::InvalidBatch)
    }

    /// The decoder forward, with the step's images encoded in one batched vision
    /// forward and merged into the embeddings first.
    fn forward(
        &self,
        forward: &ForwardBatch,
        images: &StepImages,
        pixels: Option<&Tensor>,
        kvs: &mut [&mut SeqKv],
    ) -> Result<Tensor, ExecutorError> {
        let text = &self.model.text;
        let step_err = |e: candle_core::Error| ExecutorError::Step(e.to_string());
        let (vision, pixels) = match (&self.model.vision, pixels) {
            (Some(v), Some(p)) => (v, p),
            _ => return text.forward(forward, kvs).map_err(step_err),
        };
        let features = vision.encode(pixels).map_err(step_err)?;
        let embeds = text.embed(&forward.token_ids).map_err(step_err)?;
        let merged = crate::multimodal::merge_image_features(&embeds, &features, &images.starts)
            .map_err(step_err)?;
        text.forward_embeds(&merged, forward, kvs).map_err(step_err)
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<(), ExecutorError> {
        let vocab = self.model.config.text.vocab_size;
        match tokens.iter().find(|&&t| t as usize >= vocab) {
            Some(t) => Err(ExecutorError::InvalidBatch(format!(
                "token id {t} is outside the vocabulary ({vocab})"
            ))),
            None => Ok(()),
        }
    }
}

impl Executor for CandleExecutor {
    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, ExecutorError> {
        let mm = self.model.vision.as_ref().map(|v| &v.config);
        let images = image_plan::plan(&batch.seqs, mm)?;
        let pixels = self.stack_pixels(&images)?;
        let mut forward = self.prepare(&batch.seqs)?;
        for (span, groups) in forward.spans.iter_mut().zip(&images.groups) {
            span.image_groups.clone_from(groups);
        }
        let mut states: Vec<SeqState> = batch
            .seqs
            .iter()
            .filter_map(|s| self.seqs.remove(&s.seq_id))
            .collect();
        let result = {
            let mut kvs: Vec<&mut SeqKv> = states.iter_mut().map(|s| &mut s.kv).collect();
            self.forward(&forward, &images, pixels.as_ref(), &mut kvs)
        };
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                // The KV states are now inconsistent: drop them; the scheduler fails these sequences.
                return Err(ExecutorError::Step(e.to_string()));
            }
        };
        let mut outputs = Vec::with_capacity(batch.seqs.len());
        let mut row = 0;
        for (s, mut state) in batch.seqs.iter().zip(states) {
            let mut out = SeqOutput {
                seq_id: s.seq_id,
                token: None,
                logprobs: None,
            };
            if s.sample {
                let l = crate::text::TextModel::row(&logits, row)
                    .map_err(|e| ExecutorError::Step(e.to_string()))?;
                row += 1;
                let (token, lp) = state.sampler.sample(&l);
                state.sampled_any = true;
                out.token = Some(token);
                out.logprobs = lp;
            }
            self.seqs.insert(s.seq_id, state);
            outputs.push(out);
        }
        Ok(StepOutput { outputs })
    }

    fn release(&mut self, seq: SeqId) {
        self.seqs.remove(&seq);
    }

    fn kv_layout(&self) -> KvLayout {
        let t = &self.model.config.text;
        let dtype_bytes = self.model.text.dtype().size_in_bytes();
        KvLayout {
            max_seq_len: t.max_position_embeddings,
            num_layers: t.num_hidden_layers,
            bytes_per_token: 2
                * t.num_key_value_heads
                * t.head_dim
                * dtype_bytes
                * t.num_hidden_layers,
        }
    }
}
