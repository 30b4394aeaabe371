//! The continuous-batching scheduler: a waiting and a running queue, a token budget
//! per step, and the engine loop on its own OS thread. It drives any
//! [`medgemma_core::Executor`] and never sees candle, so it is tested with fakes.
//!
//! Each step runs every running sequence first (one decode token, or the next
//! prefill chunk), then admits waiting sequences while the token budget and
//! `max_num_seqs` allow; prefill chunks and decode tokens go in one batch.

mod engine;
mod handle;
pub mod load;
mod plan;
mod seq;
mod stats;

pub use handle::{EventStream, SchedulerConfig, SchedulerHandle, SubmitError};
pub use stats::SchedulerStats;

pub use medgemma_core::{Executor, StepBatch, StepOutput};
