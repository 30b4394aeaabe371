//! How big the KV pool is: from a byte budget (CPU) or a share of the GPU's memory,
//! and the longest sequence it can then hold.

use candle_core::{DType, Device};
use medgemma_core::KvLayout;

use crate::config::TextConfig;
use crate::error::{ModelError, Result};
use crate::kv::{bytes_per_block, KvGroups};

/// Where the pool's size comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KvBudget {
    /// A fixed number of bytes (`--kv-cache-bytes`).
    Bytes(u64),
    /// This share of the device's total memory for everything the server holds
    /// there: weights, activations and the pool (`--gpu-memory-utilization`).
    DeviceFraction(f64),
}

/// The pool's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KvCacheConfig {
    /// Tokens per block.
    pub block_size: usize,
    pub budget: KvBudget,
    /// Sequences running at once: the pool never holds more than they can use.
    pub max_num_seqs: usize,
    /// Longest sequence asked for; `None`: the model's, lowered to what fits.
    pub max_model_len: Option<usize>,
    /// Tokens per step: the largest prefill chunk, and the activations to leave room for.
    pub max_num_batched_tokens: usize,
    /// Bytes of image features kept for reuse (`crate::encoder_cache`), left out of
    /// a device-memory budget.
    pub encoder_cache_bytes: u64,
}

impl Default for KvCacheConfig {
    fn default() -> Self {
        Self {
            block_size: 16,
            budget: KvBudget::Bytes(1 << 30),
            max_num_seqs: 64,
            max_model_len: None,
            max_num_batched_tokens: 2048,
            encoder_cache_bytes: crate::encoder_cache::DEFAULT_ENCODER_CACHE_BYTES as u64,
        }
    }
}

/// The pool to allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPlan {
    pub num_blocks: usize,
    pub max_seq_len: usize,
}

/// Sizes the pool for `cfg` on `device`; `free_total` is the device's free and
/// total memory after the weights are loaded (`None` on CPU).
pub fn plan_pool(
    cfg: &TextConfig,
    kv: &KvCacheConfig,
    dtype: DType,
    free_total: Option<(u64, u64)>,
) -> Result<PoolPlan> {
    if kv.block_size == 0 {
        return Err(ModelError::Input(
            "the KV block size must be at least 1".into(),
        ));
    }
    let per_block = bytes_per_block(cfg, kv.block_size, dtype) as u64;
    let budget = budget_bytes(cfg, kv, dtype, free_total)?;
    let model_len = cfg.max_position_embeddings;
    let wanted_len = kv.max_model_len.unwrap_or(model_len);
    if wanted_len > model_len {
        return Err(ModelError::Input(format!(
            "--max-model-len {wanted_len} exceeds the model's {model_len} positions"
        )));
    }
    let mut layout = KvLayout {
        max_seq_len: wanted_len,
        block_size: kv.block_size,
        num_blocks: (budget / per_block.max(1)) as usize,
        groups: KvGroups::new(cfg).windows,
        bytes_per_block: per_block as usize,
    };
    let chunk = |len: usize| kv.max_num_batched_tokens.max(1).min(len);
    let capacity = longest_fitting(&layout, chunk);
    let max_seq_len = match kv.max_model_len {
        Some(len) if len > capacity => {
            return Err(ModelError::Input(format!(
                "a KV cache of {budget} bytes holds sequences of at most {capacity} tokens, \
                 fewer than --max-model-len {len}: raise the KV budget \
                 (--kv-cache-bytes / --gpu-memory-utilization) or lower --max-model-len"
            )))
        }
        _ if capacity == 0 => {
            return Err(ModelError::Input(format!(
            "a KV cache of {budget} bytes holds no sequence at all ({per_block} bytes per block): \
                 raise --kv-cache-bytes / --gpu-memory-utilization"
        )))
        }
        _ => wanted_len.min(capacity),
    };
    if max_seq_len < wanted_len {
        tracing::warn!(
            max_model_len = max_seq_len,
            model_positions = model_len,
            "the KV cache holds shorter sequences than the model allows; max_model_len lowered"
        );
    }
    // No more blocks than max_num_seqs sequences of the longest length can use.
    let useful = kv.max_num_seqs.max(1) * layout.blocks_for(max_seq_len, chunk(max_seq_len));
    layout.num_blocks = layout.num_blocks.min(useful);
    Ok(PoolPlan {
        num_blocks: layout.num_blocks,
        max_seq_len,
    })
}

