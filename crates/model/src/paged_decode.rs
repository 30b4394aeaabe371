//! Decode attention over the paged KV pool as one CUDA kernel
//! (kernels/paged_attention.cu): every decoding sequence's single query against its
//! keys and values, read in place through its slot list. Replaces the gather,
//! padding, two products and softmax of the generic path on CUDA; the generic
//! path (`Attention::attend_decodes`) stays the reference and the CPU route.

use candle_core::{DType, Result, Tensor};

use crate::launch::{dtype_suffix, Launch};

/// Whether the kernel serves these shapes on this device.
pub fn supported(q: &Tensor, head_dim: usize) -> bool {
    serves(q.device(), head_dim)
}

/// Whether the kernel serves heads of `head_dim` on `device`.
pub fn serves(device: &candle_core::Device, head_dim: usize) -> bool {
    crate::paged_rows::serves(device, head_dim) && crate::kernels::enabled("paged-decode")
}

/// `q` `[seqs, heads, head_dim]`, pools `[slots, kv_heads * head_dim]`, `slots`
/// `[seqs, max_keys]` u32, `lens` `[seqs]` u32 → `[seqs, heads, head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn paged_decode(
    q: &Tensor,
    k_pool: &Tensor,
    v_pool: &Tensor,
    slots: &Tensor,
    lens: &Tensor,
    kv_heads: usize,
    scale: f32,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    {
        let op = cuda::PagedDecode {
            slots: slots.contiguous()?,
            lens: lens.contiguous()?,
            kv_heads,
            scale,
        };
        q.contiguous()?.apply_op3_no_bwd(k_pool, v_pool, &op)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (q, k_pool, v_pool, slots, lens, kv_heads, scale);
        candle_core::bail!("paged decode attention needs a CUDA build")
    }
}

/// The same attention with plain tensor ops, one sequence at a time (gather, two
/// products, f32 softmax): the reference the kernel is checked against, on any device.
pub fn reference(
    q: &Tensor,
    k_pool: &Tensor,
    v_pool: &Tensor,
    slots: &Tensor,
    lens: &[usize],
    kv_heads: usize,
    scale: f32,
) -> Result<Tensor> {
    let (seqs, heads, head_dim) = q.dims3()?;
    let group = heads / kv_heads;
    let mut outs = Vec::with_capacity(seqs);
    for (s, &len) in lens.iter().enumerate().take(seqs) {
        let idx = slots.get(s)?.narrow(0, 0, len)?;
        let gather = |pool: &Tensor| {
            pool.index_select(&idx, 0)?
                .reshape((len, kv_heads, head_dim))?
                .transpose(0, 1)?
                .contiguous()
        };
        let (k, v) = (gather(k_pool)?, gather(v_pool)?);
        let qs = q.get(s)?.reshape((kv_heads, group, head_dim))?;
        let scores = (qs.matmul(&k.t()?)? * f64::from(scale))?;
        let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(candle_core::DType::F32)?)?;
        let o = probs.matmul(&v.to_dtype(candle_core::DType::F32)?)?;
        outs.push(o.reshape((1, heads, head_dim))?);
    }
    Tensor::cat(&outs, 0)?.to_dtype(q.dtype())
}

/// `paged_decode_*`'s scalars: `(heads, kv_heads, head_dim, max_keys, scale)`.
type DecodeScalars = (i32, i32, i32, i32, f32);

/// The launch of `paged_decode_*` for `q` `[seqs, heads, head_dim]`, pools `[slots,
/// kv_heads * head_dim]` and a slot table `[seqs, max_keys]`: a block of 256 threads
/// per (head, sequence).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn paged_decode_launch(
    dtype: DType,
    q: &[usize],
    pool: &[usize],
    slots: &[usize],
    kv_heads: usize,
    scale: f32,
) -> Result<Launch<DecodeScalars>> {
    let (&[seqs, heads, head_dim], &[_, width], &[slot_seqs, max_keys]) = (q, pool, slots) else {
        candle_core::bail!("paged decode: q {q:?}, pools {pool:?}, slots {slots:?}");
    };
    let fits = kv_heads > 0
        && heads.is_multiple_of(kv_heads)
        && head_dim.is_multiple_of(32)
        && (32..=256).contains(&head_dim)
        && width == kv_heads * head_dim
        && slot_seqs == seqs
        && seqs > 0;
    if !fits {
        candle_core::bail!(
            "paged decode: q {q:?}, pools {pool:?}, slots {slots:?}, {kv_heads} kv heads"
        );
    }
    let dims = [heads, kv_heads, head_dim, max_keys].map(|x| x as i32);
    Ok(Launch {
        kernel: format!("paged_decode_{}", dtype_suffix(dtype)?),
        grid: (heads as u32, seqs as u32, 1),
        block: (256, 1, 1),
        scalars: (dims[0], dims[1], dims[2], dims[3], scale),
    })
}

