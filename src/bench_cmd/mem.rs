//! Peak memory while something runs: on CUDA the GPU's used memory (total - free,
//! as the driver reports it for the whole GPU), polled from a background thread;
//! on the CPU the process's peak resident set (VmHWM, a high-water mark since start).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use medgemma_model::Device;

/// How often the GPU's memory is read.
const POLL: Duration = Duration::from_millis(10);

/// Used device memory now (CUDA), in bytes.
pub fn device_used(device: &Device) -> Option<u64> {
    medgemma_model::device_memory(device).map(|(free, total)| total.saturating_sub(free))
}

/// Memory in use now: the GPU's (CUDA) or the process's resident set (CPU).
pub fn used_now(device: &Device) -> Option<u64> {
    if device.is_cuda() {
        device_used(device)
    } else {
        proc_status_bytes("VmRSS:")
    }
}

/// The process's peak resident set in bytes (Linux), from /proc/self/status.
pub fn peak_rss() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// A `kB` field of /proc/self/status, in bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Samples peak memory between `start` and `finish`.
pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    cuda: bool,
}

impl PeakSampler {
    pub fn start(device: &Device) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(device_used(device).unwrap_or(0)));
        let cuda = device.is_cuda();
        let thread = cuda.then(|| {
            let (stop, peak, device) = (stop.clone(), peak.clone(), device.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(used) = device_used(&device) {
                        peak.fetch_max(used, Ordering::Relaxed);
                    }
                    std::thread::sleep(POLL);
                }
            })
        });
        Self {
            stop,
            peak,
            thread,
            cuda,
        }
    }

    /// The peak seen: device bytes in use on CUDA, the process's peak RSS on the CPU.
    pub fn finish(mut self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.cuda {
            Some(self.peak.load(Ordering::Relaxed)).filter(|&b| b > 0)
        } else {
            peak_rss()
        }
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
