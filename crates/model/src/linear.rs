//! The decoder's bias-free linear layers, `x · wᵀ` with `w` `[out, in]` as stored.
//! On the CPU a product of few rows (decode steps) runs as `(w · xᵀ)ᵀ`: candle's
//! CPU matmul reads the transposed weight at less than half the bandwidth when
//! `x` has a handful of rows (a 4096×1024 weight and 8 rows: 6.2 GB/s against
//! 14.0 GB/s on the 2-core development machine), and the weights are what a
//! decode step is bound by. One row runs at the same speed either way.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Rows up to which the CPU takes the `(w · xᵀ)ᵀ` form.
const FEW_ROWS: usize = 16;

#[derive(Debug, Clone)]
pub struct Linear {
    w: Tensor,
}

impl Linear {
    /// `w`: `[out, in]`.
    pub fn new(w: Tensor) -> Self {
        Self { w }
    }

    /// `vb`'s `weight`, `[out, in]`.
    pub fn load(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self::new(vb.get((out_dim, in_dim), "weight")?))
    }
}

impl Module for Linear {
    /// `x`: `[rows, in]` → `[rows, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        matmul_wt(x, &self.w)
    }
}

/// `x · wᵀ` for `x` `[rows, in]` and `w` `[out, in]`.
pub fn matmul_wt(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dim(0)? <= FEW_ROWS {
        return w.matmul(&x.t()?)?.t()?.contiguous();
    }
    x.matmul(&w.t()?)
}
