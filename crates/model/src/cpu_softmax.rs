//! Softmax over the last dimension on the CPU, in f32 whatever the input dtype and
//! rounded once (as transformers' `softmax(x, dtype=float32).to(x.dtype)`), with
//! the exponential vectorized (`cpu_gelu::exp_neg`; candle's CPU softmax calls the
//! scalar libm `expf` per element, which dominates attention over long rows such
//! as SigLIP's 4096 patches).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::cpu_gelu::{exp_neg, Act};

/// Softmax of `x` (on the CPU) over its last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Softmax)
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "cpu-softmax-f32"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("softmax: the input must be contiguous");
        };
        let width = l.shape().dims().last().copied().unwrap_or(1).max(1);
        let out = match st.dtype() {
            DType::F32 => CpuStorage::F32(rows(&st.as_slice::<f32>()?[a..b], width)),
            DType::BF16 => CpuStorage::BF16(rows(&st.as_slice::<bf16>()?[a..b], width)),
            DType::F16 => CpuStorage::F16(rows(&st.as_slice::<f16>()?[a..b], width)),
            other => candle_core::bail!("softmax: unsupported dtype {other:?}"),
        };
        Ok((out, l.shape().clone()))
    }
}

fn rows<T: Act>(x: &[T], width: usize) -> Vec<T> {
    let mut out = vec![T::from_f32(0.0); x.len()];
    out.par_chunks_mut(width)
        .zip(x.par_chunks(width))
        .for_each_init(Vec::new, |buf, (o, row)| {
            buf.clear();
            buf.extend(row.iter().map(|v| v.to_f32()));
            softmax_in_place(buf);
            for (d, &v) in o.iter_mut().zip(buf.iter()) {
                *d = T::from_f32(v);
            }
        });
    out
}

/// With AVX2/FMA where the CPU has them.
fn softmax_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: both features were just detected.
            return unsafe { softmax_avx2(x) };
        }
    }
    softmax_loop(x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(x: &mut [f32]) {
    softmax_loop(x);
}

const LANES: usize = 8;

#[inline(always)]
fn softmax_loop(x: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(lanes.iter())
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for v in x.iter_mut() {
        *v = exp_neg(*v - max);
    }
    let mut sums = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            sums[i] += c[i];
        }
    }
    let sum: f32 = sums.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    for v in x.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn equals_candles_softmax_in_f32() {
        let dev = &Device::Cpu;
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            for shape in [(3, 5, 1), (2, 7, 33), (1, 4, 4096)] {
                // Fixed inputs in [-8, 8) (random ones made this test flaky).
                let n = shape.0 * shape.1 * shape.2;
                let mut state = 0x2545_f491u32;
                let values: Vec<f32> = (0..n)
                    .map(|_| {
                        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (state >> 8) as f32 / (1u32 << 24) as f32 * 16.0 - 8.0
                    })
                    .collect();
                let x = Tensor::from_vec(values, shape, dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let want = candle_nn::ops::softmax_last_dim(&x.to_dtype(DType::F32).unwrap())
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let got = softmax_last_dim(&x).unwrap();
                let err = crate::ops::max_relative_error(&got, &want).unwrap();
                // A few ulp of the vectorized exponential, summed over a row.
                let tol = if dtype == DType::F32 { 4e-6 } else { 1e-2 };
                assert!(err < tol, "{dtype:?} {shape:?}: {err:e}");
            }
        }
    }

    #[test]
    fn masked_scores_get_exactly_zero() {
        let x = Tensor::new(
            &[[0f32, f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY]],
            &Device::Cpu,
        )
        .unwrap();
        let p: Vec<f32> = softmax_last_dim(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!((p[1], p[3]), (0.0, 0.0));
        assert!((p[0] + p[2] - 1.0).abs() < 1e-6);
    }
}
