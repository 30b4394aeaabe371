//! A step's attention as rows for the `paged_rows` kernel: one row per new token
//! of every sequence, each with the run of the sequence's keys its mask leaves
//! visible (`MaskSpec::key_runs`), all sequences' key slots in one list. Replaces
//! the per-sequence gathers and host-built masks of `KvPool::read` on steps where
//! that is cheaper (`worth_it`).

use candle_core::{Device, Result, Tensor};

use crate::batch::ForwardBatch;
use crate::mask::MaskSpec;
use crate::paged_rows::Row;

/// Key-query pairs (new tokens times keys, decodes included) per prefilling
/// sequence up to which the rows kernel is taken over the per-sequence path: its
/// per-(row, head) blocks read every visible key, so its cost grows with the
/// pairs, while the per-sequence path pays about a dozen launches per prefilling
/// sequence and layer (its decodes share one kernel launch) but reads keys in
/// large matrix products. A prompt of about 180 tokens; an estimate from the H200
/// figures (a launch costs 4–6 µs there), not yet measured against the kernel.
const PAIRS_PER_SEQUENCE: usize = 32_768;

/// Whether `batch` goes through the rows kernel: some sequence is not decoding
/// (all-decode steps have the decode kernel and its CUDA graphs), every image's
/// soft tokens are one run, and the key-query pairs are few enough for the
/// prefilling sequences.
pub fn worth_it(batch: &ForwardBatch) -> bool {
    if batch.spans.iter().all(|s| s.is_decode()) {
        return false;
    }
    let images_as_runs = batch.spans.iter().all(|s| {
        let spec = MaskSpec::of_span(s, 0, s.start_pos + s.len, None);
        s.image_groups.is_none() || spec.key_runs().is_some()
    });
    let pairs: usize = batch
        .spans
        .iter()
        .map(|s| s.len * (s.start_pos + s.len))
        .sum();
    let prefills = batch.spans.iter().filter(|s| !s.is_decode()).count();
    images_as_runs && pairs <= PAIRS_PER_SEQUENCE * prefills
}

/// One group's rows: every span's keys (positions `k_start..` of its `slots`) and a
/// row per new token.
pub fn plan(
    batch: &ForwardBatch,
    keys: Vec<(usize, Vec<u32>)>,
    window: Option<usize>,
    device: &Device,
) -> Result<RowsStep> {
    let mut all_slots = Vec::new();
    let mut rows = Vec::with_capacity(batch.num_tokens());
    for (span, (k_start, slots)) in batch.spans.iter().zip(keys) {
        let spec = MaskSpec::of_span(span, k_start, slots.len(), window);
        let Some(runs) = spec.key_runs() else {
            candle_core::bail!("a sequence's image is not one run of tokens");
        };
        let base = all_slots.len();
        for (qi, (lo, hi)) in runs.into_iter().enumerate() {
            let at = |j: usize| u32::try_from(base + j).map_err(candle_core::Error::wrap);
            rows.push(Row {
                token: u32::try_from(span.offset + qi).map_err(candle_core::Error::wrap)?,
                begin: at(lo)?,
                end: at(hi)?,
            });
        }
        all_slots.extend(slots);
    }
    let n = all_slots.len();
    Ok(RowsStep {
        slots: Tensor::from_vec(all_slots, n, device)?,
        meta: Row::to_meta(&rows, device)?,
    })
}

/// One group's rows on the device.
#[derive(Debug)]
pub struct RowsStep {
    /// Every sequence's key slots, one after another: `[keys]` u32.
    pub slots: Tensor,
    /// `[rows, 4]` u32, `Row::to_meta`.
    pub meta: Tensor,
}

/// What one layer's rows attention reads.
#[derive(Debug)]
pub struct RowsView<'a> {
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub slots: &'a Tensor,
    pub meta: &'a Tensor,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(spans: &[(usize, usize, Option<Vec<i32>>)]) -> ForwardBatch {
        let mut b = ForwardBatch::default();
        for (start, len, groups) in spans {
            let i = b.push(&vec![0; *len], *start, true);
            b.spans[i].image_groups = groups.clone();
        }
        b
    }

    #[test]
    fn rows_are_for_steps_with_short_prefills() {
        assert!(
            !worth_it(&batch(&[(5, 1, None), (9, 1, None)])),
            "all decodes"
        );
        assert!(worth_it(&batch(&[(5, 1, None), (0, 20, None)])));
        assert!(worth_it(&batch(&vec![(0, 128, None); 64])));
        assert!(!worth_it(&batch(&[(0, 4096, None)])), "a long prompt");
        let mut beside_decodes = vec![(2000, 1, None); 63];
        beside_decodes.push((0, 1000, None));
        assert!(
            !worth_it(&batch(&beside_decodes)),
            "decodes share one launch on the other path: they do not make room"
        );
        let split_image = Some(vec![0, 0, -1, 0]);
        assert!(!worth_it(&batch(&[(0, 4, split_image)])));
        assert!(worth_it(&batch(&[(0, 4, Some(vec![-1, 0, 0, -1]))])));
    }

    #[test]
    fn rows_index_each_sequences_own_keys() -> Result<()> {
        // A decode at position 5 (window 4: keys 2..6) and a 3-token chunk at 0.
        let b = batch(&[(5, 1, None), (0, 3, None)]);
        let keys = vec![(2, vec![12, 13, 14, 15]), (0, vec![40, 41, 42])];
        let step = plan(&b, keys, Some(4), &Device::Cpu)?;
        assert_eq!(step.slots.to_vec1::<u32>()?, [12, 13, 14, 15, 40, 41, 42]);
        let meta = step.meta.to_vec2::<u32>()?;
        assert_eq!(
            meta,
            [[0, 0, 4, 0], [1, 4, 5, 0], [2, 4, 6, 0], [3, 4, 7, 0]]
        );
        Ok(())
    }
}
