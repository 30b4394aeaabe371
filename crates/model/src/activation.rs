//! Activations by their transformers names (`hidden_activation` of the text MLP,
//! `hidden_act` of the vision tower): Gemma 3 and SigLIP use the tanh GELU, which
//! the fused paths implement; the others run as plain tensor ops.

use candle_core::{DType, Result, Tensor};

use crate::bias_epilogue as epilogue;

/// An activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_pytorch_tanh` (also `gelu_new`, `gelu_fast`, `gelu_accurate`: the same
    /// tanh approximation).
    GeluTanh,
    /// `gelu` (also `gelu_python`): the exact, erf-based GELU.
    GeluErf,
    /// `quick_gelu`: `x * sigmoid(1.702 x)`.
    QuickGelu,
    /// `silu` (also `swish`).
    Silu,
    /// `relu`.
    Relu,
}

impl Activation {
    /// The activation transformers' `ACT2FN[name]` computes; `None` for names this
    /// server does not implement.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" | "gelu_accurate" => Self::GeluTanh,
            "gelu" | "gelu_python" => Self::GeluErf,
            "quick_gelu" => Self::QuickGelu,
            "silu" | "swish" => Self::Silu,
            "relu" => Self::Relu,
            _ => return None,
        })
    }

    /// The names `parse` takes, for error messages.
    pub const NAMES: &'static str = "gelu_pytorch_tanh, gelu_new, gelu_fast, gelu_accurate, \
        gelu, gelu_python, quick_gelu, silu, swish, relu";

    /// Applies the activation element-wise, rounding as PyTorch does in half
    /// precision: its GELUs and SiLU compute in f32 and round once; quick_gelu is
    /// three ops, each rounded.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        let wide =
            |f: fn(&Tensor) -> Result<Tensor>, dtype| f(&x.to_dtype(dtype)?)?.to_dtype(x.dtype());
        match self {
            Self::GeluTanh => epilogue::reference::gelu_tanh(x),
            Self::GeluErf => wide(Tensor::gelu_erf, DType::F32),
            Self::QuickGelu => {
                // Each of PyTorch's three ops computes in f32 and rounds to x's dtype
                // (candle's half-precision affine would round 1.702 first).
                let round = |t: Tensor| t.to_dtype(x.dtype())?.to_dtype(DType::F32);
                let scaled = round((x.to_dtype(DType::F32)? * 1.702)?)?;
                let gate = candle_nn::ops::sigmoid(&scaled)?.to_dtype(x.dtype())?;
                x * gate
            }
            Self::Silu => wide(Tensor::silu, DType::F32),
            Self::Relu => x.relu(),
        }
    }
}
