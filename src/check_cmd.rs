//! `medgemma-server check`: the device's numerics on the fixture checkpoints.
//!
//! For every fixture folder with a goldens.json: (a) greedy ids in f32 on the device
//! (end-of-sequence suppressed, as the goldens were made) must equal transformers'
//! and the CPU's; (b) in bf16 (f16 on GPUs older than sm_80) every stage of the
//! prefill (the embedding, each layer, the head's logits) on the device, run from
//! the CPU's input to that stage in the same dtype, must be within the tolerance
//! (relative L2) of the CPU's output of it. Stage by stage, because end to end two
//! correct bf16 runs of these random-weight checkpoints drift apart by several
//! 1e-2: transformers' own eager and sdpa attention differ by up to 3.0e-2, and
//! its bf16 matmuls with and without f32 accumulation by up to 1.4e-2
//! (README, "Numerics"). The end-to-end logit distances are printed beside it; the
//! logits come from the executor's full log-softmax, centered (the logits minus
//! their mean, exactly, since log-softmax only subtracts a constant). (c) Plain
//! greedy ids in f32, decode steps replayed and run one step ahead, must equal the
//! CPU's. (d) Seeded top-k sampling with rows sent as their largest logits must
//! draw the tokens the whole rows draw on the same device.

mod goldens;
mod kernels;
mod lookahead;
mod rows;
mod sampled;
mod stages;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use medgemma_core::{SamplingParams, TokenLogprobs};
use medgemma_model::{
    CandleExecutor, DType, DecodeReplay, Device, Gemma3, KvBudget, KvCacheConfig,
};

use crate::cli::CheckArgs;
use goldens::{GoldenPrompt, Goldens};

/// The KV cache of each executor: plenty for the tiny fixtures.
const KV_BYTES: u64 = 256 << 20;

/// The four executors of one fixture.
struct Runs {
    cpu: CandleExecutor,
    cpu_low: CandleExecutor,
    dev_f32: CandleExecutor,
    dev_low: CandleExecutor,
    vocab: usize,
}

/// The worst case seen, and how many checks failed.
#[derive(Default)]
struct Summary {
    prompts: usize,
    failures: usize,
    worst_low: (f64, String),
    worst_end_to_end: (f64, String),
    worst_f32: (f64, String),
}

pub fn run(args: CheckArgs) -> Result<()> {
    let device = crate::load::device(&args.device)?;
    let low = match medgemma_model::auto_dtype(&device) {
        DType::F32 => DType::BF16,
        other => other,
    };
    let fixtures = fixtures(&args.fixtures)?;
    println!(
        "check: {} ({}) in f32 against the CPU and transformers' goldens, in {} against the CPU",
        medgemma_model::device_name(&device),
        args.device,
        low.as_str()
    );
    let mut summary = Summary::default();
    for dir in &fixtures {
        check_fixture(dir, &device, low, args.tolerance, &mut summary)?;
    }
    if !kernels::check(&device)? {
        summary.failures += 1;
    }
    for dtype in [DType::F32, low] {
        if !rows::check(&device, &fixtures[0], dtype)? {
            summary.failures += 1;
        }
    }
    println!(
        "check: {} prompts in {} fixtures, {} failed; worst {} stage error {:.2e} ({}; tolerance {:.0e}), \
         end to end {:.2e} ({}); worst f32 device-vs-CPU {:.2e} ({})",
        summary.prompts,
        fixtures.len(),
        summary.failures,
        low.as_str(),
        summary.worst_low.0,
        summary.worst_low.1,
        args.tolerance,
        summary.worst_end_to_end.0,
        summary.worst_end_to_end.1,
        summary.worst_f32.0,
        summary.worst_f32.1,
    );
    if summary.failures > 0 {
        bail!(
            "{} of {} prompts failed the check",
            summary.failures,
            summary.prompts
        );
    }
    Ok(())
}

/// Fixture folders under `root` that hold goldens.json and config.json, sorted.
fn fixtures(root: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("goldens.json").is_file() && p.join("config.json").is_file())
        .collect();
    found.sort();
    if found.is_empty() {
        bail!(
            "no fixture with goldens.json and config.json under {}",
            root.display()
        );
    }
    Ok(found)
}

fn executor(dir: &Path, dtype: DType, device: &Device) -> Result<CandleExecutor> {
    let model = Gemma3::load(dir, dtype, device)?;
    let kv = KvCacheConfig {
        budget: KvBudget::Bytes(KV_BYTES),
        max_num_seqs: 1,
        ..KvCacheConfig::default()
    };
    // Decode steps replay from CUDA graphs on a GPU, as the server runs them.
    Ok(CandleExecutor::new(model, &kv)?.with_decode_replay(DecodeReplay::CudaGraphs))
}

