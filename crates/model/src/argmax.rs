//! The greedy pick of every row of a step's logits on the device, so that only
//! the ids cross to the host. candle's `argmax` walks each row of Gemma's 262k
//! logits with one block and a strided index per element (about 180 µs a row on
//! an H200); the kernel (kernels/argmax.cu) reads the row in 16-byte pieces. It
//! picks as `sampling::argmax` does on the host: the first of equal maxima, a
//! number over NaN, the last index of an all-NaN row.

use candle_core::{Device, Result, Tensor, D};

/// The index of each row's largest value: `logits` `[rows, vocab]` f32.
/// `kernel`: use the CUDA kernel (see `usable`); candle's argmax otherwise.
pub fn argmax_rows(logits: &Tensor, kernel: bool) -> Result<Vec<u32>> {
    argmax_ids(logits, kernel)?.to_vec1()
}

/// As `argmax_rows`, the ids left where the logits are: `[rows]` u32.
pub fn argmax_ids(logits: &Tensor, kernel: bool) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if kernel && logits.device().is_cuda() && logits.dtype() == candle_core::DType::F32 {
        return logits.contiguous()?.apply_op1_no_bwd(&cuda::Argmax);
    }
    let _ = kernel;
    logits.argmax(D::Minus1)
}

/// Rows the self-test checks: random rows, ties, NaN and -inf.
fn test_rows(vocab: usize) -> Vec<Vec<f32>> {
    let mut rows = Vec::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 40.0 - 20.0
    };
    rows.push((0..vocab).map(|_| next()).collect::<Vec<_>>());
    let mut tie = rows[0].clone();
    tie[vocab / 3] = 50.0;
    tie[vocab / 2] = 50.0;
    tie[vocab - 1] = 50.0;
    rows.push(tie);
    let mut nan = rows[0].clone();
    nan[0] = f32::NAN;
    nan[vocab / 4] = f32::NAN;
    rows.push(nan);
    rows.push(vec![f32::NAN; vocab]);
    rows.push(vec![f32::NEG_INFINITY; vocab]);
    rows
}

/// Rows on which the kernel on `device` and the host's `sampling::argmax`
/// disagree, over `test_rows` of widths `vocab` and `vocab + 1` (an odd width
/// takes the kernel's unvectorized path).
pub fn self_test(device: &Device, vocab: usize) -> Result<usize> {
    let mut wrong = 0;
    for width in [vocab, vocab + 1] {
        let rows = test_rows(width);
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (rows.len(), width), device)?;
        let got = argmax_rows(&t, true)?;
        wrong += rows
            .iter()
            .zip(&got)
            .filter(|(r, &g)| crate::sampling::argmax(r) != g)
            .count();
    }
    Ok(wrong)
}

/// Whether the kernel picks as the host does on `device`.
pub fn usable(device: &Device, vocab: usize) -> bool {
    if !device.is_cuda() || !crate::kernels::enabled("argmax") {
        return false;
    }
    let result = self_test(device, vocab.max(8)).map(|wrong| wrong as f64);
    crate::ops::self_test_passes("argmax", result, 0.0)
}

/// The launch of `argmax_f32` on f32 rows `[rows, n]` starting `offset` elements
/// into their buffer: a block of 1024 threads a row, 16-byte loads where every row
/// starts on 16 bytes; scalars `(n, vectorized)`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn argmax_launch(dims: &[usize], offset: usize) -> Result<crate::launch::Launch<(i32, i32)>> {
    let &[rows, n] = dims else {
        candle_core::bail!("argmax kernel: expected [rows, n], got {dims:?}");
    };
    if rows == 0 || n == 0 || n > i32::MAX as usize || rows > i32::MAX as usize {
        candle_core::bail!("argmax kernel: no launch for {dims:?}");
    }
    let vectorized = i32::from(n.is_multiple_of(4) && offset.is_multiple_of(4));
    Ok(crate::launch::Launch {
        kernel: "argmax_f32".to_string(),
        grid: (rows as u32, 1, 1),
        block: (1024, 1, 1),
        scalars: (n as i32, vectorized),
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

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/argmax.ptx"));

    pub struct Argmax;

    impl CustomOp1 for Argmax {
        fn name(&self) -> &'static str {
            "greedy-argmax"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the argmax kernel runs on CUDA only")
        }

        fn cuda_fwd(&self, x: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
            let (rows, _) = l.shape().dims2()?;
            if x.dtype() != DType::F32 || !l.is_contiguous() {
                candle_core::bail!("argmax kernel: expected contiguous f32 [rows, n]");
            }
            let dev = x.device.clone();
            let out = unsafe { dev.alloc::<u32>(rows)? };
            if rows == 0 {
                return Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(0)));
            }
            let plan = super::argmax_launch(l.shape().dims(), l.start_offset())?;
            let func = dev.get_or_load_custom_func(&plan.kernel, "medgemma_argmax", PTX)?;
            let xs = cuda_view::<f32>((x, l))?;
            let mut b = func.builder();
            b.arg(&xs).arg(&out);
            plan.scalars.push(&mut b);
            unsafe { b.launch(plan.config()) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(rows)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_off_the_kernel_pick_each_rows_maximum() -> Result<()> {
        let rows = test_rows(1001);
        // The rows of numbers (candle's argmax has its own NaN rule).
        let numbers = &rows[..2];
        let flat: Vec<f32> = numbers.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (2, 1001), &Device::Cpu)?;
        let got = argmax_rows(&t, true)?;
        assert_eq!(got[0], crate::sampling::argmax(&numbers[0]));
        assert_eq!(got[1], 1001 / 3, "the first of the tied maxima");
        assert!(!usable(&Device::Cpu, 1001));
        Ok(())
    }

    #[test]
    fn the_kernel_with_its_launch_picks_as_the_host_when_emulated() -> Result<()> {
        use crate::emulated::{run, Dev};
        // Vectorized and not (an odd width); NaN, ties and -inf rows included.
        for width in [4096, 4097, 3] {
            let rows = test_rows(width);
            let flat: Vec<f32> = rows.iter().flatten().copied().collect();
            let t = Tensor::from_vec(flat, (rows.len(), width), &Device::Cpu)?;
            let plan = argmax_launch(t.dims(), 0)?;
            assert_eq!(plan.scalars.1, i32::from(width % 4 == 0));
            let out = Dev::zeros(candle_core::DType::U32, rows.len())?;
            run(&plan, &[&Dev::of(&t)?, &out])?;
            let got = out.tensor(rows.len())?.to_vec1::<u32>()?;
            let want: Vec<u32> = rows.iter().map(|r| crate::sampling::argmax(r)).collect();
            assert_eq!(got, want, "width {width}");
        }
        assert_eq!(argmax_launch(&[2, 8], 2)?.scalars.1, 0, "rows off 16 bytes");
        assert!(argmax_launch(&[0, 8], 0).is_err());
        Ok(())
    }
}
