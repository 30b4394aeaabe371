//! `x · wᵀ` on the CPU for up to eight rows of `x` (decode steps of few
//! sequences): each weight row is read from memory once and dotted with every row
//! of `x` while it is in the L1 cache, weight rows split across the threads. A
//! decode step is bound by reading the weights, and candle's CPU matmul reads them
//! at well under the memory bandwidth in few-row products (`cargo bench -p
//! medgemma-model --bench matvec` measures both).
//!
//! One row streams four weight rows at a time; more rows take two weight rows
//! at a time against up to eight rows of `x` (sixteen AVX-512 accumulators; four
//! rows with AVX2). The dot products use AVX-512, or AVX2 and FMA, where the CPU
//! has them (checked at run time), else portable loops; all accumulate in f32
//! over 8- or 16-lane partial sums, so results differ from a sequential sum only
//! by rounding order. Past eight rows the products become bound by loading `x`
//! and candle's `(w · xᵀ)ᵀ` is faster (see `linear`).
//!
//! bf16 and f16 weights are read as stored (half the bytes of f32, so less time
//! in a step bound by reading them). bf16 rows are widened in registers: one row
//! of `x` against four weight rows (AVX2), more rows by the AVX-512 pair kernel.
//! Elsewhere (f16, CPUs without those) a task's weight rows are widened into a
//! buffer the f32 kernels then read from the cache. `x` is widened once and the
//! products are rounded once to the operands' dtype, as PyTorch's CPU
//! half-precision products do (f32 sums). candle's own half-precision CPU matmul
//! widens the whole weight on every call: a bf16 decode step took 18 times as long
//! as an f32 one.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;

/// Weight rows per task: enough work per task to amortize scheduling, and many
/// tasks per thread to balance.
const ROWS_PER_TASK: usize = 32;

/// Rows of `x` up to which `matvec` is the faster product.
pub const MAX_ROWS: usize = 8;

/// Whether `matvec` serves `x` `[rows, in]` times `w` `[out, in]` faster than
/// candle's matmul: on the CPU, at most `MAX_ROWS` rows, both operands f32, bf16
/// or f16 (the same).
pub fn serves(x: &Tensor, w: &Tensor) -> bool {
    takes(x, w) && x.dims()[0] <= MAX_ROWS
}

/// Whether `matvec` takes these operands at all (any number of rows): on the
/// CPU, matrices of one dtype, f32, bf16 or f16.
pub fn takes(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16)
        && w.dtype() == x.dtype()
        && x.rank() == 2
        && w.rank() == 2
}

/// `x · wᵀ`: `x` `[rows, in]`, `w` `[out, in]`, on the CPU in one dtype (f32,
/// bf16 or f16; sums in f32) → `[rows, out]`.
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
        let out = match (xs, ws) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                CpuStorage::F32(products(&x[x0..x1], &w[w0..w1], rows, k))
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(w)) => {
                let y = products(&widened(&x[x0..x1]), &w[w0..w1], rows, k);
                CpuStorage::BF16(y.iter().map(|&v| bf16::from_f32(v)).collect())
            }
            (CpuStorage::F16(x), CpuStorage::F16(w)) => {
                let y = products(&widened(&x[x0..x1]), &w[w0..w1], rows, k);
                CpuStorage::F16(y.iter().map(|&v| f16::from_f32(v)).collect())
            }
            _ => candle_core::bail!(
                "cpu matvec: unsupported dtypes {:?} x {:?}",
                xs.dtype(),
                ws.dtype()
            ),
        };
        Ok((out, Shape::from((rows, n))))
    }
}

/// Half-precision values as f32.
fn widened<H: HalfFloat>(v: &[H]) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    H::widen(v, &mut out);
    out
}

/// Weights the kernels read: f32 as they are, half precision widened first.
trait WeightRows: Sized + Sync {
    /// `w` as f32, `buf` holding the widened copy where one is needed.
    fn as_f32<'a>(w: &'a [Self], buf: &'a mut Vec<f32>) -> &'a [f32];

    /// The products of the one row `x` with every row of `w` (`out`), where a
    /// kernel reads `w` as stored; `false` where none does.
    fn one_row_as_stored(_w: &[Self], _x: &[f32], _out: &mut [f32]) -> bool {
        false
    }

    /// The products of the rows `xs` with every row of `w` (`out`: `[weight
    /// rows, rows]`), where a kernel reads `w` as stored; `false` where none does.
    fn rows_as_stored(_w: &[Self], _xs: &[&[f32]], _out: &mut [f32]) -> bool {
        false
    }
}

