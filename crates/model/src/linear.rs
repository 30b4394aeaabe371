//! The decoder's bias-free linear layers, `x · wᵀ` with `w` `[out, in]` as stored.
//! On the CPU, products of few rows (decode steps, bound by reading the weights)
//! avoid candle's `x · wᵀ`, which reads the transposed weight at well under the
//! memory bandwidth: up to eight rows run as `cpu_matvec` (a 32000×1024 f32
//! weight read at about 21 GB/s with one row and 12.7 with eight, against 9 and
//! 6.6 for candle's best form on the 2-core development machine); in f32, 9 to 16
//! rows as `(w · xᵀ)ᵀ` and 17 to 64 as `cpu_matvec` eight rows at a time (short
//! prompts: 1.3–2× candle's matmul there). Half-precision weights never reach
//! candle's CPU matmul, which widens both whole operands to f32 on every call:
//! up to 192 rows go eight at a time through `cpu_matvec`, which reads them as
//! stored, more through f32 copies of 2048 weight rows at a time. On CUDA,
//! products of up to eight rows can run as the `gemv` kernel where it measured
//! faster than cuBLAS at load (`gemv_plan`).

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

/// Rows up to which CPU products go eight rows at a time through `cpu_matvec`:
/// f32 (past `FEW_ROWS`), and half precision. Measured on MedGemma 4B's shapes
/// (two layers, `bench --synthetic tools/bench/medgemma-4b-2-layers.json --device
/// cpu`): f32 prompts of 24–64 tokens 1.2–1.9× faster than candle's matmul, 96 and
/// more slower; bf16 ahead of the widened blocks up to 192, even at 256.
const BY_EIGHTS_F32: usize = 64;
const BY_EIGHTS_HALF: usize = 192;

/// Weight rows widened to f32 at a time in `widened_blocks`: 2048 rows of 2560
/// are 20 MiB of f32, products of a few thousand columns keep the matmul efficient.
const WIDEN_ROWS: usize = 2048;

/// `x · wᵀ` for `x` `[rows, in]` and `w` `[out, in]`.
pub fn matmul_wt(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if crate::cpu_matvec::serves(x, w) {
        return crate::cpu_matvec::matvec(x, w);
    }
    if x.device().is_cpu() {
        let rows = x.dim(0)?;
        let half = matches!(w.dtype(), DType::BF16 | DType::F16);
        let by_eights = if half {
            rows <= BY_EIGHTS_HALF
        } else {
            rows > FEW_ROWS && rows <= BY_EIGHTS_F32
        };
        if by_eights && crate::cpu_matvec::takes(x, w) {
            return by_eight_rows(x, w);
        }
        if half {
            return widened_blocks(x, w);
        }
        if rows <= FEW_ROWS {
            return w.matmul(&x.t()?)?.t()?.contiguous();
        }
    }
    x.matmul(&w.t()?)
}

/// `x · wᵀ` on the CPU as `cpu_matvec` products of eight rows of `x` at a time:
/// each pass streams the weights as stored.
fn by_eight_rows(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let rows = x.dim(0)?;
    let step = crate::cpu_matvec::MAX_ROWS;
    let parts = (0..rows)
        .step_by(step)
        .map(|start| crate::cpu_matvec::matvec(&x.narrow(0, start, step.min(rows - start))?, w))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
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

    /// Every CPU form of the product (one row, few, by eights with a partial
    /// last eight, past that) in f32 and bf16, against the f32 product of the
    /// same values: equal in f32 up to rounding order, rounded once in bf16.
    #[test]
    fn every_cpu_form_is_the_f32_product() -> Result<()> {
        let dev = &Device::Cpu;
        let k = 24;
        let cases = [
            (1, 33),
            (12, 33),
            (20, 33),
            (BY_EIGHTS_F32 + 3, 33),
            (BY_EIGHTS_HALF + 3, WIDEN_ROWS + 5),
        ];
        for (rows, n) in cases {
            for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 8e-3)] {
                let x = Tensor::randn(0f32, 1.0, (rows, k), dev)?.to_dtype(dtype)?;
                let w = Tensor::randn(0f32, 1.0, (n, k), dev)?.to_dtype(dtype)?;
                let got = matmul_wt(&x, &w)?;
                assert_eq!((got.dims(), got.dtype()), (&[rows, n][..], dtype));
                let f32 = |t: &Tensor| t.to_dtype(DType::F32);
                let want = f32(&x)?.matmul(&f32(&w)?.t()?)?;
                let err = crate::ops::max_relative_error(&got, &want)?;
                assert!(err < tol, "{dtype:?} {rows} rows: {err:e}");
            }
        }
        Ok(())
    }
}
