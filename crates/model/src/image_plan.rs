//! Which images one step encodes and where their features go, checked before any
//! state changes: an image lies wholly inside its sequence's chunk and fills
//! exactly `mm_tokens_per_image` soft tokens. A soft token no image claims is embedded as
//! text (the HTTP layer refuses prompts whose soft tokens and images disagree; a
//! generated one may follow the prompt).

use medgemma_core::{ExecutorError, ImageInput, ScheduledSeq, SeqId};

use crate::config::MultimodalConfig;

/// The images of one step, in batch order, with their packed token offsets.
#[derive(Debug, Default)]
pub struct StepImages<'a> {
    pub images: Vec<&'a ImageInput>,
    /// The sequence of each image.
    pub owners: Vec<SeqId>,
    /// Packed index of each image's first soft token.
    pub starts: Vec<usize>,
    /// Per sequence: image group of each new token (`-1` text), or `None` without images.
    pub groups: Vec<Option<Vec<i32>>>,
}

impl StepImages<'_> {
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

fn invalid(seq: SeqId, msg: String) -> ExecutorError {
    ExecutorError::InvalidSequence { seq, msg }
}

/// Plans the step's images; `mm` is `None` for a text-only model.
pub fn plan<'a>(
    seqs: &'a [ScheduledSeq],
    mm: Option<&MultimodalConfig>,
) -> Result<StepImages<'a>, ExecutorError> {
    let mut out = StepImages::default();
    let mut offset = 0;
    for s in seqs {
        let images = images_in_chunk(s)?;
        if images.is_empty() {
            out.groups.push(None);
        } else {
            let mm = mm.ok_or_else(|| {
                invalid(
                    s.seq_id,
                    "it carries images but the model has no vision tower".into(),
                )
            })?;
            let groups = check_placeholders(s, &images, mm)?;
            for img in &images {
                out.starts
                    .push(offset + img.placeholder_start - s.start_pos);
                out.images.push(img);
                out.owners.push(s.seq_id);
            }
            out.groups.push(Some(groups));
        }
        offset += s.tokens.len();
    }
    Ok(out)
}

/// The sequence's images whose soft tokens lie in this chunk, in prompt order.
fn images_in_chunk(s: &ScheduledSeq) -> Result<Vec<&ImageInput>, ExecutorError> {
    let (lo, hi) = (s.start_pos, s.start_pos + s.tokens.len());
    let mut found = Vec::new();
    for img in &s.images {
        let (a, b) = (
            img.placeholder_start,
            img.placeholder_start + img.placeholder_len,
        );
        if b <= lo || a >= hi {
            continue; // wholly in another chunk
        }
        if a < lo || b > hi {
            return Err(invalid(
                s.seq_id,
                format!("image at tokens {a}..{b} is split across chunks ({lo}..{hi})"),
            ));
        }
        found.push(img);
    }
    found.sort_by_key(|i| i.placeholder_start);
    Ok(found)
}

/// Checks sizes and token ids; returns the image group of every new token.
fn check_placeholders(
    s: &ScheduledSeq,
    images: &[&ImageInput],
    mm: &MultimodalConfig,
) -> Result<Vec<i32>, ExecutorError> {
    let per = mm.mm_tokens_per_image;
    let mut groups = vec![-1i32; s.tokens.len()];
    for (g, img) in images.iter().enumerate() {
        if img.placeholder_len != per {
            return Err(invalid(
                s.seq_id,
                format!(
                    "image placeholder of {} tokens, the model uses {per} per image",
                    img.placeholder_len
                ),
            ));
        }
        let rel = img.placeholder_start - s.start_pos;
        for (j, slot) in groups[rel..rel + per].iter_mut().enumerate() {
            if s.tokens[rel + j] != mm.image_token_id || *slot != -1 {
                return Err(invalid(
                    s.seq_id,
                    format!(
                        "token {} is not a free image soft token",
                        img.placeholder_start + j
                    ),
                ));
            }
            *slot = g as i32;
        }
    }
    // A soft token outside every image is text: one the model generated (and the
    // chunk recomputes after a preemption), as transformers embeds it when fed back.
    Ok(groups)
}
