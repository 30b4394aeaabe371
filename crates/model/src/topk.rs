//! The largest logits of each row on the GPU (`kernels/topk.cu`): a row the host
//! draws with top-k (`Sampler::candidates_needed`) crosses to the host as its k
//! largest logits, 8 bytes each, instead of its whole 262k-token row (1 MiB).

use candle_core::{Device, Result, Tensor};

use crate::sampling::ranked_top_logits;

/// The most logits a row sends (its top-k and the tokens its sampler changes; a
/// row needing more sends the whole row).
pub const MAX_K: usize = 1024;

/// One row's largest finite logits `(token, logit)`, in no particular order;
/// `nonfinite`: the row held a NaN or an infinity (its draw needs the whole row).
#[derive(Debug, Clone, PartialEq)]
pub struct RowCandidates {
    pub pairs: Vec<(u32, f32)>,
    pub nonfinite: bool,
}

/// The `k` largest finite logits of every row of `logits` `[rows, vocab]` f32:
/// through the kernel on CUDA (see `usable`), on the host elsewhere (the tests'
/// form of the same path; the CPU draws from its rows directly).
pub fn top_candidates(logits: &Tensor, k: usize) -> Result<Vec<RowCandidates>> {
    #[cfg(feature = "cuda")]
    if logits.device().is_cuda() {
        let packed = logits.contiguous()?.apply_op1_no_bwd(&cuda::TopK { k })?;
        return unpack(&packed.flatten_all()?.to_vec1::<u32>()?, k);
    }
    if k == 0 {
        candle_core::bail!("top-k candidates: k is 0");
    }
    let rows = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
    Ok(rows.iter().map(|r| host_candidates(r, k)).collect())
}

/// The rows of the kernel's output: per row `k` indices, `k` value bits, then the
/// count taken (bit 31: the row held a non-finite value).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn unpack(packed: &[u32], k: usize) -> Result<Vec<RowCandidates>> {
    packed
        .chunks_exact(2 * k + 1)
        .map(|row| {
            let (ids, rest) = row.split_at(k);
            let (bits, count) = rest.split_at(k);
            let taken = (count[0] & 0x7fff_ffff) as usize;
            if taken > k {
                candle_core::bail!("top-k kernel: {taken} candidates of at most {k}");
            }
            let pairs = ids[..taken]
                .iter()
                .zip(&bits[..taken])
                .map(|(&id, &b)| (id, f32::from_bits(b)))
                .collect();
            Ok(RowCandidates {
                pairs,
                nonfinite: count[0] & 0x8000_0000 != 0,
            })
        })
        .collect()
}

/// The host's answer for one row: its `k` largest finite logits, sorted by token.
fn host_candidates(row: &[f32], k: usize) -> RowCandidates {
    let mut pairs = ranked_top_logits(row, k);
    pairs.sort_by_key(|p| p.0);
    RowCandidates {
        pairs,
        nonfinite: row.iter().any(|l| !l.is_finite()),
    }
}

/// Rows the self-test checks: random, with ties, both zeros, NaN and infinities,
/// and fewer finite values than `k`.
fn test_rows(vocab: usize) -> Vec<Vec<f32>> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 16.0 - 8.0
    };
    let random: Vec<f32> = (0..vocab).map(|_| next()).collect();
    let mut ties = random.clone();
    for i in (0..vocab).step_by(3) {
        ties[i] = 5.0;
    }
    let mut zeros = vec![-1.0; vocab];
    for i in (0..vocab).step_by(2) {
        zeros[i] = if i % 4 == 0 { 0.0 } else { -0.0 };
    }
    let mut odd = random.clone();
    odd[1] = f32::NAN;
    odd[vocab / 2] = f32::INFINITY;
    let mut sparse = vec![f32::NEG_INFINITY; vocab];
    sparse[vocab - 1] = 1.0;
    sparse[0] = 2.0;
    vec![random, ties, zeros, odd, sparse]
}

/// Rows of `test_rows` on which the kernel on `device` and the host disagree, for
/// k of 1, 64 and `MAX_K`.
pub fn self_test(device: &Device, vocab: usize) -> Result<usize> {
    let rows = test_rows(vocab);
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let t = Tensor::from_vec(flat, (rows.len(), vocab), device)?;
    let mut wrong = 0;
    for k in [1, 64, MAX_K] {
        for (row, mut got) in rows.iter().zip(top_candidates(&t, k)?) {
            got.pairs.sort_by_key(|p| p.0);
            wrong += usize::from(got != host_candidates(row, k));
        }
    }
    Ok(wrong)
}

