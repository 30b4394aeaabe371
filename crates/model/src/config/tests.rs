use super::*;

fn fixture(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

fn parse(json: &str) -> Result<ModelConfig, ModelError> {
    ModelConfig::from_json_str(json, "config.json")
}

#[test]
fn sparse_legacy_multimodal_config() {
    let c = ModelConfig::from_file(&fixture("tiny-gemma3/config.json")).unwrap();
    assert_eq!(c.architecture, Architecture::ConditionalGeneration);
    let t = &c.text;
    assert_eq!(
        (
            t.hidden_size,
            t.num_attention_heads,
            t.num_key_value_heads,
            t.head_dim
        ),
        (64, 4, 2, 24)
    );
    assert_eq!(t.query_pre_attn_scalar, 20.0);
    let full: Vec<usize> = (0..t.num_hidden_layers)
        .filter(|&i| t.layer_types[i] == LayerType::Full)
        .collect();
    assert_eq!(full, vec![2, 5], "sliding_window_pattern 3");
    assert_eq!(
        t.rope_full,
        RopeParams {
            theta: 1e6,
            linear_factor: 8.0
        }
    );
    assert_eq!(
        t.rope_sliding,
        RopeParams {
            theta: 1e4,
            linear_factor: 1.0
        }
    );
    assert_eq!(t.rms_norm_eps, 1e-6, "default");
    assert!(t.tie_word_embeddings && t.final_logit_softcapping.is_none());
    assert_eq!(c.eos_token_ids, vec![1, 6]);
    let mm = c.multimodal.as_ref().unwrap();
    assert_eq!(
        (
            mm.image_token_id,
            mm.boi_token_id,
            mm.eoi_token_id,
            mm.mm_tokens_per_image
        ),
        (447, 7, 8, 4)
    );
    assert_eq!(mm.vision.layer_norm_eps, 1e-6);
}

#[test]
fn transformers5_form_equals_the_legacy_form() {
    let legacy = ModelConfig::from_file(&fixture("tiny-gemma3/config.json")).unwrap();
    let v5 = ModelConfig::from_file(&fixture("configs/tiny-gemma3.transformers5.json")).unwrap();
    assert_eq!(legacy.text, v5.text);
    assert_eq!(legacy.multimodal, v5.multimodal);
}

#[test]
fn flat_legacy_text_config_with_int_eos_and_type_alias() {
    let c = ModelConfig::from_file(&fixture("configs/tiny-gemma3-text.legacy-flat.json")).unwrap();
    let mm = ModelConfig::from_file(&fixture("tiny-gemma3/config.json")).unwrap();
    assert_eq!(c.architecture, Architecture::CausalLm);
    assert_eq!(c.text, mm.text);
    assert_eq!(c.eos_token_ids, vec![1]);
    assert!(c.multimodal.is_none());
}

#[test]
fn transformers5_text_only_config() {
    let c = ModelConfig::from_file(&fixture("tiny-gemma3-text/config.json")).unwrap();
    let t = &c.text;
    assert_eq!(c.architecture, Architecture::CausalLm);
    assert_eq!(
        t.rope_full,
        RopeParams {
            theta: 1e5,
            linear_factor: 4.0
        }
    );
    assert_eq!(
        t.rope_sliding,
        RopeParams {
            theta: 1e3,
            linear_factor: 1.0
        }
    );
    assert_eq!(t.final_logit_softcapping, Some(5.0));
    assert_eq!(t.attn_logit_softcapping, Some(10.0));
    assert_eq!(t.layer_types[2], LayerType::Full);
    assert_eq!(t.layer_types[3], LayerType::Sliding);
}

#[test]
fn missing_keys_take_transformers_defaults() {
    let c = parse(r#"{"model_type":"gemma3_text","hidden_size":2560,"intermediate_size":10240,"num_hidden_layers":34,
        "rope_scaling":{"factor":8.0,"rope_type":"linear"},"sliding_window":1024}"#)
    .unwrap();
    let t = &c.text;
    assert_eq!(
        (t.num_attention_heads, t.num_key_value_heads, t.head_dim),
        (8, 4, 256)
    );
    assert_eq!(
        (t.vocab_size, t.max_position_embeddings),
        (262_208, 131_072)
    );
    assert_eq!(t.query_pre_attn_scalar, 256.0);
    let full: Vec<usize> = (0..34)
        .filter(|&i| t.layer_types[i] == LayerType::Full)
        .collect();
    assert_eq!(full, vec![5, 11, 17, 23, 29]);
    assert_eq!(c.eos_token_ids, vec![1]);
}

/// transformers 5 reads only the layer-type entries of `rope_parameters`: a flat
/// dict leaves every layer at its defaults (checked against transformers 5.24,
/// whose logits it then matches).
#[test]
fn flat_rope_parameters_are_ignored_as_transformers_ignores_them() {
    let c = parse(r#"{"model_type":"gemma3_text","num_hidden_layers":2,"layer_types":["sliding_attention","full_attention"],
        "rope_parameters":{"rope_type":"linear","factor":2.0,"rope_theta":5000.0},"rope_local_base_freq":77.0}"#)
    .unwrap();
    let plain = |theta| RopeParams {
        theta,
        linear_factor: 1.0,
    };
    assert_eq!(c.text.rope_full, plain(1_000_000.0));
    assert_eq!(c.text.rope_sliding, plain(77.0));
}

/// Legacy `rope_scaling` beside per-layer-type `rope_parameters` updates the full
/// layers' entry, as transformers' config does.
#[test]
fn rope_scaling_updates_the_full_layers_entry() {
    let c = parse(r#"{"model_type":"gemma3_text","num_hidden_layers":2,"layer_types":["sliding_attention","full_attention"],
        "rope_parameters":{"full_attention":{"rope_type":"default","rope_theta":3000.0},"sliding_attention":{"rope_type":"default","rope_theta":30.0}},
        "rope_scaling":{"rope_type":"linear","factor":4.0}}"#)
    .unwrap();
    assert_eq!(
        c.text.rope_full,
        RopeParams {
            theta: 3000.0,
            linear_factor: 4.0
        }
    );
    assert_eq!(
        c.text.rope_sliding,
        RopeParams {
            theta: 30.0,
            linear_factor: 1.0
        }
    );
}

#[test]
fn nested_config_without_architectures_is_multimodal() {
    let c = parse(
        r#"{"model_type":"gemma3","text_config":{"num_hidden_layers":1},
        "vision_config":{"hidden_size":8,"image_size":28,"intermediate_size":8,"num_attention_heads":1,"num_hidden_layers":1,"patch_size":7},
        "mm_tokens_per_image":4,"image_token_id":9}"#,
    )
    .unwrap();
    assert_eq!(c.architecture, Architecture::ConditionalGeneration);
    assert_eq!(c.multimodal.unwrap().image_token_id, 9);
}

