//! Greedy decode steps run one step ahead.
//!
//! A replayed decode step keeps the GPU busy for a few milliseconds, but between
//! two steps the host hands the tokens to the scheduler, plans the next step and
//! copies its inputs: with nothing queued behind the step, the GPU waits for all of
//! it. So where every sequence of a decode step is plain greedy (its token is the
//! argmax, picked on the device), the executor launches the *next* step before it
//! reads this one's tokens: the same sequences one position further, fed the argmax
//! ids straight from device memory. The host then waits only for this step's ids
//! (copied out before the next step was queued), and the GPU runs the next step
//! while the host does its bookkeeping.
//!
//! When the scheduler asks for the next step, the run ahead answers it if the
//! step is that prediction or a part of it: the same sequences in the same order
//! (some may have finished), each fed the token it was given, at the predicted
//! position, reading and writing the same KV blocks. Anything else (a new prompt,
//! a preemption, a sampler that needs the logits) drops the run ahead and the step
//! runs as usual. A dropped run ahead only ever wrote each of its sequences' next
//! token into that sequence's own block, at the slot the real step writes the same
//! values to; a block freed meanwhile is reused only by work queued after it.
//! The first `CHECKED_STEPS` steps it answers are run again as usual and their
//! ids compared; a difference turns it off for good.
//! The scheduler reserves the next position's block ahead of time
//! (`Executor::lookahead_slots`), so that block boundaries do not stop it, and
//! marks the steps after which it expects a waiting request to join
//! (`StepBatch::admitting`): those are not run ahead, their next step being
//! another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{Result, Tensor};
use medgemma_core::SeqId;

use crate::batch::ForwardBatch;
use crate::kv::KvPool;

/// How often steps were run ahead, and how often the run ahead answered the step.
#[derive(Debug, Default)]
pub struct LookaheadStats {
    launched: AtomicU64,
    used: AtomicU64,
    /// A check or a launch failed, and the run ahead was turned off.
    failed: std::sync::atomic::AtomicBool,
}

impl LookaheadStats {
    /// Steps launched ahead.
    pub fn launched(&self) -> u64 {
        self.launched.load(Ordering::Relaxed)
    }

    /// Steps answered by their run ahead.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether the run ahead was turned off after a failed check or launch.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
}

/// A step launched ahead: the sequences it runs, its batch, the tokens it was fed
/// and its argmax ids, still on the device.
struct Pending {
    seqs: Vec<SeqId>,
    batch: ForwardBatch,
    /// The ids the step was fed (known on the host once the step before it is read).
    fed: Option<Vec<u32>>,
    ids: Tensor,
}

/// Steps run ahead whose ids are checked against the step run again as usual
/// before the run ahead is trusted (as a captured graph is checked against the
/// eager step).
const CHECKED_STEPS: usize = 4;

/// The executor's run ahead.
pub struct Lookahead {
    enabled: bool,
    /// Used steps still to check (`CHECKED_STEPS` at first).
    checks_left: usize,
    pending: Option<Pending>,
    download: crate::ids_download::IdsDownload,
    stats: Arc<LookaheadStats>,
}

