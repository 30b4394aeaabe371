//! The KV blocks a sequence's span reads and writes, checked and compared without
//! building the step's slot tables (for the run ahead, `crate::lookahead`).

use std::ops::RangeInclusive;

use medgemma_core::BlockId;

use super::KvPool;
use crate::batch::SeqSpan;

/// The first key position a token at `pos` reads in a group of `window`.
pub(super) fn key_start(window: Option<usize>, pos: usize) -> usize {
    window.map_or(0, |w| pos.saturating_sub(w.saturating_sub(1)))
}

impl KvPool {
    /// Logical blocks of group `g` that `span` touches: from its first token's
    /// first key to its last token.
    fn touched(&self, g: usize, span: &SeqSpan) -> Option<RangeInclusive<usize>> {
        let last = (span.start_pos + span.len).checked_sub(1)?;
        let first = key_start(*self.groups.windows.get(g)?, span.start_pos);
        Some(first / self.block_size..=last / self.block_size)
    }

    /// The pool blocks behind `touched`, when the span's table holds them all.
    fn touched_blocks<'a>(&self, g: usize, span: &'a SeqSpan) -> Option<&'a [BlockId]> {
        let table = span.block_tables.get(g)?;
        let range = self.touched(g, span)?;
        let lo = range.start().checked_sub(table.first)?;
        let hi = range.end().checked_sub(table.first)?;
        let blocks = table.blocks.get(lo..=hi)?;
        let in_pool = blocks.iter().all(|&b| (b as usize) <= self.num_blocks);
        in_pool.then_some(blocks)
    }

    /// Whether `span`'s tables hold every slot it reads and writes, in every group.
    pub fn holds(&self, span: &SeqSpan) -> bool {
        (0..self.num_groups()).all(|g| self.touched_blocks(g, span).is_some())
    }

    /// Whether spans `a` and `b` run the same tokens' positions over the same
    /// blocks, so that their attention reads and writes the same slots.
    pub fn same_reads(&self, a: &SeqSpan, b: &SeqSpan) -> bool {
        a.start_pos == b.start_pos
            && a.len == b.len
            && (0..self.num_groups()).all(|g| {
                match (self.touched_blocks(g, a), self.touched_blocks(g, b)) {
                    (Some(x), Some(y)) => x == y,
                    _ => false,
                }
            })
    }
}