#[cfg(feature = "cuda")]
pub(crate) use cuda::cuda_view;

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{
        CpuStorage, CudaStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor,
        WithDType,
    };
    use half::{bf16, f16};

    use crate::launch::Scalars;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/paged_attention.ptx"));

    pub struct PagedDecode {
        pub slots: Tensor,
        pub lens: Tensor,
        pub kv_heads: usize,
        pub scale: f32,
    }

    /// One storage side: the operand tensors' storages and layouts.
    struct Operands<'a> {
        q: (&'a CudaStorage, &'a Layout),
        k: (&'a CudaStorage, &'a Layout),
        v: (&'a CudaStorage, &'a Layout),
    }

    /// A contiguous operand's device memory from its first element.
    pub(crate) fn cuda_view<'a, T: CudaDType>(
        (st, l): (&'a CudaStorage, &Layout),
    ) -> Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
        Ok(st.as_cuda_slice::<T>()?.slice(l.start_offset()..))
    }

    impl PagedDecode {
        fn launch<T: CudaDType + DeviceRepr + WithDType>(
            &self,
            ops: Operands<'_>,
        ) -> Result<(CudaStorage, Shape)> {
            let (q, ql) = ops.q;
            let plan = super::paged_decode_launch(
                T::DTYPE,
                ql.shape().dims(),
                ops.k.1.shape().dims(),
                self.slots.dims(),
                self.kv_heads,
                self.scale,
            )?;
            if ops.v.1.shape() != ops.k.1.shape() || self.lens.dims() != [ql.shape().dims()[0]] {
                candle_core::bail!("paged decode: pools or lengths do not match");
            }
            let dev = q.device.clone();
            let (slots_st, slots_l) = self.slots.storage_and_layout();
            let (lens_st, lens_l) = self.lens.storage_and_layout();
            let (Storage::Cuda(slots_c), Storage::Cuda(lens_c)) = (&*slots_st, &*lens_st) else {
                candle_core::bail!("paged decode: the slot table is not on the GPU")
            };
            let slots = slots_c
                .as_cuda_slice::<u32>()?
                .slice(slots_l.start_offset()..);
            let lens = lens_c
                .as_cuda_slice::<u32>()?
                .slice(lens_l.start_offset()..);
            let (qs, ks, vs) = (
                cuda_view::<T>(ops.q)?,
                cuda_view::<T>(ops.k)?,
                cuda_view::<T>(ops.v)?,
            );
            let out = unsafe { dev.alloc::<T>(ql.shape().elem_count())? };
            let func =
                dev.get_or_load_custom_func(&plan.kernel, "medgemma_paged_attention", PTX)?;
            let mut b = func.builder();
            b.arg(&qs)
                .arg(&ks)
                .arg(&vs)
                .arg(&slots)
                .arg(&lens)
                .arg(&out);
            plan.scalars.push(&mut b);
            unsafe { b.launch(plan.config()) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), ql.shape().clone()))
        }
    }

    impl CustomOp3 for PagedDecode {
        fn name(&self) -> &'static str {
            "paged-decode-attention"
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
            candle_core::bail!("paged decode attention runs on CUDA only")
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
            if !(ql.is_contiguous() && kl.is_contiguous() && vl.is_contiguous()) {
                candle_core::bail!("paged decode: q and the pools must be contiguous");
            }
            let ops = Operands {
                q: (q, ql),
                k: (k, kl),
                v: (v, vl),
            };
            match q.dtype() {
                DType::BF16 => self.launch::<bf16>(ops),
                DType::F16 => self.launch::<f16>(ops),
                DType::F32 => self.launch::<f32>(ops),
                other => candle_core::bail!("paged decode: unsupported dtype {other:?}"),
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
        let (heads, kv_heads, pool_slots, max_keys) = (4, 2, 300, 260);
        // Scattered slots; a single key, a partial last page of keys, and more keys
        // than a block's threads.
        let lens = [1usize, 37, 260];
        let mut table = Vec::new();
        for s in 0..lens.len() {
            table.extend((0..max_keys).map(|i| ((i * 7 + s * 13) % pool_slots) as u32));
        }
        let slots = Tensor::from_vec(table, (lens.len(), max_keys), cpu)?;
        let lens_t = Tensor::from_vec(lens.map(|l| l as u32).to_vec(), lens.len(), cpu)?;
        for head_dim in [32, 256] {
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                let r =
                    |shape: (usize, usize)| Tensor::randn(0f32, 1.0, shape, cpu)?.to_dtype(dtype);
                let q =
                    r((lens.len(), heads * head_dim))?.reshape((lens.len(), heads, head_dim))?;
                let (k, v) = (
                    r((pool_slots, kv_heads * head_dim))?,
                    r((pool_slots, kv_heads * head_dim))?,
                );
                let scale = (head_dim as f32).powf(-0.5);
                let plan =
                    paged_decode_launch(dtype, q.dims(), k.dims(), slots.dims(), kv_heads, scale)?;
                let out = Dev::zeros(dtype, q.elem_count())?;
                let ins = [
                    Dev::of(&q)?,
                    Dev::of(&k)?,
                    Dev::of(&v)?,
                    Dev::of(&slots)?,
                    Dev::of(&lens_t)?,
                ];
                run(&plan, &[&ins[0], &ins[1], &ins[2], &ins[3], &ins[4], &out])?;
                let want = reference(&q, &k, &v, &slots, &lens, kv_heads, scale)?;
                let e = crate::ops::max_relative_error(&out.tensor(q.dims())?, &want)?;
                let tol = crate::ops::fused_tolerance(dtype);
                assert!(e <= tol, "head_dim {head_dim}, {dtype:?}: {e}");
            }
        }
        let bad = paged_decode_launch(DType::F32, &[2, 4, 48], &[9, 96], &[2, 8], 2, 1.0);
        assert!(bad.is_err(), "head_dim 48 is not whole warps");
        assert!(paged_decode_launch(DType::F32, &[2, 4, 64], &[9, 128], &[3, 8], 2, 1.0).is_err());
        Ok(())
    }
}
