//! Decode attention over the paged KV pool as one CUDA kernel
//! (kernels/paged_attention.cu): every decoding sequence's single query against its
//! keys and values, read in place through its slot list. Replaces the gather,
//! padding, two products and softmax of the generic path on CUDA; the generic
//! path (`Attention::attend_decodes`) stays the reference and the CPU route.

use candle_core::{Result, Tensor};

/// Whether the kernel serves these shapes on this device.
pub fn supported(q: &Tensor, head_dim: usize) -> bool {
    serves(q.device(), head_dim)
}

/// Whether the kernel serves heads of `head_dim` on `device`.
pub fn serves(device: &candle_core::Device, head_dim: usize) -> bool {
    cfg!(feature = "cuda") && device.is_cuda() && head_dim.is_multiple_of(32) && head_dim <= 256
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

#[cfg(feature = "cuda")]
pub(crate) use cuda::cuda_view;

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{
        CpuStorage, CudaStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor,
    };
    use half::{bf16, f16};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/paged_attention.ptx"));
    const THREADS: u32 = 256;

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
        fn launch<T: CudaDType + DeviceRepr>(
            &self,
            name: &str,
            ops: Operands<'_>,
        ) -> Result<(CudaStorage, Shape)> {
            let (q, ql) = ops.q;
            let (seqs, heads, head_dim) = ql.shape().dims3()?;
            let max_keys = self.slots.dim(1)?;
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
            let out = unsafe { dev.alloc::<T>(seqs * heads * head_dim)? };
            let func = dev.get_or_load_custom_func(name, "medgemma_paged_attention", PTX)?;
            let cfg = LaunchConfig {
                grid_dim: (heads as u32, seqs as u32, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let dims = [heads, self.kv_heads, head_dim, max_keys].map(|x| x as i32);
            let mut b = func.builder();
            b.arg(&qs)
                .arg(&ks)
                .arg(&vs)
                .arg(&slots)
                .arg(&lens)
                .arg(&out);
            b.arg(&dims[0]).arg(&dims[1]).arg(&dims[2]).arg(&dims[3]);
            b.arg(&self.scale);
            unsafe { b.launch(cfg) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                Shape::from((seqs, heads, head_dim)),
            ))
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
                DType::BF16 => self.launch::<bf16>("paged_decode_bf16", ops),
                DType::F16 => self.launch::<f16>("paged_decode_f16", ops),
                DType::F32 => self.launch::<f32>("paged_decode_f32", ops),
                other => candle_core::bail!("paged decode: unsupported dtype {other:?}"),
            }
        }
    }
}
