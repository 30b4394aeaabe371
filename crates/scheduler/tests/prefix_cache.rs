//! Prefix caching in the engine, on the fake executor (which checks that every
//! position a chunk reads holds that sequence's own content).

mod common;

use std::sync::Arc;

use common::{config, request, Fake};
use medgemma_core::{FinishReason, GenerateRequest, ImageInput, SeqId, TokenEvent, Usage};
use medgemma_scheduler::{SchedulerHandle, SchedulerStats};

fn run(h: &SchedulerHandle, req: GenerateRequest) -> (Vec<u32>, Usage) {
    let mut s = h.submit(req).unwrap();
    let mut ids = Vec::new();
    loop {
        match s.blocking_next().expect("the stream ends with Finished") {
            TokenEvent::Token { id, .. } => ids.push(id),
            TokenEvent::Finished { reason, usage } => {
                assert_eq!(reason, FinishReason::Length);
                return (ids, usage);
            }
            TokenEvent::Failed(e) => panic!("{e}"),
        }
    }
}

/// Where the executor was first asked to start the `n`th sequence it saw, with
/// the prefix tokens it was sent.
fn first_chunk(fake: &Fake, n: usize) -> (usize, Vec<u32>) {
    let log = fake.log.lock().unwrap();
    let mut seen: Vec<SeqId> = Vec::new();
    for s in log.iter().flat_map(|b| &b.seqs) {
        if !seen.contains(&s.seq_id) {
            if seen.len() == n {
                return (s.start_pos, s.cached_prefix.clone());
            }
            seen.push(s.seq_id);
        }
    }
    panic!("no sequence {n}");
}

fn salted(prompt: Vec<u32>, salt: &str) -> GenerateRequest {
    GenerateRequest {
        cache_salt: Some(salt.into()),
        ..request(prompt, 3, vec![])
    }
}

#[test]
fn repeated_prompts_and_next_turns_start_after_their_cached_blocks() {
    let fake = Fake::default();
    let f = fake.clone();
    let h = SchedulerHandle::spawn(config(64), move || f);
    let prompt: Vec<u32> = (0..10).collect();
    let (first, usage) = run(&h, request(prompt.clone(), 3, vec![]));
    assert_eq!(
        (first.as_slice(), usage.cached_tokens),
        (&[10, 11, 12][..], 0)
    );
    assert_eq!(first_chunk(&fake, 0), (0, vec![]));

    // The same prompt: two full blocks of 4 come from the cache (the third is
    // partly filled, and one token must run to give the next one).
    let (again, usage) = run(&h, request(prompt.clone(), 3, vec![]));
    assert_eq!((again, usage.cached_tokens), (first.clone(), 8));
    assert_eq!(usage.prompt_tokens, 10);
    assert_eq!(first_chunk(&fake, 1), (8, (0..8).collect()));

    // A next turn: the first prompt, its answer (10 and 11 ran; 12 did not), more.
    let turn: Vec<u32> = (0..13).chain([50, 51]).collect();
    let (_, usage) = run(&h, request(turn, 3, vec![]));
    assert_eq!(usage.cached_tokens, 12);

    // Another salt shares nothing; the same salt shares with itself only.
    assert_eq!(run(&h, salted(prompt.clone(), "a")).1.cached_tokens, 0);
    assert_eq!(run(&h, salted(prompt.clone(), "b")).1.cached_tokens, 0);
    assert_eq!(run(&h, salted(prompt.clone(), "a")).1.cached_tokens, 8);

    let stats = h.stats();
    assert_eq!(
        SchedulerStats::count(&stats.prefix_cache_hits),
        8 + 12 + 8,
        "tokens found in the cache"
    );
    assert_eq!(
        SchedulerStats::count(&stats.prefix_cache_queries),
        10 * 5 + 15,
        "tokens of the sequences started"
    );
    h.shutdown();
}

fn with_image(len: usize, at: usize, span: usize, pixel: f32) -> GenerateRequest {
    let mut req = request((0..len as u32).collect(), 3, vec![]);
    let pixels: Arc<[f32]> = vec![pixel; 3 * 4].into();
    req.prompt.images = vec![ImageInput::new(pixels, [3, 2, 2], at, span)];
    req
}

#[test]
fn a_cached_prefix_holds_the_same_images_and_never_ends_inside_one() {
    let fake = Fake::default();
    let f = fake.clone();
    let h = SchedulerHandle::spawn(config(64), move || f);
    // An image at 6..10: the same pixels reuse four blocks, other pixels only
    // the block before the image.
    run(&h, with_image(20, 6, 4, 0.5));
    assert_eq!(run(&h, with_image(20, 6, 4, 0.5)).1.cached_tokens, 16);
    assert_eq!(run(&h, with_image(20, 6, 4, 0.25)).1.cached_tokens, 4);
    // An image at 6..18: starting at 8, 12 or 16 would split it.
    run(&h, with_image(20, 6, 12, 0.5));
    assert_eq!(run(&h, with_image(20, 6, 12, 0.5)).1.cached_tokens, 4);
    h.shutdown();
}

#[test]
fn without_prefix_caching_every_prompt_is_computed() {
    let fake = Fake::default();
    let f = fake.clone();
    let cfg = medgemma_scheduler::SchedulerConfig {
        prefix_caching: false,
        ..config(64)
    };
    let h = SchedulerHandle::spawn(cfg, move || f);
    let prompt: Vec<u32> = (0..10).collect();
    run(&h, request(prompt.clone(), 3, vec![]));
    assert_eq!(run(&h, request(prompt, 3, vec![])).1.cached_tokens, 0);
    assert_eq!(first_chunk(&fake, 1), (0, vec![]));
    let stats = h.stats();
    assert_eq!(
        SchedulerStats::count(&stats.prefix_cache_queries),
        0,
        "nothing is looked up"
    );
    h.shutdown();
}
