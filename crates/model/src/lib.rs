//! The Gemma 3 / MedGemma model on candle: configuration, weights, the text decoder,
//! sampling, and the executor the scheduler drives.
//!
//! Numbers follow Hugging Face transformers (see docs in GEMMA3.md); every part is
//! checked against its outputs on the tiny checkpoints under tests/fixtures.

pub mod activation;
pub mod add_norm;
pub mod argmax;
pub mod attention;
pub mod batch;
pub mod bias_epilogue;
pub mod config;
pub mod cpu_gelu;
pub mod cpu_matvec;
pub mod cpu_softmax;
pub mod decode_graph;
pub mod device;
#[cfg(test)]
mod emulated;
pub mod encoder_cache;
pub mod error;
pub mod executor;
pub mod gelu_mul;
pub mod gemv;
pub mod gemv_plan;
pub mod generate;
pub mod host_rows;
pub mod hub;
pub mod ids_download;
pub mod image_plan;
pub mod kernels;
pub mod kv;
pub mod kv_budget;
pub mod kv_rows;
pub mod launch;
pub mod linear;
pub mod lookahead;
pub mod mask;
pub mod mlp;
pub mod model;
pub mod multimodal;
pub mod norm;
pub mod ops;
pub mod paged_decode;
pub mod paged_rows;
pub mod projector;
pub mod qk_rope_write;
pub mod rope;
pub mod sampling;
pub mod softmax;
pub mod stages;
pub mod synthetic;
pub mod text;
pub mod topk;
pub mod verify;
pub mod vision;
pub mod vision_attention;
pub mod weights;

pub use batch::{ForwardBatch, SeqSpan};
pub use config::{Architecture, LayerType, ModelConfig, TextConfig};
pub use decode_graph::DecodeReplay;
pub use device::{auto_dtype, device_memory, device_name, parse_device};
pub use error::ModelError;
pub use executor::CandleExecutor;
pub use generate::{generate, generate_with_images, Generation};
pub use kv::KvPool;
pub use kv_budget::{KvBudget, KvCacheConfig};
pub use model::Gemma3;
pub use multimodal::VisionPart;
pub use synthetic::synthetic_model;

pub use candle_core::{DType, Device, Tensor};

/// The CPU threads candle's kernels use (its count of physical cores unless
/// `RAYON_NUM_THREADS` says otherwise).
pub fn cpu_thread_count() -> usize {
    candle_core::utils::get_num_threads()
}

/// Parses a dtype name as the CLI and config take it.
pub fn parse_dtype(name: &str) -> Result<DType, ModelError> {
    match name {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(ModelError::Input(format!(
            "unknown dtype {other:?} (f32, f16 or bf16)"
        ))),
    }
}
