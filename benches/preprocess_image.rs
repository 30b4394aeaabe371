//! Image preprocessing: decode a 2048x2048 JPEG (made here), convert, resize to
//! the tiny checkpoint's 32x32 and to Gemma 3's 896x896, normalize.
//!
//! cargo bench -p medgemma-preprocess --bench preprocess_image

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use image::codecs::jpeg::JpegEncoder;
use medgemma_preprocess::ImageProcessor;

fn jpeg_2048() -> Vec<u8> {
    let n = 2048u32;
    let img = image::RgbImage::from_fn(n, n, |x, y| {
        let d = (x as i64 - 1000).pow(2) + (y as i64 - 900).pow(2);
        if d < 400 * 400 {
            image::Rgb([230, 40, 60])
        } else {
            image::Rgb([(x / 8) as u8, (y / 8) as u8, ((x + y) / 16) as u8])
        }
    });
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .expect("jpeg encodes");
    out
}

fn processor(size: usize) -> ImageProcessor {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-gemma3");
    let mut p = ImageProcessor::load(&dir).expect("fixture preprocessor config");
    p.height = size;
    p.width = size;
    p
}

fn bench(c: &mut Criterion) {
    let jpeg = jpeg_2048();
    for size in [32, 896] {
        let p = processor(size);
        c.bench_function(&format!("preprocess_jpeg_2048_to_{size}"), |b| {
            b.iter(|| p.process(&jpeg, Some(false)).expect("preprocess"))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
