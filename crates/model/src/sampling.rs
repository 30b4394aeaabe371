//! Choosing the next token from one sequence's logits, on the host.
//!
//! Order: logit bias, repetition / frequency / presence penalties, suppressed
//! tokens, the tokens a constraint (JSON mode) rules out, then greedy argmax, or temperature → top-k → top-p → min-p and a draw
//! from the request's own seeded generator. Log probabilities are those of the
//! model's raw distribution (before any of these), as the reference reports them.

use std::collections::HashMap;

use medgemma_core::{ConstraintMatcher, SamplingParams, TokenLogprobs};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod ranked;
pub mod reference;

use ranked::Ranked;

/// Sampling state of one sequence: its parameters, generator and token counts.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Tokens of the prompt and the output (repetition penalty).
    seen: HashMap<u32, u32>,
    /// Tokens of the output only (frequency and presence penalties).
    generated: HashMap<u32, u32>,
    /// Where the output stands in the request's constraint, if it has one.
    matcher: Option<Box<dyn ConstraintMatcher>>,
    /// Tokens generated so far.
    produced: usize,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let matcher = params.constraint.as_ref().map(|c| c.0.matcher());
        Self {
            params,
            rng,
            seen: HashMap::new(),
            generated: HashMap::new(),
            matcher,
            produced: 0,
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Records prompt tokens (they count for the repetition penalty only).
    pub fn observe_prompt(&mut self, tokens: &[u32]) {
        for &t in tokens {
            *self.seen.entry(t).or_default() += 1;
        }
    }

    fn observe_output(&mut self, token: u32) {
        *self.seen.entry(token).or_default() += 1;
        *self.generated.entry(token).or_default() += 1;
        self.produced += 1;
        if let Some(m) = self.matcher.as_mut() {
            m.accept(token);
        }
    }

    /// Greedy with nothing that needs the full logits on the host: no bias,
    /// penalties, suppressed tokens or log probabilities. The argmax can then be
    /// taken where the logits are (on the GPU).
    pub fn is_plain_greedy(&self) -> bool {
        self.params.is_greedy() && self.draws_from_raw_logits()
    }

    /// What the next choice needs of the row when not all of it (`None`: the
    /// whole row): its `k` largest logits and the raw logits of the tokens the
    /// sampler changes (bias, penalties, suppressed or held-back tokens), at most
    /// `limit` in all. The top-(k + changed) raw logits hold every token the
    /// changed row's top k can hold, so the device can send those instead of the
    /// whole row (`crate::topk`). A grammar or log probabilities need the row.
    pub fn candidates_needed(&self, limit: usize) -> Option<RowNeeds> {
        let p = &self.params;
        if self.matcher.is_some() || p.logprobs.is_some() {
            return None;
        }
        let k = match p.is_greedy() {
            true => 1,
            false => p.top_k,
        };
        let changed = self.changed_tokens();
        (k > 0 && k + changed.len() <= limit).then_some(RowNeeds { k, changed })
    }

    /// Picks the next token as `sample` would from the whole row, when that row is
    /// all finite, from `candidates`: at least its largest logits and the changed
    /// tokens' raw logits that `candidates_needed` asked for (each token once);
    /// records it as generated.
    pub fn sample_candidates(&mut self, candidates: &[(u32, f32)]) -> u32 {
        let mut processed = candidates.to_vec();
        self.apply_bias_and_penalties(&mut Sparse::new(&mut processed));
        let best = ranked::top_logits(processed.iter().copied(), 1)
            .first()
            .map_or(0, |t| t.0);
        if self.params.is_greedy() {
            self.observe_output(best);
            return best;
        }
        let p = &self.params;
        let mut c = Ranked::of_candidates(&processed, p.temperature, p.top_k);
        c.top_p(p.top_p);
        c.min_p(p.min_p);
        let total = c.total();
        let best = || best;
        // As `draw`: the generator is read only when there is something to draw.
        let token = match !c.is_empty() && total > 0.0 && total.is_finite() {
            true => {
                let u = self.rng.random::<f64>() * total;
                c.pick(u).unwrap_or_else(best)
            }
            false => best(),
        };
        self.observe_output(token);
        token
    }

    /// Nothing changes the raw logits before the choice, and none are reported.
    fn draws_from_raw_logits(&self) -> bool {
        let p = &self.params;
        p.logprobs.is_none()
            && p.logit_bias.is_empty()
            && p.repetition_penalty == 1.0
            && p.frequency_penalty == 0.0
            && p.presence_penalty == 0.0
            && p.suppress_tokens.is_empty()
            && self.matcher.is_none()
            && !self.holds_back_the_end()
    }

    /// Whether `min_tokens` still keeps the end tokens from being chosen.
    fn holds_back_the_end(&self) -> bool {
        self.produced < self.params.min_tokens && !self.params.end_tokens.is_empty()
    }

    /// Records a token chosen by an argmax taken elsewhere (see `is_plain_greedy`).
    pub fn accept_argmax(&mut self, token: u32) {
        self.observe_output(token);
    }

    /// Picks the next token and records it as generated.
    pub fn sample(&mut self, logits: &[f32]) -> (u32, Option<TokenLogprobs>) {
        let mut processed = logits.to_vec();
        self.apply_bias_and_penalties(processed.as_mut_slice());
        self.apply_constraint(&mut processed);
        let token = if self.params.is_greedy() {
            argmax(&processed)
        } else {
            self.draw(&processed)
        };
        let logprobs = self.params.logprobs.map(|n| logprobs_of(logits, token, n));
        self.observe_output(token);
        (token, logprobs)
    }

    /// Rules out what the constraint forbids. The constraint wins over suppressed
    /// tokens: when it allows only suppressed ones (an end of sequence before
    /// `min_tokens`), they stay possible, equally likely.
    fn apply_constraint(&self, logits: &mut [f32]) {
        let Some(m) = &self.matcher else { return };
        let mut allowed = vec![true; logits.len()];
        m.restrict(&mut allowed);
        let open = allowed
            .iter()
            .zip(logits.iter())
            .any(|(&a, &l)| a && l > f32::NEG_INFINITY);
        for (l, a) in logits.iter_mut().zip(allowed) {
            *l = match (a, open) {
                (false, _) => f32::NEG_INFINITY,
                (true, true) => *l,
                (true, false) => 0.0,
            };
        }
    }

    /// The tokens whose logits `apply_bias_and_penalties` may change, sorted.
    fn changed_tokens(&self) -> Vec<u32> {
        let p = &self.params;
        let mut ids: Vec<u32> = p.logit_bias.iter().map(|&(id, _)| id).collect();
        if p.repetition_penalty != 1.0 {
            ids.extend(self.seen.keys());
        }
        if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            ids.extend(self.generated.keys());
        }
        ids.extend(&p.suppress_tokens);
        if self.holds_back_the_end() {
            ids.extend(&p.end_tokens);
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn apply_bias_and_penalties<L: LogitsAt + ?Sized>(&self, logits: &mut L) {
        let p = &self.params;
        for &(id, bias) in &p.logit_bias {
            if let Some(l) = logits.at(id) {
                *l += bias;
            }
        }
        if p.repetition_penalty != 1.0 {
            for &id in self.seen.keys() {
                if let Some(l) = logits.at(id) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            for (&id, &count) in &self.generated {
                if let Some(l) = logits.at(id) {
                    *l -= p.frequency_penalty * count as f32 + p.presence_penalty;
                }
            }
        }
        let held = match self.holds_back_the_end() {
            true => &p.end_tokens[..],
            false => &[],
        };
        for &id in p.suppress_tokens.iter().chain(held) {
            if let Some(l) = logits.at(id) {
                *l = f32::NEG_INFINITY;
            }
        }
    }

    fn draw(&mut self, logits: &[f32]) -> u32 {
        let mut candidates = candidates(logits, &self.params);
        let total = candidates.total();
        if candidates.is_empty() || total <= 0.0 || !total.is_finite() {
            return argmax(logits);
        }
        let u = self.rng.random::<f64>() * total;
        candidates.pick(u).unwrap_or_else(|| argmax(logits))
    }
}

/// Index of the first maximum (ties go to the lowest id, as torch.argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// Tokens kept by temperature, top-k, top-p and min-p with their unnormalized
/// probabilities, ranked as far as they are read.
fn candidates(logits: &[f32], p: &SamplingParams) -> Ranked {
    let mut c = Ranked::new(logits, p.temperature, p.top_k);
    c.top_p(p.top_p);
    c.min_p(p.min_p);
    c
}

/// Tokens kept by temperature, top-k, top-p and min-p with their unnormalized
/// probabilities, most likely first.
pub fn filtered_distribution(logits: &[f32], p: &SamplingParams) -> Vec<(u32, f64)> {
    candidates(logits, p).into_sorted()
}

/// Log-softmax of the raw logits: the chosen token's and the top `n`.
pub fn logprobs_of(logits: &[f32], chosen: u32, n: usize) -> TokenLogprobs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&l| (l as f64 - max).exp())
            .sum::<f64>()
            .ln();
    let lp = |i: usize| (logits[i] as f64 - lse) as f32;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    let n = n.min(logits.len());
    if n > 0 {
        order.select_nth_unstable_by(n - 1, |&a, &b| {
            logits[b].total_cmp(&logits[a]).then(a.cmp(&b))
        });
        order.truncate(n);
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    } else {
        order.clear();
    }
    TokenLogprobs {
        logprob: logits
            .get(chosen as usize)
            .map(|_| lp(chosen as usize))
            .unwrap_or(f32::NEG_INFINITY),
        top: order.into_iter().map(|i| (i as u32, lp(i))).collect(),
    }
}

