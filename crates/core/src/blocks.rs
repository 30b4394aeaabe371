//! Paged KV memory: fixed-size blocks from one pool, handed out per sequence.
//!
//! The executor allocates the pool once (`KvLayout::num_blocks` blocks); this
//! module only does the bookkeeping, so the scheduler can plan with it and tests
//! need no model. Layers are split into *groups* (all full-attention layers, and
//! the sliding-window layers in groups of the same size); every group draws
//! blocks from the same pool, and a sequence has one block table per group.
//! Sliding groups free the blocks their window no longer reaches, which for
//! Gemma 3 (five sliding layers per global one) is most of the memory.

use thiserror::Error;

mod cached;
mod free_queue;

use cached::PrefixCache;
use free_queue::FreeQueue;

/// Index of a block in the pool.
pub type BlockId = u32;

/// How the executor's KV memory is laid out, so a scheduler can budget it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvLayout {
    /// The longest sequence (prompt plus output) the executor accepts.
    pub max_seq_len: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Blocks in the pool, allocated once at start-up.
    pub num_blocks: usize,
    /// Attention window of each group's layers (`None`: full attention).
    pub groups: Vec<Option<usize>>,
    /// Bytes one block takes on the device.
    pub bytes_per_block: usize,
}

impl KvLayout {
    /// Blocks one sequence holds at most once `len` tokens are cached and a chunk of
    /// up to `chunk` new tokens is being written.
    pub fn blocks_for(&self, len: usize, chunk: usize) -> usize {
        let bs = self.block_size.max(1);
        let full = len.div_ceil(bs);
        self.groups
            .iter()
            .map(|w| match w {
                None => full,
                // The window behind the chunk, the chunk, and one partly used block.
                Some(w) => full.min((w.saturating_sub(1) + chunk).div_ceil(bs) + 1),
            })
            .sum()
    }

    /// Total pool bytes.
    pub fn pool_bytes(&self) -> usize {
        self.num_blocks * self.bytes_per_block
    }
}

/// The blocks of one group of one sequence: `blocks[i]` holds logical block
/// `first + i` (tokens `(first + i) * block_size ..`). Sliding groups drop
/// blocks from the front, so `first` grows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockTable {
    pub first: usize,
    pub blocks: Vec<BlockId>,
}

impl BlockTable {
    /// The pool slot (block * block_size + offset) of the token at `pos`, if held.
    pub fn slot(&self, pos: usize, block_size: usize) -> Option<usize> {
        let logical = pos / block_size;
        let i = logical.checked_sub(self.first)?;
        let block = *self.blocks.get(i)? as usize;
        Some(block * block_size + pos % block_size)
    }

    /// One past the last logical block held.
    fn end(&self) -> usize {
        self.first + self.blocks.len()
    }
}

/// A sequence's blocks: one table per group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqBlocks {
    pub tables: Vec<BlockTable>,
}

