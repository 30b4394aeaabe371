//! Errors an executor reports to the scheduler.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ExecutorError {
    /// The batch refers to a sequence or position the executor cannot serve.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// The device or the model failed while running the step.
    #[error("model step failed: {0}")]
    Step(String),
}
