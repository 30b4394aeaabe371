//! The engine's plan on a recording executor, step by step (no thread).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use medgemma_core::{
    Executor, ExecutorError, GenerateRequest, KvLayout, Prompt, SamplingParams, SeqOutput,
    StepBatch, StepOutput, StopCriteria,
};

use super::{Engine, Incoming};
use crate::handle::SchedulerConfig;

/// Emits token 1 for every sequence that samples; keeps each step's batch.
struct Recorder(Arc<Mutex<Vec<StepBatch>>>);

impl Executor for Recorder {
    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, ExecutorError> {
        self.0.lock().unwrap().push(batch.clone());
        let outputs = batch.seqs.iter().map(|s| SeqOutput {
            seq_id: s.seq_id,
            token: s.sample.then_some(1),
            logprobs: None,
        });
        Ok(StepOutput {
            outputs: outputs.collect(),
        })
    }
    fn release(&mut self, _: u64) {}
    fn steps_run_ahead(&self) -> (u64, u64) {
        let steps = self.0.lock().unwrap().len() as u64;
        (steps, steps / 2)
    }
    fn kv_layout(&self) -> KvLayout {
        KvLayout {
            max_seq_len: 100,
            block_size: 4,
            num_blocks: 100,
            groups: vec![None],
            bytes_per_block: 1,
        }
    }
}

fn request() -> Box<GenerateRequest> {
    Box::new(GenerateRequest {
        id: "r".into(),
        prompt: Prompt {
            token_ids: vec![7; 4],
            images: vec![],
        },
        sampling: SamplingParams::greedy(),
        stop: StopCriteria::default(),
        max_new_tokens: 3,
        arrival: Instant::now(),
        cache_salt: None,
        priority: 0,
    })
}

/// The `admitting` flag of each step of three 4-token prompts under
/// `max_num_seqs` and a 4-token budget.
fn admitting_flags(max_num_seqs: usize) -> Vec<bool> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let config = SchedulerConfig {
        max_num_seqs,
        max_waiting: 10,
        max_num_batched_tokens: 4,
        max_model_len: 100,
        prefix_caching: false,
    };
    let mut engine = Engine::new(config, Recorder(log.clone()), Arc::default());
    let mut streams = Vec::new();
    for id in 1..=3 {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        streams.push(rx);
        engine.receive(Incoming::Request {
            id,
            req: request(),
            tx,
        });
    }
    for _ in 0..3 {
        engine.step();
    }
    let log = log.lock().unwrap();
    log.iter().map(|b| b.admitting).collect()
}

/// A step says a waiting request will likely join the next one only when a
/// sequence slot is free for it.
#[test]
fn a_step_says_when_a_waiting_request_is_about_to_join() {
    // The first prompt takes the whole budget; the second waits with a slot free,
    // then joins, filling both slots while the third waits.
    assert_eq!(admitting_flags(2), [true, false, false]);
    // One slot: the others wait for it, but cannot join while it is taken.
    assert_eq!(admitting_flags(1), [false, false, false]);
}

/// The executor's run-ahead counts reach the stats the metrics read.
#[test]
fn steps_run_ahead_are_published() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let stats: Arc<crate::SchedulerStats> = Arc::default();
    let config = SchedulerConfig {
        max_num_seqs: 2,
        max_waiting: 10,
        max_num_batched_tokens: 64,
        max_model_len: 100,
        prefix_caching: false,
    };
    let mut engine = Engine::new(config, Recorder(log), stats.clone());
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    engine.receive(Incoming::Request {
        id: 1,
        req: request(),
        tx,
    });
    for _ in 0..3 {
        engine.step();
        engine.publish();
    }
    let count = |v: &std::sync::atomic::AtomicU64| crate::SchedulerStats::count(v);
    assert_eq!(count(&stats.decode_steps_run_ahead), 3);
    assert_eq!(count(&stats.decode_steps_ahead_used), 1);
}
