//! The benchmark's requests: random prompt tokens (distinct per request, never a
//! special id), random pixels, and the stop rule that makes every request generate
//! exactly its token budget.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use medgemma_core::{GenerateRequest, ImageInput, Prompt, SamplingParams, StopCriteria};
use medgemma_model::config::MultimodalConfig;
use medgemma_model::ModelConfig;

/// SplitMix64: a tiny deterministic generator for prompts and pixels (noise, not
/// cryptography; no extra dependency).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is far below noise here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[-1, 1)`, the range of normalized pixels.
    pub fn signed_unit(&mut self) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        u * 2.0 - 1.0
    }
}

/// The ids a random prompt draws from: `lo..hi` without the model's special ids.
pub struct TokenPool {
    lo: u32,
    hi: u32,
    special: Vec<u32>,
}

impl TokenPool {
    /// Skips the control tokens at the bottom of the vocabulary, stops below the
    /// image soft token (above it are padding rows no tokenizer emits), and leaves
    /// out end-of-sequence, padding, BOS and the image markers.
    pub fn new(cfg: &ModelConfig) -> Result<Self> {
        let vocab = cfg.text.vocab_size as u32;
        let lo = if vocab > 4096 { 256 } else { vocab / 8 };
        let mut hi = vocab;
        let mut special: Vec<u32> = cfg.eos_token_ids.clone();
        special.extend(cfg.bos_token_id);
        special.extend(cfg.pad_token_id);
        if let Some(mm) = &cfg.multimodal {
            if mm.image_token_id > lo {
                hi = hi.min(mm.image_token_id);
            }
            special.extend([mm.image_token_id, mm.boi_token_id, mm.eoi_token_id]);
        }
        special.retain(|&t| (lo..hi).contains(&t));
        special.sort_unstable();
        special.dedup();
        if hi <= lo || ((hi - lo) as usize) < 2 * special.len() + 16 {
            bail!("the vocabulary ({vocab} ids) is too small for random prompts");
        }
        Ok(Self { lo, hi, special })
    }

    pub fn draw(&self, rng: &mut Rng) -> u32 {
        loop {
            let t = self.lo + rng.below(u64::from(self.hi - self.lo)) as u32;
            if self.special.binary_search(&t).is_err() {
                return t;
            }
        }
    }

    pub fn prompt(&self, rng: &mut Rng, len: usize) -> Vec<u32> {
        (0..len).map(|_| self.draw(rng)).collect()
    }
}

/// A request that generates exactly `max_tokens` tokens, greedily, whatever they are.
pub fn request(id: String, prompt: Prompt, max_tokens: usize, eos: &[u32]) -> GenerateRequest {
    sampled_request(id, prompt, max_tokens, eos, SamplingParams::greedy())
}

/// How the measured requests choose tokens: greedy, or drawn as a request that
/// leaves MedGemma's `generation_config.json` defaults alone is (temperature 1,
/// top-k 64, top-p 0.95), seeded per request.
pub fn sampling(sampled: bool, seed: u64) -> SamplingParams {
    match sampled {
        false => SamplingParams::greedy(),
        true => SamplingParams {
            temperature: 1.0,
            top_k: 64,
            top_p: 0.95,
            seed: Some(seed),
            ..SamplingParams::default()
        },
    }
}

/// `request`, choosing tokens with `sampling`.
pub fn sampled_request(
    id: String,
    prompt: Prompt,
    max_tokens: usize,
    eos: &[u32],
    sampling: SamplingParams,
) -> GenerateRequest {
    GenerateRequest {
        id,
        prompt,
        sampling,
        stop: StopCriteria {
            stop_token_ids: eos.to_vec(),
            stop_strings: Vec::new(),
            ignore_eos: true,
        },
        max_new_tokens: max_tokens,
        arrival: Instant::now(),
        cache_salt: None,
        priority: 0,
    }
}

/// `text` split in two around `images` images, each as the model takes it:
/// `<start_of_image>`, `mm_tokens_per_image` soft tokens, `<end_of_image>`,
/// with random pixels of the tower's size.
pub fn image_prompt(text: &[u32], images: usize, mm: &MultimodalConfig, rng: &mut Rng) -> Prompt {
    let (head, tail) = text.split_at(text.len() / 2);
    let mut token_ids = head.to_vec();
    let mut inputs = Vec::with_capacity(images);
    let (c, s) = (mm.vision.num_channels, mm.vision.image_size);
    for _ in 0..images {
        token_ids.push(mm.boi_token_id);
        let placeholder_start = token_ids.len();
        token_ids.extend(std::iter::repeat_n(
            mm.image_token_id,
            mm.mm_tokens_per_image,
        ));
        token_ids.push(mm.eoi_token_id);
        let pixels: Arc<[f32]> = (0..c * s * s).map(|_| rng.signed_unit()).collect();
        inputs.push(ImageInput::new(
            pixels,
            [c, s, s],
            placeholder_start,
            mm.mm_tokens_per_image,
        ));
    }
    token_ids.extend_from_slice(tail);
    Prompt {
        token_ids,
        images: inputs,
    }
}

/// Prompt length of `image_prompt` for `text_len` text tokens.
pub fn image_prompt_len(text_len: usize, images: usize, mm: &MultimodalConfig) -> usize {
    text_len + images * (mm.mm_tokens_per_image + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ModelConfig {
        medgemma_model::synthetic::preset("medgemma-4b").expect("preset")
    }

    #[test]
    fn prompts_avoid_special_ids_and_differ() {
        let cfg = config();
        let pool = TokenPool::new(&cfg).expect("pool");
        let mut rng = Rng::new(7);
        let a = pool.prompt(&mut rng, 4096);
        let b = pool.prompt(&mut rng, 4096);
        assert_ne!(a, b);
        for t in a.iter().chain(&b) {
            assert!((256..262_144).contains(t), "{t}");
            assert!(![1, 106, 2, 0, 255_999, 256_000].contains(t), "{t}");
        }
    }

    #[test]
    fn image_prompts_place_each_image_on_its_soft_tokens() {
        let cfg = config();
        let mm = cfg.multimodal.as_ref().expect("vision");
        let text: Vec<u32> = (1000..1020).collect();
        let p = image_prompt(&text, 2, mm, &mut Rng::new(1));
        assert_eq!(p.token_ids.len(), image_prompt_len(20, 2, mm));
        assert_eq!(p.images.len(), 2);
        for img in &p.images {
            let span = &p.token_ids[img.placeholder_start..][..img.placeholder_len];
            assert!(span.iter().all(|&t| t == mm.image_token_id));
            assert_eq!(p.token_ids[img.placeholder_start - 1], mm.boi_token_id);
            assert_eq!(p.token_ids[img.placeholder_start + 256], mm.eoi_token_id);
            assert_eq!(img.pixels.len(), 3 * 896 * 896);
        }
    }
}