/// The longest sequence one pool of `layout.num_blocks` blocks holds alone.
fn longest_fitting(layout: &KvLayout, chunk: impl Fn(usize) -> usize) -> usize {
    let fits = |len: usize| layout.blocks_for(len, chunk(len)) <= layout.num_blocks;
    let (mut lo, mut hi) = (0, layout.max_seq_len);
    if fits(hi) {
        return hi;
    }
    // Invariant: fits(lo) (or lo == 0), !fits(hi).
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

fn budget_bytes(
    cfg: &TextConfig,
    kv: &KvCacheConfig,
    dtype: DType,
    free_total: Option<(u64, u64)>,
) -> Result<u64> {
    match (kv.budget, free_total) {
        (KvBudget::Bytes(b), _) => Ok(b),
        (KvBudget::DeviceFraction(f), Some((free, total))) => {
            if !(f > 0.0 && f <= 1.0) {
                return Err(ModelError::Input(format!(
                    "--gpu-memory-utilization must be in (0, 1], not {f}"
                )));
            }
            let in_use = total.saturating_sub(free);
            let allowed = (total as f64 * f) as u64;
            let reserve = activation_reserve(cfg, kv, dtype) + kv.encoder_cache_bytes;
            let budget = allowed.saturating_sub(in_use).saturating_sub(reserve);
            if budget == 0 {
                return Err(ModelError::Input(format!(
                    "no device memory left for the KV cache: {in_use} of {total} bytes in use \
                     after loading, {reserve} kept for activations and image features, limit {allowed} \
                     (--gpu-memory-utilization {f})"
                )));
            }
            Ok(budget)
        }
        (KvBudget::DeviceFraction(_), None) => Err(ModelError::Input(
            "--gpu-memory-utilization needs a GPU; on CPU give --kv-cache-bytes".into(),
        )),
    }
}

/// Device memory a step of `max_num_batched_tokens` tokens needs besides the pool:
/// hidden states and MLP activations, f32 attention scores of one chunk against a
/// long context, the gathered keys and values, and the logits; plus 1 GiB for the
/// vision tower and the allocator's slack.
pub fn activation_reserve(cfg: &TextConfig, kv: &KvCacheConfig, dtype: DType) -> u64 {
    let t = kv.max_num_batched_tokens.max(1) as u64;
    let el = dtype.size_in_bytes() as u64;
    let ctx = kv
        .max_model_len
        .unwrap_or(cfg.max_position_embeddings)
        .min(8192) as u64;
    let hidden = t * (cfg.hidden_size as u64 * 8 + cfg.intermediate_size as u64 * 4) * el;
    let scores = 3 * cfg.num_attention_heads as u64 * t * ctx * 4;
    let keys = 4 * ctx * (cfg.num_key_value_heads * cfg.head_dim) as u64 * el;
    let logits = 3 * kv.max_num_seqs as u64 * cfg.vocab_size as u64 * 4;
    (1 << 30) + hidden + scores + keys + logits
}

/// The pool plan for a model on `device`, reading the device's free memory.
pub fn plan_for_device(
    cfg: &TextConfig,
    kv: &KvCacheConfig,
    dtype: DType,
    device: &Device,
) -> Result<PoolPlan> {
    plan_pool(cfg, kv, dtype, crate::device::device_memory(device))
}
