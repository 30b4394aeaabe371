//! `check`: seeded top-k sampling (plain, and with a bias and penalties) with each
//! row sent to the host as its largest logits and its changed tokens' logits
//! (`medgemma_model::topk`: the kernel on a GPU, its host form on the CPU) draws
//! the tokens the whole rows draw, on the same device.

use std::path::Path;

use anyhow::Result;
use medgemma_core::SamplingParams;
use medgemma_model::{DType, Device};

use super::goldens::GoldenPrompt;

/// Runs every prompt sampled (temperature 1, top-k 64, top-p 0.95, seeded; odd
/// prompts also with a bias and frequency and presence penalties) on the device
/// with candidates and with whole rows; prints one line for the fixture and
/// returns whether all tokens agreed.
pub fn check(name: &str, dir: &Path, device: &Device, prompts: &[GoldenPrompt]) -> Result<bool> {
    let mut top = super::executor(dir, DType::F32, device)?.with_topk_candidates(true);
    let mut whole = super::executor(dir, DType::F32, device)?.with_topk_candidates(false);
    let mut same = 0;
    for (i, p) in prompts.iter().enumerate() {
        let mut sampling = SamplingParams {
            temperature: 1.0,
            top_k: 64,
            top_p: 0.95,
            seed: Some(i as u64),
            ..SamplingParams::default()
        };
        if i % 2 == 1 {
            sampling.logit_bias = vec![(p.input_ids[0], 2.0)];
            sampling.frequency_penalty = 0.5;
            sampling.presence_penalty = 0.3;
        }
        let n = p.greedy_ids.len();
        let a = medgemma_model::generate(&mut top, 4, &p.input_ids, &sampling, &[], n)?;
        let b = medgemma_model::generate(&mut whole, 4, &p.input_ids, &sampling, &[], n)?;
        same += usize::from(a.tokens == b.tokens);
    }
    let ok = same == prompts.len();
    println!(
        "{name}: f32 sampled (top-k 64; half with a bias and penalties), rows sent as their largest logits: {} \
         (tokens = whole rows' on {same}/{} prompts)",
        super::verdict(ok),
        prompts.len()
    );
    Ok(ok)
}
