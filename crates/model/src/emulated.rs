//! The model's kernel launches run on the CPU emulator of the kernels
//! (`medgemma-kernel-emu`), for the kernels' tests: the same `Launch` (kernel,
//! grid, block, scalars) the CUDA ops push, with buffers made from CPU tensors.

use candle_core::{DType, Result, Shape, Tensor};
use half::{bf16, f16};
use medgemma_kernel_emu::{Args, Buffer};

use crate::launch::{ArgSink, KernelScalar, Launch, Scalars};

impl<'a> ArgSink<'a> for Args<'a> {
    fn scalar<T: KernelScalar>(&mut self, v: &'a T) {
        Args::scalar(self, *v);
    }
}

/// Device memory holding one tensor's elements (or room for them).
pub enum Dev {
    F32(Buffer<f32>),
    Bf16(Buffer<bf16>),
    F16(Buffer<f16>),
    U32(Buffer<u32>),
}

impl Dev {
    /// `t`'s elements in row-major order.
    pub fn of(t: &Tensor) -> Result<Self> {
        let flat = t.flatten_all()?;
        Ok(match t.dtype() {
            DType::F32 => Self::F32(Buffer::from_slice(&flat.to_vec1::<f32>()?)),
            DType::BF16 => Self::Bf16(Buffer::from_slice(&flat.to_vec1::<bf16>()?)),
            DType::F16 => Self::F16(Buffer::from_slice(&flat.to_vec1::<f16>()?)),
            DType::U32 => Self::U32(Buffer::from_slice(&flat.to_vec1::<u32>()?)),
            other => candle_core::bail!("no emulated buffers of {other:?}"),
        })
    }

    /// Zeroed room for `len` elements of `dtype`.
    pub fn zeros(dtype: DType, len: usize) -> Result<Self> {
        Self::of(&Tensor::zeros(len, dtype, &candle_core::Device::Cpu)?)
    }

    /// The elements as a CPU tensor of `shape`.
    pub fn tensor<S: Into<Shape>>(&self, shape: S) -> Result<Tensor> {
        let cpu = &candle_core::Device::Cpu;
        match self {
            Self::F32(b) => Tensor::from_vec(b.to_vec(), shape, cpu),
            Self::Bf16(b) => Tensor::from_vec(b.to_vec(), shape, cpu),
            Self::F16(b) => Tensor::from_vec(b.to_vec(), shape, cpu),
            Self::U32(b) => Tensor::from_vec(b.to_vec(), shape, cpu),
        }
    }

    fn push<'a>(&'a self, args: &mut Args<'a>) {
        match self {
            Self::F32(b) => args.buffer(b),
            Self::Bf16(b) => args.buffer(b),
            Self::F16(b) => args.buffer(b),
            Self::U32(b) => args.buffer(b),
        };
    }
}

/// Runs `launch` with `buffers` (in the kernel's order, as the CUDA op pushes them)
/// followed by its scalars.
pub fn run<S: Scalars>(launch: &Launch<S>, buffers: &[&Dev]) -> Result<()> {
    let mut args = Args::new();
    for b in buffers {
        b.push(&mut args);
    }
    launch.scalars.push(&mut args);
    // SAFETY: the tests size every buffer for the launch they run.
    unsafe { medgemma_kernel_emu::launch(&launch.kernel, launch.grid, launch.block, &args) }
        .map_err(candle_core::Error::wrap)
}
