//! Per-key limits on generations (`/v1/chat/completions`, `/v1/completions`):
//! how many one API key may have in flight (a stream counts until its last
//! chunk is sent or the client goes), and how many it may start per minute (a
//! token bucket holding a minute's worth). Past either, 429 with Retry-After
//! and code `rate_limit_exceeded`, which the OpenAI SDKs retry after waiting.
//! One runaway script then cannot take the batch from every other client. A
//! key may also set where its generations wait in the scheduler's queue
//! (`priority`, lower first).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// The limits of one key (`None`: unlimited), and the priority of its
/// generations (lower first; `None`: 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimits {
    pub max_concurrent: Option<usize>,
    pub requests_per_minute: Option<u32>,
    pub priority: Option<i32>,
}

impl KeyLimits {
    /// These limits, with `defaults` where these have none.
    pub fn or(self, defaults: KeyLimits) -> Self {
        Self {
            max_concurrent: self.max_concurrent.or(defaults.max_concurrent),
            requests_per_minute: self.requests_per_minute.or(defaults.requests_per_minute),
            priority: self.priority.or(defaults.priority),
        }
    }
}

/// The priority a request's key gives its generations (lower start first),
/// put in the request's extensions for the handlers.
#[derive(Debug, Clone, Copy)]
pub struct KeyPriority(pub i32);

