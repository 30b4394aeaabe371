//! The definition of the candidates a draw chooses among, written plainly: every
//! finite token's probability, all sorted, then top-k, top-p and min-p. The
//! sampler's `filtered_distribution` must give the same list (tests), and the
//! sampling benchmark times it as the baseline.

use medgemma_core::SamplingParams;

/// Tokens kept by temperature, top-k, top-p and min-p with their unnormalized
/// probabilities, most likely first (ties: lower id first).
pub fn full_sort_distribution(logits: &[f32], p: &SamplingParams) -> Vec<(u32, f64)> {
    let t = p.temperature.max(1e-5) as f64;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(u32, f64)> = (0u32..)
        .zip(logits.iter().copied())
        .filter(|(_, l)| l.is_finite())
        .map(|(i, l)| (i, ((l as f64 - max) / t).exp()))
        .collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if p.top_k > 0 && probs.len() > p.top_k {
        probs.truncate(p.top_k);
    }
    let total: f64 = probs.iter().map(|x| x.1).sum();
    if p.top_p < 1.0 && total > 0.0 {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, &(_, q)) in probs.iter().enumerate() {
            cum += q / total;
            if cum >= p.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep.max(1));
    }
    if p.min_p > 0.0 {
        if let Some(&(_, top)) = probs.first() {
            let floor = top * p.min_p as f64;
            probs.retain(|&(_, q)| q >= floor);
        }
    }
    probs
}
