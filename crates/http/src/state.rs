//! What every handler shares.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use medgemma_preprocess::TextProcessor;
use medgemma_scheduler::SchedulerHandle;

use crate::error::ApiError;
use crate::images::ImageSettings;
use crate::metrics::Metrics;

/// Sampling defaults from the checkpoint's generation_config.json, used where a
/// request leaves a field out.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingDefaults {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub max_tokens: Option<usize>,
}

impl Default for SamplingDefaults {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_tokens: None,
        }
    }
}

/// The loaded model, set once loading ends.
pub struct Engine {
    pub scheduler: SchedulerHandle,
    pub text: Arc<TextProcessor>,
    pub vocab_size: usize,
    pub max_model_len: usize,
    pub defaults: SamplingDefaults,
    /// Turns images into model inputs; `None` for a text-only model.
    pub vision: Option<Arc<dyn crate::images::ImagePreprocessor>>,
}

pub struct AppState {
    pub model_name: String,
    pub engine: OnceLock<Engine>,
    pub metrics: Metrics,
    pub api_keys: Vec<String>,
    /// Each key's limits and use, in the order of `api_keys`.
    pub quotas: Vec<crate::quota::KeyQuota>,
    pub images: ImageSettings,
    /// Seed for requests that give none, when the operator set one.
    pub seed: Option<u64>,
    pub audit: Option<crate::audit::AuditLog>,
    /// Origins allowed by CORS; empty: CORS is off.
    pub cors_origins: Vec<String>,
    /// Longest a generation may run.
    pub request_timeout: Option<std::time::Duration>,
    ids: AtomicU64,
    started: u64,
}

/// Operator settings of the HTTP layer.
#[derive(Default)]
pub struct StateOptions {
    pub api_keys: Vec<String>,
    /// The limits of each key, in the order of `api_keys` (missing: none).
    pub key_limits: Vec<crate::quota::KeyLimits>,
    pub images: ImageSettings,
    pub seed: Option<u64>,
    pub audit: Option<crate::audit::AuditLog>,
    pub cors_origins: Vec<String>,
    pub request_timeout: Option<std::time::Duration>,
}

impl AppState {
    pub fn new(model_name: String, options: StateOptions) -> Arc<Self> {
        let StateOptions {
            api_keys,
            key_limits,
            images,
            seed,
            audit,
            cors_origins,
            request_timeout,
        } = options;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let quotas = (0..api_keys.len())
            .map(|i| crate::quota::KeyQuota::new(key_limits.get(i).copied().unwrap_or_default()))
            .collect();
        Arc::new(Self {
            model_name,
            engine: OnceLock::new(),
            metrics: Metrics::default(),
            api_keys,
            quotas,
            images,
            seed,
            audit,
            cors_origins,
            request_timeout,
            ids: AtomicU64::new(0),
            started,
        })
    }

    /// The key id of a request's valid API key, if it sent one.
    pub fn key_id(&self, headers: &axum::http::HeaderMap) -> Option<crate::access::KeyId> {
        self.key_index(headers)
            .map(|i| crate::access::KeyId::of(&self.api_keys[i]))
    }

    /// Which of `api_keys` a request sent, if any.
    pub fn key_index(&self, headers: &axum::http::HeaderMap) -> Option<usize> {
        let given = crate::auth::bearer(headers)?;
        self.api_keys
            .iter()
            .position(|k| crate::auth::constant_time_eq(given.as_bytes(), k.as_bytes()))
    }

    pub fn engine(&self) -> Result<&Engine, ApiError> {
        self.engine.get().ok_or_else(ApiError::not_ready)
    }

    /// When the server started, in Unix seconds: the model object's `created`.
    pub fn started_unix(&self) -> u64 {
        self.started / 1_000_000_000
    }

    /// A fresh request id with the given prefix (`chatcmpl`, `cmpl`).
    pub fn request_id(&self, prefix: &str) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:x}{:06x}", self.started & 0xffff_ffff, n)
    }

    /// Checks the requested model name against the served one.
    pub fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            None => Ok(()),
            Some(m) if m == self.model_name => Ok(()),
            Some(m) => Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                format!(
                    "the model '{m}' does not exist; this server serves '{}'",
                    self.model_name
                ),
            )
            .with_code("model_not_found")),
        }
    }
}

/// Runs request preparation (templates, image decoding, tokenization: CPU work)
/// on a blocking thread, off the async workers.
pub async fn prepare<T, F>(
    state: &Arc<AppState>,
    body: axum::body::Bytes,
    f: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&AppState, &[u8]) -> Result<T, ApiError> + Send + 'static,
{
    let st = state.clone();
    tokio::task::spawn_blocking(move || f(&st, &body))
        .await
        .unwrap_or_else(|e| {
            Err(ApiError::internal(format!(
                "request preparation failed: {e}"
            )))
        })
}
