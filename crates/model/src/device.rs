//! Which device runs the model, which dtype suits it, and what it has: the
//! `--device` and `--dtype auto` logic of every command.
//!
//! Everything that touches CUDA is behind the `cuda` feature; without it the
//! functions still exist and answer for a CPU-only build (a CUDA spec is an error
//! that says how to get CUDA, `auto` is the CPU).

use candle_core::{DType, Device};

use crate::error::ModelError;

/// Parses a device spec: `cpu`, `auto` (CUDA device 0 when this build has CUDA and
/// the machine shows a GPU, else the CPU), `cuda` (device 0) or `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device, ModelError> {
    match spec.trim() {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(auto_device()),
        "cuda" => cuda_device(0),
        other => match other.strip_prefix("cuda:") {
            Some(n) => {
                let ordinal = n.parse::<usize>().map_err(|_| {
                    device_error(format!(
                        "{other:?}: the CUDA device number must be a whole number, as in cuda:0"
                    ))
                })?;
                cuda_device(ordinal)
            }
            None => Err(device_error(format!(
                "unknown device {other:?} (cpu, auto, cuda or cuda:N)"
            ))),
        },
    }
}

/// The compute dtype `--dtype auto` picks: f32 on the CPU; on CUDA bf16 where the
/// GPU has native bf16 (compute capability 8.0 and newer: A100, L4, L40S, H100…),
/// else f16 (T4, V100). Gemma's activations are large, so f16 can overflow where
/// bf16 does not: on pre-Ampere GPUs compare against `--dtype f32` when in doubt.
pub fn auto_dtype(device: &Device) -> DType {
    if !device.is_cuda() {
        return DType::F32;
    }
    match compute_capability(device) {
        Some((major, _)) if major >= 8 => DType::BF16,
        _ => DType::F16,
    }
}

/// `(major, minor)` compute capability of a CUDA device; `None` on the CPU, in a
/// build without CUDA, or when the driver does not answer.
pub fn compute_capability(device: &Device) -> Option<(i32, i32)> {
    cuda::compute_capability(device)
}

/// `(free, total)` bytes of device memory on CUDA (the driver's view, for the
/// whole GPU, all processes); `None` on the CPU.
pub fn device_memory(device: &Device) -> Option<(u64, u64)> {
    cuda::memory(device)
}

/// The GPU's name on CUDA (e.g. "NVIDIA H200"), `"cpu"` otherwise.
pub fn device_name(device: &Device) -> String {
    cuda::name(device).unwrap_or_else(|| "cpu".to_string())
}

/// Errors of device selection read as a bad `--device` value.
fn device_error(msg: String) -> ModelError {
    ModelError::Config {
        file: "device".into(),
        msg,
    }
}

/// First line of a candle error (it may carry a backtrace).
#[cfg(feature = "cuda")]
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

#[cfg(feature = "cuda")]
fn auto_device() -> Device {
    if !candle_core::utils::cuda_is_available() || cuda::device_count() == 0 {
        return Device::Cpu;
    }
    match Device::new_cuda(0) {
        Ok(d) => {
            single_stream(&d);
            d
        }
        Err(e) => {
            tracing::warn!(error = %first_line(&e), "CUDA device 0 did not start; using the CPU");
            Device::Cpu
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn auto_device() -> Device {
    Device::Cpu
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device, ModelError> {
    let count = cuda::device_count();
    if ordinal >= count {
        return Err(device_error(match count {
            0 => format!(
                "cuda:{ordinal} was asked for, but no CUDA device is visible \
                 (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides them)"
            ),
            n => format!(
                "there is no CUDA device {ordinal}: this machine shows {n} (cuda:0 to cuda:{})",
                n - 1
            ),
        }));
    }
    let device = Device::new_cuda(ordinal).map_err(|e| {
        device_error(format!(
            "starting CUDA device {ordinal}: {}",
            first_line(&e)
        ))
    })?;
    single_stream(&device);
    Ok(device)
}

/// Turns off cudarc's per-allocation CUDA events (two created per tensor, recorded
/// and waited on at every use), which cost more than the small kernels of a decode
/// step. Sound here: the server runs every tensor on the device's one stream, so
/// stream order alone orders all reads and writes.
#[cfg(feature = "cuda")]
fn single_stream(device: &Device) {
    if let Device::Cuda(d) = device {
        // SAFETY: no tensor of this device is ever used on another stream (see above).
        unsafe { d.disable_event_tracking() };
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize) -> Result<Device, ModelError> {
    Err(device_error(
        "this build has no CUDA support (rebuild with --features cuda)".into(),
    ))
}

/// The driver queries, through the cudarc context candle's device holds.
#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::CudaContext;
    use candle_core::Device;

    /// GPUs the driver shows (0 when it cannot start).
    pub fn device_count() -> usize {
        CudaContext::device_count()
            .map(|n| n.max(0) as usize)
            .unwrap_or(0)
    }

    fn context(device: &Device) -> Option<std::sync::Arc<CudaContext>> {
        match device {
            Device::Cuda(d) => Some(d.cuda_stream().context().clone()),
            _ => None,
        }
    }

    pub fn compute_capability(device: &Device) -> Option<(i32, i32)> {
        context(device)?.compute_capability().ok()
    }

    pub fn memory(device: &Device) -> Option<(u64, u64)> {
        let (free, total) = context(device)?.mem_get_info().ok()?;
        Some((free as u64, total as u64))
    }

    pub fn name(device: &Device) -> Option<String> {
        context(device)?.name().ok()
    }
}

/// A build without CUDA: no device answers.
#[cfg(not(feature = "cuda"))]
mod cuda {
    use candle_core::Device;

    pub fn compute_capability(_device: &Device) -> Option<(i32, i32)> {
        None
    }

    pub fn memory(_device: &Device) -> Option<(u64, u64)> {
        None
    }

    pub fn name(_device: &Device) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_parse_and_pick_f32_on_cpu() {
        let cpu = parse_device("cpu").expect("cpu");
        assert!(cpu.is_cpu());
        assert_eq!(auto_dtype(&cpu), DType::F32);
        assert_eq!(device_name(&cpu), "cpu");
        assert_eq!(device_memory(&cpu), None);
        assert!(parse_device("auto").is_ok());
    }

    #[test]
    fn bad_specs_are_errors_naming_the_value() {
        for spec in ["gpu", "cuda:x", "cuda:-1", "metal"] {
            let err = parse_device(spec).expect_err(spec).to_string();
            assert!(err.starts_with("device: "), "{spec}: {err}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        for spec in ["cuda", "cuda:0", "cuda:3"] {
            let err = parse_device(spec).expect_err(spec).to_string();
            assert!(err.contains("rebuild with --features cuda"), "{err}");
        }
    }
}
