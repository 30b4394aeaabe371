//! Command-line interface.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "medgemma-server",
    version,
    about = "OpenAI-compatible inference server for MedGemma (Gemma 3)"
)]
pub struct Cli {
    /// Log filter for stderr (e.g. info, debug, medgemma=trace).
    #[arg(long, global = true, env = "MEDGEMMA_LOG")]
    pub log_level: Option<String>,
    /// A TOML configuration file (see config/default.toml); flags and env vars override it.
    #[arg(long, global = true, env = "MEDGEMMA_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate one chat completion for a single user message and print it to stdout.
    Generate(GenerateArgs),
    /// Serve the OpenAI-compatible HTTP API.
    Serve(ServeArgs),
    /// Show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Measure throughput and latency of a random-weight model of real shapes.
    Bench(BenchArgs),
    /// Check a device against the CPU and transformers' goldens on the fixture checkpoints.
    Check(CheckArgs),
    /// Work with audit logs.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that every line of an audit log follows the one before it.
    Verify(AuditVerifyArgs),
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// The audit log (`--audit-log` of serve).
    pub file: std::path::PathBuf,
    /// The key the log was written with (`--audit-key-file` of serve).
    #[arg(long, env = "MEDGEMMA_AUDIT_KEY_FILE")]
    pub key_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective `serve` configuration (secrets redacted) and where each value came from.
    Print(ServeArgs),
}

