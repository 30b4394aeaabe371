//! Continuous batching on the real engine: 32 concurrent greedy requests of mixed
//! lengths (with and without images) through the scheduler, on a KV pool small
//! enough to preempt and a token budget small enough to chunk, give exactly the
//! ids each request gives alone; also with decode steps replayed at fixed,
//! padded shapes (`DecodeReplay::Rerun`, the CUDA graph path without the capture),
//! and with plain greedy decode steps run one step ahead (`lookahead`).

mod common;
mod image_common;

use std::time::Instant;

use medgemma_core::{
    Executor, FinishReason, GenerateRequest, ImageInput, Prompt, SamplingParams, StopCriteria,
    TokenEvent,
};
use medgemma_model::{
    generate_with_images, CandleExecutor, DType, DecodeReplay, Device, Gemma3, KvBudget,
    KvCacheConfig,
};
use medgemma_scheduler::{SchedulerConfig, SchedulerHandle, SchedulerStats};

struct Case {
    prompt: Vec<u32>,
    images: Vec<ImageInput>,
    max_new: usize,
}

fn executor(ckpt: &str, kv: &KvCacheConfig) -> CandleExecutor {
    let model = Gemma3::load(&common::fixture(ckpt), DType::F32, &Device::Cpu).unwrap();
    CandleExecutor::new(model, kv).unwrap()
}

/// 32 requests: every golden prompt, cut at several points, with different lengths
/// to generate; on the multimodal checkpoint the image prompts too.
fn cases(ckpt: &str, with_images: bool) -> Vec<Case> {
    let g = common::goldens(ckpt);
    let mut out = Vec::new();
    if with_images {
        let model = Gemma3::load(&common::fixture(ckpt), DType::F32, &Device::Cpu).unwrap();
        let tok = model.config.multimodal.as_ref().unwrap().image_token_id;
        let pixels = image_common::pixel_values();
        for (i, p) in image_common::image_goldens().prompts.iter().enumerate() {
            out.push(Case {
                prompt: p.input_ids.clone(),
                images: image_common::image_inputs(p, &pixels, tok),
                max_new: 3 + i % 7,
            });
        }
    }
    let mut i = 0;
    while out.len() < 32 {
        let p = &g.prompts[i % g.prompts.len()];
        let cut = p.input_ids.len() - (i / g.prompts.len()) * 3 % p.input_ids.len().max(1);
        out.push(Case {
            prompt: p.input_ids[..cut.max(1)].to_vec(),
            images: Vec::new(),
            max_new: 10 + (i * 13) % 90,
        });
        i += 1;
    }
    out
}

fn greedy(eos: &[u32]) -> SamplingParams {
    SamplingParams {
        suppress_tokens: eos.to_vec(),
        ..SamplingParams::greedy()
    }
}

