//! Prometheus metrics, prefixed `medgemma_`. Labels carry routes and status codes,
//! never request content.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use medgemma_scheduler::SchedulerStats;

const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Debug)]
pub struct Histogram {
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            if seconds <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub request_latency: Histogram,
}

impl Metrics {
    pub fn count_request(&self, route: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), status)).or_default() += 1;
        }
    }

    pub fn render(&self, stats: Option<&SchedulerStats>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP medgemma_requests_total HTTP requests by route and status.\n# TYPE medgemma_requests_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "medgemma_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let ready = u8::from(stats.is_some());
        let _ = writeln!(out, "# HELP medgemma_model_ready 1 once the model is loaded.\n# TYPE medgemma_model_ready gauge\nmedgemma_model_ready {ready}");
        if let Some(s) = stats {
            render_stats(&mut out, s);
        }
        self.time_to_first_token.render(
            &mut out,
            "medgemma_time_to_first_token_seconds",
            "Time from request to first token.",
        );
        self.inter_token_latency.render(
            &mut out,
            "medgemma_inter_token_latency_seconds",
            "Time between tokens of a sequence.",
        );
        self.request_latency.render(
            &mut out,
            "medgemma_request_latency_seconds",
            "Time from request to last token.",
        );
        out
    }
}

fn render_stats(out: &mut String, s: &SchedulerStats) {
    let gauges = [
        (
            "medgemma_waiting_sequences",
            "Requests waiting to start.",
            SchedulerStats::get(&s.waiting),
        ),
        (
            "medgemma_running_sequences",
            "Sequences in the running batch.",
            SchedulerStats::get(&s.running),
        ),
        (
            "medgemma_kv_sequences",
            "Sequences holding KV state.",
            SchedulerStats::get(&s.active_kv_sequences),
        ),
        (
            "medgemma_kv_blocks_total",
            "KV cache blocks in the pool (allocated at start-up).",
            SchedulerStats::get(&s.kv_blocks_total),
        ),
        (
            "medgemma_kv_blocks_used",
            "KV cache blocks held by sequences.",
            SchedulerStats::get(&s.kv_blocks_used),
        ),
        (
            "medgemma_kv_blocks_cached",
            "KV blocks holding a cached prefix, in use or free (reusable until taken).",
            SchedulerStats::get(&s.kv_blocks_cached),
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    let counters = [
        (
            "medgemma_prompt_tokens_total",
            "Prompt tokens processed.",
            SchedulerStats::count(&s.prompt_tokens),
        ),
        (
            "medgemma_generation_tokens_total",
            "Tokens generated.",
            SchedulerStats::count(&s.generated_tokens),
        ),
        (
            "medgemma_engine_steps_total",
            "Batched engine steps.",
            SchedulerStats::count(&s.steps),
        ),
        (
            "medgemma_cancelled_sequences_total",
            "Sequences cancelled (client gone).",
            SchedulerStats::count(&s.cancelled),
        ),
        (
            "medgemma_failed_sequences_total",
            "Sequences failed by an engine error.",
            SchedulerStats::count(&s.failed),
        ),
        (
            "medgemma_preemptions_total",
            "Running sequences preempted for KV blocks (recomputed later).",
            SchedulerStats::count(&s.preemptions),
        ),
        (
            "medgemma_prefix_cache_queries_total",
            "Tokens of the sequences started (looked up in the prefix cache).",
            SchedulerStats::count(&s.prefix_cache_queries),
        ),
        (
            "medgemma_prefix_cache_hits_total",
            "Tokens of the sequences started that came from the prefix cache.",
            SchedulerStats::count(&s.prefix_cache_hits),
        ),
        (
            "medgemma_images_encoded_total",
            "Images the vision tower encoded.",
            SchedulerStats::count(&s.images_encoded),
        ),
        (
            "medgemma_encoder_cache_hits_total",
            "Images whose features came from the encoder cache instead.",
            SchedulerStats::count(&s.encoder_cache_hits),
        ),
        (
            "medgemma_decode_steps_run_ahead_total",
            "Greedy decode steps queued on the GPU before the previous step's tokens were read.",
            SchedulerStats::count(&s.decode_steps_run_ahead),
        ),
        (
            "medgemma_decode_steps_ahead_used_total",
            "Decode steps run ahead that answered the scheduler's next step (the rest were dropped).",
            SchedulerStats::count(&s.decode_steps_ahead_used),
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
}
