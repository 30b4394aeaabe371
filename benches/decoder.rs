//! Decoder benchmarks on a small random model (hidden 512, 8 layers) made in memory:
//! one 128-token prefill and one decode step against a 128-token KV state.
//!
//! cargo bench -p medgemma-model --bench decoder

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion};
use medgemma_model::{ForwardBatch, ModelConfig, SeqKv};

fn small_config() -> ModelConfig {
    ModelConfig::from_json_str(
        r#"{"architectures":["Gemma3ForCausalLM"],"model_type":"gemma3_text","vocab_size":32000,
            "hidden_size":512,"intermediate_size":2048,"num_hidden_layers":8,"num_attention_heads":8,
            "num_key_value_heads":4,"head_dim":64,"query_pre_attn_scalar":64,"sliding_window":64,
            "sliding_window_pattern":4,"rope_scaling":{"rope_type":"linear","factor":8.0}}"#,
        "bench config",
    )
    .expect("bench config parses")
}

fn bench(c: &mut Criterion) {
    let cfg = small_config();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = medgemma_model::text::TextModel::new(&cfg.text, vb, None).expect("random model");
    let prompt: Vec<u32> = (0..128).map(|i| (i * 37 % 32000) as u32).collect();
    let n = cfg.text.num_hidden_layers;

    c.bench_function("prefill_128_tokens", |b| {
        b.iter(|| {
            let mut kv = SeqKv::new(n);
            let mut batch = ForwardBatch::default();
            batch.push(&prompt, 0, true);
            model.forward(&batch, &mut [&mut kv]).expect("forward")
        })
    });

    let mut warm = SeqKv::new(n);
    let mut batch = ForwardBatch::default();
    batch.push(&prompt, 0, true);
    model.forward(&batch, &mut [&mut warm]).expect("prefill");
    c.bench_function("decode_step_at_128", |b| {
        b.iter(|| {
            let mut kv = warm.clone();
            let mut batch = ForwardBatch::default();
            batch.push(&[42], 128, true);
            model.forward(&batch, &mut [&mut kv]).expect("decode")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
