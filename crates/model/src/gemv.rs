//! `x · wᵀ` for the few rows of a decode step as one CUDA kernel (kernels/gemv.cu):
//! a step's matrix products read every weight once for one to eight rows, and
//! cuBLAS's kernels for such shapes read the q/k/v/o projections at well under the
//! memory bandwidth (measured on an H200: `benches/results/h200/`). The kernel
//! streams each weight row once, sums in f32 and rounds once, as cuBLAS does.
//!
//! Used only after `self_test` passed on the model's device at load (`usable`),
//! for the layers and row counts where it beat cuBLAS there (`gemv_plan`), and
//! only where `serves` says the operands fit it.

use candle_core::{DType, Device, Result, Tensor};

use crate::launch::{dtype_suffix, Launch};

/// Most rows of `x` the kernel takes (one kernel per row count).
pub const MAX_ROWS: usize = 8;

/// Warps a block of the kernel has (its `WARPS`): `split` divides it.
pub const WARPS: usize = 8;

/// `x` `[rows, in]` · `w` `[out, in]`ᵀ → `[rows, out]` in `x`'s dtype, with
/// `split` (1, 2, 4 or 8) warps summing each output.
pub fn gemv(x: &Tensor, w: &Tensor, split: usize) -> Result<Tensor> {
    if !(split.is_power_of_two() && split <= WARPS) {
        candle_core::bail!("gemv: split {split} does not divide {WARPS} warps");
    }
    #[cfg(feature = "cuda")]
    {
        x.apply_op2_no_bwd(w, &cuda::Gemv { split })
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (x, w);
        candle_core::bail!("the decode gemv kernel needs a CUDA build")
    }
}

/// Whether the kernel takes these operands: CUDA, one dtype, 1 to `MAX_ROWS` rows,
/// both contiguous, `in` a whole number of 16-byte pieces, both starting on 16
/// bytes.
pub fn serves(x: &Tensor, w: &Tensor) -> bool {
    let (Ok((rows, k)), Ok((_, wk))) = (x.dims2(), w.dims2()) else {
        return false;
    };
    let size = x.dtype().size_in_bytes();
    let aligned = |t: &Tensor| {
        let (_, layout) = t.storage_and_layout();
        layout.is_contiguous() && (layout.start_offset() * size).is_multiple_of(16)
    };
    x.device().is_cuda()
        && matches!(x.dtype(), DType::BF16 | DType::F16 | DType::F32)
        && x.dtype() == w.dtype()
        && (1..=MAX_ROWS).contains(&rows)
        && k == wk
        && k > 0
        && (k * size).is_multiple_of(16)
        && aligned(x)
        && aligned(w)
}

/// Worst relative error of the kernel on `device` against an f32 product on the
/// CPU, over random operands, every row count and every split (the inner size
/// `in` must be a multiple of 8).
pub fn self_test(device: &Device, dtype: DType, in_dim: usize, out_dim: usize) -> Result<f64> {
    let mut worst = 0f64;
    for rows in 1..=MAX_ROWS {
        let x = Tensor::randn(0f32, 1.0, (rows, in_dim), &Device::Cpu)?.to_dtype(dtype)?;
        let w = Tensor::randn(0f32, 1.0, (out_dim, in_dim), &Device::Cpu)?.to_dtype(dtype)?;
        let want = x
            .to_dtype(DType::F32)?
            .matmul(&w.to_dtype(DType::F32)?.t()?)?;
        let (xd, wd) = (x.to_device(device)?, w.to_device(device)?);
        if !serves(&xd, &wd) {
            candle_core::bail!("gemv self-test: the kernel does not take [{rows}, {in_dim}] x [{out_dim}, {in_dim}]");
        }
        for split in [1, 2, 4, 8] {
            let got = gemv(&xd, &wd, split)?;
            worst = worst.max(crate::ops::max_relative_error(&got, &want)?);
        }
    }
    Ok(worst)
}

/// Whether the decoder's linear layers may use the kernel on `device` in `dtype`.
pub fn usable(dtype: DType, device: &Device) -> bool {
    crate::ops::kernel_usable("gemv", device, dtype, || {
        self_test(device, dtype, 1160, 301)
    })
}

