//! The vision tower's biased products finished in one pass over their output, as
//! CUDA kernels (kernels/bias_epilogue.cu), and the same as candle ops on any
//! device (`reference`):
//! - `gelu`: `gelu_tanh(x + bias)` (fc1 and its activation);
//! - `residual`: `res + (x + bias)` (out_proj or fc2, and the residual);
//! - `qkv_heads`: the stacked q/k/v product plus its bias, split into
//!   `[3, images, heads, patches, head_dim]` with the queries scaled.
//!
//! At 896 px each of them replaces two or three passes over a `[4096, 1152..4304]`
//! activation, the broadcast bias add being candle's slowest (a per-element index
//! computation and a host-to-device copy of the strides).
//!
//! The tower uses the kernels only after `self_test` passed on the device at load
//! (`usable`), for widths `fits` takes.

use candle_core::{DType, Device, Result, Tensor};

use crate::launch::{dtype_suffix, Launch};

/// `gelu_tanh(x + bias)`: `x` `[rows, cols]`, `bias` `[cols]`.
pub fn gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    epilogue(x, bias, x, Mode::Gelu)
}

/// `res + (x + bias)`: `x` `[rows, cols]`, `bias` `[cols]`, `res` `[rows, cols]`
/// or `[rows / k, cols]` repeated `k` times (positions added to every image's
/// patches).
pub fn residual(x: &Tensor, bias: &Tensor, res: &Tensor) -> Result<Tensor> {
    epilogue(x, bias, res, Mode::Residual)
}

/// `x` `[images * patches, 3 * heads * head_dim]` (q, k, v) plus `bias` →
/// q, k and v, each `[images, heads, patches, head_dim]`, the queries times `scale`.
pub fn qkv_heads(x: &Tensor, bias: &Tensor, heads: Heads) -> Result<(Tensor, Tensor, Tensor)> {
    #[cfg(feature = "cuda")]
    {
        let t = aligned(x)?.apply_op2_no_bwd(&aligned(bias)?, &cuda::QkvHeads(heads))?;
        Ok((t.get(0)?, t.get(1)?, t.get(2)?))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (x, bias, heads);
        candle_core::bail!("the q/k/v heads kernel needs a CUDA build")
    }
}

/// How `qkv_heads` splits a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heads {
    pub patches: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub scale: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Gelu = 0,
    Residual = 1,
}

/// `bias_epilogue_*`'s `(vecs, row_vecs, res_vecs, mode)`.
type EpilogueScalars = (usize, i32, usize, i32);
/// `qkv_heads_*`'s `(vecs, patches, heads, head_dim, scale)`.
type QkvScalars = (usize, i32, i32, i32, f32);

/// Threads a block of the grid-stride kernels.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
const THREADS: u32 = 256;

/// A grid-stride launch of `kernel` over `vecs` 16-byte vectors.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn grid_stride<S>(kernel: String, vecs: usize, scalars: S) -> Launch<S> {
    let blocks = vecs.div_ceil(THREADS as usize).clamp(1, 65_535) as u32;
    Launch {
        kernel,
        grid: (blocks, 1, 1),
        block: (THREADS, 1, 1),
        scalars,
    }
}

/// `(rows, cols)` of `x` when `bias` is `[cols]` and cols a whole number of 16-byte
/// vectors of `dtype`, with the vector's length.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn rows_cols(dtype: DType, x: &[usize], bias: &[usize]) -> Result<(usize, usize, usize)> {
    let per_vector = 16 / dtype.size_in_bytes().max(1);
    match (x, bias) {
        (&[rows, cols], &[b]) if b == cols && cols.is_multiple_of(per_vector) => {
            Ok((rows, cols, per_vector))
        }
        _ => candle_core::bail!("bias epilogue: {x:?} with bias {bias:?}"),
    }
}

