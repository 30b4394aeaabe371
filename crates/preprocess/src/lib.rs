//! Text in and out of the model: the checkpoint's tokenizer and chat template,
//! and incremental detokenization for streaming.

pub mod detok;
pub mod error;
pub mod template;
pub mod tokenizer;

pub use detok::IncrementalDetokenizer;
pub use error::PreprocessError;
pub use template::{ChatTemplate, TemplateMessage};
pub use tokenizer::{SpecialTokens, TextProcessor};
