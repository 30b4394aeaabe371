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
        (8, 65, 1000),
        (6, 3, 17),
        (13, 70, 77),
    ] {
        check(rows, n, k);
    }
}

/// Half-precision products: the f32 products of the same values, rounded once.
#[test]
fn half_precision_products_are_the_f32_ones_rounded() {
    let dev = &Device::Cpu;
    // One row (four weight rows at a time plus a remainder, lengths with a
    // tail) and several rows (the widened pairs).
    for (rows, n, k) in [
        (1, 9, 20),
        (1, 33, 31),
        (1, 64, 256),
        (3, 65, 100),
        (8, 17, 1000),
    ] {
        for dtype in [DType::BF16, DType::F16] {
            let x = Tensor::randn(0f32, 1.0, (rows, k), dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            assert!(serves(&x, &w));
            let got = matvec(&x, &w).unwrap();
            assert_eq!(got.dtype(), dtype);
            let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let want = f32(&x).matmul(&f32(&w).t().unwrap()).unwrap();
            let err = crate::ops::max_relative_error(&got, &want).unwrap();
            assert!(err < 8e-3, "{dtype:?} {rows}x{k} · ({n}x{k})ᵀ: {err:e}");
        }
    }
    let (x, w) = (
        Tensor::zeros((1, 4), DType::BF16, dev).unwrap(),
        Tensor::zeros((2, 4), DType::F32, dev).unwrap(),
    );
    assert!(!serves(&x, &w));
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
    let paired = (kernels().pair)([&a, &b], &[&b, &a])[0][0] as f64;

    assert!((fast - exact).abs() < 1e-3, "{fast} vs {exact}");
    assert!((portable - exact).abs() < 1e-3, "{portable} vs {exact}");
    assert!((grouped - exact).abs() < 1e-3, "{grouped} vs {exact}");
    assert!((paired - exact).abs() < 1e-3, "{paired} vs {exact}");
}

/// Every pair kernel this CPU runs against the portable one, on every row
/// count it takes and lengths with and without a partial last vector.
#[test]
fn pair_kernels_agree_with_the_portable_loops() {
    let mut candidates: Vec<(PairProducts, usize)> = vec![(kernels().pair, kernels().pair_rows)];
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        candidates.push((avx2::pair, avx2::PAIR_ROWS));
    }
    let row = |seed: usize, len: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 31 + seed * 17) % 89) as f32 / 44.0 - 1.0)
            .collect()
    };
    for len in [1, 7, 16, 33, 1000] {
        let w = [row(1, len), row(2, len)];
        let xs: Vec<Vec<f32>> = (0..PAIR_X_ROWS).map(|r| row(r + 3, len)).collect();
        let xs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        for &(pair, max_rows) in &candidates {
            for rows in 1..=max_rows {
                let got = pair([&w[0], &w[1]], &xs[..rows]);
                let want = pair_portable([&w[0], &w[1]], &xs[..rows]);
                for (g, e) in got.iter().flatten().zip(want.iter().flatten()) {
                    assert!(
                        (g - e).abs() <= 1e-4 * e.abs().max(1.0),
                        "{len} {rows}: {g} vs {e}"
                    );
                }
            }
        }
    }
}