/// As transformers reads a Gemma3ForConditionalGeneration config: tying from the
/// top-level key alone (tied by default), never a final soft-cap.
#[test]
fn multimodal_tying_and_softcap_follow_the_top_level() {
    let config = |top: &str, text: &str| {
        parse(&format!(
            r#"{{"model_type":"gemma3",{top}"text_config":{{"num_hidden_layers":1,"final_logit_softcapping":30.0{text}}},
            "vision_config":{{"hidden_size":8,"image_size":28,"intermediate_size":8,"num_attention_heads":1,"num_hidden_layers":1,"patch_size":7}},
            "mm_tokens_per_image":4,"image_token_id":9}}"#
        ))
        .unwrap()
        .text
    };
    let untied = config(
        r#""tie_word_embeddings":false,"#,
        r#","tie_word_embeddings":true"#,
    );
    assert!(!untied.tie_word_embeddings);
    assert!(untied.final_logit_softcapping.is_none());
    assert!(config("", r#","tie_word_embeddings":false"#).tie_word_embeddings);
    // A text-only checkpoint caps, and reads its own key.
    let text = parse(
        r#"{"model_type":"gemma3_text","final_logit_softcapping":30.0,"tie_word_embeddings":false,"use_bidirectional_attention":null}"#,
    )
    .unwrap()
    .text;
    assert_eq!(text.final_logit_softcapping, Some(30.0));
    assert!(!text.tie_word_embeddings);
}

#[test]
fn unsupported_configs_are_clear_errors() {
    let cases = [
        (
            r#"{"model_type":"llama"}"#,
            "unsupported model_type \"llama\"",
        ),
        (
            r#"{"architectures":["LlamaForCausalLM"],"model_type":"gemma3_text"}"#,
            "unsupported architecture",
        ),
        (r#"{}"#, "no model_type"),
        (
            r#"{"model_type":"gemma3_text","use_bidirectional_attention":true}"#,
            "use_bidirectional_attention",
        ),
        (
            r#"{"model_type":"gemma3_text","num_attention_heads":3,"num_key_value_heads":2}"#,
            "multiple",
        ),
        (
            r#"{"model_type":"gemma3_text","rope_scaling":{"rope_type":"yarn","factor":2}}"#,
            "yarn",
        ),
        (
            r#"{"model_type":"gemma3_text","num_hidden_layers":2,"layer_types":["full_attention"]}"#,
            "layer_types has 1",
        ),
        (
            r#"{"model_type":"gemma3_text","hidden_activation":"mish"}"#,
            "hidden_activation \"mish\" is not supported",
        ),
        (r#"{"model_type":"gemma3"}"#, "no vision_config"),
        (
            r#"{"model_type":"gemma3_text","hidden_size":"big"}"#,
            "hidden_size",
        ),
        ("{", "not valid JSON"),
    ];
    for (json, want) in cases {
        let err = parse(json).unwrap_err().to_string();
        assert!(err.contains(want), "{json}: {err}");
        assert!(err.starts_with("config.json: "), "names the file: {err}");
    }
}

#[test]
fn hidden_activation_takes_transformers_names() {
    use crate::activation::Activation;
    for (name, want) in [
        ("gelu_pytorch_tanh", Activation::GeluTanh),
        ("gelu_new", Activation::GeluTanh),
        ("gelu", Activation::GeluErf),
        ("silu", Activation::Silu),
        ("quick_gelu", Activation::QuickGelu),
        ("relu", Activation::Relu),
    ] {
        let cfg = parse(&format!(
            r#"{{"model_type":"gemma3_text","hidden_activation":"{name}"}}"#
        ))
        .unwrap();
        assert_eq!(cfg.text.hidden_activation, want, "{name}");
    }
    let default = parse(r#"{"model_type":"gemma3_text"}"#).unwrap();
    assert_eq!(default.text.hidden_activation, Activation::GeluTanh);
}