/// The launch of `bias_epilogue_*` on `x` `[rows, cols]`, `bias` `[cols]` and `res`
/// `[res_rows, cols]`, `res_rows` dividing `rows`; scalars `(vecs, row_vecs,
/// res_vecs, mode)`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn epilogue_launch(
    dtype: DType,
    x: &[usize],
    bias: &[usize],
    res: &[usize],
    mode: Mode,
) -> Result<Launch<EpilogueScalars>> {
    let (rows, cols, per_vector) = rows_cols(dtype, x, bias)?;
    let res_rows = match *res {
        [r, c] if c == cols && (r == rows || (r > 0 && rows.is_multiple_of(r))) => r,
        _ => candle_core::bail!("bias epilogue: residual {res:?} for {x:?}"),
    };
    let row_vecs = cols / per_vector;
    let scalars = (
        rows * row_vecs,
        row_vecs as i32,
        res_rows * row_vecs,
        mode as i32,
    );
    let kernel = format!("bias_epilogue_{}", dtype_suffix(dtype)?);
    Ok(grid_stride(kernel, rows * row_vecs, scalars))
}

/// The launch of `qkv_heads_*` on `x` `[rows, 3 * heads * head_dim]` and its bias;
/// scalars `(vecs, patches, heads, head_dim, scale)`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn qkv_launch(dtype: DType, x: &[usize], bias: &[usize], h: Heads) -> Result<Launch<QkvScalars>> {
    let (rows, cols, per_vector) = rows_cols(dtype, x, bias)?;
    let fits = cols == 3 * h.heads * h.head_dim
        && h.head_dim.is_multiple_of(per_vector)
        && h.patches > 0
        && rows.is_multiple_of(h.patches);
    if !fits {
        candle_core::bail!("q/k/v heads: [{rows}, {cols}] does not split as {h:?}");
    }
    let vecs = rows * cols / per_vector;
    let (p, n, d) = (h.patches as i32, h.heads as i32, h.head_dim as i32);
    let kernel = format!("qkv_heads_{}", dtype_suffix(dtype)?);
    Ok(grid_stride(kernel, vecs, (vecs, p, n, d, h.scale as f32)))
}

#[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
fn epilogue(x: &Tensor, bias: &Tensor, res: &Tensor, mode: Mode) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    {
        aligned(x)?.apply_op3_no_bwd(&aligned(bias)?, &aligned(res)?, &cuda::Epilogue(mode))
    }
    #[cfg(not(feature = "cuda"))]
    {
        candle_core::bail!("the bias epilogue kernels need a CUDA build")
    }
}

/// `t` contiguous and starting on 16 bytes, as the kernels read it (a copy only
/// when it is not already).
#[cfg(feature = "cuda")]
fn aligned(t: &Tensor) -> Result<Tensor> {
    let offset_bytes = t.layout().start_offset() * t.dtype().size_in_bytes();
    if t.is_contiguous() && offset_bytes.is_multiple_of(16) {
        Ok(t.clone())
    } else {
        // A fresh buffer (`copy` would keep the offset).
        t.force_contiguous()
    }
}

/// The vision tower's widths the kernels must take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Widths {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
}

/// Whether the kernels take the tower's widths in `dtype`: every row, and every
/// head, a whole number of 16-byte vectors.
pub fn fits(w: Widths, dtype: DType) -> bool {
    let per_vector = 16 / dtype.size_in_bytes().max(1);
    let whole = |n: usize| n > 0 && n.is_multiple_of(per_vector);
    matches!(dtype, DType::BF16 | DType::F16 | DType::F32)
        && w.heads > 0
        && w.hidden.is_multiple_of(w.heads)
        && whole(w.hidden / w.heads)
        && whole(w.intermediate)
}

