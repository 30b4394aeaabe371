//! Errors an executor reports to the scheduler.

use thiserror::Error;

use crate::SeqId;

#[derive(Debug, Error)]
pub enum ExecutorError {
    /// The batch refers to a sequence or position the executor cannot serve.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// One sequence of the batch cannot be served; nothing changed for any
    /// sequence, so the scheduler fails that one alone and runs the others.
    #[error("invalid sequence {seq}: {msg}")]
    InvalidSequence { seq: SeqId, msg: String },
    /// The device or the model failed while running the step.
    #[error("model step failed: {0}")]
    Step(String),
}
