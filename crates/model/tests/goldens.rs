//! The decoder against transformers' outputs on the tiny checkpoints (f32, eager
//! attention in transformers). Decoding runs both eagerly and through the decode
//! graphs' padded, fixed-shape replay (`DecodeReplay::Rerun`, the CUDA graph path
//! without the capture).

mod common;

use common::{fixture, goldens, CHECKPOINTS};
use medgemma_core::{
    DirectBlocks, Executor, FinishReason, SamplingParams, ScheduledSeq, StepBatch,
};
use medgemma_model::decode_graph::keys_for;
use medgemma_model::{
    generate, CandleExecutor, DType, DecodeReplay, Device, Gemma3, KvCacheConfig,
};

const LOGPROB_TOL: f32 = 1e-4;

fn executor(checkpoint: &str, dtype: DType) -> CandleExecutor {
    replaying(checkpoint, dtype, DecodeReplay::Off)
}

fn replaying(checkpoint: &str, dtype: DType, replay: DecodeReplay) -> CandleExecutor {
    CandleExecutor::new(
        Gemma3::load(&fixture(checkpoint), dtype, &Device::Cpu).unwrap(),
        &KvCacheConfig::default(),
    )
    .unwrap()
    .with_decode_replay(replay)
}

const MODES: [DecodeReplay; 2] = [DecodeReplay::Off, DecodeReplay::Rerun];

fn greedy_no_eos(eos: &[u32]) -> SamplingParams {
    SamplingParams {
        suppress_tokens: eos.to_vec(),
        logprobs: Some(5),
        ..SamplingParams::greedy()
    }
}

#[test]
fn greedy_ids_and_top5_logprobs_equal_transformers() {
    for (ckpt, mode) in CHECKPOINTS.iter().flat_map(|c| MODES.map(|m| (c, m))) {
        let g = goldens(ckpt);
        let mut exec = replaying(ckpt, DType::F32, mode);
        for p in &g.prompts {
            let n = p.greedy_ids.len();
            let out = generate(
                &mut exec,
                1,
                &p.input_ids,
                &greedy_no_eos(&g.eos_suppressed),
                &[],
                n,
            )
            .unwrap();
            assert_eq!(out.tokens, p.greedy_ids, "{ckpt}/{}: greedy ids", p.name);
            for (step, (lp, want)) in out.logprobs.iter().zip(&p.greedy_top5).enumerate() {
                let top = &lp.as_ref().unwrap().top;
                for (&(id, v), &(wid, wv)) in top.iter().zip(want) {
                    let close = (v - wv).abs() < LOGPROB_TOL;
                    // Equal log probabilities may come in either order.
                    let tie = id != wid
                        && want
                            .iter()
                            .any(|&(i, x)| i == id && (x - v).abs() < LOGPROB_TOL);
                    assert!(
                        close && (id == wid || tie),
                        "{ckpt}/{} {mode:?} step {step}: {top:?} vs {want:?}",
                        p.name
                    );
                }
            }
        }
        if mode == DecodeReplay::Rerun {
            // One sequence at a time: one captured shape per key-table width its
            // decode steps reached, reused by all the steps of that width.
            let widths: std::collections::BTreeSet<usize> = g
                .prompts
                .iter()
                .flat_map(|p| {
                    let first = p.input_ids.len();
                    (first..first + p.greedy_ids.len() - 1).map(|pos| keys_for(pos + 1))
                })
                .collect();
            assert_eq!(exec.captured_decode_steps(), widths.len(), "{ckpt}");
        }
    }
}

#[test]
fn natural_greedy_runs_stop_where_transformers_stops() {
    for ckpt in CHECKPOINTS {
        let g = goldens(ckpt);
        let mut exec = executor(ckpt, DType::F32);
        for p in &g.prompts {
            let max = if p.natural_finish == "stop" {
                p.natural_ids.len() + 5
            } else {
                p.natural_ids.len()
            };
            let out = generate(
                &mut exec,
                2,
                &p.input_ids,
                &SamplingParams::greedy(),
                &g.eos_suppressed,
                max,
            )
            .unwrap();
            let (want_ids, want_reason) = match p.natural_finish.as_str() {
                "stop" => (
                    &p.natural_ids[..p.natural_ids.len() - 1],
                    FinishReason::Stop,
                ),
                _ => (&p.natural_ids[..], FinishReason::Length),
            };
            assert_eq!(out.tokens, want_ids, "{ckpt}/{}", p.name);
            assert_eq!(out.finish_reason, want_reason, "{ckpt}/{}", p.name);
        }
    }
}

#[test]
fn bf16_compute_agrees_on_the_first_token() {
    for ckpt in CHECKPOINTS {
        let g = goldens(ckpt);
        let mut exec = executor(ckpt, DType::BF16);
        for p in &g.prompts {
            let out = generate(
                &mut exec,
                3,
                &p.input_ids,
                &greedy_no_eos(&g.eos_suppressed),
                &[],
                1,
            )
            .unwrap();
            assert_eq!(
                out.tokens[0], p.bf16_first_token,
                "{ckpt}/{}: transformers bf16",
                p.name
            );
            assert_eq!(
                out.tokens[0], p.greedy_ids[0],
                "{ckpt}/{}: f32 golden",
                p.name
            );
        }
    }
}

