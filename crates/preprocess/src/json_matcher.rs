//! One output's progress through a JSON constraint: the recognizer's state, and
//! for tool calls that the model may or may not make, whether the output has
//! started a list of calls (`[` first), is free text, or has not begun.

use std::sync::Arc;

use medgemma_core::{ConstraintMatcher, TokenConstraint};

use crate::json_mode::Masks;
use crate::schema::SchemaState;

#[derive(Clone)]
pub(crate) struct SchemaConstraint {
    pub(crate) masks: Arc<Masks>,
    /// Free text unless the output starts with `[`.
    pub(crate) triggered: bool,
}

impl std::fmt::Debug for SchemaConstraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaConstraint")
            .field("nodes", &self.masks.schema.nodes.len())
            .field("triggered", &self.triggered)
            .finish()
    }
}

impl TokenConstraint for SchemaConstraint {
    fn matcher(&self) -> Box<dyn ConstraintMatcher> {
        Box::new(SchemaMatcher {
            masks: self.masks.clone(),
            mode: match self.triggered {
                true => Mode::Start,
                false => Mode::Json(SchemaState::new()),
            },
        })
    }
}

#[derive(Debug, Clone)]
enum Mode {
    /// Nothing yet (or only blanks): free text, or a document if the first
    /// token that is not blank starts with `[`.
    Start,
    Free,
    Json(SchemaState),
}

#[derive(Clone)]
struct SchemaMatcher {
    masks: Arc<Masks>,
    mode: Mode,
}

impl std::fmt::Debug for SchemaMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaMatcher")
            .field("mode", &self.mode)
            .finish()
    }
}

/// Where a token's first byte that is not whitespace is, if it opens a list
/// (`Some(at)`); `None` if the token opens nothing.
fn opens_document(bytes: &[u8]) -> Option<usize> {
    let at = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    (bytes[at] == b'[').then_some(at)
}

/// Whitespace alone: the output has still not begun.
fn blank(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(u8::is_ascii_whitespace)
}

impl ConstraintMatcher for SchemaMatcher {
    fn restrict(&self, allowed: &mut [bool]) {
        match &self.mode {
            Mode::Json(state) => self.masks.get(state).restrict(allowed),
            Mode::Free => {}
            Mode::Start => {
                // Any token, but one that opens a list must open valid calls.
                let mut json = vec![true; allowed.len()];
                self.masks.get(&SchemaState::new()).restrict(&mut json);
                let bytes = &self.masks.vocab.bytes;
                for (t, a) in allowed.iter_mut().enumerate() {
                    let ok = match bytes
                        .get(t)
                        .and_then(|b| opens_document(b).map(|at| (b, at)))
                    {
                        None => true,
                        Some((_, 0)) => json[t],
                        // After leading blanks: the rest must start the calls.
                        Some((b, at)) => SchemaState::new().feed_all(&self.masks.schema, &b[at..]),
                    };
                    *a = *a && ok;
                }
            }
        }
    }

    fn accept(&mut self, token: u32) {
        let vocab = &self.masks.vocab;
        if vocab.eos.contains(&token) {
            return;
        }
        let mut bytes = vocab.bytes.get(token as usize).map_or(&[][..], |b| b);
        if matches!(self.mode, Mode::Start) {
            if blank(bytes) {
                return;
            }
            self.mode = match opens_document(bytes) {
                Some(at) => {
                    bytes = &bytes[at..];
                    Mode::Json(SchemaState::new())
                }
                None => Mode::Free,
            };
        }
        if let Mode::Json(state) = &mut self.mode {
            let mut next = state.clone();
            // A token the mask did not allow (nothing was allowed) leaves the state.
            if next.feed_all(&self.masks.schema, bytes) {
                *state = next;
            }
        }
    }

    fn box_clone(&self) -> Box<dyn ConstraintMatcher> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::json_mode::JsonVocab;
    use crate::schema::Schema;

    fn allowed(m: &dyn ConstraintMatcher, n: usize) -> Vec<usize> {
        let mut a = vec![true; n];
        m.restrict(&mut a);
        (0..n).filter(|&i| a[i]).collect()
    }

    #[test]
    fn a_triggered_constraint_is_free_text_unless_the_output_opens_a_list() {
        let pieces = [
            "",
            "Hello",
            "[",
            "[x",
            "[{\"",
            "name",
            "\":",
            "\"p\"",
            ",",
            "]",
            "{}",
            "}",
            "\"arguments\":",
            "\n",
            " [x",
            "\n[{\"",
        ];
        let bytes = pieces.iter().map(|p| p.as_bytes().to_vec()).collect();
        let vocab = Arc::new(JsonVocab::new(bytes, vec![0]));
        let params = Schema::compile(&json!({"type": "object"})).unwrap();
        let calls = Schema::tool_calls(vec![("p".into(), params)], 1, None);
        let c = vocab.triggered_constraint(calls);
        let n = pieces.len();
        let start = c.0.matcher();
        // Everything but a list that cannot be calls.
        assert_eq!(
            allowed(start.as_ref(), n),
            vec![0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15]
        );
        // Blanks first: still undecided, and a list after them is held to the calls.
        let mut blank = start.box_clone();
        blank.accept(13);
        assert_eq!(allowed(blank.as_ref(), n), allowed(start.as_ref(), n));
        blank.accept(15);
        assert_eq!(
            allowed(blank.as_ref(), n),
            vec![5],
            "inside a call's first key"
        );
        let mut free = start.box_clone();
        free.accept(1);
        assert_eq!(allowed(free.as_ref(), n).len(), n, "free text after text");
        let mut json = start.box_clone();
        json.accept(4);
        assert_eq!(
            allowed(json.as_ref(), n),
            vec![5],
            "inside a call's first key"
        );
        for t in [5, 6, 7, 8] {
            json.accept(t);
        }
        assert_eq!(
            allowed(json.as_ref(), n),
            vec![12, 13],
            "the arguments (or a line break) must come"
        );
        for t in [12, 10, 11, 9] {
            json.accept(t);
        }
        assert_eq!(allowed(json.as_ref(), n), vec![0], "closed: only the end");
    }
}
