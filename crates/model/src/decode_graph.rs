//! Decode steps replayed from captured CUDA graphs.
//!
//! A decode step launches hundreds of small kernels, and at small batch the GPU
//! waits on the host launching them. A step whose sequences all decode one token
//! (no image) is captured once per shape, `(rows, keys)`, and replayed:
//!
//! - The batch is padded to `rows` (1, 2, 4, 8, then multiples of 8) with dummy
//!   sequences at position 0 whose only block is the pool's padding block, which
//!   no sequence owns; their logits are dropped.
//! - Decode key tables are padded to `keys` (a power of two, at least 64, above the
//!   longest sequence; a sliding group's to at most its window), so every step of
//!   the shape has input tensors of the same shapes.
//! - The step's inputs (ids, RoPE tables, KV slots and key tables) are planned on
//!   the host as for any step and copied into the tensors the graph was captured
//!   over; the graph writes the logits into a tensor of its own.
//!
//! Capture runs the step once eagerly first (that also loads every kernel and
//! caches candle's small parameter uploads, which a capture cannot make), then
//! captures it, replays it and compares the replay's logits with the eager ones.
//! Any failure or difference turns graphs off for good with a warning and the
//! engine goes on eagerly; the eager logits answer the step either way.
//!
//! `DecodeReplay::Rerun` runs the same padding and input copying with the forward
//! re-run over the captured tensors instead of a graph: the CPU tests of all of
//! the above but the capture itself.

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor};
use medgemma_core::{BlockId, BlockTable};

use crate::batch::ForwardBatch;
use crate::kv::{KvPool, StepKv};
use crate::text::{StepRope, TextModel};

/// How decode steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeReplay {
    /// Every step eagerly.
    Off,
    /// Captured CUDA graphs on CUDA devices (eager elsewhere).
    CudaGraphs,
    /// The graphs' padding and input copies with the forward re-run instead of a
    /// graph, on any device (tests).
    Rerun,
}

/// Captured shapes kept at most: each holds its inputs and its graph's memory.
const MAX_GRAPHS: usize = 64;

/// Smallest decode key table of a captured step.
const MIN_KEYS: usize = 64;

/// The captured decode steps of one engine.
pub struct DecodeGraphs {
    mode: DecodeReplay,
    /// Largest batch captured (the scheduler's sequence limit, rounded up).
    max_rows: usize,
    steps: HashMap<(usize, usize), Captured>,
    /// A capture failed or disagreed with the eager step: no more graphs.
    failed: bool,
    full_warned: bool,
}

/// A captured step: the inputs its replay reads and the logits it writes.
struct Captured {
    inputs: Inputs,
    logits: Tensor,
    replay: Replay,
}

enum Replay {
    #[cfg(feature = "cuda")]
    Graph(cuda::Graph),
    Rerun,
}

/// One step's inputs on the device.
struct Inputs {
    batch: ForwardBatch,
    ids: Tensor,
    rope: StepRope,
    kv: StepKv,
}

impl DecodeGraphs {
    /// `max_seqs`: the most sequences a step holds.
    pub fn new(mode: DecodeReplay, device: &Device, max_seqs: usize) -> Self {
        let mode = match mode {
            DecodeReplay::CudaGraphs if !device.is_cuda() || !cfg!(feature = "cuda") => {
                DecodeReplay::Off
            }
            m => m,
        };
        Self {
            mode,
            max_rows: rows_for(max_seqs.max(1)),
            steps: HashMap::new(),
            failed: false,
            full_warned: false,
        }
    }

    /// Shapes captured so far.
    pub fn captured(&self) -> usize {
        self.steps.len()
    }

    /// Whether steps may still be replayed.
    pub fn active(&self) -> bool {
        self.mode != DecodeReplay::Off && !self.failed
    }

    /// The logits `[sequences, vocab]` of `batch` from a replayed step, or `None`
    /// when this step runs eagerly (not all decoding, too large, graphs off).
    pub fn run(
        &mut self,
        text: &TextModel,
        pool: &KvPool,
        batch: &ForwardBatch,
    ) -> Result<Option<Tensor>> {
        let Some(key) = self.shape_of(batch) else {
            return Ok(None);
        };
        let n = batch.spans.len();
        if !self.steps.contains_key(&key) && self.steps.len() >= MAX_GRAPHS {
            if !self.full_warned {
                tracing::info!(
                    shapes = MAX_GRAPHS,
                    "decode graphs: shape limit reached; further shapes run eagerly"
                );
                self.full_warned = true;
            }
            return Ok(None);
        }
        let inputs = prepare(text, pool, batch, key)?;
        if let Some(step) = self.steps.get(&key) {
            step.load(&inputs)?;
            step.replay(text, pool)?;
            return Ok(Some(step.logits.narrow(0, 0, n)?));
        }
        let (captured, eager) = self.capture(text, pool, inputs)?;
        if let Some(step) = captured {
            tracing::debug!(rows = key.0, keys = key.1, "decode step captured");
            self.steps.insert(key, step);
        }
        Ok(Some(eager.narrow(0, 0, n)?))
    }

