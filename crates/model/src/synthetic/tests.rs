use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::Init;
use medgemma_core::SamplingParams;

use super::{fill_for, preset, synthetic_model, Fill};
use crate::config::{LayerType, ModelConfig};
use crate::{generate, CandleExecutor, KvBudget, KvCacheConfig};

fn full_layers(cfg: &ModelConfig) -> usize {
    cfg.text
        .layer_types
        .iter()
        .filter(|&&t| t == LayerType::Full)
        .count()
}

#[test]
fn the_4b_preset_has_medgemma_4b_shapes() {
    let c = preset("medgemma-4b").expect("the 4B preset parses");
    let t = &c.text;
    assert_eq!(
        (
            t.vocab_size,
            t.hidden_size,
            t.intermediate_size,
            t.num_hidden_layers
        ),
        (262_208, 2560, 10_240, 34)
    );
    assert_eq!(
        (t.num_attention_heads, t.num_key_value_heads, t.head_dim),
        (8, 4, 256)
    );
    assert_eq!(t.query_pre_attn_scalar, 256.0);
    assert_eq!(
        (t.sliding_window, t.max_position_embeddings),
        (1024, 131_072)
    );
    assert_eq!(full_layers(&c), 5);
    assert_eq!((t.rope_full.theta, t.rope_full.linear_factor), (1e6, 8.0));
    assert_eq!(
        (t.rope_sliding.theta, t.rope_sliding.linear_factor),
        (1e4, 1.0)
    );
    assert!(t.tie_word_embeddings && t.final_logit_softcapping.is_none());
    assert_eq!(c.eos_token_ids, vec![1, 106]);
    let mm = c.multimodal.as_ref().expect("the 4B preset has vision");
    let v = &mm.vision;
    assert_eq!(
        (
            v.image_size,
            v.patch_size,
            v.num_hidden_layers,
            v.hidden_size
        ),
        (896, 14, 27, 1152)
    );
    assert_eq!((v.intermediate_size, v.num_attention_heads), (4304, 16));
    assert_eq!(
        (
            mm.mm_tokens_per_image,
            mm.image_token_id,
            mm.boi_token_id,
            mm.eoi_token_id
        ),
        (256, 262_144, 255_999, 256_000)
    );
}

#[test]
fn the_27b_preset_has_medgemma_27b_shapes() {
    let c = preset("google/medgemma-27b-it").expect("the 27B preset parses");
    let t = &c.text;
    assert_eq!(
        (
            t.vocab_size,
            t.hidden_size,
            t.intermediate_size,
            t.num_hidden_layers
        ),
        (262_208, 5376, 21_504, 62)
    );
    assert_eq!(
        (t.num_attention_heads, t.num_key_value_heads, t.head_dim),
        (32, 16, 128)
    );
    assert_eq!(t.query_pre_attn_scalar, 168.0);
    assert_eq!(full_layers(&c), 10);
    let four = preset("medgemma-4b").expect("4B");
    assert_eq!(c.multimodal, four.multimodal);
    assert!(preset("medgemma-27b-text").is_none());
    assert!(preset("gemma-3-4b").is_none());
}

#[test]
fn fills_follow_the_kind_of_tensor() {
    let normal = |std: f64| Fill::Normal { std };
    let s = |dims: &[usize]| Shape::from(dims.to_vec());
    let randn = Init::Randn {
        mean: 0.0,
        stdev: 1.0,
    };
    let cases: Vec<(&str, Shape, Init, Fill)> = vec![
        (
            "model.embed_tokens.weight",
            s(&[1000, 64]),
            randn,
            normal(0.125),
        ),
        (
            "model.layers.0.mlp.down_proj.weight",
            s(&[64, 4096]),
            Init::Const(0.0),
            normal(1.0 / 64.0),
        ),
        (
            "v.embeddings.patch_embedding.weight",
            s(&[32, 3, 8, 8]),
            Init::Const(0.0),
            normal(1.0 / 192f64.sqrt()),
        ),
        (
            "model.layers.0.input_layernorm.weight",
            s(&[64]),
            Init::Const(0.0),
            Fill::Const(0.0),
        ),
        (
            "v.encoder.layers.3.layer_norm1.weight",
            s(&[32]),
            Init::Const(0.0),
            Fill::Const(1.0),
        ),
        (
            "v.post_layernorm.bias",
            s(&[32]),
            Init::Const(0.0),
            Fill::Const(0.0),
        ),
        (
            "v.encoder.layers.0.mlp.fc1.bias",
            s(&[48]),
            Init::Uniform { lo: -1.0, up: 1.0 },
            Fill::Const(0.0),
        ),
    ];
    for (name, shape, hint, want) in cases {
        assert_eq!(fill_for(name, &shape, hint), want, "{name}");
    }
}

/// The tiny fixture's shapes with `layers` decoder layers.
fn small(layers: usize) -> ModelConfig {
    let json = format!(
        r#"{{"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
            "boi_token_index": 7, "eoi_token_index": 8, "image_token_index": 447,
            "mm_tokens_per_image": 4, "eos_token_id": [1, 6],
            "text_config": {{"vocab_size": 464, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": {layers}, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 24, "query_pre_attn_scalar": 20, "sliding_window": 16,
              "sliding_window_pattern": 3, "max_position_embeddings": 1024,
              "rope_scaling": {{"factor": 8.0, "rope_type": "linear"}}}},
            "vision_config": {{"hidden_size": 32, "image_size": 32, "intermediate_size": 48,
              "num_attention_heads": 2, "num_hidden_layers": 2, "patch_size": 8}}}}"#
    );
    ModelConfig::from_json_str(&json, "small synthetic config").expect("parses")
}

fn all_finite(t: &Tensor) -> bool {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map(|v| v.iter().all(|x| x.is_finite()))
        .unwrap_or(false)
}

#[test]
fn a_deep_synthetic_model_stays_finite_in_bf16() {
    let model = synthetic_model(small(40), DType::BF16, &Device::Cpu).expect("builds");
    assert_eq!(model.text.dtype(), DType::BF16);
    let vision = model.vision.as_ref().expect("a vision part");
    let pixels = Tensor::randn(0f32, 0.5, (2, 3, 32, 32), &Device::Cpu).expect("pixels");
    let features = vision.encode(&pixels).expect("vision forward");
    assert_eq!(features.dims(), &[2, 4, 64]);
    assert!(all_finite(&features), "image features are finite");

    let kv = KvCacheConfig {
        budget: KvBudget::Bytes(16 << 20),
        max_num_seqs: 2,
        ..KvCacheConfig::default()
    };
    let mut exec = CandleExecutor::new(model, &kv).expect("executor");
    let sampling = SamplingParams {
        logprobs: Some(3),
        ..SamplingParams::greedy()
    };
    let prompt: Vec<u32> = (0..40).map(|i| 20 + (i * 37) % 400).collect();
    let out = generate(&mut exec, 1, &prompt, &sampling, &[], 6).expect("generates");
    assert_eq!(out.tokens.len(), 6);
    for lp in out.logprobs.iter().flatten() {
        assert!(lp.logprob.is_finite(), "{lp:?}");
        assert!(lp.top.iter().all(|(_, l)| l.is_finite()), "{lp:?}");
    }
}

#[test]
fn a_text_only_config_gets_no_vision_part() {
    let mut cfg = small(2);
    cfg.architecture = crate::config::Architecture::CausalLm;
    let model = synthetic_model(cfg, DType::F32, &Device::Cpu).expect("builds");
    assert!(model.vision.is_none());
}
