//! Prefix caching: a full block, once computed, is registered under the hash of
//! its content (see `crate::prefix`) for its group; a new sequence whose first
//! blocks hash the same takes those blocks instead of computing them. Cached
//! blocks nobody holds wait in the free queue and are evicted, least recently
//! freed first, only when a block is needed.
//!
//! A sequence can start at `k` blocks when every group has what a query at
//! `k * block_size` reads: all `k` blocks for full attention, the blocks its
//! window still reaches for a sliding group. Sliding groups give back the blocks
//! their window has passed, so a long conversation's early blocks are cached in
//! the full group only; the prefix that ends where the last one did is the one
//! a next turn finds whole.

use std::collections::HashMap;

use super::{BlockId, BlockManager, SeqBlocks};
use crate::prefix::BlockHash;

#[derive(Debug, Clone)]
pub(super) struct PrefixCache {
    enabled: bool,
    /// (group, content hash) → the block holding it.
    blocks: HashMap<(usize, BlockHash), BlockId>,
    /// The key each block is registered under.
    keys: Vec<Option<(usize, BlockHash)>>,
}

impl PrefixCache {
    pub fn new(total: usize) -> Self {
        Self {
            enabled: false,
            blocks: HashMap::new(),
            keys: vec![None; total],
        }
    }

    pub fn holds(&self, b: BlockId) -> bool {
        self.keys[b as usize].is_some()
    }

    /// `b` is being rewritten: its content is no longer cached.
    pub fn forget(&mut self, b: BlockId) {
        if let Some(key) = self.keys[b as usize].take() {
            if self.blocks.get(&key) == Some(&b) {
                self.blocks.remove(&key);
            }
        }
    }

    fn has(&self, group: usize, hash: BlockHash) -> bool {
        self.blocks.contains_key(&(group, hash))
    }
}

impl BlockManager {
    /// Turns prefix caching on or off (off by default; turning it off forgets
    /// everything cached).
    pub fn set_prefix_caching(&mut self, enabled: bool) {
        if !enabled {
            let total = self.total;
            self.cache = PrefixCache::new(total);
        }
        self.cache.enabled = enabled;
    }

    pub fn prefix_caching(&self) -> bool {
        self.cache.enabled
    }

    /// Blocks holding cached content (held by a sequence or free).
    pub fn cached_blocks(&self) -> usize {
        self.cache.blocks.len()
    }

    /// Gives an empty `seq` the longest cached prefix of the chain `hashes`
    /// (one hash per full block) that every group can start from and that
    /// `usable(k)` accepts for `k` blocks; returns the tokens it covers.
    pub fn reuse_prefix(
        &mut self,
        seq: &mut SeqBlocks,
        hashes: &[BlockHash],
        usable: impl Fn(usize) -> bool,
    ) -> usize {
        if !self.cache.enabled || !seq.tables.is_empty() {
            return 0;
        }
        let k = self.longest_prefix(hashes, usable);
        if k == 0 {
            return 0;
        }
        seq.tables.resize_with(self.windows.len(), Default::default);
        for (g, table) in seq.tables.iter_mut().enumerate() {
            let first = self.first_needed(g, k * self.block_size).min(k);
            table.first = first;
            for h in &hashes[first..k] {
                // Checked by `longest_prefix`.
                let Some(&b) = self.cache.blocks.get(&(g, *h)) else {
                    continue;
                };
                self.free.remove(b);
                self.refs[b as usize] += 1;
                table.blocks.push(b);
            }
        }
        k * self.block_size
    }

    /// The most blocks of `hashes` every group has cached what it needs of.
    fn longest_prefix(&self, hashes: &[BlockHash], usable: impl Fn(usize) -> bool) -> usize {
        // A full-attention group needs every block: past its first miss, nothing.
        let mut n = hashes.len();
        for (g, w) in self.windows.iter().enumerate() {
            if w.is_none() {
                n = n.min(hashes.iter().take_while(|h| self.cache.has(g, **h)).count());
            }
        }
        // runs[g][i]: cached blocks of group g in a row ending at block i.
        let runs: Vec<Vec<usize>> = (0..self.windows.len())
            .map(|g| {
                let mut run = 0;
                hashes[..n]
                    .iter()
                    .map(|h| {
                        run = if self.cache.has(g, *h) { run + 1 } else { 0 };
                        run
                    })
                    .collect()
            })
            .collect();
        (1..=n)
            .rev()
            .find(|&k| {
                usable(k)
                    && runs.iter().enumerate().all(|(g, run)| {
                        let first = self.first_needed(g, k * self.block_size).min(k);
                        first == k || run[k - 1] >= k - first
                    })
            })
            .unwrap_or(0)
    }

    /// Registers the full blocks `seq` holds from logical block `from` on whose
    /// content `hashes` gives (block `i` hashed `hashes[i]`), so later sequences
    /// can reuse them. Content another block already caches stays uncached here.
    pub fn register(&mut self, seq: &SeqBlocks, hashes: &[BlockHash], from: usize) {
        if !self.cache.enabled {
            return;
        }
        for (g, table) in seq.tables.iter().enumerate() {
            let held = (table.first..).zip(&table.blocks);
            for (i, &b) in held.take_while(|(i, _)| *i < hashes.len()) {
                if i < from || self.cache.holds(b) {
                    continue;
                }
                let key = (g, hashes[i]);
                if let std::collections::hash_map::Entry::Vacant(e) = self.cache.blocks.entry(key) {
                    e.insert(b);
                    self.cache.keys[b as usize] = Some(key);
                }
            }
        }
    }
}