    /// Queues `batch` (all decoding, fed `ids`: its `[sequences]` u32 token ids,
    /// on the device) through the captured step of its shape, behind the work
    /// already queued; returns its logits `[sequences, vocab]` (valid until the
    /// shape's next replay), or `None` when no captured step serves it.
    pub fn replay_fed(
        &mut self,
        text: &TextModel,
        pool: &KvPool,
        batch: &ForwardBatch,
        ids: &Tensor,
    ) -> Result<Option<Tensor>> {
        let Some(key) = self.shape_of(batch) else {
            return Ok(None);
        };
        let Some(step) = self.steps.get(&key) else {
            return Ok(None);
        };
        let n = batch.spans.len();
        if ids.dims() != [n] {
            candle_core::bail!("decode graph: {:?} ids for {n} sequences", ids.dims());
        }
        step.load(&prepare(text, pool, batch, key)?)?;
        step.inputs.ids.slice_set(ids, 0, 0)?;
        step.replay(text, pool)?;
        Ok(Some(step.logits.narrow(0, 0, n)?))
    }

    /// `(rows, keys)` of the captured step that serves `batch`, if any may.
    fn shape_of(&self, batch: &ForwardBatch) -> Option<(usize, usize)> {
        if !self.active() || batch.spans.is_empty() {
            return None;
        }
        if !batch.spans.iter().all(|s| s.is_decode() && s.want_logits) {
            return None;
        }
        let rows = rows_for(batch.spans.len());
        let longest = batch.spans.iter().map(|s| s.start_pos + 1).max()?;
        (rows <= self.max_rows).then(|| (rows, keys_for(longest)))
    }

    /// Runs the step eagerly, then captures it. Returns the captured step (`None`
    /// when capture failed, which turns graphs off) and the eager logits.
    fn capture(
        &mut self,
        text: &TextModel,
        pool: &KvPool,
        inputs: Inputs,
    ) -> Result<(Option<Captured>, Tensor)> {
        match self.mode {
            DecodeReplay::Rerun => {
                let eager = forward(text, pool, &inputs)?;
                let logits = eager.copy()?;
                Ok((Some(Captured::new(inputs, logits, Replay::Rerun)), eager))
            }
            #[cfg(feature = "cuda")]
            DecodeReplay::CudaGraphs => {
                let (graph, eager) = cuda::capture(text, pool, &inputs)?;
                match graph {
                    Ok((graph, logits)) => Ok((
                        Some(Captured::new(inputs, logits, Replay::Graph(graph))),
                        eager,
                    )),
                    Err(e) => {
                        tracing::warn!(error = %e, "decode graphs off: capture failed; decoding eagerly");
                        // The shapes captured before are not trusted either.
                        self.failed = true;
                        self.steps.clear();
                        Ok((None, eager))
                    }
                }
            }
            _ => Ok((None, forward(text, pool, &inputs)?)),
        }
    }
}

impl Inputs {
    /// Every input tensor, in a fixed order.
    fn tensors(&self) -> Vec<&Tensor> {
        let mut out = vec![&self.ids];
        out.extend(self.rope.tensors());
        out.extend(self.kv.tensors());
        out
    }
}

impl Captured {
    fn new(inputs: Inputs, logits: Tensor, replay: Replay) -> Self {
        Self {
            inputs,
            logits,
            replay,
        }
    }

    /// Copies a step's inputs into the tensors the replay reads.
    fn load(&self, inputs: &Inputs) -> Result<()> {
        let dst = self.inputs.tensors();
        let src = inputs.tensors();
        if dst.len() != src.len() {
            candle_core::bail!(
                "decode graph: the step has {} input tensors, the captured step {}",
                src.len(),
                dst.len()
            );
        }
        for (d, s) in dst.into_iter().zip(src) {
            copy_into(d, s)?;
        }
        Ok(())
    }

    fn replay(&self, text: &TextModel, pool: &KvPool) -> Result<()> {
        match &self.replay {
            #[cfg(feature = "cuda")]
            Replay::Graph(g) => g.launch(),
            Replay::Rerun => copy_into(&self.logits, &forward(text, pool, &self.inputs)?),
        }
    }
}

/// Copies `src` into `dst` in place; shapes must agree.
fn copy_into(dst: &Tensor, src: &Tensor) -> Result<()> {
    if dst.shape() != src.shape() || dst.dtype() != src.dtype() {
        candle_core::bail!(
            "decode graph: input {:?} {:?} does not fit the captured {:?} {:?}",
            src.shape(),
            src.dtype(),
            dst.shape(),
            dst.dtype()
        );
    }
    if src.elem_count() == 0 {
        return Ok(());
    }
    dst.slice_set(src, 0, 0)
}

