//! `gelu_tanh(gate) * up` on the CPU in one pass over the stacked gate/up output,
//! and `gelu_tanh` alone (SigLIP's MLP), with a tanh the compiler vectorizes
//! (candle's CPU gelu calls the scalar libm `tanhf` per element, about a seventh
//! of a decoder prefill).
//!
//! As PyTorch's CPU kernel: `0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 x³)))` in
//! f32, `1 + tanh` formed after the tanh, the result rounded to the activation
//! dtype before the product. tanh comes from `exp(-2|y|)` (Cephes' expf
//! polynomial, about one ulp) as `(1 - t) / (1 + t)`: within about 2e-7 of the
//! exact value, which is all `1 + tanh` can resolve in f32 anyway.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

/// `gate_up` `[rows, 2 * inter]` (gate, then up) on the CPU → `[rows, inter]`.
pub fn gelu_mul(gate_up: &Tensor, inter: usize) -> Result<Tensor> {
    gate_up.contiguous()?.apply_op1_no_bwd(&GeluMul { inter })
}

/// `gelu_tanh` of every element of `x` (on the CPU), computed in f32 and rounded
/// once to `x`'s dtype.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Gelu)
}

struct GeluMul {
    inter: usize,
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "cpu-gelu"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("gelu: the input must be contiguous");
        };
        let out = match st.dtype() {
            DType::F32 => CpuStorage::F32(elementwise(&st.as_slice::<f32>()?[a..b])),
            DType::BF16 => CpuStorage::BF16(elementwise(&st.as_slice::<bf16>()?[a..b])),
            DType::F16 => CpuStorage::F16(elementwise(&st.as_slice::<f16>()?[a..b])),
            other => candle_core::bail!("gelu: unsupported dtype {other:?}"),
        };
        Ok((out, l.shape().clone()))
    }
}

impl CustomOp1 for GeluMul {
    fn name(&self) -> &'static str {
        "cpu-gelu-mul"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, width) = l.shape().dims2()?;
        if width != 2 * self.inter {
            candle_core::bail!("gelu-mul: rows of {width}, expected 2 × {}", self.inter);
        }
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("gelu-mul: the input must be contiguous");
        };
        let shape = Shape::from((rows, self.inter));
        let out = match st.dtype() {
            DType::F32 => CpuStorage::F32(rows_of(&st.as_slice::<f32>()?[a..b], self.inter)),
            DType::BF16 => CpuStorage::BF16(rows_of(&st.as_slice::<bf16>()?[a..b], self.inter)),
            DType::F16 => CpuStorage::F16(rows_of(&st.as_slice::<f16>()?[a..b], self.inter)),
            other => candle_core::bail!("gelu-mul: unsupported dtype {other:?}"),
        };
        Ok((out, shape))
    }
}

/// A float the activations may be stored as.
pub(crate) trait Act: Copy + Send + Sync {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl Act for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Act for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

impl Act for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

/// Elements per chunk converted to f32 and run through the vector loop.
const CHUNK: usize = 256;

fn elementwise<T: Act>(x: &[T]) -> Vec<T> {
    let mut out = vec![T::from_f32(0.0); x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, xc)| {
            let mut g = [0f32; CHUNK];
            let g = &mut g[..xc.len()];
            for (d, s) in g.iter_mut().zip(xc) {
                *d = s.to_f32();
            }
            gelu_in_place(g);
            for (d, &v) in o.iter_mut().zip(g.iter()) {
                *d = T::from_f32(v);
            }
        });
    out
}

