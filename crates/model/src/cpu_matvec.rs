//! `x · wᵀ` on the CPU for up to four rows of `x` (decode steps of few
//! sequences), f32: each weight row is read from memory once and dotted with
//! every row of `x` while it is in the L1 cache, weight rows split across the
//! threads. A decode step is bound by reading the weights, and candle's CPU
//! matmul reads them at well under the memory bandwidth in one-row products
//! (`cargo bench -p medgemma-model --bench matvec` measures both).
//!
//! The dot products use AVX2 and FMA where the CPU has them (checked at run
//! time), else portable loops; both accumulate in f32 over eight-lane partial
//! sums, so results differ from a sequential sum only by rounding order. From
//! five rows on, the products become bound by loading `x` and candle's `(w · xᵀ)ᵀ`
//! is as fast (see `linear`).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Weight rows per task: enough work per task to amortize scheduling, and many
/// tasks per thread to balance.
const ROWS_PER_TASK: usize = 32;

/// Rows of `x` up to which `matvec` is the faster product.
pub const MAX_ROWS: usize = 4;

/// Whether `matvec` serves `x` `[rows, in]` times `w` `[out, in]` faster than
/// candle's matmul: f32 on the CPU, at most `MAX_ROWS` rows.
pub fn serves(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && x.rank() == 2
        && w.rank() == 2
        && x.dims()[0] <= MAX_ROWS
}

/// `x · wᵀ`: `x` `[rows, in]`, `w` `[out, in]`, both f32 on the CPU → `[rows, out]`.
pub fn matvec(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &MatVec)
}

struct MatVec;

impl CustomOp2 for MatVec {
    fn name(&self) -> &'static str {
        "cpu-matvec"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, k) = xl.shape().dims2()?;
        let (n, k2) = wl.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("cpu matvec: x has {k} columns, w {k2}");
        }
        let (Some((x0, x1)), Some((w0, w1))) = (xl.contiguous_offsets(), wl.contiguous_offsets())
        else {
            candle_core::bail!("cpu matvec: operands must be contiguous");
        };
        let x = &xs.as_slice::<f32>()?[x0..x1];
        let w = &ws.as_slice::<f32>()?[w0..w1];
        let out = products(x, w, rows, k);
        Ok((CpuStorage::F32(out), Shape::from((rows, n))))
    }
}

/// `[rows, n]` row-major products of `x` `[rows, k]` with every row of `w` `[n, k]`.
fn products(x: &[f32], w: &[f32], rows: usize, k: usize) -> Vec<f32> {
    let n = w.len() / k.max(1);
    let mut by_weight = vec![0f32; n * rows];
    let kernels = kernels();
    let xs: Vec<&[f32]> = x.chunks(k).collect();
    by_weight
        .par_chunks_mut(ROWS_PER_TASK * rows)
        .zip(w.par_chunks(ROWS_PER_TASK * k))
        .for_each(|(out, wrows)| {
            if rows == 1 {
                return weight_rows_products(&kernels, wrows, xs[0], out);
            }
            for (o, wr) in out.chunks_mut(rows).zip(wrows.chunks(k)) {
                row_products(&kernels, wr, &xs, o);
            }
        });
    if rows == 1 {
        return by_weight;
    }
    // `[n, rows]` → `[rows, n]`.
    let mut out = vec![0f32; rows * n];
    for (j, col) in by_weight.chunks(rows).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            out[i * n + j] = v;
        }
    }
    out
}

/// Every weight row of `w` against the one row `x`, four weight rows at a time
/// (four memory streams in flight, each loaded `x` vector serving four products).
fn weight_rows_products(k: &Kernels, w: &[f32], x: &[f32], out: &mut [f32]) {
    let len = x.len();
    let mut quads = w.chunks_exact(4 * len);
    let mut outs = out.chunks_exact_mut(4);
    for (q, o) in (&mut quads).zip(&mut outs) {
        let rows: [&[f32]; 4] = std::array::from_fn(|i| &q[i * len..(i + 1) * len]);
        o.copy_from_slice(&(k.four)(x, rows));
    }
    for (wr, o) in quads.remainder().chunks(len).zip(outs.into_remainder()) {
        *o = (k.one)(wr, [x])[0];
    }
}

/// One weight row against every row of `x`: four rows of `x` at a time, then one.
fn row_products(k: &Kernels, w: &[f32], xs: &[&[f32]], out: &mut [f32]) {
    let mut at = 0;
    while xs.len() - at >= 4 {
        let x: [&[f32]; 4] = std::array::from_fn(|i| xs[at + i]);
        out[at..at + 4].copy_from_slice(&(k.four)(w, x));
        at += 4;
    }
    for (x, o) in xs[at..].iter().zip(&mut out[at..]) {
        *o = (k.one)(w, [x])[0];
    }
}

/// Dot products of one weight row with one or four rows of `x`: each weight
/// vector loaded serves them all.
struct Kernels {
    one: fn(&[f32], [&[f32]; 1]) -> [f32; 1],
    four: fn(&[f32], [&[f32]; 4]) -> [f32; 4],
}

