//! Attention of a step's packed query rows over the paged KV pool, each row with
//! its own run of keys, as one CUDA kernel (kernels/paged_rows.cu): every prefill
//! chunk and decode of a step in one launch per layer. The per-sequence path
//! (`Attention::forward`'s loop: gather, mask, two products and a softmax per
//! sequence, about a dozen launches each, plus a host-built mask) stays for long
//! prompts, where its matrix products beat this kernel's per-row reads.
//!
//! The kernel is used only after `self_test` passed on the device at load. The op
//! also runs on the CPU (`reference`), so that the tests can check the rows the
//! pool plans against the masked per-sequence path (`kv.rs`).

use candle_core::backend::BackendStorage;
use candle_core::{DType, Device, Result, Tensor};

use crate::launch::{dtype_suffix, Launch};

/// One row: the packed token whose query it is, and the run `[begin, end)` of the
/// step's slot list holding the keys it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub token: u32,
    pub begin: u32,
    pub end: u32,
}

impl Row {
    /// The kernel's `[rows, 4]` u32 layout.
    pub fn to_meta(rows: &[Row], device: &Device) -> Result<Tensor> {
        let flat: Vec<u32> = rows
            .iter()
            .flat_map(|r| [r.token, r.begin, r.end, 0])
            .collect();
        Tensor::from_vec(flat, (rows.len(), 4), device)
    }
}

/// Whether the kernel takes heads of `head_dim` on `device`: CUDA, whole warps of
/// at most eight lanes' values each.
pub fn serves(device: &Device, head_dim: usize) -> bool {
    cfg!(feature = "cuda") && device.is_cuda() && head_dim.is_multiple_of(32) && head_dim <= 256
}

/// `q` `[tokens, heads, head_dim]`, pools `[pool slots, kv_heads * head_dim]`,
/// `slots` `[n]` u32, `meta` `[rows, 4]` u32 (`Row::to_meta`) → `[tokens, heads,
/// head_dim]`, each row's token attending to its run of keys (tokens without a row
/// are zero).
pub fn paged_rows(
    q: &Tensor,
    pools: (&Tensor, &Tensor),
    slots: &Tensor,
    meta: &Tensor,
    kv_heads: usize,
    scale: f32,
) -> Result<Tensor> {
    let op = Op {
        slots: slots.contiguous()?,
        meta: meta.contiguous()?,
        kv_heads,
        scale,
    };
    q.contiguous()?.apply_op3_no_bwd(pools.0, pools.1, &op)
}

/// `paged_rows_*`'s scalars: `(heads, kv_heads, head_dim, scale)`.
type RowsScalars = (i32, i32, i32, f32);

/// The launch of `paged_rows_*`: a block of 256 threads per (row, head).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn paged_rows_launch(
    dtype: DType,
    q: &[usize],
    pool: &[usize],
    meta: &[usize],
    kv_heads: usize,
    scale: f32,
) -> Result<Launch<RowsScalars>> {
    let (&[_, heads, head_dim], &[_, width], &[rows, 4]) = (q, pool, meta) else {
        candle_core::bail!("paged rows: q {q:?}, pools {pool:?}, meta {meta:?}");
    };
    let fits = kv_heads > 0
        && heads.is_multiple_of(kv_heads)
        && head_dim.is_multiple_of(32)
        && (32..=256).contains(&head_dim)
        && width == kv_heads * head_dim
        && rows > 0
        && heads <= 65_535;
    if !fits {
        candle_core::bail!("paged rows: q {q:?}, pools {pool:?}, {kv_heads} kv heads");
    }
    Ok(Launch {
        kernel: format!("paged_rows_{}", dtype_suffix(dtype)?),
        grid: (rows as u32, heads as u32, 1),
        block: (256, 1, 1),
        scalars: (heads as i32, kv_heads as i32, head_dim as i32, scale),
    })
}

/// The rows' attention on the host, rounding as the kernel does: each score
/// rounded to `q`'s dtype, scaled and rounded again, probabilities in f32.
pub fn reference(
    q: &Tensor,
    pools: (&Tensor, &Tensor),
    slots: &[u32],
    rows: &[Row],
    kv_heads: usize,
    scale: f32,
) -> Result<Tensor> {
    let (tokens, heads, d) = q.dims3()?;
    let flat = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
    let host = Host {
        q: &flat(q)?,
        k: &flat(pools.0)?,
        v: &flat(pools.1)?,
        dtype: q.dtype(),
        heads,
        kv_heads,
        head_dim: d,
        scale,
    };
    let out = host.attend(tokens, slots, rows)?;
    Tensor::from_vec(out, (tokens, heads, d), q.device())?.to_dtype(q.dtype())
}

