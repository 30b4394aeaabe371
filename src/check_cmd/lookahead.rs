//! `check`: plain greedy decoding with each replayed decode step queued ahead of
//! the previous one's tokens (`medgemma_model::lookahead`) gives the CPU's ids.

use std::path::Path;

use anyhow::Result;
use medgemma_core::SamplingParams;
use medgemma_model::{CandleExecutor, DType, DecodeReplay, Device};

use super::goldens::GoldenPrompt;

/// Runs every prompt plain greedy (no token suppressed, so the ids come from the
/// device's argmax) on the CPU and on the device, decode steps replayed from CUDA
/// graphs on a GPU (on the CPU: the graphs' inputs with the forward re-run, which
/// runs the same lookahead); prints one line for the fixture and returns whether
/// all ids agreed.
pub fn check(
    name: &str,
    dir: &Path,
    device: &Device,
    cpu: &mut CandleExecutor,
    prompts: &[GoldenPrompt],
) -> Result<bool> {
    let mut dev = super::executor(dir, DType::F32, device)?;
    if !device.is_cuda() {
        dev = dev.with_decode_replay(DecodeReplay::Rerun);
    }
    let dev = &mut dev;
    let greedy = SamplingParams::greedy();
    let stats = dev.lookahead_stats();
    let before = (stats.launched(), stats.used());
    let mut same = 0;
    for p in prompts {
        let n = p.greedy_ids.len();
        let want = medgemma_model::generate(cpu, 3, &p.input_ids, &greedy, &[], n)?.tokens;
        let got = medgemma_model::generate(dev, 3, &p.input_ids, &greedy, &[], n)?.tokens;
        same += usize::from(got == want);
    }
    let (launched, used) = (stats.launched() - before.0, stats.used() - before.1);
    let ok = same == prompts.len() && !stats.failed();
    println!(
        "{name}: f32 plain greedy, decode steps run ahead: {} (ids = CPU on {same}/{} prompts; \
         {used} of {launched} steps run ahead used; {})",
        super::verdict(ok),
        prompts.len(),
        match stats.failed() {
            true => "turned off: a check against the usual step or a launch failed",
            false => "its checks against the usual step passed",
        }
    );
    Ok(ok)
}
