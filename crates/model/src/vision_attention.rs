//! The vision tower's attention (no mask: every patch sees every patch of its
//! image) as one flash-attention-style CUDA kernel on the tensor cores
//! (kernels/vision_attention.cu), instead of the scores product, the softmax and
//! the values product with the `[heads, patches, patches]` scores in memory between
//! them (at 896 px three passes over 512 MB a layer).
//!
//! The tower uses it only where it passed its self-test against `reference` on the
//! device at load *and* ran faster there than the unfused ops on the tower's own
//! shape (`usable`); otherwise it keeps the unfused ops and says why.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};

use crate::launch::{dtype_suffix, Launch};

/// Head widths the kernel is built for.
pub const HEAD_DIMS: &[usize] = &[16, 32, 64, 72, 80, 96, 128];

/// Queries a block takes (the kernel's VA_TILE).
const TILE: usize = 64;

/// `q`, `k`, `v` `[images, heads, patches, head_dim]` (the queries already scaled)
/// → `[images * patches, heads * head_dim]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    {
        q.contiguous()?
            .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &cuda::Op)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (q, k, v);
        candle_core::bail!("the vision attention kernel needs a CUDA build")
    }
}

/// The same with candle ops on any device: scores, softmax in f32, values.
pub fn reference(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (images, heads, patches, d) = q.dims4()?;
    let scores = q.matmul(&k.t()?)?;
    let probs = if crate::softmax::serves(&scores) {
        crate::softmax::softmax(&scores)?
    } else {
        crate::ops::softmax_in_f32(&scores)?
    };
    probs
        .matmul(v)?
        .transpose(1, 2)?
        .reshape((images * patches, heads * d))
}

/// Whether the kernel takes heads of `head_dim` in `dtype` on `device`: a GPU of
/// compute capability 8.0 or newer (its tensor-core instruction), bf16 or f16.
pub fn serves(device: &Device, dtype: DType, head_dim: usize) -> bool {
    let tensor_cores = crate::device::compute_capability(device).is_some_and(|cc| cc >= (8, 0));
    tensor_cores && matches!(dtype, DType::BF16 | DType::F16) && HEAD_DIMS.contains(&head_dim)
}

/// `vision_attention_*`'s launch for `q` `[images, heads, patches, head_dim]`: a
/// block of 4 warps per 64 queries of one (image, head); scalars `(patches, heads)`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn launch_plan(dtype: DType, q: &[usize]) -> Result<Launch<(i32, i32)>> {
    let &[images, heads, patches, d] = q else {
        candle_core::bail!("vision attention: q {q:?}");
    };
    if !matches!(dtype, DType::BF16 | DType::F16) || !HEAD_DIMS.contains(&d) || patches == 0 {
        candle_core::bail!("vision attention: no kernel for {dtype:?} heads of {d}");
    }
    Ok(Launch {
        kernel: format!("vision_attention_{}_d{d}", dtype_suffix(dtype)?),
        grid: (patches.div_ceil(TILE) as u32, (images * heads) as u32, 1),
        block: (128, 1, 1),
        scalars: (patches as i32, heads as i32),
    })
}

/// Random `[images, heads, patches, head_dim]` q, k and v in `dtype` on the CPU.
fn trial(dtype: DType, shape: (usize, usize, usize, usize)) -> Result<[Tensor; 3]> {
    let scale = (shape.3 as f64).powf(-0.5);
    let r = |s: f64| -> Result<Tensor> {
        (Tensor::randn(0f32, 1.0, shape, &Device::Cpu)? * s)?.to_dtype(dtype)
    };
    Ok([r(scale * 3.0)?, r(1.0)?, r(1.0)?])
}

/// `reference` in f32 from half-precision inputs: what the kernel is held to. (It
/// keeps the scores in f32, so it is closer to this than the unfused half-precision
/// ops, which round every score, are: up to 1.4e-2 against it on random heads.)
fn reference_f32(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let f = |t: &Tensor| t.to_dtype(DType::F32);
    reference(&f(q)?, &f(k)?, &f(v)?)
}

/// Worst relative error of the kernel on `device` against `reference` in f32 on
/// the CPU: two images of `patches` patches (a partial last tile where `patches` is
/// not a multiple of 64), two heads of `head_dim`.
pub fn self_test(device: &Device, dtype: DType, head_dim: usize, patches: usize) -> Result<f64> {
    let [q, k, v] = trial(dtype, (2, 2, patches, head_dim))?;
    let want = reference_f32(&q, &k, &v)?;
    let on = |t: &Tensor| t.to_device(device);
    let got = attention(&on(&q)?, &on(&k)?, &on(&v)?)?;
    crate::ops::max_relative_error(&got, &want)
}