fn run_batched(
    ckpt: &str,
    cases: &[Case],
    sampling: &SamplingParams,
    engine: Engine,
) -> (Vec<Vec<u32>>, u64, (u64, u64)) {
    // 4-token blocks, just enough for the longest sequence alone (far less than 32
    // sequences need), and steps of at most 256 tokens.
    let longest = cases
        .iter()
        .map(|c| c.prompt.len() + c.max_new)
        .max()
        .unwrap_or(1);
    let kv = KvCacheConfig {
        block_size: 4,
        budget: KvBudget::Bytes(1 << 20),
        max_num_seqs: 32,
        max_model_len: Some(longest),
        max_num_batched_tokens: 256,
        ..KvCacheConfig::default()
    };
    let layout = executor(ckpt, &kv).kv_layout();
    let blocks = layout.blocks_for(longest, 256) + 1;
    let kv = KvCacheConfig {
        budget: KvBudget::Bytes((layout.bytes_per_block * blocks) as u64),
        ..kv
    };
    let exec = executor(ckpt, &kv)
        .with_decode_replay(engine.replay)
        .with_paged_rows(engine.rows)
        .with_lookahead(engine.ahead)
        .with_topk_candidates(engine.candidates);
    let ahead = exec.lookahead_stats();
    let h = SchedulerHandle::spawn(
        SchedulerConfig {
            max_num_seqs: 32,
            max_waiting: 100,
            max_num_batched_tokens: 256,
            max_model_len: longest,
            // Preempted sequences come back through their own cached blocks.
            prefix_caching: true,
        },
        move || exec,
    );
    let streams: Vec<_> = cases
        .iter()
        .map(|c| {
            h.submit(GenerateRequest {
                id: "t".into(),
                prompt: Prompt {
                    token_ids: c.prompt.clone(),
                    images: c.images.clone(),
                },
                sampling: sampling.clone(),
                stop: StopCriteria::default(),
                max_new_tokens: c.max_new,
                arrival: Instant::now(),
                cache_salt: None,
                priority: 0,
            })
            .unwrap()
        })
        .collect();
    let outs = streams
        .into_iter()
        .map(|mut s| {
            let mut ids = Vec::new();
            loop {
                match s.blocking_next().unwrap() {
                    TokenEvent::Token { id, .. } => ids.push(id),
                    TokenEvent::Finished { reason, .. } => {
                        assert_eq!(reason, FinishReason::Length);
                        return ids;
                    }
                    TokenEvent::Failed(e) => panic!("{e}"),
                }
            }
        })
        .collect();
    let stats = h.stats();
    let preemptions = SchedulerStats::count(&stats.preemptions);
    let start = Instant::now();
    while SchedulerStats::get(&stats.kv_blocks_used) != 0 {
        assert!(start.elapsed().as_secs() < 10, "KV blocks leaked");
        std::thread::yield_now();
    }
    h.shutdown();
    assert!(!ahead.failed(), "the run ahead passed its checks");
    (outs, preemptions, (ahead.launched(), ahead.used()))
}

/// How the batched engine runs: decode steps replayed or not, and steps with
/// prefills through the rows attention (its host form here) or per sequence.
#[derive(Debug, Clone, Copy)]
struct Engine {
    replay: DecodeReplay,
    rows: bool,
    /// Plain greedy decode steps run one step ahead (where steps are replayed).
    ahead: bool,
    /// Top-k rows drawn from their largest logits (`topk`; its host form here).
    candidates: bool,
}

const PLAIN: Engine = Engine {
    replay: DecodeReplay::Off,
    rows: false,
    ahead: false,
    candidates: false,
};

const REPLAYED: Engine = Engine {
    replay: DecodeReplay::Rerun,
    ahead: false,
    ..PLAIN
};

fn check(ckpt: &str, with_images: bool, engine: Engine) {
    let g = common::goldens(ckpt);
    check_sampled(ckpt, with_images, engine, &greedy(&g.eos_suppressed));
}

/// Checks the batched ids against each request alone; returns the steps run
/// ahead and those of them used.
fn check_sampled(
    ckpt: &str,
    with_images: bool,
    engine: Engine,
    sampling: &SamplingParams,
) -> (u64, u64) {
    let cases = cases(ckpt, with_images);
    assert_eq!(cases.len(), 32);
    let mut alone = executor(ckpt, &KvCacheConfig::default());
    let want: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| {
            generate_with_images(
                &mut alone,
                1,
                &c.prompt,
                &c.images,
                sampling,
                &[],
                c.max_new,
            )
            .unwrap()
            .tokens
        })
        .collect();
    let (got, preemptions, ahead) = run_batched(ckpt, &cases, sampling, engine);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g,
            w,
            "{ckpt} request {i} (images: {}, {engine:?})",
            cases[i].images.len()
        );
    }
    assert!(
        preemptions > 0,
        "{ckpt}: the pool was small enough to preempt"
    );
    ahead
}

#[test]
fn batched_equals_alone_with_images() {
    check("tiny-gemma3", true, PLAIN);
}

#[test]
fn batched_equals_alone_text_only() {
    check("tiny-gemma3-text", false, PLAIN);
}

#[test]
fn batched_equals_alone_with_decode_steps_replayed() {
    check("tiny-gemma3", true, REPLAYED);
}

