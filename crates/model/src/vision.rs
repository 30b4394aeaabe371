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
use candle_nn::VarBuilder;

use crate::activation::Activation;
use crate::bias_epilogue::{self as epilogue, Heads, Widths};
use crate::config::VisionConfig;

/// LayerNorm with bias. candle's kernels (CPU and CUDA) read half-precision input
/// into f32, normalize in f32 and round once, so running them on the activation
/// dtype gives exactly what casting to f32 and back gives (transformers' f32
/// LayerNorm), without the two casts.
#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps: eps as f32,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps)
    }
}

/// A product with a bias whose addition the caller finishes (with the bias
/// epilogue kernels where they serve).
#[derive(Debug, Clone)]
struct Biased {
    /// `[out, in]`.
    weight: Tensor,
    bias: Tensor,
}

impl Biased {
    fn new(inputs: usize, outputs: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get((outputs, inputs), "weight")?,
            bias: vb.get(outputs, "bias")?,
        })
    }

    /// q, k and v stacked as one `[3 * out, in]` product: one matrix product
    /// instead of three.
    fn stacked(parts: &[Self]) -> Result<Self> {
        let cat =
            |f: fn(&Self) -> &Tensor| Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0);
        Ok(Self {
            weight: cat(|p| &p.weight)?,
            bias: cat(|p| &p.bias)?,
        })
    }

    /// `x` `[rows, in]` → `x · weightᵀ` `[rows, out]`, without the bias.
    fn product(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight.t()?)
    }
}

/// Which of the tower's CUDA kernels passed their self-tests on the device.
#[derive(Debug, Clone, Copy, Default)]
struct Kernels {
    softmax: bool,
    epilogue: bool,
    /// The fused attention (`vision_attention`), which also makes `softmax` moot.
    attention: bool,
}

#[derive(Debug, Clone)]
struct SelfAttention {
    /// q, k and v stacked.
    qkv: Biased,
    out_proj: Biased,
    heads: usize,
    scale: f64,
}

