//! The JSON form of the load figures (measured by `medgemma_scheduler::load`).

use medgemma_scheduler::load::{Figures, Spread};
use serde_json::{json, Value};

fn spread_json(spread: Option<Spread>) -> Value {
    spread.map_or(
        Value::Null,
        |s| json!({"p50": s.p50, "p99": s.p99, "mean": s.mean}),
    )
}

/// One concurrency level's figures as JSON.
pub fn figures_json(f: &Figures) -> Value {
    json!({
        "concurrency": f.concurrency,
        "requests": f.requests,
        "incomplete": f.incomplete,
        "prompt_tokens": f.prompt_tokens,
        "output_tokens": f.output_tokens,
        "wall_s": f.wall_s,
        "prefill_tok_s": f.prefill_tok_s,
        "decode_tok_s": f.decode_tok_s,
        "output_tok_s": f.output_tok_s,
        "ttft_ms": spread_json(f.ttft_ms),
        "itl_ms": spread_json(f.itl_ms),
        "peak_memory_bytes": f.peak_memory,
        "error": f.error,
    })
}
