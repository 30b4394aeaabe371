//! Which tokens of a sequence run in the next step.

use medgemma_core::{ImageInput, ScheduledSeq};

use crate::seq::Sequence;

/// The next chunk of `seq` within `budget` tokens, never splitting an image;
/// `None` when nothing fits.
pub(crate) fn next_chunk(seq: &Sequence, budget: usize) -> Option<ScheduledSeq> {
    let start = seq.computed;
    let remaining = seq.tokens.len().checked_sub(start)?;
    if remaining == 0 || budget == 0 {
        return None;
    }
    let mut end = start + remaining.min(budget);
    for img in &seq.req.prompt.images {
        let (a, b) = (
            img.placeholder_start,
            img.placeholder_start + img.placeholder_len,
        );
        if a < end && end < b {
            // Cut before the image, or take it whole when it starts the chunk.
            end = if a > start { a } else { b };
        }
    }
    let images: Vec<ImageInput> = seq
        .req
        .prompt
        .images
        .iter()
        .filter(|i| i.placeholder_start >= start && i.placeholder_start < end)
        .cloned()
        .collect();
    Some(ScheduledSeq {
        seq_id: seq.id,
        tokens: seq.tokens[start..end].to_vec(),
        start_pos: start,
        sample: end == seq.tokens.len(),
        sampling: seq.req.sampling.clone(),
        images,
        block_tables: Vec::new(),
        cached_prefix: seq.tokens[..start.min(seq.unsent_prefix)].to_vec(),
    })
}
