//! The gated MLP: `down(gelu_tanh(gate(x)) * up(x))`, with the gate and up
//! projections stacked into one matrix at load, so that a step runs one matmul
//! for both, and the gelu and product in one pass: a CUDA kernel (`gelu_mul`), on
//! the CPU `cpu_gelu`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::TextConfig;
use crate::gelu_mul;
use crate::linear::Linear;

#[derive(Debug, Clone)]
pub struct Mlp {
    /// `[2 * intermediate, hidden]`: gate rows, then up rows.
    gate_up: Linear,
    down: Linear,
    intermediate: usize,
    /// Run gelu and the product as one CUDA kernel (see `gelu_mul::usable`).
    fused: bool,
}

impl Mlp {
    pub fn new(cfg: &TextConfig, vb: VarBuilder, fused: bool) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let gate = vb.pp("gate_proj").get((i, h), "weight")?;
        let up = vb.pp("up_proj").get((i, h), "weight")?;
        Ok(Self {
            gate_up: Linear::new(Tensor::cat(&[&gate, &up], 0)?),
            down: Linear::load(i, h, vb.pp("down_proj"))?,
            intermediate: i,
            fused,
        })
    }

    /// The stacked gate/up and the down projections.
    pub fn linears_mut(&mut self) -> [&mut Linear; 2] {
        [&mut self.gate_up, &mut self.down]
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up.forward(x)?;
        let act = if self.fused {
            gelu_mul::gelu_mul(&gate_up, self.intermediate)?
        } else if gate_up.device().is_cpu() {
            crate::cpu_gelu::gelu_mul(&gate_up, self.intermediate)?
        } else {
            gelu_mul::reference(&gate_up, self.intermediate)?
        };
        self.down.forward(&act)
    }
}
