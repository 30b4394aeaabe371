//! Attention masks of one sequence's chunk against its cached and new keys.
//!
//! Rules (GEMMA3.md §3): causal; on sliding layers a key is visible only while
//! `q - k < window`; during prefill, the soft tokens of one image also see each
//! other (and only each other) in both directions, on every layer type.

use candle_core::{DType, Device, Result, Tensor};

/// What a chunk's queries are allowed to see.
#[derive(Debug, Clone, Copy)]
pub struct MaskSpec<'a> {
    /// Absolute position of the first query.
    pub q_start: usize,
    pub q_len: usize,
    /// Absolute position of the first key (cached keys come first, then the new ones).
    pub k_start: usize,
    pub k_len: usize,
    pub window: Option<usize>,
    /// Image group per query (new tokens), `-1` for text.
    pub groups: Option<&'a [i32]>,
}

impl<'a> MaskSpec<'a> {
    /// The mask of `span`'s new tokens over its `k_len` keys from position `k_start`.
    pub fn of_span(
        span: &'a crate::batch::SeqSpan,
        k_start: usize,
        k_len: usize,
        window: Option<usize>,
    ) -> Self {
        Self {
            q_start: span.start_pos,
            q_len: span.len,
            k_start,
            k_len,
            window,
            groups: span.image_groups.as_deref(),
        }
    }

    fn visible(&self, qi: usize, kj: usize) -> bool {
        let (q, k) = (self.q_start + qi, self.k_start + kj);
        let in_window = self.window.is_none_or(|w| q < k + w);
        if k <= q && in_window {
            return true;
        }
        self.same_image(qi, k) && in_window_bidirectional(q, k, self.window)
    }

    /// Both are soft tokens of the same image (keys among the new tokens only:
    /// an image is always prefilled within one chunk).
    fn same_image(&self, qi: usize, k: usize) -> bool {
        let Some(groups) = self.groups else {
            return false;
        };
        if k < self.q_start {
            return false;
        }
        let kj = k - self.q_start;
        matches!((groups.get(qi), groups.get(kj)), (Some(&a), Some(&b)) if a >= 0 && a == b)
    }

    fn all_visible(&self) -> bool {
        (0..self.q_len).all(|qi| (0..self.k_len).all(|kj| self.visible(qi, kj)))
    }

    /// The additive mask `[q_len, k_len]` (0 or -inf), or `None` when every key is visible.
    pub fn build(&self, dtype: DType, device: &Device) -> Result<Option<Tensor>> {
        if self.q_len == 1 && self.groups.is_none() && self.all_visible() {
            return Ok(None);
        }
        let mut data = Vec::with_capacity(self.q_len * self.k_len);
        for qi in 0..self.q_len {
            for kj in 0..self.k_len {
                data.push(if self.visible(qi, kj) {
                    0f32
                } else {
                    f32::NEG_INFINITY
                });
            }
        }
        Ok(Some(
            Tensor::from_vec(data, (self.q_len, self.k_len), device)?.to_dtype(dtype)?,
        ))
    }
}

impl MaskSpec<'_> {
    /// Each query's visible keys as one run `[lo, hi)` of key indices: causal, cut
    /// by the window, and reaching to the end of the query's image (whose soft
    /// tokens see each other; `visible` again). `None` when an image's soft tokens
    /// are not one run of the new tokens, which the runs cannot express.
    pub fn key_runs(&self) -> Option<Vec<(usize, usize)>> {
        let image_end = image_ends(self.groups, self.q_len)?;
        let runs = (0..self.q_len)
            .map(|qi| {
                let q = self.q_start + qi;
                let lo = self.window.map_or(self.k_start, |w| {
                    self.k_start.max((q + 1).saturating_sub(w))
                });
                let last = image_end[qi].map_or(q, |e| q.max(self.q_start + e));
                let hi = (last + 1 - self.k_start).min(self.k_len);
                ((lo - self.k_start).min(hi), hi)
            })
            .collect();
        Some(runs)
    }
}