/// Several sequences of different lengths and positions in one forward give the
/// same ids as each alone: prompts are prefilled together, then decoded together,
/// with a late joiner prefilling while the others decode.
#[test]
fn batched_forward_equals_single_sequences() {
    for (ckpt, mode) in CHECKPOINTS.iter().flat_map(|c| MODES.map(|m| (c, m))) {
        let g = goldens(ckpt);
        let mut exec = replaying(ckpt, DType::F32, mode);
        let steps = 12;
        let params = greedy_no_eos(&g.eos_suppressed);
        let mut pos: Vec<usize> = vec![0; g.prompts.len()];
        let mut next: Vec<Vec<u32>> = g.prompts.iter().map(|p| p.input_ids.clone()).collect();
        let mut got: Vec<Vec<u32>> = vec![Vec::new(); g.prompts.len()];
        let mut blocks = DirectBlocks::new(&exec.kv_layout());
        // The last prompt joins two steps late.
        let late = g.prompts.len() - 1;
        for step in 0..steps + 2 {
            let mut seqs = Vec::new();
            for i in 0..g.prompts.len() {
                if (i == late && step < 2) || got[i].len() >= steps {
                    continue;
                }
                let mut seq = ScheduledSeq {
                    seq_id: 100 + i as u64,
                    tokens: next[i].clone(),
                    start_pos: pos[i],
                    sample: true,
                    sampling: params.clone(),
                    images: Vec::new(),
                    block_tables: Vec::new(),
                    cached_prefix: Vec::new(),
                };
                blocks.assign(&mut seq).unwrap();
                seqs.push(seq);
            }
            let out = exec
                .step(&StepBatch {
                    seqs: seqs.clone(),
                    admitting: false,
                })
                .unwrap();
            for (s, o) in seqs.iter().zip(out.outputs) {
                let i = (s.seq_id - 100) as usize;
                pos[i] += s.tokens.len();
                let t = o.token.unwrap();
                got[i].push(t);
                next[i] = vec![t];
            }
        }
        for (p, ids) in g.prompts.iter().zip(&got) {
            assert_eq!(
                ids[..],
                p.greedy_ids[..steps],
                "{ckpt}/{} batched, {mode:?}",
                p.name
            );
        }
        if mode == DecodeReplay::Rerun {
            assert!(exec.captured_decode_steps() > 0, "{ckpt}: steps replayed");
        }
    }
}

/// A prompt prefilled in chunks (as the scheduler will) gives the same ids.
#[test]
fn chunked_prefill_equals_one_prefill() {
    let g = goldens("tiny-gemma3");
    let mut exec = executor("tiny-gemma3", DType::F32);
    let p = g.prompts.iter().max_by_key(|p| p.input_ids.len()).unwrap();
    let params = greedy_no_eos(&g.eos_suppressed);
    let mut start = 0;
    let mut last = None;
    let mut blocks = DirectBlocks::new(&exec.kv_layout());
    for chunk in p.input_ids.chunks(7) {
        let mut seq = ScheduledSeq {
            seq_id: 9,
            tokens: chunk.to_vec(),
            start_pos: start,
            sample: start + chunk.len() == p.input_ids.len(),
            sampling: params.clone(),
            images: Vec::new(),
            block_tables: Vec::new(),
            cached_prefix: Vec::new(),
        };
        blocks.assign(&mut seq).unwrap();
        start += chunk.len();
        last = exec
            .step(&StepBatch {
                seqs: vec![seq],
                admitting: false,
            })
            .unwrap()
            .outputs[0]
            .token;
    }
    assert_eq!(last, Some(p.greedy_ids[0]));
}

/// One-off generation stops at the end of the context (finish reason length) and
/// refuses a prompt longer than the context, as the server does.
#[test]
fn generation_ends_with_the_context() {
    let ckpt = CHECKPOINTS[1];
    let g = goldens(ckpt);
    let p = &g.prompts[0].input_ids;
    let kv = KvCacheConfig {
        max_model_len: Some(p.len() + 3),
        ..KvCacheConfig::default()
    };
    let model = Gemma3::load(&fixture(ckpt), DType::F32, &Device::Cpu).unwrap();
    let mut exec = CandleExecutor::new(model, &kv).unwrap();
    let out = generate(&mut exec, 1, p, &greedy_no_eos(&g.eos_suppressed), &[], 10).unwrap();
    assert_eq!(out.tokens.len(), 4, "the last token needs no cache slot");
    assert_eq!(out.finish_reason, FinishReason::Length);
    let long: Vec<u32> = p.iter().chain(p).copied().collect();
    let err = generate(&mut exec, 2, &long, &SamplingParams::greedy(), &[], 1).unwrap_err();
    assert!(err.to_string().contains("the context holds"), "{err}");
}
