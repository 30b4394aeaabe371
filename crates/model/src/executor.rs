//! The candle engine behind the scheduler: owns the paged KV pool (allocated once)
//! and every running sequence's sampler, and runs each step as one batched forward
//! over the block tables the scheduler hands in.

use std::collections::HashMap;

use candle_core::Tensor;

use medgemma_core::{
    Executor, ExecutorError, KvLayout, ScheduledSeq, SeqId, SeqOutput, StepBatch, StepOutput,
};

use crate::batch::ForwardBatch;
use crate::decode_graph::{DecodeGraphs, DecodeReplay};
use crate::error::ModelError;
use crate::image_plan::{self, StepImages};
use crate::kv::KvPool;
use crate::kv_budget::{plan_for_device, KvCacheConfig};
use crate::model::Gemma3;
use crate::sampling::Sampler;

struct SeqState {
    sampler: Sampler,
    sampled_any: bool,
    /// Prompt tokens the sampler has seen (a preempted prefill restarts at 0).
    observed: usize,
}

pub struct CandleExecutor {
    model: Gemma3,
    pool: KvPool,
    layout: KvLayout,
    seqs: HashMap<SeqId, SeqState>,
    max_num_seqs: usize,
    graphs: DecodeGraphs,
}

impl CandleExecutor {
    /// Allocates the KV pool as `kv` asks, after the weights are on the device.
    pub fn new(model: Gemma3, kv: &KvCacheConfig) -> Result<Self, ModelError> {
        let (cfg, dtype) = (&model.config.text, model.text.dtype());
        let plan = plan_for_device(cfg, kv, dtype, model.text.device())?;
        let pool = KvPool::new(
            cfg,
            kv.block_size,
            plan.num_blocks,
            dtype,
            model.text.device(),
        )?;
        let layout = pool.layout(plan.max_seq_len);
        tracing::info!(
            blocks = layout.num_blocks,
            block_size = layout.block_size,
            bytes = layout.pool_bytes(),
            max_model_len = layout.max_seq_len,
            "KV cache allocated"
        );
        let graphs = DecodeGraphs::new(DecodeReplay::Off, model.text.device(), kv.max_num_seqs);
        Ok(Self {
            model,
            pool,
            layout,
            seqs: HashMap::new(),
            max_num_seqs: kv.max_num_seqs,
            graphs,
        })
    }

    /// How decode steps run (eager unless asked; `CudaGraphs` only acts on CUDA).
    pub fn with_decode_replay(mut self, mode: DecodeReplay) -> Self {
        self.graphs = DecodeGraphs::new(mode, self.model.text.device(), self.max_num_seqs);
        self
    }

    /// Decode steps captured for replay so far.
    pub fn captured_decode_steps(&self) -> usize {
        self.graphs.captured()
    }

    /// Whether decode steps may still be replayed (asked for, on a device that
    /// can, and no capture failed).
    pub fn decode_graphs_active(&self) -> bool {
        self.graphs.active()
    }

    pub fn model(&self) -> &Gemma3 {
        &self.model
    }

    /// Sequences the executor holds sampler state for.
    pub fn active_sequences(&self) -> usize {
        self.seqs.len()
    }