/// One line of a key file: the key, then optional `name=value` settings
/// (`max_concurrent`, `requests_per_minute`, `priority`). Errors quote nothing
/// of the line.
pub fn parse_key_line(line: &str) -> Result<(String, KeyLimits), String> {
    const NAMES: [&str; 3] = ["max_concurrent", "requests_per_minute", "priority"];
    let mut words = line.split_whitespace();
    let key = words.next().ok_or("no key")?.to_string();
    if key.starts_with('=') || NAMES.iter().any(|n| key.starts_with(&format!("{n}="))) {
        return Err("the line starts with a limit; the key comes first".into());
    }
    let mut limits = KeyLimits::default();
    for word in words {
        // Nothing of the line is quoted: a word could be a key.
        let (name, value) = word
            .split_once('=')
            .ok_or("after the key only limits may come (name=value); a key holds no blanks")?;
        let number = || -> Result<u64, String> {
            match value.parse::<u64>() {
                Ok(n) if n > 0 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
                _ => Err(format!("{name} must be a whole number above 0")),
            }
        };
        match name {
            "priority" => {
                let digits = value.strip_prefix('-').unwrap_or(value);
                let p = value
                    .parse::<i32>()
                    .ok()
                    .filter(|_| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
                limits.priority = Some(p.ok_or("priority must be a whole number (lower first)")?);
            }
            "max_concurrent" => limits.max_concurrent = Some(number()? as usize),
            "requests_per_minute" => {
                limits.requests_per_minute = Some(number()?.min(u64::from(u32::MAX)) as u32)
            }
            _ => {
                return Err(format!(
                    "unknown limit (the limits are {})",
                    NAMES.join(", ")
                ))
            }
        }
    }
    Ok((key, limits))
}

/// A key's limits and what it uses of them.
#[derive(Debug)]
pub struct KeyQuota {
    limits: KeyLimits,
    in_flight: Arc<AtomicUsize>,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Why a request was refused, and when to try again (seconds).
enum Refusal {
    Concurrent(usize),
    Rate { per_minute: u32, retry_after: u64 },
}

impl KeyQuota {
    pub fn new(limits: KeyLimits) -> Self {
        Self {
            limits,
            in_flight: Arc::new(AtomicUsize::new(0)),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(limits.requests_per_minute.unwrap_or(0)),
                updated: Instant::now(),
            }),
        }
    }

    /// Takes a place for one generation: a guard that frees it when dropped.
    fn admit(&self, now: Instant) -> Result<InFlight, Refusal> {
        if let Some(max) = self.limits.max_concurrent {
            self.in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .map_err(|_| Refusal::Concurrent(max))?;
        } else {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        let guard = InFlight(self.in_flight.clone());
        if let Some(per_minute) = self.limits.requests_per_minute {
            self.take_token(per_minute, now)?;
        }
        Ok(guard)
    }

    fn take_token(&self, per_minute: u32, now: Instant) -> Result<(), Refusal> {
        let Ok(mut b) = self.bucket.lock() else {
            return Ok(());
        };
        let rate = f64::from(per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(f64::from(per_minute));
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        Err(Refusal::Rate {
            per_minute,
            retry_after: ((1.0 - b.tokens) / rate).ceil().max(1.0) as u64,
        })
    }

    /// Generations of this key in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// One generation's place; freed when dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

const LIMITED: [&str; 2] = ["/v1/chat/completions", "/v1/completions"];

/// The middleware: generations of a key with limits are admitted or refused;
/// the place is held until the response body (a whole stream) is done.
pub async fn limit_keys(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !LIMITED.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let Some(quota) = state
        .key_index(req.headers())
        .and_then(|i| state.quotas.get(i))
    else {
        return next.run(req).await;
    };
    let guard = match quota.admit(Instant::now()) {
        Ok(g) => g,
        Err(refusal) => return refused(refusal),
    };
    if let Some(p) = quota.limits.priority {
        req.extensions_mut().insert(KeyPriority(p));
    }
    // The place is held until the response body is dropped (sent whole, or its
    // client gone): a stream holds it for its whole length.
    crate::body_guard::hold(next.run(req).await, guard)
}

fn refused(refusal: Refusal) -> Response {
    let (message, retry_after) = match refusal {
        Refusal::Concurrent(max) => (
            format!("this API key already has {max} generations in flight, its limit; retry when one ends"),
            1,
        ),
        Refusal::Rate {
            per_minute,
            retry_after,
        } => (
            format!("this API key may start {per_minute} generations per minute; retry in {retry_after} s"),
            retry_after,
        ),
    };
    let mut resp = ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
        .with_code("rate_limit_exceeded")
        .into_response();
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from(retry_after));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn key_lines_parse_and_errors_never_quote_the_key() {
        assert_eq!(
            parse_key_line("sk-abc max_concurrent=2 requests_per_minute=30 priority=-5"),
            Ok((
                "sk-abc".into(),
                KeyLimits {
                    max_concurrent: Some(2),
                    requests_per_minute: Some(30),
                    priority: Some(-5)
                }
            ))
        );
        assert_eq!(
            parse_key_line("sk-abc"),
            Ok(("sk-abc".into(), KeyLimits::default()))
        );
        for bad in [
            "sk-secret max_concurrent=0",
            "sk-secret speed=3",
            "sk-secret 5",
            "sk-secret sk-secret",
            "max_concurrent=3 sk-secret",
            "sk-secret sk=secret",
            "=3",
            "sk-secret max_concurrent=+3",
            "sk-secret priority=high",
            "sk-secret priority=-",
            "priority=1 sk-secret",
        ] {
            let e = parse_key_line(bad).unwrap_err();
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn concurrency_is_held_until_the_guard_drops() {
        let q = KeyQuota::new(KeyLimits {
            max_concurrent: Some(2),
            ..KeyLimits::default()
        });
        let now = Instant::now();
        let a = q.admit(now).ok().unwrap();
        let _b = q.admit(now).ok().unwrap();
        assert!(matches!(q.admit(now), Err(Refusal::Concurrent(2))));
        drop(a);
        assert!(q.admit(now).is_ok());
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let q = KeyQuota::new(KeyLimits {
            requests_per_minute: Some(2),
            ..KeyLimits::default()
        });
        let t0 = Instant::now();
        assert!(q.admit(t0).is_ok() && q.admit(t0).is_ok());
        match q.admit(t0) {
            Err(Refusal::Rate { retry_after, .. }) => assert_eq!(retry_after, 30),
            _ => panic!("a third request within the minute was admitted"),
        }
        // A refused request holds no place.
        assert_eq!(q.in_flight(), 0);
        assert!(q.admit(t0 + Duration::from_secs(31)).is_ok());
    }
}