/// The fastest kernels this CPU runs: AVX2 with FMA where present (checked at
/// run time), else the portable loops.
fn kernels() -> Kernels {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Kernels {
                one: avx2::dots::<1>,
                four: avx2::dots::<4>,
            };
        }
    }
    Kernels {
        one: dots_portable::<1>,
        four: dots_portable::<4>,
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    pub fn dots<const R: usize>(w: &[f32], xs: [&[f32]; R]) -> [f32; R] {
        assert!(xs.iter().all(|x| x.len() >= w.len()));
        // SAFETY: only chosen by `kernels` after AVX2 and FMA were detected; every
        // load below is within `w.len()`, which no row of `xs` is shorter than.
        unsafe {
            if R == 1 {
                let mut out = [0f32; R];
                out[0] = one(w, xs[0]);
                out
            } else {
                group::<R>(w, xs)
            }
        }
    }

    /// One product over four independent accumulators (32 floats a step).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn one(w: &[f32], x: &[f32]) -> f32 {
        let full = w.len() / 32 * 32;
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < full {
            for (c, a) in acc.iter_mut().enumerate() {
                let at = i + 8 * c;
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(wp.add(at)), _mm256_loadu_ps(xp.add(at)), *a);
            }
            i += 32;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        hsum(sum) + super::tail::<true>(w, x, full)
    }

    /// `R` products sharing each loaded weight vector (8 floats a step).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group<const R: usize>(w: &[f32], xs: [&[f32]; R]) -> [f32; R] {
        let full = w.len() / 8 * 8;
        let wp = w.as_ptr();
        let mut acc = [_mm256_setzero_ps(); R];
        let mut i = 0;
        while i < full {
            let wv = _mm256_loadu_ps(wp.add(i));
            for r in 0..R {
                acc[r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xs[r].as_ptr().add(i)), acc[r]);
            }
            i += 8;
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = hsum(acc[r]) + super::tail::<true>(w, xs[r], full);
        }
        out
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

/// Fused multiply-adds where every CPU of the target has them (on x86-64 without
/// FMA `mul_add` would be a library call per element).
fn dots_portable<const R: usize>(w: &[f32], xs: [&[f32]; R]) -> [f32; R] {
    dots::<R, { cfg!(target_arch = "aarch64") }>(w, xs)
}

/// Lanes of one partial-sum vector.
const LANES: usize = 8;
/// Independent partial-sum vectors per product when alone, to hide the latency
/// of the multiply-add chain.
const CHAINS: usize = 4;

#[inline(always)]
fn madd<const FMA: bool>(x: f32, y: f32, acc: f32) -> f32 {
    if FMA {
        x.mul_add(y, acc)
    } else {
        acc + x * y
    }
}

/// `w · x` for each of the `R` rows `xs`, over eight-lane partial sums (four
/// chains of them when `R` is 1), reduced pairwise at the end.
#[inline(always)]
fn dots<const R: usize, const FMA: bool>(w: &[f32], xs: [&[f32]; R]) -> [f32; R] {
    let step = if R == 1 { LANES * CHAINS } else { LANES };
    let mut acc = [[0f32; LANES * CHAINS]; R];
    let full = w.len() / step * step;
    for (i, wv) in w[..full].chunks_exact(step).enumerate() {
        for r in 0..R {
            let xv = &xs[r][i * step..(i + 1) * step];
            for l in 0..step {
                acc[r][l] = madd::<FMA>(wv[l], xv[l], acc[r][l]);
            }
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        let mut width = step;
        while width > 1 {
            width /= 2;
            for l in 0..width {
                acc[r][l] += acc[r][l + width];
            }
        }
        out[r] = acc[r][0] + tail::<FMA>(w, xs[r], full);
    }
    out
}

/// The products' last `w.len() - from` terms.
#[inline(always)]
fn tail<const FMA: bool>(w: &[f32], x: &[f32], from: usize) -> f32 {
    w[from..]
        .iter()
        .zip(&x[from..])
        .fold(0f32, |acc, (a, b)| madd::<FMA>(*a, *b, acc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn check(rows: usize, n: usize, k: usize) {
        let dev = &Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (rows, k), dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (n, k), dev).unwrap();
        let got = matvec(&x, &w).unwrap();
        let want = x.matmul(&w.t().unwrap()).unwrap();
        assert_eq!(got.dims(), want.dims());
        let err = crate::ops::max_relative_error(&got, &want).unwrap();
        assert!(err < 1e-5, "{rows}x{k} · ({n}x{k})ᵀ: {err:e}");
    }

    #[test]
    fn equals_candle_matmul_on_odd_and_even_shapes() {
        for (rows, n, k) in [
            (1, 1, 1),
            (1, 33, 31),
            (3, 65, 100),
            (16, 257, 1024),
            (5, 64, 32),
            (13, 70, 77),
        ] {
            check(rows, n, k);
        }
    }

    #[test]
    fn both_dot_products_agree() {
        let a: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..1000)
            .map(|i| ((i * 53) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let fast = (kernels().one)(&a, [&b])[0] as f64;
        let portable = dots_portable::<1>(&a, [&b])[0] as f64;
        let grouped = (kernels().four)(&a, [&b, &a, &b, &b])[2] as f64;

        assert!((fast - exact).abs() < 1e-3, "{fast} vs {exact}");
        assert!((portable - exact).abs() < 1e-3, "{portable} vs {exact}");
        assert!((grouped - exact).abs() < 1e-3, "{grouped} vs {exact}");
    }
}
