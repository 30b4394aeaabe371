//! Gemma's residual add with the RMSNorms on either side as one CUDA kernel
//! (kernels/add_rmsnorm.cu): `h' = h + norm_post(x)`, `z = norm_next(h')`, both
//! returned. The unfused ops (`GemmaRmsNorm::add_then_norm` off CUDA) are the
//! reference; `check` compares the two on the GPU.

use candle_core::{Result, Tensor};

/// Widest row the kernel takes (1024 threads of eight columns).
pub const MAX_COLS: usize = 8192;

/// `x`, `h`: `[rows, cols]`; `w_post`, `w_next`: `1 + weight` in f32 `[cols]`.
/// Returns `(h + rmsnorm(x) * w_post, rmsnorm(that) * w_next)`.
pub fn add_rmsnorm(
    x: &Tensor,
    h: &Tensor,
    w_post: &Tensor,
    w_next: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    #[cfg(feature = "cuda")]
    {
        let op = cuda::AddRmsNorm {
            w_post: w_post.contiguous()?,
            w_next: w_next.contiguous()?,
            eps,
        };
        let out = x.contiguous()?.apply_op2_no_bwd(&h.contiguous()?, &op)?;
        Ok((out.get(0)?, out.get(1)?))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (x, h, w_post, w_next, eps);
        candle_core::bail!("the fused residual RMSNorm needs a CUDA build")
    }
}

/// The unfused ops, as `GemmaRmsNorm` runs them off CUDA (f32 sums, `x`'s dtype
/// between steps): the reference of the kernel, on any device.
pub fn reference(
    x: &Tensor,
    h: &Tensor,
    w_post: &Tensor,
    w_next: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let dtype = x.dtype();
    let norm = |t: &Tensor, w: &Tensor| -> Result<Tensor> {
        let tf = t.to_dtype(candle_core::DType::F32)?.contiguous()?;
        candle_nn::ops::rms_norm(&tf, w, eps)?.to_dtype(dtype)
    };
    let h = (h + norm(x, w_post)?)?;
    let z = norm(&h, w_next)?;
    Ok((h, z))
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CpuStorage, CudaStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
    use half::{bf16, f16};

    use crate::paged_decode::cuda_view;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/add_rmsnorm.ptx"));

    pub struct AddRmsNorm {
        pub w_post: Tensor,
        pub w_next: Tensor,
        pub eps: f32,
    }

    impl AddRmsNorm {
        fn launch<T: CudaDType + DeviceRepr>(
            &self,
            name: &str,
            x: (&CudaStorage, &Layout),
            h: (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            let dims = x.1.shape().dims();
            let cols = *dims.last().unwrap_or(&1);
            let rows = x.1.shape().elem_count() / cols.max(1);
            let dev = x.0.device.clone();
            let (wp_st, wp_l) = self.w_post.storage_and_layout();
            let (wn_st, wn_l) = self.w_next.storage_and_layout();
            let (candle_core::Storage::Cuda(wp), candle_core::Storage::Cuda(wn)) =
                (&*wp_st, &*wn_st)
            else {
                candle_core::bail!("fused RMSNorm: the weights are not on the GPU")
            };
            let wp = cuda_view::<f32>((wp, wp_l))?;
            let wn = cuda_view::<f32>((wn, wn_l))?;
            let (xs, hs) = (cuda_view::<T>(x)?, cuda_view::<T>(h)?);
            let out = unsafe { dev.alloc::<T>(2 * rows * cols)? };
            let func = dev.get_or_load_custom_func(name, "medgemma_add_rmsnorm", PTX)?;
            if cols > super::MAX_COLS {
                candle_core::bail!(
                    "fused RMSNorm: {cols} columns (at most {})",
                    super::MAX_COLS
                );
            }
            // Eight columns a thread (the kernel's PER), in whole warps.
            let threads = (cols.div_ceil(8).div_ceil(32) * 32).max(32) as u32;
            let cfg = LaunchConfig {
                grid_dim: (rows as u32, 1, 1),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            let (r, c) = (rows as i32, cols as i32);
            let mut b = func.builder();
            b.arg(&xs).arg(&hs).arg(&wp).arg(&wn).arg(&out);
            b.arg(&r).arg(&c).arg(&self.eps);
            unsafe { b.launch(cfg) }.w()?;
            let mut shape = vec![2];
            shape.extend_from_slice(dims);
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(shape)))
        }
    }

    impl CustomOp2 for AddRmsNorm {
        fn name(&self) -> &'static str {
            "add-rmsnorm"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the fused residual RMSNorm runs on CUDA only")
        }

        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            xl: &Layout,
            h: &CudaStorage,
            hl: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            if !(xl.is_contiguous() && hl.is_contiguous()) || xl.shape() != hl.shape() {
                candle_core::bail!("fused RMSNorm: x and h must be contiguous, of one shape");
            }
            match x.dtype() {
                DType::BF16 => self.launch::<bf16>("add_rmsnorm_bf16", (x, xl), (h, hl)),
                DType::F16 => self.launch::<f16>("add_rmsnorm_f16", (x, xl), (h, hl)),
                DType::F32 => self.launch::<f32>("add_rmsnorm_f32", (x, xl), (h, hl)),
                other => candle_core::bail!("fused RMSNorm: unsupported dtype {other:?}"),
            }
        }
    }
}
