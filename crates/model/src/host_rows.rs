//! The logits of a step's rows that the host draws. A row whose choice needs only
//! its largest logits and the raw logits of the tokens its sampler changes
//! (`Sampler::candidates_needed`) sends just those, on a GPU whose top-k kernel
//! passed its self-test (`crate::topk`, 8 bytes a logit); every other row, or one
//! holding a non-finite logit, crosses whole (1 MiB at Gemma's vocabulary).

use candle_core::{Result, Tensor};

use crate::sampling::RowNeeds;

/// What the host draws one row from.
#[derive(Debug, Clone, PartialEq)]
pub enum HostRow {
    /// The whole row.
    Whole(Vec<f32>),
    /// What `RowNeeds` asked for, each token once (the row is all finite).
    Top(Vec<(u32, f32)>),
}

/// The host rows of `logits` `[rows, vocab]`: for each `(row, needs)` wanted, what
/// `needs` asks where it is given and `kernel` (the top-k kernel's use) allows,
/// else the whole row; in the order asked.
pub fn fetch(
    logits: &Tensor,
    wanted: &[(u32, Option<RowNeeds>)],
    kernel: bool,
) -> Result<Vec<HostRow>> {
    let mut out: Vec<Option<HostRow>> = vec![None; wanted.len()];
    let tops: Vec<usize> = (0..wanted.len())
        .filter(|&j| kernel && wanted[j].1.is_some())
        .collect();
    if !tops.is_empty() {
        for (&j, row) in tops.iter().zip(candidates(logits, wanted, &tops)?) {
            out[j] = row.map(HostRow::Top);
        }
    }
    let whole: Vec<usize> = (0..wanted.len()).filter(|&j| out[j].is_none()).collect();
    if !whole.is_empty() {
        let rows: Vec<u32> = whole.iter().map(|&j| wanted[j].0).collect();
        let every =
            rows.len() == logits.dim(0)? && rows.iter().enumerate().all(|(i, &r)| r as usize == i);
        let picked = match every {
            true => logits.clone(),
            false => select_rows(logits, &rows)?,
        };
        for (&j, row) in whole.iter().zip(picked.to_vec2::<f32>()?) {
            out[j] = Some(HostRow::Whole(row));
        }
    }
    out.into_iter()
        .map(|r| r.ok_or_else(|| candle_core::Error::Msg("a host row was not fetched".into())))
        .collect()
}

/// Some of a row's logits `(token, logit)`; `None` for a row holding a non-finite one.
type Candidates = Option<Vec<(u32, f32)>>;

fn select_rows(logits: &Tensor, rows: &[u32]) -> Result<Tensor> {
    logits.index_select(&Tensor::new(rows, logits.device())?, 0)
}

/// For rows `wanted[j]`, `j` in `tops`: their largest logits with the changed
/// tokens' raw ones (`None` for a row holding a non-finite logit).
fn candidates(
    logits: &Tensor,
    wanted: &[(u32, Option<RowNeeds>)],
    tops: &[usize],
) -> Result<Vec<Candidates>> {
    let vocab = logits.dim(1)?;
    let needs: Vec<&RowNeeds> = tops.iter().filter_map(|&j| wanted[j].1.as_ref()).collect();
    let k = needs
        .iter()
        .map(|n| n.k + n.changed.len())
        .max()
        .unwrap_or(1);
    let rows: Vec<u32> = tops.iter().map(|&j| wanted[j].0).collect();
    let picked = select_rows(logits, &rows)?;
    // The changed tokens' raw logits, gathered in one pass: row r's token t is
    // element r * vocab + t of the picked rows.
    let changed: Vec<(usize, u32)> = (needs.iter().enumerate())
        .flat_map(|(r, n)| n.changed.iter().map(move |&t| (r, t)))
        .filter(|&(_, t)| (t as usize) < vocab)
        .collect();
    let flat: Vec<u32> = changed
        .iter()
        .map(|&(r, t)| (r * vocab) as u32 + t)
        .collect();
    let raw: Vec<f32> = match flat.is_empty() {
        true => Vec::new(),
        false => (picked.flatten_all()?)
            .index_select(&Tensor::new(flat.as_slice(), logits.device())?, 0)?
            .to_vec1()?,
    };
    let mut out: Vec<Candidates> = Vec::with_capacity(rows.len());
    for c in crate::topk::top_candidates(&picked, k)? {
        out.push((!c.nonfinite).then_some(c.pairs));
    }
    let mut held: Vec<std::collections::HashSet<u32>> = out
        .iter()
        .map(|p| p.iter().flatten().map(|c| c.0).collect())
        .collect();
    for (&(r, t), &l) in changed.iter().zip(&raw) {
        if let (Some(Some(pairs)), Some(ids)) = (out.get_mut(r), held.get_mut(r)) {
            if ids.insert(t) {
                pairs.push((t, l));
            }
        }
    }
    Ok(out)
}
