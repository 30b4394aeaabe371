//! JSON mode (`response_format: {"type": "json_object"}`): the output is one JSON
//! object. Before each token the sampler is told which tokens keep the output a
//! prefix of valid JSON: the vocabulary's byte strings sit in a trie, walked
//! once per step with the recognizer (`json_grammar`), pruning at the first byte
//! that cannot come. Masks are kept per recognizer state (the same state recurs
//! at every key, every value of an array, ...). End-of-sequence tokens are
//! allowed exactly when the object is closed; special tokens never.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use medgemma_core::{Constraint, ConstraintMatcher, TokenConstraint};

use crate::json_grammar::JsonState;

/// Masks kept at most (each one bit per vocabulary entry: 32 KiB for 262k tokens).
const MASKS_KEPT: usize = 256;

/// One bit per token.
#[derive(Debug)]
struct Mask(Vec<u64>);

impl Mask {
    fn new(tokens: usize) -> Self {
        Self(vec![0; tokens.div_ceil(64)])
    }

    fn set(&mut self, t: u32) {
        if let Some(w) = self.0.get_mut(t as usize / 64) {
            *w |= 1 << (t % 64);
        }
    }

    fn get(&self, t: usize) -> bool {
        self.0.get(t / 64).is_some_and(|w| w & (1 << (t % 64)) != 0)
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

/// The vocabulary's byte strings, for JSON mode; built once per tokenizer.
pub struct JsonVocab {
    trie: Trie,
    bytes: Vec<Box<[u8]>>,
    eos: Vec<u32>,
    masks: Mutex<HashMap<JsonState, Arc<Mask>>>,
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
        Self {
            trie: Trie::new(&bytes),
            bytes: bytes.into_iter().map(Vec::into_boxed_slice).collect(),
            eos,
            masks: Mutex::new(HashMap::new()),
        }
    }

    /// The constraint for a request's sampling parameters.
    pub fn constraint(self: &Arc<Self>) -> Constraint {
        Constraint(Arc::new(JsonConstraint(self.clone())))
    }

    /// Which tokens can come in `state` (indexed by token id).
    fn mask(&self, state: &JsonState) -> Arc<Mask> {
        if let Some(m) = self.masks.lock().ok().and_then(|m| m.get(state).cloned()) {
            return m;
        }
        let mut mask = Mask::new(self.bytes.len());
        if state.complete() {
            for &e in &self.eos {
                mask.set(e);
            }
        } else {
            self.walk(*state, &mut mask);
        }
        let mask = Arc::new(mask);
        if let Ok(mut kept) = self.masks.lock() {
            if kept.len() >= MASKS_KEPT {
                kept.clear();
            }
            kept.insert(*state, mask.clone());
        }
        mask
    }

    /// Marks every token whose bytes `state` takes, depth first through the trie.
    fn walk(&self, state: JsonState, mask: &mut Mask) {
        let mut todo = vec![(0u32, state)];
        while let Some((node, state)) = todo.pop() {
            for &(byte, child) in self.trie.children(node) {
                let mut next = state;
                if next.feed(byte) {
                    for &t in self.trie.tokens(child) {
                        mask.set(t);
                    }
                    todo.push((child, next));
                }
            }
        }
    }
}

#[derive(Debug)]
struct JsonConstraint(Arc<JsonVocab>);

impl TokenConstraint for JsonConstraint {
    fn matcher(&self) -> Box<dyn ConstraintMatcher> {
        Box::new(JsonMatcher {
            vocab: self.0.clone(),
            state: JsonState::new(),
        })
    }
}

#[derive(Debug, Clone)]
struct JsonMatcher {
    vocab: Arc<JsonVocab>,
    state: JsonState,
}

impl ConstraintMatcher for JsonMatcher {
    fn restrict(&self, allowed: &mut [bool]) {
        let mask = self.vocab.mask(&self.state);
        for (i, a) in allowed.iter_mut().enumerate() {
            *a = *a && mask.get(i);
        }
    }

    fn accept(&mut self, token: u32) {
        if self.vocab.eos.contains(&token) {
            return;
        }
        let bytes = self.vocab.bytes.get(token as usize).map_or(&[][..], |b| b);
        let mut next = self.state;
        // A token the mask did not allow (nothing was allowed) leaves the state.
        if next.feed_all(bytes) {
            self.state = next;
        }
    }

    fn box_clone(&self) -> Box<dyn ConstraintMatcher> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
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
        let c = v.constraint();
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
