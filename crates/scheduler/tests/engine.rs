//! The engine loop on a fake executor: no model.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use medgemma_core::{
    Executor, ExecutorError, FinishReason, GenerateRequest, KvLayout, Prompt, SamplingParams,
    SeqId, SeqOutput, StepBatch, StepOutput, StopCriteria, TokenEvent,
};
use medgemma_scheduler::{SchedulerConfig, SchedulerHandle, SubmitError};

/// Emits `last token + 1`; records every batch it ran.
#[derive(Clone, Default)]
struct Fake {
    log: Arc<Mutex<Vec<StepBatch>>>,
    held: Arc<Mutex<HashMap<SeqId, usize>>>,
}

impl Executor for Fake {
    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, ExecutorError> {
        self.log.lock().unwrap().push(batch.clone());
        let mut held = self.held.lock().unwrap();
        let outputs = batch
            .seqs
            .iter()
            .map(|s| {
                let n = held.entry(s.seq_id).or_default();
                assert_eq!(*n, s.start_pos, "positions are contiguous");
                *n += s.tokens.len();
                SeqOutput {
                    seq_id: s.seq_id,
                    token: s.sample.then(|| s.tokens.last().unwrap() + 1),
                    logprobs: None,
                }
            })
            .collect();
        Ok(StepOutput { outputs })
    }
    fn release(&mut self, seq: SeqId) {
        self.held.lock().unwrap().remove(&seq);
    }
    fn kv_layout(&self) -> KvLayout {
        KvLayout {
            max_seq_len: 1000,
            num_layers: 1,
            bytes_per_token: 1,
        }
    }
}

fn request(prompt: Vec<u32>, max_new: usize, stop: Vec<u32>) -> GenerateRequest {
    GenerateRequest {
        id: "r".into(),
        prompt: Prompt {
            token_ids: prompt,
            images: vec![],
        },
        sampling: SamplingParams::greedy(),
        stop: StopCriteria {
            stop_token_ids: stop,
            ..Default::default()
        },
        max_new_tokens: max_new,
        arrival: Instant::now(),
    }
}

fn collect(mut s: medgemma_scheduler::EventStream) -> (Vec<u32>, FinishReason) {
    let mut ids = vec![];
    loop {
        match s.blocking_next().expect("stream ends with Finished") {
            TokenEvent::Token { id, .. } => ids.push(id),
            TokenEvent::Finished { reason, .. } => return (ids, reason),
            TokenEvent::Failed(e) => panic!("{e}"),
        }
    }
}

fn config(budget: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: 4,
        max_waiting: 100,
        max_num_batched_tokens: budget,
        max_model_len: 100,
    }
}

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

/// Thousands of random joins, early drops and completions: every sequence the
/// executor ever held is released, and every kept stream ends with Finished.
#[test]
fn random_joins_leaves_and_cancels_leak_nothing() {
    let fake = Fake::default();
    let f = fake.clone();
    let h = SchedulerHandle::spawn(
        SchedulerConfig {
            max_num_seqs: 8,
            max_waiting: 10_000,
            max_num_batched_tokens: 16,
            max_model_len: 200,
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
        let prompt: Vec<u32> = (0..1 + next(40) as u32).collect();
        let stream = h
            .submit(request(prompt, 1 + next(20) as usize, vec![]))
            .unwrap();
        match next(3) {
            0 => drop(stream),
            1 => kept.push(stream),
            _ => {
                let mut s = stream;
                if i % 2 == 0 {
                    s.blocking_next();
                }
                drop(s);
            }
        }
    }
    for s in kept {
        let (ids, reason) = collect(s);
        assert_eq!(reason, FinishReason::Length);
        assert!(!ids.is_empty());
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
    h.shutdown();
    for batch in fake.log.lock().unwrap().iter() {
        assert!(batch.seqs.len() <= 8, "max_num_seqs respected");
    }
}
