//! The Gemma 3 text decoder (Gemma3TextModel + tied LM head), batched over packed
//! sequences, reading and writing the paged KV pool passed in.

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use crate::attention::Attention;
use crate::batch::ForwardBatch;
use crate::config::{LayerType, TextConfig};
use crate::kv::{KvPool, StepKv};
use crate::linear::Linear;
use crate::mlp::Mlp;
use crate::norm::GemmaRmsNorm;
use crate::rope::{Rope, RopeTables};

/// The fused CUDA kernels that passed their self-test on the model's device.
#[derive(Debug, Clone, Copy)]
struct Fused {
    qk: bool,
    gelu_mul: bool,
    gemv: bool,
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    attn: Attention,
    mlp: Mlp,
    input_layernorm: GemmaRmsNorm,
    post_attention_layernorm: GemmaRmsNorm,
    pre_feedforward_layernorm: GemmaRmsNorm,
    post_feedforward_layernorm: GemmaRmsNorm,
    layer_type: LayerType,
}

impl DecoderLayer {
    fn new(cfg: &TextConfig, layer_type: LayerType, vb: VarBuilder, fused: Fused) -> Result<Self> {
        let norm = |name: &str| GemmaRmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, vb.pp(name));
        Ok(Self {
            attn: Attention::new(cfg, vb.pp("self_attn"), fused.qk)?,
            mlp: Mlp::new(cfg, vb.pp("mlp"), fused.gelu_mul)?,
            input_layernorm: norm("input_layernorm")?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            pre_feedforward_layernorm: norm("pre_feedforward_layernorm")?,
            post_feedforward_layernorm: norm("post_feedforward_layernorm")?,
            layer_type,
        })
    }

    /// The layer's six projections (q, k, v, o, gate/up, down).
    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut out: Vec<&mut Linear> = self.attn.linears_mut().into();
        out.extend(self.mlp.linears_mut());
        out
    }

    /// `h`: the residual stream; `normed`: this layer's input norm of it. Returns
    /// the new stream and `next` applied to it (the next layer's input norm, or
    /// the final norm after the last layer).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        h: &Tensor,
        normed: &Tensor,
        next: &GemmaRmsNorm,
        rope: &RopeTables,
        batch: &ForwardBatch,
        kv: (&KvPool, &StepKv),
        index: usize,
    ) -> Result<(Tensor, Tensor)> {
        let x = self.attn.forward(normed, rope, batch, kv, index)?;
        let (h, x) =
            self.post_attention_layernorm
                .add_then_norm(&x, h, &self.pre_feedforward_layernorm)?;
        let x = self.mlp.forward(&x)?;
        self.post_feedforward_layernorm.add_then_norm(&x, &h, next)
    }
}

/// One step's RoPE tables: full-attention and sliding layers rotate differently.
#[derive(Debug)]
pub struct StepRope {
    full: RopeTables,
    sliding: RopeTables,
}

impl StepRope {
    /// The four tables (cos and sin of both layer types), for copying a step's
    /// inputs into a captured step's.
    pub fn tensors(&self) -> [&Tensor; 4] {
        [
            &self.full.cos,
            &self.full.sin,
            &self.sliding.cos,
            &self.sliding.sin,
        ]
    }
}

/// The decoder with its embedding table, which doubles as the LM head.
#[derive(Debug, Clone)]
pub struct TextModel {
    embed_tokens: Embedding,
    /// sqrt(hidden) as an f32 buffer cast to the weight dtype, as transformers
    /// multiplies it: `[1]`, made once so a step uploads nothing for it.
    embed_scale: Tensor,
    layers: Vec<DecoderLayer>,
    norm: GemmaRmsNorm,
    lm_head: Linear,
    rope_full: Rope,
    rope_sliding: Rope,
    cfg: TextConfig,
    dtype: DType,
    device: Device,
}

