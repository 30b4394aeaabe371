//! Errors of the model crate: each names the file and, where there is one, the tensor.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
    #[error("{file}: {msg}")]
    Config { file: String, msg: String },
    #[error("{file}: {msg}")]
    Weights { file: String, msg: String },
    /// A tensor is missing, misshapen or unreadable; the message names it and its file.
    #[error("{0}")]
    Load(String),
    #[error("model source {source_name}: {msg}")]
    Hub { source_name: String, msg: String },
    #[error("invalid input: {0}")]
    Input(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;
