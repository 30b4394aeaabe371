//! The decoder's bias-free linear layers, `x · wᵀ` with `w` `[out, in]` as stored.
//! On the CPU, products of few rows (decode steps, bound by reading the weights)
//! avoid candle's `x · wᵀ`, which reads the transposed weight at well under the
//! memory bandwidth: up to eight rows in f32 run as `cpu_matvec` (a 32000×1024
//! weight read at about 21 GB/s with one row and 12.7 with eight, against 9 and
//! 6.6 for candle's best form on the 2-core development machine), up to 16 as
//! `(w · xᵀ)ᵀ`. On CUDA, products of up to eight rows can run as the `gemv`
//! kernel where it measured faster than cuBLAS at load (`gemv_plan`).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::gemv_plan::GemvPlan;

/// Rows up to which the CPU takes the `(w · xᵀ)ᵀ` form.
const FEW_ROWS: usize = 16;

#[derive(Debug, Clone)]
pub struct Linear {
    w: Tensor,
    /// Which products of few rows run on the `gemv` CUDA kernel (none unless set).
    plan: GemvPlan,
}

impl Linear {
    /// `w`: `[out, in]`.
    pub fn new(w: Tensor) -> Self {
        Self {
            w,
            plan: GemvPlan::default(),
        }
    }

    /// `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.w
    }

    /// Runs the products `plan` names on the `gemv` kernel (see `gemv_plan`).
    pub fn set_plan(&mut self, plan: GemvPlan) {
        self.plan = plan;
    }

    /// `vb`'s `weight`, `[out, in]`.
    pub fn load(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self::new(vb.get((out_dim, in_dim), "weight")?))
    }
}

impl Module for Linear {
    /// `x`: `[rows, in]` → `[rows, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(split) = x.dim(0).ok().and_then(|rows| self.plan.split_for(rows)) {
            if crate::gemv::serves(x, &self.w) {
                return crate::gemv::gemv(x, &self.w, split);
            }
        }
        matmul_wt(x, &self.w)
    }
}

/// `x · wᵀ` for `x` `[rows, in]` and `w` `[out, in]`.
pub fn matmul_wt(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if crate::cpu_matvec::serves(x, w) {
        return crate::cpu_matvec::matvec(x, w);
    }
    if x.device().is_cpu() && x.dim(0)? <= FEW_ROWS {
        return w.matmul(&x.t()?)?.t()?.contiguous();
    }
    x.matmul(&w.t()?)
}
