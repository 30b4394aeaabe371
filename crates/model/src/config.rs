//! Checkpoint configuration: every form of Gemma 3 config.json the loader accepts.
//!
//! Accepted (docs: GEMMA3.md §1): a nested multimodal config (`text_config`,
//! `vision_config`) or a flat text-only one; legacy rope fields (`rope_theta`,
//! `rope_local_base_freq`, `rope_scaling`) or transformers-5 `rope_parameters`
//! (per layer type, or flat); `layer_types` or `sliding_window_pattern`; sparse files
//! whose missing keys take transformers' defaults; `eos_token_id` as int or list.

use serde::Deserialize;
use serde_json::Value;

use crate::error::ModelError;

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

/// Raw text config with transformers' Gemma3TextConfig defaults.
#[derive(Debug, Deserialize)]
struct RawText {
    #[serde(default = "d_vocab")]
    vocab_size: usize,
    #[serde(default = "d_hidden")]
    hidden_size: usize,
    #[serde(default = "d_inter")]
    intermediate_size: usize,
    #[serde(default = "d_layers")]
    num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    num_attention_heads: usize,
    #[serde(default = "d_kv_heads")]
    num_key_value_heads: usize,
    #[serde(default = "d_head_dim")]
    head_dim: usize,
    #[serde(default = "d_qpas")]
    query_pre_attn_scalar: f64,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "d_window")]
    sliding_window: usize,
    #[serde(default = "d_pattern")]
    sliding_window_pattern: usize,
    #[serde(default = "d_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_local_base_freq: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<Value>,
    #[serde(default)]
    rope_parameters: Option<Value>,
    #[serde(default)]
    final_logit_softcapping: Option<f64>,
    #[serde(default)]
    attn_logit_softcapping: Option<f64>,
    #[serde(default = "default_hidden_act")]
    hidden_activation: String,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    use_bidirectional_attention: bool,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
}

fn d_vocab() -> usize {
    262_208
}
fn d_hidden() -> usize {
    2304
}
fn d_inter() -> usize {
    9216
}
fn d_layers() -> usize {
    26
}
fn d_heads() -> usize {
    8
}
fn d_kv_heads() -> usize {
    4
}
fn d_head_dim() -> usize {
    256
}
fn d_qpas() -> f64 {
    256.0
}
fn d_window() -> usize {
    4096
}
fn d_pattern() -> usize {
    6
}
fn d_max_pos() -> usize {
    131_072
}

const DEFAULT_THETA: f64 = 1_000_000.0;
const DEFAULT_LOCAL_THETA: f64 = 10_000.0;

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
        let text = parse_text(text_value, root)?;
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

fn parse_text(v: &Value, root: &Value) -> Result<TextConfig, String> {
    let raw: RawText = serde_path_to_error::deserialize(v.clone())
        .map_err(|e| format!("text config: {}: {}", e.path(), e.inner()))?;
    check_supported(&raw)?;
    let layer_types = layer_types(&raw)?;
    let (rope_full, rope_sliding) = rope(&raw)?;
    let tie = raw
        .tie_word_embeddings
        .or_else(|| root.get("tie_word_embeddings").and_then(Value::as_bool))
        .unwrap_or(true);
    let cfg = TextConfig {
        vocab_size: raw.vocab_size,
        hidden_size: raw.hidden_size,
        intermediate_size: raw.intermediate_size,
        num_hidden_layers: raw.num_hidden_layers,
        num_attention_heads: raw.num_attention_heads,
        num_key_value_heads: raw.num_key_value_heads,
        head_dim: raw.head_dim,
        query_pre_attn_scalar: raw.query_pre_attn_scalar,
        rms_norm_eps: raw.rms_norm_eps,
        sliding_window: raw.sliding_window,
        max_position_embeddings: raw.max_position_embeddings,
        layer_types,
        rope_full,
        rope_sliding,
        final_logit_softcapping: raw.final_logit_softcapping,
        attn_logit_softcapping: raw.attn_logit_softcapping,
        tie_word_embeddings: tie,
    };
    validate_text(&cfg)?;
    Ok(cfg)
}

fn check_supported(raw: &RawText) -> Result<(), String> {
    if raw.use_bidirectional_attention {
        return Err(
            "use_bidirectional_attention=true (an embedding model) is not supported".into(),
        );
    }
    if raw.attention_bias {
        return Err("attention_bias=true is not a Gemma 3 configuration".into());
    }
    if raw.hidden_activation != "gelu_pytorch_tanh" {
        return Err(format!(
            "hidden_activation {:?} is not supported (Gemma 3 uses gelu_pytorch_tanh)",
            raw.hidden_activation
        ));
    }
    Ok(())
}

