//! Gemma 3 attention over packed sequences: GQA, q/k RMSNorm before RoPE,
//! scale `query_pre_attn_scalar^-0.5`, softmax in f32.
//!
//! `attn_logit_softcapping` is parsed but, as in transformers' Gemma 3 (unlike
//! Gemma 2), never applied: checked on the tiny-gemma3-text fixture, which sets it.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::batch::ForwardBatch;
use crate::config::TextConfig;
use crate::kv::{KvPool, StepKv};
use crate::linear::Linear;
use crate::norm::GemmaRmsNorm;
use crate::paged_decode;
use crate::paged_rows::paged_rows;
use crate::qk_rope_write::{qk_rope_write, QkRopeWrite};
use crate::rope::RopeTables;

#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: GemmaRmsNorm,
    k_norm: GemmaRmsNorm,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f64,
    /// Run the q/k norms, RoPE and the KV write as one CUDA kernel.
    fused_qk: bool,
}

impl Attention {
    /// `fused_qk`: use the fused q/k norm, RoPE and KV-write kernel (CUDA; see
    /// `qk_rope_write::usable`).
    pub fn new(cfg: &TextConfig, vb: VarBuilder, fused_qk: bool) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let (nq, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        Ok(Self {
            q_proj: Linear::load(h, nq * d, vb.pp("q_proj"))?,
            k_proj: Linear::load(h, nkv * d, vb.pp("k_proj"))?,
            v_proj: Linear::load(h, nkv * d, vb.pp("v_proj"))?,
            o_proj: Linear::load(nq * d, h, vb.pp("o_proj"))?,
            q_norm: GemmaRmsNorm::new(d, cfg.rms_norm_eps, vb.pp("q_norm"))?,
            k_norm: GemmaRmsNorm::new(d, cfg.rms_norm_eps, vb.pp("k_norm"))?,
            num_heads: nq,
            num_kv_heads: nkv,
            head_dim: d,
            scale: cfg.query_pre_attn_scalar.powf(-0.5),
            fused_qk,
        })
    }

    /// The q, k, v and o projections.
    pub fn linears_mut(&mut self) -> [&mut Linear; 4] {
        [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
        ]
    }

    /// `x`: `[tokens, hidden]` of every sequence in `batch`; the new keys and values
    /// go into `kv` at the step's slots before any sequence reads.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        batch: &ForwardBatch,
        kv: (&KvPool, &StepKv),
        layer: usize,
    ) -> Result<Tensor> {
        let (pool, step) = kv;
        let q = self.project_and_write(x, rope, pool, step, layer)?;
        let (nq, d) = (self.num_heads, self.head_dim);
        if let Some(rows) = pool.rows_view(layer, step) {
            // Every sequence's rows in one kernel (`kv_rows`).
            let pools = (rows.k, rows.v);
            let o = paged_rows(
                &q,
                pools,
                rows.slots,
                rows.meta,
                self.num_kv_heads,
                self.scale as f32,
            )?;
            return self.o_proj.forward(&o.reshape((x.dim(0)?, nq * d))?);
        }
        let decoded = self.attend_decodes(&q, pool, step, layer)?;
        if step.all_decode() {
            if let Some(o) = decoded {
                return self.o_proj.forward(&o);
            }
        }
        let mut next_decode = 0;
        let mut outs = Vec::with_capacity(batch.spans.len());
        for (i, span) in batch.spans.iter().enumerate() {
            if span.is_decode() {
                if let Some(o) = &decoded {
                    outs.push(o.narrow(0, next_decode, 1)?);
                    next_decode += 1;
                    continue;
                }
            }
            let qs = q
                .narrow(0, span.offset, span.len)?
                .transpose(0, 1)?
                .contiguous()?;
            let (k_all, v_all, mask) = pool.read(layer, step, i)?;
            let o = self.attend(&qs, &k_all, &v_all, mask.as_ref())?;
            outs.push(o.transpose(0, 1)?.reshape((span.len, nq * d))?);
        }
        self.o_proj.forward(&Tensor::cat(&outs, 0)?)
    }

    /// The queries `[tokens, heads, head_dim]`, normalized and rotated, after the
    /// step's keys (normalized, rotated) and values are written to the pool.
    fn project_and_write(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        pool: &KvPool,
        step: &StepKv,
        layer: usize,
    ) -> Result<Tensor> {
        let t = x.dim(0)?;
        let (nq, nkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = self.q_proj.forward(x)?.reshape((t, nq, d))?;
        let k = self.k_proj.forward(x)?.reshape((t, nkv, d))?;
        let v = self.v_proj.forward(x)?.reshape((t, nkv, d))?;
        if self.fused_qk {
            let (k_pool, v_pool, slots) = pool.write_target(layer, step);
            let target = QkRopeWrite {
                q_w: self.q_norm.scale(),
                k_w: self.k_norm.scale(),
                eps: self.q_norm.eps(),
                rope,
                slots,
                k_pool,
                v_pool,
            };
            return qk_rope_write(&q, &k, &v, &target);
        }
        let q = self.q_norm.forward(&q.unsqueeze(0)?)?;
        let k = self.k_norm.forward(&k.unsqueeze(0)?)?;
        let (q, k) = (rope.apply(&q)?.squeeze(0)?, rope.apply(&k)?.squeeze(0)?);
        pool.write(layer, step, &k, &v)?;
        Ok(q)
    }

    /// Attention of every decoding sequence (one query each) in one batched
    /// product over their gathered keys, padded to the longest and masked:
    /// `[decoding seqs, heads * head_dim]`, or `None` when none decodes.
    fn attend_decodes(
        &self,
        q: &Tensor,
        pool: &KvPool,
        step: &StepKv,
        layer: usize,
    ) -> Result<Option<Tensor>> {
        let (nq, nkv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        if paged_decode::supported(q, d) {
            let Some(view) = pool.decode_table(layer, step)? else {
                return Ok(None);
            };
            let qd = step.decode_queries(q)?;
            let b = qd.dim(0)?;
            let o = paged_decode::paged_decode(
                &qd,
                view.k,
                view.v,
                &view.slots,
                &view.lens,
                nkv,
                self.scale as f32,
            )?;
            return Ok(Some(o.reshape((b, nq * d))?));
        }
        let Some((k, v, mask)) = pool.read_decode(layer, step)? else {
            return Ok(None);
        };
        let b = k.dim(0)?;
        // [seqs, heads, D] → [seqs, kv_heads, group, D]: heads sharing a kv head stacked.
        let qd = step.decode_queries(q)?.reshape((b, nkv, nq / nkv, d))?;
        let mut scores = (qd.matmul(&k.t()?)? * self.scale)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(&mask)?;
        }
        let probs = crate::ops::softmax_in_f32(&scores)?;
        Ok(Some(probs.matmul(&v)?.reshape((b, nq * d))?))
    }

    /// `q`: `[heads, L, D]`, `k`/`v`: `[kv_heads, S, D]`, mask `[L, S]` → `[heads, L, D]`.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (nq, l, d) = q.dims3()?;
        let (nkv, s) = (self.num_kv_heads, k.dim(1)?);
        let group = nq / nkv;
        // Heads sharing a kv head are stacked along the query axis: no repeat_kv copies.
        let q = q.reshape((nkv, group * l, d))?;
        let scores = (q.matmul(&k.t()?)? * self.scale)?;
        let mut scores = scores.reshape((nkv, group, l, s))?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = crate::ops::softmax_in_f32(&scores)?.reshape((nkv, group * l, s))?;
        probs.matmul(v)?.reshape((nq, l, d))
    }
}