/// The launch of `gemv_*_{rows}` on `x` `[rows, in]` and `w` `[out, in]` with
/// `split` warps an output: `WARPS / split` outputs a block; scalars `(in, out,
/// split)`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn gemv_launch(
    dtype: DType,
    x: &[usize],
    w: &[usize],
    split: usize,
) -> Result<Launch<(i32, i32, i32)>> {
    let (&[rows, k], &[out, wk]) = (x, w) else {
        candle_core::bail!("gemv: operands {x:?} x {w:?}");
    };
    let fits = k == wk
        && (1..=MAX_ROWS).contains(&rows)
        && (k * dtype.size_in_bytes()).is_multiple_of(16)
        && split.is_power_of_two()
        && split <= WARPS;
    if !fits {
        candle_core::bail!(
            "gemv: operands [{rows}, {k}] x [{out}, {wk}] (split {split}) do not fit"
        );
    }
    Ok(Launch {
        kernel: format!("gemv_{}_{rows}", dtype_suffix(dtype)?),
        grid: (out.div_ceil(WARPS / split) as u32, 1, 1),
        block: (32 * WARPS as u32, 1, 1),
        scalars: (k as i32, out as i32, split as i32),
    })
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{
        CpuStorage, CudaStorage, CustomOp2, DType, Layout, Result, Shape, WithDType,
    };
    use half::{bf16, f16};

    use crate::launch::Scalars;
    use crate::paged_decode::cuda_view;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/gemv.ptx"));

    pub struct Gemv {
        pub split: usize,
    }

    impl Gemv {
        fn launch<T: CudaDType + DeviceRepr + WithDType>(
            &self,
            x: (&CudaStorage, &Layout),
            w: (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            let (xd, wd) = (x.1.shape().dims(), w.1.shape().dims());
            let plan = super::gemv_launch(T::DTYPE, xd, wd, self.split)?;
            if !x.1.is_contiguous() || !w.1.is_contiguous() {
                candle_core::bail!("gemv: operands not contiguous");
            }
            let (rows, out) = (xd[0], wd[0]);
            let dev = x.0.device.clone();
            let y = unsafe { dev.alloc::<T>(rows * out)? };
            let func = dev.get_or_load_custom_func(&plan.kernel, "medgemma_gemv", PTX)?;
            let (xs, ws) = (cuda_view::<T>(x)?, cuda_view::<T>(w)?);
            let mut b = func.builder();
            b.arg(&xs).arg(&ws).arg(&y);
            plan.scalars.push(&mut b);
            unsafe { b.launch(plan.config()) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(y, dev),
                Shape::from((rows, out)),
            ))
        }
    }

    impl CustomOp2 for Gemv {
        fn name(&self) -> &'static str {
            "decode-gemv"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the decode gemv runs on CUDA only")
        }

        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            xl: &Layout,
            w: &CudaStorage,
            wl: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            match (x.dtype(), w.dtype()) {
                (DType::BF16, DType::BF16) => self.launch::<bf16>((x, xl), (w, wl)),
                (DType::F16, DType::F16) => self.launch::<f16>((x, xl), (w, wl)),
                (DType::F32, DType::F32) => self.launch::<f32>((x, xl), (w, wl)),
                (a, b) => candle_core::bail!("gemv: unsupported dtypes {a:?} x {b:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_takes_no_cpu_operands() -> Result<()> {
        let x = Tensor::zeros((1, 64), DType::F32, &Device::Cpu)?;
        let w = Tensor::zeros((16, 64), DType::F32, &Device::Cpu)?;
        assert!(!serves(&x, &w));
        assert!(!usable(DType::F32, &Device::Cpu));
        Ok(())
    }

    #[test]
    fn the_kernel_with_its_launch_matches_an_f32_product_when_emulated() -> Result<()> {
        use crate::emulated::{run, Dev};
        let cpu = &Device::Cpu;
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            // `in` not a multiple of the kernel's unrolled stride; `out` not of a block's outputs.
            let (in_dim, out_dim) = (1160, 37);
            for rows in [1, 2, 5, MAX_ROWS] {
                let x = Tensor::randn(0f32, 1.0, (rows, in_dim), cpu)?.to_dtype(dtype)?;
                let w = Tensor::randn(0f32, 1.0, (out_dim, in_dim), cpu)?.to_dtype(dtype)?;
                let want = x
                    .to_dtype(DType::F32)?
                    .matmul(&w.to_dtype(DType::F32)?.t()?)?;
                for split in [1, 2, 4, 8] {
                    let plan = gemv_launch(dtype, x.dims(), w.dims(), split)?;
                    let y = Dev::zeros(dtype, rows * out_dim)?;
                    run(&plan, &[&Dev::of(&x)?, &Dev::of(&w)?, &y])?;
                    let e = crate::ops::max_relative_error(&y.tensor((rows, out_dim))?, &want)?;
                    let tol = crate::ops::fused_tolerance(dtype);
                    assert!(e <= tol, "{rows} rows, split {split}, {dtype:?}: {e}");
                }
            }
        }
        assert!(gemv_launch(DType::F32, &[9, 64], &[4, 64], 1).is_err());
        assert!(gemv_launch(DType::BF16, &[1, 60], &[4, 60], 1).is_err());
        assert!(gemv_launch(DType::F32, &[1, 64], &[4, 64], 3).is_err());
        Ok(())
    }
}