impl WeightRows for f32 {
    fn as_f32<'a>(w: &'a [Self], _: &'a mut Vec<f32>) -> &'a [f32] {
        w
    }
}

/// bf16 and f16, widened slice by slice.
trait HalfFloat: Copy + Sync {
    fn widen(src: &[Self], dst: &mut [f32]);
}

impl HalfFloat for bf16 {
    /// bf16 is the top half of an f32: a shift the compiler vectorizes (`half`'s
    /// slice conversion goes value by value, slower than reading the weights).
    fn widen(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(u32::from(s.to_bits()) << 16);
        }
    }
}

impl HalfFloat for f16 {
    fn widen(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst)
    }
}

/// `w` widened into `buf`.
fn widened_into<'a, H: HalfFloat>(w: &[H], buf: &'a mut Vec<f32>) -> &'a [f32] {
    buf.resize(w.len(), 0.0);
    H::widen(w, buf);
    buf
}

impl WeightRows for bf16 {
    fn as_f32<'a>(w: &'a [Self], buf: &'a mut Vec<f32>) -> &'a [f32] {
        widened_into(w, buf)
    }

    /// One row of `x` against four bf16 weight rows at a time, widened in
    /// registers (AVX2 and FMA): the weights cross memory once and are never
    /// written back as f32.
    fn one_row_as_stored(w: &[Self], x: &[f32], out: &mut [f32]) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                avx2::bf16_rows(w, x, out);
                return true;
            }
        }
        let _ = (w, x, out);
        false
    }

    /// Two bf16 weight rows at a time against up to eight rows of `x`, widened
    /// in registers (AVX-512).
    fn rows_as_stored(w: &[Self], xs: &[&[f32]], out: &mut [f32]) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                let pair = Pair {
                    kernel: avx512::pair_bf16,
                    rows: PAIR_X_ROWS,
                };
                weight_pairs_products(pair, w, xs, out);
                return true;
            }
        }
        let _ = (w, xs, out);
        false
    }
}

impl WeightRows for f16 {
    fn as_f32<'a>(w: &'a [Self], buf: &'a mut Vec<f32>) -> &'a [f32] {
        widened_into(w, buf)
    }
}

