//! Gemma's residual add with the RMSNorms on either side as one CUDA kernel
//! (kernels/add_rmsnorm.cu): `h' = h + norm_post(x)`, `z = norm_next(h')`, both
//! returned. The unfused ops (`GemmaRmsNorm::add_then_norm` off CUDA) are the
//! reference; `check` compares the two on the GPU.

use candle_core::{DType, Result, Tensor};

use crate::launch::{dtype_suffix, Launch};

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

/// The launch of `add_rmsnorm_*` on `[.., cols]` rows with weights of `w_dims`
/// each: a block a row, eight columns a thread, in whole warps; scalars `(rows,
/// cols, eps)`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn add_rmsnorm_launch(
    dtype: DType,
    dims: &[usize],
    w_dims: [&[usize]; 2],
    eps: f32,
) -> Result<Launch<(i32, i32, f32)>> {
    let cols = dims.last().copied().unwrap_or(0);
    if cols == 0 || cols > MAX_COLS || w_dims.iter().any(|w| *w != [cols]) {
        candle_core::bail!(
            "fused RMSNorm: rows of {cols} (at most {MAX_COLS}) with weights {w_dims:?}"
        );
    }
    let rows = dims.iter().product::<usize>() / cols;
    let threads = (cols.div_ceil(8).div_ceil(32) * 32).max(32) as u32;
    Ok(Launch {
        kernel: format!("add_rmsnorm_{}", dtype_suffix(dtype)?),
        grid: (rows as u32, 1, 1),
        block: (threads, 1, 1),
        scalars: (rows as i32, cols as i32, eps),
    })
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{
        CpuStorage, CudaStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType,
    };
    use half::{bf16, f16};

    use crate::launch::Scalars;
    use crate::paged_decode::cuda_view;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/add_rmsnorm.ptx"));

    pub struct AddRmsNorm {
        pub w_post: Tensor,
        pub w_next: Tensor,
        pub eps: f32,
    }

    impl AddRmsNorm {
        fn launch<T: CudaDType + DeviceRepr + WithDType>(
            &self,
            x: (&CudaStorage, &Layout),
            h: (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            let dims = x.1.shape().dims();
            let w_dims = [self.w_post.dims(), self.w_next.dims()];
            let plan = super::add_rmsnorm_launch(T::DTYPE, dims, w_dims, self.eps)?;
            if h.1.shape() != x.1.shape() {
                candle_core::bail!("fused RMSNorm: residual {:?} for {dims:?}", h.1.shape());
            }
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
            let out = unsafe { dev.alloc::<T>(2 * x.1.shape().elem_count())? };
            let func = dev.get_or_load_custom_func(&plan.kernel, "medgemma_add_rmsnorm", PTX)?;
            let mut b = func.builder();
            b.arg(&xs).arg(&hs).arg(&wp).arg(&wn).arg(&out);
            plan.scalars.push(&mut b);
            unsafe { b.launch(plan.config()) }.w()?;
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
                DType::BF16 => self.launch::<bf16>((x, xl), (h, hl)),
                DType::F16 => self.launch::<f16>((x, xl), (h, hl)),
                DType::F32 => self.launch::<f32>((x, xl), (h, hl)),
                other => candle_core::bail!("fused RMSNorm: unsupported dtype {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::emulated::{run, Dev};

    #[test]
    fn the_kernel_with_its_launch_matches_the_reference_when_emulated() -> Result<()> {
        let cpu = &Device::Cpu;
        // One warp; a width with a partial last warp; more columns than a thread's
        // eight times a warp (several warps in the block sum).
        for cols in [40, 520, 2560] {
            let (wp, wn) = (
                (Tensor::randn(0f32, 0.5, cols, cpu)? + 1.0)?,
                (Tensor::randn(0f32, 0.5, cols, cpu)? + 1.0)?,
            );
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                let x = Tensor::randn(0f32, 3.0, (3, cols), cpu)?.to_dtype(dtype)?;
                let h = Tensor::randn(0f32, 1.0, (3, cols), cpu)?.to_dtype(dtype)?;
                let plan = add_rmsnorm_launch(dtype, x.dims(), [wp.dims(), wn.dims()], 1e-6)?;
                let out = Dev::zeros(dtype, 2 * 3 * cols)?;
                let ins = [Dev::of(&x)?, Dev::of(&h)?, Dev::of(&wp)?, Dev::of(&wn)?];
                run(&plan, &[&ins[0], &ins[1], &ins[2], &ins[3], &out])?;
                let got = out.tensor((2, 3, cols))?;
                let (want_h, want_z) = reference(&x, &h, &wp, &wn, 1e-6)?;
                let tol = crate::ops::fused_tolerance(dtype);
                for (i, want) in [want_h, want_z].iter().enumerate() {
                    let e = crate::ops::max_relative_error(&got.get(i)?, want)?;
                    assert!(e <= tol, "output {i}, {cols} columns, {dtype:?}: {e}");
                }
            }
        }
        let w: &[usize] = &[64];
        assert!(add_rmsnorm_launch(DType::F32, &[2, 64], [w, &[63]], 1e-6).is_err());
        assert!(add_rmsnorm_launch(DType::F32, &[2, MAX_COLS + 8], [w, w], 1e-6).is_err());
        Ok(())
    }
}
