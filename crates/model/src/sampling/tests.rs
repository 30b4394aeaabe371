use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn params() -> SamplingParams {
    SamplingParams {
        seed: Some(7),
        ..SamplingParams::default()
    }
}

#[test]
fn greedy_takes_the_first_maximum() {
    let mut s = Sampler::new(SamplingParams::greedy());
    assert_eq!(s.sample(&[0.0, 3.0, 3.0, 1.0]).0, 1);
}

#[test]
fn logit_bias_and_suppression_change_the_choice() {
    let mut s = Sampler::new(SamplingParams {
        logit_bias: vec![(0, 10.0)],
        ..SamplingParams::greedy()
    });
    assert_eq!(s.sample(&[0.0, 3.0]).0, 0);
    let mut s = Sampler::new(SamplingParams {
        suppress_tokens: vec![1],
        ..SamplingParams::greedy()
    });
    assert_eq!(s.sample(&[0.0, 3.0, 2.0]).0, 2);
}

#[test]
fn repetition_penalty_follows_transformers() {
    let mut s = Sampler::new(SamplingParams {
        repetition_penalty: 2.0,
        ..SamplingParams::greedy()
    });
    s.observe_prompt(&[0, 1]);
    // token 0: 3.0 / 2 = 1.5; token 1: -1.0 * 2 = -2.0; token 2 untouched at 2.0.
    assert_eq!(s.sample(&[3.0, -1.0, 2.0]).0, 2);
}

#[test]
fn frequency_and_presence_penalties_count_generated_tokens_only() {
    let mut s = Sampler::new(SamplingParams {
        frequency_penalty: 1.0,
        presence_penalty: 0.5,
        ..SamplingParams::greedy()
    });
    s.observe_prompt(&[0, 0, 0]);
    assert_eq!(
        s.sample(&[2.0, 1.0]).0,
        0,
        "prompt tokens are not penalized"
    );
    // 0 was generated once: 2.0 - 1.0 - 0.5 = 0.5 < 1.0.
    assert_eq!(s.sample(&[2.0, 1.0]).0, 1);
}