impl TextModel {
    /// `vb` points at the decoder (`model`, `language_model.model`, …); `lm_head_vb`
    /// at an untied `lm_head` when the config says the embeddings are not tied.
    pub fn new(cfg: &TextConfig, vb: VarBuilder, lm_head_vb: Option<VarBuilder>) -> Result<Self> {
        let embed_tokens =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("embed_tokens"))?;
        let fused = Fused {
            qk: crate::qk_rope_write::usable(cfg, vb.dtype(), vb.device()),
            gelu_mul: crate::gelu_mul::usable(cfg.intermediate_size, vb.dtype(), vb.device()),
            gemv: crate::gemv::usable(vb.dtype(), vb.device()),
        };
        let mut layers = cfg
            .layer_types
            .iter()
            .enumerate()
            .map(|(i, &t)| DecoderLayer::new(cfg, t, vb.pp("layers").pp(i), fused))
            .collect::<Result<Vec<_>>>()?;
        let mut lm_head = Linear::new(match lm_head_vb {
            Some(vb) if !cfg.tie_word_embeddings => {
                vb.get((cfg.vocab_size, cfg.hidden_size), "weight")?
            }
            _ => embed_tokens.embeddings().clone(),
        });
        if fused.gemv {
            let linears = layers.iter_mut().flat_map(DecoderLayer::linears_mut);
            crate::gemv_plan::apply(linears.chain([&mut lm_head]))?;
        }
        let embed_scale =
            Tensor::new(&[(cfg.hidden_size as f32).sqrt()], vb.device())?.to_dtype(vb.dtype())?;
        Ok(Self {
            embed_tokens,
            embed_scale,
            layers,
            norm: GemmaRmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("norm"))?,
            lm_head,
            rope_full: Rope::new(cfg.rope_full, cfg.head_dim),
            rope_sliding: Rope::new(cfg.rope_sliding, cfg.head_dim),
            cfg: cfg.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Scaled token embeddings `[tokens, hidden]`.
    pub fn embed(&self, token_ids: &[u32]) -> Result<Tensor> {
        self.embed_ids(&Tensor::new(token_ids, &self.device)?)
    }

    /// As `embed`, from ids already on the device (`[tokens]` u32).
    pub fn embed_ids(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed_tokens
            .forward(ids)?
            .broadcast_mul(&self.embed_scale)
    }

    /// Runs the batch and returns f32 logits `[sequences wanting logits, vocab]`.
    pub fn forward(&self, batch: &ForwardBatch, kv: &KvPool) -> Result<Tensor> {
        let embeds = self.embed(&batch.token_ids)?;
        self.forward_embeds(&embeds, batch, kv)
    }

    /// As `forward`, from embeddings (image features already merged in).
    pub fn forward_embeds(
        &self,
        embeds: &Tensor,
        batch: &ForwardBatch,
        kv: &KvPool,
    ) -> Result<Tensor> {
        let step = kv.plan(batch, &self.device)?;
        self.forward_planned(embeds, batch, kv, &step)
    }

    /// As `forward_embeds`, with the step's KV slots already planned.
    pub fn forward_planned(
        &self,
        embeds: &Tensor,
        batch: &ForwardBatch,
        kv: &KvPool,
        step: &StepKv,
    ) -> Result<Tensor> {
        let rope = self.step_rope(batch)?;
        self.forward_step(embeds, batch, (kv, step), &rope)
    }

    /// As `forward_planned`, with the step's RoPE tables made too: every per-step
    /// input is then already on the device and nothing crosses from the host
    /// (what a captured CUDA graph replays).
    pub fn forward_step(
        &self,
        embeds: &Tensor,
        batch: &ForwardBatch,
        kv: (&KvPool, &StepKv),
        rope: &StepRope,
    ) -> Result<Tensor> {
        let mut h = embeds.clone();
        let mut normed = self.first_norm(&h)?;
        for i in 0..self.layers.len() {
            (h, normed) = self.layer(i, (&h, &normed), rope, batch, kv)?;
        }
        self.logits(&normed, batch)
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The first layer's input norm of the embeddings (the final norm when there
    /// is no layer): the `normed` that goes with them into layer 0.
    pub fn first_norm(&self, embeds: &Tensor) -> Result<Tensor> {
        match self.layers.first() {
            Some(first) => first.input_layernorm.forward(embeds),
            None => self.norm.forward(embeds),
        }
    }

    /// Layer `i` alone: from the residual stream entering it and that stream's
    /// input norm, the stream leaving it and the next norm of that (the next
    /// layer's input norm, or the final norm after the last layer).
    pub fn run_layer(
        &self,
        i: usize,
        input: (&Tensor, &Tensor),
        batch: &ForwardBatch,
        kv: (&KvPool, &StepKv),
    ) -> Result<(Tensor, Tensor)> {
        let rope = self.step_rope(batch)?;
        self.layer(i, input, &rope, batch, kv)
    }

    fn layer(
        &self,
        i: usize,
        (h, normed): (&Tensor, &Tensor),
        rope: &StepRope,
        batch: &ForwardBatch,
        kv: (&KvPool, &StepKv),
    ) -> Result<(Tensor, Tensor)> {
        let Some(layer) = self.layers.get(i) else {
            candle_core::bail!("layer {i} of {}", self.layers.len())
        };
        let tables = match layer.layer_type {
            LayerType::Full => &rope.full,
            LayerType::Sliding => &rope.sliding,
        };
        let next = self
            .layers
            .get(i + 1)
            .map_or(&self.norm, |l| &l.input_layernorm);
        layer.forward(h, normed, next, tables, batch, kv, i)
    }

    /// The RoPE tables of the step's positions, for both layer types.
    pub fn step_rope(&self, batch: &ForwardBatch) -> Result<StepRope> {
        let positions = batch.positions();
        Ok(StepRope {
            full: self
                .rope_full
                .tables(&positions, self.dtype, &self.device)?,
            sliding: self
                .rope_sliding
                .tables(&positions, self.dtype, &self.device)?,
        })
    }

    /// f32 logits of the rows that want them, from the final-normed hidden states.
    pub fn logits(&self, normed: &Tensor, batch: &ForwardBatch) -> Result<Tensor> {
        let rows: Vec<u32> = batch
            .spans
            .iter()
            .filter(|s| s.want_logits && s.len > 0)
            .map(|s| (s.offset + s.len - 1) as u32)
            .collect();
        if rows.is_empty() {
            return Tensor::zeros((0, self.cfg.vocab_size), DType::F32, &self.device);
        }
        // Every row wanted (decode steps): no index to upload.
        let every_row = rows.len() == normed.dim(0)?;
        let last = if every_row {
            normed.clone()
        } else {
            normed.index_select(&Tensor::new(rows.as_slice(), &self.device)?, 0)?
        };
        let mut logits = self.lm_head.forward(&last)?;
        if let Some(cap) = self.cfg.final_logit_softcapping {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        logits.to_dtype(DType::F32)
    }

    /// Logits of one row, for tests: `[vocab]`.
    pub fn row(logits: &Tensor, i: usize) -> Result<Vec<f32>> {
        logits.i(i)?.to_vec1()
    }
}
