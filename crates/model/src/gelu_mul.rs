//! `gelu_tanh(gate) * up` from the stacked gate/up projection's output, as one
//! CUDA kernel (kernels/gelu_mul.cu), with `reference`, the same as separate ops.
//! Both compute gelu in f32 and round it to the activation dtype before the
//! product, as PyTorch does on a bf16 tensor (candle's own bf16 gelu rounds
//! every intermediate step).
//!
//! The MLP uses it only after `self_test` passes on the device at load (it has
//! on an H200: `benches/results/h200/check.txt`).

use candle_core::{DType, Device, Result, Tensor, D};

use crate::launch::{dtype_suffix, Launch};

/// `gate_up` `[rows, 2 * inter]` (gate, then up) → `[rows, inter]`.
pub fn gelu_mul(gate_up: &Tensor, inter: usize) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    {
        gate_up
            .contiguous()?
            .apply_op1_no_bwd(&cuda::GeluMul { inter })
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (gate_up, inter);
        candle_core::bail!("the fused gelu-mul kernel needs a CUDA build")
    }
}

/// The unfused ops on any device.
pub fn reference(gate_up: &Tensor, inter: usize) -> Result<Tensor> {
    let gate = gate_up.narrow(D::Minus1, 0, inter)?;
    // candle's `gelu` is the tanh approximation (gelu_pytorch_tanh).
    let gelu = gate.to_dtype(DType::F32)?.gelu()?.to_dtype(gate.dtype())?;
    gelu * gate_up.narrow(D::Minus1, inter, inter)?
}

/// Worst relative error of the kernel on `device` against `reference` on the CPU,
/// on random rows of width `inter`.
pub fn self_test(device: &Device, dtype: DType, inter: usize) -> Result<f64> {
    let x = Tensor::randn(0f32, 2.0, (3, 2 * inter), &Device::Cpu)?.to_dtype(dtype)?;
    let want = reference(&x, inter)?;
    let got = gelu_mul(&x.to_device(device)?, inter)?;
    crate::ops::max_relative_error(&got, &want)
}

/// Whether the MLP may use the kernel on `device` in `dtype`.
pub fn usable(inter: usize, dtype: DType, device: &Device) -> bool {
    crate::ops::kernel_usable("gelu-mul", device, dtype, || {
        self_test(device, dtype, inter)
    })
}

/// Threads a block of the kernel's grid-stride loop.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
const THREADS: u32 = 256;

/// The launch of `gelu_mul_*` on `[rows, 2 * inter]`; scalars `(rows, inter)`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn gelu_mul_launch(dtype: DType, dims: &[usize], inter: usize) -> Result<Launch<(i32, i32)>> {
    let &[rows, width] = dims else {
        candle_core::bail!("gelu-mul: expected [rows, {}], got {dims:?}", 2 * inter);
    };
    if width != 2 * inter {
        candle_core::bail!("gelu-mul: expected [rows, {}], got {dims:?}", 2 * inter);
    }
    let blocks = (rows * inter).div_ceil(THREADS as usize).clamp(1, 65_535) as u32;
    Ok(Launch {
        kernel: format!("gelu_mul_{}", dtype_suffix(dtype)?),
        grid: (blocks, 1, 1),
        block: (THREADS, 1, 1),
        scalars: (rows as i32, inter as i32),
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

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/gelu_mul.ptx"));

    pub struct GeluMul {
        pub inter: usize,
    }

    impl GeluMul {
        fn launch<T: CudaDType + DeviceRepr + WithDType>(
            &self,
            x: &CudaStorage,
            l: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let plan = super::gelu_mul_launch(T::DTYPE, l.shape().dims(), self.inter)?;
            if !l.is_contiguous() {
                candle_core::bail!("gelu-mul: expected a contiguous input");
            }
            let rows = l.shape().dims()[0];
            let dev = x.device.clone();
            let out = unsafe { dev.alloc::<T>(rows * self.inter)? };
            let func = dev.get_or_load_custom_func(&plan.kernel, "medgemma_gelu_mul", PTX)?;
            let xs = cuda_view::<T>((x, l))?;
            let mut b = func.builder();
            b.arg(&xs).arg(&out);
            plan.scalars.push(&mut b);
            unsafe { b.launch(plan.config()) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                Shape::from((rows, self.inter)),
            ))
        }
    }

    impl CustomOp1 for GeluMul {
        fn name(&self) -> &'static str {
            "gelu-mul"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the fused gelu-mul runs on CUDA only")
        }

        fn cuda_fwd(&self, x: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
            match x.dtype() {
                DType::BF16 => self.launch::<bf16>(x, l),
                DType::F16 => self.launch::<f16>(x, l),
                DType::F32 => self.launch::<f32>(x, l),
                other => candle_core::bail!("gelu-mul: unsupported dtype {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulated::{run, Dev};

    #[test]
    fn the_kernel_with_its_launch_matches_the_reference_when_emulated() -> Result<()> {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            // More outputs than one block's threads, and an odd width.
            for (rows, inter) in [(3, 200), (2, 37)] {
                let x = Tensor::randn(0f32, 2.0, (rows, 2 * inter), &Device::Cpu)?;
                let x = x.to_dtype(dtype)?;
                let plan = gelu_mul_launch(dtype, x.dims(), inter)?;
                let out = Dev::zeros(dtype, rows * inter)?;
                run(&plan, &[&Dev::of(&x)?, &out])?;
                let got = out.tensor((rows, inter))?;
                let e = crate::ops::max_relative_error(&got, &reference(&x, inter)?)?;
                assert!(
                    e <= crate::ops::fused_tolerance(dtype),
                    "{rows}x{inter} {dtype:?}: {e}"
                );
            }
        }
        assert!(gelu_mul_launch(DType::F32, &[2, 10], 4).is_err());
        Ok(())
    }
}