fn check_fixture(
    dir: &Path,
    device: &Device,
    low: DType,
    tol: f64,
    summary: &mut Summary,
) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let goldens = goldens::load(&dir.join("goldens.json"))?;
    let cpu = executor(dir, DType::F32, &Device::Cpu)?;
    let vocab = cpu.model().config.text.vocab_size;
    let mut runs = Runs {
        cpu,
        cpu_low: executor(dir, low, &Device::Cpu)?,
        dev_f32: executor(dir, DType::F32, device)
            .with_context(|| format!("{name}: f32 on the device"))?,
        dev_low: executor(dir, low, device)
            .with_context(|| format!("{name}: {} on the device", low.as_str()))?,
        vocab,
    };
    for p in &goldens.prompts {
        let label = format!("{name}/{}", p.name);
        let ok = check_prompt(&mut runs, &goldens, p, &label, tol, summary)
            .with_context(|| label.clone())?;
        summary.prompts += 1;
        if !ok {
            summary.failures += 1;
        }
    }
    if device.is_cuda() {
        for (dtype, run) in [("f32", &runs.dev_f32), (low.as_str(), &runs.dev_low)] {
            println!("{name}: {}", graphs_note(dtype, run));
        }
    }
    if !lookahead::check(&name, dir, device, &mut runs.cpu, &goldens.prompts)? {
        summary.failures += 1;
    }
    if !sampled::check(&name, dir, device, &goldens.prompts)? {
        summary.failures += 1;
    }
    Ok(())
}

/// How a device run's decode steps ran.
fn graphs_note(dtype: &str, run: &CandleExecutor) -> String {
    let shapes = run.captured_decode_steps();
    if run.decode_graphs_active() {
        format!("{dtype} decode steps replayed from {shapes} captured CUDA graph shapes")
    } else {
        format!(
            "{dtype} decode graphs OFF: a capture failed or disagreed with the eager step \
             (the warning above says which); every step ran eagerly after it"
        )
    }
}

/// Checks one prompt and prints its line; `Ok(false)` when a check fails.
fn check_prompt(
    runs: &mut Runs,
    goldens: &Goldens,
    p: &GoldenPrompt,
    label: &str,
    tol: f64,
    summary: &mut Summary,
) -> Result<bool> {
    let n = p.greedy_ids.len();
    let greedy = SamplingParams {
        suppress_tokens: goldens.eos_suppressed.clone(),
        ..SamplingParams::greedy()
    };
    let cpu_ids = medgemma_model::generate(&mut runs.cpu, 1, &p.input_ids, &greedy, &[], n)?.tokens;
    let dev_ids =
        medgemma_model::generate(&mut runs.dev_f32, 2, &p.input_ids, &greedy, &[], n)?.tokens;
    let ids_ok = dev_ids == p.greedy_ids && dev_ids == cpu_ids;
    let ids_note = if ids_ok {
        format!("{n}/{n} ids = goldens = CPU")
    } else {
        mismatch(&dev_ids, &p.greedy_ids, &cpu_ids)
    };

    let stages = stages::compare(
        &runs.cpu_low.model().text,
        &runs.cpu.model().text,
        &runs.dev_low.model().text,
        &p.input_ids,
    )?;
    let low_ok = stages.device <= tol;
    note_worst(&mut summary.worst_low, stages.device, label);

    let reference = first_logits(&mut runs.cpu, &p.input_ids, &greedy, runs.vocab)?;
    let low_reference = first_logits(&mut runs.cpu_low, &p.input_ids, &greedy, runs.vocab)?;
    let low = first_logits(&mut runs.dev_low, &p.input_ids, &greedy, runs.vocab)?;
    let f32_dev = first_logits(&mut runs.dev_f32, &p.input_ids, &greedy, runs.vocab)?;
    let f32_err = relative_error(&f32_dev, &reference);
    note_worst(&mut summary.worst_f32, f32_err, label);
    note_worst(
        &mut summary.worst_end_to_end,
        relative_l2(&low, &low_reference),
        label,
    );

    let first_low = argmax(&low);
    let bf16_note = match p.bf16_first_token {
        Some(t) => format!("first token {first_low} (transformers bf16: {t})"),
        None => format!("first token {first_low}"),
    };
    println!(
        "{label}: f32 {} ({ids_note}); low precision stage by stage vs CPU: worst {:.1e} in the {} {} \
         (f32 from the same inputs: {:.1e}); end to end: logits L2 {:.1e} vs CPU, {:.1e} vs CPU f32 \
         (CPU's own: {:.1e}), {bf16_note}; f32 logits vs CPU {:.1e}",
        verdict(ids_ok),
        stages.device,
        stages.stage,
        verdict(low_ok),
        stages.rounding,
        relative_l2(&low, &low_reference),
        relative_l2(&low, &reference),
        relative_l2(&low_reference, &reference),
        f32_err
    );
    Ok(ids_ok && low_ok)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAIL"
    }
}

