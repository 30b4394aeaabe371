//! The engine loop on a fake executor: no model.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::{collect, config, request, Fake};
use medgemma_core::{FinishReason, GenerateRequest, SeqId, StepBatch};
use medgemma_scheduler::{SchedulerConfig, SchedulerHandle, SchedulerStats, SubmitError};

#[test]
fn generates_until_length_or_stop_token() {
    let fake = Fake::default();
    let f = fake.clone();
    let h = SchedulerHandle::spawn(config(64), move || f);
    assert_eq!(
        collect(h.submit(request(vec![1, 2, 3], 4, vec![])).unwrap()),
        (vec![4, 5, 6, 7], FinishReason::Length)
    );
    assert_eq!(
        collect(h.submit(request(vec![10], 9, vec![13])).unwrap()),
        (vec![11, 12], FinishReason::Stop)
    );
    h.shutdown();
    assert!(
        fake.held.lock().unwrap().is_empty(),
        "every sequence released"
    );
}

#[test]
fn long_prompts_are_prefilled_in_chunks_within_the_budget() {
    let fake = Fake::default();
    let f = fake.clone();
    let h = SchedulerHandle::spawn(config(8), move || f);
    let a = h.submit(request((0..30).collect(), 3, vec![])).unwrap();
    let b = h.submit(request(vec![100, 101], 3, vec![])).unwrap();
    assert_eq!(collect(a).0, vec![30, 31, 32]);
    assert_eq!(collect(b).0, vec![102, 103, 104]);
    h.shutdown();
    for batch in fake.log.lock().unwrap().iter() {
        let n: usize = batch.seqs.iter().map(|s| s.tokens.len()).sum();
        assert!(n <= 8, "step of {n} tokens passes the budget");
    }
}

#[test]
fn dropping_the_stream_frees_the_sequence() {
    let fake = Fake::default();
    let f = fake.clone();
    let h = SchedulerHandle::spawn(config(64), move || f);
    let mut s = h.submit(request(vec![1], 10_000, vec![])).unwrap();
    s.blocking_next();
    drop(s);
    let done = collect(h.submit(request(vec![1], 2, vec![])).unwrap());
    assert_eq!(done.1, FinishReason::Length);
    let start = Instant::now();
    while !fake.held.lock().unwrap().is_empty() {
        assert!(
            start.elapsed().as_secs() < 10,
            "cancelled sequence never released"
        );
        std::thread::yield_now();
    }
    h.shutdown();
}

#[test]
fn a_full_queue_refuses_and_empty_prompts_are_invalid() {
    let h = SchedulerHandle::spawn(
        SchedulerConfig {
            max_waiting: 0,
            ..config(8)
        },
        Fake::default,
    );
    assert!(matches!(
        h.submit(request(vec![1], 1, vec![])),
        Err(SubmitError::QueueFull(0))
    ));
    let h = SchedulerHandle::spawn(config(8), Fake::default);
    assert!(matches!(
        h.submit(request(vec![], 1, vec![])),
        Err(SubmitError::Invalid(_))
    ));
    h.shutdown();
}

/// Thousands of random joins, early drops and completions on a pool small enough
/// to preempt: every sequence the executor ever held is released, every block
/// returns to the pool, and every kept stream ends with its full output; also
/// with blocks reserved a position ahead for decoding sequences.
#[test]
fn random_joins_leaves_and_cancels_leak_nothing() {
    random_churn(0);
    random_churn(1);
}

