//! `medgemma-server generate`: one user message in, the completion on stdout.

use std::io::Write;

use anyhow::Result;
use medgemma_core::{Executor, SamplingParams};
use medgemma_model::KvCacheConfig;
use medgemma_preprocess::TemplateMessage;

use crate::cli::GenerateArgs;

pub fn run(args: GenerateArgs) -> Result<()> {
    let mut loaded = crate::load::load(&args.model, |device| KvCacheConfig {
        budget: crate::load::kv_budget(device, None, 0.9),
        max_num_seqs: 1,
        ..KvCacheConfig::default()
    })?;
    let prompt = loaded
        .text
        .render_chat(&[TemplateMessage::text("user", &args.prompt)], true)?;
    let ids = loaded.text.encode(&prompt)?;
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed,
        ..SamplingParams::default()
    };
    let max_len = loaded.executor.kv_layout().max_seq_len;
    if ids.len() + args.max_tokens > max_len {
        anyhow::bail!(
            "the prompt has {} tokens and --max-tokens is {}: together they pass the limit of {max_len} (the model's, or what the KV cache holds)",
            ids.len(),
            args.max_tokens
        );
    }
    let stop = loaded.text.special().stop_token_ids.clone();
    let out = medgemma_model::generate(
        &mut loaded.executor,
        0,
        &ids,
        &sampling,
        &stop,
        args.max_tokens,
    )?;
    tracing::info!(
        prompt_tokens = ids.len(),
        completion_tokens = out.tokens.len(),
        finish = out.finish_reason.as_str(),
        "generated"
    );
    let text = loaded.text.decode(&out.tokens, true)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    Ok(())
}