/// The step's inputs, padded to the captured shape `(rows, keys)`.
fn prepare(
    text: &TextModel,
    pool: &KvPool,
    batch: &ForwardBatch,
    (rows, keys): (usize, usize),
) -> Result<Inputs> {
    let batch = pad(batch, rows, pool.padding_block(), pool.num_groups());
    let device = text.device();
    Ok(Inputs {
        ids: Tensor::new(batch.token_ids.as_slice(), device)?,
        rope: text.step_rope(&batch)?,
        kv: pool.plan_padded(&batch, device, Some(keys))?,
        batch,
    })
}

fn forward(text: &TextModel, pool: &KvPool, inputs: &Inputs) -> Result<Tensor> {
    let embeds = text.embed_ids(&inputs.ids)?;
    text.forward_step(&embeds, &inputs.batch, (pool, &inputs.kv), &inputs.rope)
}

/// `batch` with dummy decoding sequences appended up to `rows`: token 0 at
/// position 0 in the padding block of every group.
pub fn pad(batch: &ForwardBatch, rows: usize, padding_block: usize, groups: usize) -> ForwardBatch {
    let mut padded = batch.clone();
    let table = BlockTable {
        first: 0,
        blocks: vec![padding_block as BlockId],
    };
    while padded.spans.len() < rows {
        let i = padded.push(&[0], 0, true);
        padded.spans[i].block_tables = vec![table.clone(); groups];
    }
    padded
}

/// Captured batch sizes: 1, 2, 4, 8, then multiples of 8.
pub fn rows_for(seqs: usize) -> usize {
    if seqs <= 8 {
        seqs.next_power_of_two()
    } else {
        seqs.div_ceil(8) * 8
    }
}

/// Captured key-table widths: powers of two from `MIN_KEYS`.
pub fn keys_for(longest: usize) -> usize {
    longest.next_power_of_two().max(MIN_KEYS)
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::sys;
    use candle_core::cuda_backend::cudarc::driver::CudaGraph;
    use candle_core::{DType, Device, Result, Tensor};

    use super::{forward, Inputs};
    use crate::kv::KvPool;
    use crate::text::TextModel;

    /// A captured graph. cudarc's graph is not `Send` (raw handles); the engine
    /// moves its executor to its own thread before any step, and captures,
    /// launches and drops graphs on that thread only.
    pub struct Graph(CudaGraph);

    // SAFETY: see the type's doc: a graph is only touched by the engine thread.
    unsafe impl Send for Graph {}

    impl Graph {
        pub fn launch(&self) -> Result<()> {
            self.0
                .launch()
                .map_err(|e| candle_core::Error::Msg(format!("decode graph launch: {e:?}")))
        }
    }

    /// How far a replay may be from the eager step it was captured from (max
    /// relative error of the logits): the same kernels on the same inputs, so only a
    /// different cuBLAS algorithm under capture may move them.
    fn replay_tolerance(dtype: DType) -> f64 {
        match dtype {
            DType::F32 => 1e-4,
            _ => 2e-2,
        }
    }

    /// Runs the step eagerly (its answer, and the warm-up capture needs), then
    /// captures it and checks one replay against the eager logits. The outer
    /// error is the eager step's; the inner one a failed or disagreeing capture.
    #[allow(clippy::type_complexity)]
    pub fn capture(
        text: &TextModel,
        pool: &KvPool,
        inputs: &Inputs,
    ) -> Result<(
        std::result::Result<(Graph, Tensor), candle_core::Error>,
        Tensor,
    )> {
        let Device::Cuda(dev) = text.device() else {
            candle_core::bail!("decode graphs need a CUDA device")
        };
        let _cache = dev.enable_cuda_graph_htod_cache();
        let eager = forward(text, pool, inputs)?;
        let logits = Tensor::zeros(eager.shape(), eager.dtype(), eager.device())?;
        let graph = record(dev, text, pool, inputs, &logits).and_then(|g| {
            g.launch()?;
            let err = crate::ops::max_relative_error(&logits, &eager)?;
            let tolerance = replay_tolerance(text.dtype());
            if err > tolerance {
                candle_core::bail!(
                    "the replayed step is {err:.2e} from the eager one (tolerance {tolerance:.0e})"
                )
            }
            Ok(g)
        });
        Ok((graph.map(|g| (g, logits)), eager))
    }

    /// Captures the forward writing its logits into `out`.
    fn record(
        dev: &candle_core::CudaDevice,
        text: &TextModel,
        pool: &KvPool,
        inputs: &Inputs,
        out: &Tensor,
    ) -> Result<Graph> {
        let stream = dev.cuda_stream();
        let err = |what: &str, e: candle_core::cuda_backend::cudarc::driver::DriverError| {
            candle_core::Error::Msg(format!("decode graph {what}: {e:?}"))
        };
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| err("begin capture", e))?;
        // Every tensor made while capturing is dropped inside the closure, so the
        // graph frees all it allocates.
        let ran = (|| super::copy_into(out, &forward(text, pool, inputs)?))();
        let ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        ran?;
        let graph = ended
            .map_err(|e| err("end capture", e))?
            .ok_or_else(|| candle_core::Error::Msg("decode graph: nothing captured".into()))?;
        graph.upload().map_err(|e| err("upload", e))?;
        Ok(Graph(graph))
    }
}
