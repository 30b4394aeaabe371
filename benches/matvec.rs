//! The CPU's few-row products `x · wᵀ` (decode steps): candle's matmul as written,
//! as `(w · xᵀ)ᵀ`, and `cpu_matvec`, on a 4096×1024 weight (cache-resident on most
//! servers) and a 32000×1024 one (an LM head, read from memory), f32. Criterion
//! reports time; the weight's bytes over it is the bandwidth reached.
//!
//! cargo bench -p medgemma-model --bench matvec

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use medgemma_model::cpu_matvec::matvec;

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("x_wt");
    for (rows, out, k) in [
        (1usize, 4096usize, 1024usize),
        (4, 4096, 1024),
        (1, 32000, 1024),
        (8, 32000, 1024),
        (8, 1024, 4096),
        (16, 32000, 1024),
    ] {
        let x = Tensor::randn(0f32, 1.0, (rows, k), &dev).expect("x");
        let w = Tensor::randn(0f32, 1.0, (out, k), &dev).expect("w");
        group.throughput(Throughput::Bytes((out * k * 4) as u64));
        let shape = format!("{rows}x{k}_by_{out}x{k}");
        group.bench_with_input(BenchmarkId::new("candle_x_wt", &shape), &(), |b, _| {
            b.iter(|| x.matmul(&w.t().expect("t")).expect("matmul"))
        });
        group.bench_with_input(BenchmarkId::new("candle_w_xt_t", &shape), &(), |b, _| {
            b.iter(|| {
                w.matmul(&x.t().expect("t"))
                    .and_then(|p| p.t()?.contiguous())
                    .expect("matmul")
            })
        });
        if rows <= medgemma_model::cpu_matvec::MAX_ROWS {
            group.bench_with_input(BenchmarkId::new("cpu_matvec", &shape), &(), |b, _| {
                b.iter(|| matvec(&x, &w).expect("matvec"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
