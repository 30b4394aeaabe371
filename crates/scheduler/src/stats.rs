//! Counters the engine keeps and the HTTP layer exports as metrics.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct SchedulerStats {
    pub waiting: AtomicUsize,
    pub running: AtomicUsize,
    /// Sequences whose KV state the executor holds.
    pub active_kv_sequences: AtomicUsize,
    pub steps: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
    pub finished: AtomicU64,
    /// KV blocks in the pool, and those held by sequences.
    pub kv_blocks_total: AtomicUsize,
    pub kv_blocks_used: AtomicUsize,
    /// Blocks holding a cached prefix (in use or free, reusable until taken).
    pub kv_blocks_cached: AtomicUsize,
    /// Running sequences whose blocks were taken back (recomputed later).
    pub preemptions: AtomicU64,
    /// Tokens of the sequences started, and those of them found in the prefix cache.
    pub prefix_cache_queries: AtomicU64,
    pub prefix_cache_hits: AtomicU64,
    /// Images the vision tower encoded, and those the encoder cache served.
    pub images_encoded: AtomicU64,
    pub encoder_cache_hits: AtomicU64,
    /// Decode steps the executor ran ahead, and those of them used.
    pub decode_steps_run_ahead: AtomicU64,
    pub decode_steps_ahead_used: AtomicU64,
}

impl SchedulerStats {
    pub fn get(v: &AtomicUsize) -> usize {
        v.load(Ordering::Relaxed)
    }

    pub fn count(v: &AtomicU64) -> u64 {
        v.load(Ordering::Relaxed)
    }

    pub(crate) fn add(v: &AtomicU64, n: u64) {
        v.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(v: &AtomicUsize, n: usize) {
        v.store(n, Ordering::Relaxed);
    }
}
