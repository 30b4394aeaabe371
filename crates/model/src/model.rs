//! A loaded Gemma 3 checkpoint: config, weights under whichever key layout the
//! checkpoint uses, and the text decoder.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};

use crate::config::{Architecture, ModelConfig};
use crate::error::{ModelError, Result};
use crate::multimodal::VisionPart;
use crate::text::TextModel;
use crate::weights::Checkpoint;

/// Decoder prefixes of the layouts in the wild (GEMMA3.md §7), with their LM heads.
const TEXT_LAYOUTS: &[(&str, &str)] = &[
    ("language_model.model", "language_model.lm_head"),
    ("model.language_model", "lm_head"),
    ("model", "lm_head"),
];

#[derive(Debug)]
pub struct Gemma3 {
    pub config: ModelConfig,
    pub text: TextModel,
    /// SigLIP and the projector, for Gemma3ForConditionalGeneration checkpoints.
    pub vision: Option<VisionPart>,
}

impl Gemma3 {
    /// Loads `dir/config.json` and the safetensors beside it.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let checkpoint = Arc::new(Checkpoint::open(dir)?);
        Self::from_checkpoint(config, checkpoint, dtype, device)
    }

    pub fn from_checkpoint(
        config: ModelConfig,
        checkpoint: Arc<Checkpoint>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let (prefix, head) = text_layout(&checkpoint)?;
        let vb = checkpoint.clone().var_builder(dtype, device);
        let text =
            TextModel::new(&config.text, vb.pp(prefix), Some(vb.pp(head))).map_err(load_error)?;
        let vision = match (&config.multimodal, config.architecture) {
            (Some(mm), Architecture::ConditionalGeneration) => Some(
                VisionPart::load(mm, config.text.hidden_size, &checkpoint, &vb).map_err(
                    |e| match e {
                        ModelError::Candle(c) => load_error(c),
                        other => other,
                    },
                )?,
            ),
            _ => None,
        };
        Ok(Self {
            config,
            text,
            vision,
        })
    }
}

fn text_layout(checkpoint: &Checkpoint) -> Result<(&'static str, &'static str)> {
    TEXT_LAYOUTS
        .iter()
        .copied()
        .find(|(prefix, _)| checkpoint.contains(&format!("{prefix}.embed_tokens.weight")))
        .ok_or_else(|| ModelError::Weights {
            file: checkpoint
                .files()
                .first()
                .map(|f| f.display().to_string())
                .unwrap_or_default(),
            msg: format!(
                "no text decoder found: none of {} exists",
                TEXT_LAYOUTS
                    .iter()
                    .map(|(p, _)| format!("{p}.embed_tokens.weight"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// The first file of a checkpoint, for error messages.
pub(crate) fn first_file(checkpoint: &Checkpoint) -> String {
    checkpoint
        .files()
        .first()
        .map(|f| f.display().to_string())
        .unwrap_or_default()
}

/// candle appends a backtrace to some errors when RUST_BACKTRACE is set: keep the message.
pub(crate) fn load_error(e: candle_core::Error) -> ModelError {
    let msg = e.to_string();
    ModelError::Load(msg.lines().next().unwrap_or_default().to_string())
}
