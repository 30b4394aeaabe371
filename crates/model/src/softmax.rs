//! Softmax over the last dimension as one CUDA kernel (kernels/softmax.cu): f32
//! math, rounded once, the row read once and written once. SigLIP's attention
//! scores (`[images, 16, 4096, 4096]` at 896 px) go through it: candle's kernel
//! took about 2 ms a layer there on an H200, over half the vision tower's time
//! (`benches/results/h200/`).
//!
//! Used only after `self_test` passed on the device at load (`usable`), for rows
//! `serves` says fit; other rows take `ops::softmax_in_f32`.

use candle_core::{DType, Device, Result, Tensor, D};

/// Pieces of 16 bytes a thread holds (the kernel's `VPT`), threads a block at most.
const VPT: usize = 4;
const MAX_THREADS: usize = 1024;

/// Softmax over the last dimension of `x` in f32, in `x`'s dtype.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    {
        x.contiguous()?.apply_op1_no_bwd(&cuda::Softmax)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = x;
        candle_core::bail!("the softmax kernel needs a CUDA build")
    }
}

/// Whether the kernel takes rows of `x`: CUDA, a float dtype, rows a whole number
/// of 16-byte pieces and short enough for one block's registers.
pub fn serves(x: &Tensor) -> bool {
    let Ok(n) = x.dim(D::Minus1) else {
        return false;
    };
    let size = x.dtype().size_in_bytes();
    let per_piece = 16 / size.max(1);
    x.device().is_cuda()
        && matches!(x.dtype(), DType::BF16 | DType::F16 | DType::F32)
        && n > 0
        && n % per_piece == 0
        && n / per_piece <= VPT * MAX_THREADS
}

/// Worst relative error of the kernel on `device` against `ops::softmax_in_f32` on
/// the CPU, on random rows of width `n` (scores of a spread like attention's).
pub fn self_test(device: &Device, dtype: DType, n: usize) -> Result<f64> {
    let x = Tensor::randn(0f32, 4.0, (5, n), &Device::Cpu)?.to_dtype(dtype)?;
    let want = crate::ops::softmax_in_f32(&x)?;
    let xd = x.to_device(device)?;
    if !serves(&xd) {
        candle_core::bail!("softmax self-test: the kernel does not take rows of {n}");
    }
    crate::ops::max_relative_error(&softmax(&xd)?, &want)
}

/// Whether rows of width `n` may use the kernel on `device` in `dtype`.
pub fn usable(dtype: DType, device: &Device, n: usize) -> bool {
    crate::ops::kernel_usable("softmax", device, dtype, || self_test(device, dtype, n))
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Layout, Result, Shape};
    use half::{bf16, f16};

    use crate::paged_decode::cuda_view;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/softmax.ptx"));

    pub struct Softmax;

    impl Softmax {
        fn launch<T: CudaDType + DeviceRepr>(
            &self,
            name: &str,
            x: &CudaStorage,
            l: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let n = l.shape().dims().last().copied().unwrap_or(0);
            let per_piece = 16 / std::mem::size_of::<T>();
            let pieces = n / per_piece.max(1);
            if !l.is_contiguous()
                || n == 0
                || n % per_piece != 0
                || pieces > super::VPT * super::MAX_THREADS
                || !(l.start_offset() * std::mem::size_of::<T>()).is_multiple_of(16)
            {
                candle_core::bail!("softmax kernel: rows of {n} do not fit");
            }
            let rows = l.shape().elem_count() / n;
            let dev = x.device.clone();
            let y = unsafe { dev.alloc::<T>(rows * n)? };
            let func = dev.get_or_load_custom_func(name, "medgemma_softmax", PTX)?;
            let threads = (pieces.div_ceil(super::VPT).div_ceil(32) * 32).max(32) as u32;
            let cfg = LaunchConfig {
                grid_dim: (rows as u32, 1, 1),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            let xs = cuda_view::<T>((x, l))?;
            let n = n as i32;
            let mut b = func.builder();
            b.arg(&xs).arg(&y).arg(&n);
            unsafe { b.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(y, dev), l.shape().clone()))
        }
    }

    impl CustomOp1 for Softmax {
        fn name(&self) -> &'static str {
            "softmax-rows"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the softmax kernel runs on CUDA only")
        }

        fn cuda_fwd(&self, x: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
            match x.dtype() {
                DType::BF16 => self.launch::<bf16>("softmax_bf16", x, l),
                DType::F16 => self.launch::<f16>("softmax_f16", x, l),
                DType::F32 => self.launch::<f32>("softmax_f32", x, l),
                other => candle_core::bail!("softmax kernel: unsupported dtype {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_takes_no_cpu_rows() -> Result<()> {
        let x = Tensor::zeros((2, 64), DType::F32, &Device::Cpu)?;
        assert!(!serves(&x));
        assert!(!usable(DType::F32, &Device::Cpu, 64));
        Ok(())
    }
}
