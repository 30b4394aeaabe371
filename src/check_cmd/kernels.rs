//! The CUDA kernels against their plain-tensor references on the CPU, on random
//! inputs of MedGemma's shapes: decode attention over the paged pool (GQA,
//! sequences of different lengths scattered over the pool's slots), the rows
//! attention of steps with prefills (a row per new token, each with its run of
//! keys), the
//! residual add fused with the RMSNorms around it, the q/k norms fused with RoPE
//! and the KV write, the MLP's gelu fused with its product, the decode-step
//! matrix-vector product, the greedy argmax, the vision tower's softmax and its
//! bias epilogues, and the top-k candidates of sampled rows (the model runs those
//! last seven comparisons, and the rows one, itself at load, before it uses the
//! kernels).

use anyhow::Result;
use medgemma_model::bias_epilogue::{self, Widths};
use medgemma_model::ops::{fused_tolerance, max_relative_error as rel_err};
use medgemma_model::paged_decode::{paged_decode, reference};
use medgemma_model::{add_norm, argmax, gelu_mul, gemv, softmax, vision_attention};
use medgemma_model::{paged_rows, qk_rope_write, topk};
use medgemma_model::{DType, Device};

use medgemma_model::Tensor;

/// Slots in the random pool.
const POOL_SLOTS: usize = 4096;

/// Runs every case; prints one line each; `Ok(false)` when one is off.
pub fn check(device: &Device) -> Result<bool> {
    if !device.is_cuda() {
        println!("kernels: CUDA only, nothing to check on {device:?}");
        return Ok(true);
    }
    let mut ok = true;
    // (heads, kv heads, head_dim): MedGemma 4B, 27B, and a small one.
    let shapes = [(8, 4, 256), (32, 16, 128), (4, 1, 32)];
    for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 2e-2)] {
        for &(heads, kv_heads, head_dim) in &shapes {
            let err = paged_case(device, dtype, heads, kv_heads, head_dim)?;
            let what = format!("paged decode attention heads {heads}/{kv_heads} dim {head_dim}");
            ok &= report(&what, dtype, err, tol);
            let err = paged_rows::self_test(device, dtype, heads, kv_heads, head_dim)?;
            let what = format!(
                "paged rows attention (prefill + decode rows) heads {heads}/{kv_heads} dim {head_dim}"
            );
            ok &= report(&what, dtype, err, tol);
        }
    }
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 1e-2)] {
        for hidden in [2560, 5376] {
            let err = add_norm_case(device, dtype, hidden)?;
            ok &= report(
                &format!("residual add + RMSNorm hidden {hidden}"),
                dtype,
                err,
                tol,
            );
        }
    }
    for dtype in [DType::F32, DType::BF16] {
        for (heads, kv_heads, head_dim) in [(8, 4, 256), (32, 16, 128), (4, 2, 24)] {
            let err = qk_rope_write::self_test(device, dtype, heads, kv_heads, head_dim)?;
            let what =
                format!("q/k norm + RoPE + KV write heads {heads}/{kv_heads} dim {head_dim}");
            ok &= report(&what, dtype, err, fused_tolerance(dtype));
        }
        for inter in [10240, 21504] {
            let err = gelu_mul::self_test(device, dtype, inter)?;
            let what = format!("gelu(gate) * up intermediate {inter}");
            ok &= report(&what, dtype, err, fused_tolerance(dtype));
        }
        // (in, out): MedGemma 4B's q and down projections, 27B's q.
        for (k, n) in [(2560, 2048), (10240, 2560), (5376, 8192)] {
            let err = gemv::self_test(device, dtype, k, n)?;
            let what = format!("decode gemv [1..8 x {k}] x [{n} x {k}], splits 1..8");
            ok &= report(&what, dtype, err, fused_tolerance(dtype));
        }
        // SigLIP's scores at 896 px (4096 patches), and a short row.
        for n in [4096, 64] {
            let err = softmax::self_test(device, dtype, n)?;
            ok &= report(
                &format!("softmax rows of {n}"),
                dtype,
                err,
                fused_tolerance(dtype),
            );
        }
    }
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        // SigLIP's widths (MedGemma's tower), and a small tower's.
        for (hidden, intermediate, heads) in [(1152, 4304, 16), (64, 128, 4)] {
            let w = Widths {
                hidden,
                intermediate,
                heads,
            };
            let err = bias_epilogue::self_test(device, dtype, w)?;
            let what = format!(
                "vision bias + gelu / residual / q-k-v heads, hidden {hidden} inter {intermediate} heads {heads}"
            );
            ok &= report(&what, dtype, err, fused_tolerance(dtype));
        }
    }
    for dtype in [DType::BF16, DType::F16] {
        if !vision_attention::serves(device, dtype, 72) {
            println!(
                "kernels: vision attention (fused) needs compute capability 8.0: not used here"
            );
            break;
        }
        // SigLIP's heads (72 wide, 1024 patches here) and a small tower's.
        for (head_dim, patches) in [(72, 1024), (16, 70)] {
            let err = vision_attention::self_test(device, dtype, head_dim, patches)?;
            let what = format!(
                "vision attention (fused) heads of {head_dim}, {patches} patches, against f32"
            );
            ok &= report(&what, dtype, err, fused_tolerance(dtype));
        }
        let (fused, unfused) = vision_attention::timings(device, dtype, 16, 4096, 72)?;
        println!(
            "kernels: vision attention at 896 px (16 heads x 4096 patches x 72) {}: fused {:.3} ms, unfused {:.3} ms",
            dtype.as_str(),
            fused * 1e3,
            unfused * 1e3
        );
    }
    let wrong = argmax::self_test(device, 262_208)?;
    ok &= report(
        "greedy argmax, rows of 262208 and 262209 (ties, NaN, -inf): rows wrong",
        DType::F32,
        wrong as f64,
        0.0,
    );
    let wrong = topk::self_test(device, 262_208)?;
    ok &= report(
        "top-k candidates for the host's draws, rows of 262208 (k 1, 64, 1024; ties, zeros, NaN, inf): rows wrong",
        DType::F32,
        wrong as f64,
        0.0,
    );
    Ok(ok)
}

