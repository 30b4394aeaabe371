//! Per-sequence KV state, owned by the caller and passed into each forward.
//!
//! Keys are cached after RoPE. Sliding-window layers keep only the keys a future
//! query can still see (the last `window - 1`), so their memory stays bounded.

use candle_core::{Result, Tensor};

/// One layer's cached keys and values, `[kv_heads, cached, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct LayerKv {
    k: Option<Tensor>,
    v: Option<Tensor>,
    /// Absolute position of the first cached token.
    first_pos: usize,
}

impl LayerKv {
    /// Appends the new keys and values; returns all cached ones and the position of the first.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor, usize)> {
        let (k_all, v_all) = match (&self.k, &self.v) {
            (Some(pk), Some(pv)) => (Tensor::cat(&[pk, k], 1)?, Tensor::cat(&[pv, v], 1)?),
            _ => (k.clone(), v.clone()),
        };
        self.k = Some(k_all.clone());
        self.v = Some(v_all.clone());
        Ok((k_all, v_all, self.first_pos))
    }

    /// Drops keys no query at or after the next position can see.
    pub fn trim_to_window(&mut self, window: usize) -> Result<()> {
        let keep = window.saturating_sub(1);
        if let (Some(k), Some(v)) = (&self.k, &self.v) {
            let n = k.dim(1)?;
            if n > keep {
                let drop = n - keep;
                self.k = Some(k.narrow(1, drop, keep)?.contiguous()?);
                self.v = Some(v.narrow(1, drop, keep)?.contiguous()?);
                self.first_pos += drop;
            }
        }
        Ok(())
    }

    pub fn cached_tokens(&self) -> usize {
        self.k.as_ref().and_then(|k| k.dim(1).ok()).unwrap_or(0)
    }
}

/// The KV state of one sequence across all layers.
#[derive(Debug, Clone)]
pub struct SeqKv {
    layers: Vec<LayerKv>,
    /// Tokens processed so far (the next token's position).
    len: usize,
}

impl SeqKv {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![LayerKv::default(); num_layers],
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn layer_mut(&mut self, i: usize) -> &mut LayerKv {
        &mut self.layers[i]
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Tokens held across all layers (sliding layers hold fewer).
    pub fn cached_tokens(&self) -> usize {
        self.layers.iter().map(LayerKv::cached_tokens).sum()
    }
}