/// Where the model comes from and how it runs.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// A checkpoint folder, or a Hugging Face hub id such as google/medgemma-4b-it.
    #[arg(long, env = "MEDGEMMA_MODEL")]
    pub model: String,
    /// Hub revision (branch, tag or commit) when --model is a hub id.
    #[arg(long, env = "MEDGEMMA_REVISION")]
    pub revision: Option<String>,
    /// Check the checkpoint's files against the manifest written at download (offline use).
    #[arg(long, env = "MEDGEMMA_VERIFY")]
    pub verify: bool,
    /// Compute dtype: f32, f16, bf16 or auto (bf16 on GPUs of compute capability 8.0
    /// and newer, f16 on older ones, f32 on CPU).
    #[arg(long, env = "MEDGEMMA_DTYPE", default_value = "auto")]
    pub dtype: String,
    /// Device: auto (CUDA device 0 in a CUDA build with a GPU visible, else the CPU),
    /// cpu, cuda or cuda:N.
    #[arg(long, env = "MEDGEMMA_DEVICE", default_value = "auto")]
    pub device: String,
    /// Fused CUDA kernels to leave unused, comma-separated (paged-decode, paged-rows,
    /// add-rmsnorm, qk-rope-write, gelu-mul, gemv, argmax, softmax, bias-epilogue,
    /// vision-attention, topk):
    /// their steps run on the unfused ops.
    #[arg(long, env = "MEDGEMMA_DISABLE_KERNELS", value_delimiter = ',')]
    pub disable_kernels: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The user message.
    #[arg(long)]
    pub prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Top-p (nucleus) sampling; 1 disables it.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Top-k sampling; 0 disables it.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Seed for sampling.
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on.
    #[arg(long, env = "MEDGEMMA_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, env = "MEDGEMMA_PORT", default_value_t = 8000)]
    pub port: u16,
    /// The model name clients use; defaults to --model.
    #[arg(long, env = "MEDGEMMA_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    /// API keys clients must send as `Authorization: Bearer <key>` (repeat, or comma-separate in the env var).
    #[arg(
        long = "api-key",
        env = "MEDGEMMA_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// Longest sequence (prompt plus output); defaults to the model's max_position_embeddings.
    #[arg(long, env = "MEDGEMMA_MAX_MODEL_LEN")]
    pub max_model_len: Option<usize>,
    /// Sequences running at once.
    #[arg(long, env = "MEDGEMMA_MAX_NUM_SEQS", default_value_t = 64)]
    pub max_num_seqs: usize,
    /// Tokens per engine step across all sequences.
    #[arg(long, env = "MEDGEMMA_MAX_NUM_BATCHED_TOKENS", default_value_t = 2048)]
    pub max_num_batched_tokens: usize,
    /// Requests that may wait for a slot before new ones get 429.
    #[arg(long, env = "MEDGEMMA_MAX_WAITING", default_value_t = 256)]
    pub max_waiting: usize,
    /// KV cache size in bytes, allocated once at start-up (CPU default 4 GiB; on a GPU
    /// it overrides --gpu-memory-utilization).
    #[arg(long, env = "MEDGEMMA_KV_CACHE_BYTES")]
    pub kv_cache_bytes: Option<u64>,
    /// Share of the GPU's memory the server may use (weights, activations, KV cache).
    #[arg(long, env = "MEDGEMMA_GPU_MEMORY_UTILIZATION", default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// Tokens per KV cache block.
    #[arg(long, env = "MEDGEMMA_BLOCK_SIZE", default_value_t = 16)]
    pub block_size: usize,
    /// Run every step eagerly: no CUDA graphs (on a GPU, decode steps are captured
    /// once per batch shape and replayed).
    #[arg(long, env = "MEDGEMMA_ENFORCE_EAGER")]
    pub enforce_eager: bool,
    /// Wait for each replayed greedy decode step's tokens before queuing the next
    /// (by default the next step is queued on the GPU first, so the GPU does not
    /// wait while the host hands out tokens and plans).
    #[arg(long, env = "MEDGEMMA_NO_DECODE_LOOKAHEAD")]
    pub no_decode_lookahead: bool,
    /// Compute every prompt in full: no reuse of the KV blocks of earlier requests'
    /// identical prefixes (by default a repeated system prompt, an earlier turn of
    /// the conversation or the same image is computed once; requests share cached
    /// blocks only when their `cache_salt` is the same).
    #[arg(long, env = "MEDGEMMA_NO_PREFIX_CACHING")]
    pub no_prefix_caching: bool,
    /// Bytes of image features kept on the device for reuse, so the same image in
    /// another request skips the vision tower (0 keeps none).
    #[arg(long, env = "MEDGEMMA_ENCODER_CACHE_BYTES", default_value_t = 64 << 20)]
    pub encoder_cache_bytes: u64,
    /// Default seed for requests that give none.
    #[arg(long, env = "MEDGEMMA_SEED")]
    pub seed: Option<u64>,
    /// Hosts from which http(s) image URLs may be fetched (off by default).
    #[arg(long, env = "MEDGEMMA_ALLOWED_IMAGE_HOSTS", value_delimiter = ',')]
    pub allowed_image_hosts: Vec<String>,
    /// Seconds in-flight requests may run on after SIGTERM/SIGINT before they are ended.
    #[arg(long, env = "MEDGEMMA_SHUTDOWN_TIMEOUT", default_value_t = 30.0)]
    pub shutdown_timeout: f64,
    /// Allowed CORS origins (off unless set; `*` allows any).
    #[arg(long, env = "MEDGEMMA_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// A file of API keys, one per line, each optionally followed by its own limits and
    /// queue priority (`max_concurrent=N requests_per_minute=N priority=N`, lower first);
    /// blank lines and `#` comments ignored.
    #[arg(long, env = "MEDGEMMA_API_KEY_FILE")]
    pub api_key_file: Option<std::path::PathBuf>,
    /// Generations one API key may have in flight (keys without their own limit).
    #[arg(long, env = "MEDGEMMA_KEY_MAX_CONCURRENT", value_parser = clap::value_parser!(u64).range(1..))]
    pub key_max_concurrent: Option<u64>,
    /// Generations one API key may start per minute (keys without their own limit).
    #[arg(long, env = "MEDGEMMA_KEY_REQUESTS_PER_MINUTE", value_parser = clap::value_parser!(u32).range(1..))]
    pub key_requests_per_minute: Option<u32>,
    /// Append one JSON line per request (who, what, when; never content) to this file,
    /// each line linked to the one before by a hash (`medgemma-server audit verify`).
    #[arg(long, env = "MEDGEMMA_AUDIT_LOG")]
    pub audit_log: Option<std::path::PathBuf>,
    /// A secret (at least 16 bytes) that keys the audit log's links (HMAC-SHA256), so
    /// that nobody without it can rewrite the log and mend the chain.
    #[arg(long, env = "MEDGEMMA_AUDIT_KEY_FILE")]
    pub audit_key_file: Option<std::path::PathBuf>,
    /// Seconds a generation may run before it is ended with a 504 (0: no limit).
    #[arg(long, env = "MEDGEMMA_REQUEST_TIMEOUT", default_value_t = 600.0)]
    pub request_timeout: f64,
    /// Serve HTTPS with this PEM certificate chain (with --ssl-keyfile).
    #[arg(long, env = "MEDGEMMA_SSL_CERTFILE")]
    pub ssl_certfile: Option<std::path::PathBuf>,
    /// The PEM private key of --ssl-certfile.
    #[arg(long, env = "MEDGEMMA_SSL_KEYFILE")]
    pub ssl_keyfile: Option<std::path::PathBuf>,
    /// Largest encoded image accepted, in bytes.
    #[arg(long, env = "MEDGEMMA_MAX_IMAGE_BYTES", default_value_t = 20 * 1024 * 1024)]
    pub max_image_bytes: usize,
    /// Largest image accepted, in pixels (checked from the header, before decoding).
    #[arg(long, env = "MEDGEMMA_MAX_IMAGE_PIXELS", default_value_t = 50_000_000)]
    pub max_image_pixels: u64,
    /// Pan-and-scan crops for every image (requests may still set do_pan_and_scan).
    #[arg(long, env = "MEDGEMMA_PAN_AND_SCAN")]
    pub pan_and_scan: bool,
    /// Largest request body in bytes.
    #[arg(long, env = "MEDGEMMA_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
}

