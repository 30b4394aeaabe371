//! The text decoder stage by stage (embedding, each layer, the head) on one
//! prompt's prefill, so that two runs (two devices, two dtypes) can be compared
//! without compounding: each stage of one run starts from the other run's input
//! to that stage. Rounding differences then stay at the size of one stage's
//! rounding, while a wrong kernel still shows at full size. `check` uses it.

use candle_core::{DType, Result, Tensor};
use medgemma_core::{DirectBlocks, SamplingParams, ScheduledSeq};

use crate::batch::ForwardBatch;
use crate::kv::{KvPool, StepKv};
use crate::text::TextModel;

const BLOCK_SIZE: usize = 16;

/// The state between two stages: the residual stream `[tokens, hidden]` and its
/// norm for the next stage (the next layer's input norm, or the final norm).
#[derive(Debug, Clone)]
pub struct StageState {
    pub h: Tensor,
    pub normed: Tensor,
}

/// Every stage's output of one run: `states[0]` leaves the embedding, `states[i + 1]`
/// leaves layer `i`; `logits` (f32, `[1, vocab]`) leave the head.
#[derive(Debug, Clone)]
pub struct Trace {
    pub states: Vec<StageState>,
    pub logits: Tensor,
}

/// One prompt's prefill on one model: its own KV pool, the batch and the step.
pub struct Prefill<'a> {
    model: &'a TextModel,
    token_ids: Vec<u32>,
    batch: ForwardBatch,
    pool: KvPool,
    step: StepKv,
}

impl<'a> Prefill<'a> {
    pub fn new(model: &'a TextModel, token_ids: &[u32]) -> Result<Self> {
        let cfg = model.config();
        let len = token_ids.len();
        let groups = crate::kv::KvGroups::new(cfg).windows.len();
        let blocks = groups * (len / BLOCK_SIZE + 1);
        let pool = KvPool::new(cfg, BLOCK_SIZE, blocks, model.dtype(), model.device())?;
        let mut seq = ScheduledSeq {
            seq_id: 1,
            tokens: token_ids.to_vec(),
            start_pos: 0,
            sample: true,
            sampling: SamplingParams::greedy(),
            images: Vec::new(),
            block_tables: Vec::new(),
            cached_prefix: Vec::new(),
        };
        DirectBlocks::new(&pool.layout(len))
            .assign(&mut seq)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut batch = ForwardBatch::default();
        batch.push(token_ids, 0, true);
        batch.spans[0].block_tables = seq.block_tables;
        let step = pool.plan(&batch, model.device())?;
        Ok(Self {
            model,
            token_ids: token_ids.to_vec(),
            batch,
            pool,
            step,
        })
    }

    /// The whole prefill, keeping every stage's output.
    pub fn trace(&self) -> Result<Trace> {
        let mut states = vec![self.embed()?];
        for i in 0..self.model.num_layers() {
            let next = self.layer(i, &states[i])?;
            states.push(next);
        }
        let logits = match states.last() {
            Some(last) => self.head(&last.normed)?,
            None => candle_core::bail!("no stage ran"),
        };
        Ok(Trace { states, logits })
    }

    /// The embedding stage: scaled embeddings and the first layer's input norm.
    pub fn embed(&self) -> Result<StageState> {
        let h = self.model.embed(&self.token_ids)?;
        let normed = self.model.first_norm(&h)?;
        Ok(StageState { h, normed })
    }

    /// Layer `i` from `input`, moved to this model's device and dtype.
    pub fn layer(&self, i: usize, input: &StageState) -> Result<StageState> {
        let (h, normed) = (self.adopt(&input.h)?, self.adopt(&input.normed)?);
        let (h, normed) =
            self.model
                .run_layer(i, (&h, &normed), &self.batch, (&self.pool, &self.step))?;
        Ok(StageState { h, normed })
    }

    /// The head (LM head and soft-capping) from final-normed states: f32 logits.
    pub fn head(&self, normed: &Tensor) -> Result<Tensor> {
        self.model.logits(&self.adopt(normed)?, &self.batch)
    }

    fn adopt(&self, t: &Tensor) -> Result<Tensor> {
        t.to_device(self.model.device())?
            .to_dtype(self.model.dtype())
    }
}

/// `||a - b|| / ||b||` over all elements, in f32 on the CPU.
pub fn relative_l2(a: &Tensor, b: &Tensor) -> Result<f64> {
    let cpu = |t: &Tensor| -> Result<Vec<f32>> {
        t.to_device(&candle_core::Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()
    };
    let (a, b) = (cpu(a)?, cpu(b)?);
    if a.len() != b.len() {
        candle_core::bail!("comparing {} values with {}", a.len(), b.len());
    }
    let (mut diff, mut norm) = (0f64, 0f64);
    for (x, y) in a.iter().zip(&b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        diff += (x - y) * (x - y);
        norm += y * y;
    }
    Ok(if norm > 0.0 {
        (diff / norm).sqrt()
    } else {
        diff.sqrt()
    })
}

/// The worse of the two parts' relative errors: `got` against `want`.
pub fn state_error(got: &StageState, want: &StageState) -> Result<f64> {
    Ok(relative_l2(&got.h, &want.h)?.max(relative_l2(&got.normed, &want.normed)?))
}
