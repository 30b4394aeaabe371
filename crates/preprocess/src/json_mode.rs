//! Constrained JSON output: JSON mode (`response_format: {"type":
//! "json_object"}`) and structured output (`{"type": "json_schema"}`). Before
//! each token the sampler is told which tokens keep the output a prefix of a
//! document the schema accepts: the vocabulary's byte strings sit in a trie,
//! walked once per step with the recognizer (`schema`), pruning at the first
//! byte that cannot come. Masks are kept per recognizer state (the same state
//! recurs at every key, every value of an array, ...), by the constraint, which
//! requests with the same schema share. End-of-sequence tokens are allowed
//! exactly when the document may end; special tokens never.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use medgemma_core::Constraint;

use crate::json_matcher::SchemaConstraint;

use crate::schema::{plain_text, CursorStep, Schema, SchemaState, TokenCursor};

/// Masks kept at most per constraint.
const MASKS_KEPT: usize = 256;

/// The tokens allowed in one state: a bit per token, or their list when they
/// are few (a key, a number, punctuation).
#[derive(Debug)]
pub(crate) enum Mask {
    Bits(Vec<u64>),
    List(Vec<u32>),
}

impl Mask {
    /// A list when it is smaller than the bits (fewer tokens than one in 32).
    fn from_bits(bits: Vec<u64>) -> Self {
        let ones: usize = bits.iter().map(|w| w.count_ones() as usize).sum();
        if ones * 32 >= bits.len() * 64 {
            return Mask::Bits(bits);
        }
        let mut list = Vec::with_capacity(ones);
        for (i, &w) in bits.iter().enumerate() {
            let mut w = w;
            while w != 0 {
                list.push(i as u32 * 64 + w.trailing_zeros());
                w &= w - 1;
            }
        }
        Mask::List(list)
    }

    /// Clears `allowed[t]` for every token not in the mask.
    pub(crate) fn restrict(&self, allowed: &mut [bool]) {
        match self {
            Mask::Bits(bits) => {
                for (i, a) in allowed.iter_mut().enumerate() {
                    *a = *a && bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0);
                }
            }
            Mask::List(list) => {
                let keep: Vec<u32> = list
                    .iter()
                    .copied()
                    .filter(|&t| allowed.get(t as usize) == Some(&true))
                    .collect();
                allowed.fill(false);
                for t in keep {
                    allowed[t as usize] = true;
                }
            }
        }
    }
}

fn set_bit(bits: &mut [u64], t: u32) {
    if let Some(w) = bits.get_mut(t as usize / 64) {
        *w |= 1 << (t % 64);
    }
}

/// The trie as flat arrays: node `n`'s children are `edges[first_edge[n]..first_edge[n + 1]]`
/// and the tokens ending there `ends[first_end[n]..first_end[n + 1]]` (a few bytes a
/// node, for a vocabulary of 262k tokens).
struct Trie {
    first_edge: Vec<u32>,
    edges: Vec<(u8, u32)>,
    first_end: Vec<u32>,
    ends: Vec<u32>,
}

impl Trie {
    fn new(bytes: &[Vec<u8>]) -> Self {
        // Sorted byte strings: a node's children come in order, each subtree at once.
        let mut order: Vec<usize> = (0..bytes.len()).filter(|&i| !bytes[i].is_empty()).collect();
        order.sort_by(|&a, &b| bytes[a].cmp(&bytes[b]));
        let mut parent_edges: Vec<Vec<(u8, u32)>> = vec![Vec::new()];
        let mut node_ends: Vec<Vec<u32>> = vec![Vec::new()];
        let mut path: Vec<(u8, u32)> = Vec::new(); // (byte, node) from the root
        for &id in &order {
            let b = &bytes[id];
            let common = path.iter().zip(b).take_while(|((x, _), y)| x == *y).count();
            path.truncate(common);
            for &byte in &b[common..] {
                let parent = path.last().map_or(0, |&(_, n)| n);
                let node = parent_edges.len() as u32;
                parent_edges.push(Vec::new());
                node_ends.push(Vec::new());
                parent_edges[parent as usize].push((byte, node));
                path.push((byte, node));
            }
            let at = path.last().map_or(0, |&(_, n)| n);
            node_ends[at as usize].push(id as u32);
        }
        Self {
            first_edge: offsets(parent_edges.iter().map(Vec::len)),
            first_end: offsets(node_ends.iter().map(Vec::len)),
            edges: parent_edges.into_iter().flatten().collect(),
            ends: node_ends.into_iter().flatten().collect(),
        }
    }

