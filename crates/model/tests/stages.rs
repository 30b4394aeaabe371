//! The decoder run stage by stage (what `check` compares devices with) against the
//! whole forward, and bf16 stage by stage against f32 from the same inputs.

mod common;

use common::{fixture, goldens, CHECKPOINTS};
use medgemma_core::{BlockTable, DirectBlocks, SamplingParams, ScheduledSeq};
use medgemma_model::stages::{relative_l2, state_error, Prefill};
use medgemma_model::{DType, Device, ForwardBatch, Gemma3, KvPool};

fn model(ckpt: &str, dtype: DType) -> Gemma3 {
    Gemma3::load(&fixture(ckpt), dtype, &Device::Cpu).unwrap()
}

fn block_tables(pool: &KvPool, ids: &[u32]) -> Vec<BlockTable> {
    let mut seq = ScheduledSeq {
        seq_id: 1,
        tokens: ids.to_vec(),
        start_pos: 0,
        sample: true,
        sampling: SamplingParams::greedy(),
        images: Vec::new(),
        block_tables: Vec::new(),
        cached_prefix: Vec::new(),
    };
    DirectBlocks::new(&pool.layout(ids.len()))
        .assign(&mut seq)
        .unwrap();
    seq.block_tables
}

/// The stages chained give the forward's logits exactly.
#[test]
fn the_stages_chained_are_the_forward() {
    for ckpt in CHECKPOINTS {
        let m = model(ckpt, DType::F32);
        let p = &goldens(ckpt).prompts[0];
        let trace = Prefill::new(&m.text, &p.input_ids)
            .unwrap()
            .trace()
            .unwrap();
        assert_eq!(trace.states.len(), m.text.num_layers() + 1);

        let pool = KvPool::new(&m.config.text, 16, 64, DType::F32, &Device::Cpu).unwrap();
        let mut batch = ForwardBatch::default();
        batch.push(&p.input_ids, 0, true);
        batch.spans[0].block_tables = block_tables(&pool, &p.input_ids);
        let whole = m.text.forward(&batch, &pool).unwrap();
        assert_eq!(
            relative_l2(&trace.logits, &whole).unwrap(),
            0.0,
            "{ckpt}: stage by stage differs from the forward"
        );
    }
}

/// From the same inputs, each bf16 stage stays within a few bf16 roundings of f32
/// (at most 9.4e-3 relative here; end to end the two are up to 4.4e-2 apart on these
/// random-weight checkpoints); a stage fed the wrong input is far off.
#[test]
fn each_bf16_stage_is_close_to_f32_from_the_same_input() {
    for ckpt in CHECKPOINTS {
        let (m32, m16) = (model(ckpt, DType::F32), model(ckpt, DType::BF16));
        for p in &goldens(ckpt).prompts {
            let (f32_run, bf16_run) = (
                Prefill::new(&m32.text, &p.input_ids).unwrap(),
                Prefill::new(&m16.text, &p.input_ids).unwrap(),
            );
            let trace = bf16_run.trace().unwrap();
            let mut worst = state_error(&f32_run.embed().unwrap(), &trace.states[0]).unwrap();
            for i in 0..m32.text.num_layers() {
                let got = f32_run.layer(i, &trace.states[i]).unwrap();
                let err = state_error(&got, &trace.states[i + 1]).unwrap();
                worst = worst.max(err);
                if i > 0 {
                    let wrong = f32_run.layer(i, &trace.states[i - 1]).unwrap();
                    let off = state_error(&wrong, &trace.states[i + 1]).unwrap();
                    assert!(
                        off > 0.1,
                        "{ckpt}/{} layer {i}: wrong input only {off:.1e} off",
                        p.name
                    );
                }
            }
            let last = &trace.states[m32.text.num_layers()];
            let head = f32_run.head(&last.normed).unwrap();
            worst = worst.max(relative_l2(&head, &trace.logits).unwrap());
            assert!(
                worst < 2e-2,
                "{ckpt}/{}: a bf16 stage is {worst:.2e} from f32",
                p.name
            );
        }
    }
}
