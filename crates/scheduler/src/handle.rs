//! The scheduler's public face: submit a request, get a stream of its events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use medgemma_core::{Executor, GenerateRequest, TokenEvent};
use thiserror::Error;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::engine::{Engine, Incoming};
use crate::stats::SchedulerStats;

/// Limits of the engine loop.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Sequences running at once.
    pub max_num_seqs: usize,
    /// Requests waiting to start; past it, submissions are refused.
    pub max_waiting: usize,
    /// Tokens per step across all sequences (prefill chunks and decodes).
    pub max_num_batched_tokens: usize,
    /// Longest sequence (prompt plus output).
    pub max_model_len: usize,
    /// Reuse the KV blocks of earlier requests' identical prefixes.
    pub prefix_caching: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_num_seqs: 64,
            max_waiting: 256,
            max_num_batched_tokens: 2048,
            max_model_len: 8192,
            prefix_caching: true,
        }
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the request queue is full ({0} waiting); retry later")]
    QueueFull(usize),
    #[error("the engine has stopped")]
    Stopped,
    #[error("{0}")]
    Invalid(String),
}

/// Events of one request. Dropping it cancels the request: the engine frees its
/// sequence at the next step.
#[derive(Debug)]
pub struct EventStream {
    rx: UnboundedReceiver<TokenEvent>,
}

impl EventStream {
    pub async fn next(&mut self) -> Option<TokenEvent> {
        self.rx.recv().await
    }

    /// Blocking receive, for callers outside an async runtime.
    pub fn blocking_next(&mut self) -> Option<TokenEvent> {
        self.rx.blocking_recv()
    }
}

/// Cloneable handle to the engine thread.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Incoming>,
    stats: Arc<SchedulerStats>,
    config: Arc<SchedulerConfig>,
    next_id: Arc<AtomicU64>,
    thread: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl SchedulerHandle {
    /// Starts the engine loop on its own OS thread; `make_executor` runs there.
    pub fn spawn<E, F>(config: SchedulerConfig, make_executor: F) -> Self
    where
        E: Executor + 'static,
        F: FnOnce() -> E + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(SchedulerStats::default());
        let engine_stats = stats.clone();
        let engine_config = config.clone();
        let thread = std::thread::Builder::new()
            .name("medgemma-engine".into())
            .spawn(move || Engine::new(engine_config, make_executor(), engine_stats).run(rx))
            .expect("the engine thread starts");
        Self {
            tx,
            stats,
            config: Arc::new(config),
            next_id: Arc::new(AtomicU64::new(1)),
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        }
    }

    /// Queues a request; its events arrive on the returned stream.
    pub fn submit(&self, req: GenerateRequest) -> Result<EventStream, SubmitError> {
        let waiting = SchedulerStats::get(&self.stats.waiting);
        if waiting >= self.config.max_waiting {
            return Err(SubmitError::QueueFull(waiting));
        }
        let total = req.prompt.token_ids.len() + req.max_new_tokens;
        if req.prompt.token_ids.is_empty() {
            return Err(SubmitError::Invalid("the prompt is empty".into()));
        }
        if total > self.config.max_model_len
            && req.prompt.token_ids.len() >= self.config.max_model_len
        {
            return Err(SubmitError::Invalid(format!(
                "the prompt has {} tokens; the model's limit is {}",
                req.prompt.token_ids.len(),
                self.config.max_model_len
            )));
        }
        let (tx, rx) = unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        if self
            .tx
            .send(Incoming::Request {
                id,
                req: Box::new(req),
                tx,
            })
            .is_err()
        {
            self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(SubmitError::Stopped);
        }
        Ok(EventStream { rx })
    }

    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Ends every running and waiting request (as cancelled) without waiting.
    pub fn abort_all(&self) {
        let _ = self.tx.send(Incoming::Shutdown);
    }

    /// Asks the engine to finish: running and waiting requests end as cancelled;
    /// returns when the engine thread has stopped.
    pub fn shutdown(&self) {
        self.abort_all();
        if let Ok(mut t) = self.thread.lock() {
            if let Some(t) = t.take() {
                let _ = t.join();
            }
        }
    }
}
