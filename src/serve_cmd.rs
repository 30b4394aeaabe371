//! `medgemma-server serve`: binds the port at once (so /health answers while the
//! model loads), loads the model on a thread, then starts the engine.

use std::sync::Arc;

use anyhow::{Context, Result};
use medgemma_core::Executor;
use medgemma_http::access::ClientAddr;
use medgemma_http::audit::{AuditLog, Chain};
use medgemma_http::quota::{parse_key_line, KeyLimits};
use medgemma_http::{AppState, CheckpointImages, Engine, HttpLimits, ImageSettings, StateOptions};
use medgemma_model::KvCacheConfig;
use medgemma_scheduler::{SchedulerConfig, SchedulerHandle};

use crate::cli::ServeArgs;

pub fn run(args: ServeArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(args));
    // A model still loading must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

async fn serve(args: ServeArgs) -> Result<()> {
    let name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| args.model.model.clone());
    let images = ImageSettings {
        allowed_hosts: args.allowed_image_hosts.clone(),
        max_bytes: args.max_image_bytes,
        ..ImageSettings::default()
    };
    let (api_keys, key_limits) = keys(&args)?;
    let audit = match &args.audit_log {
        Some(p) => {
            let chain = audit_chain(args.audit_key_file.as_deref())?;
            Some(
                AuditLog::open(p, chain)
                    .with_context(|| format!("opening the audit log {}", p.display()))?,
            )
        }
        None if args.audit_key_file.is_some() => {
            anyhow::bail!("--audit-key-file keys the audit log: give --audit-log too")
        }
        None => None,
    };
    let options = StateOptions {
        api_keys,
        key_limits,
        images,
        seed: args.seed,
        audit,
        cors_origins: args.cors_origins.clone(),
        request_timeout: (args.request_timeout > 0.0)
            .then(|| std::time::Duration::from_secs_f64(args.request_timeout)),
    };
    let state = AppState::new(name, options);
    let limits = HttpLimits {
        max_body_bytes: args.max_body_bytes,
    };
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let tls = match (&args.ssl_certfile, &args.ssl_keyfile) {
        (Some(cert), Some(key)) => Some(medgemma_http::tls::server_config(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!("--ssl-certfile and --ssl-keyfile go together"),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    // One line on stdout that scripts and tests can wait for.
    println!("listening on {scheme}://{addr}");
    tracing::info!(%addr, scheme, "listening");
    let grace = std::time::Duration::from_secs_f64(args.shutdown_timeout.max(0.0));
    let mut loader = spawn_loader(args, state.clone());
    let app = medgemma_http::router(state.clone(), &limits);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    tokio::spawn(end_after_grace(stop_rx, state.clone(), grace));
    match tls {
        Some(config) => {
            serve_on(
                medgemma_http::tls::TlsListener::new(listener, config)?,
                app,
                signal,
                &mut loader,
            )
            .await?
        }
        None => serve_on(listener, app, signal, &mut loader).await?,
    }
    if let Some(engine) = state.engine.get() {
        engine.scheduler.shutdown();
    }
    Ok(())
}

/// Serves until the stop signal (then lets connections drain); a loader error ends it.
async fn serve_on<L>(
    listener: L,
    app: axum::Router,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
    loader: &mut tokio::task::JoinHandle<Result<()>>,
) -> Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    ClientAddr: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let app = app.into_make_service_with_connect_info::<ClientAddr>();
    let server = std::future::IntoFuture::into_future(
        axum::serve(listener, app).with_graceful_shutdown(signal),
    );
    tokio::pin!(server);
    let mut loading = true;
    loop {
        tokio::select! {
            r = &mut server => return r.context("serving HTTP"),
            r = &mut *loader, if loading => {
                r.context("model loader")??;
                loading = false;
            }
        }
    }
}

/// Loads the model off the async runtime; an error ends the server.
fn spawn_loader(args: ServeArgs, state: Arc<AppState>) -> tokio::task::JoinHandle<Result<()>> {
    tokio::task::spawn_blocking(move || {
        let loaded = crate::load::load(&args.model, |device| KvCacheConfig {
            block_size: args.block_size,
            budget: crate::load::kv_budget(
                device,
                args.kv_cache_bytes,
                args.gpu_memory_utilization,
            ),
            max_num_seqs: args.max_num_seqs.max(1),
            max_model_len: args.max_model_len,
            max_num_batched_tokens: args.max_num_batched_tokens.max(1),
            encoder_cache_bytes: args.encoder_cache_bytes,
        })?;
        let max_model_len = loaded.executor.kv_layout().max_seq_len;
        let vocab_size = loaded.executor.model().config.text.vocab_size;
        let config = SchedulerConfig {
            max_num_seqs: args.max_num_seqs.max(1),
            max_waiting: args.max_waiting,
            max_num_batched_tokens: args.max_num_batched_tokens.max(1),
            max_model_len,
            prefix_caching: !args.no_prefix_caching,
        };
        let text = Arc::new(loaded.text);
        let vision = match loaded.executor.model().config.multimodal {
            Some(_) => Some(checkpoint_images(&loaded.dir, &text, &args)?),
            None => None,
        };
        let executor = loaded
            .executor
            .with_decode_replay(crate::load::decode_replay(args.enforce_eager))
            .with_lookahead(!args.no_decode_lookahead);
        let scheduler = SchedulerHandle::spawn(config, move || executor);
        let engine = Engine {
            scheduler,
            text,
            vocab_size,
            max_model_len,
            defaults: loaded.defaults,
            vision,
        };
        if state.engine.set(engine).is_err() {
            anyhow::bail!("the engine was set twice");
        }
        tracing::info!(max_model_len, "model ready");
        Ok(())
    })
}

/// The image side of a multimodal checkpoint.
fn checkpoint_images(
    dir: &std::path::Path,
    text: &Arc<medgemma_preprocess::TextProcessor>,
    args: &ServeArgs,
) -> Result<Arc<dyn medgemma_http::ImagePreprocessor>> {
    let mut processor = medgemma_preprocess::ImageProcessor::load(dir)
        .context("reading the image processor's settings")?;
    processor.limits = medgemma_preprocess::ImageLimits {
        max_bytes: args.max_image_bytes,
        max_pixels: args.max_image_pixels,
    };
    if args.pan_and_scan {
        processor.pan_and_scan.enabled = true;
    }
    let tokens =
        medgemma_preprocess::ImageTokens::load(dir, text).context("reading the image tokens")?;
    Ok(Arc::new(CheckpointImages {
        processor,
        tokens,
        text: text.clone(),
    }))
}

/// API keys from a file: one per line, blank lines and `#` comments ignored.
/// The API keys (flags, then the key file) and each one's limits: its own from
/// the key file, else the `--key-*` defaults.
fn keys(args: &ServeArgs) -> Result<(Vec<String>, Vec<KeyLimits>)> {
    let defaults = KeyLimits {
        max_concurrent: args.key_max_concurrent.map(|n| n as usize),
        requests_per_minute: args.key_requests_per_minute,
        priority: None,
    };
    let mut keys: Vec<(String, KeyLimits)> = args
        .api_keys
        .iter()
        .filter(|k| !k.is_empty())
        .map(|k| (k.clone(), KeyLimits::default()))
        .collect();
    if let Some(path) = &args.api_key_file {
        keys.extend(read_key_file(path)?);
    }
    for (i, (key, _)) in keys.iter().enumerate() {
        if keys[..i].iter().any(|(k, _)| k == key) {
            anyhow::bail!(
                "an API key is given twice (key {} of the flags and the key file, in order); \
                 give each key once, with its limits",
                i + 1
            );
        }
    }
    let limited =
        defaults != KeyLimits::default() || keys.iter().any(|(_, l)| *l != KeyLimits::default());
    if limited && keys.is_empty() {
        anyhow::bail!("per-key limits need API keys (--api-key or --api-key-file)");
    }
    Ok(keys.into_iter().map(|(k, l)| (k, l.or(defaults))).unzip())
}

/// One key per line, optionally followed by its limits and priority
/// (`max_concurrent=N`, `requests_per_minute=N`, `priority=N`); blank lines and
/// `#` comments are ignored. Errors
/// name the line, never the key.
fn read_key_file(path: &std::path::Path) -> Result<Vec<(String, KeyLimits)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the API key file {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| (i, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            parse_key_line(l).map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// After a stop signal, in-flight requests have `grace` to finish; then the engine
/// ends the rest, each with a clear error, and the server can exit.
async fn end_after_grace(
    mut stop: tokio::sync::watch::Receiver<bool>,
    state: Arc<AppState>,
    grace: std::time::Duration,
) {
    if stop.wait_for(|s| *s).await.is_err() {
        return;
    }
    tracing::info!(
        grace_s = grace.as_secs_f64(),
        "stopping: no new connections; in-flight requests may finish"
    );
    tokio::time::sleep(grace).await;
    if let Some(engine) = state.engine.get() {
        tracing::info!("grace period over: ending the remaining requests");
        engine.scheduler.abort_all();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// The audit log's chain: keyed by the contents of `key_file` (surrounding
/// whitespace trimmed) when one is given.
pub fn audit_chain(key_file: Option<&std::path::Path>) -> Result<Chain> {
    let key = match key_file {
        Some(p) => Some(
            std::fs::read(p).with_context(|| format!("reading the audit key {}", p.display()))?,
        ),
        None => None,
    };
    let key = key.as_deref().map(|k| k.trim_ascii());
    Chain::new(key).map_err(|e| anyhow::anyhow!(e))
}
