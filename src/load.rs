//! Loads a checkpoint (folder or hub id) into the model and the text processor.

use anyhow::{bail, Context, Result};
use medgemma_model::{CandleExecutor, DType, Device, Gemma3};
use medgemma_preprocess::TextProcessor;

use medgemma_http::SamplingDefaults;

use crate::cli::ModelArgs;

pub struct Loaded {
    pub executor: CandleExecutor,
    pub text: TextProcessor,
    pub defaults: SamplingDefaults,
    pub dir: std::path::PathBuf,
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
    let dir = medgemma_model::hub::resolve(&args.model, args.revision.as_deref(), args.verify)?;
    tracing::info!(model = %dir.display(), ?dtype, "loading checkpoint");
    let model = Gemma3::load(&dir, dtype, &device)?;
    let text = TextProcessor::load(&dir, &model.config.eos_token_ids)
        .with_context(|| format!("loading the tokenizer of {}", dir.display()))?;
    let defaults = sampling_defaults(&dir.join("generation_config.json"));
    Ok(Loaded {
        executor: CandleExecutor::new(model),
        text,
        defaults,
        dir,
    })
}

/// Sampling defaults from generation_config.json, used where a request is silent
/// (as vLLM does): temperature, top_p, top_k; greedy when do_sample is false.
pub fn sampling_defaults(path: &std::path::Path) -> SamplingDefaults {
    let mut d = SamplingDefaults::default();
    let Ok(text) = std::fs::read_to_string(path) else {
        return d;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        tracing::warn!(file = %path.display(), "generation_config.json is not valid JSON; using OpenAI defaults");
        return d;
    };
    if let Some(t) = v.get("temperature").and_then(|x| x.as_f64()) {
        d.temperature = t as f32;
    }
    if let Some(p) = v.get("top_p").and_then(|x| x.as_f64()) {
        d.top_p = p as f32;
    }
    if let Some(k) = v.get("top_k").and_then(|x| x.as_u64()) {
        d.top_k = k as usize;
    }
    if v.get("do_sample").and_then(|x| x.as_bool()) == Some(false) {
        d.temperature = 0.0;
    }
    d
}
