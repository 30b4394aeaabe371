//! One vision forward (SigLIP + projector) on the tiny checkpoint, f32 CPU.
//!
//! cargo bench -p medgemma-model --bench vision

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use medgemma_model::Gemma3;

fn bench(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gemma3");
    let model = Gemma3::load(&dir, DType::F32, &Device::Cpu).expect("tiny checkpoint");
    let vision = model.vision.as_ref().expect("vision tower");
    let s = vision.config.vision.image_size;
    for n in [1usize, 8] {
        let pixels = Tensor::randn(0f32, 0.5, (n, 3, s, s), &Device::Cpu).expect("pixels");
        c.bench_function(&format!("vision_forward_tiny_{n}_images"), |b| {
            b.iter(|| vision.encode(&pixels).expect("encode"))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
