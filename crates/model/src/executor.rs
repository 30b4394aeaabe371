//! The candle engine behind the scheduler: owns the paged KV pool (allocated once)
//! and every running sequence's sampler, and runs each step as one batched forward
//! over the block tables the scheduler hands in.

use std::collections::HashMap;

use candle_core::Tensor;

use medgemma_core::{
    Executor, ExecutorError, ImageInput, KvLayout, ScheduledSeq, SeqId, SeqOutput, StepBatch,
    StepOutput, TokenLogprobs,
};

use crate::batch::ForwardBatch;
use crate::decode_graph::{DecodeGraphs, DecodeReplay};
use crate::encoder_cache::EncoderCache;
use crate::error::ModelError;
use crate::host_rows::HostRow;
use crate::image_plan::{self, StepImages};
use crate::kv::KvPool;
use crate::kv_budget::{plan_for_device, KvCacheConfig};
use crate::lookahead::{Lookahead, LookaheadStats};
use crate::model::Gemma3;
use crate::sampling::Sampler;

/// A step's images: the features the encoder cache holds (in step order), and
/// the pixels of the others, to encode.
struct ToEncode {
    cached: Vec<Option<Tensor>>,
    pixels: Option<Tensor>,
}

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
    encoder: EncoderCache,
    encoded: u64,
    /// Greedy rows picked by the argmax kernel (it passed its self-test).
    argmax_kernel: bool,
    /// Top-k rows sent to the host as their largest logits (`crate::topk`).
    topk_kernel: bool,
    /// Replayed greedy decode steps run one step ahead (`crate::lookahead`).
    ahead: Lookahead,
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
        let argmax_kernel = crate::argmax::usable(model.text.device(), cfg.vocab_size);
        let topk_kernel = crate::topk::usable(model.text.device(), cfg.vocab_size);
        Ok(Self {
            model,
            pool,
            layout,
            seqs: HashMap::new(),
            max_num_seqs: kv.max_num_seqs,
            graphs,
            encoder: EncoderCache::new(
                usize::try_from(kv.encoder_cache_bytes).unwrap_or(usize::MAX),
            ),
            encoded: 0,
            argmax_kernel,
            topk_kernel,
            ahead: Lookahead::new(true),
        })
    }

    /// How decode steps run (eager unless asked; `CudaGraphs` only acts on CUDA).
    pub fn with_decode_replay(mut self, mode: DecodeReplay) -> Self {
        self.graphs = DecodeGraphs::new(mode, self.model.text.device(), self.max_num_seqs);
        self
    }

    /// Turns the rows attention kernel on or off for the steps it suits (see
    /// `KvPool::with_paged_rows`; on by default where its self-test passed).
    pub fn with_paged_rows(mut self, on: bool) -> Self {
        self.pool = self.pool.with_paged_rows(on);
        self
    }

    /// Keeps up to `bytes` of image features for reuse (0: none).
    pub fn with_encoder_cache(mut self, bytes: usize) -> Self {
        self.encoder = EncoderCache::new(bytes);
        self
    }

    /// Runs replayed greedy decode steps one step ahead (on by default; it acts
    /// wherever decode steps are replayed).
    pub fn with_lookahead(mut self, on: bool) -> Self {
        self.ahead.set_enabled(on);
        self
    }

    /// Sends top-k rows to the host as their largest logits (on by default where
    /// the kernel passed its self-test; on the CPU the host form, for tests).
    pub fn with_topk_candidates(mut self, on: bool) -> Self {
        self.topk_kernel = on;
        self
    }

    /// Steps run ahead, and how many of them answered their step.
    pub fn lookahead_stats(&self) -> std::sync::Arc<LookaheadStats> {
        self.ahead.stats()
    }

    fn runs_ahead(&self) -> bool {
        self.ahead.enabled() && self.graphs.active()
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

    /// Checks every sequence of the step before any state changes: one that
    /// cannot run is named, so the scheduler fails it alone.
    fn validate(&self, seqs: &[ScheduledSeq], images: &StepImages) -> Result<(), ExecutorError> {
        let bad = |seq, msg: String| ExecutorError::InvalidSequence { seq, msg };
        let vocab = self.model.config.text.vocab_size;
        for (i, s) in seqs.iter().enumerate() {
            if seqs[..i].iter().any(|o| o.seq_id == s.seq_id) {
                return Err(ExecutorError::InvalidBatch(format!(
                    "sequence {} scheduled twice",
                    s.seq_id
                )));
            }
            if s.tokens.is_empty() {
                return Err(bad(s.seq_id, "no tokens".into()));
            }
            if s.block_tables.len() != self.layout.groups.len() {
                return Err(bad(
                    s.seq_id,
                    format!(
                        "{} block tables for {} KV groups",
                        s.block_tables.len(),
                        self.layout.groups.len()
                    ),
                ));
            }
            if let Some(t) = s.tokens.iter().find(|&&t| t as usize >= vocab) {
                return Err(bad(
                    s.seq_id,
                    format!("token id {t} is outside the vocabulary ({vocab})"),
                ));
            }
        }
        if let Some(vision) = &self.model.vision {
            for (img, &owner) in images.images.iter().zip(&images.owners) {
                vision.check(img).map_err(|msg| bad(owner, msg))?;
            }
        }
        Ok(())
    }

    fn prepare(&mut self, seqs: &[ScheduledSeq]) -> ForwardBatch {
        let mut batch = ForwardBatch::default();
        for s in seqs {
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
        batch
    }

    /// The images to encode as one `[images, 3, size, size]` tensor (checked
    /// before any sequence state changes), or `None` without any.
    fn stack_pixels(&self, images: &[&ImageInput]) -> Result<Option<Tensor>, ExecutorError> {
        if images.is_empty() {
            return Ok(None);
        }
        let vision =
            self.model.vision.as_ref().ok_or_else(|| {
                ExecutorError::InvalidBatch("the model has no vision tower".into())
            })?;
        vision
            .pixels(images, self.model.text.device())
            .map(Some)
            .map_err(ExecutorError::InvalidBatch)
    }

    /// The decoder forward, with the step's images (encoded in one batched vision
    /// forward, or from the encoder cache) merged into the embeddings first; a
    /// decode step the graphs serve is replayed instead.
    fn forward(
        &mut self,
        forward: &ForwardBatch,
        images: &StepImages,
        encode: ToEncode,
    ) -> Result<Tensor, ExecutorError> {
        let step_err = |e: candle_core::Error| ExecutorError::Step(e.to_string());
        if images.is_empty() {
            if let Some(logits) = self
                .graphs
                .run(&self.model.text, &self.pool, forward)
                .map_err(step_err)?
            {
                return Ok(logits);
            }
        }
        let text = &self.model.text;
        let step = self
            .pool
            .plan(forward, text.device())
            .map_err(|e| ExecutorError::InvalidBatch(e.to_string()))?;
        let mut embeds = text.embed(&forward.token_ids).map_err(step_err)?;
        if !images.is_empty() {
            let features = self.image_features(images, encode).map_err(step_err)?;
            embeds = crate::multimodal::merge_image_features(&embeds, &features, &images.starts)
                .map_err(step_err)?;
        }
        let text = &self.model.text;
        text.forward_planned(&embeds, forward, &self.pool, &step)
            .map_err(step_err)
    }

    /// `[images, tokens, hidden]` features of the step's images: the cached ones
    /// as kept, the rest through the vision tower (and then kept).
    fn image_features(
        &mut self,
        images: &StepImages,
        encode: ToEncode,
    ) -> candle_core::Result<Tensor> {
        let ToEncode { mut cached, pixels } = encode;
        if let (Some(vision), Some(pixels)) = (&self.model.vision, pixels) {
            let fresh = vision.encode(&pixels)?;
            let slots = cached.iter().enumerate().filter(|(_, c)| c.is_none());
            let slots: Vec<usize> = slots.map(|(i, _)| i).collect();
            for (j, &i) in slots.iter().enumerate() {
                // A copy, so a kept image does not hold the whole batch's storage.
                let one = fresh.get(j)?.copy()?;
                self.encoder.insert(images.images[i].key, one.clone());
                cached[i] = Some(one);
                self.encoded += 1;
            }
        }
        let all: Vec<Tensor> = cached.into_iter().flatten().collect();
        if all.len() != images.images.len() {
            candle_core::bail!(
                "{} image features for {} images",
                all.len(),
                images.images.len()
            );
        }
        Tensor::stack(&all, 0)
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
            crate::argmax::argmax_rows(logits, self.argmax_kernel).map_err(err)?
        } else {
            Vec::new()
        };
        let host_rows: Vec<u32> = (0..wanting.len() as u32)
            .filter(|&i| !plain[i as usize])
            .collect();
        let wanted: Vec<(u32, Option<crate::sampling::RowNeeds>)> = host_rows
            .iter()
            .map(|&i| {
                let sampler = self
                    .seqs
                    .get(&wanting[i as usize].seq_id)
                    .map(|st| &st.sampler);
                (
                    i,
                    sampler.and_then(|s| s.candidates_needed(crate::topk::MAX_K)),
                )
            })
            .collect();
        let rows = crate::host_rows::fetch(logits, &wanted, self.topk_kernel).map_err(err)?;
        let host_ids = host_rows.iter().map(|&i| wanting[i as usize].seq_id);
        let mut tokens = self.draw_rows(host_ids.collect(), rows)?;
        for (row, s) in wanting.iter().enumerate().filter(|(row, _)| plain[*row]) {
            let state = self.seqs.get_mut(&s.seq_id).ok_or_else(|| {
                ExecutorError::Step(format!("sequence {} lost its sampler", s.seq_id))
            })?;
            state.sampler.accept_argmax(argmax[row]);
            state.sampled_any = true;
            tokens.insert(s.seq_id, (argmax[row], None));
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
}

impl CandleExecutor {
    /// Draws the token of each sequence `ids[j]` from its logits `rows[j]` with
    /// its own sampler, the rows in parallel (each is a pass over the vocabulary).
    fn draw_rows(
        &mut self,
        ids: Vec<SeqId>,
        rows: Vec<HostRow>,
    ) -> Result<HashMap<SeqId, (u32, Option<TokenLogprobs>)>, ExecutorError> {
        use rayon::prelude::*;
        if ids.len() != rows.len() {
            return Err(ExecutorError::Step(format!(
                "{} logits rows for {} sequences",
                rows.len(),
                ids.len()
            )));
        }
        let row_of: HashMap<SeqId, usize> =
            ids.iter().enumerate().map(|(j, &id)| (id, j)).collect();
        let jobs: Vec<(SeqId, &mut SeqState, &HostRow)> = self
            .seqs
            .iter_mut()
            .filter_map(|(id, st)| row_of.get(id).map(|&j| (*id, st, &rows[j])))
            .collect();
        if jobs.len() != ids.len() {
            return Err(ExecutorError::Step("a sequence lost its sampler".into()));
        }
        Ok(jobs
            .into_par_iter()
            .map(|(id, st, row)| {
                st.sampled_any = true;
                let drawn = match row {
                    HostRow::Whole(l) => st.sampler.sample(l),
                    HostRow::Top(c) => (st.sampler.sample_candidates(c), None),
                };
                (id, drawn)
            })
            .collect())
    }

    /// Whether the step may use or start a run ahead: decode steps replayed,
    /// every sequence decoding one token of text, each plain greedy.
    fn greedy_decode_step(
        &self,
        batch: &StepBatch,
        forward: &ForwardBatch,
        images: &StepImages,
    ) -> bool {
        let plain = |s: &ScheduledSeq| {
            s.sample
                && self
                    .seqs
                    .get(&s.seq_id)
                    .is_some_and(|st| st.sampler.is_plain_greedy())
        };
        self.runs_ahead()
            && images.is_empty()
            && forward.spans.iter().all(|s| s.is_decode() && s.want_logits)
            && batch.seqs.iter().all(plain)
    }

    /// A plain greedy decode step (see `crate::lookahead`): its ids from the step
    /// run ahead when that step was this one, else from its own forward; the next
    /// step is queued behind it before its ids are read.
    fn decode_ahead(
        &mut self,
        batch: &StepBatch,
        forward: &ForwardBatch,
        images: &StepImages,
        encode: ToEncode,
    ) -> Result<StepOutput, ExecutorError> {
        let err = |e: candle_core::Error| ExecutorError::Step(e.to_string());
        let seqs: Vec<SeqId> = batch.seqs.iter().map(|s| s.seq_id).collect();
        let claimed = self.ahead.claim(&seqs, forward, &self.pool).map_err(err)?;
        let ids = match claimed {
            Some(ids) if !self.ahead.needs_check() => ids,
            claimed => {
                let logits = self.forward(forward, images, encode)?;
                let usual = crate::argmax::argmax_ids(&logits, self.argmax_kernel).map_err(err)?;
                if let Some(ahead) = claimed {
                    // The first steps run ahead are checked against the usual run
                    // (which writes the same keys and values again).
                    let (a, u) = (ahead.to_vec1::<u32>(), usual.to_vec1::<u32>());
                    self.ahead.check(&a.map_err(err)?, &u.map_err(err)?);
                }
                usual
            }
        };
        self.ahead.start_download(&ids).map_err(err)?;
        // A request about to join would make the next step another one.
        let launched = match batch.admitting || !self.ahead.enabled() {
            true => Ok(()),
            false => self.launch_next(seqs, forward, &ids),
        };
        if let Err(e) = launched {
            self.ahead
                .turn_off(&format!("the step run ahead failed: {e}"));
        }
        let tokens = self.ahead.finish_download().map_err(err)?;
        if tokens.len() != batch.seqs.len() {
            return Err(ExecutorError::Step(format!(
                "{} ids for {} sequences",
                tokens.len(),
                batch.seqs.len()
            )));
        }
        let mut outputs = Vec::with_capacity(tokens.len());
        for (s, &token) in batch.seqs.iter().zip(&tokens) {
            let state = self.seqs.get_mut(&s.seq_id).ok_or_else(|| {
                ExecutorError::Step(format!("sequence {} lost its sampler", s.seq_id))
            })?;
            state.sampler.accept_argmax(token);
            state.sampled_any = true;
            outputs.push(SeqOutput {
                seq_id: s.seq_id,
                token: Some(token),
                logprobs: None,
            });
        }
        Ok(StepOutput { outputs })
    }

    /// Queues the decode step after `forward`, fed its device `ids`, where the
    /// sequences' blocks hold it and a captured step serves its shape.
    fn launch_next(
        &mut self,
        seqs: Vec<SeqId>,
        forward: &ForwardBatch,
        ids: &Tensor,
    ) -> candle_core::Result<()> {
        let Some(next) = crate::lookahead::next_step(forward, &self.pool) else {
            return Ok(());
        };
        let text = &self.model.text;
        if let Some(logits) = self.graphs.replay_fed(text, &self.pool, &next, ids)? {
            let next_ids = crate::argmax::argmax_ids(&logits, self.argmax_kernel)?;
            self.ahead.hold(seqs, next, next_ids);
        }
        Ok(())
    }
}

impl Executor for CandleExecutor {
    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, ExecutorError> {
        let mm = self.model.vision.as_ref().map(|v| &v.config);
        let images = image_plan::plan(&batch.seqs, mm)?;
        self.validate(&batch.seqs, &images)?;
        let cached: Vec<Option<Tensor>> = images
            .images
            .iter()
            .map(|i| self.encoder.get(i.key))
            .collect();
        let missing: Vec<&ImageInput> = (images.images.iter().zip(&cached))
            .filter(|(_, c)| c.is_none())
            .map(|(i, _)| *i)
            .collect();
        let pixels = self.stack_pixels(&missing)?;
        let mut forward = self.prepare(&batch.seqs);
        for (span, groups) in forward.spans.iter_mut().zip(&images.groups) {
            span.image_groups.clone_from(groups);
        }
        let encode = ToEncode { cached, pixels };
        if self.greedy_decode_step(batch, &forward, &images) {
            return self.decode_ahead(batch, &forward, &images, encode);
        }
        self.ahead.drop_pending();
        let logits = self.forward(&forward, &images, encode)?;
        self.sample(batch, &logits)
    }

    fn release(&mut self, seq: SeqId) {
        self.seqs.remove(&seq);
    }

    fn kv_layout(&self) -> KvLayout {
        self.layout.clone()
    }

    fn lookahead_slots(&self) -> usize {
        usize::from(self.runs_ahead())
    }

    fn steps_run_ahead(&self) -> (u64, u64) {
        let stats = self.ahead.stats();
        (stats.launched(), stats.used())
    }

    fn images_encoded(&self) -> (u64, u64) {
        (self.encoded, self.encoder.hits())
    }
}
