//! Gemma3MultiModalProjector: SigLIP patches → `mm_tokens_per_image` soft tokens
//! in the text decoder's embedding space.
//!
//! Patches are laid out on their grid, average-pooled (f32 accumulation, as
//! PyTorch does for bf16 inputs; candle's CPU avg_pool2d would accumulate in the
//! tensor dtype), normalized with Gemma's RMSNorm (eps = vision layer_norm_eps),
//! and multiplied by `mm_input_projection_weight` `[vision_hidden, text_hidden]`
//! as stored (`x @ W`, not a Linear with a transposed weight).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::MultimodalConfig;
use crate::norm::GemmaRmsNorm;

#[derive(Debug, Clone)]
pub struct Projector {
    norm: GemmaRmsNorm,
    weight: Tensor,
    patches_per_side: usize,
    kernel: usize,
}

impl Projector {
    /// `vb` points at `multi_modal_projector` (or `model.multi_modal_projector`).
    pub fn new(cfg: &MultimodalConfig, text_hidden: usize, vb: VarBuilder) -> Result<Self> {
        let v = &cfg.vision;
        let patches_per_side = v.image_size / v.patch_size;
        let tokens_per_side = (cfg.mm_tokens_per_image as f64).sqrt() as usize;
        if tokens_per_side == 0
            || tokens_per_side * tokens_per_side != cfg.mm_tokens_per_image
            || !patches_per_side.is_multiple_of(tokens_per_side)
        {
            candle_core::bail!(
                "mm_tokens_per_image {} does not pool a {patches_per_side}x{patches_per_side} grid",
                cfg.mm_tokens_per_image
            );
        }
        Ok(Self {
            norm: GemmaRmsNorm::new(v.hidden_size, v.layer_norm_eps, vb.pp("mm_soft_emb_norm"))?,
            weight: vb.get((v.hidden_size, text_hidden), "mm_input_projection_weight")?,
            patches_per_side,
            kernel: patches_per_side / tokens_per_side,
        })
    }

    /// `[images, patches, vision_hidden]` → `[images, mm_tokens_per_image, text_hidden]`.
    pub fn forward(&self, patches: &Tensor) -> Result<Tensor> {
        let (n, _, h) = patches.dims3()?;
        let dtype = patches.dtype();
        let side = self.patches_per_side;
        let grid = patches
            .to_dtype(DType::F32)?
            .transpose(1, 2)?
            .reshape((n, h, side, side))?;
        let pooled = grid
            .avg_pool2d(self.kernel)?
            .flatten_from(2)?
            .transpose(1, 2)?
            .to_dtype(dtype)?;
        let normed = self.norm.forward(&pooled)?;
        normed.broadcast_matmul(&self.weight)?.to_dtype(dtype)
    }
}