fn validate_text(c: &TextConfig) -> Result<(), String> {
    let positive = [
        ("hidden_size", c.hidden_size),
        ("intermediate_size", c.intermediate_size),
        ("num_hidden_layers", c.num_hidden_layers),
        ("num_attention_heads", c.num_attention_heads),
        ("num_key_value_heads", c.num_key_value_heads),
        ("head_dim", c.head_dim),
        ("vocab_size", c.vocab_size),
        ("sliding_window", c.sliding_window),
        ("max_position_embeddings", c.max_position_embeddings),
    ];
    if let Some((k, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(format!("{k} must be positive"));
    }
    if !c.num_attention_heads.is_multiple_of(c.num_key_value_heads) {
        return Err(format!(
            "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
            c.num_attention_heads, c.num_key_value_heads
        ));
    }
    if !c.head_dim.is_multiple_of(2) {
        return Err(format!("head_dim ({}) must be even for RoPE", c.head_dim));
    }
    if c.layer_types.len() != c.num_hidden_layers {
        return Err(format!(
            "layer_types has {} entries but num_hidden_layers is {}",
            c.layer_types.len(),
            c.num_hidden_layers
        ));
    }
    Ok(())
}

fn layer_types(raw: &RawText) -> Result<Vec<LayerType>, String> {
    if let Some(types) = &raw.layer_types {
        return types
            .iter()
            .map(|t| match t.as_str() {
                "sliding_attention" => Ok(LayerType::Sliding),
                "full_attention" => Ok(LayerType::Full),
                other => Err(format!("unknown layer type {other:?} in layer_types")),
            })
            .collect();
    }
    let pattern = raw.sliding_window_pattern.max(1);
    Ok((0..raw.num_hidden_layers)
        .map(|i| {
            if (i + 1) % pattern == 0 {
                LayerType::Full
            } else {
                LayerType::Sliding
            }
        })
        .collect())
}

/// Reads one rope dict (`rope_type`/`type`, `factor`, `rope_theta`).
fn rope_entry(v: &Value, default_theta: f64) -> Result<RopeParams, String> {
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let theta = v
        .get("rope_theta")
        .and_then(Value::as_f64)
        .unwrap_or(default_theta);
    let linear_factor = match kind {
        "default" => 1.0,
        "linear" => v
            .get("factor")
            .and_then(Value::as_f64)
            .ok_or("linear rope scaling without a factor")?,
        other => {
            return Err(format!(
                "rope_type {other:?} is not supported (default or linear)"
            ))
        }
    };
    if linear_factor <= 0.0 || theta <= 0.0 {
        return Err("rope theta and factor must be positive".into());
    }
    Ok(RopeParams {
        theta,
        linear_factor,
    })
}

fn rope(raw: &RawText) -> Result<(RopeParams, RopeParams), String> {
    let theta = raw.rope_theta.unwrap_or(DEFAULT_THETA);
    let local = raw.rope_local_base_freq.unwrap_or(DEFAULT_LOCAL_THETA);
    if let Some(params) = raw.rope_parameters.as_ref().filter(|v| v.is_object()) {
        let per_type =
            params.get("full_attention").is_some() || params.get("sliding_attention").is_some();
        if per_type {
            let full = match params.get("full_attention") {
                Some(v) => rope_entry(v, theta)?,
                None => RopeParams {
                    theta,
                    linear_factor: 1.0,
                },
            };
            let sliding = match params.get("sliding_attention") {
                Some(v) => rope_entry(v, local)?,
                None => RopeParams {
                    theta: local,
                    linear_factor: 1.0,
                },
            };
            return Ok((full, sliding));
        }
        // A flat dict applies to the full-attention layers, as legacy rope_scaling does.
        let full = rope_entry(params, theta)?;
        return Ok((
            full,
            RopeParams {
                theta: local,
                linear_factor: 1.0,
            },
        ));
    }
    let full = match raw.rope_scaling.as_ref().filter(|v| v.is_object()) {
        Some(s) => rope_entry(s, theta)?,
        None => RopeParams {
            theta,
            linear_factor: 1.0,
        },
    };
    Ok((
        full,
        RopeParams {
            theta: local,
            linear_factor: 1.0,
        },
    ))
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

#[cfg(test)]
mod tests;
