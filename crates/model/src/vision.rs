//! The SigLIP vision tower of Gemma 3 (SiglipVisionModel without its pooling head).
//!
//! Our own rather than `candle_transformers::models::siglip`: that one's
//! `VisionConfig` defaults are wrong for Gemma 3 (patch_size 16, image_size 224),
//! its attention softmax and layer norms run in the activation dtype where
//! transformers upcasts to f32 (GEMMA3.md §4, §9.6), and it resizes position
//! embeddings silently when the grid differs. Here every shape comes from our
//! `VisionConfig`, a wrong pixel size is an error, softmax and LayerNorm run in f32,
//! and pixels are cast to the weight dtype before the patch convolution, as
//! transformers does.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{linear, Linear, VarBuilder};

use crate::config::VisionConfig;

/// LayerNorm with bias, computed in f32 and cast back to the input dtype once.
#[derive(Debug, Clone)]
struct LayerNormF32 {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNormF32 {
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let get = |name: &str| vb.get(dim, name)?.to_dtype(DType::F32);
        Ok(Self {
            weight: get("weight")?,
            bias: get("bias")?,
            eps: eps as f32,
        })
    }
}

impl Module for LayerNormF32 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let xf = x.to_dtype(DType::F32)?.contiguous()?;
        candle_nn::ops::layer_norm(&xf, &self.weight, &self.bias, self.eps)?.to_dtype(x.dtype())
    }
}

/// SigLIP's activation, by its transformers name.
#[derive(Debug, Clone, Copy)]
enum Act {
    GeluTanh,
    GeluErf,
    QuickGelu,
}

impl Act {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Self::GeluTanh),
            "gelu" => Ok(Self::GeluErf),
            "quick_gelu" => Ok(Self::QuickGelu),
            other => candle_core::bail!("vision_config.hidden_act {other:?} is not supported"),
        }
    }

    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::GeluTanh if x.device().is_cpu() => crate::cpu_gelu::gelu(x),
            Self::GeluTanh => x.gelu(),
            Self::GeluErf => x.gelu_erf(),
            Self::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
        }
    }
}

#[derive(Debug, Clone)]
struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    scale: f64,
    /// Softmax of the scores as the `softmax` CUDA kernel (it passed its self-test).
    fast_softmax: bool,
}

impl SelfAttention {
    fn new(cfg: &VisionConfig, vb: VarBuilder, fast_softmax: bool) -> Result<Self> {
        let h = cfg.hidden_size;
        if cfg.num_attention_heads == 0 || !h.is_multiple_of(cfg.num_attention_heads) {
            candle_core::bail!("vision hidden_size {h} is not divisible by its attention heads");
        }
        let head_dim = h / cfg.num_attention_heads;
        Ok(Self {
            q_proj: linear(h, h, vb.pp("q_proj"))?,
            k_proj: linear(h, h, vb.pp("k_proj"))?,
            v_proj: linear(h, h, vb.pp("v_proj"))?,
            out_proj: linear(h, h, vb.pp("out_proj"))?,
            heads: cfg.num_attention_heads,
            scale: (head_dim as f64).powf(-0.5),
            fast_softmax,
        })
    }