/// Whether the kernel takes the candidates the host would on `device`.
pub fn usable(device: &Device, vocab: usize) -> bool {
    if !device.is_cuda() || !crate::kernels::enabled("topk") {
        return false;
    }
    let result = self_test(device, vocab.max(MAX_K + 1)).map(|wrong| wrong as f64);
    crate::ops::self_test_passes("topk", result, 0.0)
}

/// The launch of `topk_f32` on contiguous f32 rows `[rows, n]`: a block of 1024
/// threads a row; scalars `(n, k)`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn topk_launch(dims: &[usize], k: usize) -> Result<crate::launch::Launch<(i32, i32)>> {
    let &[rows, n] = dims else {
        candle_core::bail!("top-k kernel: expected [rows, n], got {dims:?}");
    };
    let fits = |v: usize| v > 0 && v <= i32::MAX as usize;
    if !fits(rows) || !fits(n) || !fits(k) || !fits(2 * k + 1) {
        candle_core::bail!("top-k kernel: no launch for {dims:?} and k {k}");
    }
    Ok(crate::launch::Launch {
        kernel: "topk_f32".to_string(),
        grid: (rows as u32, 1, 1),
        block: (1024, 1, 1),
        scalars: (n as i32, k as i32),
    })
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Layout, Result, Shape};

    use crate::launch::Scalars;
    use crate::paged_decode::cuda_view;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/topk.ptx"));

    pub struct TopK {
        pub k: usize,
    }

    impl CustomOp1 for TopK {
        fn name(&self) -> &'static str {
            "top-k-candidates"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the top-k kernel runs on CUDA only")
        }

        fn cuda_fwd(&self, x: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
            let (rows, _) = l.shape().dims2()?;
            if x.dtype() != DType::F32 || !l.is_contiguous() {
                candle_core::bail!("top-k kernel: expected contiguous f32 [rows, n]");
            }
            let plan = super::topk_launch(l.shape().dims(), self.k)?;
            let width = 2 * self.k + 1;
            let dev = x.device.clone();
            let out = unsafe { dev.alloc::<u32>(rows * width)? };
            let func = dev.get_or_load_custom_func(&plan.kernel, "medgemma_topk", PTX)?;
            let xs = cuda_view::<f32>((x, l))?;
            let mut b = func.builder();
            b.arg(&xs).arg(&out);
            plan.scalars.push(&mut b);
            unsafe { b.launch(plan.config()) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                Shape::from((rows, width)),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_with_its_launch_takes_the_hosts_candidates_when_emulated() -> Result<()> {
        use crate::emulated::{run, Dev};
        // Rows longer and shorter than the block, odd widths; k past the row too.
        for (width, k) in [(3000, 64), (1031, 1), (4099, 1024), (700, 256), (5, 8)] {
            let rows = test_rows(width);
            let flat: Vec<f32> = rows.iter().flatten().copied().collect();
            let t = Tensor::from_vec(flat, (rows.len(), width), &Device::Cpu)?;
            let plan = topk_launch(t.dims(), k)?;
            let out = Dev::zeros(candle_core::DType::U32, rows.len() * (2 * k + 1))?;
            run(&plan, &[&Dev::of(&t)?, &out])?;
            let packed = out.tensor(rows.len() * (2 * k + 1))?.to_vec1::<u32>()?;
            for (i, (row, mut got)) in rows.iter().zip(unpack(&packed, k)?).enumerate() {
                got.pairs.sort_by_key(|p| p.0);
                assert_eq!(
                    got,
                    host_candidates(row, k),
                    "width {width}, k {k}, row {i}"
                );
            }
        }
        assert!(topk_launch(&[0, 8], 4).is_err());
        assert!(topk_launch(&[2, 8], 0).is_err());
        Ok(())
    }

    #[test]
    fn off_the_gpu_the_host_takes_the_candidates_and_the_kernel_is_unused() -> Result<()> {
        let rows = test_rows(300);
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (rows.len(), 300), &Device::Cpu)?;
        let got = top_candidates(&t, 16)?;
        assert_eq!(got[0].pairs.len(), 16);
        assert!(!got[0].nonfinite && got[3].nonfinite);
        assert_eq!(
            got[4].pairs,
            [(0, 2.0), (299, 1.0)],
            "fewer finite logits than k"
        );
        assert!(top_candidates(&t, 0).is_err());
        assert!(!usable(&Device::Cpu, 8));
        Ok(())
    }
}