/// `[rows, n]` row-major products of `x` `[rows, k]` with every row of `w` `[n, k]`.
fn products<W: WeightRows>(x: &[f32], w: &[W], rows: usize, k: usize) -> Vec<f32> {
    let n = w.len() / k.max(1);
    let mut by_weight = vec![0f32; n * rows];
    let kernels = kernels();
    let xs: Vec<&[f32]> = x.chunks(k).collect();
    by_weight
        .par_chunks_mut(ROWS_PER_TASK * rows)
        .zip(w.par_chunks(ROWS_PER_TASK * k))
        .for_each_init(Vec::new, |buf, (out, wrows)| {
            if rows == 1 && W::one_row_as_stored(wrows, xs[0], out) {
                return;
            }
            if rows > 1 && W::rows_as_stored(wrows, &xs, out) {
                return;
            }
            let wrows = W::as_f32(wrows, buf);
            if rows == 1 {
                weight_rows_products(&kernels, wrows, xs[0], out)
            } else {
                let pair = Pair {
                    kernel: kernels.pair,
                    rows: kernels.pair_rows,
                };
                weight_pairs_products(pair, wrows, &xs, out)
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

/// Every weight row of `w` against every row of `x` (`out`: `[weight rows,
/// rows]`), two weight rows at a time against four rows of `x` at a time: each
/// loaded weight vector serves four products and each loaded `x` vector two, and
/// the pair is read from memory once and from the L1 cache for the other rows.
fn weight_pairs_products<W>(pair: Pair<W>, w: &[W], xs: &[&[f32]], out: &mut [f32]) {
    let (len, rows) = (xs[0].len(), xs.len());
    let mut pairs = w.chunks_exact(2 * len);
    let mut outs = out.chunks_exact_mut(2 * rows);
    for (p, o) in (&mut pairs).zip(&mut outs) {
        let (o0, o1) = o.split_at_mut(rows);
        pair_products(pair, [&p[..len], &p[len..]], xs, [o0, o1]);
    }
    let (last, o) = (pairs.remainder(), outs.into_remainder());
    if !last.is_empty() {
        let mut spare = vec![0f32; rows];
        pair_products(pair, [last, last], xs, [o, &mut spare]);
    }
}

/// The two weight rows `w` against every row of `xs`, into `out[0]` and `out[1]`.
fn pair_products<W>(pair: Pair<W>, w: [&[W]; 2], xs: &[&[f32]], out: [&mut [f32]; 2]) {
    let [o0, o1] = out;
    let n = pair.rows;
    for ((chunk, c0), c1) in xs.chunks(n).zip(o0.chunks_mut(n)).zip(o1.chunks_mut(n)) {
        let r = (pair.kernel)(w, chunk);
        c0.copy_from_slice(&r[0][..chunk.len()]);
        c1.copy_from_slice(&r[1][..chunk.len()]);
    }
}

/// A pair kernel over weights of `W`, with the rows of `x` it takes at most.
struct Pair<W> {
    kernel: PairProducts<W>,
    rows: usize,
}

impl<W> Clone for Pair<W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W> Copy for Pair<W> {}

/// Rows of `x` one call of a pair kernel takes at most.
const PAIR_X_ROWS: usize = 8;

/// Products of two weight rows with up to `PAIR_X_ROWS` rows of `x`:
/// `[weight row][x row]`, the entries past `xs.len()` zero.
type PairProducts<W = f32> = fn([&[W]; 2], &[&[f32]]) -> [[f32; PAIR_X_ROWS]; 2];

/// Dot products of one weight row with one or four rows of `x` (each loaded
/// weight vector serves them all), and of two weight rows with up to four rows.
struct Kernels {
    one: fn(&[f32], [&[f32]; 1]) -> [f32; 1],
    four: fn(&[f32], [&[f32]; 4]) -> [f32; 4],
    pair: PairProducts,
    /// Rows of `x` `pair` takes at most (as many as its accumulators fit in
    /// registers).
    pair_rows: usize,
}

/// The fastest kernels this CPU runs: AVX-512 for the pairs and AVX2 with FMA
/// for the rest where present (checked at run time), else the portable loops.
fn kernels() -> Kernels {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            let (pair, pair_rows): (PairProducts, _) = if is_x86_feature_detected!("avx512f") {
                (avx512::pair, PAIR_X_ROWS)
            } else {
                (avx2::pair, avx2::PAIR_ROWS)
            };
            return Kernels {
                one: avx2::dots::<1>,
                four: avx2::dots::<4>,
                pair,
                pair_rows,
            };
        }
    }
    Kernels {
        one: dots_portable::<1>,
        four: dots_portable::<4>,
        pair: pair_portable,
        pair_rows: PAIR_X_ROWS,
    }
}

/// `R` (1 to 4) rows of `x`, as an array, for the const-generic kernels.
#[inline(always)]
fn first<'a, const R: usize>(xs: &[&'a [f32]]) -> [&'a [f32]; R] {
    std::array::from_fn(|i| xs[i])
}

/// Calls `$kernel::<R>` with the first `R` rows of `$xs`, `R` = `$xs.len()` (1 to 4).
macro_rules! by_rows {
    ($kernel:ident, $w:expr, $xs:expr) => {
        match $xs.len() {
            1 => $kernel::<1>($w, $crate::cpu_matvec::first($xs)),
            2 => $kernel::<2>($w, $crate::cpu_matvec::first($xs)),
            3 => $kernel::<3>($w, $crate::cpu_matvec::first($xs)),
            4 => $kernel::<4>($w, $crate::cpu_matvec::first($xs)),
            5 => $kernel::<5>($w, $crate::cpu_matvec::first($xs)),
            6 => $kernel::<6>($w, $crate::cpu_matvec::first($xs)),
            7 => $kernel::<7>($w, $crate::cpu_matvec::first($xs)),
            _ => $kernel::<8>($w, $crate::cpu_matvec::first($xs)),
        }
    };
}
use by_rows;

fn pair_portable(w: [&[f32]; 2], xs: &[&[f32]]) -> [[f32; PAIR_X_ROWS]; 2] {
    let mut out = [[0f32; PAIR_X_ROWS]; 2];
    for (o, wr) in out.iter_mut().zip(w) {
        for (slot, x) in o.iter_mut().zip(xs) {
            *slot = dots_portable::<1>(wr, [x])[0];
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(target_arch = "x86_64")]
mod avx2;

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
/// The product of a bf16 row and `x` from `from` on, one value at a time.
fn bf16_tail(w: &[bf16], x: &[f32], from: usize) -> f32 {
    w[from..]
        .iter()
        .zip(&x[from..])
        .fold(0f32, |acc, (a, b)| acc + a.to_f32() * b)
}

fn tail<const FMA: bool>(w: &[f32], x: &[f32], from: usize) -> f32 {
    w[from..]
        .iter()
        .zip(&x[from..])
        .fold(0f32, |acc, (a, b)| madd::<FMA>(*a, *b, acc))
}

#[cfg(test)]
mod tests;
