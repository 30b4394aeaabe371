//! The candidates of a draw, ranked only as far as the filters and the draw look.
//!
//! A draw over Gemma's 262k-token vocabulary used to sort every token by
//! probability (tens of milliseconds a row); top-k, top-p, min-p and the draw
//! itself only ever look at the most likely few. Here top-k is a selection, and
//! the most likely prefix is sorted in growing chunks as it is read, so a row costs
//! a pass over the logits. The result is the definition's (`reference`):
//! candidates in order of probability, ties to the lower id.

use std::cmp::Ordering;

/// `(token, unnormalized probability)` pairs, the first `sorted` of them the most
/// likely, in order.
pub(super) struct Ranked {
    items: Vec<(u32, f64)>,
    sorted: usize,
}

/// More likely first; equally likely: lower id first.
fn more_likely(a: &(u32, f64), b: &(u32, f64)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The larger logit first (the more likely token: exp is increasing); equal
/// logits (-0 and +0 too, equally likely): lower id first. Finite logits only.
fn larger_logit(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    let by_value = b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal);
    by_value.then(a.0.cmp(&b.0))
}

/// The `k` largest finite logits, unordered, in one pass: a buffer of up to `2k`
/// takes only what beats the running k-th largest, and is cut back to the `k`
/// largest when full. On a 262k-token row that is about a comparison a token.
pub(crate) fn top_logits(logits: impl Iterator<Item = (u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    // A request may ask for any k (top_k 2^62, say): past the row's length it keeps
    // every finite logit, and no buffer is sized by more than the row.
    let k = k.min(logits.size_hint().1.unwrap_or(usize::MAX));
    if k == 0 {
        return Vec::new();
    }
    let mut keep: Vec<(u32, f32)> = Vec::with_capacity(k.saturating_mul(2).min(1 << 20));
    // The k-th largest kept so far: nothing that fails to beat it is in the top k.
    let mut floor: Option<(u32, f32)> = None;
    for e in logits {
        let l = e.1;
        let beats = floor.is_none_or(|f| larger_logit(&e, &f) == Ordering::Less);
        if !l.is_finite() || !beats {
            continue;
        }
        keep.push(e);
        if keep.len() == k.saturating_mul(2) {
            keep.select_nth_unstable_by(k - 1, larger_logit);
            keep.truncate(k);
            floor = Some(keep[k - 1]);
        }
    }
    if keep.len() > k {
        keep.select_nth_unstable_by(k - 1, larger_logit);
        keep.truncate(k);
    }
    keep
}

/// Fewest tokens sorted at once.
const MIN_CHUNK: usize = 64;

/// How much the sorted prefix at least grows each time it must.
const GROWTH: usize = 8;

impl Ranked {
    /// Temperature and top-k (0: every token): the finite logits' probabilities
    /// relative to the largest logit.
    pub fn new(logits: &[f32], temperature: f32, top_k: usize) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let finite = (0u32..).zip(logits.iter().copied());
        let finite: Vec<(u32, f32)> = match top_k {
            0 => finite.filter(|(_, l)| l.is_finite()).collect(),
            k => top_logits(finite, k),
        };
        Self::of_finite(finite, max, temperature)
    }

    /// As `new` on a row whose logits are all finite, from candidates that hold
    /// at least its `top_k` largest (`top_k` > 0): the rest cannot be kept.
    pub fn of_candidates(pairs: &[(u32, f32)], temperature: f32, top_k: usize) -> Self {
        let max = pairs.iter().map(|p| p.1).fold(f32::NEG_INFINITY, f32::max);
        let kept = top_logits(pairs.iter().copied(), top_k.max(1));
        Self::of_finite(kept, max, temperature)
    }

    /// Probabilities of finite logits relative to the row's largest, `max`.
    fn of_finite(finite: Vec<(u32, f32)>, max: f32, temperature: f32) -> Self {
        let t = temperature.max(1e-5) as f64;
        let max = max as f64;
        let items = finite
            .into_iter()
            .map(|(id, l)| (id, ((l as f64 - max) / t).exp()))
            .collect();
        Self { items, sorted: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn total(&self) -> f64 {
        self.items.iter().map(|x| x.1).sum()
    }

    /// Makes the first `n` candidates the `n` most likely, in order. Each call
    /// sorts at least `GROWTH - 1` times as many again as are sorted (a selection
    /// over the rest, then a sort of the chunk), and past a quarter of the
    /// candidates sorts them all, so that a prefix read one by one costs about one
    /// full sort at worst.
    fn sort_through(&mut self, n: usize) {
        let len = self.items.len();
        if n <= self.sorted || self.sorted == len {
            return;
        }
        let mut n = n.max(GROWTH * self.sorted).max(MIN_CHUNK).min(len);
        if n > len / 4 {
            n = len;
        }
        let rest = &mut self.items[self.sorted..];
        let want = n - self.sorted;
        if want < rest.len() {
            rest.select_nth_unstable_by(want - 1, more_likely);
        }
        rest[..want].sort_by(more_likely);
        self.sorted = n;
    }

    /// The `i`-th most likely candidate, if there are that many.
    fn ranked(&mut self, i: usize) -> Option<(u32, f64)> {
        self.sort_through(i + 1);
        self.items.get(i).copied()
    }

    /// Top-p: keeps the fewest most likely candidates whose share of the total
    /// reaches `share` (at least one).
    pub fn top_p(&mut self, share: f32) {
        let total = self.total();
        if share >= 1.0 || total <= 0.0 {
            return;
        }
        let mut cum = 0.0;
        let mut i = 0;
        while let Some((_, q)) = self.ranked(i) {
            cum += q / total;
            i += 1;
            if cum >= share as f64 {
                self.items.truncate(i);
                self.sorted = self.sorted.min(i);
                return;
            }
        }
    }

    /// Min-p: drops candidates less likely than `min_p` times the most likely.
    pub fn min_p(&mut self, min_p: f32) {
        if min_p <= 0.0 {
            return;
        }
        let Some((_, top)) = self.ranked(0) else {
            return;
        };
        let floor = top * min_p as f64;
        self.items.retain(|&(_, q)| q >= floor);
        // What goes is the least likely: if any of the sorted prefix went, so did
        // every candidate after it, and what is left is sorted.
        self.sorted = self.sorted.min(self.items.len());
    }

    /// The candidate at `u` (in `[0, total)`) of the probabilities laid end to
    /// end, most likely first; the least likely when rounding leaves `u` past the end.
    pub fn pick(&mut self, mut u: f64) -> Option<u32> {
        let mut i = 0;
        while let Some((id, q)) = self.ranked(i) {
            if u < q {
                return Some(id);
            }
            u -= q;
            i += 1;
        }
        self.items.last().map(|x| x.0)
    }

    /// Every candidate, most likely first.
    pub fn into_sorted(mut self) -> Vec<(u32, f64)> {
        self.sort_through(self.items.len());
        self.items
    }
}
