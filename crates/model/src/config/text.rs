//! The text decoder's part of config.json: transformers' Gemma3TextConfig with its
//! defaults, the legacy and transformers-5 spellings of RoPE and layer types, and
//! the checks that turn an unsupported or inconsistent config into one clear error.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::activation::Activation;

use super::{default_eps, default_hidden_act, LayerType, RopeParams, TextConfig};

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
    use_bidirectional_attention: Option<bool>,
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

pub(super) fn parse_text(v: &Value, root: &Value) -> Result<TextConfig, String> {
    let raw: RawText = serde_path_to_error::deserialize(v.clone())
        .map_err(|e| format!("text config: {}: {}", e.path(), e.inner()))?;
    check_supported(&raw)?;
    let hidden_activation = Activation::parse(&raw.hidden_activation).ok_or_else(|| {
        format!(
            "hidden_activation {:?} is not supported (supported: {})",
            raw.hidden_activation,
            Activation::NAMES
        )
    })?;
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
        hidden_activation,
        attn_logit_softcapping: raw.attn_logit_softcapping,
        tie_word_embeddings: tie,
    };
    validate_text(&cfg)?;
    Ok(cfg)
}

fn check_supported(raw: &RawText) -> Result<(), String> {
    if raw.use_bidirectional_attention == Some(true) {
        return Err(
            "use_bidirectional_attention=true (an embedding model) is not supported".into(),
        );
    }
    if raw.attention_bias {
        return Err("attention_bias=true is not a Gemma 3 configuration".into());
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

/// The RoPE of full- and sliding-attention layers, as transformers 5's Gemma 3
/// config reads them: `rope_parameters` keyed by layer type, else the legacy
/// `rope_scaling` on the full layers; `rope_theta` and `rope_local_base_freq` (or
/// their defaults) wherever a theta is missing.
fn rope(raw: &RawText) -> Result<(RopeParams, RopeParams), String> {
    let theta = raw.rope_theta.unwrap_or(DEFAULT_THETA);
    let local = raw.rope_local_base_freq.unwrap_or(DEFAULT_LOCAL_THETA);
    let plain = |theta| RopeParams {
        theta,
        linear_factor: 1.0,
    };
    let params = raw.rope_parameters.as_ref().filter(|v| v.is_object());
    let per_type = params
        .filter(|p| p.get("full_attention").is_some() || p.get("sliding_attention").is_some());
    if params.is_some() && per_type.is_none() {
        // transformers keeps such a dict but reads only the layer-type entries,
        // so its layers run the defaults; so do ours, as the reference computes.
        tracing::warn!(
            "config.json: rope_parameters is not keyed by layer type (full_attention, \
             sliding_attention); it is ignored, as transformers ignores it"
        );
    }
    let entry = |key: &str| per_type.and_then(|p| p.get(key)).filter(|v| v.is_object());
    // Legacy rope_scaling updates the full layers' entry, as transformers does.
    let mut full = entry("full_attention")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let (Some(scaling), Some(f)) = (
        raw.rope_scaling.as_ref().and_then(Value::as_object),
        full.as_object_mut(),
    ) {
        f.extend(scaling.clone());
    }
    let sliding = match entry("sliding_attention") {
        Some(v) => rope_entry(v, local)?,
        None => plain(local),
    };
    Ok((rope_entry(&full, theta)?, sliding))
}