/// Worst relative error of the three kernels on `device` against `reference` on
/// the CPU, on a few random rows of the tower's widths (two images of three
/// patches for the q/k/v split).
pub fn self_test(device: &Device, dtype: DType, w: Widths) -> Result<f64> {
    if !fits(w, dtype) {
        candle_core::bail!("bias epilogue self-test: widths {w:?} do not fit {dtype:?}");
    }
    let cpu = &Device::Cpu;
    let rand = |shape: (usize, usize)| Tensor::randn(0f32, 2.0, shape, cpu)?.to_dtype(dtype);
    let bias = |n: usize| Tensor::randn(0f32, 1.0, n, cpu)?.to_dtype(dtype);
    let on = |t: &Tensor| t.to_device(device);
    let err = crate::ops::max_relative_error;
    let rows = 6;

    let (x, b) = (rand((rows, w.intermediate))?, bias(w.intermediate)?);
    let mut worst = err(&gelu(&on(&x)?, &on(&b)?)?, &reference::gelu(&x, &b)?)?;

    let (x, b, r) = (
        rand((rows, w.hidden))?,
        bias(w.hidden)?,
        rand((rows, w.hidden))?,
    );
    let got = residual(&on(&x)?, &on(&b)?, &on(&r)?)?;
    worst = worst.max(err(&got, &reference::residual(&x, &b, &r)?)?);
    let r = r.narrow(0, 0, rows / 2)?;
    let got = residual(&on(&x)?, &on(&b)?, &on(&r)?)?;
    worst = worst.max(err(&got, &reference::residual(&x, &b, &r)?)?);

    let heads = Heads {
        patches: rows / 2,
        heads: w.heads,
        head_dim: w.hidden / w.heads,
        scale: ((w.hidden / w.heads) as f64).powf(-0.5),
    };
    let (x, b) = (rand((rows, 3 * w.hidden))?, bias(3 * w.hidden)?);
    let got = qkv_heads(&on(&x)?, &on(&b)?, heads)?;
    let want = reference::qkv_heads(&x, &b, heads)?;
    for (g, w) in [(&got.0, &want.0), (&got.1, &want.1), (&got.2, &want.2)] {
        if g.dims() != w.dims() {
            candle_core::bail!("q/k/v heads: shape {:?}, expected {:?}", g.dims(), w.dims());
        }
        worst = worst.max(err(g, w)?);
    }
    Ok(worst)
}

/// Whether the tower may use the kernels on `device` in `dtype`.
pub fn usable(device: &Device, dtype: DType, w: Widths) -> bool {
    fits(w, dtype)
        && crate::ops::kernel_usable("bias-epilogue", device, dtype, || {
            self_test(device, dtype, w)
        })
}

/// The same as candle ops, on any device.
pub mod reference {
    use candle_core::{DType, Result, Tensor};

    use super::Heads;

