//! Structured output: a JSON Schema compiled into a byte-level recognizer. The
//! recognizer says whether a byte can continue a document that the schema
//! accepts, so the sampler can mask every token that would leave it. JSON mode
//! is the schema `{"type": "object"}`.
//!
//! - `compile` (with `keywords`): the schema's JSON into a graph of nodes
//!   (`node`; `$ref`s resolved, recursion allowed), with a clear error for what
//!   it cannot enforce.
//! - `state`: the recognizer, a set of threads (one per live `anyOf` branch), each
//!   a stack of open objects and arrays and the token being read.
//! - `lex` (keys), `string` (escapes, length, `pattern` via `pattern`) and
//!   `number` (numbers with `bounds`, literals): the token being read.

mod bounds;
mod compile;
mod compose;
mod keywords;
mod lex;
mod node;
mod number;
mod pattern;
mod state;
mod string;
#[cfg(test)]
mod tests;

pub use compile::{SchemaError, MAX_PROPERTIES};
pub use lex::plain_text;
pub use node::Schema;
pub use state::{CursorStep, SchemaState, TokenCursor, MAX_DEPTH, MAX_INDENT};

/// Index of a node in its schema.
pub(crate) type NodeId = u32;