#[test]
fn a_seed_makes_sampling_repeatable() {
    let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
    let run = |seed| {
        let mut s = Sampler::new(SamplingParams {
            seed: Some(seed),
            ..params()
        });
        (0..20).map(|_| s.sample(&logits).0).collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn top_k_top_p_and_min_p_restrict_the_candidates() {
    let logits = [5.0f32, 4.0, 1.0, 0.0, -1.0];
    let keep = |p: SamplingParams| -> Vec<u32> {
        filtered_distribution(&logits, &p)
            .iter()
            .map(|x| x.0)
            .collect()
    };
    assert_eq!(
        keep(SamplingParams {
            top_k: 2,
            ..params()
        }),
        vec![0, 1]
    );
    // probabilities ≈ 0.72, 0.27, 0.013, …: 0.9 needs the first two.
    assert_eq!(
        keep(SamplingParams {
            top_p: 0.9,
            ..params()
        }),
        vec![0, 1]
    );
    assert_eq!(
        keep(SamplingParams {
            top_p: 0.5,
            ..params()
        }),
        vec![0]
    );
    assert_eq!(
        keep(SamplingParams {
            min_p: 0.1,
            ..params()
        }),
        vec![0, 1]
    );
    assert_eq!(keep(params()).len(), 5);
    let mut s = Sampler::new(SamplingParams {
        top_k: 1,
        temperature: 0.7,
        ..params()
    });
    assert_eq!(s.sample(&logits).0, 0);
}

#[test]
fn low_temperature_concentrates_on_the_best_token() {
    let logits = [1.0f32, 1.5, 0.5];
    let mut s = Sampler::new(SamplingParams {
        temperature: 0.01,
        ..params()
    });
    assert!((0..50).all(|_| s.sample(&logits).0 == 1));
}

#[test]
fn logprobs_are_a_log_softmax_of_the_raw_logits() {
    let mut s = Sampler::new(SamplingParams {
        logprobs: Some(2),
        logit_bias: vec![(2, 100.0)],
        ..SamplingParams::greedy()
    });
    let (tok, lp) = s.sample(&[0.0, 1.0, 0.5]);
    let lp = lp.unwrap();
    assert_eq!(tok, 2, "bias chose token 2");
    let lse = (1.0f64 + 1.0f64.exp() + 0.5f64.exp()).ln();
    assert!(
        (lp.logprob as f64 - (0.5 - lse)).abs() < 1e-6,
        "raw distribution, not the biased one"
    );
    assert_eq!(lp.top.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn min_tokens_hold_back_the_end_tokens_until_reached() {
    let mut s = Sampler::new(SamplingParams {
        min_tokens: 2,
        end_tokens: vec![0],
        ..SamplingParams::greedy()
    });
    assert!(!s.is_plain_greedy(), "the argmax needs the end held back");
    let logits = [5.0, 1.0, 2.0];
    assert_eq!(s.sample(&logits).0, 2);
    assert_eq!(s.sample(&logits).0, 2);
    assert!(s.is_plain_greedy());
    assert_eq!(s.sample(&logits).0, 0, "two tokens made: the end may come");
}

/// Rows of several shapes: peaked and flat, with ties, -inf and NaN entries.
fn rows(rng: &mut StdRng) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for (len, spread) in [
        (5, 1.0f32),
        (300, 0.2),
        (3000, 4.0),
        (20_000, 1.5),
        (20_000, 12.0),
    ] {
        let mut row: Vec<f32> = (0..len).map(|_| rng.random::<f32>() * spread).collect();
        // Ties, and logits the softmax ignores or never picks.
        for _ in 0..len / 10 {
            let (a, b) = (rng.random_range(0..len), rng.random_range(0..len));
            row[a] = row[b];
        }
        if len > 10 {
            row[3] = f32::NEG_INFINITY;
            row[len / 2] = f32::NAN;
        }
        out.push(row);
    }
    out
}

/// Ranked candidates (top-k as a selection, the prefix sorted as it is read) are
/// the definition's: the same tokens in the same order with the same
/// probabilities, and every point of a draw lands on the same token.
#[test]
fn ranked_candidates_and_draws_equal_the_full_sort() {
    let mut rng = StdRng::seed_from_u64(11);
    let settings = [
        (1.0, 0, 1.0, 0.0),
        (1.0, 64, 0.95, 0.0),
        (0.7, 0, 0.95, 0.0),
        (1.3, 0, 0.999, 0.0),
        (1.0, 1000, 1.0, 0.05),
        (0.5, 40, 0.8, 0.1),
        (2.0, 0, 1.0, 0.001),
    ];
    for row in rows(&mut rng) {
        for &(temperature, top_k, top_p, min_p) in &settings {
            let p = SamplingParams {
                temperature,
                top_k,
                top_p,
                min_p,
                ..params()
            };
            let want = reference::full_sort_distribution(&row, &p);
            let label = format!(
                "{} logits, t {temperature} k {top_k} p {top_p} min {min_p}",
                row.len()
            );
            assert_eq!(filtered_distribution(&row, &p), want, "{label}");
            let total: f64 = want.iter().map(|x| x.1).sum();
            for j in 0..200 {
                let u = total * j as f64 / 200.0 + rng.random::<f64>() * total / 400.0;
                let mut walk = u;
                let expected = want
                    .iter()
                    .find(|&&(_, q)| {
                        let hit = walk < q;
                        walk -= q;
                        hit
                    })
                    .or(want.last())
                    .map(|x| x.0);
                assert_eq!(candidates(&row, &p).pick(u), expected, "{label}, u {u}");
            }
        }
    }
}

/// A choice from the row's largest logits and the changed tokens' raw logits (what
/// the device sends, in any order and more than needed) is the choice from the
/// whole row, seed for seed: top-k draws, greedy, bias, penalties, suppression.
#[test]
fn choosing_from_the_largest_logits_equals_choosing_from_the_row() {
    let mut rng = StdRng::seed_from_u64(3);
    let settings = [
        SamplingParams {
            temperature: 1.0,
            top_k: 64,
            top_p: 0.95,
            ..SamplingParams::default()
        },
        SamplingParams {
            temperature: 0.6,
            top_k: 5,
            ..SamplingParams::default()
        },
        SamplingParams {
            temperature: 1.4,
            top_k: 40,
            top_p: 0.7,
            min_p: 0.05,
            ..SamplingParams::default()
        },
        SamplingParams {
            temperature: 1.0,
            top_k: 2,
            ..SamplingParams::default()
        },
        SamplingParams {
            top_k: 20,
            logit_bias: vec![(3, 4.0), (8, -2.0)],
            frequency_penalty: 0.4,
            presence_penalty: 0.3,
            suppress_tokens: vec![0, 11],
            ..SamplingParams::default()
        },
        SamplingParams {
            top_k: 10,
            repetition_penalty: 1.3,
            ..SamplingParams::default()
        },
        SamplingParams {
            temperature: 0.0,
            repetition_penalty: 1.5,
            logit_bias: vec![(1, 3.0)],
            ..SamplingParams::default()
        },
        SamplingParams {
            temperature: 0.0,
            frequency_penalty: 1.0,
            suppress_tokens: vec![2],
            min_tokens: 5,
            end_tokens: vec![4],
            ..SamplingParams::default()
        },
    ];
    for (len, spread) in [(50, 2.0f32), (5000, 6.0), (20_000, 1.0)] {
        let mut row: Vec<f32> = (0..len)
            .map(|_| (rng.random::<f32>() - 0.5) * spread)
            .collect();
        row[7] = 0.0;
        row[9] = -0.0;
        row[11] = row[13];
        for (n, setting) in settings.iter().enumerate() {
            let p = SamplingParams {
                seed: Some(len as u64),
                ..setting.clone()
            };
            let mut whole = Sampler::new(p.clone());
            let mut sparse = Sampler::new(p);
            let prompt: Vec<u32> = (0..30).map(|i| (i * 7 % len) as u32).collect();
            whole.observe_prompt(&prompt);
            sparse.observe_prompt(&prompt);
            for draw in 0..40 {
                let needs = sparse.candidates_needed(1024).expect("fits");
                let mut pairs = ranked::top_logits(
                    (0u32..).zip(row.iter().copied()),
                    needs.k + needs.changed.len() + 3,
                );
                for &t in &needs.changed {
                    if !pairs.iter().any(|p| p.0 == t) {
                        pairs.push((t, row[t as usize]));
                    }
                }
                pairs.reverse();
                let want = whole.sample(&row).0;
                let got = sparse.sample_candidates(&pairs);
                assert_eq!(got, want, "{len} logits, setting {n}, draw {draw}");
            }
        }
    }
}

/// What needs the whole row: a grammar or log probabilities, no top-k, or more
/// logits than the limit.
#[test]
fn rows_needing_their_whole_logits_say_so() {
    let needs = |p: SamplingParams| Sampler::new(p).candidates_needed(256);
    let sampled = SamplingParams {
        top_k: 64,
        ..params()
    };
    assert_eq!(
        needs(sampled.clone()),
        Some(RowNeeds {
            k: 64,
            changed: vec![]
        })
    );
    let greedy = SamplingParams {
        temperature: 0.0,
        logit_bias: vec![(9, 1.0), (2, 1.0)],
        ..params()
    };
    assert_eq!(
        needs(greedy),
        Some(RowNeeds {
            k: 1,
            changed: vec![2, 9]
        })
    );
    assert_eq!(
        needs(SamplingParams {
            top_k: 0,
            ..sampled.clone()
        }),
        None
    );
    assert_eq!(
        needs(SamplingParams {
            top_k: 257,
            ..sampled.clone()
        }),
        None
    );
    assert_eq!(
        needs(SamplingParams {
            top_k: 250,
            suppress_tokens: (0..7).collect(),
            ..sampled.clone()
        }),
        None
    );
    assert_eq!(
        needs(SamplingParams {
            logprobs: Some(2),
            ..sampled
        }),
        None
    );
}

#[test]
fn a_top_k_past_the_vocabulary_keeps_every_token() {
    // A request may send any top_k up to 2^63 - 1: it must neither size a buffer
    // by it nor differ from top-k off.
    let row: Vec<f32> = (0..300).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
    for k in [300, 301, 1 << 40, i64::MAX as usize] {
        let mut huge = Sampler::new(SamplingParams {
            top_k: k,
            temperature: 1.0,
            ..params()
        });
        let mut off = Sampler::new(SamplingParams {
            top_k: 0,
            temperature: 1.0,
            ..params()
        });
        for _ in 0..20 {
            assert_eq!(huge.sample(&row).0, off.sample(&row).0, "top_k {k}");
        }
    }
    assert_eq!(
        ranked::top_logits((0u32..3).map(|i| (i, 1.0)), usize::MAX).len(),
        3
    );
}