impl SeqBlocks {
    pub fn num_blocks(&self) -> usize {
        self.tables.iter().map(|t| t.blocks.len()).sum()
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BlockError {
    #[error("{needed} KV blocks needed, {free} free")]
    OutOfBlocks { needed: usize, free: usize },
}

/// Hands out and takes back the pool's blocks. A block may be shared by several
/// sequences (a cached prefix, see `cached.rs`); it returns to the free queue
/// when the last one lets go, and keeps its cached content until it is taken
/// again.
#[derive(Debug, Clone)]
pub struct BlockManager {
    block_size: usize,
    windows: Vec<Option<usize>>,
    free: FreeQueue,
    /// Sequences (and groups) holding each block.
    refs: Vec<u32>,
    cache: PrefixCache,
    total: usize,
}

impl BlockManager {
    pub fn new(layout: &KvLayout) -> Self {
        let total = layout.num_blocks;
        Self {
            block_size: layout.block_size.max(1),
            windows: layout.groups.clone(),
            free: FreeQueue::full(total),
            refs: vec![0; total],
            cache: PrefixCache::new(total),
            total,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    pub fn used_blocks(&self) -> usize {
        self.total - self.free.len()
    }

    /// The first logical block group `g` still needs once `len` tokens are cached.
    fn first_needed(&self, g: usize, len: usize) -> usize {
        match self.windows[g] {
            None => 0,
            Some(w) => len.saturating_sub(w.saturating_sub(1)) / self.block_size,
        }
    }

    /// New blocks `seq` needs to write tokens `start..end` (after trimming to `start`).
    pub fn needed(&self, seq: &SeqBlocks, start: usize, end: usize) -> usize {
        let last = end.div_ceil(self.block_size);
        (0..self.windows.len())
            .map(|g| {
                let first = self.first_needed(g, start);
                let have_end = seq.tables.get(g).map_or(0, BlockTable::end).max(first);
                last.saturating_sub(have_end)
            })
            .sum()
    }

    /// Frees the blocks no query at or after position `len` can see.
    pub fn trim(&mut self, seq: &mut SeqBlocks, len: usize) {
        for g in 0..seq.tables.len().min(self.windows.len()) {
            let first = self.first_needed(g, len);
            let table = &mut seq.tables[g];
            let drop = first.saturating_sub(table.first).min(table.blocks.len());
            for b in table.blocks.drain(..drop) {
                Self::release(&mut self.free, &mut self.refs, &self.cache, b);
            }
            table.first = if table.blocks.is_empty() {
                table.first.max(first)
            } else {
                table.first + drop
            };
        }
    }

    /// Makes `seq` hold every block tokens `start..end` are written to and read
    /// from; all or nothing.
    pub fn extend(
        &mut self,
        seq: &mut SeqBlocks,
        start: usize,
        end: usize,
    ) -> Result<(), BlockError> {
        self.trim(seq, start);
        let needed = self.needed(seq, start, end);
        if needed > self.free.len() {
            return Err(BlockError::OutOfBlocks {
                needed,
                free: self.free.len(),
            });
        }
        seq.tables
            .resize_with(self.windows.len(), BlockTable::default);
        let last = end.div_ceil(self.block_size);
        for table in &mut seq.tables {
            while table.end() < last {
                // Checked above: enough blocks are free.
                let Some(b) = self.free.pop_front() else {
                    break;
                };
                self.cache.forget(b);
                self.refs[b as usize] = 1;
                table.blocks.push(b);
            }
        }
        Ok(())
    }

    /// Returns every block of `seq` to the pool (the last blocks first, so that
    /// of a cached prefix the end is evicted before the start).
    pub fn free(&mut self, seq: &mut SeqBlocks) {
        for table in seq.tables.drain(..) {
            for b in table.blocks.into_iter().rev() {
                Self::release(&mut self.free, &mut self.refs, &self.cache, b);
            }
        }
    }

    /// Drops one holder of `b`; the last one queues it: behind the others when it
    /// holds a cached prefix, in front when it holds nothing worth keeping.
    fn release(free: &mut FreeQueue, refs: &mut [u32], cache: &PrefixCache, b: BlockId) {
        let r = &mut refs[b as usize];
        *r = r.saturating_sub(1);
        if *r > 0 || free.contains(b) {
            return;
        }
        if cache.holds(b) {
            free.push_back(b);
        } else {
            free.push_front(b);
        }
    }
}

#[cfg(test)]
mod tests;

/// Block tables for callers that drive an executor directly, one step at a time,
/// without the scheduler: one-off generation, tests and benchmarks.
#[derive(Debug, Clone)]
pub struct DirectBlocks {
    manager: BlockManager,
    seqs: std::collections::HashMap<crate::SeqId, SeqBlocks>,
}

impl DirectBlocks {
    pub fn new(layout: &KvLayout) -> Self {
        Self {
            manager: BlockManager::new(layout),
            seqs: Default::default(),
        }
    }

    /// Gives `seq` the blocks its chunk needs and fills in its block tables.
    pub fn assign(&mut self, seq: &mut crate::ScheduledSeq) -> Result<(), BlockError> {
        let held = self.seqs.entry(seq.seq_id).or_default();
        let end = seq.start_pos + seq.tokens.len();
        self.manager.extend(held, seq.start_pos, end)?;
        seq.block_tables.clone_from(&held.tables);
        Ok(())
    }

    /// Returns a sequence's blocks to the pool.
    pub fn release(&mut self, id: crate::SeqId) {
        if let Some(mut held) = self.seqs.remove(&id) {
            self.manager.free(&mut held);
        }
    }

    pub fn used_blocks(&self) -> usize {
        self.manager.used_blocks()
    }
}
