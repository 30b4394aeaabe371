use super::PAIR_X_ROWS;
use half::bf16;
use std::arch::x86_64::*;

/// Floats ahead of use at which weights are prefetched.
const PREFETCH_AHEAD: usize = 256;

pub fn pair(w: [&[f32]; 2], xs: &[&[f32]]) -> [[f32; PAIR_X_ROWS]; 2] {
    let len = w[0].len();
    assert!(w[1].len() == len && xs.iter().all(|x| x.len() >= len));
    assert!((1..=PAIR_X_ROWS).contains(&xs.len()));
    // SAFETY: only chosen by `kernels` after AVX-512F was detected; the loads
    // below stay within `len` elements of each row (the last one masked).
    unsafe { super::by_rows!(block_f32, w, xs) }
}

/// `pair` for bf16 weight rows.
pub fn pair_bf16(w: [&[bf16]; 2], xs: &[&[f32]]) -> [[f32; PAIR_X_ROWS]; 2] {
    let len = w[0].len();
    assert!(w[1].len() == len && xs.iter().all(|x| x.len() >= len));
    assert!((1..=PAIR_X_ROWS).contains(&xs.len()));
    // SAFETY: only chosen after AVX-512F was detected; as `pair`.
    unsafe { super::by_rows!(block_bf16, w, xs) }
}

#[target_feature(enable = "avx512f")]
unsafe fn block_f32<const R: usize>(w: [&[f32]; 2], xs: [&[f32]; R]) -> [[f32; PAIR_X_ROWS]; 2] {
    block::<f32, R>(w, xs)
}

#[target_feature(enable = "avx512f")]
unsafe fn block_bf16<const R: usize>(w: [&[bf16]; 2], xs: [&[f32]; R]) -> [[f32; PAIR_X_ROWS]; 2] {
    block::<bf16, R>(w, xs)
}

/// Sixteen weights as f32 in a register.
trait Weights16: Copy {
    /// The sixteen at `p`.
    unsafe fn load(p: *const Self) -> __m512;
    /// The first `n` (< 16) at `p`, zeros after.
    unsafe fn load_first(p: *const Self, n: usize) -> __m512;
}

impl Weights16 for f32 {
    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_first(p: *const Self, n: usize) -> __m512 {
        _mm512_maskz_loadu_ps((1u16 << n) - 1, p)
    }
}

impl Weights16 for bf16 {
    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m512 {
        let raw = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()));
        _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16))
    }
    #[inline(always)]
    unsafe fn load_first(p: *const Self, n: usize) -> __m512 {
        let mut spare = [bf16::ZERO; 16];
        std::ptr::copy_nonoverlapping(p, spare.as_mut_ptr(), n);
        Self::load(spare.as_ptr())
    }
}

/// Two weight rows against `R` rows of `x`, sixteen values a step; the last
/// step's loads cut to the rows' end.
#[target_feature(enable = "avx512f")]
unsafe fn block<W: Weights16, const R: usize>(
    w: [&[W]; 2],
    xs: [&[f32]; R],
) -> [[f32; PAIR_X_ROWS]; 2] {
    let len = w[0].len();
    let full = len / 16 * 16;
    let (w0, w1) = (w[0].as_ptr(), w[1].as_ptr());
    let mut xp = [std::ptr::null::<f32>(); R];
    for r in 0..R {
        xp[r] = xs[r].as_ptr();
    }
    let mut a0 = [_mm512_setzero_ps(); R];
    let mut a1 = [_mm512_setzero_ps(); R];
    let mut i = 0;
    while i < full {
        // The weights stream from memory: ask for them ahead of use (past a
        // row's end lies the next weight row, which comes next anyway).
        _mm_prefetch::<_MM_HINT_T0>(w0.wrapping_add(i + PREFETCH_AHEAD).cast());
        _mm_prefetch::<_MM_HINT_T0>(w1.wrapping_add(i + PREFETCH_AHEAD).cast());
        let v0 = W::load(w0.add(i));
        let v1 = W::load(w1.add(i));
        for r in 0..R {
            let xv = _mm512_loadu_ps(xp[r].add(i));
            a0[r] = _mm512_fmadd_ps(v0, xv, a0[r]);
            a1[r] = _mm512_fmadd_ps(v1, xv, a1[r]);
        }
        i += 16;
    }
    if full < len {
        let n = len - full;
        let m: __mmask16 = (1u16 << n) - 1;
        let v0 = W::load_first(w0.add(full), n);
        let v1 = W::load_first(w1.add(full), n);
        for r in 0..R {
            let xv = _mm512_maskz_loadu_ps(m, xp[r].add(full));
            a0[r] = _mm512_fmadd_ps(v0, xv, a0[r]);
            a1[r] = _mm512_fmadd_ps(v1, xv, a1[r]);
        }
    }
    let mut out = [[0f32; PAIR_X_ROWS]; 2];
    for r in 0..R {
        out[0][r] = _mm512_reduce_add_ps(a0[r]);
        out[1][r] = _mm512_reduce_add_ps(a1[r]);
    }
    out
}