    fn children(&self, n: u32) -> &[(u8, u32)] {
        let n = n as usize;
        &self.edges[self.first_edge[n] as usize..self.first_edge[n + 1] as usize]
    }

    fn tokens(&self, n: u32) -> &[u32] {
        let n = n as usize;
        &self.ends[self.first_end[n] as usize..self.first_end[n + 1] as usize]
    }
}

/// Start offsets of consecutive runs of the given lengths, and the total.
fn offsets(lens: impl Iterator<Item = usize>) -> Vec<u32> {
    let mut first = vec![0u32];
    for len in lens {
        let last = first[first.len() - 1];
        first.push(last + len as u32);
    }
    first
}

/// The vocabulary's byte strings, for constrained output; built once per tokenizer.
pub struct JsonVocab {
    trie: Trie,
    /// The tokens that are plain text (see [`plain_text`]), as bits.
    plain: Vec<u64>,
    /// The trie of every other token: in a free string or key, the only walk.
    special: Trie,
    pub(crate) bytes: Vec<Box<[u8]>>,
    pub(crate) eos: Vec<u32>,
}

impl std::fmt::Debug for JsonVocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonVocab")
            .field("tokens", &self.bytes.len())
            .field("trie_nodes", &(self.trie.first_edge.len() - 1))
            .finish()
    }
}

impl JsonVocab {
    /// `bytes[t]` is token `t`'s text (empty for a token that is never text: a
    /// special token); `eos` end the output.
    pub fn new(bytes: Vec<Vec<u8>>, eos: Vec<u32>) -> Self {
        let mut plain = vec![0u64; bytes.len().div_ceil(64)];
        let special: Vec<Vec<u8>> = bytes
            .iter()
            .enumerate()
            .map(|(t, b)| {
                if !b.is_empty() && plain_text(b) {
                    set_bit(&mut plain, t as u32);
                    Vec::new()
                } else {
                    b.clone()
                }
            })
            .collect();
        Self {
            trie: Trie::new(&bytes),
            plain,
            special: Trie::new(&special),
            bytes: bytes.into_iter().map(Vec::into_boxed_slice).collect(),
            eos,
        }
    }

    /// The constraint that the output follows `schema`; requests that share it
    /// share its masks.
    pub fn constraint(self: &Arc<Self>, schema: Schema) -> Constraint {
        self.with_masks(schema, false)
    }

    /// Free text, unless the output starts with `[`: then it is what `schema`
    /// accepts (tool calls that the model may or may not make).
    pub fn triggered_constraint(self: &Arc<Self>, schema: Schema) -> Constraint {
        self.with_masks(schema, true)
    }

    fn with_masks(self: &Arc<Self>, schema: Schema, triggered: bool) -> Constraint {
        let masks = Arc::new(Masks {
            vocab: self.clone(),
            schema,
            kept: Mutex::new(HashMap::new()),
        });
        Constraint(Arc::new(SchemaConstraint { masks, triggered }))
    }

    /// Marks every token whose bytes `state` takes. In a free string or key,
    /// every plain-text token is taken and only the others are walked (about
    /// one token in thirty of a large vocabulary); elsewhere all of them.
    fn walk(&self, schema: &Schema, state: &SchemaState, bits: &mut [u64]) {
        if state.cursor().is_some_and(|c| c.is_plain(schema)) {
            bits.copy_from_slice(&self.plain);
            Self::walk_trie(&self.special, schema, state, bits);
        } else {
            Self::walk_trie(&self.trie, schema, state, bits);
        }
    }

    /// Marks every token of `trie` whose bytes `state` takes, depth first.
    /// Inside a token only the token's cursor is carried (most of the
    /// vocabulary is text inside a string); a whole state is made where the
    /// token ends, and becomes the base of the cursors below it.
    fn walk_trie(trie: &Trie, schema: &Schema, state: &SchemaState, bits: &mut [u64]) {
        let mut bases = vec![state.clone()];
        let mut todo = vec![(0u32, Walk::At(0))];
        while let Some((node, at)) = todo.pop() {
            for &(byte, child) in trie.children(node) {
                let next = match at {
                    Walk::Token(base, cursor) => {
                        match bases[base].step_cursor(schema, cursor, byte) {
                            CursorStep::Go(c) => Some(Walk::Token(base, c)),
                            CursorStep::Refused => None,
                            CursorStep::Ends => {
                                let whole = bases[base].with_cursor(cursor);
                                Self::full(schema, &mut bases, whole, byte)
                            }
                        }
                    }
                    Walk::At(base) => {
                        let whole = bases[base].clone();
                        Self::full(schema, &mut bases, whole, byte)
                    }
                };
                if let Some(next) = next {
                    for &t in trie.tokens(child) {
                        set_bit(bits, t);
                    }
                    todo.push((child, next));
                }
            }
        }
    }

