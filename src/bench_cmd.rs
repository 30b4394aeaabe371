//! `medgemma-server bench`: throughput and latency of a model of real shapes with
//! random weights (no download), through the real scheduler and executor.
//!
//! Per concurrency level: a warm-up round, then that many requests of random prompt
//! tokens submitted at once, each generating exactly `--max-tokens` tokens. With a
//! multimodal config and `--images N`, also the time to first token of one request
//! carrying N images against the same amount of text alone, and of a follow-up
//! question on the same images (served from the prefix cache).

mod level_json;
mod mem;
mod report;
mod workload;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use medgemma_core::{Executor, Prompt};
use medgemma_model::lookahead::LookaheadStats;
use medgemma_model::{CandleExecutor, DType, Device, Gemma3, KvCacheConfig, ModelConfig, Tensor};
use medgemma_scheduler::{SchedulerConfig, SchedulerHandle};
use serde_json::{json, Value};

use crate::cli::BenchArgs;
use medgemma_scheduler::load::{self as level, Figures};
use report::ImageTtft;
use workload::{Rng, TokenPool};

/// Text tokens of the image time-to-first-token comparison.
const IMAGE_TEXT_TOKENS: usize = 20;
/// Measured repetitions of that comparison, after one warm-up of each kind.
const IMAGE_REPEATS: usize = 3;
/// Tokens each warm-up request generates.
const WARMUP_TOKENS: usize = 4;

/// The model under test and where it runs.
struct Setup {
    name: String,
    config: ModelConfig,
    device: Device,
    device_label: String,
    dtype: DType,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let setup = setup(&args)?;
    let needed_len = check_args(&args, &setup.config)?;
    let (handle, mut engine, vision_ms, ahead) = start_engine(&setup, &args, needed_len)?;

    let pool = TokenPool::new(&setup.config)?;
    let mut rng = Rng::new(args.seed);
    let mut levels = Vec::new();
    for &c in &args.concurrency {
        tracing::info!(concurrency = c, "measuring");
        levels.push(measure_level(&handle, &setup, &args, &pool, &mut rng, c));
    }
    let image = image_ttft(&handle, &setup.config, &pool, &mut rng, args.images);
    handle.shutdown();
    let image = image?.map(|i| ImageTtft { vision_ms, ..i });

    let title = format!(
        "{} (synthetic) on {} [{}], {}; {} prompt + {} output tokens per request{}",
        setup.name,
        medgemma_model::device_name(&setup.device),
        setup.device_label,
        setup.dtype.as_str(),
        args.prompt_tokens,
        args.max_tokens,
        match args.sampled {
            true => ", drawn with temperature 1, top-k 64, top-p 0.95",
            false => ", greedy",
        }
    );
    report::print_table(
        &mut std::io::stdout().lock(),
        &title,
        &levels,
        image.as_ref(),
    )?;
    println!(
        "decode steps run ahead: {} launched, {} used (--no-decode-lookahead: {}){}",
        ahead.launched(),
        ahead.used(),
        args.no_decode_lookahead,
        match ahead.failed() {
            true => "; turned off after a failed check or launch (see the warning)",
            false => "",
        }
    );
    engine["decode_lookahead"] = json!({
        "launched": ahead.launched(),
        "used": ahead.used(),
        "failed": ahead.failed(),
    });
    if let Some(path) = &args.json {
        let doc = document(&setup, &args, engine, &levels, image.as_ref());
        report::write_json(path, &doc)?;
    }
    let bad: usize = levels.iter().map(|f| f.incomplete).sum();
    if bad > 0 {
        bail!("{bad} request(s) failed or stopped short (see the table)");
    }
    Ok(())
}