/// The host computation over f32 copies of the operands.
struct Host<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    dtype: DType,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f32,
}

impl Host<'_> {
    fn round(&self, x: f32) -> f32 {
        match self.dtype {
            DType::BF16 => half::bf16::from_f32(x).to_f32(),
            DType::F16 => half::f16::from_f32(x).to_f32(),
            _ => x,
        }
    }

    /// `[tokens * heads * head_dim]`, each row's token attending to its keys.
    fn attend(&self, tokens: usize, slots: &[u32], rows: &[Row]) -> Result<Vec<f32>> {
        let (heads, d) = (self.heads, self.head_dim);
        let stride = self.kv_heads * d;
        let group = heads / self.kv_heads.max(1);
        let bad = |what: String| candle_core::Error::Msg(format!("paged rows: {what}"));
        let mut out = vec![0f32; tokens * heads * d];
        for row in rows {
            let keys = slots
                .get(row.begin as usize..row.end as usize)
                .ok_or_else(|| bad(format!("{row:?} beyond {} slots", slots.len())))?;
            if keys
                .iter()
                .any(|&s| (s as usize + 1) * stride > self.k.len())
            {
                return Err(bad(format!("a slot of {row:?} beyond the pool")));
            }
            for h in 0..heads {
                let at = (row.token as usize * heads + h) * d;
                let qh = self
                    .q
                    .get(at..at + d)
                    .ok_or_else(|| bad(format!("token {} beyond q", row.token)))?;
                let base = |slot: u32| slot as usize * stride + (h / group) * d;
                let score = |s: u32| {
                    let k = &self.k[base(s)..base(s) + d];
                    let dot: f32 = qh.iter().zip(k).map(|(a, b)| a * b).sum();
                    self.round(self.round(dot) * self.scale)
                };
                let scores: Vec<f32> = keys.iter().map(|&s| score(s)).collect();
                let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let p: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
                let total: f32 = p.iter().sum();
                for (i, o) in out[at..at + d].iter_mut().enumerate() {
                    let a: f32 = keys
                        .iter()
                        .zip(&p)
                        .map(|(&s, w)| w * self.v[base(s) + i])
                        .sum();
                    *o = self.round(if total > 0.0 { a / total } else { 0.0 });
                }
            }
        }
        Ok(out)
    }
}

/// A CPU operand's elements as f32, from its layout's start (contiguous).
fn host_f32(s: &candle_core::CpuStorage, l: &candle_core::Layout) -> Result<Vec<f32>> {
    use candle_core::CpuStorage as C;
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("paged rows: a non-contiguous operand");
    };
    Ok(match s {
        C::F32(v) => v[start..end].to_vec(),
        C::BF16(v) => v[start..end].iter().map(|x| x.to_f32()).collect(),
        C::F16(v) => v[start..end].iter().map(|x| x.to_f32()).collect(),
        _ => candle_core::bail!("paged rows: unsupported dtype {:?}", s.dtype()),
    })
}

