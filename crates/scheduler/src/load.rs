//! Load measurement: requests submitted together, each followed on its own thread
//! so that every token is timed the moment it arrives, and the figures drawn from
//! those timings. Used by the `bench` command and the load benchmark; never by the
//! server.

use std::sync::Barrier;
use std::time::Instant;

use crate::SchedulerHandle;
use medgemma_core::{FinishReason, GenerateRequest, TokenEvent};

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct Trace {
    pub submitted: Instant,
    /// Arrival time of each generated token.
    pub tokens: Vec<Instant>,
    pub prompt_tokens: usize,
    pub wanted_tokens: usize,
    /// How it ended, or why it failed.
    pub finish: Result<FinishReason, String>,
}

/// Submits every request at once (threads released by one barrier) and waits for all.
pub fn run(handle: &SchedulerHandle, requests: Vec<GenerateRequest>) -> Vec<Trace> {
    let start = Barrier::new(requests.len().max(1));
    std::thread::scope(|scope| {
        let workers: Vec<_> = requests
            .into_iter()
            .map(|req| {
                let handle = handle.clone();
                let start = &start;
                scope.spawn(move || follow(&handle, req, start))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| Trace {
                    submitted: Instant::now(),
                    tokens: Vec::new(),
                    prompt_tokens: 0,
                    wanted_tokens: 0,
                    finish: Err("the request's thread panicked".into()),
                })
            })
            .collect()
    })
}

/// Sends the requests one after another, each once the previous has finished.
pub fn run_sequential(handle: &SchedulerHandle, requests: Vec<GenerateRequest>) -> Vec<Trace> {
    requests
        .into_iter()
        .flat_map(|req| run(handle, vec![req]))
        .collect()
}

fn follow(handle: &SchedulerHandle, mut req: GenerateRequest, start: &Barrier) -> Trace {
    start.wait();
    let submitted = Instant::now();
    req.arrival = submitted;
    let mut trace = Trace {
        submitted,
        tokens: Vec::with_capacity(req.max_new_tokens),
        prompt_tokens: req.prompt.token_ids.len(),
        wanted_tokens: req.max_new_tokens,
        finish: Err("the stream ended without finishing".into()),
    };
    let mut stream = match handle.submit(req) {
        Ok(s) => s,
        Err(e) => {
            trace.finish = Err(e.to_string());
            return trace;
        }
    };
    while let Some(event) = stream.blocking_next() {
        match event {
            TokenEvent::Token { .. } => trace.tokens.push(Instant::now()),
            TokenEvent::Finished { reason, .. } => {
                trace.finish = Ok(reason);
                break;
            }
            TokenEvent::Failed(msg) => {
                trace.finish = Err(msg);
                break;
            }
        }
    }
    trace
}

/// p50 / p99 / mean of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spread {
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
}

impl Spread {
    /// Nearest-rank percentiles; `None` for an empty sample.
    pub fn of(mut ms: Vec<f64>) -> Option<Self> {
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let rank =
            |p: f64| ms[((p / 100.0 * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Some(Self {
            p50: rank(50.0),
            p99: rank(99.0),
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
        })
    }
}

/// The figures of one concurrency level.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub concurrency: usize,
    pub requests: usize,
    /// Requests that failed or ended with fewer tokens than asked.
    pub incomplete: usize,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    /// First submission to last token.
    pub wall_s: f64,
    /// Prompt tokens over the time until every request had its first token.
    pub prefill_tok_s: f64,
    /// Tokens after that moment (all in decode) over the time they took.
    pub decode_tok_s: Option<f64>,
    /// All output tokens over the wall time.
    pub output_tok_s: f64,
    pub ttft_ms: Option<Spread>,
    pub itl_ms: Option<Spread>,
    /// Peak device memory in use (CUDA) or peak resident memory (CPU), bytes.
    pub peak_memory: Option<u64>,
    /// The first failure message, if any (never prompt or output text).
    pub error: Option<String>,
}

fn ms(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64() * 1e3
}

/// Draws the figures from the traces of one level.
pub fn figures(concurrency: usize, traces: &[Trace]) -> Figures {
    let mut f = Figures {
        concurrency,
        requests: traces.len(),
        ..Figures::default()
    };
    let Some(start) = traces.iter().map(|t| t.submitted).min() else {
        return f;
    };
    let firsts: Vec<Instant> = traces
        .iter()
        .filter_map(|t| t.tokens.first().copied())
        .collect();
    let end = traces
        .iter()
        .filter_map(|t| t.tokens.last().copied())
        .max()
        .unwrap_or(start);
    f.incomplete = traces
        .iter()
        .filter(|t| t.finish.is_err() || t.tokens.len() < t.wanted_tokens)
        .count();
    f.error = traces.iter().find_map(|t| t.finish.clone().err());
    f.prompt_tokens = traces.iter().map(|t| t.prompt_tokens).sum();
    f.output_tokens = traces.iter().map(|t| t.tokens.len()).sum();
    f.wall_s = ms(start, end) / 1e3;
    if f.wall_s > 0.0 {
        f.output_tok_s = f.output_tokens as f64 / f.wall_s;
    }
    if let Some(all_started) = firsts.iter().max().copied() {
        let prefill_s = ms(start, all_started) / 1e3;
        if prefill_s > 0.0 {
            f.prefill_tok_s = f.prompt_tokens as f64 / prefill_s;
        }
        let decoded = traces
            .iter()
            .flat_map(|t| &t.tokens)
            .filter(|&&at| at > all_started)
            .count();
        let decode_s = ms(all_started, end) / 1e3;
        if decoded > 0 && decode_s > 0.0 {
            f.decode_tok_s = Some(decoded as f64 / decode_s);
        }
    }
    f.ttft_ms = Spread::of(
        traces
            .iter()
            .filter_map(|t| t.tokens.first().map(|&at| ms(t.submitted, at)))
            .collect(),
    );
    f.itl_ms = Spread::of(
        traces
            .iter()
            .flat_map(|t| t.tokens.windows(2).map(|w| ms(w[0], w[1])))
            .collect(),
    );
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_use_nearest_rank() {
        let s = Spread::of((1..=100).map(f64::from).collect()).expect("non-empty");
        assert_eq!((s.p50, s.p99), (50.0, 99.0));
        assert_eq!(Spread::of(vec![3.0]).map(|s| s.p99), Some(3.0));
        assert!(Spread::of(Vec::new()).is_none());
    }

    #[test]
    fn figures_split_prefill_and_decode_at_the_last_first_token() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let trace = |first: u64| Trace {
            submitted: t0,
            tokens: vec![at(first), at(first + 10), at(first + 20)],
            prompt_tokens: 100,
            wanted_tokens: 3,
            finish: Ok(FinishReason::Length),
        };
        let f = figures(2, &[trace(100), trace(200)]);
        assert_eq!((f.output_tokens, f.incomplete), (6, 0));
        assert!((f.wall_s - 0.22).abs() < 1e-9);
        assert!((f.prefill_tok_s - 1000.0).abs() < 1e-6);
        // After 200 ms: the second trace's last two tokens, over 20 ms.
        assert!((f.decode_tok_s.unwrap_or_default() - 100.0).abs() < 1e-6);
        assert_eq!(f.itl_ms.map(|s| s.p50), Some(10.0));
    }
}
