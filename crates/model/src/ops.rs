//! Small numerics shared by the text and vision attention.

use candle_core::{DType, Result, Tensor};

/// Softmax over the last dimension computed in f32 and returned in `x`'s dtype,
/// as transformers does (`softmax(x, dtype=float32).to(x.dtype)`). On CUDA the
/// softmax kernel already accumulates half-precision input in f32 and rounds once;
/// on the CPU `cpu_softmax` does the same with a vectorized exponential.
pub fn softmax_in_f32(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        return crate::cpu_softmax::softmax_last_dim(x);
    }
    candle_nn::ops::softmax_last_dim(x)
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

/// The tolerance of a fused kernel's self-test against its reference (max
/// relative error): f32 to float rounding, lower precisions to a few roundings.
pub fn fused_tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-5,
        _ => 1e-2,
    }
}

/// Whether a kernel may run on `device` in `dtype`: the device is CUDA, the kernel
/// is not turned off, and `test`
/// (the kernel's worst relative error against its reference) is within
/// `fused_tolerance`. `test` runs only on CUDA devices.
/// `kernel` is one of `kernels::NAMES`: one the operator turned off is not used.
pub fn kernel_usable(
    kernel: &str,
    device: &candle_core::Device,
    dtype: DType,
    test: impl FnOnce() -> Result<f64>,
) -> bool {
    device.is_cuda()
        && crate::kernels::enabled(kernel)
        && self_test_passes(kernel, test(), fused_tolerance(dtype))
}

/// Whether a fused kernel's self-test on the device passed; says which way it
/// went, since a kernel that fails leaves the model on the slower unfused ops.
pub fn self_test_passes(kernel: &str, result: Result<f64>, tolerance: f64) -> bool {
    match result {
        Ok(err) if err <= tolerance => {
            tracing::info!(
                kernel,
                error = err,
                "fused kernel passed its self-test: in use"
            );
            true
        }
        Ok(err) => {
            tracing::warn!(
                kernel,
                error = err,
                tolerance,
                "fused kernel is off from its reference on this GPU: using the unfused ops"
            );
            false
        }
        Err(e) => {
            tracing::warn!(kernel, error = %e, "fused kernel failed its self-test: using the unfused ops");
            false
        }
    }
}
