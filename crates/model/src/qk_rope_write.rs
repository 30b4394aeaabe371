//! Gemma's q/k RMSNorms, RoPE and the KV-cache write as one CUDA kernel
//! (kernels/qk_norm_rope_write.cu), with `reference`, the same steps as separate
//! ops. The kernel replaces five launches per layer and keeps the norms' weights
//! in f32, as transformers does (the unfused CUDA path rounds `1 + w` to the
//! activation dtype).
//!
//! The decoder uses it only after `self_test` passes on the device at load, on
//! the model's own shapes; otherwise it keeps the unfused ops and says so.
//! `medgemma-server check` runs the same comparison and reports it (on an H200:
//! `benches/results/h200/check.txt`).

use candle_core::{DType, Device, Result, Tensor};

use crate::config::TextConfig;
use crate::rope::RopeTables;

/// The per-layer inputs besides q, k and v.
pub struct QkRopeWrite<'a> {
    /// `1 + weight` of the q and k norms, f32 `[head_dim]`.
    pub q_w: &'a Tensor,
    pub k_w: &'a Tensor,
    pub eps: f32,
    pub rope: &'a RopeTables,
    /// Pool slot of each token, `[tokens]` u32.
    pub slots: &'a Tensor,
    /// The layer's pools `[pool slots, kv_heads * head_dim]`, written in place.
    pub k_pool: &'a Tensor,
    pub v_pool: &'a Tensor,
}

/// `q` `[tokens, heads, head_dim]`, `k`, `v` `[tokens, kv_heads, head_dim]` →
/// normalized and rotated q; normalized, rotated k and v written to the pools.
pub fn qk_rope_write(q: &Tensor, k: &Tensor, v: &Tensor, p: &QkRopeWrite<'_>) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    {
        let op = cuda::Op {
            k: k.contiguous()?,
            v: v.contiguous()?,
            q_w: p.q_w.contiguous()?,
            k_w: p.k_w.contiguous()?,
            cos: p.rope.cos.contiguous()?,
            sin: p.rope.sin.contiguous()?,
            slots: p.slots.contiguous()?,
            k_pool: p.k_pool.clone(),
            v_pool: p.v_pool.clone(),
            eps: p.eps,
        };
        q.contiguous()?.apply_op1_no_bwd(&op)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (q, k, v, p);
        candle_core::bail!("the fused q/k norm, RoPE and KV write needs a CUDA build")
    }
}

/// Worst relative error of the kernel on `device` against `reference` on the CPU,
/// on random inputs of the given shapes: the rotated queries, and the keys and
/// values read back from the pool at their slots.
pub fn self_test(
    device: &Device,
    dtype: DType,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Result<f64> {
    let tokens = 5;
    let pool_slots = 64;
    let row = kv_heads * head_dim;
    let cpu = &Device::Cpu;
    let q = Tensor::randn(0f32, 2.0, (tokens, heads, head_dim), cpu)?.to_dtype(dtype)?;
    let k = Tensor::randn(0f32, 2.0, (tokens, kv_heads, head_dim), cpu)?.to_dtype(dtype)?;
    let v = Tensor::randn(0f32, 2.0, (tokens, kv_heads, head_dim), cpu)?.to_dtype(dtype)?;
    let q_w = (Tensor::randn(0f32, 0.5, head_dim, cpu)? + 1.0)?;
    let k_w = (Tensor::randn(0f32, 0.5, head_dim, cpu)? + 1.0)?;
    let angles = (Tensor::rand(0f32, 1.0, (tokens, head_dim / 2), cpu)? * std::f64::consts::TAU)?;
    let rope = |d: &Device| -> Result<RopeTables> {
        Ok(RopeTables {
            cos: angles.cos()?.to_dtype(dtype)?.to_device(d)?,
            sin: angles.sin()?.to_dtype(dtype)?.to_device(d)?,
        })
    };
    let eps = 1e-6;
    let (want_q, want_k) = reference(&q, &k, &q_w, &k_w, eps, &rope(cpu)?)?;
    let slots = Tensor::new(&[3u32, 17, 40, 8, 63], device)?;
    let k_pool = Tensor::zeros((pool_slots, row), dtype, device)?;
    let v_pool = Tensor::zeros((pool_slots, row), dtype, device)?;
    let on = |t: &Tensor| t.to_device(device);
    let dev_rope = rope(device)?;
    let fused = QkRopeWrite {
        q_w: &on(&q_w)?,
        k_w: &on(&k_w)?,
        eps,
        rope: &dev_rope,
        slots: &slots,
        k_pool: &k_pool,
        v_pool: &v_pool,
    };
    let got_q = qk_rope_write(&on(&q)?, &on(&k)?, &on(&v)?, &fused)?;
    let read = |pool: &Tensor| {
        pool.index_select(&slots, 0)?
            .reshape((tokens, kv_heads, head_dim))
    };
    let err = crate::ops::max_relative_error;
    Ok(err(&got_q, &want_q)?
        .max(err(&read(&k_pool)?, &want_k)?)
        .max(err(&read(&v_pool)?, &v)?))
}

/// Whether the decoder of `cfg` may use the kernel on `device` in `dtype`: a CUDA
/// device, and `self_test` passing there on the model's shapes.
pub fn usable(cfg: &TextConfig, dtype: DType, device: &Device) -> bool {
    let (heads, kv_heads, d) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    );
    crate::ops::kernel_usable("q/k norm + RoPE + KV write", device, dtype, || {
        self_test(device, dtype, heads, kv_heads, d)
    })
}