fn random_churn(lookahead: usize) {
    let fake = Fake {
        lookahead,
        ..Fake::with_pool(60, vec![None, Some(8), Some(8)])
    };
    let f = fake.clone();
    let h = SchedulerHandle::spawn(
        SchedulerConfig {
            max_num_seqs: 8,
            max_waiting: 10_000,
            max_num_batched_tokens: 16,
            max_model_len: 200,
            prefix_caching: true,
        },
        move || f,
    );
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut kept = Vec::new();
    for i in 0..2000 {
        let len = 1 + next(40) as u32;
        let prompt: Vec<u32> = (0..len).collect();
        let max_new = 1 + next(20) as u32;
        let stream = h.submit(request(prompt, max_new as usize, vec![])).unwrap();
        match next(3) {
            0 => drop(stream),
            1 => kept.push((stream, (len..len + max_new).collect::<Vec<u32>>())),
            _ => {
                let mut s = stream;
                if i % 2 == 0 {
                    s.blocking_next();
                }
                drop(s);
            }
        }
    }
    for (s, want) in kept {
        let (ids, reason) = collect(s);
        assert_eq!(reason, FinishReason::Length);
        assert_eq!(ids, want, "output survives preemption unchanged");
    }
    let start = Instant::now();
    while !fake.held.lock().unwrap().is_empty() {
        assert!(
            start.elapsed().as_secs() < 30,
            "sequences leaked: {}",
            fake.held.lock().unwrap().len()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let stats = h.stats();
    let used = || SchedulerStats::get(&stats.kv_blocks_used);
    while used() != 0 {
        assert!(start.elapsed().as_secs() < 30, "{} blocks leaked", used());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(SchedulerStats::get(&stats.kv_blocks_total), 60);
    assert!(
        SchedulerStats::count(&stats.preemptions) > 0,
        "the pool was small enough to preempt"
    );
    assert!(
        SchedulerStats::count(&stats.prefix_cache_hits) > 0,
        "the prompts share prefixes: some came from the cache"
    );
    h.shutdown();
    for batch in fake.log.lock().unwrap().iter() {
        assert!(batch.seqs.len() <= 8, "max_num_seqs respected");
        let n: usize = batch.seqs.iter().map(|s| s.tokens.len()).sum();
        assert!(n <= 16 + batch.seqs.len(), "budget respected");
    }
}

fn wait_for_no_blocks(h: &SchedulerHandle) {
    let start = Instant::now();
    while SchedulerStats::get(&h.stats().kv_blocks_used) != 0 {
        assert!(start.elapsed().as_secs() < 10, "blocks leaked");
        std::thread::yield_now();
    }
}

#[test]
fn when_blocks_run_out_the_newest_is_preempted_and_resumes() {
    preempts_the_newest(0);
    // Blocks reserved ahead never cost a preemption of their own.
    preempts_the_newest(1);
}

fn preempts_the_newest(lookahead: usize) {
    // 12 blocks of 4 tokens, one full-attention group: 48 token slots for four
    // sequences that grow to 20 tokens each.
    let fake = Fake {
        lookahead,
        ..Fake::with_pool(12, vec![None])
    };
    let f = fake.clone();
    let h = SchedulerHandle::spawn(config(64), move || f);
    let streams: Vec<_> = (0..4u32)
        .map(|i| h.submit(request(vec![100 * i; 4], 16, vec![])).unwrap())
        .collect();
    for (i, s) in streams.into_iter().enumerate() {
        let (ids, reason) = collect(s);
        let base = 100 * i as u32;
        assert_eq!(ids, (base + 1..base + 17).collect::<Vec<_>>());
        assert_eq!(reason, FinishReason::Length);
    }
    assert!(SchedulerStats::count(&h.stats().preemptions) > 0);
    wait_for_no_blocks(&h);
    // The oldest sequence is never the victim while a newer one runs.
    let log = fake.log.lock().unwrap();
    let first = log
        .iter()
        .take_while(|b| b.seqs.iter().any(|s| s.seq_id == 1))
        .count();
    for batch in &log[..first] {
        let ids: Vec<_> = batch.seqs.iter().map(|s| s.seq_id).collect();
        assert!(
            ids.contains(&1),
            "seq 1 ran in every step until it finished: {ids:?}"
        );
    }
    drop(log);
    h.shutdown();
}

/// An executor that runs decode steps ahead gets each decoding sequence's next
/// position already in its tables, up to the longest sequence allowed; without
/// it, blocks are taken as tokens need them.
#[test]
fn decoding_sequences_hold_the_next_position_when_the_executor_asks() {
    for lookahead in [0, 1] {
        let fake = Fake {
            lookahead,
            ..Fake::with_pool(100, vec![None, Some(6)])
        };
        let f = fake.clone();
        let h = SchedulerHandle::spawn(config(64), move || f);
        let (ids, _) = collect(h.submit(request(vec![1, 2, 3], 97, vec![])).unwrap());
        assert_eq!(ids.len(), 97);
        h.shutdown();
        let log = fake.log.lock().unwrap();
        let decodes: Vec<_> = log.iter().skip(1).map(|b| &b.seqs[0]).collect();
        assert_eq!(decodes.len(), 96);
        for s in decodes {
            let next = s.start_pos + 1;
            let held = s.block_tables.iter().all(|t| t.slot(next, 4).is_some());
            // The longest sequence (config: 100) never needs position 100.
            let wanted = lookahead == 1 && next < 100;
            if wanted {
                assert!(held, "position {next} held ahead");
            } else if next % 4 == 0 {
                assert!(!held, "position {next} not taken before it is needed");
            }
        }
    }
}

#[test]
fn waiting_requests_start_in_arrival_order() {
    let fake = Fake::default();
    let f = fake.clone();
    let h = SchedulerHandle::spawn(config(8), move || f);
    let streams: Vec<_> = (0..12u32)
        .map(|i| {
            h.submit(request(vec![i; 1 + (i as usize * 7) % 5], 3, vec![]))
                .unwrap()
        })
        .collect();
    for s in streams {
        collect(s);
    }
    h.shutdown();
    let mut first_step: HashMap<SeqId, usize> = HashMap::new();
    for (step, batch) in fake.log.lock().unwrap().iter().enumerate() {
        for s in &batch.seqs {
            first_step.entry(s.seq_id).or_insert(step);
        }
    }
    let mut order: Vec<_> = first_step.into_iter().collect();
    order.sort_by_key(|&(id, step)| (step, id));
    let ids: Vec<_> = order.iter().map(|&(id, _)| id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "first scheduled in submission order");
}

/// Waiting requests start by priority (lower first), then by arrival.
#[test]
fn waiting_requests_start_by_priority_then_arrival() {
    let mut fake = Fake::default();
    fake.layout.max_seq_len = 40_000;
    let f = fake.clone();
    let h = SchedulerHandle::spawn(
        SchedulerConfig {
            max_num_seqs: 1,
            max_model_len: 40_000,
            ..config(64)
        },
        move || f,
    );
    // The only place is taken while the others arrive.
    let mut blocker = h.submit(request(vec![1], 30_000, vec![])).unwrap();
    blocker.blocking_next();
    const BASE: u32 = 1_000_000;
    let priorities = [0, 5, -3, 0, -3, 2];
    let streams: Vec<_> = priorities
        .iter()
        .enumerate()
        .map(|(i, &priority)| {
            h.submit(GenerateRequest {
                priority,
                ..request(vec![BASE + 10 * i as u32], 2, vec![])
            })
            .unwrap()
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(100));
    drop(blocker);
    for s in streams {
        collect(s);
    }
    h.shutdown();
    let log = fake.log.lock().unwrap();
    let mut first: Vec<u32> = Vec::new();
    for batch in log.iter() {
        for s in &batch.seqs {
            // Prompts are BASE, BASE + 10, ...; what they generate is never a
            // multiple of 10, and the blocker's tokens stay far below.
            let t = s.tokens[0];
            if (BASE..BASE + 60).contains(&t) && t % 10 == 0 && !first.contains(&t) {
                first.push(t - BASE);
            }
        }
    }
    // Priorities -3 (3rd, 5th), 0 (1st, 4th), 2 (6th), 5 (2nd).
    assert_eq!(first, vec![20, 40, 0, 30, 50, 10]);
}

#[test]
fn decodes_keep_running_while_a_long_prompt_is_prefilled() {
    let fake = Fake::default();
    let f = fake.clone();
    let h = SchedulerHandle::spawn(
        SchedulerConfig {
            max_model_len: 40_000,
            ..config(8)
        },
        move || f,
    );
    // Long enough to still be decoding while the long prompt runs (the fake is instant).
    let mut short = h.submit(request(vec![1], 30_000, vec![])).unwrap();
    short.blocking_next(); // decoding now
    let long = h.submit(request((0..64).collect(), 2, vec![])).unwrap();
    collect(long);
    drop(short);
    h.shutdown();
    let log = fake.log.lock().unwrap();
    let prefill_steps: Vec<&StepBatch> = log
        .iter()
        .filter(|b| b.seqs.iter().any(|s| s.tokens.len() > 1))
        .collect();
    assert!(prefill_steps.len() >= 8, "64 tokens in chunks of at most 8");
    for b in prefill_steps {
        let n: usize = b.seqs.iter().map(|s| s.tokens.len()).sum();
        assert!(n <= 8);
        assert!(
            b.seqs.iter().any(|s| s.tokens.len() == 1 && s.sample),
            "a decode ran beside every prefill chunk"
        );
    }
}

/// A sequence the executor refuses fails alone; the others in its step go on.
#[test]
fn an_invalid_sequence_fails_alone() {
    let fake = Fake {
        reject_token: Some(999),
        ..Fake::default()
    };
    let f = fake.clone();
    let h = SchedulerHandle::spawn(config(64), move || f);
    let good: Vec<_> = (0..3)
        .map(|i| {
            h.submit(request(vec![10 * i + 1, 10 * i + 2], 5, vec![]))
                .unwrap()
        })
        .collect();
    let mut bad = h.submit(request(vec![999, 1], 5, vec![])).unwrap();
    for (i, s) in good.into_iter().enumerate() {
        let first = 10 * i as u32 + 3;
        assert_eq!(
            collect(s),
            ((first..first + 5).collect(), FinishReason::Length)
        );
    }
    match bad.blocking_next() {
        Some(medgemma_core::TokenEvent::Failed(msg)) => assert!(msg.contains("refused"), "{msg}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(SchedulerStats::count(&h.stats().failed), 1);
    h.shutdown();
}
