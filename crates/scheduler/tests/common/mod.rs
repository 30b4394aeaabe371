//! A fake executor for the engine tests: no model.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use medgemma_core::{
    Executor, ExecutorError, FinishReason, GenerateRequest, KvLayout, Prompt, SamplingParams,
    ScheduledSeq, SeqId, SeqOutput, StepBatch, StepOutput, StopCriteria, TokenEvent,
};
use medgemma_scheduler::SchedulerConfig;

/// Emits `last token + 1`; records every batch it ran; keeps a model of the KV
/// pool: each slot holds the fingerprint of the tokens up to the position written
/// there, so a chunk that reads a slot with other content (a block freed too soon,
/// a wrong cached prefix, a table off by a block) fails. Positions must be
/// contiguous, restart at 0 after a preemption, or start after a cached prefix
/// that comes with its tokens; no block is written by one sequence while another
/// holds it.
#[derive(Clone)]
pub struct Fake {
    pub log: Arc<Mutex<Vec<StepBatch>>>,
    pub held: Arc<Mutex<HashMap<SeqId, usize>>>,
    /// Each sequence's tokens so far, as fingerprints of its prefixes.
    pub seen: Arc<Mutex<HashMap<SeqId, Vec<u64>>>>,
    /// (group, slot) → fingerprint of the prefix whose last token was written there.
    pub kv: Arc<Mutex<HashMap<(usize, usize), u64>>>,
    pub layout: KvLayout,
    /// A sequence holding this token is refused as invalid (alone).
    pub reject_token: Option<u32>,
    /// What `lookahead_slots` answers.
    pub lookahead: usize,
}

impl Default for Fake {
    fn default() -> Self {
        Self::with_pool(10_000, vec![None])
    }
}

fn fingerprint(prev: u64, token: u32) -> u64 {
    (prev ^ u64::from(token)).wrapping_mul(0x100_0000_01b3) ^ 0xcbf2_9ce4_8422_2325
}

impl Fake {
    pub fn with_pool(num_blocks: usize, groups: Vec<Option<usize>>) -> Self {
        Self {
            log: Arc::default(),
            held: Arc::default(),
            seen: Arc::default(),
            kv: Arc::default(),
            layout: KvLayout {
                max_seq_len: 1000,
                block_size: 4,
                num_blocks,
                groups,
                bytes_per_block: 1,
            },
            reject_token: None,
            lookahead: 0,
        }
    }

    /// The sequence's prefix fingerprints once this chunk is added.
    fn history(&self, s: &ScheduledSeq) -> Vec<u64> {
        let mut seen = self.seen.lock().unwrap();
        let known = seen.entry(s.seq_id).or_default();
        if s.start_pos == 0 {
            known.clear();
        } else if !s.cached_prefix.is_empty() {
            assert_eq!(
                s.cached_prefix.len(),
                s.start_pos,
                "a cached prefix comes whole"
            );
            known.clear();
            for &t in &s.cached_prefix {
                known.push(fingerprint(known.last().copied().unwrap_or(0), t));
            }
        }
        assert_eq!(
            known.len(),
            s.start_pos,
            "seq {}: positions are contiguous, restart at 0 or follow a cached prefix",
            s.seq_id
        );
        for &t in &s.tokens {
            known.push(fingerprint(known.last().copied().unwrap_or(0), t));
        }
        known.clone()
    }

    fn check_tables(&self, batch: &StepBatch) {
        let bs = self.layout.block_size;
        let mut kv = self.kv.lock().unwrap();
        let mut writers: HashMap<u32, SeqId> = HashMap::new();
        let mut readers: HashMap<u32, Vec<SeqId>> = HashMap::new();
        for s in &batch.seqs {
            assert_eq!(s.block_tables.len(), self.layout.groups.len());
            let history = self.history(s);
            let end = s.start_pos + s.tokens.len();
            for (g, (table, window)) in s.block_tables.iter().zip(&self.layout.groups).enumerate() {
                let first = window.map_or(0, |w| s.start_pos.saturating_sub(w - 1));
                for (pos, &content) in history.iter().enumerate().take(end).skip(first) {
                    let slot = table.slot(pos, bs);
                    assert!(slot.is_some(), "seq {} lacks position {pos}", s.seq_id);
                    let slot = slot.unwrap();
                    assert!(slot < self.layout.num_blocks * bs);
                    let block = (slot / bs) as u32;
                    if pos < s.start_pos {
                        assert_eq!(
                            kv.get(&(g, slot)),
                            Some(&content),
                            "seq {} group {g} reads position {pos} with other content",
                            s.seq_id
                        );
                        readers.entry(block).or_default().push(s.seq_id);
                    } else {
                        kv.insert((g, slot), content);
                        let w = writers.insert(block, s.seq_id);
                        assert!(
                            w.is_none() || w == Some(s.seq_id),
                            "block {block} written by two sequences"
                        );
                    }
                }
            }
        }
        for (b, w) in &writers {
            for r in readers.get(b).into_iter().flatten() {
                assert_eq!(
                    r, w,
                    "block {b} written by one sequence while another reads it"
                );
            }
        }
    }
}

impl Executor for Fake {
    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, ExecutorError> {
        if let Some(bad) = batch
            .seqs
            .iter()
            .find(|s| Some(s.tokens[0]) == self.reject_token)
        {
            return Err(ExecutorError::InvalidSequence {
                seq: bad.seq_id,
                msg: "refused".into(),
            });
        }
        self.check_tables(batch);
        self.log.lock().unwrap().push(batch.clone());
        let mut held = self.held.lock().unwrap();
        let outputs = batch
            .seqs
            .iter()
            .map(|s| {
                held.insert(s.seq_id, s.start_pos + s.tokens.len());
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
        self.seen.lock().unwrap().remove(&seq);
    }
    fn kv_layout(&self) -> KvLayout {
        self.layout.clone()
    }
    fn lookahead_slots(&self) -> usize {
        self.lookahead
    }
}

pub fn request(prompt: Vec<u32>, max_new: usize, stop: Vec<u32>) -> GenerateRequest {
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
        cache_salt: None,
        priority: 0,
    }
}

pub fn collect(mut s: medgemma_scheduler::EventStream) -> (Vec<u32>, FinishReason) {
    let mut ids = vec![];
    loop {
        match s.blocking_next().expect("stream ends with Finished") {
            TokenEvent::Token { id, .. } => ids.push(id),
            TokenEvent::Finished { reason, .. } => return (ids, reason),
            TokenEvent::Failed(e) => panic!("{e}"),
        }
    }
}

pub fn config(budget: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: 4,
        max_waiting: 100,
        max_num_batched_tokens: budget,
        max_model_len: 100,
        prefix_caching: true,
    }
}
