//! `gelu_tanh(gate) * up` from the stacked gate/up projection's output, as one
//! CUDA kernel (kernels/gelu_mul.cu), with `reference`, the same as separate ops.
//! Both compute gelu in f32 and round it to the activation dtype before the
//! product, as PyTorch does on a bf16 tensor (candle's own bf16 gelu rounds
//! every intermediate step).
//!
//! The MLP uses it only after `self_test` passes on the device at load (it has
//! on an H200: `benches/results/h200/check.txt`).

use candle_core::{DType, Device, Result, Tensor, D};

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

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Layout, Result, Shape};
    use half::{bf16, f16};

    use crate::paged_decode::cuda_view;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/gelu_mul.ptx"));
    const THREADS: u32 = 256;

    pub struct GeluMul {
        pub inter: usize,
    }

    impl GeluMul {
        fn launch<T: CudaDType + DeviceRepr>(
            &self,
            name: &str,
            x: &CudaStorage,
            l: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let (rows, width) = l.shape().dims2()?;
            if width != 2 * self.inter || !l.is_contiguous() {
                candle_core::bail!("gelu-mul: expected contiguous [rows, {}]", 2 * self.inter);
            }
            let dev = x.device.clone();
            let n = rows * self.inter;
            let out = unsafe { dev.alloc::<T>(n)? };
            let func = dev.get_or_load_custom_func(name, "medgemma_gelu_mul", PTX)?;
            let blocks = (n as u32).div_ceil(THREADS).clamp(1, 65_535);
            let cfg = LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let xs = cuda_view::<T>((x, l))?;
            let (r, i) = (rows as i32, self.inter as i32);
            let mut b = func.builder();
            b.arg(&xs).arg(&out).arg(&r).arg(&i);
            unsafe { b.launch(cfg) }.w()?;
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
                DType::BF16 => self.launch::<bf16>("gelu_mul_bf16", x, l),
                DType::F16 => self.launch::<f16>("gelu_mul_f16", x, l),
                DType::F32 => self.launch::<f32>("gelu_mul_f32", x, l),
                other => candle_core::bail!("gelu-mul: unsupported dtype {other:?}"),
            }
        }
    }
}
