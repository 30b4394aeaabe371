//! One host draw over MedGemma's 262,208 logits, as the server samples every row
//! that is not plain greedy: the sampler (top-k as a selection, the likely prefix
//! sorted as it is read) against the definition it must equal, which sorts every
//! token (`sampling::reference`), in the same run. Rows: a peaked distribution
//! (a few tokens far ahead, as in most decoding steps) and a flat one.
//!
//! cargo bench -p medgemma-model --bench sampling

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use medgemma_core::SamplingParams;
use medgemma_model::sampling::{reference::full_sort_distribution, Sampler};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const VOCAB: usize = 262_208;

/// Logits around 0 with spread `spread`, and `leaders` tokens `lead` above them.
fn row(rng: &mut StdRng, spread: f32, leaders: usize, lead: f32) -> Vec<f32> {
    let mut l: Vec<f32> = (0..VOCAB)
        .map(|_| (rng.random::<f32>() - 0.5) * 2.0 * spread)
        .collect();
    for _ in 0..leaders {
        let i = rng.random_range(0..VOCAB);
        l[i] += lead + rng.random::<f32>();
    }
    l
}

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(5);
    let rows = [
        ("peaked", row(&mut rng, 3.0, 8, 14.0)),
        ("flat", row(&mut rng, 3.0, 0, 0.0)),
    ];
    let settings = [
        // MedGemma's generation_config.json defaults, with OpenAI's temperature.
        ("t1_k64_p0.95", 1.0, 64, 0.95),
        ("t0.7_p0.9", 0.7, 0, 0.9),
        ("t1", 1.0, 0, 1.0),
    ];
    let mut group = c.benchmark_group("draw_262k");
    group.sample_size(20);
    for (shape, logits) in &rows {
        for &(name, temperature, top_k, top_p) in &settings {
            let p = SamplingParams {
                temperature,
                top_k,
                top_p,
                seed: Some(1),
                ..SamplingParams::default()
            };
            let id = format!("{shape}/{name}");
            let mut sampler = Sampler::new(p.clone());
            group.bench_with_input(BenchmarkId::new("sampler", &id), &(), |b, _| {
                b.iter(|| sampler.sample(logits).0)
            });
            group.bench_with_input(BenchmarkId::new("full_sort", &id), &(), |b, _| {
                b.iter(|| full_sort_distribution(logits, &p).len())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