/// `bench`: a synthetic model (real shapes, random weights) under concurrent load.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A preset (medgemma-4b, medgemma-27b) or the path of a config.json.
    #[arg(long, value_name = "PRESET|CONFIG_JSON")]
    pub synthetic: String,
    /// Device: cpu, auto, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Compute dtype: auto, bf16, f16 or f32.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Fused CUDA kernels to leave unused, comma-separated (as for `serve`): to
    /// measure what they gain.
    #[arg(long, value_delimiter = ',')]
    pub disable_kernels: Vec<String>,
    /// Concurrency levels to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 64])]
    pub concurrency: Vec<usize>,
    /// Images in one request for the image time-to-first-token comparison (0 skips it).
    #[arg(long, default_value_t = 0)]
    pub images: usize,
    /// Prompt tokens per request.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens generated per request (end-of-sequence ignored).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// KV cache size in bytes (CPU default 4 GiB; on a GPU it overrides --gpu-memory-utilization).
    #[arg(long)]
    pub kv_cache_bytes: Option<u64>,
    /// Share of the GPU's memory for weights, activations and the KV cache.
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// Tokens per engine step across all sequences.
    #[arg(long, default_value_t = 2048)]
    pub max_num_batched_tokens: usize,
    /// Tokens per KV cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Run every step eagerly: no CUDA graphs.
    #[arg(long)]
    pub enforce_eager: bool,
    /// Read each replayed decode step's tokens before queuing the next.
    #[arg(long)]
    pub no_decode_lookahead: bool,
    /// Draw tokens as a request that leaves MedGemma's defaults alone does
    /// (temperature 1, top-k 64, top-p 0.95, seeded) instead of greedily.
    #[arg(long)]
    pub sampled: bool,
    /// Seed of the random prompts and pixels.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// `check`: the device's numerics against the CPU's and transformers' on the fixtures.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Folder of fixture checkpoints; each with a goldens.json is checked.
    #[arg(long, default_value = "tests/fixtures")]
    pub fixtures: std::path::PathBuf,
    /// Device to check: cpu, auto, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Largest relative L2 difference, in bf16 (f16 on GPUs older than sm_80), of any
    /// prefill stage (embedding, layer, head) on the device against the same stage on
    /// the CPU from the same input.
    #[arg(long, default_value_t = 2e-2)]
    pub tolerance: f64,
}
