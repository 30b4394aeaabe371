//! The rows attention (`paged_rows`) end to end on the device. The fixtures' heads
//! (24 wide) are not ones the kernel takes, so a synthetic model of the text
//! fixture's shapes with 64-wide heads runs two steps of three sequences through the
//! rows kernel and through the per-sequence path, each into its own KV pool: prompts
//! of 5, 17 and 40 tokens, then a decode, a 24-token chunk that continues a prompt
//! past the sliding window, and another decode. The logits must agree. On the CPU
//! the rows run in their host form (the tests' reference), which checks the plan.

use anyhow::Result;
use medgemma_core::{DirectBlocks, SamplingParams, ScheduledSeq};
use medgemma_model::kv::KvPool;
use medgemma_model::{DType, Device, ForwardBatch, ModelConfig};

/// Runs the comparison on the shapes of the checkpoint in `fixture`; prints one
/// line; `Ok(false)` when the logits disagree.
pub fn check(device: &Device, fixture: &std::path::Path, dtype: DType) -> Result<bool> {
    let mut cfg = ModelConfig::from_file(&fixture.join("config.json"))?;
    cfg.text.head_dim = 64;
    let text = cfg.text.clone();
    let model = medgemma_model::synthetic_model(cfg, dtype, device)?;
    let pool = |rows: bool| -> Result<KvPool> {
        Ok(KvPool::new(&text, 16, 64, dtype, device)?.with_paged_rows(rows))
    };
    let (rows, plain) = (pool(true)?, pool(false)?);
    let mut blocks = DirectBlocks::new(&rows.layout(text.max_position_embeddings));
    let steps: [[(usize, usize); 3]; 2] = [[(0, 5), (0, 17), (0, 40)], [(5, 1), (17, 24), (40, 1)]];
    let mut worst = 0f64;
    for step in steps {
        let mut batch = ForwardBatch::default();
        for (id, &(start, len)) in step.iter().enumerate() {
            let tokens: Vec<u32> = (0..len)
                .map(|i| ((id * 131 + (start + i) * 17) % text.vocab_size) as u32)
                .collect();
            let mut seq = ScheduledSeq {
                seq_id: id as u64,
                tokens: tokens.clone(),
                start_pos: start,
                sample: true,
                sampling: SamplingParams::greedy(),
                images: Vec::new(),
                block_tables: Vec::new(),
                cached_prefix: Vec::new(),
            };
            blocks.assign(&mut seq)?;
            let i = batch.push(&tokens, start, true);
            batch.spans[i].block_tables = seq.block_tables;
        }
        if !medgemma_model::kv_rows::worth_it(&batch) {
            anyhow::bail!("rows attention check: the step does not take the rows kernel");
        }
        let flat = |t: medgemma_model::Tensor| -> Result<Vec<f64>> {
            Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?)
        };
        let got = flat(model.text.forward(&batch, &rows)?)?;
        let want = flat(model.text.forward(&batch, &plain)?)?;
        worst = worst.max(super::relative_l2(&got, &want));
    }
    // Half precision rounds differently on the two paths (the per-sequence path
    // rounds the probabilities before their product with the values), and two
    // correct bf16 runs of these random weights drift apart end to end by several
    // 1e-2 (README, "Numerics"): so f32 is the exact check, bf16 a bound.
    let tol = if dtype == DType::F32 { 1e-5 } else { 5e-2 };
    let what = "rows attention end to end (3 sequences, 2 steps), logits against the per-sequence path, relative L2";
    Ok(super::kernels::report(what, dtype, worst, tol))
}
