//! The engine loop: one OS thread, one batched executor step at a time.

use std::collections::VecDeque;
use std::sync::{mpsc, Arc};

use medgemma_core::{Executor, FinishReason, GenerateRequest, SeqId, StepBatch, TokenEvent};
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
    stats: Arc<SchedulerStats>,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    stopping: bool,
}

impl<E: Executor> Engine<E> {
    pub fn new(config: SchedulerConfig, executor: E, stats: Arc<SchedulerStats>) -> Self {
        Self {
            config,
            executor,
            stats,
            waiting: VecDeque::new(),
            running: Vec::new(),
            stopping: false,
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
                self.waiting.push_back(Sequence::new(id, *req, tx))
            }
            Incoming::Shutdown => self.stopping = true,
        }
    }

    fn publish(&self) {
        SchedulerStats::set(&self.stats.waiting, self.waiting.len());
        SchedulerStats::set(&self.stats.running, self.running.len());
    }

    fn drop_cancelled(&mut self) {
        let before = self.running.len() + self.waiting.len();
        for seq in self.running.iter().filter(|s| s.is_cancelled()) {
            self.executor.release(seq.id);
        }
        self.running.retain(|s| !s.is_cancelled());
        self.waiting.retain(|s| !s.is_cancelled());
        let gone = before - self.running.len() - self.waiting.len();
        SchedulerStats::add(&self.stats.cancelled, gone as u64);
        self.publish();
    }

    fn cancel_all(&mut self) {
        for seq in self.running.drain(..).chain(self.waiting.drain(..)) {
            self.executor.release(seq.id);
            let _ = seq.tx.send(TokenEvent::Finished {
                reason: FinishReason::Cancelled,
                usage: seq.usage(),
            });
        }
        self.publish();
    }

    /// Running sequences first, then waiting ones while the budget allows.
    fn plan(&mut self) -> StepBatch {
        let mut budget = self.config.max_num_batched_tokens;
        let mut batch = StepBatch::default();
        for seq in &self.running {
            if let Some(chunk) = next_chunk(seq, budget.max(1)) {
                budget = budget.saturating_sub(chunk.tokens.len());
                batch.seqs.push(chunk);
            }
        }
        while budget > 0 && self.running.len() < self.config.max_num_seqs {
            let Some(seq) = self.waiting.pop_front() else {
                break;
            };
            if let Some(chunk) = next_chunk(&seq, budget) {
                budget = budget.saturating_sub(chunk.tokens.len());
                batch.seqs.push(chunk);
            }
            self.running.push(seq);
        }
        batch
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
            Err(e) => self.fail(&batch, &e.to_string()),
        }
        SchedulerStats::set(&self.stats.active_kv_sequences, self.running.len());
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
        if seq.computed < seq.prompt_len() {
            SchedulerStats::add(
                &self.stats.prompt_tokens,
                ran.min(seq.prompt_len() - seq.computed) as u64,
            );
        }
        seq.computed += ran;
        let Some(token) = token else { return };
        let finish = seq.accept(token, max_len);
        if finish != Some(FinishReason::Stop) {
            SchedulerStats::add(&self.stats.generated_tokens, 1);
            let _ = seq.tx.send(TokenEvent::Token {
                id: token,
                logprobs,
            });
        }
        if let Some(reason) = finish {
            let seq = self.running.remove(idx);
            self.executor.release(seq.id);
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
                self.executor.release(seq.id);
                SchedulerStats::add(&self.stats.failed, 1);
                let _ = seq.tx.send(TokenEvent::Failed(msg.to_string()));
            }
        }
    }
}
