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

/// Every bf16 row of `w` (rows of `x.len()`) against `x`, into `out`: four
/// weight rows at a time, each eight-value load widened in registers.
pub fn bf16_rows(w: &[half::bf16], x: &[f32], out: &mut [f32]) {
    let len = x.len();
    assert!(len > 0 && w.len() == out.len() * len);
    let mut quads = w.chunks_exact(4 * len);
    let mut outs = out.chunks_exact_mut(4);
    for (q, o) in (&mut quads).zip(&mut outs) {
        let rows: [&[half::bf16]; 4] = std::array::from_fn(|i| &q[i * len..(i + 1) * len]);
        // SAFETY: `bf16_rows` is called only after AVX2 and FMA were
        // detected; every row is `len` long.
        o.copy_from_slice(&unsafe { bf16_group(x, rows) });
    }
    for (row, o) in quads.remainder().chunks(len).zip(outs.into_remainder()) {
        *o = super::bf16_tail(row, x, 0);
    }
}

/// `x` against four bf16 rows of its length.
#[target_feature(enable = "avx2,fma")]
unsafe fn bf16_group(x: &[f32], w: [&[half::bf16]; 4]) -> [f32; 4] {
    let full = x.len() / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < full {
        let xv = _mm256_loadu_ps(x.as_ptr().add(i));
        for r in 0..4 {
            let raw = _mm_loadu_si128(w[r].as_ptr().add(i).cast());
            let wv = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
            acc[r] = _mm256_fmadd_ps(wv, xv, acc[r]);
        }
        i += 8;
    }
    let mut out = [0f32; 4];
    for r in 0..4 {
        out[r] = hsum(acc[r]) + super::bf16_tail(w[r], x, full);
    }
    out
}

/// Rows of `x` per `pair` call: its eight accumulators, two weight vectors
/// and one `x` vector in the sixteen AVX2 registers.
pub const PAIR_ROWS: usize = 4;

pub fn pair(w: [&[f32]; 2], xs: &[&[f32]]) -> [[f32; super::PAIR_X_ROWS]; 2] {
    let len = w[0].len();
    assert!(w[1].len() == len && xs.iter().all(|x| x.len() >= len));
    assert!((1..=PAIR_ROWS).contains(&xs.len()));
    // SAFETY: only chosen by `kernels` after AVX2 and FMA were detected; the
    // loads below stay within `len` elements of each row.
    unsafe { super::by_rows!(pair_block, w, xs) }
}

/// Two weight rows against `R` rows of `x`, eight floats a step.
#[target_feature(enable = "avx2,fma")]
unsafe fn pair_block<const R: usize>(
    w: [&[f32]; 2],
    xs: [&[f32]; R],
) -> [[f32; super::PAIR_X_ROWS]; 2] {
    let len = w[0].len();
    let full = len / 8 * 8;
    let (w0, w1) = (w[0].as_ptr(), w[1].as_ptr());
    let mut a0 = [_mm256_setzero_ps(); R];
    let mut a1 = [_mm256_setzero_ps(); R];
    let mut i = 0;
    while i < full {
        let v0 = _mm256_loadu_ps(w0.add(i));
        let v1 = _mm256_loadu_ps(w1.add(i));
        for r in 0..R {
            let xv = _mm256_loadu_ps(xs[r].as_ptr().add(i));
            a0[r] = _mm256_fmadd_ps(v0, xv, a0[r]);
            a1[r] = _mm256_fmadd_ps(v1, xv, a1[r]);
        }
        i += 8;
    }
    let mut out = [[0f32; super::PAIR_X_ROWS]; 2];
    for r in 0..R {
        out[0][r] = hsum(a0[r]) + super::tail::<true>(w[0], xs[r], full);
        out[1][r] = hsum(a1[r]) + super::tail::<true>(w[1], xs[r], full);
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