fn rows_of<T: Act>(x: &[T], inter: usize) -> Vec<T> {
    let rows = x.len() / (2 * inter).max(1);
    let mut out = vec![T::from_f32(0.0); rows * inter];
    out.par_chunks_mut(inter)
        .zip(x.par_chunks(2 * inter))
        .for_each(|(o, row)| {
            let (gate, up) = row.split_at(inter);
            let mut g = [0f32; CHUNK];
            for ((oc, gc), uc) in o
                .chunks_mut(CHUNK)
                .zip(gate.chunks(CHUNK))
                .zip(up.chunks(CHUNK))
            {
                let g = &mut g[..gc.len()];
                for (d, s) in g.iter_mut().zip(gc) {
                    *d = s.to_f32();
                }
                gelu_in_place(g);
                for ((d, &a), u) in oc.iter_mut().zip(g.iter()).zip(uc) {
                    // The gelu rounded to the activation dtype, then the product.
                    *d = T::from_f32(T::from_f32(a).to_f32() * u.to_f32());
                }
            }
        });
    out
}

/// `gelu_tanh` of every element, with AVX2/FMA where the CPU has them.
fn gelu_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: both features were just detected.
            return unsafe { gelu_avx2(x) };
        }
    }
    gelu_loop(x);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(x: &mut [f32]) {
    gelu_loop(x);
}

#[inline(always)]
fn gelu_loop(x: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const KAPPA: f32 = 0.044_715;
    for v in x.iter_mut() {
        let a = *v;
        let y = SQRT_2_OVER_PI * (a + KAPPA * a * a * a);
        *v = 0.5 * a * (1.0 + tanh(y));
    }
}

/// tanh from `t = exp(-2|y|)`: `sign(y) · (1 - t) / (1 + t)`.
#[inline(always)]
fn tanh(y: f32) -> f32 {
    let t = exp_neg(-2.0 * y.abs());
    let m = (1.0 - t) / (1.0 + t);
    m.copysign(y)
}

/// `exp(z)` for `z <= 0` (Cephes' expf): `z = n ln 2 + r`, `|r| <= ln 2 / 2`, a
/// degree-6 polynomial for `exp(r)` and `2^n` from the exponent bits. Below -87
/// the result is 0 (as `-inf` gives 0, for masked attention scores).
#[inline(always)]
pub(crate) fn exp_neg(z: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let flushed = z < -87.0;
    let z = z.max(-87.0);
    let n = (z * LOG2E + ROUND) - ROUND;
    let r = z - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if flushed {
        0.0
    } else {
        e * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn tanh_is_within_two_ten_millionths() {
        let mut worst = 0f64;
        for i in -200_000..=200_000 {
            let y = i as f32 * 1e-4;
            let err = (tanh(y) as f64 - (y as f64).tanh()).abs();
            worst = worst.max(err);
        }
        assert!(worst < 2.5e-7, "worst absolute error {worst:e}");
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert_eq!(tanh(0.0), 0.0);
    }

    #[test]
    fn gelu_alone_equals_candles() {
        let x = Tensor::randn(0f32, 3.0, (7, 333), &Device::Cpu).unwrap();
        let err = crate::ops::max_relative_error(&gelu(&x).unwrap(), &x.gelu().unwrap()).unwrap();
        assert!(err < 1e-6, "{err:e}");
    }

    #[test]
    fn equals_the_unfused_ops() {
        let dev = &Device::Cpu;
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            for (rows, inter) in [(1, 7), (5, 300), (3, 1024)] {
                let x = (Tensor::randn(0f32, 3.0, (rows, 2 * inter), dev).unwrap())
                    .to_dtype(dtype)
                    .unwrap();
                let got = gelu_mul(&x, inter).unwrap();
                let want = crate::gelu_mul::reference(&x, inter).unwrap();
                assert_eq!(got.dims(), want.dims());
                let err = crate::ops::max_relative_error(&got, &want).unwrap();
                // The kernels' tolerance: a 7-wide row can have a small maximum,
                // against which the vectorized tanh's 1e-7 errors reached 1.8e-6.
                let tol = crate::ops::fused_tolerance(dtype);
                assert!(err < tol, "{dtype:?} {rows}x{inter}: {err:e}");
            }
        }
    }
}
