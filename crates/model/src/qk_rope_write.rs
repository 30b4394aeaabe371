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
use crate::launch::{dtype_suffix, Launch};
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

/// Random inputs of given shapes on the CPU, with the reference's outputs: what
/// the kernel's tests run.
struct Trial {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_w: Tensor,
    k_w: Tensor,
    rope: RopeTables,
    eps: f32,
    slots: Vec<u32>,
    pool_slots: usize,
    want_q: Tensor,
    want_k: Tensor,
}

impl Trial {
    fn new(dtype: DType, heads: usize, kv_heads: usize, head_dim: usize) -> Result<Self> {
        let tokens = 5;
        let cpu = &Device::Cpu;
        let r = |heads: usize| -> Result<Tensor> {
            Tensor::randn(0f32, 2.0, (tokens, heads, head_dim), cpu)?.to_dtype(dtype)
        };
        let (q, k, v) = (r(heads)?, r(kv_heads)?, r(kv_heads)?);
        let q_w = (Tensor::randn(0f32, 0.5, head_dim, cpu)? + 1.0)?;
        let k_w = (Tensor::randn(0f32, 0.5, head_dim, cpu)? + 1.0)?;
        let angles =
            (Tensor::rand(0f32, 1.0, (tokens, head_dim / 2), cpu)? * std::f64::consts::TAU)?;
        let rope = RopeTables {
            cos: angles.cos()?.to_dtype(dtype)?,
            sin: angles.sin()?.to_dtype(dtype)?,
        };
        let eps = 1e-6;
        let (want_q, want_k) = reference(&q, &k, &q_w, &k_w, eps, &rope)?;
        Ok(Self {
            q,
            k,
            v,
            q_w,
            k_w,
            rope,
            eps,
            slots: vec![3, 17, 40, 8, 63],
            pool_slots: 64,
            want_q,
            want_k,
        })
    }

