//! The logits of a step's rows that the host draws. A row drawn with top-k and
//! nothing that changes its logits needs only its largest ones: on a GPU whose
//! top-k kernel passed its self-test those cross over (`crate::topk`, 8 bytes a
//! candidate); every other row, or one holding a non-finite logit, crosses whole
//! (1 MiB at Gemma's vocabulary).

use candle_core::{Result, Tensor};

/// What the host draws one row from.
#[derive(Debug, Clone, PartialEq)]
pub enum HostRow {
    /// The whole row.
    Whole(Vec<f32>),
    /// At least the row's `top_k` largest finite logits (the row is all finite).
    Top(Vec<(u32, f32)>),
}

/// The host rows of `logits` `[rows, vocab]`: for each `(row, top_k)` wanted, its
/// largest logits where `top_k` is given and `kernel` (the top-k kernel's use)
/// allows, else the whole row; in the order asked.
pub fn fetch(
    logits: &Tensor,
    wanted: &[(u32, Option<usize>)],
    kernel: bool,
) -> Result<Vec<HostRow>> {
    let mut out: Vec<Option<HostRow>> = vec![None; wanted.len()];
    let tops: Vec<usize> = (0..wanted.len())
        .filter(|&j| kernel && wanted[j].1.is_some())
        .collect();
    if let Some(k) = tops.iter().filter_map(|&j| wanted[j].1).max() {
        let rows: Vec<u32> = tops.iter().map(|&j| wanted[j].0).collect();
        let picked = logits.index_select(&Tensor::new(rows.as_slice(), logits.device())?, 0)?;
        for (&j, c) in tops.iter().zip(crate::topk::top_candidates(&picked, k)?) {
            if !c.nonfinite {
                out[j] = Some(HostRow::Top(c.pairs));
            }
        }
    }
    let whole: Vec<usize> = (0..wanted.len()).filter(|&j| out[j].is_none()).collect();
    if !whole.is_empty() {
        let rows: Vec<u32> = whole.iter().map(|&j| wanted[j].0).collect();
        let every =
            rows.len() == logits.dim(0)? && rows.iter().enumerate().all(|(i, &r)| r as usize == i);
        let picked = match every {
            true => logits.clone(),
            false => logits.index_select(&Tensor::new(rows.as_slice(), logits.device())?, 0)?,
        };
        for (&j, row) in whole.iter().zip(picked.to_vec2::<f32>()?) {
            out[j] = Some(HostRow::Whole(row));
        }
    }
    out.into_iter()
        .map(|r| r.ok_or_else(|| candle_core::Error::Msg("a host row was not fetched".into())))
        .collect()
}
