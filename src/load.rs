//! Loads a checkpoint (folder or hub id) into the model and the text processor.

use anyhow::{bail, Context, Result};
use medgemma_model::{
    CandleExecutor, DType, DecodeReplay, Device, Gemma3, KvBudget, KvCacheConfig,
};
use medgemma_preprocess::TextProcessor;

use medgemma_http::SamplingDefaults;

use crate::cli::ModelArgs;

pub struct Loaded {
    pub executor: CandleExecutor,
    pub text: TextProcessor,
    pub defaults: SamplingDefaults,
    pub dir: std::path::PathBuf,
}

/// The `--device` value as a device: cpu, auto, cuda or cuda:N.
pub fn device(name: &str) -> Result<Device> {
    Ok(medgemma_model::parse_device(name)?)
}

/// The `--dtype` value on `device`: `auto` is f32 on the CPU, bf16 on GPUs with
/// compute capability 8.0 or newer and f16 on older ones; bf16 on an older GPU is
/// refused (candle's bf16 kernels need sm_80).
pub fn dtype(name: &str, device: &Device) -> Result<DType> {
    if name == "auto" {
        return Ok(medgemma_model::auto_dtype(device));
    }
    let dtype = medgemma_model::parse_dtype(name)?;
    if dtype == DType::BF16 {
        if let Some((major, minor)) = medgemma_model::device::compute_capability(device) {
            if major < 8 {
                bail!(
                    "bf16 needs a GPU of compute capability 8.0 or newer; {} is {major}.{minor}: \
                     use --dtype f16 or f32",
                    medgemma_model::device_name(device)
                );
            }
        }
    }
    Ok(dtype)
}

/// How decode steps run: replayed from CUDA graphs (on a GPU) unless `--enforce-eager`.
pub fn decode_replay(enforce_eager: bool) -> DecodeReplay {
    if enforce_eager {
        DecodeReplay::Off
    } else {
        DecodeReplay::CudaGraphs
    }
}

/// Default KV cache on CPU, where no share of device memory applies.
pub const CPU_KV_CACHE_BYTES: u64 = 4 << 30;

/// The KV budget: the bytes given, else a share of a GPU's memory, else the CPU default.
pub fn kv_budget(device: &Device, bytes: Option<u64>, gpu_memory_utilization: f64) -> KvBudget {
    match bytes {
        Some(b) => KvBudget::Bytes(b),
        None if device.is_cpu() => KvBudget::Bytes(CPU_KV_CACHE_BYTES),
        None => KvBudget::DeviceFraction(gpu_memory_utilization),
    }
}

/// Loads the checkpoint and allocates the KV cache; `kv` gets its budget from
/// `kv_budget` unless the caller set one.
pub fn load(args: &ModelArgs, kv: impl FnOnce(&Device) -> KvCacheConfig) -> Result<Loaded> {
    medgemma_model::kernels::disable(&args.disable_kernels)?;
    let device = device(&args.device)?;
    let dtype = dtype(&args.dtype, &device)?;
    let dir = medgemma_model::hub::resolve(&args.model, args.revision.as_deref(), args.verify)?;
    tracing::info!(model = %dir.display(), ?dtype, "loading checkpoint");
    let model = Gemma3::load(&dir, dtype, &device)?;
    let text = TextProcessor::load(&dir, &model.config.eos_token_ids)
        .with_context(|| format!("loading the tokenizer of {}", dir.display()))?;
    let defaults = sampling_defaults(&dir.join("generation_config.json"));
    let executor = CandleExecutor::new(model, &kv(&device)).context("allocating the KV cache")?;
    Ok(Loaded {
        executor,
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
