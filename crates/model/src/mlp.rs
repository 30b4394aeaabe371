//! The gated MLP: `down(gelu_tanh(gate(x)) * up(x))`, with the gate and up
//! projections stacked into one matrix at load, so that a step runs one matmul
//! for both (one launch fewer per layer on a GPU).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{linear_no_bias, Linear, VarBuilder};

use crate::config::TextConfig;

#[derive(Debug, Clone)]
pub struct Mlp {
    /// `[2 * intermediate, hidden]`: gate rows, then up rows.
    gate_up: Linear,
    down: Linear,
    intermediate: usize,
}

impl Mlp {
    pub fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let gate = vb.pp("gate_proj").get((i, h), "weight")?;
        let up = vb.pp("up_proj").get((i, h), "weight")?;
        Ok(Self {
            gate_up: Linear::new(Tensor::cat(&[&gate, &up], 0)?, None),
            down: linear_no_bias(i, h, vb.pp("down_proj"))?,
            intermediate: i,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let i = self.intermediate;
        let gate_up = self.gate_up.forward(x)?;
        // candle's `gelu` is the tanh approximation (gelu_pytorch_tanh).
        let gate = gate_up.narrow(D::Minus1, 0, i)?.gelu()?;
        self.down
            .forward(&(gate * gate_up.narrow(D::Minus1, i, i)?)?)
    }
}