/// For each of `n` new tokens, the index of the last soft token of its image
/// (`None` for text); `None` when some image's tokens are not one run.
fn image_ends(groups: Option<&[i32]>, n: usize) -> Option<Vec<Option<usize>>> {
    let mut ends = vec![None; n];
    let Some(groups) = groups else {
        return Some(ends);
    };
    let mut seen = std::collections::HashSet::new();
    let mut i = 0;
    while i < n.min(groups.len()) {
        let g = groups[i];
        let mut j = i;
        while j + 1 < n.min(groups.len()) && groups[j + 1] == g {
            j += 1;
        }
        if g >= 0 {
            if !seen.insert(g) {
                return None;
            }
            ends[i..=j].iter_mut().for_each(|e| *e = Some(j));
        }
        i = j + 1;
    }
    Some(ends)
}

/// On sliding layers transformers bounds the image overlay with the same rule as
/// the causal part, `k > q - window`, which never limits later keys of the image.
fn in_window_bidirectional(q: usize, k: usize, window: Option<usize>) -> bool {
    window.is_none_or(|w| k + w > q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        q_start: usize,
        q_len: usize,
        k_start: usize,
        window: Option<usize>,
    ) -> MaskSpec<'static> {
        MaskSpec {
            q_start,
            q_len,
            k_start,
            k_len: q_start + q_len - k_start,
            window,
            groups: None,
        }
    }

    #[test]
    fn causal_without_window() {
        let s = spec(0, 4, 0, None);
        assert!(s.visible(2, 2) && s.visible(2, 0) && !s.visible(1, 2));
    }

    #[test]
    fn window_excludes_distance_equal_to_window() {
        let s = spec(0, 10, 0, Some(4));
        assert!(s.visible(5, 2), "distance 3 < 4 is visible");
        assert!(!s.visible(6, 2), "distance 4 == window is masked");
    }

    #[test]
    fn decode_with_trimmed_cache_needs_no_mask() {
        // 3 cached keys at 7..10, query at 10, window 4: all visible.
        let s = spec(10, 1, 7, Some(4));
        assert!(s.build(DType::F32, &Device::Cpu).unwrap().is_none());
    }

    #[test]
    fn image_tokens_see_each_other_only_within_their_image() {
        let groups = [-1, 0, 0, -1, 1, 1, -1];
        let s = MaskSpec {
            groups: Some(&groups),
            ..spec(0, 7, 0, None)
        };
        assert!(
            s.visible(1, 2),
            "first soft token sees the next of its image"
        );
        assert!(!s.visible(2, 4), "an image never sees a later image");
        assert!(!s.visible(0, 1), "text stays causal");
        assert!(
            s.visible(5, 1),
            "a later image sees an earlier one causally"
        );
    }

    /// Every key a query's run holds is visible and every other is not, over many
    /// chunk positions, cached prefixes, windows and image layouts.
    #[test]
    fn key_runs_are_exactly_the_visible_keys() {
        let layouts: [&[i32]; 5] = [
            &[],
            &[-1, 0, 0, 0, -1, -1],
            &[0, 0, 1, 1, 1, -1, 2],
            &[-1, -1, 5, 5, 5, 5, 5, 5, 5, -1],
            &[3, 3, 3],
        ];
        for groups in layouts {
            for q_len in 1..=12usize {
                for q_start in [0usize, 1, 5, 30] {
                    for window in [None, Some(1), Some(2), Some(4), Some(16)] {
                        let k_start = window.map_or(0, |w| q_start.saturating_sub(w - 1));
                        let g: Vec<i32> = groups.iter().copied().cycle().take(q_len).collect();
                        let groups = (!groups.is_empty()).then_some(g.as_slice());
                        let s = MaskSpec {
                            groups,
                            ..spec(q_start, q_len, k_start, window)
                        };
                        let Some(runs) = s.key_runs() else {
                            // Only a layout cut so that an image repeats later.
                            continue;
                        };
                        for (qi, &(lo, hi)) in runs.iter().enumerate() {
                            for kj in 0..s.k_len {
                                assert_eq!(
                                    s.visible(qi, kj),
                                    (lo..hi).contains(&kj),
                                    "{s:?} query {qi} key {kj}: run {lo}..{hi}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn an_image_in_two_runs_has_no_key_runs() {
        let groups = [0, 0, -1, 0];
        let s = MaskSpec {
            groups: Some(&groups),
            ..spec(0, 4, 0, None)
        };
        assert!(s.key_runs().is_none());
        assert!(image_ends(Some(&[0, 0, 1, -1]), 4).is_some());
    }
}