/// Builds the model on the device, allocates the KV cache and starts the engine
/// thread; returns its handle, what the build took (for the JSON), the vision
/// tower's time alone for `--images` images and the run-ahead counts.
fn start_engine(
    setup: &Setup,
    args: &BenchArgs,
    needed_len: usize,
) -> Result<(SchedulerHandle, Value, Option<f64>, Arc<LookaheadStats>)> {
    let max_c = args.concurrency.iter().copied().max().unwrap_or(1);
    let before = mem::used_now(&setup.device);
    let t = Instant::now();
    let model = medgemma_model::synthetic_model(setup.config.clone(), setup.dtype, &setup.device)
        .context("building the synthetic model")?;
    setup.device.synchronize()?;
    let build_s = t.elapsed().as_secs_f64();
    let weights_bytes = mem::used_now(&setup.device)
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before));
    let vision_ms = time_vision(&model, args.images, &setup.device)?;
    let kv = KvCacheConfig {
        block_size: args.block_size,
        budget: crate::load::kv_budget(
            &setup.device,
            args.kv_cache_bytes,
            args.gpu_memory_utilization,
        ),
        max_num_seqs: max_c,
        max_model_len: Some(needed_len),
        max_num_batched_tokens: args.max_num_batched_tokens,
        encoder_cache_bytes: KvCacheConfig::default().encoder_cache_bytes,
    };
    let executor = CandleExecutor::new(model, &kv)
        .context("allocating the KV cache")?
        .with_decode_replay(crate::load::decode_replay(args.enforce_eager))
        .with_lookahead(!args.no_decode_lookahead);
    let layout = executor.kv_layout();
    let ahead = executor.lookahead_stats();
    tracing::info!(build_s, blocks = layout.num_blocks, "synthetic model ready");
    let handle = SchedulerHandle::spawn(
        SchedulerConfig {
            max_num_seqs: max_c,
            max_waiting: max_c + 8,
            max_num_batched_tokens: args.max_num_batched_tokens,
            max_model_len: layout.max_seq_len,
            // Random prompts share no block, so the levels compute every prompt;
            // only the image follow-up is meant to find its earlier request.
            prefix_caching: true,
        },
        move || executor,
    );
    let engine = json!({
        "build_s": build_s,
        "vision_encode_ms": vision_ms,
        "weights_bytes": weights_bytes,
        "kv_cache": {
            "num_blocks": layout.num_blocks,
            "block_size": layout.block_size,
            "bytes": layout.pool_bytes(),
            "max_model_len": layout.max_seq_len,
        },
    });
    Ok((handle, engine, vision_ms, ahead))
}

fn setup(args: &BenchArgs) -> Result<Setup> {
    let (name, config) = match medgemma_model::synthetic::preset(&args.synthetic) {
        Some(c) => (args.synthetic.clone(), c),
        None => {
            let path = std::path::Path::new(&args.synthetic);
            if !path.is_file() {
                bail!(
                    "--synthetic {:?} is neither a preset ({}) nor a config.json file",
                    args.synthetic,
                    medgemma_model::synthetic::PRESETS.join(", ")
                );
            }
            (args.synthetic.clone(), ModelConfig::from_file(path)?)
        }
    };
    medgemma_model::kernels::disable(&args.disable_kernels)?;
    let device = crate::load::device(&args.device)?;
    let dtype = crate::load::dtype(&args.dtype, &device)?;
    let device_label = match (device.is_cuda(), args.device.trim()) {
        (false, _) => "cpu".to_string(),
        (true, "auto" | "cuda") => "cuda:0".to_string(),
        (true, spec) => spec.to_string(),
    };
    Ok(Setup {
        name,
        config,
        device,
        device_label,
        dtype,
    })
}

/// Checks the flags against each other and the model; returns the longest
/// sequence a request of this run needs.
fn check_args(args: &BenchArgs, cfg: &ModelConfig) -> Result<usize> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency needs levels of at least 1, as in 1,8,64");
    }
    if args.prompt_tokens == 0 || args.max_tokens == 0 || args.max_num_batched_tokens == 0 {
        bail!("--prompt-tokens, --max-tokens and --max-num-batched-tokens must be at least 1");
    }
    let mut needed = args.prompt_tokens + args.max_tokens;
    if args.images > 0 && cfg.multimodal.is_none() {
        tracing::warn!("--images is ignored: the config has no vision tower");
    }
    if let (Some(mm), true) = (&cfg.multimodal, args.images > 0) {
        let len = workload::image_prompt_len(IMAGE_TEXT_TOKENS, args.images, mm);
        if len > args.max_num_batched_tokens {
            bail!(
                "--images {}: the image prompt ({len} tokens) must fit in one step \
                 (--max-num-batched-tokens {})",
                args.images,
                args.max_num_batched_tokens
            );
        }
        // The follow-up carries as much text again.
        needed = needed.max(len + IMAGE_TEXT_TOKENS + 1);
    }
    let limit = cfg.text.max_position_embeddings;
    if needed > limit {
        bail!("a request needs {needed} positions; the model has {limit}");
    }
    Ok(needed)
}

/// One level: a warm-up round, then the measured round with the peak memory.
fn measure_level(
    handle: &SchedulerHandle,
    setup: &Setup,
    args: &BenchArgs,
    pool: &TokenPool,
    rng: &mut Rng,
    c: usize,
) -> Figures {
    let eos = &setup.config.eos_token_ids;
    let mut round = |tag: &str, tokens: usize| {
        (0..c)
            .map(|i| {
                let prompt = Prompt {
                    token_ids: pool.prompt(rng, args.prompt_tokens),
                    images: Vec::new(),
                };
                let id = format!("bench-{tag}-{c}-{i}");
                let sampling = workload::sampling(args.sampled, args.seed + i as u64);
                workload::sampled_request(id, prompt, tokens, eos, sampling)
            })
            .collect::<Vec<_>>()
    };
    let warmup = round("warmup", WARMUP_TOKENS.min(args.max_tokens));
    let measured = round("run", args.max_tokens);
    level::run(handle, warmup);
    let sampler = mem::PeakSampler::start(&setup.device);
    let traces = level::run(handle, measured);
    let mut figures = level::figures(c, &traces);
    figures.peak_memory = sampler.finish();
    figures
}

