//! Image goldens of tiny-gemma3 (transformers' Gemma3Processor, PIL backend, and
//! Gemma3ForConditionalGeneration in f32) and the processor's pixel values.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use medgemma_core::ImageInput;
use serde_json::Value;

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

pub struct ImagePrompt {
    pub name: String,
    /// Keys into the pixel-value file, one per image the model sees (crops included).
    pub pixel_keys: Vec<String>,
    pub input_ids: Vec<u32>,
    pub token_type_ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
    pub greedy_top5: Vec<Vec<(u32, f32)>>,
}

pub struct ImageGoldens {
    pub eos_suppressed: Vec<u32>,
    pub prompts: Vec<ImagePrompt>,
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn pixel_keys(p: &Value) -> Vec<String> {
    let files: Vec<String> = p["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    if p["do_pan_and_scan"].as_bool().unwrap() {
        let n = p["num_pixel_images"].as_u64().unwrap();
        assert_eq!(files.len(), 1, "pan-and-scan goldens use one image");
        return (0..n)
            .map(|i| format!("{}#pan_and_scan{i}", files[0]))
            .collect();
    }
    files
}

pub fn image_goldens() -> ImageGoldens {
    let path = fixture("tiny-gemma3/image_goldens.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let prompts = v["prompts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, p)| ImagePrompt {
            name: name.clone(),
            pixel_keys: pixel_keys(p),
            input_ids: ids(&p["input_ids"]),
            token_type_ids: ids(&p["token_type_ids"]),
            greedy_ids: ids(&p["greedy_ids"]),
            greedy_top5: p["greedy_top5"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    s.as_array()
                        .unwrap()
                        .iter()
                        .map(|e| (e[0].as_u64().unwrap() as u32, e[1].as_f64().unwrap() as f32))
                        .collect()
                })
                .collect(),
        })
        .collect();
    ImageGoldens {
        eos_suppressed: ids(&v["eos_suppressed_in_greedy"]),
        prompts,
    }
}

/// The processor's pixel values, `[3, 32, 32]` each, by image file name.
pub fn pixel_values() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("images/pixel_values.safetensors"), &Device::Cpu)
        .unwrap()
}

/// Runs of `image_token` in `ids`: (start, len).
pub fn soft_token_runs(ids: &[u32], image_token: u32) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        if ids[i] == image_token {
            let start = i;
            while i < ids.len() && ids[i] == image_token {
                i += 1;
            }
            runs.push((start, i - start));
        } else {
            i += 1;
        }
    }
    runs
}

/// The prompt's images as the engine receives them.
pub fn image_inputs(
    p: &ImagePrompt,
    pixels: &HashMap<String, Tensor>,
    image_token: u32,
) -> Vec<ImageInput> {
    let runs = soft_token_runs(&p.input_ids, image_token);
    assert_eq!(
        runs.len(),
        p.pixel_keys.len(),
        "{}: one run per image",
        p.name
    );
    runs.iter()
        .zip(&p.pixel_keys)
        .map(|(&(start, len), key)| {
            let t = &pixels[key];
            let (c, h, w) = t.dims3().unwrap();
            let data: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            ImageInput::new(Arc::from(data), [c, h, w], start, len)
        })
        .collect()
}
