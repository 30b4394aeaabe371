//! Softmax over the last dimension as one CUDA kernel (kernels/softmax.cu): f32
//! math, rounded once, the row read once and written once. SigLIP's attention
//! scores (`[images, 16, 4096, 4096]` at 896 px) go through it: candle's kernel
//! took about 2 ms a layer there on an H200, over half the vision tower's time
//! (`benches/results/h200/`).
//!
//! Used only after `self_test` passed on the device at load (`usable`), for rows
//! `serves` says fit; other rows take `ops::softmax_in_f32`.

use candle_core::{DType, Device, Result, Tensor, D};

use crate::launch::{dtype_suffix, Launch};

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

/// The launch of `softmax_*` over rows of `dims`' last dimension `n`: a block a row,
/// `VPT` 16-byte pieces a thread, in whole warps; scalar `(n,)`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn softmax_launch(dtype: DType, dims: &[usize]) -> Result<Launch<(i32,)>> {
    let n = dims.last().copied().unwrap_or(0);
    let per_piece = 16 / dtype.size_in_bytes().max(1);
    let pieces = n / per_piece;
    if n == 0 || !n.is_multiple_of(per_piece) || pieces > VPT * MAX_THREADS {
        candle_core::bail!("softmax kernel: rows of {n} do not fit");
    }
    let rows = dims.iter().product::<usize>() / n;
    let threads = (pieces.div_ceil(VPT).div_ceil(32) * 32).max(32) as u32;
    Ok(Launch {
        kernel: format!("softmax_{}", dtype_suffix(dtype)?),
        grid: (rows as u32, 1, 1),
        block: (threads, 1, 1),
        scalars: (n as i32,),
    })
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{
        CpuStorage, CudaStorage, CustomOp1, DType, Layout, Result, Shape, WithDType,
    };
    use half::{bf16, f16};

    use crate::launch::Scalars;
    use crate::paged_decode::cuda_view;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/softmax.ptx"));

    pub struct Softmax;

    impl Softmax {
        fn launch<T: CudaDType + DeviceRepr + WithDType>(
            &self,
            x: &CudaStorage,
            l: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let plan = super::softmax_launch(T::DTYPE, l.shape().dims())?;
            if !l.is_contiguous()
                || !(l.start_offset() * std::mem::size_of::<T>()).is_multiple_of(16)
            {
                candle_core::bail!("softmax kernel: rows not contiguous from 16 bytes");
            }
            let dev = x.device.clone();
            let y = unsafe { dev.alloc::<T>(l.shape().elem_count())? };
            let func = dev.get_or_load_custom_func(&plan.kernel, "medgemma_softmax", PTX)?;
            let xs = cuda_view::<T>((x, l))?;
            let mut b = func.builder();
            b.arg(&xs).arg(&y);
            plan.scalars.push(&mut b);
            unsafe { b.launch(plan.config()) }.w()?;
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
                DType::BF16 => self.launch::<bf16>(x, l),
                DType::F16 => self.launch::<f16>(x, l),
                DType::F32 => self.launch::<f32>(x, l),
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

    #[test]
    fn the_kernel_with_its_launch_matches_the_reference_when_emulated() -> Result<()> {
        use crate::emulated::{run, Dev};
        // Short rows, a row wider than one warp's pieces, and one with a partial
        // last warp.
        for n in [8usize, 520, 4096] {
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                if !n.is_multiple_of(16 / dtype.size_in_bytes()) {
                    continue;
                }
                let x = (Tensor::randn(0f32, 4.0, (3, n), &Device::Cpu)?.to_dtype(dtype))?;
                let plan = softmax_launch(dtype, x.dims())?;
                let y = Dev::zeros(dtype, x.elem_count())?;
                run(&plan, &[&Dev::of(&x)?, &y])?;
                let want = crate::ops::softmax_in_f32(&x)?;
                let e = crate::ops::max_relative_error(&y.tensor((3, n))?, &want)?;
                assert!(
                    e <= crate::ops::fused_tolerance(dtype),
                    "{n} {dtype:?}: {e}"
                );
            }
        }
        assert!(softmax_launch(DType::BF16, &[2, 12]).is_err());
        assert!(softmax_launch(DType::F32, &[2, 4 * VPT * MAX_THREADS + 4]).is_err());
        Ok(())
    }
}
