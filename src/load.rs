//! Loads a checkpoint (folder or hub id) into the model and the text processor.

use anyhow::{bail, Context, Result};
use medgemma_model::{CandleExecutor, DType, Device, Gemma3};
use medgemma_preprocess::TextProcessor;

use crate::cli::ModelArgs;

pub struct Loaded {
    pub executor: CandleExecutor,
    pub text: TextProcessor,
}

pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" | "auto" => Ok(Device::Cpu),
        other => bail!("device {other:?} is not available in this build (cpu)"),
    }
}

pub fn dtype(name: &str, device: &Device) -> Result<DType> {
    match name {
        "auto" if device.is_cpu() => Ok(DType::F32),
        "auto" => Ok(DType::BF16),
        other => Ok(medgemma_model::parse_dtype(other)?),
    }
}

pub fn load(args: &ModelArgs) -> Result<Loaded> {
    let device = device(&args.device)?;
    let dtype = dtype(&args.dtype, &device)?;
    let dir = medgemma_model::hub::resolve(&args.model, args.revision.as_deref())?;
    tracing::info!(model = %dir.display(), ?dtype, "loading checkpoint");
    let model = Gemma3::load(&dir, dtype, &device)?;
    let text = TextProcessor::load(&dir, &model.config.eos_token_ids)
        .with_context(|| format!("loading the tokenizer of {}", dir.display()))?;
    Ok(Loaded {
        executor: CandleExecutor::new(model),
        text,
    })
}