    /// `state` after `byte` through the general path, kept as a new base.
    fn full(
        schema: &Schema,
        bases: &mut Vec<SchemaState>,
        mut state: SchemaState,
        byte: u8,
    ) -> Option<Walk> {
        if !state.feed(schema, byte) {
            return None;
        }
        let cursor = state.cursor();
        bases.push(state);
        let base = bases.len() - 1;
        Some(match cursor {
            Some(c) => Walk::Token(base, c),
            None => Walk::At(base),
        })
    }
}

/// Where a trie walk stands: a whole state, or a token's cursor over one.
#[derive(Clone, Copy)]
enum Walk {
    At(usize),
    Token(usize, TokenCursor),
}

/// A schema over a vocabulary, with the masks of the states met so far.
pub(crate) struct Masks {
    pub(crate) vocab: Arc<JsonVocab>,
    pub(crate) schema: Schema,
    kept: Mutex<HashMap<SchemaState, Arc<Mask>>>,
}

impl Masks {
    /// Which tokens can come in `state`. Should nothing be able to (a schema
    /// whose rules cannot all be met at once), the output ends.
    pub(crate) fn get(&self, state: &SchemaState) -> Arc<Mask> {
        if let Some(m) = self.kept.lock().ok().and_then(|m| m.get(state).cloned()) {
            return m;
        }
        let vocab = &self.vocab;
        let mut bits = vec![0u64; vocab.bytes.len().div_ceil(64)];
        vocab.walk(&self.schema, state, &mut bits);
        let open = bits.iter().any(|&w| w != 0);
        if !open || state.complete(&self.schema) {
            for &e in &vocab.eos {
                set_bit(&mut bits, e);
            }
        }
        let mask = Arc::new(Mask::from_bits(bits));
        if let Ok(mut kept) = self.kept.lock() {
            if kept.len() >= MASKS_KEPT {
                kept.clear();
            }
            kept.insert(state.clone(), mask.clone());
        }
        mask
    }
}

#[cfg(test)]
mod tests {
    use medgemma_core::ConstraintMatcher;

    use super::*;

    /// A toy vocabulary: 0 is end of sequence, the rest pieces of JSON and text.
    fn vocab() -> Arc<JsonVocab> {
        let pieces = [
            "", "{", "}", "\"", "a", "\":", " ", "1", "2", ",", "[", "]", "true", "\"}", "{\"",
            "x\n", "<tag>",
        ];
        let mut bytes: Vec<Vec<u8>> = pieces.iter().map(|p| p.as_bytes().to_vec()).collect();
        bytes[16] = Vec::new(); // a special token: never text
        Arc::new(JsonVocab::new(bytes, vec![0]))
    }

    fn allowed(m: &dyn ConstraintMatcher, n: usize) -> Vec<usize> {
        let mut a = vec![true; n];
        m.restrict(&mut a);
        (0..n).filter(|&i| a[i]).collect()
    }

    #[test]
    fn the_mask_follows_the_document() {
        let v = vocab();
        let c = v.constraint(Schema::any_object());
        let mut m = c.0.matcher();
        assert_eq!(allowed(m.as_ref(), 17), vec![1, 14], "{{ or {{\"");
        m.accept(14);
        // In a key: text, closing quote (then colon), no raw newline, no special token.
        let now = allowed(m.as_ref(), 17);
        assert!(now.contains(&4) && now.contains(&5));
        assert!(!now.contains(&15) && !now.contains(&16) && !now.contains(&0));
        assert!(
            !now.contains(&13),
            "a key is followed by a colon, not a brace"
        );
        for t in [4, 5, 7, 2] {
            m.accept(t);
        }
        assert_eq!(allowed(m.as_ref(), 17), vec![0], "closed: only the end");
        // More entries than the vocabulary: the rest are not allowed.
        assert_eq!(allowed(m.as_ref(), 20), vec![0]);
    }
}

#[cfg(test)]
mod walks {
    //! Random walks through masks: every allowed token keeps the document
    //! valid, the end is allowed exactly when it is complete, and a walk never
    //! meets a dead end (a state where only the forced end remains).

    use medgemma_core::TokenConstraint;

    use super::*;
    use serde_json::json;