#[cfg(test)]
mod tests;

/// What a choice needs of a row besides its largest logits (`Sampler::candidates_needed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowNeeds {
    /// How many of the row's largest logits, besides `changed`.
    pub k: usize,
    /// Tokens whose raw logits the sampler changes, sorted.
    pub changed: Vec<u32>,
}

/// A row's logits by token, for the sampler's changes.
trait LogitsAt {
    fn at(&mut self, id: u32) -> Option<&mut f32>;
}

impl LogitsAt for [f32] {
    fn at(&mut self, id: u32) -> Option<&mut f32> {
        self.get_mut(id as usize)
    }
}

/// Some of a row's logits, `(token, logit)`.
struct Sparse<'a> {
    pairs: &'a mut [(u32, f32)],
    index: HashMap<u32, usize>,
}

impl<'a> Sparse<'a> {
    fn new(pairs: &'a mut [(u32, f32)]) -> Self {
        let index = pairs.iter().enumerate().map(|(i, p)| (p.0, i)).collect();
        Self { pairs, index }
    }
}

impl LogitsAt for Sparse<'_> {
    fn at(&mut self, id: u32) -> Option<&mut f32> {
        let &i = self.index.get(&id)?;
        self.pairs.get_mut(i).map(|p| &mut p.1)
    }
}

/// The `k` largest finite logits of `row` `(token, logit)`, in no particular order
/// (ties: lower tokens first).
pub fn ranked_top_logits(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    ranked::top_logits((0u32..).zip(row.iter().copied()), k)
}