/// The unfused steps on any device: q and k normalized (f32 sums) and rotated.
pub fn reference(
    q: &Tensor,
    k: &Tensor,
    q_w: &Tensor,
    k_w: &Tensor,
    eps: f32,
    rope: &RopeTables,
) -> Result<(Tensor, Tensor)> {
    let norm = |x: &Tensor, w: &Tensor| -> Result<Tensor> {
        let xf = x.to_dtype(candle_core::DType::F32)?.contiguous()?;
        candle_nn::ops::rms_norm(&xf, w, eps)?.to_dtype(x.dtype())
    };
    let (q, k) = (norm(q, q_w)?.unsqueeze(0)?, norm(k, k_w)?.unsqueeze(0)?);
    Ok((rope.apply(&q)?.squeeze(0)?, rope.apply(&k)?.squeeze(0)?))
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{
        CpuStorage, CudaStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor,
    };
    use half::{bf16, f16};

    use crate::paged_decode::cuda_view;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/qk_norm_rope_write.ptx"));

    /// q is the op's operand; everything else rides along. The pools are written
    /// through their device pointers, in stream order, as `scatter_set` writes
    /// them: the device has one stream, so nothing else can touch them meanwhile.
    pub struct Op {
        pub k: Tensor,
        pub v: Tensor,
        pub q_w: Tensor,
        pub k_w: Tensor,
        pub cos: Tensor,
        pub sin: Tensor,
        pub slots: Tensor,
        pub k_pool: Tensor,
        pub v_pool: Tensor,
        pub eps: f32,
    }

    /// A tensor's storage, which must be on the GPU.
    fn cuda_storage(t: &Tensor) -> Result<(candle_core::StorageRef<'_>, &Layout)> {
        let (st, l) = t.storage_and_layout();
        if !matches!(&*st, Storage::Cuda(_)) {
            candle_core::bail!("fused q/k RoPE write: an operand is not on the GPU");
        }
        Ok((st, l))
    }

    fn as_cuda(st: &Storage) -> Result<&CudaStorage> {
        match st {
            Storage::Cuda(s) => Ok(s),
            _ => candle_core::bail!("fused q/k RoPE write: an operand is not on the GPU"),
        }
    }

    /// The device memory behind a held storage guard.
    fn view<'b, T: CudaDType>(
        g: &'b (candle_core::StorageRef<'_>, &Layout),
    ) -> Result<CudaView<'b, T>> {
        cuda_view::<T>((as_cuda(&g.0)?, g.1))
    }

    impl Op {
        fn launch<T: CudaDType + DeviceRepr>(
            &self,
            name: &str,
            q: &CudaStorage,
            ql: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let (tokens, heads, d) = ql.shape().dims3()?;
            let kv_heads = self.k.dim(1)?;
            let dev = q.device.clone();
            let guards = [
                &self.k,
                &self.v,
                &self.q_w,
                &self.k_w,
                &self.cos,
                &self.sin,
                &self.slots,
                &self.k_pool,
                &self.v_pool,
            ]
            .map(cuda_storage);
            let [k, v, q_w, k_w, cos, sin, slots, k_pool, v_pool] = guards;
            let (k, v, q_w, k_w, cos, sin, slots, k_pool, v_pool) =
                (k?, v?, q_w?, k_w?, cos?, sin?, slots?, k_pool?, v_pool?);
            let (kv, vv, cv, sv) = (
                view::<T>(&k)?,
                view::<T>(&v)?,
                view::<T>(&cos)?,
                view::<T>(&sin)?,
            );
            let (kpv, vpv) = (view::<T>(&k_pool)?, view::<T>(&v_pool)?);
            let (qwv, kwv) = (view::<f32>(&q_w)?, view::<f32>(&k_w)?);
            let sl = cuda_view::<u32>((as_cuda(&slots.0)?, slots.1))?;
            let qv = cuda_view::<T>((q, ql))?;
            let out = unsafe { dev.alloc::<T>(tokens * heads * d)? };
            let func = dev.get_or_load_custom_func(name, "medgemma_qk_rope_write", PTX)?;
            let threads = (d / 2).div_ceil(32) * 32;
            let cfg = LaunchConfig {
                grid_dim: (tokens as u32, (heads + kv_heads) as u32, 1),
                block_dim: (threads as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let dims = [heads, kv_heads, d].map(|x| x as i32);
            let mut b = func.builder();
            b.arg(&qv)
                .arg(&kv)
                .arg(&vv)
                .arg(&qwv)
                .arg(&kwv)
                .arg(&cv)
                .arg(&sv)
                .arg(&sl);
            b.arg(&kpv).arg(&vpv).arg(&out);
            b.arg(&dims[0]).arg(&dims[1]).arg(&dims[2]).arg(&self.eps);
            unsafe { b.launch(cfg) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                Shape::from((tokens, heads, d)),
            ))
        }
    }

    impl CustomOp1 for Op {
        fn name(&self) -> &'static str {
            "qk-norm-rope-kv-write"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the fused q/k RoPE write runs on CUDA only")
        }

        fn cuda_fwd(&self, q: &CudaStorage, ql: &Layout) -> Result<(CudaStorage, Shape)> {
            if !ql.is_contiguous() {
                candle_core::bail!("fused q/k RoPE write: q must be contiguous");
            }
            match q.dtype() {
                DType::BF16 => self.launch::<bf16>("qk_norm_rope_write_bf16", q, ql),
                DType::F16 => self.launch::<f16>("qk_norm_rope_write_f16", q, ql),
                DType::F32 => self.launch::<f32>("qk_norm_rope_write_f32", q, ql),
                other => candle_core::bail!("fused q/k RoPE write: unsupported dtype {other:?}"),
            }
        }
    }
}