    /// Single bytes (printable ASCII, a few UTF-8 and control bytes) and pieces
    /// that span several JSON tokens; 0 is the end of sequence.
    fn vocab() -> Arc<JsonVocab> {
        let mut bytes: Vec<Vec<u8>> = vec![Vec::new()];
        bytes.extend((0x20..0x7Fu8).map(|b| vec![b]));
        for p in [
            "\n", "\t", "é", "😀", "\": \"", "\", \"", "\"}", "}]", "\":", "true", "null", "12",
            "0.5", "-3", "\\u00e9", "\\n", "  ", "mild", "severe", "2026-", "11-29", "{\"", "[{",
        ] {
            bytes.push(p.as_bytes().to_vec());
        }
        // Half a character, and what completes it (as byte-fallback tokens do).
        bytes.push(vec![0xC3]);
        bytes.extend((0x80..0xC0u8).map(|b| vec![b]));
        Arc::new(JsonVocab::new(bytes, vec![0]))
    }

    fn schemas() -> Vec<Schema> {
        let mut list = vec![Schema::any_object()];
        for s in [
            json!({"type": "object", "properties": {
                "severity": {"enum": ["mild", "moderate", "severe"]},
                "size": {"type": "number", "minimum": -5, "maximum": 250.5},
                "count": {"type": "integer", "exclusiveMinimum": 3, "maximum": 40},
                "date": {"type": "string", "format": "date"},
                "code": {"type": "string", "pattern": "^[A-Z][0-9]{2}(\\.[0-9])?$"},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "minItems": 1, "maxItems": 3},
                "other": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"x": {"type": "boolean"}}, "required": ["x"]}]}
            }, "required": ["severity", "size", "count", "date", "code", "tags", "other"], "additionalProperties": false}),
            json!({"type": "array", "items": {"type": "integer", "minimum": 100}, "minItems": 2}),
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            // Room must be left for the required key.
            json!({"type": "object", "properties": {"a": {"type": "string", "maxLength": 2},
                "b": {"type": "integer"}, "c": {"type": "boolean"}},
                "required": ["c"], "minProperties": 1, "maxProperties": 2}),
        ] {
            list.push(Schema::compile(&s).unwrap());
        }
        list
    }

    #[test]
    fn walks_stay_valid_and_never_meet_a_dead_end() {
        let vocab = vocab();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let closing = |t: usize| t == 0 || vocab.bytes[t].iter().any(|b| b"\"}]".contains(b));
        for schema in schemas() {
            let masks = Arc::new(Masks {
                vocab: vocab.clone(),
                schema,
                kept: Mutex::new(HashMap::new()),
            });
            let constraint = SchemaConstraint {
                masks: masks.clone(),
                triggered: false,
            };
            let mut completed = 0;
            for _ in 0..60 {
                let mut m = constraint.matcher();
                let mut text = Vec::new();
                for _ in 0..400 {
                    let mut a = vec![true; vocab.bytes.len()];
                    m.restrict(&mut a);
                    let allowed: Vec<usize> = (0..a.len()).filter(|&i| a[i]).collect();
                    let mut probe = SchemaState::new();
                    assert!(probe.feed_all(&masks.schema, &text));
                    let complete = probe.complete(&masks.schema);
                    let shown = String::from_utf8_lossy(&text).into_owned();
                    // Free strings and keys skip the plain tokens' walk: the
                    // same mask as walking every token.
                    let words = vocab.bytes.len().div_ceil(64);
                    let (mut fast, mut slow) = (vec![0u64; words], vec![0u64; words]);
                    vocab.walk(&masks.schema, &probe, &mut fast);
                    JsonVocab::walk_trie(&vocab.trie, &masks.schema, &probe, &mut slow);
                    assert_eq!(fast, slow, "{shown}");
                    assert_eq!(allowed.contains(&0), complete, "{shown}");
                    assert!(
                        !allowed.is_empty() && (allowed != [0] || complete),
                        "dead end after {shown}"
                    );
                    // Closing pieces half of the time, so that walks finish.
                    let pool: Vec<usize> = match next() % 2 {
                        0 => allowed.iter().copied().filter(|&t| closing(t)).collect(),
                        _ => Vec::new(),
                    };
                    let pool = if pool.is_empty() { &allowed } else { &pool };
                    let t = pool[(next() % pool.len() as u64) as usize];
                    if t == 0 {
                        serde_json::from_slice::<serde_json::Value>(&text)
                            .unwrap_or_else(|e| panic!("{e}: {shown}"));
                        completed += 1;
                        break;
                    }
                    text.extend_from_slice(&vocab.bytes[t]);
                    m.accept(t as u32);
                }
            }
            assert!(completed > 0, "no walk finished");
        }
    }
}
