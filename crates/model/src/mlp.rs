//! The gated MLP: `down(act(gate(x)) * up(x))`, with the gate and up projections
//! stacked into one matrix at load, so that a step runs one matmul for both. With
//! Gemma 3's tanh GELU, the activation and product run in one pass: a CUDA kernel
//! (`gelu_mul`), on the CPU `cpu_gelu`; another `hidden_activation` runs as
//! tensor ops.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::activation::Activation;
use crate::config::TextConfig;
use crate::gelu_mul;
use crate::linear::Linear;

#[derive(Debug, Clone)]
pub struct Mlp {
    /// `[2 * intermediate, hidden]`: gate rows, then up rows.
    gate_up: Linear,
    down: Linear,
    intermediate: usize,
    act: Activation,
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
            act: cfg.hidden_activation,
            fused: fused && cfg.hidden_activation == Activation::GeluTanh,
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
        } else if self.act != Activation::GeluTanh {
            let i = self.intermediate;
            let gate = gate_up.narrow(D::Minus1, 0, i)?;
            (self.act.apply(&gate)? * gate_up.narrow(D::Minus1, i, i)?)?
        } else if gate_up.device().is_cpu() {
            crate::cpu_gelu::gelu_mul(&gate_up, self.intermediate)?
        } else {
            gelu_mul::reference(&gate_up, self.intermediate)?
        };
        self.down.forward(&act)
    }
}
