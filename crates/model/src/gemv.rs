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
    crate::ops::kernel_usable("decode gemv", device, dtype, || {
        self_test(device, dtype, 1160, 301)
    })
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CpuStorage, CudaStorage, CustomOp2, DType, Layout, Result, Shape};
    use half::{bf16, f16};

    use crate::paged_decode::cuda_view;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/gemv.ptx"));

    pub struct Gemv {
        pub split: usize,
    }

    impl Gemv {
        fn launch<T: CudaDType + DeviceRepr>(
            &self,
            name: &str,
            x: (&CudaStorage, &Layout),
            w: (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            let (rows, k) = x.1.shape().dims2()?;
            let (out, wk) = w.1.shape().dims2()?;
            let fits = x.1.is_contiguous()
                && w.1.is_contiguous()
                && k == wk
                && (1..=super::MAX_ROWS).contains(&rows)
                && (k * std::mem::size_of::<T>()).is_multiple_of(16);
            if !fits {
                candle_core::bail!("gemv: operands [{rows}, {k}] x [{out}, {wk}] do not fit");
            }
            let dev = x.0.device.clone();
            let y = unsafe { dev.alloc::<T>(rows * out)? };
            let name = format!("{name}_{rows}");
            let func = dev.get_or_load_custom_func(&name, "medgemma_gemv", PTX)?;
            let per_block = super::WARPS / self.split;
            let cfg = LaunchConfig {
                grid_dim: (out.div_ceil(per_block) as u32, 1, 1),
                block_dim: (32 * super::WARPS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let (xs, ws) = (cuda_view::<T>(x)?, cuda_view::<T>(w)?);
            let (i, o, s) = (k as i32, out as i32, self.split as i32);
            let mut b = func.builder();
            b.arg(&xs).arg(&ws).arg(&y).arg(&i).arg(&o).arg(&s);
            unsafe { b.launch(cfg) }.w()?;
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
                (DType::BF16, DType::BF16) => self.launch::<bf16>("gemv_bf16", (x, xl), (w, wl)),
                (DType::F16, DType::F16) => self.launch::<f16>("gemv_f16", (x, xl), (w, wl)),
                (DType::F32, DType::F32) => self.launch::<f32>("gemv_f32", (x, xl), (w, wl)),
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
}
