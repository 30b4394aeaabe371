//! SigLIP, the projector and the image merge against transformers on tiny-gemma3.

mod image_common;

use candle_core::{DType, Device, Tensor};
use image_common::{fixture, image_goldens, image_inputs, pixel_values, soft_token_runs};
use medgemma_core::{
    DirectBlocks, Executor, ExecutorError, ImageInput, SamplingParams, ScheduledSeq, StepBatch,
};
use medgemma_model::{
    generate_with_images, CandleExecutor, ForwardBatch, Gemma3, KvCacheConfig, KvPool,
};

const LOGPROB_TOL: f32 = 1e-4;

fn model() -> Gemma3 {
    Gemma3::load(&fixture("tiny-gemma3"), DType::F32, &Device::Cpu).unwrap()
}

fn image_token(m: &Gemma3) -> u32 {
    m.config.multimodal.as_ref().unwrap().image_token_id
}

fn greedy(eos: &[u32]) -> SamplingParams {
    SamplingParams {
        suppress_tokens: eos.to_vec(),
        logprobs: Some(5),
        ..SamplingParams::greedy()
    }
}

#[test]
fn token_type_ids_mark_exactly_the_soft_tokens() {
    let m = model();
    for p in image_goldens().prompts {
        let marked: Vec<u32> = p
            .input_ids
            .iter()
            .map(|&t| u32::from(t == image_token(&m)))
            .collect();
        assert_eq!(marked, p.token_type_ids, "{}", p.name);
        let per = m.config.multimodal.as_ref().unwrap().mm_tokens_per_image;
        for (_, len) in soft_token_runs(&p.input_ids, image_token(&m)) {
            assert_eq!(len, per, "{}", p.name);
        }
    }
}

#[test]
fn greedy_ids_and_top5_equal_transformers_on_image_prompts() {
    let m = model();
    let tok = image_token(&m);
    let pixels = pixel_values();
    let g = image_goldens();
    let mut exec = CandleExecutor::new(m, &KvCacheConfig::default()).unwrap();
    for p in &g.prompts {
        let images = image_inputs(p, &pixels, tok);
        let n = p.greedy_ids.len();
        let params = greedy(&g.eos_suppressed);
        let out =
            generate_with_images(&mut exec, 1, &p.input_ids, &images, &params, &[], n).unwrap();
        assert_eq!(out.tokens, p.greedy_ids, "{}: greedy ids", p.name);
        for (step, (lp, want)) in out.logprobs.iter().zip(&p.greedy_top5).enumerate() {
            let top = &lp.as_ref().unwrap().top;
            for (&(id, v), &(wid, wv)) in top.iter().zip(want) {
                let tie = want
                    .iter()
                    .any(|&(i, x)| i == id && (x - v).abs() < LOGPROB_TOL);
                assert!(
                    (v - wv).abs() < LOGPROB_TOL && (id == wid || tie),
                    "{} step {step}: {top:?} vs {want:?}",
                    p.name
                );
            }
        }
    }
}

