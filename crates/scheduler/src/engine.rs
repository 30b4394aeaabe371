//! The engine loop: one OS thread, one batched executor step at a time.

use std::collections::VecDeque;
use std::sync::{mpsc, Arc};

use medgemma_core::{
    BlockManager, Executor, ExecutorError, FinishReason, GenerateRequest, ScheduledSeq, SeqId,
    StepBatch, TokenEvent,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::handle::SchedulerConfig;
use crate::plan::next_chunk;
use crate::seq::Sequence;
use crate::stats::SchedulerStats;

pub(crate) enum Incoming {
    Request {
        id: SeqId,
        req: Box<GenerateRequest>,
        tx: UnboundedSender<TokenEvent>,
    },
    Shutdown,
}

pub(crate) struct Engine<E: Executor> {
    config: SchedulerConfig,
    executor: E,
    blocks: BlockManager,
    stats: Arc<SchedulerStats>,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    stopping: bool,
    block_size: usize,
}

impl<E: Executor> Engine<E> {
    pub fn new(config: SchedulerConfig, executor: E, stats: Arc<SchedulerStats>) -> Self {
        let layout = executor.kv_layout();
        let mut blocks = BlockManager::new(&layout);
        blocks.set_prefix_caching(config.prefix_caching);
        SchedulerStats::set(&stats.kv_blocks_total, blocks.total());
        Self {
            config,
            executor,
            blocks,
            stats,
            waiting: VecDeque::new(),
            running: Vec::new(),
            stopping: false,
            block_size: layout.block_size.max(1),
        }
    }

    pub fn run(mut self, rx: mpsc::Receiver<Incoming>) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                if self.stopping {
                    return;
                }
                match rx.recv() {
                    Ok(msg) => self.receive(msg),
                    Err(_) => return,
                }
            }
            while let Ok(msg) = rx.try_recv() {
                self.receive(msg);
            }
            if self.stopping {
                self.cancel_all();
                continue;
            }
            self.drop_cancelled();
            self.step();
            self.publish();
        }
    }

    fn receive(&mut self, msg: Incoming) {
        match msg {
            Incoming::Request { id, req, tx } => {
                let seq = Sequence::new(id, *req, tx, self.block_size);
                // After every waiting request of the same or a higher priority.
                let at = self
                    .waiting
                    .iter()
                    .position(|w| w.req.priority > seq.req.priority)
                    .unwrap_or(self.waiting.len());
                self.waiting.insert(at, seq)
            }
            Incoming::Shutdown => self.stopping = true,
        }
    }

    fn publish(&self) {
        let (ahead, used) = self.executor.steps_run_ahead();
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        self.stats.decode_steps_run_ahead.store(ahead, relaxed);
        self.stats.decode_steps_ahead_used.store(used, relaxed);
        let (encoded, reused) = self.executor.images_encoded();
        self.stats
            .images_encoded
            .store(encoded, std::sync::atomic::Ordering::Relaxed);
        self.stats
            .encoder_cache_hits
            .store(reused, std::sync::atomic::Ordering::Relaxed);
        SchedulerStats::set(&self.stats.waiting, self.waiting.len());
        SchedulerStats::set(&self.stats.running, self.running.len());
        SchedulerStats::set(&self.stats.kv_blocks_used, self.blocks.used_blocks());
        SchedulerStats::set(&self.stats.kv_blocks_cached, self.blocks.cached_blocks());
        SchedulerStats::set(&self.stats.active_kv_sequences, self.running.len());
    }

    /// Frees a sequence that leaves the engine: its blocks and the executor's state.
    fn retire(&mut self, mut seq: Sequence) -> Sequence {
        self.blocks.free(&mut seq.blocks);
        self.executor.release(seq.id);
        seq
    }

    fn drop_cancelled(&mut self) {
        if !self
            .running
            .iter()
            .chain(&self.waiting)
            .any(Sequence::is_cancelled)
        {
            return;
        }
        let (gone, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(Sequence::is_cancelled);
        let (gone_waiting, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(Sequence::is_cancelled);
        self.running = running;
        self.waiting = waiting.into();
        let count = gone.len() + gone_waiting.len();
        for seq in gone.into_iter().chain(gone_waiting) {
            self.retire(seq);
        }
        SchedulerStats::add(&self.stats.cancelled, count as u64);
        self.publish();
    }

    fn cancel_all(&mut self) {
        let all: Vec<Sequence> = self
            .running
            .drain(..)
            .chain(self.waiting.drain(..))
            .collect();
        for seq in all {
            let seq = self.retire(seq);
            let _ = seq.tx.send(TokenEvent::Finished {
                reason: FinishReason::Cancelled,
                usage: seq.usage(),
            });
        }
        self.publish();
    }

    /// Running sequences first (oldest first, preempting the newest when blocks run
    /// out), then waiting ones, in order, while the token budget, `max_num_seqs`
    /// and the free blocks allow.
    fn plan(&mut self) -> StepBatch {
        let mut budget = self.config.max_num_batched_tokens;
        let mut batch = StepBatch::default();
        let mut i = 0;
        while i < self.running.len() {
            let Some(whole) = next_chunk(&self.running[i], budget.max(1)) else {
                i += 1;
                continue;
            };
            // A prefill chunk shrinks to the free blocks before anyone is preempted.
            let free = self.blocks.free_blocks();
            let chunk = self
                .fitting_chunk(&self.running[i], whole.tokens.len(), free)
                .unwrap_or(whole);
            if !self.reserve(i, &chunk) {
                break; // The sequence preempted itself: no older one is left to run.
            }
            budget = budget.saturating_sub(chunk.tokens.len());
            batch.seqs.push(self.with_tables(i, chunk));
            i += 1;
        }
        while budget > 0 && self.running.len() < self.config.max_num_seqs {
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            // Leave a few blocks for the running sequences' next tokens.
            let reserve = if self.running.is_empty() {
                0
            } else {
                self.watermark()
            };
            self.reuse_cached_prefix(&mut seq);
            let avail = self.blocks.free_blocks().saturating_sub(reserve);
            let chunk = self.fitting_chunk(&seq, budget, avail).filter(|c| {
                let end = c.start_pos + c.tokens.len();
                self.blocks
                    .extend(&mut seq.blocks, c.start_pos, end)
                    .is_ok()
            });
            let Some(chunk) = chunk else {
                // Not now: the cached blocks go back to the cache.
                self.blocks.free(&mut seq.blocks);
                seq.computed = 0;
                self.waiting.push_front(seq);
                break;
            };
            self.count_admission(&seq);
            budget = budget.saturating_sub(chunk.tokens.len());
            if seq.preemptions == 0 {
                seq.cached_tokens = seq.computed;
            }
            self.running.push(seq);
            batch
                .seqs
                .push(self.with_tables(self.running.len() - 1, chunk));
        }
        batch.admitting = self.may_admit();
        batch
    }

    /// Whether a waiting request can likely start next step: one waits, a
    /// sequence slot is free and so are blocks beyond the watermark.
    fn may_admit(&self) -> bool {
        !self.waiting.is_empty()
            && self.running.len() < self.config.max_num_seqs
            && self.blocks.free_blocks() > self.watermark()
    }

    /// Starts a waiting sequence after the longest prefix of it the cache holds
    /// (blocks of earlier requests with the same tokens, images and salt).
    fn reuse_cached_prefix(&mut self, seq: &mut Sequence) {
        let mut blocks = std::mem::take(&mut seq.blocks);
        let reused = self
            .blocks
            .reuse_prefix(&mut blocks, &seq.hashes, |k| seq.may_start_at(k));
        seq.blocks = blocks;
        seq.computed = reused;
        seq.unsent_prefix = reused;
        seq.registered = reused / self.block_size;
    }

    fn count_admission(&self, seq: &Sequence) {
        if !self.blocks.prefix_caching() {
            return;
        }
        SchedulerStats::add(&self.stats.prefix_cache_queries, seq.tokens.len() as u64);
        SchedulerStats::add(&self.stats.prefix_cache_hits, seq.computed as u64);
    }

    /// The longest next chunk of `seq` within `budget` tokens whose blocks fit in
    /// `avail` free blocks (a prefill is cut shorter rather than waiting).
    fn fitting_chunk(&self, seq: &Sequence, budget: usize, avail: usize) -> Option<ScheduledSeq> {
        let fits = |c: &ScheduledSeq| {
            let end = c.start_pos + c.tokens.len();
            self.blocks.needed(&seq.blocks, c.start_pos, end) <= avail
        };
        let whole = next_chunk(seq, budget)?;
        if fits(&whole) {
            return Some(whole);
        }
        // Largest fitting length by bisection: blocks needed grow with the length.
        let (mut lo, mut hi) = (0, whole.tokens.len());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match next_chunk(seq, mid) {
                Some(c) if fits(&c) => lo = mid,
                _ => hi = mid,
            }
        }
        next_chunk(seq, lo).filter(fits)
    }

    /// Blocks kept free when admitting: one per running sequence, at most 1% of the pool.
    fn watermark(&self) -> usize {
        self.running.len().min(self.blocks.total() / 100)
    }

    fn with_tables(&self, i: usize, mut chunk: ScheduledSeq) -> ScheduledSeq {
        chunk.block_tables = self.running[i].blocks.tables.clone();
        chunk
    }

    /// Gives running sequence `i` the blocks its chunk needs, preempting the newest
    /// running sequences until it fits; false when `i` itself had to go.
    fn reserve(&mut self, i: usize, chunk: &ScheduledSeq) -> bool {
        let end = chunk.start_pos + chunk.tokens.len();
        if self.reserve_lookahead(i, chunk) {
            return true;
        }
        loop {
            let seq = &mut self.running[i];
            if self
                .blocks
                .extend(&mut seq.blocks, chunk.start_pos, end)
                .is_ok()
            {
                return true;
            }
            let victim = self.running.len() - 1;
            self.preempt(victim);
            if victim == i {
                return false;
            }
        }
    }

    /// A decoding sequence's blocks for its token and the executor's lookahead
    /// slots past it, when they fit in the free blocks; nobody is preempted for
    /// them (false: reserve the token alone).
    fn reserve_lookahead(&mut self, i: usize, chunk: &ScheduledSeq) -> bool {
        let extra = self.executor.lookahead_slots();
        if extra == 0 || chunk.tokens.len() != 1 {
            return false;
        }
        let end = chunk.start_pos + 1;
        let ahead = (end + extra).min(self.config.max_model_len).max(end);
        let seq = &mut self.running[i];
        self.blocks
            .extend(&mut seq.blocks, chunk.start_pos, ahead)
            .is_ok()
    }

    /// Takes a running sequence's blocks back; it waits at the front and is
    /// recomputed from its prompt and the tokens it has generated so far.
    fn preempt(&mut self, i: usize) {
        let mut seq = self.running.remove(i);
        self.blocks.free(&mut seq.blocks);
        seq.computed = 0;
        seq.unsent_prefix = 0;
        seq.preemptions += 1;
        SchedulerStats::add(&self.stats.preemptions, 1);
        tracing::debug!(seq = seq.id, "preempted: KV blocks exhausted");
        self.waiting.push_front(seq);
    }

    fn step(&mut self) {
        let batch = self.plan();
        if batch.seqs.is_empty() {
            return;
        }
        SchedulerStats::add(&self.stats.steps, 1);
        match self.executor.step(&batch) {
            Ok(out) => {
                for (planned, o) in batch.seqs.iter().zip(out.outputs) {
                    self.advance(planned.seq_id, planned.tokens.len(), o.token, o.logprobs);
                }
            }
            Err(ExecutorError::InvalidSequence { seq, msg }) => {
                // Nothing ran: the others are planned again next step.
                let one: Vec<ScheduledSeq> = batch
                    .seqs
                    .iter()
                    .filter(|s| s.seq_id == seq)
                    .cloned()
                    .collect();
                let msg = format!("invalid sequence: {msg}");
                match one.is_empty() {
                    true => self.fail(&batch, &msg),
                    false => self.fail(
                        &StepBatch {
                            seqs: one,
                            admitting: false,
                        },
                        &msg,
                    ),
                }
            }
            Err(e) => self.fail(&batch, &e.to_string()),
        }
    }

    fn advance(
        &mut self,
        id: SeqId,
        ran: usize,
        token: Option<u32>,
        logprobs: Option<medgemma_core::TokenLogprobs>,
    ) {
        let Some(idx) = self.running.iter().position(|s| s.id == id) else {
            return;
        };
        let max_len = self.config.max_model_len;
        let seq = &mut self.running[idx];
        seq.computed += ran;
        let prompt_done = seq.computed.min(seq.prompt_len());
        if prompt_done > seq.prompt_counted {
            let n = prompt_done - seq.prompt_counted;
            SchedulerStats::add(&self.stats.prompt_tokens, n as u64);
            seq.prompt_counted = prompt_done;
        }
        seq.unsent_prefix = 0;
        let full = (seq.computed / self.block_size).min(seq.hashes.len());
        if full > seq.registered {
            self.blocks
                .register(&seq.blocks, &seq.hashes[..full], seq.registered);
            seq.registered = full;
        }
        self.blocks.trim(&mut seq.blocks, seq.computed);
        let Some(token) = token else { return };
        let finish = seq.accept(token, max_len);
        SchedulerStats::add(&self.stats.generated_tokens, 1);
        if finish != Some(FinishReason::Stop) {
            let _ = seq.tx.send(TokenEvent::Token {
                id: token,
                logprobs,
            });
        }
        if let Some(reason) = finish {
            let seq = self.running.remove(idx);
            let seq = self.retire(seq);
            SchedulerStats::add(&self.stats.finished, 1);
            let _ = seq.tx.send(TokenEvent::Finished {
                reason,
                usage: seq.usage(),
            });
        }
    }

    fn fail(&mut self, batch: &StepBatch, msg: &str) {
        tracing::error!(
            error = msg,
            sequences = batch.seqs.len(),
            "engine step failed"
        );
        for planned in &batch.seqs {
            if let Some(idx) = self.running.iter().position(|s| s.id == planned.seq_id) {
                let seq = self.running.remove(idx);
                let seq = self.retire(seq);
                SchedulerStats::add(&self.stats.failed, 1);
                let _ = seq.tx.send(TokenEvent::Failed(msg.to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests;
