//! A kernel launch as the model computes it: the kernel's name, the grid and block,
//! and the scalar arguments that follow its buffers. The CUDA ops push these to
//! cudarc's launch builder; the tests push the very same to the CPU emulator
//! (`medgemma-kernel-emu`), which checks them against the kernel's signature and
//! runs the kernel, so launch dimensions and arguments are tested on machines
//! without a GPU too.

/// A value passed to a kernel by value.
#[cfg(feature = "cuda")]
pub trait KernelScalar: Copy + candle_core::cuda_backend::cudarc::driver::DeviceRepr {}
/// A value passed to a kernel by value.
#[cfg(not(feature = "cuda"))]
pub trait KernelScalar: Copy {}

impl KernelScalar for i32 {}
impl KernelScalar for u32 {}
impl KernelScalar for usize {}
impl KernelScalar for f32 {}

/// Takes a kernel's arguments in order (borrowed for the launch, as cudarc's
/// builder borrows them).
pub trait ArgSink<'a> {
    fn scalar<T: KernelScalar>(&mut self, v: &'a T);
}

/// The scalars of a launch, pushed in the kernel's order.
pub trait Scalars {
    fn push<'a, A: ArgSink<'a>>(&'a self, sink: &mut A);
}

macro_rules! tuple_scalars {
    ($($t:ident),+) => {
        impl<$($t: KernelScalar),+> Scalars for ($($t,)+) {
            #[allow(non_snake_case)]
            fn push<'a, Sink: ArgSink<'a>>(&'a self, sink: &mut Sink) {
                let ($($t,)+) = self;
                $(sink.scalar($t);)+
            }
        }
    };
}
tuple_scalars!(P);
tuple_scalars!(P, Q);
tuple_scalars!(P, Q, R);
tuple_scalars!(P, Q, R, S);
tuple_scalars!(P, Q, R, S, U);

/// One launch: `kernel` over `grid` blocks of `block` threads, its buffers (pushed by
/// the caller) followed by `scalars`.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch<S> {
    pub kernel: String,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub scalars: S,
}

/// The kernels' name suffix for `dtype`.
pub fn dtype_suffix(dtype: candle_core::DType) -> candle_core::Result<&'static str> {
    use candle_core::DType;
    match dtype {
        DType::BF16 => Ok("bf16"),
        DType::F16 => Ok("f16"),
        DType::F32 => Ok("f32"),
        other => candle_core::bail!("no kernel for {other:?}"),
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{LaunchArgs, LaunchConfig, PushKernelArg};

    impl<'a> super::ArgSink<'a> for LaunchArgs<'a> {
        fn scalar<T: super::KernelScalar>(&mut self, v: &'a T) {
            self.arg(v);
        }
    }

    impl<S> super::Launch<S> {
        pub fn config(&self) -> LaunchConfig {
            LaunchConfig {
                grid_dim: self.grid,
                block_dim: self.block,
                shared_mem_bytes: 0,
            }
        }
    }
}
