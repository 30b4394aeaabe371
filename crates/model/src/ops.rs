//! Small numerics shared by the text and vision attention.

use candle_core::{DType, Result, Tensor};

/// Softmax over the last dimension computed in f32 and returned in `x`'s dtype,
/// as transformers does (`softmax(x, dtype=float32).to(x.dtype)`). On CUDA the
/// softmax kernel already accumulates half-precision input in f32 and rounds once,
/// so the two casts (and their full-size copies) are skipped there.
pub fn softmax_in_f32(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cuda() || x.dtype() == DType::F32 {
        return candle_nn::ops::softmax_last_dim(x);
    }
    candle_nn::ops::softmax_last_dim(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())
}

/// max |a - b| / max |b|, in f32 on the CPU: how kernels are compared with their
/// references.
pub fn max_relative_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    let cpu = &candle_core::Device::Cpu;
    let a = a.to_dtype(DType::F32)?.to_device(cpu)?;
    let b = b.to_dtype(DType::F32)?.to_device(cpu)?;
    let diff = (a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    let scale = b.abs()?.max_all()?.to_scalar::<f32>()?;
    Ok(f64::from(diff / scale.max(f32::MIN_POSITIVE)))
}
