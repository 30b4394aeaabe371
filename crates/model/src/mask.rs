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

impl MaskSpec<'_> {
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
}
