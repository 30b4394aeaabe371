//! Types shared across medgemma-server: what a request asks for, what the engine
//! streams back, and the batch the scheduler hands to an executor each step.
//!
//! This crate knows nothing of candle, axum or tokio; every other crate may use it.

pub mod batch;
pub mod blocks;
pub mod constraint;
pub mod error;
pub mod event;
pub mod prefix;
pub mod request;
pub mod sampling;

pub use batch::{Executor, ScheduledSeq, SeqId, SeqOutput, StepBatch, StepOutput};
pub use blocks::{
    BlockError, BlockId, BlockManager, BlockTable, DirectBlocks, KvLayout, SeqBlocks,
};
pub use constraint::{Constraint, ConstraintMatcher, TokenConstraint};
pub use error::ExecutorError;
pub use event::{FinishReason, TokenEvent, TokenLogprobs, Usage};
pub use prefix::BlockHash;
pub use request::{GenerateRequest, ImageInput, Prompt, StopCriteria};
pub use sampling::SamplingParams;
