//! Shared helpers of the model tests: fixture paths and golden files.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

pub const CHECKPOINTS: &[&str] = &["tiny-gemma3", "tiny-gemma3-text"];

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

pub struct GoldenPrompt {
    pub name: String,
    pub input_ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
    pub greedy_top5: Vec<Vec<(u32, f32)>>,
    pub natural_ids: Vec<u32>,
    pub natural_finish: String,
    pub bf16_first_token: u32,
}

pub struct Goldens {
    pub eos_suppressed: Vec<u32>,
    pub prompts: Vec<GoldenPrompt>,
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn goldens(checkpoint: &str) -> Goldens {
    let text = std::fs::read_to_string(fixture(&format!("{checkpoint}/goldens.json"))).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let prompts = v["prompts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, p)| GoldenPrompt {
            name: name.clone(),
            input_ids: ids(&p["input_ids"]),
            greedy_ids: ids(&p["greedy_ids"]),
            greedy_top5: p["greedy_top5"]
                .as_array()
                .unwrap()
                .iter()
                .map(|step| {
                    step.as_array()
                        .unwrap()
                        .iter()
                        .map(|e| (e[0].as_u64().unwrap() as u32, e[1].as_f64().unwrap() as f32))
                        .collect()
                })
                .collect(),
            natural_ids: ids(&p["natural"]["ids"]),
            natural_finish: p["natural"]["finish_reason"].as_str().unwrap().to_string(),
            bf16_first_token: p["bf16_first_token"].as_u64().unwrap() as u32,
        })
        .collect();
    Goldens {
        eos_suppressed: ids(&v["eos_suppressed_in_greedy"]),
        prompts,
    }
}