/// Plain greedy sequences (ids picked where the logits are), with decode steps
/// replayed and run one step ahead: every request still gets its ids alone, and
/// the steps run ahead answer most decode steps, through sequences finishing,
/// preemptions, new prompts and blocks crossed.
#[test]
fn batched_equals_alone_with_decode_steps_run_ahead() {
    let ahead = Engine {
        ahead: true,
        ..REPLAYED
    };
    for (ckpt, images) in [("tiny-gemma3", true), ("tiny-gemma3-text", false)] {
        let (launched, used) = check_sampled(ckpt, images, ahead, &SamplingParams::greedy());
        assert!(
            used > 0 && used < launched,
            "{ckpt}: {used} of {launched} used"
        );
        // The same requests with the run ahead off: none launched.
        let off = check_sampled(ckpt, images, REPLAYED, &SamplingParams::greedy());
        assert_eq!(off, (0, 0));
    }
}

/// The rows attention (one kernel for a step's prefill chunks and decodes, `kv_rows`)
/// gives every request the ids the per-sequence path gives it alone: chunked
/// prompts, cached prefixes after preemption, images and the sliding window.
#[test]
fn batched_equals_alone_through_the_rows_attention() {
    let rows = Engine {
        rows: true,
        ..PLAIN
    };
    check("tiny-gemma3", true, rows);
    check("tiny-gemma3-text", false, rows);
}

/// Greedy decode steps of one sequence driven by hand, `admitting` as given; returns
/// the ids and the steps run ahead (launched, used).
fn decode_by_hand(admitting: bool) -> (Vec<u32>, (u64, u64)) {
    let g = common::goldens("tiny-gemma3-text");
    let exec = executor("tiny-gemma3-text", &KvCacheConfig::default());
    let mut exec = exec.with_decode_replay(DecodeReplay::Rerun);
    let stats = exec.lookahead_stats();
    let mut blocks = medgemma_core::DirectBlocks::new(&exec.kv_layout());
    let (mut next, mut pos, mut ids) = (g.prompts[0].input_ids.clone(), 0, Vec::new());
    for _ in 0..12 {
        let mut seq = medgemma_core::ScheduledSeq {
            seq_id: 1,
            tokens: std::mem::take(&mut next),
            start_pos: pos,
            sample: true,
            sampling: SamplingParams::greedy(),
            images: Vec::new(),
            block_tables: Vec::new(),
            cached_prefix: Vec::new(),
        };
        blocks.assign(&mut seq).unwrap();
        pos += seq.tokens.len();
        let batch = medgemma_core::StepBatch {
            seqs: vec![seq],
            admitting,
        };
        let token = exec.step(&batch).unwrap().outputs[0].token.unwrap();
        ids.push(token);
        next = vec![token];
    }
    (ids, (stats.launched(), stats.used()))
}

/// A step whose scheduler is about to admit a request is not run ahead (its
/// next step would likely be another); the ids are the same either way.
#[test]
fn no_step_is_run_ahead_while_a_request_is_about_to_join() {
    let (joining, ahead) = decode_by_hand(true);
    assert_eq!(ahead, (0, 0));
    let (alone, ahead) = decode_by_hand(false);
    assert_eq!(joining, alone);
    assert!(ahead.1 > 0 && ahead.1 <= ahead.0, "{ahead:?}");
}

/// Seeded top-k sampling, and greedy or sampled choices with a bias and penalties,
/// with each row chosen from its largest logits and its changed tokens' (as a GPU
/// sends them), give every request the tokens the whole rows give it alone.
#[test]
fn rows_chosen_from_their_largest_logits_equal_whole_rows() {
    let sampled = SamplingParams {
        temperature: 1.3,
        top_k: 24,
        top_p: 0.9,
        seed: Some(17),
        ..SamplingParams::default()
    };
    let penalized = SamplingParams {
        frequency_penalty: 0.7,
        presence_penalty: 0.2,
        logit_bias: vec![(5, 2.0), (40, -3.0)],
        ..sampled.clone()
    };
    let greedy = SamplingParams {
        temperature: 0.0,
        repetition_penalty: 1.4,
        ..SamplingParams::default()
    };
    let candidates = Engine {
        candidates: true,
        ..PLAIN
    };
    for sampling in [sampled, penalized, greedy] {
        check_sampled("tiny-gemma3", true, candidates, &sampling);
        check_sampled("tiny-gemma3-text", false, candidates, &sampling);
    }
}
