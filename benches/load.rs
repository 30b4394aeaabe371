//! Load benchmark of the continuous-batching engine on CPU: a small random model
//! (hidden 512, 8 layers, vocab 32000, f32, made in memory) behind the real
//! scheduler and paged KV cache. For each concurrency level it sends that many
//! requests at once and reports aggregate output throughput (all generated tokens
//! over the wall time), p50/p99 time to first token and inter-token latency, and
//! the ratio against requests sent one after another (measured in the same run).
//!
//! cargo bench --bench load                 (all levels: 1, 4, 16, 64)
//! cargo bench --bench load -- 1,4,16       (chosen levels)
//!
//! Environment: MEDGEMMA_BENCH_PROMPT (tokens, default 32), MEDGEMMA_BENCH_NEW
//! (tokens, default 32).

use std::time::Instant;

use medgemma_core::{GenerateRequest, Prompt, SamplingParams, StopCriteria};
use medgemma_model::{CandleExecutor, DType, Device, KvBudget, KvCacheConfig, ModelConfig};
use medgemma_scheduler::load::{figures, run, run_sequential, Figures};
use medgemma_scheduler::{SchedulerConfig, SchedulerHandle};

const CONFIG: &str = r#"{"architectures":["Gemma3ForCausalLM"],"model_type":"gemma3_text",
    "vocab_size":32000,"hidden_size":512,"intermediate_size":2048,"num_hidden_layers":8,
    "num_attention_heads":8,"num_key_value_heads":4,"head_dim":64,"query_pre_attn_scalar":64,
    "sliding_window":64,"sliding_window_pattern":4,"max_position_embeddings":4096,
    "rope_scaling":{"rope_type":"linear","factor":8.0}}"#;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn requests(n: usize, prompt_len: usize, new: usize, salt: usize) -> Vec<GenerateRequest> {
    (0..n)
        .map(|i| GenerateRequest {
            id: format!("load-{salt}-{i}"),
            prompt: Prompt {
                token_ids: (0..prompt_len)
                    .map(|j| ((i * 7919 + j * 104_729 + salt * 31) % 31_000 + 10) as u32)
                    .collect(),
                images: Vec::new(),
            },
            sampling: SamplingParams::greedy(),
            stop: StopCriteria {
                ignore_eos: true,
                ..StopCriteria::default()
            },
            max_new_tokens: new,
            arrival: Instant::now(),
            cache_salt: None,
            priority: 0,
        })
        .collect()
}

fn row(c: usize, f: &Figures, seq_rate: f64) {
    let (ttft, itl) = (f.ttft_ms.unwrap_or_default(), f.itl_ms.unwrap_or_default());
    println!(
        "{c:>11} {:>14.1} {:>8.2}x {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
        f.output_tok_s,
        f.output_tok_s / seq_rate,
        ttft.p50,
        ttft.p99,
        itl.p50,
        itl.p99,
    );
}

fn main() {
    let levels: Vec<usize> = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| a.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 4, 16, 64]);
    let (prompt_len, new) = (
        env_usize("MEDGEMMA_BENCH_PROMPT", 32),
        env_usize("MEDGEMMA_BENCH_NEW", 32),
    );
    let max_c = levels.iter().copied().max().unwrap_or(1);
    let cfg = ModelConfig::from_json_str(CONFIG, "load bench config").expect("config parses");
    let model = medgemma_model::synthetic::synthetic_model(cfg, DType::F32, &Device::Cpu)
        .expect("random model");
    let kv = KvCacheConfig {
        budget: KvBudget::Bytes(512 << 20),
        max_num_seqs: max_c,
        ..KvCacheConfig::default()
    };
    let exec = CandleExecutor::new(model, &kv).expect("KV cache");
    let h = SchedulerHandle::spawn(
        SchedulerConfig {
            max_num_seqs: max_c,
            max_waiting: 4 * max_c,
            max_num_batched_tokens: 2048,
            max_model_len: 4096,
            // Every prompt is computed, as the figures say.
            prefix_caching: false,
        },
        move || exec,
    );
    run(&h, requests(2, prompt_len, 4, 0));
    // The one-after-another rate, on 8 requests.
    let seq = figures(1, &run_sequential(&h, requests(8, prompt_len, new, 1)));
    assert_eq!(seq.incomplete, 0, "sequential requests all complete");
    let seq_rate = seq.output_tok_s;
    println!(
        "load: hidden 512, 8 layers, f32, {} threads; prompt {prompt_len} tokens, {new} new tokens each",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("sequential (8 requests one after another): {seq_rate:.1} tokens/s");
    println!(
        "{:>11} {:>14} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "concurrency", "output tok/s", "vs seq", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99"
    );
    for (i, &c) in levels.iter().enumerate() {
        let f = figures(c, &run(&h, requests(c, prompt_len, new, 10 + i)));
        assert_eq!(f.incomplete, 0, "{:?}", f.error);
        row(c, &f, seq_rate);
    }
    println!("(latencies in ms)");
    h.shutdown();
}
