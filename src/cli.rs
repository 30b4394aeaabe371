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
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate one chat completion for a single user message and print it to stdout.
    Generate(GenerateArgs),
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
    /// Compute dtype: f32, f16, bf16 or auto (f32 on CPU).
    #[arg(long, env = "MEDGEMMA_DTYPE", default_value = "auto")]
    pub dtype: String,
    /// Device: cpu (CUDA arrives with the cuda feature).
    #[arg(long, env = "MEDGEMMA_DEVICE", default_value = "cpu")]
    pub device: String,
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