fn note_worst(worst: &mut (f64, String), err: f64, label: &str) {
    if err > worst.0 || worst.1.is_empty() {
        *worst = (err, label.to_string());
    }
}

/// Where the device's ids first part from the goldens' or the CPU's.
fn mismatch(dev: &[u32], golden: &[u32], cpu: &[u32]) -> String {
    let step = (0..dev.len().max(golden.len()).max(cpu.len()))
        .find(|&i| dev.get(i) != golden.get(i) || dev.get(i) != cpu.get(i))
        .unwrap_or(0);
    let show = |v: &[u32]| v.get(step).map_or("none".to_string(), u32::to_string);
    format!(
        "step {step}: device {}, goldens {}, CPU {}",
        show(dev),
        show(golden),
        show(cpu)
    )
}

/// The first step's logits, centered, recovered from the full log-softmax.
fn first_logits(
    exec: &mut CandleExecutor,
    prompt: &[u32],
    greedy: &SamplingParams,
    vocab: usize,
) -> Result<Vec<f64>> {
    let params = SamplingParams {
        logprobs: Some(vocab),
        ..greedy.clone()
    };
    let out = medgemma_model::generate(exec, 3, prompt, &params, &[], 1)?;
    let Some(Some(lp)) = out.logprobs.first() else {
        bail!("the executor returned no log-probabilities");
    };
    centered(lp, vocab)
}

/// Logits minus their mean, from log-probabilities covering the whole vocabulary.
fn centered(lp: &TokenLogprobs, vocab: usize) -> Result<Vec<f64>> {
    let mut v = vec![f64::NAN; vocab];
    for &(id, l) in &lp.top {
        if let Some(slot) = v.get_mut(id as usize) {
            *slot = f64::from(l);
        }
    }
    if v.iter().any(|x| !x.is_finite()) {
        bail!(
            "the log-probabilities cover {} of {vocab} tokens or are not finite",
            lp.top.len()
        );
    }
    let mean = v.iter().sum::<f64>() / vocab as f64;
    Ok(v.into_iter().map(|x| x - mean).collect())
}

/// ||a - b|| / ||b|| (L2).
fn relative_l2(a: &[f64], b: &[f64]) -> f64 {
    let norm = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        diff / norm
    } else {
        diff
    }
}

/// max |a - b| / max |b|.
fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    if scale > 0.0 {
        diff / scale
    } else {
        diff
    }
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centered_logits_drop_the_log_softmax_constant() {
        let logits = [1.0f32, 3.0, -2.0, 0.5];
        let lse = logits.iter().map(|&l| f64::from(l).exp()).sum::<f64>().ln();
        let lp = TokenLogprobs {
            logprob: 0.0,
            top: logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, (f64::from(l) - lse) as f32))
                .collect(),
        };
        let c = centered(&lp, 4).expect("covers the vocabulary");
        let mean = 2.5 / 4.0;
        for (got, &l) in c.iter().zip(&logits) {
            assert!((got - (f64::from(l) - mean)).abs() < 1e-6);
        }
        assert!(centered(&lp, 5).is_err(), "a missing token is an error");
        assert_eq!(argmax(&c), 1);
    }

    #[test]
    fn relative_error_is_scaled_by_the_reference() {
        assert!((relative_error(&[1.0, -2.1], &[1.0, -2.0]) - 0.05).abs() < 1e-12);
        assert_eq!(relative_error(&[0.0], &[0.0]), 0.0);
        assert!((relative_l2(&[3.0, 4.4], &[3.0, 4.0]) - 0.08).abs() < 1e-12);
    }

    #[test]
    fn mismatch_names_the_first_differing_step() {
        assert_eq!(
            mismatch(&[1, 2, 3], &[1, 2, 4], &[1, 2, 3]),
            "step 2: device 3, goldens 4, CPU 3"
        );
        assert_eq!(
            mismatch(&[1], &[1, 2], &[1]),
            "step 1: device none, goldens 2, CPU none"
        );
    }
}
