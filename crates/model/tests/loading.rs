//! Checkpoint loading: dtypes on disk, key layouts, and clear errors for bad checkpoints.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::{fixture, goldens};
use medgemma_core::SamplingParams;
use medgemma_model::{generate, CandleExecutor, Gemma3, KvCacheConfig};

fn copy_side_files(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "json")
            && !p.ends_with("model.safetensors.index.json")
        {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

fn tensors(ckpt: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(ckpt).join("model.safetensors"), &Device::Cpu).unwrap()
}

/// Writes a variant of the multimodal fixture with the tensors `edit` returns.
fn variant(
    edit: impl FnOnce(HashMap<String, Tensor>) -> HashMap<String, Tensor>,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_side_files(&fixture("tiny-gemma3"), dir.path());
    let t = edit(tensors("tiny-gemma3"));
    candle_core::safetensors::save(&t, dir.path().join("model.safetensors")).unwrap();
    dir
}

fn first_ids(dir: &Path, n: usize) -> Vec<u32> {
    let g = goldens("tiny-gemma3");
    let p = &g.prompts[0];
    let mut exec = CandleExecutor::new(
        Gemma3::load(dir, DType::F32, &Device::Cpu).unwrap(),
        &KvCacheConfig::default(),
    )
    .unwrap();
    let params = SamplingParams {
        suppress_tokens: g.eos_suppressed.clone(),
        ..SamplingParams::greedy()
    };
    generate(&mut exec, 1, &p.input_ids, &params, &[], n)
        .unwrap()
        .tokens
}

fn load_err(dir: &Path) -> String {
    let e = Gemma3::load(dir, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

#[test]
fn f32_and_f16_on_disk_give_the_golden_ids() {
    let want = goldens("tiny-gemma3").prompts[0].greedy_ids[..8].to_vec();
    for dtype in [DType::F32, DType::F16] {
        let dir = variant(|t| {
            t.into_iter()
                .map(|(k, v)| (k, v.to_dtype(dtype).unwrap()))
                .collect()
        });
        assert_eq!(first_ids(dir.path(), 8), want, "{dtype:?} on disk");
    }
}

#[test]
fn transformers5_module_layout_loads() {
    let dir = variant(|t| {
        t.into_iter()
            .map(|(k, v)| {
                let k = if let Some(rest) = k.strip_prefix("language_model.model.") {
                    format!("model.language_model.{rest}")
                } else {
                    format!("model.{k}")
                };
                (k, v)
            })
            .collect()
    });
    let want = goldens("tiny-gemma3").prompts[0].greedy_ids[..8].to_vec();
    assert_eq!(first_ids(dir.path(), 8), want);
}

#[test]
fn sharded_text_only_checkpoint_loads_from_its_index() {
    let m = Gemma3::load(&fixture("tiny-gemma3-text"), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(m.config.text.hidden_size, 48);
}

#[test]
fn missing_tensor_names_the_tensor_and_file() {
    let dir = variant(|mut t| {
        t.remove("language_model.model.layers.3.mlp.up_proj.weight");
        t
    });
    let e = load_err(dir.path());
    assert!(
        e.contains("language_model.model.layers.3.mlp.up_proj.weight") && e.contains("missing"),
        "{e}"
    );
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn wrong_shape_names_the_tensor_and_both_shapes() {
    let dir = variant(|mut t| {
        t.insert(
            "language_model.model.layers.1.self_attn.q_proj.weight".into(),
            Tensor::zeros((95, 64), DType::BF16, &Device::Cpu).unwrap(),
        );
        t
    });
    let e = load_err(dir.path());
    assert!(
        e.contains("q_proj.weight") && e.contains("[95, 64]") && e.contains("[96, 64]"),
        "{e}"
    );
}

#[test]
fn truncated_file_is_reported_with_its_name() {
    let dir = variant(|t| t);
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
    std::fs::write(&path, b"").unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn missing_files_and_unknown_model_types_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("config.json"), "{e}");
    copy_side_files(&fixture("tiny-gemma3"), dir.path());
    let e = load_err(dir.path());
    assert!(e.contains("no model.safetensors"), "{e}");
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type":"llama","architectures":["LlamaForCausalLM"]}"#,
    )
    .unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("unsupported model_type \"llama\""), "{e}");
}

#[test]
fn index_naming_a_missing_shard_is_clear() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("tiny-gemma3-text");
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        if !p.ends_with("model-00002-of-00004.safetensors") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let e = load_err(dir.path());
    assert!(
        e.contains("model-00002-of-00004.safetensors") && e.contains("missing"),
        "{e}"
    );
}