impl SelfAttention {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        if cfg.num_attention_heads == 0 || !h.is_multiple_of(cfg.num_attention_heads) {
            candle_core::bail!("vision hidden_size {h} is not divisible by its attention heads");
        }
        let head_dim = h / cfg.num_attention_heads;
        let part = |name: &str| Biased::new(h, h, vb.pp(name));
        Ok(Self {
            qkv: Biased::stacked(&[part("q_proj")?, part("k_proj")?, part("v_proj")?])?,
            out_proj: part("out_proj")?,
            heads: cfg.num_attention_heads,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    /// `x` `[images * patches, hidden]`; no mask (every patch sees every patch).
    /// Returns the attention's output before `out_proj`, `[images * patches, hidden]`.
    fn attend(&self, x: &Tensor, patches: usize, kernels: Kernels) -> Result<Tensor> {
        let (rows, h) = x.dims2()?;
        // The scale goes on the queries (patches x head_dim) rather than on the
        // scores (patches x patches): one pass over 4096 x 72 values per head
        // instead of 4096 x 4096 at 896 px; the same product up to rounding.
        let heads = Heads {
            patches,
            heads: self.heads,
            head_dim: h / self.heads,
            scale: self.scale,
        };
        let qkv = self.qkv.product(x)?;
        let (q, k, v) = if kernels.epilogue {
            epilogue::qkv_heads(&qkv, &self.qkv.bias, heads)?
        } else {
            epilogue::reference::qkv_heads(&qkv, &self.qkv.bias, heads)?
        };
        if kernels.attention {
            return crate::vision_attention::attention(&q, &k, &v);
        }
        let scores = q.matmul(&k.t()?)?;
        let probs = if kernels.softmax && crate::softmax::serves(&scores) {
            crate::softmax::softmax(&scores)?
        } else {
            crate::ops::softmax_in_f32(&scores)?
        };
        probs.matmul(&v)?.transpose(1, 2)?.reshape((rows, h))
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: SelfAttention,
    layer_norm2: LayerNorm,
    fc1: Biased,
    fc2: Biased,
    act: Activation,
}

impl EncoderLayer {
    fn new(cfg: &VisionConfig, act: Activation, vb: VarBuilder) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        Ok(Self {
            layer_norm1: LayerNorm::new(h, eps, vb.pp("layer_norm1"))?,
            self_attn: SelfAttention::new(cfg, vb.pp("self_attn"))?,
            layer_norm2: LayerNorm::new(h, eps, vb.pp("layer_norm2"))?,
            fc1: Biased::new(h, i, vb.pp("mlp").pp("fc1"))?,
            fc2: Biased::new(i, h, vb.pp("mlp").pp("fc2"))?,
            act,
        })
    }

    /// `x` `[images * patches, hidden]`.
    fn forward(&self, x: &Tensor, patches: usize, kernels: Kernels) -> Result<Tensor> {
        let attn = self
            .self_attn
            .attend(&self.layer_norm1.forward(x)?, patches, kernels)?;
        let x = residual(&self.self_attn.out_proj, &attn, x, kernels)?;
        let m = self.fc1.product(&self.layer_norm2.forward(&x)?)?;
        let m = if kernels.epilogue && self.act == Activation::GeluTanh {
            epilogue::gelu(&m, &self.fc1.bias)?
        } else {
            self.act.apply(&m.broadcast_add(&self.fc1.bias)?)?
        };
        residual(&self.fc2, &m, &x, kernels)
    }
}

/// `res + (x · weightᵀ + bias)`; `res` may hold fewer rows, repeated (see
/// `bias_epilogue::residual`).
fn residual(p: &Biased, x: &Tensor, res: &Tensor, kernels: Kernels) -> Result<Tensor> {
    let y = p.product(x)?;
    if kernels.epilogue {
        epilogue::residual(&y, &p.bias, res)
    } else {
        epilogue::reference::residual(&y, &p.bias, res)
    }
}

/// The patch convolution (kernel = stride = patch size) as one matrix product over
/// the unfolded patches: the same sums, and it runs in every dtype on every device
/// (candle's CPU convolution has no bf16).
#[derive(Debug, Clone)]
struct PatchEmbedding {
    /// Weight `[hidden, channels * patch * patch]`.
    proj: Biased,
    patch: usize,
}

impl PatchEmbedding {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let (c, p, h) = (cfg.num_channels, cfg.patch_size, cfg.hidden_size);
        let weight = vb.get((h, c, p, p), "weight")?.reshape((h, c * p * p))?;
        Ok(Self {
            proj: Biased {
                weight,
                bias: vb.get(h, "bias")?,
            },
            patch: p,
        })
    }

    /// `[images, channels, H, W]` → the patches `[images * patches, channels *
    /// patch * patch]`, patch = row * gw + col.
    fn unfold(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        x.reshape((n, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n * gh * gw, c * p * p))
    }
}

/// SigLIP: patch convolution, learned positions, pre-LN encoder, post LayerNorm.
#[derive(Debug, Clone)]
pub struct VisionTower {
    patch_embedding: PatchEmbedding,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    kernels: Kernels,
    post_layernorm: LayerNorm,
    cfg: VisionConfig,
    dtype: DType,
}

impl VisionTower {
    /// `vb` points at the tower (`vision_tower.vision_model`, `vision_tower`, …).
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let act = Activation::parse(&cfg.hidden_act).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "vision_config.hidden_act {:?} is not supported (supported: {})",
                cfg.hidden_act,
                Activation::NAMES
            ))
        })?;
        let emb = vb.pp("embeddings");
        let patch_embedding = PatchEmbedding::new(cfg, emb.pp("patch_embedding"))?;
        let patches = Self::patches_of(cfg);
        let position_embedding = emb
            .pp("position_embedding")
            .get((patches, cfg.hidden_size), "weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(cfg, act, vb.pp("encoder").pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let widths = Widths {
            hidden: cfg.hidden_size,
            intermediate: cfg.intermediate_size,
            heads: cfg.num_attention_heads,
        };
        let head_dim = cfg.hidden_size / cfg.num_attention_heads.max(1);
        let heads = cfg.num_attention_heads;
        let (dtype, device) = (vb.dtype(), vb.device());
        let attention = crate::vision_attention::usable(device, dtype, heads, patches, head_dim);
        let kernels = Kernels {
            softmax: !attention && crate::softmax::usable(dtype, device, patches),
            epilogue: epilogue::usable(device, dtype, widths),
            attention,
        };
        Ok(Self {
            patch_embedding,
            position_embedding,
            layers,
            kernels,
            post_layernorm: LayerNorm::new(
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
        let images = pixels.dim(0)?;
        let (patches, hidden) = self.position_embedding.dims2()?;
        let unfolded = self.patch_embedding.unfold(&pixels.to_dtype(self.dtype)?)?;
        // The convolution's bias and then the positions (repeated for each image).
        let proj = &self.patch_embedding.proj;
        let mut x = residual(proj, &unfolded, &self.position_embedding, self.kernels)?;
        for layer in &self.layers {
            x = layer.forward(&x, patches, self.kernels)?;
        }
        self.post_layernorm
            .forward(&x)?
            .reshape((images, patches, hidden))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// The LayerNorm run on bf16 is bit for bit the f32 LayerNorm of the same
    /// values rounded once, which it replaced.
    #[test]
    fn half_precision_layer_norm_equals_the_f32_one_rounded() -> Result<()> {
        let cpu = &Device::Cpu;
        let x = (Tensor::randn(0f32, 3.0, (7, 96), cpu)? + 5.0)?.to_dtype(DType::BF16)?;
        let weight = Tensor::randn(1f32, 0.5, 96, cpu)?.to_dtype(DType::BF16)?;
        let bias = Tensor::randn(0f32, 0.5, 96, cpu)?.to_dtype(DType::BF16)?;
        let norm = LayerNorm {
            weight: weight.clone(),
            bias: bias.clone(),
            eps: 1e-6,
        };
        let f32 = |t: &Tensor| t.to_dtype(DType::F32);
        let want = candle_nn::ops::layer_norm(&f32(&x)?, &f32(&weight)?, &f32(&bias)?, 1e-6)?
            .to_dtype(DType::BF16)?;
        let got = norm.forward(&x)?;
        let diff = (f32(&got)? - f32(&want)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }
}
