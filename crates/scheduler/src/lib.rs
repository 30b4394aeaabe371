//! The continuous-batching scheduler: waiting and running queues, a token budget,
//! the KV block manager and the engine thread. It drives any
//! [`medgemma_core::Executor`] and never sees candle, so it is tested with fakes.

pub use medgemma_core::{Executor, StepBatch, StepOutput};
