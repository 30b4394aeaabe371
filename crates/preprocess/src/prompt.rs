//! Image placeholders in prompts (transformers' Gemma3Processor): every image
//! marker (`boi_token`, `<start_of_image>`) in the rendered chat becomes
//! `"\n\n" + boi + image_token × mm_tokens_per_image + eoi + "\n\n"` — or, for an
//! image with pan-and-scan crops, "Here is the original image {FULL} and here are
//! some crops to help you see better {FULL} {FULL}…" — and THEN the whole string
//! is tokenized, so newlines merge with their neighbours as in the reference.

use std::path::Path;

use medgemma_core::{ImageInput, Prompt};
use serde_json::Value as Json;

use crate::error::PreprocessError;
use crate::tokenizer::TextProcessor;
use crate::vision::PixelImage;

/// The checkpoint's image token strings and the soft tokens per image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTokens {
    pub boi_token: String,
    pub eoi_token: String,
    pub image_token: String,
    pub image_token_id: u32,
    pub tokens_per_image: usize,
}

fn read_json(path: &Path) -> Option<Json> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// A special token from tokenizer_config.json (top level or extra_special_tokens).
fn named_token(tok_cfg: Option<&Json>, key: &str) -> Option<String> {
    let c = tok_cfg?;
    let v = c
        .get(key)
        .or_else(|| c.get("extra_special_tokens").and_then(|e| e.get(key)))?;
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(String::from),
        _ => None,
    }
}

impl ImageTokens {
    /// From tokenizer_config.json, else from config.json's ids through the tokenizer;
    /// `tokens_per_image` from config.json `mm_tokens_per_image`.
    pub fn load(dir: &Path, text: &TextProcessor) -> Result<Self, PreprocessError> {
        let tok_cfg = read_json(&dir.join("tokenizer_config.json"));
        let cfg = read_json(&dir.join("config.json"));
        let by_id = |keys: [&str; 2]| {
            let id = keys.iter().find_map(|k| cfg.as_ref()?.get(*k)?.as_u64())?;
            text.id_to_token(id as u32)
        };
        let missing =
            |what: &str| PreprocessError::Tokenizer(format!("the checkpoint names no {what}"));
        let boi_token = named_token(tok_cfg.as_ref(), "boi_token")
            .or_else(|| by_id(["boi_token_index", "boi_token_id"]))
            .ok_or_else(|| missing("boi_token"))?;
        let eoi_token = named_token(tok_cfg.as_ref(), "eoi_token")
            .or_else(|| by_id(["eoi_token_index", "eoi_token_id"]))
            .ok_or_else(|| missing("eoi_token"))?;
        let image_token = named_token(tok_cfg.as_ref(), "image_token")
            .or_else(|| by_id(["image_token_index", "image_token_id"]))
            .ok_or_else(|| missing("image_token"))?;
        let image_token_id = text
            .token_to_id(&image_token)
            .ok_or_else(|| missing("id for the image token"))?;
        let tokens_per_image =
            cfg.as_ref()
                .and_then(|c| c.get("mm_tokens_per_image"))
                .and_then(Json::as_u64)
                .ok_or_else(|| missing("mm_tokens_per_image in config.json"))? as usize;
        Ok(Self {
            boi_token,
            eoi_token,
            image_token,
            image_token_id,
            tokens_per_image,
        })
    }

    fn full_sequence(&self) -> String {
        format!(
            "\n\n{}{}{}\n\n",
            self.boi_token,
            self.image_token.repeat(self.tokens_per_image),
            self.eoi_token
        )
    }

    /// Replaces the i-th marker by image i's placeholder; `crops[i]` is the number
    /// of pan-and-scan crops of image i.
    pub fn expand(&self, text: &str, crops: &[usize]) -> Result<String, PreprocessError> {
        let markers = text.matches(self.boi_token.as_str()).count();
        if markers != crops.len() {
            return Err(PreprocessError::ImageCount {
                markers,
                images: crops.len(),
            });
        }
        let full = self.full_sequence();
        let mut out = String::with_capacity(text.len() + crops.len() * full.len());
        for (i, part) in text.split(self.boi_token.as_str()).enumerate() {
            if i > 0 {
                match crops[i - 1] {
                    0 => out.push_str(&full),
                    k => {
                        out.push_str("Here is the original image ");
                        out.push_str(&full);
                        out.push_str(" and here are some crops to help you see better ");
                        out.push_str(&vec![full.as_str(); k].join(" "));
                    }
                }
            }
            out.push_str(part);
        }
        Ok(out)
    }

    /// Expands and tokenizes a rendered prompt; `images[i]` is image i with its
    /// crops (as `ImageProcessor::process` returns them).
    pub fn build_prompt(
        &self,
        text: &TextProcessor,
        rendered: &str,
        images: Vec<Vec<PixelImage>>,
    ) -> Result<Prompt, PreprocessError> {
        let crops: Vec<usize> = images.iter().map(|v| v.len().saturating_sub(1)).collect();
        if images.iter().any(Vec::is_empty) {
            return Err(PreprocessError::Tokenizer("an image has no pixels".into()));
        }
        let token_ids = text.encode(&self.expand(rendered, &crops)?)?;
        let runs = self.soft_token_runs(&token_ids);
        let flat: Vec<PixelImage> = images.into_iter().flatten().collect();
        if runs.len() != flat.len() || runs.iter().any(|r| r.1 != self.tokens_per_image) {
            return Err(PreprocessError::ImagePlaceholders {
                found: runs.len(),
                images: flat.len(),
            });
        }
        let images = runs
            .into_iter()
            .zip(flat)
            .map(|((start, len), img)| {
                ImageInput::new(img.pixels, [3, img.height, img.width], start, len)
            })
            .collect();
        Ok(Prompt { token_ids, images })
    }

    /// Maximal runs of the image token: (start, len).
    fn soft_token_runs(&self, ids: &[u32]) -> Vec<(usize, usize)> {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for (i, &t) in ids.iter().enumerate() {
            if t != self.image_token_id {
                continue;
            }
            match runs.last_mut() {
                Some((s, l)) if *s + *l == i && *l < self.tokens_per_image => *l += 1,
                _ => runs.push((i, 1)),
            }
        }
        runs
    }
}
