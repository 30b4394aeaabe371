//! Constrained decoding: which tokens may come next (JSON mode). The HTTP layer
//! builds a constraint from the tokenizer; the executor's sampler asks its
//! matcher for the allowed tokens before each choice and tells it the choice.

use std::fmt::Debug;
use std::sync::Arc;

/// A rule over a sequence's output, shared by every sequence that follows it.
pub trait TokenConstraint: Send + Sync + Debug {
    /// A matcher at the start of an output.
    fn matcher(&self) -> Box<dyn ConstraintMatcher>;
}

/// One output's progress through a constraint.
pub trait ConstraintMatcher: Send + Debug {
    /// Clears `allowed[t]` for every token `t` that cannot come next.
    fn restrict(&self, allowed: &mut [bool]);
    /// Records the chosen token.
    fn accept(&mut self, token: u32);
    fn box_clone(&self) -> Box<dyn ConstraintMatcher>;
}

impl Clone for Box<dyn ConstraintMatcher> {
    fn clone(&self) -> Self {
        self.box_clone()
    }
}

/// A shared constraint inside sampling parameters (equal when it is the same one).
#[derive(Clone, Debug)]
pub struct Constraint(pub Arc<dyn TokenConstraint>);

impl PartialEq for Constraint {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
