//! JSON mode: building the vocabulary trie of a Gemma-sized vocabulary (262,144
//! synthetic tokens) and the first token mask in two states (a cold walk: masks
//! are kept per state afterwards).
//!
//! cargo bench -p medgemma-preprocess --bench json_mask

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use medgemma_preprocess::json_mode::JsonVocab;

/// Every byte alone, then word-like pieces of 2 to 12 bytes, a third with a
/// leading space, a few with JSON punctuation.
fn vocab() -> Vec<Vec<u8>> {
    let mut bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\"{}[]:,._-";
    while bytes.len() < 262_144 {
        let len = 2 + (next() % 11) as usize;
        let mut t: Vec<u8> = (0..len)
            .map(|_| {
                let r = next() as usize;
                // Mostly letters; punctuation one time in 20.
                if r.is_multiple_of(20) {
                    alphabet[62 + (r / 20) % (alphabet.len() - 62)]
                } else {
                    alphabet[(r / 20) % 62]
                }
            })
            .collect();
        if next().is_multiple_of(3) {
            t.insert(0, b' ');
        }
        bytes.push(t);
    }
    bytes
}

fn first_masks(v: &Arc<JsonVocab>) {
    let c = v.constraint();
    let mut m = c.0.matcher();
    let mut allowed = vec![true; 262_208];
    m.restrict(&mut allowed);
    // `{"` then inside a key: nearly every token may come.
    m.accept(b'{' as u32);
    m.accept(b'"' as u32);
    let mut allowed = vec![true; 262_208];
    m.restrict(&mut allowed);
}

fn bench(c: &mut Criterion) {
    let bytes = vocab();
    let mut g = c.benchmark_group("json_mask");
    g.sample_size(10);
    g.bench_function("build_262k", |b| {
        b.iter(|| JsonVocab::new(bytes.clone(), vec![1]))
    });
    g.bench_function("build_262k_and_first_two_masks", |b| {
        b.iter(|| first_masks(&Arc::new(JsonVocab::new(bytes.clone(), vec![1]))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