    fn prepare(&mut self, seqs: &[ScheduledSeq]) -> Result<ForwardBatch, ExecutorError> {
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
            if s.block_tables.len() != self.layout.groups.len() {
                return Err(ExecutorError::InvalidBatch(format!(
                    "sequence {} has {} block tables for {} KV groups",
                    s.seq_id,
                    s.block_tables.len(),
                    self.layout.groups.len()
                )));
            }
            self.check_tokens(&s.tokens)?;
            let state = self.seqs.entry(s.seq_id).or_insert_with(|| SeqState {
                sampler: Sampler::new(s.sampling.clone()),
                sampled_any: false,
                observed: 0,
            });
            if !state.sampled_any {
                // The prompt from `from` on: a cached prefix the sequence skipped,
                // then this chunk.
                let from = s.start_pos.saturating_sub(s.cached_prefix.len());
                let skip = state.observed.saturating_sub(from);
                let unseen: Vec<u32> = s
                    .cached_prefix
                    .iter()
                    .chain(&s.tokens)
                    .skip(skip)
                    .copied()
                    .collect();
                state.sampler.observe_prompt(&unseen);
                state.observed = state.observed.max(s.start_pos + s.tokens.len());
            }
            let i = batch.push(&s.tokens, s.start_pos, s.sample);
            batch.spans[i].block_tables.clone_from(&s.block_tables);
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
    /// forward and merged into the embeddings first; a decode step the graphs
    /// serve is replayed instead.
    fn forward(
        &mut self,
        forward: &ForwardBatch,
        images: &StepImages,
        pixels: Option<&Tensor>,
    ) -> Result<Tensor, ExecutorError> {
        let text = &self.model.text;
        let step_err = |e: candle_core::Error| ExecutorError::Step(e.to_string());
        if pixels.is_none() {
            if let Some(logits) = self
                .graphs
                .run(text, &self.pool, forward)
                .map_err(step_err)?
            {
                return Ok(logits);
            }
        }
        let step = self
            .pool
            .plan(forward, text.device())
            .map_err(|e| ExecutorError::InvalidBatch(e.to_string()))?;
        let mut embeds = text.embed(&forward.token_ids).map_err(step_err)?;
        if let (Some(vision), Some(pixels)) = (&self.model.vision, pixels) {
            let features = vision.encode(pixels).map_err(step_err)?;
            embeds = crate::multimodal::merge_image_features(&embeds, &features, &images.starts)
                .map_err(step_err)?;
        }
        text.forward_planned(&embeds, forward, &self.pool, &step)
            .map_err(step_err)
    }

    /// One token per sequence that asked: argmax on the device for plain greedy
    /// rows (only the ids cross to the host), the host sampler for the rest.
    fn sample(&mut self, batch: &StepBatch, logits: &Tensor) -> Result<StepOutput, ExecutorError> {
        let err = |e: candle_core::Error| ExecutorError::Step(e.to_string());
        let wanting: Vec<&ScheduledSeq> = batch.seqs.iter().filter(|s| s.sample).collect();
        let plain: Vec<bool> = wanting
            .iter()
            .map(|s| {
                self.seqs
                    .get(&s.seq_id)
                    .is_some_and(|st| st.sampler.is_plain_greedy())
            })
            .collect();
        let argmax: Vec<u32> = if plain.iter().any(|&p| p) {
            logits
                .argmax(candle_core::D::Minus1)
                .and_then(|t| t.to_vec1())
                .map_err(err)?
        } else {
            Vec::new()
        };
        let host_rows: Vec<u32> = (0..wanting.len() as u32)
            .filter(|&i| !plain[i as usize])
            .collect();
        let full: Vec<Vec<f32>> = if host_rows.is_empty() {
            Vec::new()
        } else {
            let idx = Tensor::new(host_rows.as_slice(), logits.device()).map_err(err)?;
            logits
                .index_select(&idx, 0)
                .and_then(|t| t.to_vec2())
                .map_err(err)?
        };
        let mut full = full.into_iter();
        let mut tokens = std::collections::HashMap::new();
        for (row, s) in wanting.iter().enumerate() {
            let state = self.seqs.get_mut(&s.seq_id).ok_or_else(|| {
                ExecutorError::Step(format!("sequence {} lost its sampler", s.seq_id))
            })?;
            let picked = if plain[row] {
                state.sampler.accept_argmax(argmax[row]);
                (argmax[row], None)
            } else {
                let l = full
                    .next()
                    .ok_or_else(|| ExecutorError::Step("missing logits row".into()))?;
                state.sampler.sample(&l)
            };
            state.sampled_any = true;
            tokens.insert(s.seq_id, picked);
        }
        let outputs = batch
            .seqs
            .iter()
            .map(|s| {
                let (token, logprobs) = tokens.remove(&s.seq_id).unzip();
                SeqOutput {
                    seq_id: s.seq_id,
                    token,
                    logprobs: logprobs.flatten(),
                }
            })
            .collect();
        Ok(StepOutput { outputs })
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
        let logits = self.forward(&forward, &images, pixels.as_ref())?;
        self.sample(batch, &logits)
    }

    fn release(&mut self, seq: SeqId) {
        self.seqs.remove(&seq);
    }

    fn kv_layout(&self) -> KvLayout {
        self.layout.clone()
    }
}
