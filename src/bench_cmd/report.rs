//! The benchmark's results: an aligned table on stdout and a JSON document.

use std::io::Write;

use anyhow::{Context, Result};
use medgemma_model::{LayerType, ModelConfig};
use serde_json::{json, Value};

use medgemma_scheduler::load::{Figures, Spread};

/// Time to first token of one request with images against the same text alone.
#[derive(Debug, Clone, Copy)]
pub struct ImageTtft {
    pub images: usize,
    pub text_tokens: usize,
    /// Median over the repetitions, milliseconds.
    pub with_images_ms: f64,
    pub text_only_ms: f64,
    /// The same request again with as much text more (its prefix cached).
    pub follow_up_ms: f64,
    pub repetitions: usize,
    /// The vision tower and projector alone on as many images, milliseconds.
    pub vision_ms: Option<f64>,
}

impl ImageTtft {
    pub fn json(&self) -> Value {
        json!({
            "images": self.images,
            "text_tokens": self.text_tokens,
            "with_images_ms": self.with_images_ms,
            "text_only_ms": self.text_only_ms,
            "follow_up_ms": self.follow_up_ms,
            "repetitions": self.repetitions,
            "vision_alone_ms": self.vision_ms,
        })
    }
}

const HEADER: [&str; 11] = [
    "conc",
    "done",
    "wall s",
    "prefill tok/s",
    "decode tok/s",
    "output tok/s",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "ITL p50 ms",
    "ITL p99 ms",
    "peak mem GiB",
];

/// `v` with `digits` decimals, or `-`.
fn fixed(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

/// One percentile of a spread, in milliseconds with one decimal.
fn pct(s: Option<Spread>, pick: fn(&Spread) -> f64) -> String {
    fixed(s.as_ref().map(pick), 1)
}

fn cells(f: &Figures) -> [String; 11] {
    [
        f.concurrency.to_string(),
        format!("{}/{}", f.requests - f.incomplete, f.requests),
        format!("{:.2}", f.wall_s),
        format!("{:.0}", f.prefill_tok_s),
        fixed(f.decode_tok_s, 0),
        format!("{:.0}", f.output_tok_s),
        pct(f.ttft_ms, |s| s.p50),
        pct(f.ttft_ms, |s| s.p99),
        pct(f.itl_ms, |s| s.p50),
        pct(f.itl_ms, |s| s.p99),
        fixed(f.peak_memory.map(|b| b as f64 / GIB), 2),
    ]
}

const GIB: f64 = (1u64 << 30) as f64;

/// Writes the table: a title line, a header, one right-aligned row per level.
pub fn print_table(
    out: &mut impl Write,
    title: &str,
    levels: &[Figures],
    image: Option<&ImageTtft>,
) -> std::io::Result<()> {
    let rows: Vec<[String; 11]> = levels.iter().map(cells).collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].len())
            .chain([HEADER[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..HEADER.len()).map(width).collect();
    writeln!(out, "{title}")?;
    writeln!(out, "{}", aligned(&HEADER.map(String::from), &widths))?;
    for r in &rows {
        writeln!(out, "{}", aligned(r, &widths))?;
    }
    for f in levels.iter().filter(|f| f.error.is_some()) {
        writeln!(
            out,
            "concurrency {}: {}",
            f.concurrency,
            f.error.as_deref().unwrap_or_default()
        )?;
    }
    if let Some(i) = image {
        writeln!(
            out,
            "TTFT with {} image(s) + {} text tokens: {:.1} ms; the {} text tokens alone: {:.1} ms (median of {})",
            i.images, i.text_tokens, i.with_images_ms, i.text_tokens, i.text_only_ms, i.repetitions
        )?;
        writeln!(
            out,
            "  a follow-up on the same image(s), {} more text tokens (earlier prompt cached): {:.1} ms",
            i.text_tokens, i.follow_up_ms
        )?;
        if let Some(v) = i.vision_ms {
            writeln!(
                out,
                "  of which the vision tower and projector alone: {v:.1} ms"
            )?;
        }
    }
    Ok(())
}

/// The cells right-aligned to their column widths.
fn aligned(cols: &[String], widths: &[usize]) -> String {
    cols.iter()
        .zip(widths)
        .map(|(c, &w)| format!("{c:>w$}"))
        .collect::<Vec<_>>()
        .join("  ")
}

/// The model's shapes, as the JSON reports them.
pub fn shapes(cfg: &ModelConfig) -> Value {
    let t = &cfg.text;
    let vision = cfg.multimodal.as_ref().map(|mm| {
        let v = &mm.vision;
        json!({
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads,
            "mm_tokens_per_image": mm.mm_tokens_per_image,
        })
    });
    json!({
        "text": {
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads,
            "head_dim": t.head_dim,
            "sliding_window": t.sliding_window,
            "full_attention_layers": t.layer_types.iter().filter(|&&l| l == LayerType::Full).count(),
        },
        "vision": vision,
    })
}

/// What the figures mean, written into the JSON so the file explains itself.
pub fn definitions() -> Value {
    json!({
        "prefill_tok_s": "prompt tokens of all requests / time from the first submission until every request had its first token",
        "decode_tok_s": "tokens generated after every request had its first token / time from then to the last token",
        "output_tok_s": "all generated tokens / wall time",
        "ttft_ms": "submission to first token, per request",
        "itl_ms": "time between consecutive tokens of a request",
        "peak_memory_bytes": "CUDA: peak of total - free device memory during the level (whole GPU); CPU: the process's peak resident set so far (VmHWM)",
        "requests": "all submitted at once; greedy; end-of-sequence ignored, so each generates exactly max_tokens; random prompts, so none finds another's blocks in the prefix cache",
        "image_ttft.follow_up_ms": "time to first token of a with-images request sent again with as many text tokens more, its earlier tokens and images served from the prefix cache",
    })
}

/// Writes `doc` to `path` (creating its folder), pretty-printed.
pub fn write_json(path: &std::path::Path, doc: &Value) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(doc)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
