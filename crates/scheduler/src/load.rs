//! Load measurement: many requests at once through a running scheduler, with
//! aggregate throughput and per-token latencies. Used by the `bench` command and
//! the load benchmark; never by the server.

use std::time::{Duration, Instant};

use medgemma_core::{GenerateRequest, TokenEvent};

use crate::SchedulerHandle;

/// What one batch of concurrent requests measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub requests: usize,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// From the first submission to the last token.
    pub wall: Duration,
    /// Time to first token of every request.
    pub ttft: Vec<Duration>,
    /// Time between consecutive tokens, over all requests.
    pub itl: Vec<Duration>,
}

impl LoadResult {
    /// Generated tokens per second of wall time, all requests together.
    pub fn tokens_per_s(&self) -> f64 {
        self.generated_tokens as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Prompt tokens per second of the time to first token (each request's prefill).
    pub fn prefill_tokens_per_s(&self) -> f64 {
        let last_first = self.ttft.iter().max().copied().unwrap_or_default();
        self.prompt_tokens as f64 / last_first.as_secs_f64().max(1e-9)
    }

    /// Adds another run's figures (for runs made one after another).
    pub fn merge(&mut self, other: LoadResult) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.generated_tokens += other.generated_tokens;
        self.wall += other.wall;
        self.ttft.extend(other.ttft);
        self.itl.extend(other.itl);
    }
}

/// The `p`-th percentile (0..=100) by nearest rank; zero when empty.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut v = values.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Submits every request at once and waits for all of them.
pub fn run_concurrent(
    handle: &SchedulerHandle,
    requests: Vec<GenerateRequest>,
) -> Result<LoadResult, String> {
    let start = Instant::now();
    let prompt_tokens = requests.iter().map(|r| r.prompt.token_ids.len()).sum();
    let n = requests.len();
    let mut streams = Vec::with_capacity(n);
    for req in requests {
        streams.push(handle.submit(req).map_err(|e| e.to_string())?);
    }
    let threads: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let mut times = Vec::new();
                loop {
                    match s.blocking_next() {
                        Some(TokenEvent::Token { .. }) => times.push(Instant::now()),
                        Some(TokenEvent::Finished { .. }) => return Ok(times),
                        Some(TokenEvent::Failed(e)) => return Err(e),
                        None => return Err("the engine stopped".to_string()),
                    }
                }
            })
        })
        .collect();
    let mut result = LoadResult {
        requests: n,
        prompt_tokens,
        ..LoadResult::default()
    };
    for t in threads {
        let times = t
            .join()
            .map_err(|_| "a reader thread panicked".to_string())??;
        if let Some(first) = times.first() {
            result.ttft.push(*first - start);
        }
        result.itl.extend(times.windows(2).map(|w| w[1] - w[0]));
        result.generated_tokens += times.len();
        result.wall = result
            .wall
            .max(times.last().map_or(Duration::ZERO, |l| *l - start));
    }
    Ok(result)
}

/// Sends the requests one after another, each after the previous has finished.
pub fn run_sequential(
    handle: &SchedulerHandle,
    requests: Vec<GenerateRequest>,
) -> Result<LoadResult, String> {
    let mut total = LoadResult::default();
    for req in requests {
        total.merge(run_concurrent(handle, vec![req])?);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
