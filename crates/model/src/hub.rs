//! Where a checkpoint comes from: a local folder, or a Hugging Face hub id that the
//! operator named (the only outbound traffic this server ever makes).
//!
//! Honours HF_TOKEN, HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{ModelError, Result};

/// Files a checkpoint folder may hold besides the weights.
const SIDE_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "special_tokens_map.json",
];

/// Returns a local folder holding the checkpoint `source` names. Downloads are
/// checked against the hub's hashes; with `verify`, a local or cached checkpoint
/// is checked against the manifest written at download.
pub fn resolve(source: &str, revision: Option<&str>, verify: bool) -> Result<PathBuf> {
    let dir = locate(source, revision)?;
    if verify {
        let n = crate::verify::verify_manifest(&dir)?;
        tracing::info!(files = n, "checkpoint files match their manifest");
    }
    Ok(dir)
}

fn locate(source: &str, revision: Option<&str>) -> Result<PathBuf> {
    let path = Path::new(source);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists()
        || source.starts_with('.')
        || source.starts_with('/')
        || source.split('/').count() != 2
    {
        return Err(ModelError::Hub {
            source_name: source.into(),
            msg: "not a checkpoint folder, and not a hub id of the form owner/name".into(),
        });
    }
    let revision = revision.unwrap_or("main").to_string();
    let repo = Repo::with_revision(source.to_string(), RepoType::Model, revision);
    if offline() {
        return from_cache(source, &repo);
    }
    download(source, repo)
}

fn endpoint() -> String {
    std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into())
}

/// The hub's hashes of every file at this revision.
fn hub_hashes(
    source: &str,
    revision: &str,
    token: Option<&str>,
) -> Result<std::collections::BTreeMap<String, crate::verify::HubHashes>> {
    let url = format!(
        "{}/api/models/{source}/revision/{revision}?blobs=true",
        endpoint()
    );
    let mut req = ureq::get(&url).timeout(std::time::Duration::from_secs(30));
    if let Some(t) = token {
        req = req.set("authorization", &format!("Bearer {t}"));
    }
    let err = |msg: String| ModelError::Hub {
        source_name: source.into(),
        msg,
    };
    let info: serde_json::Value = req
        .call()
        .map_err(|e| err(format!("reading the file hashes from the hub: {e}")))?
        .into_json()
        .map_err(|e| err(format!("the hub's file list is unreadable: {e}")))?;
    Ok(crate::verify::parse_hub_hashes(&info))
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"))
}

fn cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) => Cache::new(PathBuf::from(dir)),
        None => Cache::from_env(),
    }
}

fn from_cache(source: &str, repo: &Repo) -> Result<PathBuf> {
    let cached = cache().repo(repo.clone());
    let config = cached.get("config.json").ok_or_else(|| ModelError::Hub {
        source_name: source.into(),
        msg: "HF_HUB_OFFLINE is set and the model is not in the local hub cache".into(),
    })?;
    parent(source, &config)
}

fn parent(source: &str, file: &Path) -> Result<PathBuf> {
    file.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| ModelError::Hub {
            source_name: source.into(),
            msg: "downloaded file has no folder".into(),
        })
}

fn download(source: &str, repo: Repo) -> Result<PathBuf> {
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    let api = ApiBuilder::from_cache(cache())
        .with_token(token.clone())
        .with_progress(true)
        .build()
        .map_err(|e| hub_err(source, e, token.is_some()))?;
    let revision = repo.revision().to_string();
    let repo = api.repo(repo);
    let fetch = |name: &str| {
        repo.get(name)
            .map_err(|e| hub_err(source, e, token.is_some()))
    };
    let config = fetch("config.json")?;
    let mut files = vec!["config.json".to_string()];
    // Optional files: a missing one is normal.
    files.extend(
        SIDE_FILES
            .iter()
            .filter(|f| repo.get(f).is_ok())
            .map(|f| f.to_string()),
    );
    match repo.get("model.safetensors.index.json") {
        Ok(index) => {
            files.push("model.safetensors.index.json".into());
            for name in crate::weights::shard_names(&index)? {
                fetch(&name)?;
                files.push(name);
            }
        }
        Err(_) => {
            fetch("model.safetensors")?;
            files.push("model.safetensors".into());
        }
    }
    let dir = parent(source, &config)?;
    let hashes = hub_hashes(source, &revision, token.as_deref())?;
    crate::verify::verify_against_hub(&dir, &files, &hashes)?;
    crate::verify::write_manifest(&dir, &files)?;
    tracing::info!(
        files = files.len(),
        "downloaded files match the hub's hashes"
    );
    Ok(dir)
}

fn hub_err(source: &str, e: hf_hub::api::sync::ApiError, has_token: bool) -> ModelError {
    let text = e.to_string();
    let gated = text.contains("401") || text.contains("403");
    let msg = match (gated, has_token) {
        (true, false) => format!(
            "{text}: this model is gated; set HF_TOKEN to a token whose account accepted its terms"
        ),
        (true, true) => format!(
            "{text}: check that HF_TOKEN is valid and that its account accepted the model's terms"
        ),
        _ => text,
    };
    ModelError::Hub {
        source_name: source.into(),
        msg,
    }
}