    /// `gelu_tanh(x + bias)`, the activation in f32 and rounded once.
    pub fn gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        gelu_tanh(&x.broadcast_add(bias)?)
    }

    /// `gelu_tanh` computed in f32 and rounded once to `x`'s dtype, as PyTorch
    /// does (candle's own half-precision gelu rounds its intermediate steps).
    pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() {
            return crate::cpu_gelu::gelu(x);
        }
        x.to_dtype(DType::F32)?.gelu()?.to_dtype(x.dtype())
    }

    /// `res + (x + bias)`, `res` repeated over `x`'s rows as `super::residual`
    /// takes it.
    pub fn residual(x: &Tensor, bias: &Tensor, res: &Tensor) -> Result<Tensor> {
        let ((rows, cols), (res_rows, _)) = (x.dims2()?, res.dims2()?);
        if res_rows == rows {
            return res + x.broadcast_add(bias)?;
        }
        if res_rows == 0 || !rows.is_multiple_of(res_rows) {
            candle_core::bail!("residual of {res_rows} rows for {rows}");
        }
        let x = x
            .broadcast_add(bias)?
            .reshape((rows / res_rows, res_rows, cols))?;
        x.broadcast_add(res)?.reshape((rows, cols))
    }

    /// See `super::qkv_heads`; the queries are scaled in f32 and rounded once.
    pub fn qkv_heads(x: &Tensor, bias: &Tensor, h: Heads) -> Result<(Tensor, Tensor, Tensor)> {
        let (rows, _) = x.dims2()?;
        let images = rows / h.patches.max(1);
        let split = x
            .broadcast_add(bias)?
            .reshape((images, h.patches, 3, h.heads, h.head_dim))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let q = split.get(0)?;
        let q = (q.to_dtype(DType::F32)? * h.scale)?.to_dtype(q.dtype())?;
        Ok((q, split.get(1)?, split.get(2)?))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{
        CpuStorage, CudaStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, WithDType,
    };
    use half::{bf16, f16};

    use super::{Heads, Mode};
    use crate::launch::Scalars;
    use crate::paged_decode::cuda_view;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/bias_epilogue.ptx"));

    pub struct Epilogue(pub Mode);

    impl Epilogue {
        fn launch<T: CudaDType + DeviceRepr + WithDType>(
            &self,
            x: (&CudaStorage, &Layout),
            bias: (&CudaStorage, &Layout),
            res: (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            let dims = |l: &Layout| l.shape().dims().to_vec();
            let (xd, bd, rd) = (dims(x.1), dims(bias.1), dims(res.1));
            let plan = super::epilogue_launch(T::DTYPE, &xd, &bd, &rd, self.0)?;
            let dev = x.0.device.clone();
            let n = x.1.shape().elem_count();
            let out = unsafe { dev.alloc::<T>(n)? };
            let func = dev.get_or_load_custom_func(&plan.kernel, "medgemma_bias_epilogue", PTX)?;
            let (xs, bs, rs) = (
                cuda_view::<T>(x)?,
                cuda_view::<T>(bias)?,
                cuda_view::<T>(res)?,
            );
            let mut b = func.builder();
            b.arg(&xs).arg(&bs).arg(&rs).arg(&out);
            plan.scalars.push(&mut b);
            unsafe { b.launch(plan.config()) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), x.1.shape().clone()))
        }
    }

    impl CustomOp3 for Epilogue {
        fn name(&self) -> &'static str {
            "bias-epilogue"
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
            candle_core::bail!("the bias epilogue kernels run on CUDA only")
        }

        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            xl: &Layout,
            b: &CudaStorage,
            bl: &Layout,
            r: &CudaStorage,
            rl: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            match x.dtype() {
                DType::BF16 => self.launch::<bf16>((x, xl), (b, bl), (r, rl)),
                DType::F16 => self.launch::<f16>((x, xl), (b, bl), (r, rl)),
                DType::F32 => self.launch::<f32>((x, xl), (b, bl), (r, rl)),
                other => candle_core::bail!("bias epilogue: unsupported dtype {other:?}"),
            }
        }
    }

    pub struct QkvHeads(pub Heads);

    impl QkvHeads {
        fn launch<T: CudaDType + DeviceRepr + WithDType>(
            &self,
            x: (&CudaStorage, &Layout),
            bias: (&CudaStorage, &Layout),
        ) -> Result<(CudaStorage, Shape)> {
            let h = self.0;
            let (xd, bd) = (x.1.shape().dims(), bias.1.shape().dims());
            let plan = super::qkv_launch(T::DTYPE, xd, bd, h)?;
            let dev = x.0.device.clone();
            let rows = xd[0];
            let out = unsafe { dev.alloc::<T>(x.1.shape().elem_count())? };
            let func = dev.get_or_load_custom_func(&plan.kernel, "medgemma_bias_epilogue", PTX)?;
            let (xs, bs) = (cuda_view::<T>(x)?, cuda_view::<T>(bias)?);
            let mut b = func.builder();
            b.arg(&xs).arg(&bs).arg(&out);
            plan.scalars.push(&mut b);
            unsafe { b.launch(plan.config()) }.w()?;
            let shape = (3, rows / h.patches, h.heads, h.patches, h.head_dim);
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(shape)))
        }
    }

    impl CustomOp2 for QkvHeads {
        fn name(&self) -> &'static str {
            "qkv-heads"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            candle_core::bail!("the q/k/v heads kernel runs on CUDA only")
        }

        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            xl: &Layout,
            b: &CudaStorage,
            bl: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            match x.dtype() {
                DType::BF16 => self.launch::<bf16>((x, xl), (b, bl)),
                DType::F16 => self.launch::<f16>((x, xl), (b, bl)),
                DType::F32 => self.launch::<f32>((x, xl), (b, bl)),
                other => candle_core::bail!("q/k/v heads: unsupported dtype {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
