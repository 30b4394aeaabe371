//! Rotary position embeddings (rotate-half), one table per layer type.
//!
//! Inverse frequencies, angles, cos and sin are computed in f32 from exact integer
//! positions and only then cast to the activation dtype, as transformers does
//! (candle-transformers builds them in bf16, which rounds positions above 256).

use candle_core::{DType, Device, Result, Tensor};

use crate::config::RopeParams;

#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

/// cos and sin for the tokens of one forward, shape `[tokens, head_dim / 2]`.
#[derive(Debug, Clone)]
pub struct RopeTables {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl Rope {
    pub fn new(params: RopeParams, head_dim: usize) -> Self {
        let base = params.theta as f32;
        let factor = params.linear_factor as f32;
        let inv_freq = (0..head_dim / 2)
            .map(|j| {
                let exponent = (2 * j) as f32 / head_dim as f32;
                (1.0f32 / base.powf(exponent)) / factor
            })
            .collect();
        Self { inv_freq }
    }

    /// Tables for the given absolute positions.
    pub fn tables(&self, positions: &[usize], dtype: DType, device: &Device) -> Result<RopeTables> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            let p = p as f32;
            for &f in &self.inv_freq {
                let angle = p * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let shape = (positions.len(), half);
        Ok(RopeTables {
            cos: Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?,
        })
    }
}

impl RopeTables {
    /// Rotates `x` of shape `[1, tokens, heads, head_dim]`.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::rotary_emb::rope_thd(&x.contiguous()?, &self.cos, &self.sin)
    }
}