/// Worst relative error of the kernel on `device` against `reference` on the CPU,
/// on random inputs: three sequences' rows (a decode, a prompt, a chunk with cached
/// keys), their slots scattered over the pool.
pub fn self_test(
    device: &Device,
    dtype: DType,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Result<f64> {
    let t = Trial::new(dtype, heads, kv_heads, head_dim)?;
    let on = |x: &Tensor| x.to_device(device);
    let got = paged_rows(
        &on(&t.q)?,
        (&on(&t.k)?, &on(&t.v)?),
        &Tensor::new(t.slots.as_slice(), device)?,
        &Row::to_meta(&t.rows, device)?,
        kv_heads,
        t.scale,
    )?;
    crate::ops::max_relative_error(&got, &t.want()?)
}

/// Whether a step's attention may go through the kernel on `device` in `dtype`.
pub fn usable(
    device: &Device,
    dtype: DType,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> bool {
    serves(device, head_dim)
        && crate::ops::kernel_usable("paged-rows", device, dtype, || {
            self_test(device, dtype, heads, kv_heads, head_dim)
        })
}

/// Random inputs of the self-test (and of the emulated test).
struct Trial {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    slots: Vec<u32>,
    rows: Vec<Row>,
    kv_heads: usize,
    scale: f32,
}

impl Trial {
    fn new(dtype: DType, heads: usize, kv_heads: usize, head_dim: usize) -> Result<Self> {
        let cpu = &Device::Cpu;
        let pool_slots = 400;
        // (new tokens, keys before them): a decode, a prompt, a chunk after a prefix
        // of more keys than a block's warps take in one pass.
        let seqs = [(1usize, 9usize), (12, 0), (7, 40)];
        let (mut slots, mut rows, mut token) = (Vec::new(), Vec::new(), 0u32);
        for (s, &(new, cached)) in seqs.iter().enumerate() {
            let begin = slots.len() as u32;
            let keys = cached + new;
            slots.extend((0..keys).map(|i| ((i * 37 + s * 101) % pool_slots) as u32));
            for i in 0..new {
                // Causal, and the middle sequence's first three tokens one image.
                let visible = if s == 1 && i < 3 { 3 } else { cached + i + 1 };
                rows.push(Row {
                    token,
                    begin,
                    end: begin + visible as u32,
                });
                token += 1;
            }
        }
        let r = |shape: (usize, usize)| Tensor::randn(0f32, 1.0, shape, cpu)?.to_dtype(dtype);
        Ok(Self {
            q: r((token as usize, heads * head_dim))?.reshape((token as usize, heads, head_dim))?,
            k: r((pool_slots, kv_heads * head_dim))?,
            v: r((pool_slots, kv_heads * head_dim))?,
            slots,
            rows,
            kv_heads,
            scale: (head_dim as f32).powf(-0.5),
        })
    }

    fn want(&self) -> Result<Tensor> {
        reference(
            &self.q,
            (&self.k, &self.v),
            &self.slots,
            &self.rows,
            self.kv_heads,
            self.scale,
        )
    }
}

/// The op: `q` and the pools as operands, the slot list and rows riding along.
struct Op {
    slots: Tensor,
    meta: Tensor,
    kv_heads: usize,
    scale: f32,
}

impl candle_core::CustomOp3 for Op {
    fn name(&self) -> &'static str {
        "paged-rows-attention"
    }

    fn cpu_fwd(
        &self,
        q: &candle_core::CpuStorage,
        ql: &candle_core::Layout,
        k: &candle_core::CpuStorage,
        kl: &candle_core::Layout,
        v: &candle_core::CpuStorage,
        vl: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage as C;
        let (tokens, heads, head_dim) = ql.shape().dims3()?;
        let slots = self.slots.to_vec1::<u32>()?;
        let rows: Vec<Row> = self
            .meta
            .to_vec2::<u32>()?
            .into_iter()
            .map(|m| Row {
                token: m[0],
                begin: m[1],
                end: m[2],
            })
            .collect();
        let host = Host {
            q: &host_f32(q, ql)?,
            k: &host_f32(k, kl)?,
            v: &host_f32(v, vl)?,
            dtype: q.dtype(),
            heads,
            kv_heads: self.kv_heads,
            head_dim,
            scale: self.scale,
        };
        let out = host.attend(tokens, &slots, &rows)?;
        let storage = match q.dtype() {
            DType::BF16 => C::BF16(out.into_iter().map(half::bf16::from_f32).collect()),
            DType::F16 => C::F16(out.into_iter().map(half::f16::from_f32).collect()),
            _ => C::F32(out),
        };
        Ok((storage, ql.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        q: &candle_core::CudaStorage,
        ql: &candle_core::Layout,
        k: &candle_core::CudaStorage,
        kl: &candle_core::Layout,
        v: &candle_core::CudaStorage,
        vl: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        cuda::launch(self, (q, ql), (k, kl), (v, vl))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg, ValidAsZeroBits};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CudaStorage, DType, Layout, Result, Shape, Storage, WithDType};
    use half::{bf16, f16};

    use crate::launch::Scalars;
    use crate::paged_decode::cuda_view;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/paged_rows.ptx"));

    type Operand<'a> = (&'a CudaStorage, &'a Layout);

    pub(super) fn launch(
        op: &super::Op,
        q: Operand<'_>,
        k: Operand<'_>,
        v: Operand<'_>,
    ) -> Result<(CudaStorage, Shape)> {
        if !(q.1.is_contiguous() && k.1.is_contiguous() && v.1.is_contiguous()) {
            candle_core::bail!("paged rows: q and the pools must be contiguous");
        }
        match q.0.dtype() {
            DType::BF16 => typed::<bf16>(op, q, k, v),
            DType::F16 => typed::<f16>(op, q, k, v),
            DType::F32 => typed::<f32>(op, q, k, v),
            other => candle_core::bail!("paged rows: unsupported dtype {other:?}"),
        }
    }

    fn typed<T: CudaDType + DeviceRepr + ValidAsZeroBits + WithDType>(
        op: &super::Op,
        q: Operand<'_>,
        k: Operand<'_>,
        v: Operand<'_>,
    ) -> Result<(CudaStorage, Shape)> {
        let plan = super::paged_rows_launch(
            T::DTYPE,
            q.1.shape().dims(),
            k.1.shape().dims(),
            op.meta.dims(),
            op.kv_heads,
            op.scale,
        )?;
        if v.1.shape() != k.1.shape() {
            candle_core::bail!(
                "paged rows: key pool {:?}, value pool {:?}",
                k.1.shape(),
                v.1.shape()
            );
        }
        let dev = q.0.device.clone();
        let (slots_st, slots_l) = op.slots.storage_and_layout();
        let (meta_st, meta_l) = op.meta.storage_and_layout();
        let (Storage::Cuda(slots_c), Storage::Cuda(meta_c)) = (&*slots_st, &*meta_st) else {
            candle_core::bail!("paged rows: the slots and rows are not on the GPU")
        };
        let slots = cuda_view::<u32>((slots_c, slots_l))?;
        let meta = cuda_view::<u32>((meta_c, meta_l))?;
        let (qs, ks, vs) = (cuda_view::<T>(q)?, cuda_view::<T>(k)?, cuda_view::<T>(v)?);
        let out = dev.alloc_zeros::<T>(q.1.shape().elem_count())?;
        let func = dev.get_or_load_custom_func(&plan.kernel, "medgemma_paged_rows", PTX)?;
        let mut b = func.builder();
        b.arg(&qs)
            .arg(&ks)
            .arg(&vs)
            .arg(&slots)
            .arg(&meta)
            .arg(&out);
        plan.scalars.push(&mut b);
        unsafe { b.launch(plan.config()) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), q.1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulated::{run, Dev};

    #[test]
    fn the_kernel_with_its_launch_matches_the_reference_when_emulated() -> Result<()> {
        for (heads, kv_heads, d) in [(8, 4, 256), (4, 1, 32)] {
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                let t = Trial::new(dtype, heads, kv_heads, d)?;
                let meta = Row::to_meta(&t.rows, &Device::Cpu)?;
                let plan = paged_rows_launch(
                    dtype,
                    t.q.dims(),
                    t.k.dims(),
                    meta.dims(),
                    kv_heads,
                    t.scale,
                )?;
                let slots = Tensor::new(t.slots.as_slice(), &Device::Cpu)?;
                let out = Dev::zeros(dtype, t.q.elem_count())?;
                let ins = [&t.q, &t.k, &t.v, &slots, &meta].map(Dev::of);
                let ins = ins.into_iter().collect::<Result<Vec<_>>>()?;
                let mut buffers: Vec<&Dev> = ins.iter().collect();
                buffers.push(&out);
                run(&plan, &buffers)?;
                let e = crate::ops::max_relative_error(&out.tensor(t.q.dims())?, &t.want()?)?;
                let tol = crate::ops::fused_tolerance(dtype);
                assert!(e <= tol, "{heads}/{kv_heads} heads of {d}, {dtype:?}: {e}");
            }
        }
        Ok(())
    }

    #[test]
    fn the_reference_is_the_masked_softmax_attention() -> Result<()> {
        // One row over keys 1..4 of a pool: the plain formula, in f32.
        let cpu = &Device::Cpu;
        let (heads, d) = (2, 32);
        let q = Tensor::randn(0f32, 1.0, (1, heads, d), cpu)?;
        let k = Tensor::randn(0f32, 1.0, (6, d), cpu)?;
        let v = Tensor::randn(0f32, 1.0, (6, d), cpu)?;
        let slots = [5u32, 0, 3, 2, 4];
        let row = Row {
            token: 0,
            begin: 1,
            end: 4,
        };
        let got = paged_rows(
            &q,
            (&k, &v),
            &Tensor::new(&slots, cpu)?,
            &Row::to_meta(&[row], cpu)?,
            1,
            0.5,
        )?;
        let idx = Tensor::new(&slots[1..4], cpu)?;
        let (ks, vs) = (k.index_select(&idx, 0)?, v.index_select(&idx, 0)?);
        let scores = (q.get(0)?.matmul(&ks.t()?)? * 0.5)?;
        let want = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&vs)?;
        let e = crate::ops::max_relative_error(&got.get(0)?, &want)?;
        assert!(e < 1e-5, "{e}");
        Ok(())
    }
}