/// Prints one case's line; whether it passed.
pub(super) fn report(what: &str, dtype: DType, err: f64, tol: f64) -> bool {
    let pass = err <= tol;
    println!(
        "kernels: {what} {}: max error {err:.2e} relative ({}; tolerance {tol:.0e})",
        dtype.as_str(),
        if pass { "ok" } else { "FAIL" }
    );
    pass
}

/// Worst relative error of the fused residual RMSNorm's two outputs.
fn add_norm_case(device: &Device, dtype: DType, hidden: usize) -> Result<f64> {
    let rows = 7;
    let round = |t: Tensor| t.to_dtype(dtype);
    let x = round(Tensor::randn(0f32, 3.0, (rows, hidden), &Device::Cpu)?)?;
    let h = round(Tensor::randn(0f32, 10.0, (rows, hidden), &Device::Cpu)?)?;
    let w_post = (Tensor::randn(0f32, 0.5, hidden, &Device::Cpu)? + 1.0)?;
    let w_next = (Tensor::randn(0f32, 0.5, hidden, &Device::Cpu)? + 1.0)?;
    let eps = 1e-6;
    let (want_h, want_z) = add_norm::reference(&x, &h, &w_post, &w_next, eps)?;
    let on = |t: &Tensor| t.to_device(device);
    let (got_h, got_z) =
        add_norm::add_rmsnorm(&on(&x)?, &on(&h)?, &on(&w_post)?, &on(&w_next)?, eps)?;
    Ok(rel_err(&got_h, &want_h)?.max(rel_err(&got_z, &want_z)?))
}

/// max |kernel - reference| / max |reference| for one random case.
fn paged_case(
    device: &Device,
    dtype: DType,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Result<f64> {
    let lens = [1usize, 7, 100, 1023, 300, 64];
    let keys = lens.iter().copied().max().unwrap_or(1);
    let seqs = lens.len();
    let row = kv_heads * head_dim;
    // Inputs rounded to the dtype once, so both sides see the same numbers.
    let round = |t: Tensor| t.to_dtype(dtype)?.to_dtype(DType::F32);
    let q = round(Tensor::randn(
        0f32,
        1.0,
        (seqs, heads, head_dim),
        &Device::Cpu,
    )?)?;
    let k = round(Tensor::randn(0f32, 1.0, (POOL_SLOTS, row), &Device::Cpu)?)?;
    let v = round(Tensor::randn(0f32, 1.0, (POOL_SLOTS, row), &Device::Cpu)?)?;
    // Each sequence's keys on scattered slots (a stride coprime with the pool).
    let mut table = Vec::with_capacity(seqs * keys);
    for (s, &len) in lens.iter().enumerate() {
        let slot = |j: usize| ((s * 977 + j * 613) % POOL_SLOTS) as u32;
        table.extend((0..len).map(slot));
        table.extend(std::iter::repeat_n(slot(len - 1), keys - len));
    }
    let slots = Tensor::from_vec(table, (seqs, keys), &Device::Cpu)?;
    let scale = (head_dim as f32).powf(-0.5);
    let want = reference(&q, &k, &v, &slots, &lens, kv_heads, scale)?;
    let on = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(dtype)?.to_device(device)?) };
    let lens_t = Tensor::from_vec(
        lens.iter().map(|&l| l as u32).collect::<Vec<_>>(),
        seqs,
        device,
    )?;
    let got = paged_decode(
        &on(&q)?,
        &on(&k)?,
        &on(&v)?,
        &slots.to_device(device)?,
        &lens_t,
        kv_heads,
        scale,
    )?;
    Ok(rel_err(&got, &want)?)
}