/// Logits of the prompt's last token with the given image groups.
fn prefill_logits(m: &Gemma3, p: &image_common::ImagePrompt, groups: Option<Vec<i32>>) -> Vec<f32> {
    let pixels = pixel_values();
    let images = image_inputs(p, &pixels, image_token(m));
    let vision = m.vision.as_ref().unwrap();
    let refs: Vec<_> = images.iter().collect();
    let features = vision
        .encode(&vision.pixels(&refs, &Device::Cpu).unwrap())
        .unwrap();
    let starts: Vec<usize> = images.iter().map(|i| i.placeholder_start).collect();
    let embeds = m.text.embed(&p.input_ids).unwrap();
    let merged =
        medgemma_model::multimodal::merge_image_features(&embeds, &features, &starts).unwrap();
    let mut batch = ForwardBatch::default();
    batch.push(&p.input_ids, 0, true);
    batch.spans[0].image_groups = groups;
    let pool = KvPool::new(&m.config.text, 16, 128, DType::F32, &Device::Cpu).unwrap();
    let mut seq = ScheduledSeq {
        seq_id: 1,
        tokens: p.input_ids.clone(),
        start_pos: 0,
        sample: true,
        sampling: SamplingParams::greedy(),
        images: Vec::new(),
        block_tables: Vec::new(),
        cached_prefix: Vec::new(),
    };
    DirectBlocks::new(&pool.layout(1024))
        .assign(&mut seq)
        .unwrap();
    batch.spans[0].block_tables = seq.block_tables;
    let logits = m.text.forward_embeds(&merged, &batch, &pool).unwrap();
    logits.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn groups_of(ids: &[u32], tok: u32, one_group: bool) -> Vec<i32> {
    let mut g = vec![-1; ids.len()];
    for (i, (s, len)) in soft_token_runs(ids, tok).into_iter().enumerate() {
        let id = if one_group { 0 } else { i as i32 };
        g[s..s + len].iter_mut().for_each(|x| *x = id);
    }
    g
}

/// Without the bidirectional overlay the logits change; with the two images of a
/// prompt put in one group they change too: each image attends within itself only
/// (and the per-image grouping is the one that equals transformers, above).
#[test]
fn image_attention_is_bidirectional_within_each_image_only() {
    let m = model();
    let tok = image_token(&m);
    let g = image_goldens();
    let p = g.prompts.iter().find(|p| p.name == "two_images").unwrap();
    let per_image = prefill_logits(&m, p, Some(groups_of(&p.input_ids, tok, false)));
    let causal = prefill_logits(&m, p, None);
    let merged = prefill_logits(&m, p, Some(groups_of(&p.input_ids, tok, true)));
    assert!(max_diff(&per_image, &causal) > 1e-3, "overlay must matter");
    assert!(
        max_diff(&per_image, &merged) > 1e-3,
        "images must not see each other"
    );
}

#[test]
fn batched_vision_forward_equals_one_at_a_time() {
    let m = model();
    let vision = m.vision.as_ref().unwrap();
    let pixels = pixel_values();
    let mut keys: Vec<&String> = pixels.keys().collect();
    keys.sort();
    let all: Vec<Tensor> = keys.iter().map(|k| pixels[*k].clone()).collect();
    let batched = vision.encode(&Tensor::stack(&all, 0).unwrap()).unwrap();
    for (i, t) in all.iter().enumerate() {
        let one = vision.encode(&t.unsqueeze(0).unwrap()).unwrap();
        let diff = (batched.get(i).unwrap() - one.squeeze(0).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{}: {diff}", keys[i]);
    }
}

/// Every image prompt prefilled in ONE step (one batched vision forward over all
/// their images), then decoded together, gives each prompt's golden ids.
#[test]
fn batched_requests_with_images_equal_goldens() {
    let m = model();
    let tok = image_token(&m);
    let pixels = pixel_values();
    let g = image_goldens();
    let params = greedy(&g.eos_suppressed);
    let mut exec = CandleExecutor::new(m, &KvCacheConfig::default()).unwrap();
    let steps = 8;
    let mut seqs: Vec<ScheduledSeq> = g
        .prompts
        .iter()
        .enumerate()
        .map(|(i, p)| ScheduledSeq {
            seq_id: 50 + i as u64,
            tokens: p.input_ids.clone(),
            start_pos: 0,
            sample: true,
            sampling: params.clone(),
            images: image_inputs(p, &pixels, tok),
            block_tables: Vec::new(),
            cached_prefix: Vec::new(),
        })
        .collect();
    let mut got = vec![Vec::new(); seqs.len()];
    let mut blocks = DirectBlocks::new(&exec.kv_layout());
    for _ in 0..steps {
        for s in seqs.iter_mut() {
            blocks.assign(s).unwrap();
        }
        let out = exec
            .step(&StepBatch {
                seqs: seqs.clone(),
                admitting: false,
            })
            .unwrap();
        for ((s, o), ids) in seqs.iter_mut().zip(out.outputs).zip(got.iter_mut()) {
            let t = o.token.unwrap();
            ids.push(t);
            s.start_pos += s.tokens.len();
            s.tokens = vec![t];
            s.images.clear();
        }
    }
    for (p, ids) in g.prompts.iter().zip(&got) {
        assert_eq!(ids[..], p.greedy_ids[..steps], "{} batched", p.name);
    }
}

fn one_image_seq(m: &Gemma3) -> ScheduledSeq {
    let g = image_goldens();
    let p = g.prompts.iter().find(|p| p.name == "one_image").unwrap();
    ScheduledSeq {
        seq_id: 7,
        tokens: p.input_ids.clone(),
        start_pos: 0,
        sample: true,
        sampling: SamplingParams::greedy(),
        images: image_inputs(p, &pixel_values(), image_token(m)),
        block_tables: Vec::new(),
        cached_prefix: Vec::new(),
    }
}

fn invalid(exec: &mut CandleExecutor, mut seq: ScheduledSeq) -> String {
    DirectBlocks::new(&exec.kv_layout())
        .assign(&mut seq)
        .unwrap();
    match exec.step(&StepBatch {
        seqs: vec![seq],
        admitting: false,
    }) {
        Err(ExecutorError::InvalidSequence { seq: 7, msg }) => msg,
        other => panic!("expected sequence 7 to be invalid, got {other:?}"),
    }
}

#[test]
fn bad_image_batches_are_invalid_not_panics() {
    let m = model();
    let base = one_image_seq(&m);
    let mut exec = CandleExecutor::new(m, &KvCacheConfig::default()).unwrap();
    let start = base.images[0].placeholder_start;

    let mut split = base.clone();
    split.tokens.truncate(start + 2);
    assert!(invalid(&mut exec, split).contains("split across chunks"));

    let mut short = base.clone();
    short.images[0].placeholder_len = 3;
    assert!(invalid(&mut exec, short).contains("per image"));

    let mut shifted = base.clone();
    shifted.images[0].placeholder_start -= 1;
    assert!(invalid(&mut exec, shifted).contains("soft token"));

    let mut wrong_size = base.clone();
    wrong_size.images[0].height = 16;
    assert!(invalid(&mut exec, wrong_size).contains("vision tower takes"));

    // Nothing was left behind: the valid sequence still runs from position 0.
    let mut base = base;
    DirectBlocks::new(&exec.kv_layout())
        .assign(&mut base)
        .unwrap();
    assert!(exec
        .step(&StepBatch {
            seqs: vec![base],
            admitting: false
        })
        .is_ok());
}

#[test]
fn text_only_model_rejects_images() {
    let text = Gemma3::load(&fixture("tiny-gemma3-text"), DType::F32, &Device::Cpu).unwrap();
    assert!(text.vision.is_none());
    let seq = one_image_seq(&model());
    let mut exec = CandleExecutor::new(text, &KvCacheConfig::default()).unwrap();
    assert!(invalid(&mut exec, seq).contains("no vision tower"));
}

/// The tower and projector load from every key layout in the wild, with the same output.
#[test]
fn vision_weights_load_from_every_layout() {
    let src = fixture("tiny-gemma3");
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let want = {
        let m = model();
        let t = pixel_values()["square.png"].unsqueeze(0).unwrap();
        m.vision.as_ref().unwrap().encode(&t).unwrap()
    };
    let layouts = [
        ("vision_tower.vision_model.", "multi_modal_projector."),
        (
            "model.vision_tower.vision_model.",
            "model.multi_modal_projector.",
        ),
        // transformers 5.2x save_pretrained: no `vision_model` level.
        ("vision_tower.", "multi_modal_projector."),
    ];
    for (tower, proj) in layouts {
        let dir = tempfile::tempdir().unwrap();
        for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        let renamed: std::collections::HashMap<String, Tensor> = tensors
            .iter()
            .map(|(k, v)| {
                let k = match (
                    k.strip_prefix("vision_tower.vision_model."),
                    k.strip_prefix("multi_modal_projector."),
                ) {
                    (Some(rest), _) => format!("{tower}{rest}"),
                    (_, Some(rest)) => format!("{proj}{rest}"),
                    _ => k.clone(),
                };
                (k, v.clone())
            })
            .collect();
        candle_core::safetensors::save(&renamed, dir.path().join("model.safetensors")).unwrap();
        let m = Gemma3::load(dir.path(), DType::F32, &Device::Cpu).unwrap();
        let t = pixel_values()["square.png"].unsqueeze(0).unwrap();
        let got = m.vision.as_ref().unwrap().encode(&t).unwrap();
        let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{tower}");
    }
}

/// Log probabilities of one step of `seq` on `exec` (fresh blocks).
fn step_logprobs(exec: &mut CandleExecutor, mut seq: ScheduledSeq) -> Vec<(u32, f32)> {
    seq.sampling.logprobs = Some(5);
    DirectBlocks::new(&exec.kv_layout())
        .assign(&mut seq)
        .unwrap();
    let out = exec
        .step(&StepBatch {
            seqs: vec![seq],
            admitting: false,
        })
        .unwrap();
    out.outputs[0].logprobs.clone().unwrap().top
}

/// The same image in another request, after other text: its features come from
/// the encoder cache, with the numbers a fresh encoding gives.
#[test]
fn a_repeated_image_is_encoded_once() {
    let m = model();
    let first = one_image_seq(&m);
    let mut again = first.clone();
    again.seq_id = 8;
    // Other text before the image, the image at the same place.
    let start = again.images[0].placeholder_start;
    again.tokens[start - 2] = again.tokens[start - 2].wrapping_add(1) % 400;
    let mut exec = CandleExecutor::new(m, &KvCacheConfig::default()).unwrap();
    step_logprobs(&mut exec, first);
    let cached = step_logprobs(&mut exec, again.clone());
    assert_eq!(exec.images_encoded(), (1, 1), "encoded once, reused once");

    let mut fresh = CandleExecutor::new(model(), &KvCacheConfig::default())
        .unwrap()
        .with_encoder_cache(0);
    let want = step_logprobs(&mut fresh, again.clone());
    assert_eq!(fresh.images_encoded(), (1, 0));
    for ((id, lp), (wid, wlp)) in cached.iter().zip(&want) {
        assert_eq!(id, wid);
        assert!((lp - wlp).abs() < 1e-6, "{lp} vs {wlp}");
    }
    // Other pixels are encoded anew.
    let mut other = again;
    other.seq_id = 9;
    let pixels: Vec<f32> = other.images[0].pixels.iter().map(|p| -p).collect();
    let img = &other.images[0];
    other.images[0] = ImageInput::new(
        pixels.into(),
        [img.channels, img.height, img.width],
        img.placeholder_start,
        img.placeholder_len,
    );
    step_logprobs(&mut exec, other);
    assert_eq!(exec.images_encoded(), (2, 1));
}

/// A sequence that generated the image soft token, recomputed in one chunk (as
/// after a preemption): the generated one is text, as when it was fed back one
/// step at a time.
#[test]
fn a_generated_soft_token_after_the_image_is_text() {
    let m = model();
    let soft = image_token(&m);
    let base = one_image_seq(&m);
    let mut exec = CandleExecutor::new(m, &KvCacheConfig::default()).unwrap();
    let mut blocks = DirectBlocks::new(&exec.kv_layout());
    let mut seq = base.clone();
    seq.sampling.logprobs = Some(5);
    let mut stepwise = Vec::new();
    for _ in 0..3 {
        blocks.assign(&mut seq).unwrap();
        let out = exec
            .step(&StepBatch {
                seqs: vec![seq.clone()],
                admitting: false,
            })
            .unwrap();
        stepwise = out.outputs[0].logprobs.clone().unwrap().top;
        seq.start_pos += seq.tokens.len();
        seq.tokens = vec![soft];
        seq.images.clear();
    }
    let mut whole = base;
    whole.seq_id = 70;
    whole.tokens.extend([soft, soft]);
    let at_once = step_logprobs(&mut exec, whole);
    for ((id, lp), (wid, wlp)) in at_once.iter().zip(&stepwise) {
        assert_eq!(id, wid);
        assert!((lp - wlp).abs() < 1e-5, "{lp} vs {wlp}");
    }
}
