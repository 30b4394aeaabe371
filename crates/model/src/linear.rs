//! The decoder's bias-free linear layers, `x · wᵀ` with `w` `[out, in]` as stored.
//! On the CPU, products of few rows (decode steps, bound by reading the weights)
//! avoid candle's `x · wᵀ`, which reads the transposed weight at well under the
//! memory bandwidth: up to eight rows in f32 run as `cpu_matvec` (a 32000×1024
//! weight read at about 21 GB/s with one row and 12.7 with eight, against 9 and
//! 6.6 for candle's best form on the 2-core development machine), up to 16 as
//! `(w · xᵀ)ᵀ`. On CUDA, products of up to eight rows can run as the `gemv`
//! kernel where it measured faster than cuBLAS at load (`gemv_plan`).

use candle_core::{DType, Module, Result, Tensor};
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

/// Weight rows widened to f32 at a time in `widened_blocks`: 2048 rows of 2560
/// are 20 MiB of f32, products of a few thousand columns keep the matmul efficient.
const WIDEN_ROWS: usize = 2048;

/// `x · wᵀ` for `x` `[rows, in]` and `w` `[out, in]`.
pub fn matmul_wt(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if crate::cpu_matvec::serves(x, w) {
        return crate::cpu_matvec::matvec(x, w);
    }
    if x.device().is_cpu() && matches!(w.dtype(), DType::BF16 | DType::F16) {
        return widened_blocks(x, w);
    }
    if x.device().is_cpu() && x.dim(0)? <= FEW_ROWS {
        return w.matmul(&x.t()?)?.t()?.contiguous();
    }
    x.matmul(&w.t()?)
}

/// `x · wᵀ` on the CPU for half-precision operands, in f32 a block of weight rows
/// at a time, rounded once: candle's CPU matmul widens both whole storages to f32
/// on every call (for the tied embedding, all 262k rows), and has no
/// half-precision kernel of its own.
fn widened_blocks(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let xf = x.to_dtype(DType::F32)?;
    let n = w.dim(0)?;
    let blocks = (0..n)
        .step_by(WIDEN_ROWS)
        .map(|start| {
            let rows = w.narrow(0, start, WIDEN_ROWS.min(n - start))?;
            xf.matmul(&rows.to_dtype(DType::F32)?.t()?)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&blocks, 1)?.to_dtype(x.dtype())
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// Half-precision products of many rows on the CPU, in blocks of weight rows
    /// (here more than one block): the f32 products rounded once.
    #[test]
    fn half_precision_products_of_many_rows_go_by_blocks() -> Result<()> {
        let dev = &Device::Cpu;
        let (rows, n, k) = (12, WIDEN_ROWS + 5, 24);
        let x = Tensor::randn(0f32, 1.0, (rows, k), dev)?.to_dtype(DType::BF16)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), dev)?.to_dtype(DType::BF16)?;
        let got = matmul_wt(&x, &w)?;
        assert_eq!((got.dims(), got.dtype()), (&[rows, n][..], DType::BF16));
        let f32 = |t: &Tensor| t.to_dtype(DType::F32);
        let want = f32(&x)?.matmul(&f32(&w)?.t()?)?;
        assert!(crate::ops::max_relative_error(&got, &want)? < 8e-3);
        Ok(())
    }
}
