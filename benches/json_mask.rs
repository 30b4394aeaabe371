//! Constrained output: building the vocabulary trie of a Gemma-sized vocabulary
//! (262,144 synthetic tokens), and one cold mask (a walk of the trie: masks are
//! kept per state afterwards) in states of JSON mode and of a schema.
//!
//! cargo bench -p medgemma-preprocess --bench json_mask

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use medgemma_preprocess::json_mode::JsonVocab;
use medgemma_preprocess::schema::Schema;

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
    let c = v.constraint(Schema::any_object());
    let mut m = c.0.matcher();
    let mut allowed = vec![true; 262_208];
    m.restrict(&mut allowed);
    // `{"` then inside a key: nearly every token may come.
    m.accept(b'{' as u32);
    m.accept(b'"' as u32);
    let mut allowed = vec![true; 262_208];
    m.restrict(&mut allowed);
}

/// A schema with an enum, a bounded integer, a free string and declared keys.
fn report() -> Schema {
    Schema::compile(&serde_json::json!({
        "type": "object",
        "properties": {
            "finding": {"type": "string"},
            "severity": {"enum": ["mild", "moderate", "severe"]},
            "size_mm": {"type": "integer", "minimum": 0, "maximum": 500},
            "code": {"type": "string", "pattern": "^[A-Z][0-9]{2}$"}
        },
        "required": ["finding", "severity", "size_mm", "code"],
        "additionalProperties": false
    }))
    .unwrap()
}

/// One cold mask after `prefix` (fed a byte at a time: single-byte tokens are
/// the first 256 ids).
fn cold_mask(v: &Arc<JsonVocab>, schema: Schema, prefix: &str) {
    let c = v.constraint(schema);
    let mut m = c.0.matcher();
    for b in prefix.bytes() {
        m.accept(b as u32);
    }
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
    let v = Arc::new(JsonVocab::new(bytes.clone(), vec![1]));
    for (name, prefix) in [
        ("schema_key", "{\""),
        ("schema_free_string", "{\"finding\": \""),
        ("schema_enum", "{\"severity\": \""),
        ("schema_bounded_integer", "{\"size_mm\": 1"),
        ("schema_pattern", "{\"code\": \"A"),
    ] {
        g.bench_function(name, |b| b.iter(|| cold_mask(&v, report(), prefix)));
    }
    g.bench_function("json_object_key", |b| {
        b.iter(|| cold_mask(&v, Schema::any_object(), "{\""))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
