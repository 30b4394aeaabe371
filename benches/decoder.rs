//! Decoder benchmarks on a small random model (hidden 512, 8 layers) made in memory:
//! one 128-token prefill and one decode step against a 128-token KV state.
//!
//! cargo bench -p medgemma-model --bench decoder

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion};
use medgemma_core::{DirectBlocks, SamplingParams, ScheduledSeq};
use medgemma_model::{ForwardBatch, KvPool, ModelConfig};

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
    let pool = KvPool::new(&cfg.text, 16, 256, DType::F32, &Device::Cpu).expect("pool");
    let mut blocks = DirectBlocks::new(&pool.layout(1024));
    // Blocks for positions 0..=128: the prompt and one decoded token.
    let mut seq = ScheduledSeq {
        seq_id: 1,
        tokens: vec![0; 129],
        start_pos: 0,
        sample: true,
        sampling: SamplingParams::greedy(),
        images: Vec::new(),
        block_tables: Vec::new(),
        cached_prefix: Vec::new(),
    };
    blocks.assign(&mut seq).expect("blocks");
    let batch_of = |tokens: &[u32], start: usize| {
        let mut batch = ForwardBatch::default();
        batch.push(tokens, start, true);
        batch.spans[0].block_tables.clone_from(&seq.block_tables);
        batch
    };

    let prefill = batch_of(&prompt, 0);
    c.bench_function("prefill_128_tokens", |b| {
        b.iter(|| model.forward(&prefill, &pool).expect("forward"))
    });

    model.forward(&prefill, &pool).expect("prefill");
    let decode = batch_of(&[42], 128);
    c.bench_function("decode_step_at_128", |b| {
        b.iter(|| model.forward(&decode, &pool).expect("decode"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
