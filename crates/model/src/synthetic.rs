//! Models with the real shapes and random weights, made in memory on the target
//! device: for capacity benchmarks without downloading (or being licensed for) a
//! checkpoint. Their outputs are noise; their cost per token is the real model's.
//!
//! Initialization keeps a long forward finite in bf16: every matrix is drawn from
//! N(0, 1/fan_in), so a projection keeps its input's scale (the embedding rows get
//! RMS 1/sqrt(hidden), which the sqrt(hidden) embedding scale brings back to 1);
//! Gemma's RMSNorm weights are zero (a scale of 1 + 0); SigLIP's LayerNorms get
//! weight 1 and bias 0; biases are zero. Gemma's post-attention and post-MLP
//! norms then bound what each layer adds to the residual stream.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use half::{bf16, f16};

use crate::config::{Architecture, ModelConfig};
use crate::error::Result;
use crate::model::{load_error, Gemma3};
use crate::multimodal::VisionPart;
use crate::text::TextModel;

/// Names `preset` knows, for help texts and errors.
pub const PRESETS: &[&str] = &["medgemma-4b", "medgemma-27b"];

/// google/medgemma-4b-it, written out in full in the transformers 4.50 form: the
/// shapes of gemma-3-4b-it (Gemma3ForConditionalGeneration), which MedGemma 4B
/// shares.
const MEDGEMMA_4B: &str = include_str!("../presets/medgemma-4b.json");

/// google/medgemma-27b-it: the shapes of gemma-3-27b-it, same vision tower as 4B.
const MEDGEMMA_27B: &str = include_str!("../presets/medgemma-27b.json");

/// The config of a named preset (`medgemma-4b`, `medgemma-27b`; the hub ids
/// `google/medgemma-4b-it` and `google/medgemma-27b-it` work too).
pub fn preset(name: &str) -> Option<ModelConfig> {
    let json = match name.trim_start_matches("google/").trim_end_matches("-it") {
        "medgemma-4b" => MEDGEMMA_4B,
        "medgemma-27b" => MEDGEMMA_27B,
        _ => return None,
    };
    // The texts are constants, parsed in the tests below.
    ModelConfig::from_json_str(json, name).ok()
}

/// A model of `config`'s shapes with random weights, made directly on `device` in
/// `dtype`: the text decoder, and SigLIP with the projector when the config is
/// Gemma3ForConditionalGeneration. The weights take the device memory a checkpoint
/// would (4B in bf16: about 8.6 GB), plus one f32 tensor at a time while drawing.
pub fn synthetic_model(config: ModelConfig, dtype: DType, device: &Device) -> Result<Gemma3> {
    let vb = VarBuilder::from_backend(Box::new(RandomWeights), dtype, device.clone());
    let text =
        TextModel::new(&config.text, vb.pp("model"), Some(vb.pp("lm_head"))).map_err(load_error)?;
    let vision = match (&config.multimodal, config.architecture) {
        (Some(mm), Architecture::ConditionalGeneration) => Some(VisionPart::new(
            mm,
            config.text.hidden_size,
            vb.pp("vision_tower").pp("vision_model"),
            vb.pp("multi_modal_projector"),
        )?),
        _ => None,
    };
    Ok(Gemma3 {
        config,
        text,
        vision,
    })
}

/// SigLIP's LayerNorms (`weight * x̂ + bias`), whose weight must be 1, not 0.
const SIGLIP_LAYER_NORMS: &[&str] = &["layer_norm1", "layer_norm2", "post_layernorm"];

/// How one synthetic tensor is filled.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fill {
    Const(f64),
    Normal { std: f64 },
}

/// The fill of tensor `name` of `shape`; `hint` is what the layer asked for.
fn fill_for(name: &str, shape: &Shape, hint: Init) -> Fill {
    let dims = shape.dims();
    if dims.len() >= 2 {
        // [out, in, (kernel…)]: fan-in as candle and torch count it.
        let fan_in: usize = dims[1..].iter().product();
        return Fill::Normal {
            std: 1.0 / (fan_in.max(1) as f64).sqrt(),
        };
    }
    let mut parts = name.rsplit('.');
    let leaf = parts.next().unwrap_or_default();
    let parent = parts.next().unwrap_or_default();
    if leaf == "bias" {
        return Fill::Const(0.0);
    }
    if SIGLIP_LAYER_NORMS.contains(&parent) {
        return Fill::Const(1.0);
    }
    match hint {
        // Gemma's RMSNorm asks for 0 (it scales by 1 + weight).
        Init::Const(c) => Fill::Const(c),
        _ => Fill::Const(0.0),
    }
}

fn make(fill: Fill, shape: Shape, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    match fill {
        Fill::Const(0.0) => Tensor::zeros(shape, dtype, device),
        Fill::Const(c) => Tensor::ones(shape, dtype, device)?.affine(c, 0.0),
        // On the CPU, drawn in the weights' dtype: an f32 draw freed after its
        // conversion stays in the process's resident memory, and the benchmark's
        // peak memory would count it (2 GB more than the weights for 4B's shapes
        // cut to two layers in bf16).
        Fill::Normal { std } if device.is_cpu() && dtype == DType::BF16 => {
            Tensor::randn(bf16::ZERO, bf16::from_f64(std), shape, device)
        }
        Fill::Normal { std } if device.is_cpu() && dtype == DType::F16 => {
            Tensor::randn(f16::ZERO, f16::from_f64(std), shape, device)
        }
        // Elsewhere drawn in f32 (candle's CUDA generator makes no bf16) and
        // converted once.
        Fill::Normal { std } => Tensor::randn(0f32, std as f32, shape, device)?.to_dtype(dtype),
    }
}

/// A VarBuilder backend that makes every tensor it is asked for.
struct RandomWeights;

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        make(fill_for(name, &s, h), s, dtype, dev)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("synthetic weights need a shape: {name} was asked for without one")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