impl Lookahead {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            checks_left: CHECKED_STEPS,
            pending: None,
            download: crate::ids_download::IdsDownload::default(),
            stats: Arc::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        self.pending = None;
    }

    pub fn stats(&self) -> Arc<LookaheadStats> {
        self.stats.clone()
    }

    /// Whether the ids of a used step run ahead are still to be checked against
    /// the step run as usual.
    pub fn needs_check(&self) -> bool {
        self.checks_left > 0
    }

    /// Checks a used step's ids from the run ahead against the same step run as
    /// usual: equal, one check fewer is left; different, the run ahead is turned
    /// off for good (with a warning) and the usual ids are to be used.
    pub fn check(&mut self, ahead: &[u32], usual: &[u32]) -> bool {
        if ahead == usual {
            self.checks_left = self.checks_left.saturating_sub(1);
            return true;
        }
        self.turn_off("a step run ahead picked other tokens than the same step run as usual");
        false
    }

    /// Turns the run ahead off for good, saying why.
    pub fn turn_off(&mut self, why: &str) {
        tracing::warn!(reason = why, "decode lookahead off");
        self.stats.failed.store(true, Ordering::Relaxed);
        self.set_enabled(false);
    }

    /// Forgets the step run ahead, if any (the next step is not its prediction).
    pub fn drop_pending(&mut self) {
        self.pending = None;
    }

    /// The device ids of `batch` (sequences `seqs`, in order) from the step run
    /// ahead, when that step computed them (while checks are left, only when it
    /// computed exactly `batch`); the run ahead is consumed either way.
    pub fn claim(
        &mut self,
        seqs: &[SeqId],
        batch: &ForwardBatch,
        pool: &KvPool,
    ) -> Result<Option<Tensor>> {
        let Some(p) = self.pending.take() else {
            return Ok(None);
        };
        let Some(rows) = matching_rows(&p, seqs, batch, pool) else {
            return Ok(None);
        };
        let whole = rows.len() == p.seqs.len();
        // A check compares with the same step run as usual at the same shape (a
        // part of the batch runs at another, whose products may round otherwise).
        if !whole && self.needs_check() {
            return Ok(None);
        }
        self.stats.used.fetch_add(1, Ordering::Relaxed);
        if whole {
            return Ok(Some(p.ids));
        }
        let index = Tensor::new(rows.as_slice(), p.ids.device())?;
        Ok(Some(p.ids.index_select(&index, 0)?))
    }

    /// Keeps a step launched ahead over `batch` (sequences `seqs`), whose argmax
    /// ids are `ids`; it is fed the ids of the step now being read.
    pub fn hold(&mut self, seqs: Vec<SeqId>, batch: ForwardBatch, ids: Tensor) {
        self.stats.launched.fetch_add(1, Ordering::Relaxed);
        self.pending = Some(Pending {
            seqs,
            batch,
            fed: None,
            ids,
        });
    }

    /// Starts copying a step's device ids to the host (before the step ahead is
    /// queued behind it).
    pub fn start_download(&mut self, ids: &Tensor) -> Result<()> {
        self.download.start(ids)
    }

    /// The ids being copied, once there; they are what the step ahead was fed.
    pub fn finish_download(&mut self) -> Result<Vec<u32>> {
        let ids = self.download.finish()?;
        if let Some(p) = &mut self.pending {
            p.fed = Some(ids.clone());
        }
        Ok(ids)
    }
}

/// The decode step after `batch`: every sequence one position further (its token
/// still unknown: 0 here), with the same blocks; `None` when a sequence's blocks do
/// not hold that position yet.
pub fn next_step(batch: &ForwardBatch, pool: &KvPool) -> Option<ForwardBatch> {
    let mut next = ForwardBatch::default();
    for span in &batch.spans {
        if !span.is_decode() || !span.want_logits {
            return None;
        }
        let i = next.push(&[0], span.start_pos + 1, true);
        next.spans[i].block_tables.clone_from(&span.block_tables);
        if !pool.holds(&next.spans[i]) {
            return None;
        }
    }
    Some(next)
}

/// For each sequence of `batch`, its row in the step run ahead, when that step
/// computed exactly what `batch` asks (see the module doc).
fn matching_rows(
    p: &Pending,
    seqs: &[SeqId],
    batch: &ForwardBatch,
    pool: &KvPool,
) -> Option<Vec<u32>> {
    let fed = p.fed.as_ref()?;
    if seqs.len() != batch.spans.len() || batch.token_ids.len() != seqs.len() {
        return None;
    }
    let mut rows = Vec::with_capacity(seqs.len());
    let mut from = 0;
    for (i, (id, span)) in seqs.iter().zip(&batch.spans).enumerate() {
        let r = from + p.seqs[from..].iter().position(|s| s == id)?;
        from = r + 1;
        let predicted = &p.batch.spans[r];
        let same = span.is_decode()
            && span.want_logits
            && fed.get(r) == Some(&batch.token_ids[i])
            && pool.same_reads(span, predicted);
        if !same {
            return None;
        }
        rows.push(r as u32);
    }
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_steps_used_are_checked_and_a_difference_turns_it_off() {
        let mut ahead = Lookahead::new(true);
        for _ in 0..CHECKED_STEPS {
            assert!(ahead.needs_check());
            assert!(ahead.check(&[4, 5], &[4, 5]));
        }
        assert!(!ahead.needs_check() && ahead.enabled());
        let mut ahead = Lookahead::new(true);
        assert!(ahead.check(&[4, 5], &[4, 5]));
        assert!(!ahead.check(&[4, 5], &[4, 6]));
        assert!(!ahead.enabled() && ahead.stats().failed());
    }
}