    /// The worst relative error of `got_q` and of the pools read back at the slots.
    fn error(&self, got_q: &Tensor, k_pool: &Tensor, v_pool: &Tensor) -> Result<f64> {
        let slots = Tensor::new(self.slots.as_slice(), k_pool.device())?;
        let read = |pool: &Tensor| pool.index_select(&slots, 0)?.reshape(self.k.dims());
        let err = crate::ops::max_relative_error;
        Ok(err(got_q, &self.want_q)?
            .max(err(&read(k_pool)?, &self.want_k)?)
            .max(err(&read(v_pool)?, &self.v)?))
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
    let t = Trial::new(dtype, heads, kv_heads, head_dim)?;
    let pool = Tensor::zeros((t.pool_slots, kv_heads * head_dim), dtype, device)?;
    let (k_pool, v_pool) = (pool.clone(), pool.zeros_like()?);
    let on = |x: &Tensor| x.to_device(device);
    let rope = RopeTables {
        cos: on(&t.rope.cos)?,
        sin: on(&t.rope.sin)?,
    };
    let fused = QkRopeWrite {
        q_w: &on(&t.q_w)?,
        k_w: &on(&t.k_w)?,
        eps: t.eps,
        rope: &rope,
        slots: &Tensor::new(t.slots.as_slice(), device)?,
        k_pool: &k_pool,
        v_pool: &v_pool,
    };
    let got_q = qk_rope_write(&on(&t.q)?, &on(&t.k)?, &on(&t.v)?, &fused)?;
    t.error(&got_q, &k_pool, &v_pool)
}

/// Whether the decoder of `cfg` may use the kernel on `device` in `dtype`: a CUDA
/// device, and `self_test` passing there on the model's shapes.
pub fn usable(cfg: &TextConfig, dtype: DType, device: &Device) -> bool {
    let (heads, kv_heads, d) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    );
    crate::ops::kernel_usable("qk-rope-write", device, dtype, || {
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

/// The shapes of the kernel's operands, in its argument order.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct Operands<'a> {
    q: &'a [usize],
    k: &'a [usize],
    v: &'a [usize],
    q_w: &'a [usize],
    k_w: &'a [usize],
    cos: &'a [usize],
    sin: &'a [usize],
    slots: &'a [usize],
    k_pool: &'a [usize],
    v_pool: &'a [usize],
}

/// The launch of `qk_norm_rope_write_*`: a block per (token, head), q's heads then
/// k's, of half a head's width in whole warps; scalars `(heads, kv_heads, head_dim,
/// eps)`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn qk_rope_launch(
    dtype: DType,
    o: &Operands<'_>,
    eps: f32,
) -> Result<Launch<(i32, i32, i32, f32)>> {
    let (&[tokens, heads, d], &[_, kv_heads, _]) = (o.q, o.k) else {
        candle_core::bail!("fused q/k RoPE write: q {:?}, k {:?}", o.q, o.k);
    };
    let pool_ok = |p: &[usize]| p.len() == 2 && p[1] == kv_heads * d;
    let fits = d > 0
        && d.is_multiple_of(2)
        && o.k == [tokens, kv_heads, d]
        && o.v == o.k
        && o.q_w == [d]
        && o.k_w == [d]
        && o.cos == [tokens, d / 2]
        && o.sin == o.cos
        && o.slots == [tokens]
        && pool_ok(o.k_pool)
        && o.v_pool == o.k_pool
        && tokens > 0;
    if !fits {
        candle_core::bail!("fused q/k RoPE write: operands do not fit q {:?}", o.q);
    }
    Ok(Launch {
        kernel: format!("qk_norm_rope_write_{}", dtype_suffix(dtype)?),
        grid: (tokens as u32, (heads + kv_heads) as u32, 1),
        block: (((d / 2).div_ceil(32) * 32) as u32, 1, 1),
        scalars: (heads as i32, kv_heads as i32, d as i32, eps),
    })
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaView, DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{
        CpuStorage, CudaStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor,
        WithDType,
    };
    use half::{bf16, f16};

    use crate::launch::Scalars;
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
        fn launch<T: CudaDType + DeviceRepr + WithDType>(
            &self,
            q: &CudaStorage,
            ql: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let plan = super::qk_rope_launch(
                T::DTYPE,
                &super::Operands {
                    q: ql.shape().dims(),
                    k: self.k.dims(),
                    v: self.v.dims(),
                    q_w: self.q_w.dims(),
                    k_w: self.k_w.dims(),
                    cos: self.cos.dims(),
                    sin: self.sin.dims(),
                    slots: self.slots.dims(),
                    k_pool: self.k_pool.dims(),
                    v_pool: self.v_pool.dims(),
                },
                self.eps,
            )?;
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
            let out = unsafe { dev.alloc::<T>(ql.shape().elem_count())? };
            let func = dev.get_or_load_custom_func(&plan.kernel, "medgemma_qk_rope_write", PTX)?;
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
            plan.scalars.push(&mut b);
            unsafe { b.launch(plan.config()) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), ql.shape().clone()))
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
                DType::BF16 => self.launch::<bf16>(q, ql),
                DType::F16 => self.launch::<f16>(q, ql),
                DType::F32 => self.launch::<f32>(q, ql),
                other => candle_core::bail!("fused q/k RoPE write: unsupported dtype {other:?}"),
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
        // Gemma 3's head widths (4B: 256, 27B: 128), MQA, and a head narrower than a
        // warp's pairs.
        for (heads, kv_heads, d) in [(8, 4, 256), (4, 1, 128), (2, 2, 20)] {
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                let t = Trial::new(dtype, heads, kv_heads, d)?;
                let slots = Tensor::new(t.slots.as_slice(), &Device::Cpu)?;
                let pool = (t.pool_slots, kv_heads * d);
                let (kp, vp) = (
                    Dev::zeros(dtype, pool.0 * pool.1)?,
                    Dev::zeros(dtype, pool.0 * pool.1)?,
                );
                let ops = Operands {
                    q: t.q.dims(),
                    k: t.k.dims(),
                    v: t.v.dims(),
                    q_w: t.q_w.dims(),
                    k_w: t.k_w.dims(),
                    cos: t.rope.cos.dims(),
                    sin: t.rope.sin.dims(),
                    slots: slots.dims(),
                    k_pool: &[pool.0, pool.1],
                    v_pool: &[pool.0, pool.1],
                };
                let plan = qk_rope_launch(dtype, &ops, t.eps)?;
                let ins = [
                    &t.q,
                    &t.k,
                    &t.v,
                    &t.q_w,
                    &t.k_w,
                    &t.rope.cos,
                    &t.rope.sin,
                    &slots,
                ]
                .map(Dev::of);
                let ins = ins.into_iter().collect::<Result<Vec<_>>>()?;
                let out = Dev::zeros(dtype, t.q.elem_count())?;
                let mut buffers: Vec<&Dev> = ins.iter().collect();
                buffers.extend([&kp, &vp, &out]);
                run(&plan, &buffers)?;
                let e = t.error(
                    &out.tensor(t.q.dims())?,
                    &kp.tensor(pool)?,
                    &vp.tensor(pool)?,
                )?;
                let tol = crate::ops::fused_tolerance(dtype);
                assert!(e <= tol, "{heads}/{kv_heads} heads of {d}, {dtype:?}: {e}");
            }
        }
        Ok(())
    }
}