    /// `x`: `[images, patches, hidden]`; no mask (every patch sees every patch).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, p, h) = x.dims3()?;
        let d = h / self.heads;
        let split = |t: Tensor| {
            t.reshape((n, p, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        // The scale goes on the queries (patches x head_dim) rather than on the
        // scores (patches x patches): one pass over 4096 x 72 values per head
        // instead of 4096 x 4096 at 896 px; the same product up to rounding.
        let q = (split(self.q_proj.forward(x)?)? * self.scale)?;
        let k = split(self.k_proj.forward(x)?)?;
        let v = split(self.v_proj.forward(x)?)?;
        let scores = q.matmul(&k.t()?)?;
        let probs = if self.fast_softmax && crate::softmax::serves(&scores) {
            crate::softmax::softmax(&scores)?
        } else {
            crate::ops::softmax_in_f32(&scores)?
        };
        let o = probs.matmul(&v)?.transpose(1, 2)?.reshape((n, p, h))?;
        self.out_proj.forward(&o)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    layer_norm1: LayerNormF32,
    self_attn: SelfAttention,
    layer_norm2: LayerNormF32,
    fc1: Linear,
    fc2: Linear,
    act: Act,
}

impl EncoderLayer {
    fn new(cfg: &VisionConfig, act: Act, vb: VarBuilder, fast_softmax: bool) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        Ok(Self {
            layer_norm1: LayerNormF32::new(h, eps, vb.pp("layer_norm1"))?,
            self_attn: SelfAttention::new(cfg, vb.pp("self_attn"), fast_softmax)?,
            layer_norm2: LayerNormF32::new(h, eps, vb.pp("layer_norm2"))?,
            fc1: linear(h, i, vb.pp("mlp").pp("fc1"))?,
            fc2: linear(i, h, vb.pp("mlp").pp("fc2"))?,
            act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.self_attn.forward(&self.layer_norm1.forward(x)?)?;
        let x = (x + a)?;
        let m = self.fc1.forward(&self.layer_norm2.forward(&x)?)?;
        let m = self.fc2.forward(&self.act.apply(&m)?)?;
        x + m
    }
}

/// The patch convolution (kernel = stride = patch size) as one matrix product over
/// the unfolded patches: the same sums, and it runs in every dtype on every device
/// (candle's CPU convolution has no bf16).
#[derive(Debug, Clone)]
struct PatchEmbedding {
    /// `[hidden, channels * patch * patch]`.
    weight: Tensor,
    bias: Tensor,
    patch: usize,
}

impl PatchEmbedding {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let (c, p, h) = (cfg.num_channels, cfg.patch_size, cfg.hidden_size);
        let weight = vb.get((h, c, p, p), "weight")?.reshape((h, c * p * p))?;
        Ok(Self {
            weight,
            bias: vb.get(h, "bias")?,
            patch: p,
        })
    }

    /// `[images, channels, H, W]` → `[images, patches, hidden]`, patch = row * gw + col.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        let patches = x
            .reshape((n, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n, gh * gw, c * p * p))?;
        patches
            .broadcast_matmul(&self.weight.t()?)?
            .broadcast_add(&self.bias)
    }
}

/// SigLIP: patch convolution, learned positions, pre-LN encoder, post LayerNorm.
#[derive(Debug, Clone)]
pub struct VisionTower {
    patch_embedding: PatchEmbedding,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNormF32,
    cfg: VisionConfig,
    dtype: DType,
}

impl VisionTower {
    /// `vb` points at the tower (`vision_tower.vision_model`, `vision_tower`, …).
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let act = Act::parse(&cfg.hidden_act)?;
        let emb = vb.pp("embeddings");
        let patch_embedding = PatchEmbedding::new(cfg, emb.pp("patch_embedding"))?;
        let patches = Self::patches_of(cfg);
        let position_embedding = emb
            .pp("position_embedding")
            .get((patches, cfg.hidden_size), "weight")?;
        let fast_softmax = crate::softmax::usable(vb.dtype(), vb.device(), patches);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(cfg, act, vb.pp("encoder").pp("layers").pp(i), fast_softmax))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embedding,
            position_embedding,
            layers,
            post_layernorm: LayerNormF32::new(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                vb.pp("post_layernorm"),
            )?,
            cfg: cfg.clone(),
            dtype: vb.dtype(),
        })
    }

    fn patches_of(cfg: &VisionConfig) -> usize {
        (cfg.image_size / cfg.patch_size).pow(2)
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// `pixels`: `[images, channels, image_size, image_size]` (any float dtype) →
    /// `last_hidden_state` `[images, patches, hidden]` in the weight dtype.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = pixels.dims4()?;
        let s = self.cfg.image_size;
        if c != self.cfg.num_channels || h != s || w != s {
            candle_core::bail!(
                "vision tower takes {}x{s}x{s} pixels, got {c}x{h}x{w}",
                self.cfg.num_channels
            );
        }
        let x = self
            .patch_embedding
            .forward(&pixels.to_dtype(self.dtype)?)?;
        let mut x = x.broadcast_add(&self.position_embedding)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        self.post_layernorm.forward(&x)
    }
}