/// Best of three timed runs of `f` on `device`, in seconds.
fn time(device: &Device, f: impl Fn() -> Result<Tensor>) -> Result<f64> {
    f()?;
    device.synchronize()?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        f()?;
        device.synchronize()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Seconds of the kernel and of the unfused ops for one image of the tower's shape
/// on `device`.
pub fn timings(
    device: &Device,
    dtype: DType,
    heads: usize,
    patches: usize,
    head_dim: usize,
) -> Result<(f64, f64)> {
    let [q, k, v] = trial(dtype, (1, heads, patches, head_dim))?;
    let (q, k, v) = (
        q.to_device(device)?,
        k.to_device(device)?,
        v.to_device(device)?,
    );
    let fused = time(device, || attention(&q, &k, &v))?;
    let unfused = time(device, || reference(&q, &k, &v))?;
    Ok((fused, unfused))
}

/// Whether the tower of `heads` heads of `head_dim` over `patches` patches may use
/// the kernel on `device` in `dtype`: it takes the shape, is not turned off, passes
/// its self-test, and beats the unfused ops there.
pub fn usable(
    device: &Device,
    dtype: DType,
    heads: usize,
    patches: usize,
    head_dim: usize,
) -> bool {
    if !serves(device, dtype, head_dim)
        || !crate::ops::kernel_usable("vision-attention", device, dtype, || {
            self_test(device, dtype, head_dim, patches.min(200))
        })
    {
        return false;
    }
    match timings(device, dtype, heads, patches, head_dim) {
        Ok((fused, unfused)) if fused < unfused => {
            tracing::info!(
                fused_ms = fused * 1e3,
                unfused_ms = unfused * 1e3,
                "vision attention kernel: faster, in use"
            );
            true
        }
        Ok((fused, unfused)) => {
            tracing::info!(
                fused_ms = fused * 1e3,
                unfused_ms = unfused * 1e3,
                "vision attention kernel: slower than the unfused ops here, not used"
            );
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "vision attention kernel: timing failed, not used");
            false
        }
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{
        CpuStorage, CudaStorage, CustomOp3, DType, Layout, Result, Shape, WithDType,
    };
    use half::{bf16, f16};

    use crate::launch::Scalars;
    use crate::paged_decode::cuda_view;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/vision_attention.ptx"));

    pub struct Op;

    type Operand<'a> = (&'a CudaStorage, &'a Layout);

    fn typed<T: CudaDType + DeviceRepr + WithDType>(
        q: Operand<'_>,
        k: Operand<'_>,
        v: Operand<'_>,
    ) -> Result<(CudaStorage, Shape)> {
        let dims = q.1.shape().dims();
        let plan = super::launch_plan(T::DTYPE, dims)?;
        let contiguous = [q.1, k.1, v.1].iter().all(|l| l.is_contiguous());
        let aligned = [q.1, k.1, v.1]
            .iter()
            .all(|l| (l.start_offset() * std::mem::size_of::<T>()).is_multiple_of(16));
        if k.1.shape() != q.1.shape() || v.1.shape() != q.1.shape() || !contiguous || !aligned {
            candle_core::bail!(
                "vision attention: q, k and v must be alike, contiguous and aligned"
            );
        }
        let (images, heads, patches, d) = (dims[0], dims[1], dims[2], dims[3]);
        let dev = q.0.device.clone();
        let out = unsafe { dev.alloc::<T>(q.1.shape().elem_count())? };
        let func = dev.get_or_load_custom_func(&plan.kernel, "medgemma_vision_attention", PTX)?;
        let (qs, ks, vs) = (cuda_view::<T>(q)?, cuda_view::<T>(k)?, cuda_view::<T>(v)?);
        let mut b = func.builder();
        b.arg(&qs).arg(&ks).arg(&vs).arg(&out);
        plan.scalars.push(&mut b);
        unsafe { b.launch(plan.config()) }.w()?;
        let shape = Shape::from((images * patches, heads * d));
        Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
    }

    impl CustomOp3 for Op {
        fn name(&self) -> &'static str {
            "vision-attention"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the vision attention kernel runs on CUDA only")
        }

        fn cuda_fwd(
            &self,
            q: &CudaStorage,
            ql: &Layout,
            k: &CudaStorage,
            kl: &Layout,
            v: &CudaStorage,
            vl: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            match q.dtype() {
                DType::BF16 => typed::<bf16>((q, ql), (k, kl), (v, vl)),
                DType::F16 => typed::<f16>((q, ql), (k, kl), (v, vl)),
                other => candle_core::bail!("vision attention: unsupported dtype {other:?}"),
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
        // A partial last tile of queries and of keys (70 patches), and SigLIP's 72-wide
        // heads (padded to 80 for the scores) beside a 16-wide one.
        for (d, patches) in [(16, 70), (72, 70), (64, 128)] {
            for dtype in [DType::BF16, DType::F16] {
                let [q, k, v] = trial(dtype, (2, 2, patches, d))?;
                let plan = launch_plan(dtype, q.dims())?;
                let out = Dev::zeros(dtype, q.elem_count())?;
                let ins = [Dev::of(&q)?, Dev::of(&k)?, Dev::of(&v)?];
                run(&plan, &[&ins[0], &ins[1], &ins[2], &out])?;
                let got = out.tensor((2 * patches, 2 * d))?;
                let exact = reference_f32(&q, &k, &v)?;
                let e = crate::ops::max_relative_error(&got, &exact)?;
                // No farther from the f32 result than the unfused ops it replaces.
                let unfused = crate::ops::max_relative_error(&reference(&q, &k, &v)?, &exact)?;
                assert!(
                    e <= unfused.max(4e-3),
                    "d {d}: {e} against the unfused {unfused}"
                );
                assert!(
                    e <= crate::ops::fused_tolerance(dtype),
                    "d {d}, {patches} patches, {dtype:?}: {e}"
                );
            }
        }
        assert!(launch_plan(DType::F32, &[1, 2, 16, 72]).is_err());
        assert!(launch_plan(DType::BF16, &[1, 2, 16, 24]).is_err());
        Ok(())
    }
}
