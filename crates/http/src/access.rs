//! Who called what, when: one log line per request and an optional audit file of
//! JSON lines (see `audit`). Both carry the request id, a key id (never the key), the route,
//! status, latency and token counts, and never any request or response content.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::audit::AuditEntry;
use crate::generation::Totals;
use crate::state::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The peer address of a connection, for the audit log (plain TCP and TLS alike).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// An API key's public name: a hash prefix, stable across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyId(pub String);

impl KeyId {
    pub fn of(key: &str) -> Self {
        // FNV-1a: enough to tell keys apart in logs, says nothing about the key.
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        Self(format!("key-{:08x}", hash >> 32))
    }
}

/// Token counts a handler attaches to its response.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenCounts {
    pub prompt_tokens: usize,
    pub completion_tokens: Option<usize>,
}

/// Attaches token counts to a response for the access log.
pub fn with_counts(mut resp: Response, counts: TokenCounts) -> Response {
    resp.extensions_mut().insert(counts);
    resp
}

/// The token totals a streamed response's choices add to as they finish, read
/// once its body has ended: the access log line and audit entry of a stream are
/// written then.
#[derive(Clone)]
struct StreamedCompletion(Arc<Mutex<Totals>>);

/// Attaches the prompt tokens of a streamed response and the totals its finished
/// choices add their completion tokens to.
pub fn with_streamed_counts(
    resp: Response,
    prompt_tokens: usize,
    totals: Arc<Mutex<Totals>>,
) -> Response {
    let counts = TokenCounts {
        prompt_tokens,
        completion_tokens: None,
    };
    let mut resp = with_counts(resp, counts);
    resp.extensions_mut().insert(StreamedCompletion(totals));
    resp
}

const ROUTES: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/tokenize",
    "/detokenize",
    "/health",
    "/ready",
    "/metrics",
];

/// A bounded route label (unknown paths are "other": no unbounded label sets).
pub fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("other")
}

fn request_id(req: &Request, state: &AppState) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map(String::from)
        .unwrap_or_else(|| state.request_id("req"))
}

/// What one access log line and audit entry say, but the completion tokens of a
/// stream, known only at its end.
struct Line {
    state: Arc<AppState>,
    started: Instant,
    id: String,
    key: Option<KeyId>,
    client: Option<String>,
    method: String,
    route: &'static str,
    status: u16,
    counts: Option<TokenCounts>,
}

impl Line {
    fn write(&self, completion_tokens: Option<usize>) {
        let latency_ms = self.started.elapsed().as_secs_f64() * 1e3;
        let prompt_tokens = self.counts.map(|c| c.prompt_tokens);
        let key_id = self.key.as_ref().map(|k| k.0.as_str());
        tracing::info!(
            request_id = %self.id,
            key_id,
            method = %self.method,
            route = self.route,
            status = self.status,
            latency_ms,
            prompt_tokens,
            completion_tokens,
            "request"
        );
        if let Some(audit) = &self.state.audit {
            audit.write(&AuditEntry {
                time: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
                request_id: &self.id,
                key_id,
                client: self.client.clone(),
                method: &self.method,
                route: self.route,
                status: self.status,
                latency_ms,
                prompt_tokens,
                completion_tokens,
            });
        }
    }
}

/// A stream's line, written when its response body is dropped (after `[DONE]`, or
/// when the client went away): latency is then the whole stream's.
struct AtEnd {
    line: Line,
    completion: StreamedCompletion,
}

impl Drop for AtEnd {
    fn drop(&mut self) {
        let tokens = self.completion.0.lock().map(|t| t.completion).unwrap_or(0);
        self.line.write(Some(tokens));
    }
}

/// The access layer: a log line (and audit entry) per response, after it is
/// made, or for a stream after its body ends; counts every response.
pub async fn log_request(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req, &state);
    let method = req.method().to_string();
    let route = route_label(req.uri().path());
    let client = req
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0 .0.ip().to_string());
    let key = state.key_id(req.headers());
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let status = resp.status().as_u16();
    // Every response counts, refusals by the layers before the handlers too.
    state.metrics.count_request(route, status);
    let counts = resp.extensions().get::<TokenCounts>().copied();
    let line = Line {
        state,
        started,
        id,
        key,
        client,
        method,
        route,
        status,
        counts,
    };
    match resp.extensions().get::<StreamedCompletion>().cloned() {
        Some(completion) => crate::body_guard::hold(resp, AtEnd { line, completion }),
        None => {
            line.write(counts.and_then(|c| c.completion_tokens));
            resp
        }
    }
}
