//! Gemma's RMSNorm, the one normalization of the text decoder and the projector.
//!
//! transformers computes it entirely in f32, `1 + w` included, and rounds once at
//! the end; candle-transformers' gemma3.rs rounds twice in bf16 (GEMMA3.md §8), so
//! this crate has its own. On CUDA the fused kernel is used instead (see forward).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct GemmaRmsNorm {
    /// `1 + weight`, formed in f32.
    scale: Tensor,
    /// The same, rounded to the model dtype, for the fused CUDA kernel.
    scale_act: Tensor,
    eps: f32,
}

impl GemmaRmsNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let w = vb.get_with_hints_dtype(dim, "weight", candle_nn::Init::Const(0.0), DType::F32)?;
        let scale = (w + 1.0)?;
        Ok(Self {
            scale_act: scale.to_dtype(vb.dtype())?,
            scale,
            eps: eps as f32,
        })
    }
}

impl GemmaRmsNorm {
    /// The residual step between two sublayers: `h + self(x)`, and `next` of that
    /// (the next sublayer's input). One fused kernel on CUDA.
    pub fn add_then_norm(
        &self,
        x: &Tensor,
        h: &Tensor,
        next: &GemmaRmsNorm,
    ) -> Result<(Tensor, Tensor)> {
        let narrow = x.dim(candle_core::D::Minus1)? <= crate::add_norm::MAX_COLS;
        let fused = x.device().is_cuda() && crate::kernels::enabled("add-rmsnorm");
        if fused && self.eps == next.eps && narrow {
            return crate::add_norm::add_rmsnorm(x, h, &self.scale, &next.scale, self.eps);
        }
        let h = (h + self.forward(x)?)?;
        let z = next.forward(&h)?;
        Ok((h, z))
    }

    /// `1 + weight` in f32, for the fused-kernel reference check.
    pub fn scale(&self) -> &Tensor {
        &self.scale
    }

    pub fn eps(&self) -> f32 {
        self.eps
    }
}

impl Module for GemmaRmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        // On CUDA one kernel: it sums in f32 and rounds once, with `1 + w` in the
        // activation dtype (one extra rounding of the weight, within bf16's own).
        if x.device().is_cuda() && dtype == self.scale_act.dtype() {
            return candle_nn::ops::rms_norm(&x.contiguous()?, &self.scale_act, self.eps);
        }
        let xf = x.to_dtype(DType::F32)?.contiguous()?;
        candle_nn::ops::rms_norm(&xf, &self.scale, self.eps)?.to_dtype(dtype)
    }
}
