//! One output's progress through a JSON constraint: the recognizer's state, and
//! for tool calls that the model may or may not make, whether the output has
//! opened a list of calls (`[` first, or inside a code fence: `call_opening`),
//! is free text, or has not decided yet.

use std::sync::Arc;

use medgemma_core::{ConstraintMatcher, TokenConstraint};

use crate::call_opening::{opening_from, Closer, Opener, Opening};
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
                true => Mode::Start(Opener::Blank),
                false => Mode::Json {
                    state: SchemaState::new(),
                    fenced: false,
                },
            },
        })
    }
}

#[derive(Debug, Clone)]
enum Mode {
    /// Nothing decided yet (blanks, or part of a code fence): free text, or a
    /// document if the output opens a list (see `call_opening`).
    Start(Opener),
    Free,
    /// The document; `fenced`: inside a code fence, which may close after it.
    Json {
        state: SchemaState,
        fenced: bool,
    },
    /// The closing fence after a finished document.
    Closing(Closer),
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

/// Whether every byte of a (non-empty) token continues the closing fence.
fn closes(closer: Closer, bytes: &[u8]) -> Option<Closer> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(closer, |c, &b| c.step(b))
}

impl SchemaMatcher {
    /// In `Start`: any token, but one that opens a list must open valid calls.
    fn restrict_start(&self, opener: Opener, allowed: &mut [bool]) {
        let mut json = vec![true; allowed.len()];
        self.masks.get(&SchemaState::new()).restrict(&mut json);
        let bytes = &self.masks.vocab.bytes;
        for (t, a) in allowed.iter_mut().enumerate() {
            let Some(b) = bytes.get(t) else { continue };
            let ok = match opening_from(opener, b) {
                Opening::List { at: 0, .. } if opener == Opener::Blank => json[t],
                Opening::List { at, .. } => {
                    SchemaState::new().feed_all(&self.masks.schema, &b[at..])
                }
                Opening::Undecided(_) | Opening::Text => true,
            };
            *a = *a && ok;
        }
    }

    /// In a fenced document that is complete: the document's tokens, or the
    /// closing fence.
    fn restrict_fenced_end(&self, state: &SchemaState, allowed: &mut [bool]) {
        let mut json = allowed.to_vec();
        self.masks.get(state).restrict(&mut json);
        let bytes = &self.masks.vocab.bytes;
        for (t, a) in allowed.iter_mut().enumerate() {
            let closing = bytes
                .get(t)
                .is_some_and(|b| closes(Closer::START, b).is_some());
            *a = json[t] || (*a && closing);
        }
    }

    fn restrict_closing(&self, closer: Closer, allowed: &mut [bool]) {
        let vocab = &self.masks.vocab;
        for (t, a) in allowed.iter_mut().enumerate() {
            let ok = match vocab.bytes.get(t) {
                _ if vocab.eos.contains(&(t as u32)) => closer.may_end(),
                Some(b) => closes(closer, b).is_some(),
                None => false,
            };
            *a = *a && ok;
        }
    }
}

impl ConstraintMatcher for SchemaMatcher {
    fn restrict(&self, allowed: &mut [bool]) {
        match &self.mode {
            Mode::Json {
                state,
                fenced: true,
            } if state.complete(&self.masks.schema) => self.restrict_fenced_end(state, allowed),
            Mode::Json { state, .. } => self.masks.get(state).restrict(allowed),
            Mode::Free => {}
            Mode::Start(opener) => self.restrict_start(*opener, allowed),
            Mode::Closing(closer) => self.restrict_closing(*closer, allowed),
        }
    }

    fn accept(&mut self, token: u32) {
        let vocab = &self.masks.vocab;
        if vocab.eos.contains(&token) {
            return;
        }
        let mut bytes = vocab.bytes.get(token as usize).map_or(&[][..], |b| b);
        if let Mode::Start(opener) = self.mode {
            self.mode = match opening_from(opener, bytes) {
                Opening::Undecided(o) => Mode::Start(o),
                Opening::Text => Mode::Free,
                Opening::List { at, fenced } => {
                    bytes = &bytes[at..];
                    Mode::Json {
                        state: SchemaState::new(),
                        fenced,
                    }
                }
            };
            if !matches!(self.mode, Mode::Json { .. }) {
                return;
            }
        }
        let schema = &self.masks.schema;
        match &mut self.mode {
            Mode::Json { state, fenced } => {
                let mut next = state.clone();
                if next.feed_all(schema, bytes) {
                    *state = next;
                } else if let Some(c) =
                    closes(Closer::START, bytes).filter(|_| *fenced && state.complete(schema))
                {
                    self.mode = Mode::Closing(c);
                }
                // Else a token the mask did not allow (nothing was allowed):
                // the state stays.
            }
            Mode::Closing(c) => {
                if let Some(next) = closes(*c, bytes) {
                    *c = next;
                }
            }
            Mode::Start(_) | Mode::Free => {}
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

    /// Calls of one function `p` (any object as arguments), in auto mode, over
    /// a vocabulary of these pieces (0: the end).
    fn calls_of_p(pieces: &[&str]) -> medgemma_core::Constraint {
        let bytes = pieces.iter().map(|p| p.as_bytes().to_vec()).collect();
        let vocab = Arc::new(JsonVocab::new(bytes, vec![0]));
        let params = Schema::compile(&json!({"type": "object"})).unwrap();
        vocab.triggered_constraint(Schema::tool_calls(vec![("p".into(), params)], 1, None))
    }

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
        let c = calls_of_p(&pieces);
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

    /// A list inside a code fence is held to the calls like a bare one; the
    /// fence may close after it; a fence around other text is free text.
    #[test]
    fn a_fenced_list_is_held_to_the_calls() {
        let pieces = [
            "",
            "```",
            "json",
            "\n",
            "[{\"",
            "name",
            "\":",
            "\"p\"",
            ",",
            "\"arguments\":",
            "{}",
            "}",
            "]",
            "```json\n[",
            "python",
            "print",
            "\n```",
            "[x",
        ];
        let c = calls_of_p(&pieces);
        let n = pieces.len();
        let mut m = c.0.matcher();
        for t in [1, 2, 3] {
            m.accept(t);
        }
        // After "```json\n": a list must be calls; other text is free.
        let now = allowed(m.as_ref(), n);
        assert!(
            now.contains(&4) && now.contains(&15) && !now.contains(&17),
            "{now:?}"
        );
        m.accept(4);
        for t in [5, 6, 7, 8, 9, 10, 11] {
            assert!(allowed(m.as_ref(), n).contains(&(t as usize)), "{t}");
            m.accept(t);
        }
        assert!(
            !allowed(m.as_ref(), n).contains(&16),
            "the fence closes after the list"
        );
        m.accept(12);
        assert_eq!(
            allowed(m.as_ref(), n),
            vec![0, 1, 3, 16],
            "end, or close the fence"
        );
        m.accept(16);
        assert_eq!(
            allowed(m.as_ref(), n),
            vec![0, 3],
            "closed: the end, or blanks"
        );
        // One token may open the fence and the list.
        let mut one = c.0.matcher();
        one.accept(13);
        // Inside the list: `{"` would come; of these pieces only a line break can.
        assert_eq!(allowed(one.as_ref(), n), vec![3]);
        // A fence around code is text.
        let mut code = c.0.matcher();
        for t in [1, 14, 3, 15] {
            code.accept(t);
        }
        assert_eq!(allowed(code.as_ref(), n).len(), n);
    }
}
