//! Checkpoint configuration: every form of Gemma 3 config.json the loader accepts.
//!
//! Accepted (docs: GEMMA3.md §1): a nested multimodal config (`text_config`,
//! `vision_config`) or a flat text-only one; legacy rope fields (`rope_theta`,
//! `rope_local_base_freq`, `rope_scaling`) or transformers-5 `rope_parameters`
//! (per layer type, or flat); `layer_types` or `sliding_window_pattern`; sparse files
//! whose missing keys take transformers' defaults; `eos_token_id` as int or list.

use serde::Deserialize;
use serde_json::Value;

use crate::activation::Activation;
use crate::error::ModelError;
use text::parse_text;

/// Which attention a decoder layer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerType {
    Sliding,
    Full,
}

/// RoPE of one layer type: inverse frequencies are `1 / theta^(2j/d) / factor`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeParams {
    pub theta: f64,
    /// Linear position-interpolation factor (1.0 for `default`).
    pub linear_factor: f64,
}

/// The text decoder's shape and numerics, all defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub query_pre_attn_scalar: f64,
    pub rms_norm_eps: f64,
    pub sliding_window: usize,
    pub max_position_embeddings: usize,
    pub layer_types: Vec<LayerType>,
    pub rope_full: RopeParams,
    pub rope_sliding: RopeParams,
    pub final_logit_softcapping: Option<f64>,
    /// The MLP's activation (`hidden_activation`; Gemma 3's is the tanh GELU).
    pub hidden_activation: Activation,
    /// Parsed for completeness; transformers' Gemma 3 attention ignores it, and so do we.
    pub attn_logit_softcapping: Option<f64>,
    pub tie_word_embeddings: bool,
}

/// The SigLIP vision tower's shape.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub image_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub patch_size: usize,
    #[serde(default = "default_num_channels")]
    pub num_channels: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
}

/// Token ids and sizes that tie the vision tower to the text decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct MultimodalConfig {
    pub vision: VisionConfig,
    pub mm_tokens_per_image: usize,
    pub image_token_id: u32,
    pub boi_token_id: u32,
    pub eoi_token_id: u32,
}

/// Which model class the checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Gemma3ForConditionalGeneration: text decoder, SigLIP and projector.
    ConditionalGeneration,
    /// Gemma3ForCausalLM: text decoder only.
    CausalLm,
}

/// A parsed checkpoint configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub text: TextConfig,
    pub multimodal: Option<MultimodalConfig>,
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

fn default_num_channels() -> usize {
    3
}
fn default_eps() -> f64 {
    1e-6
}
fn default_hidden_act() -> String {
    "gelu_pytorch_tanh".into()
}

impl ModelConfig {
    /// Parses a config.json text; `origin` names the file in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self, ModelError> {
        let root: Value = serde_json::from_str(text).map_err(|e| ModelError::Config {
            file: origin.into(),
            msg: format!("not valid JSON: {e}"),
        })?;
        Self::from_value(&root).map_err(|msg| ModelError::Config {
            file: origin.into(),
            msg,
        })
    }

    /// Reads and parses `path`.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    fn from_value(root: &Value) -> Result<Self, String> {
        let model_type = root.get("model_type").and_then(Value::as_str).unwrap_or("");
        let architecture = architecture(root, model_type)?;
        let nested = root.get("text_config").filter(|v| v.is_object());
        let text_value = nested.unwrap_or(root);
        let mut text = parse_text(text_value, root)?;
        if matches!(architecture, Architecture::ConditionalGeneration) {
            // As transformers' Gemma3ForConditionalGeneration: the top-level key alone
            // decides tying (default tied; save_pretrained may write a contradicting
            // copy into text_config), and its logits are never soft-capped (only
            // Gemma3ForCausalLM caps them).
            text.tie_word_embeddings = root
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            text.final_logit_softcapping = None;
        }
        let multimodal = match architecture {
            Architecture::ConditionalGeneration => Some(parse_multimodal(root)?),
            Architecture::CausalLm => None,
        };
        let eos_token_ids = token_ids(root.get("eos_token_id"))
            .or_else(|| token_ids(text_value.get("eos_token_id")))
            .unwrap_or_else(|| vec![1]);
        let first = |key: &str| {
            token_ids(root.get(key))
                .or_else(|| token_ids(text_value.get(key)))
                .and_then(|v| v.first().copied())
        };
        Ok(Self {
            architecture,
            text,
            multimodal,
            eos_token_ids,
            bos_token_id: first("bos_token_id"),
            pad_token_id: first("pad_token_id"),
        })
    }
}