/// TTFT of one request with `images` random images plus text against the same
/// amount of text alone (fresh random tokens and pixels for every request, so no
/// cache can answer), and of a follow-up question on the same images: that
/// request again with more text, its earlier tokens and images in the prefix
/// cache; `None` without a vision tower or images.
fn image_ttft(
    handle: &SchedulerHandle,
    cfg: &ModelConfig,
    pool: &TokenPool,
    rng: &mut Rng,
    images: usize,
) -> Result<Option<ImageTtft>> {
    let Some(mm) = cfg.multimodal.as_ref().filter(|_| images > 0) else {
        return Ok(None);
    };
    let eos = &cfg.eos_token_ids;
    let mut fresh = |with_images: bool| -> Prompt {
        let text = pool.prompt(rng, IMAGE_TEXT_TOKENS);
        if with_images {
            workload::image_prompt(&text, images, mm, rng)
        } else {
            Prompt {
                token_ids: text,
                images: Vec::new(),
            }
        }
    };
    first_token_ms(handle, fresh(true), eos)?;
    first_token_ms(handle, fresh(false), eos)?;
    let (mut with, mut without, mut follow_up) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..IMAGE_REPEATS {
        let asked = fresh(true);
        with.push(first_token_ms(handle, asked.clone(), eos)?);
        without.push(first_token_ms(handle, fresh(false), eos)?);
        let mut again = asked;
        again.token_ids.extend(fresh(false).token_ids);
        follow_up.push(first_token_ms(handle, again, eos)?);
    }
    Ok(Some(ImageTtft {
        images,
        text_tokens: IMAGE_TEXT_TOKENS,
        with_images_ms: median(with),
        text_only_ms: median(without),
        follow_up_ms: median(follow_up),
        repetitions: IMAGE_REPEATS,
        vision_ms: None,
    }))
}

/// Milliseconds from submitting a one-token request to its token.
fn first_token_ms(handle: &SchedulerHandle, prompt: Prompt, eos: &[u32]) -> Result<f64> {
    let req = workload::request("bench-image".into(), prompt, 1, eos);
    let traces = level::run(handle, vec![req]);
    let trace = traces.first().context("no trace for the image request")?;
    match (&trace.finish, trace.tokens.first()) {
        (Err(e), _) => bail!("the image TTFT request failed: {e}"),
        (Ok(_), Some(&at)) => Ok(at.duration_since(trace.submitted).as_secs_f64() * 1e3),
        (Ok(_), None) => bail!("the image TTFT request finished without a token"),
    }
}

/// Milliseconds the vision tower and projector take on `images` random images
/// alone (median of `IMAGE_REPEATS` after a warm-up, synchronized): the image
/// TTFT's share that is the vision forward; `None` without a tower or images.
fn time_vision(model: &Gemma3, images: usize, device: &Device) -> Result<Option<f64>> {
    let Some(vision) = model.vision.as_ref().filter(|_| images > 0) else {
        return Ok(None);
    };
    let v = &vision.config.vision;
    let shape = (images, v.num_channels, v.image_size, v.image_size);
    let pixels = Tensor::rand(-1f32, 1f32, shape, device)?;
    let once = || -> Result<f64> {
        let t = Instant::now();
        vision.encode(&pixels)?;
        device.synchronize()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    once()?;
    let times = (0..IMAGE_REPEATS)
        .map(|_| once())
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(median(times)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The JSON document: what ran where, and every figure.
fn document(
    setup: &Setup,
    args: &BenchArgs,
    engine: Value,
    levels: &[Figures],
    image: Option<&ImageTtft>,
) -> Value {
    json!({
        "config": setup.name,
        "synthetic": true,
        "device": {
            "spec": setup.device_label,
            "name": medgemma_model::device_name(&setup.device),
            "compute_capability": medgemma_model::device::compute_capability(&setup.device),
            "memory_total_bytes": medgemma_model::device_memory(&setup.device).map(|(_, t)| t),
        },
        "dtype": setup.dtype.as_str(),
        "shapes": report::shapes(&setup.config),
        "settings": {
            "prompt_tokens": args.prompt_tokens,
            "max_tokens": args.max_tokens,
            "concurrency": args.concurrency,
            "max_num_batched_tokens": args.max_num_batched_tokens,
            "kv_cache_bytes": args.kv_cache_bytes,
            "gpu_memory_utilization": args.gpu_memory_utilization,
            "enforce_eager": args.enforce_eager,
            "decode_lookahead": !args.no_decode_lookahead,
            "sampled": args.sampled,
            "disable_kernels": args.disable_kernels,
            "seed": args.seed,
        },
        "engine": engine,
        "levels": levels.iter().map(level_json::figures_json).collect::<Vec<_>>(),
        "image_ttft": image.map(ImageTtft::json),
        "definitions": report::definitions(),
    })
}