fn architecture(root: &Value, model_type: &str) -> Result<Architecture, String> {
    let archs: Vec<&str> = root
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !matches!(model_type, "" | "gemma3" | "gemma3_text") {
        return Err(format!(
            "unsupported model_type {model_type:?}: expected \"gemma3\" or \"gemma3_text\""
        ));
    }
    for a in &archs {
        match *a {
            "Gemma3ForConditionalGeneration" => return Ok(Architecture::ConditionalGeneration),
            "Gemma3ForCausalLM" => return Ok(Architecture::CausalLm),
            _ => {}
        }
    }
    match (model_type, archs.first()) {
        ("gemma3", None) => Ok(Architecture::ConditionalGeneration),
        ("gemma3_text", None) => Ok(Architecture::CausalLm),
        ("gemma3" | "gemma3_text", Some(a)) => Err(format!(
            "unsupported architecture {a:?}: expected Gemma3ForConditionalGeneration or Gemma3ForCausalLM"
        )),
        _ => Err("no model_type: not a Gemma 3 config".into()),
    }
}

fn token_ids(v: Option<&Value>) -> Option<Vec<u32>> {
    match v? {
        Value::Number(n) => n.as_u64().map(|x| vec![x as u32]),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(Value::as_u64)
                .map(|x| x as u32)
                .collect(),
        ),
        _ => None,
    }
}

fn parse_multimodal(root: &Value) -> Result<MultimodalConfig, String> {
    let vision_value = root
        .get("vision_config")
        .filter(|v| v.is_object())
        .ok_or("Gemma3ForConditionalGeneration config has no vision_config")?;
    let vision: VisionConfig = serde_path_to_error::deserialize(vision_value.clone())
        .map_err(|e| format!("vision_config: {}: {}", e.path(), e.inner()))?;
    if vision.patch_size == 0 || !vision.image_size.is_multiple_of(vision.patch_size) {
        return Err("vision_config.image_size must be a multiple of patch_size".into());
    }
    let id = |keys: [&str; 2], default: u32| -> u32 {
        keys.iter()
            .find_map(|k| root.get(*k).and_then(Value::as_u64))
            .map(|x| x as u32)
            .unwrap_or(default)
    };
    let mm_tokens_per_image = root
        .get("mm_tokens_per_image")
        .and_then(Value::as_u64)
        .unwrap_or(256) as usize;
    let patches_per_side = vision.image_size / vision.patch_size;
    let tokens_per_side = (mm_tokens_per_image as f64).sqrt() as usize;
    if tokens_per_side * tokens_per_side != mm_tokens_per_image
        || tokens_per_side == 0
        || !patches_per_side.is_multiple_of(tokens_per_side)
    {
        return Err(format!(
            "mm_tokens_per_image {mm_tokens_per_image} does not pool a {patches_per_side}x{patches_per_side} patch grid"
        ));
    }
    Ok(MultimodalConfig {
        vision,
        mm_tokens_per_image,
        image_token_id: id(["image_token_index", "image_token_id"], 262_144),
        boi_token_id: id(["boi_token_index", "boi_token_id"], 255_999),
        eoi_token_id: id(["eoi_token_index", "eoi_token_id"], 256_000),
    })
}

mod text;

#[cfg(test)]
mod tests;
