//! The paged KV pool: every layer's keys and values in fixed-size blocks,
//! allocated once, addressed through the block tables the scheduler hands out.
//!
//! Layers are grouped so that every group has the same number of layers (the
//! number of full-attention layers; sliding layers fill groups of that size): a
//! block id then means the same amount of memory in every group, and all groups
//! draw from one pool. Storage is one tensor per *slot* (the i-th layer of every
//! group), `[(num_blocks + 1) * block_size, kv_heads * head_dim]`. Keys are stored after
//! RoPE. Writes are in place (`scatter_set`); reads gather a sequence's slots.

use candle_core::{DType, Device, Result, Tensor};
use medgemma_core::KvLayout;

use crate::batch::ForwardBatch;
use crate::config::{LayerType, TextConfig};
use crate::kv_rows::{RowsStep, RowsView};
use crate::mask::MaskSpec;

mod reads;

/// Which group and slot each layer uses, and each group's attention window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvGroups {
    pub windows: Vec<Option<usize>>,
    /// `(group, slot)` per layer.
    pub layer_slots: Vec<(usize, usize)>,
    /// Layers per group.
    pub slots: usize,
}

impl KvGroups {
    pub fn new(cfg: &TextConfig) -> Self {
        let full: Vec<usize> = layers_of(cfg, LayerType::Full);
        let sliding: Vec<usize> = layers_of(cfg, LayerType::Sliding);
        let slots = if full.is_empty() {
            sliding.len().max(1)
        } else {
            full.len()
        };
        let mut windows = Vec::new();
        let mut layer_slots = vec![(0, 0); cfg.layer_types.len()];
        let kinds = [(full, None), (sliding, Some(cfg.sliding_window))];
        for (layers, window) in kinds {
            for chunk in layers.chunks(slots) {
                for (slot, &layer) in chunk.iter().enumerate() {
                    layer_slots[layer] = (windows.len(), slot);
                }
                windows.push(window);
            }
        }
        Self {
            windows,
            layer_slots,
            slots,
        }
    }
}

fn layers_of(cfg: &TextConfig, kind: LayerType) -> Vec<usize> {
    (0..cfg.layer_types.len())
        .filter(|&i| cfg.layer_types[i] == kind)
        .collect()
}

/// Bytes of one block: keys and values of `block_size` tokens in every slot.
pub fn bytes_per_block(cfg: &TextConfig, block_size: usize, dtype: DType) -> usize {
    let row = cfg.num_key_value_heads * cfg.head_dim;
    2 * KvGroups::new(cfg).slots * block_size * row * dtype.size_in_bytes()
}

/// Each sequence's first key position and its keys' pool slots.
type SeqKeys = Vec<(usize, Vec<u32>)>;

/// The new tokens' slots `[tokens]`, and broadcast over a row `[tokens, row]` for
/// `scatter_set`.
fn write_index(writes: Vec<u32>, row: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let t = writes.len();
    let slots = Tensor::from_vec(writes, t, device)?;
    let write = slots
        .reshape((t, 1))?
        .broadcast_as((t, row))?
        .contiguous()?;
    Ok((slots, write))
}

/// The pool, allocated once, with one block more than the scheduler hands out:
/// the padding block, which the dummy rows of a padded decode step (a captured
/// CUDA graph's fixed batch) write to and attend over, and no sequence owns.
#[derive(Debug)]
pub struct KvPool {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    groups: KvGroups,
    block_size: usize,
    num_blocks: usize,
    kv_heads: usize,
    head_dim: usize,
    bytes_per_block: usize,
    /// Decode attention reads the pool through the paged kernel, which bounds
    /// each sequence by its length: no padding mask needed.
    paged_decode: bool,
    /// Steps with prefills go through the rows kernel where `kv_rows::worth_it`.
    paged_rows: bool,
}

impl KvPool {
    pub fn new(
        cfg: &TextConfig,
        block_size: usize,
        num_blocks: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let groups = KvGroups::new(cfg);
        let row = cfg.num_key_value_heads * cfg.head_dim;
        let rows = (num_blocks + 1) * block_size;
        let alloc = || Tensor::zeros((rows, row), dtype, device);
        let k = (0..groups.slots).map(|_| alloc()).collect::<Result<_>>()?;
        let v = (0..groups.slots).map(|_| alloc()).collect::<Result<_>>()?;
        Ok(Self {
            k,
            v,
            groups,
            block_size,
            num_blocks,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            bytes_per_block: bytes_per_block(cfg, block_size, dtype),
            paged_decode: crate::paged_decode::serves(device, cfg.head_dim),
            paged_rows: crate::paged_rows::usable(
                device,
                dtype,
                cfg.num_attention_heads,
                cfg.num_key_value_heads,
                cfg.head_dim,
            ),
        })
    }

    /// Turns the rows attention (`paged_rows`) on or off for the steps it suits; on
    /// the CPU its host form runs (for tests: the default there is off).
    pub fn with_paged_rows(mut self, on: bool) -> Self {
        self.paged_rows = on;
        self
    }

    /// Layer groups, each with its own block table per sequence.
    pub fn num_groups(&self) -> usize {
        self.groups.windows.len()
    }

    /// The block no sequence owns (see the type's doc).
    pub fn padding_block(&self) -> usize {
        self.num_blocks
    }

    pub fn layout(&self, max_seq_len: usize) -> KvLayout {
        KvLayout {
            max_seq_len,
            block_size: self.block_size,
            num_blocks: self.num_blocks,
            groups: self.groups.windows.clone(),
            bytes_per_block: self.bytes_per_block,
        }
    }

    /// The slot indices of one step, built on the host and sent to the device once.
    pub fn plan(&self, batch: &ForwardBatch, device: &Device) -> Result<StepKv> {
        self.plan_padded(batch, device, None)
    }

    /// As `plan`; with `decode_width`, every decoding sequence's key table is
    /// padded to that many keys (and its mask made, where decode attention needs
    /// one), so that steps of the same batch size have tensors of the same shapes.
    pub fn plan_padded(
        &self,
        batch: &ForwardBatch,
        device: &Device,
        decode_width: Option<usize>,
    ) -> Result<StepKv> {
        let row = self.kv_heads * self.head_dim;
        let dtype = self.k[0].dtype();
        let rows = self.paged_rows && crate::kv_rows::worth_it(batch);
        // Masks depend on the window only: built once per distinct window.
        let mut masks: Vec<(Option<usize>, Vec<Option<Tensor>>)> = Vec::new();
        let mut groups = Vec::with_capacity(self.groups.windows.len());
        for (g, &window) in self.groups.windows.iter().enumerate() {
            let known = masks.iter().find(|(w, _)| *w == window).map(|(_, m)| m);
            let step = if rows {
                self.plan_group_rows(g, batch, row, device)?
            } else {
                self.plan_group(g, batch, (row, decode_width), device, dtype, known)?
            };
            if known.is_none() {
                masks.push((window, step.reads.iter().map(|r| r.mask.clone()).collect()));
            }
            groups.push(step);
        }
        let decode_rows = batch
            .spans
            .iter()
            .filter(|s| s.is_decode())
            .map(|s| s.offset as u32)
            .collect::<Vec<_>>();
        let all_decode = decode_rows.len() == batch.spans.len();
        let decode_rows = if decode_rows.is_empty() || all_decode {
            None
        } else {
            Some(Tensor::new(decode_rows.as_slice(), device)?)
        };
        Ok(StepKv {
            groups,
            decode_rows,
            all_decode,
        })
    }

    /// Group `g`'s slots for the step: where each new token is written, and each
    /// sequence's keys (its first key's position and the keys' slots).
    fn group_slots(&self, g: usize, batch: &ForwardBatch) -> Result<(Vec<u32>, SeqKeys)> {
        let window = self.groups.windows[g];
        let mut writes = Vec::with_capacity(batch.num_tokens());
        let mut keys = Vec::with_capacity(batch.spans.len());
        for (i, span) in batch.spans.iter().enumerate() {
            let end = span.start_pos + span.len;
            let k_start = reads::key_start(window, span.start_pos);
            writes.extend(self.slots(batch, i, g, span.start_pos..end)?);
            keys.push((k_start, self.slots(batch, i, g, k_start..end)?));
        }
        Ok((writes, keys))
    }

    fn plan_group(
        &self,
        g: usize,
        batch: &ForwardBatch,
        (row, decode_width): (usize, Option<usize>),
        device: &Device,
        dtype: DType,
        masks: Option<&Vec<Option<Tensor>>>,
    ) -> Result<GroupStep> {
        let window = self.groups.windows[g];
        let (writes, keys) = self.group_slots(g, batch)?;
        let mut read_slots = Vec::new();
        let mut reads = Vec::with_capacity(batch.spans.len());
        let mut decode = Vec::new();
        for (i, (span, (k_start, slots))) in batch.spans.iter().zip(keys).enumerate() {
            let mask = match masks {
                Some(known) => known.get(i).cloned().flatten(),
                None if span.is_decode() => None,
                None => {
                    MaskSpec::of_span(span, k_start, slots.len(), window).build(dtype, device)?
                }
            };
            reads.push(SeqRead {
                offset: read_slots.len(),
                len: slots.len(),
                mask,
            });
            if span.is_decode() {
                decode.push((i, slots));
            } else {
                read_slots.extend(slots);
            }
        }
        let (slots, write) = write_index(writes, row, device)?;
        let n = read_slots.len();
        Ok(GroupStep {
            slots,
            write,
            read: Tensor::from_vec(read_slots, n, device)?,
            rows: None,
            reads,
            decode: DecodeGather::new(
                decode,
                DecodeShape {
                    // A sliding group's sequences never hold more keys than its window.
                    width: decode_width.map(|w| window.map_or(w, |win| w.min(win))),
                    masked: !self.paged_decode,
                },
                device,
                dtype,
            )?,
        })
    }

    /// As `plan_group`, with the reads as rows for the rows kernel (no gathers,
    /// no masks, no decode table).
    fn plan_group_rows(
        &self,
        g: usize,
        batch: &ForwardBatch,
        row: usize,
        device: &Device,
    ) -> Result<GroupStep> {
        let (writes, keys) = self.group_slots(g, batch)?;
        let (slots, write) = write_index(writes, row, device)?;
        Ok(GroupStep {
            slots,
            write,
            read: Tensor::zeros(0, DType::U32, device)?,
            rows: Some(crate::kv_rows::plan(
                batch,
                keys,
                self.groups.windows[g],
                device,
            )?),
            reads: Vec::new(),
            decode: None,
        })
    }

    /// Pool slots of positions `range` of sequence `i` in group `g`.
    fn slots(
        &self,
        batch: &ForwardBatch,
        i: usize,
        g: usize,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<u32>> {
        let span = &batch.spans[i];
        let table = span.block_tables.get(g);
        let limit = (self.num_blocks + 1) * self.block_size;
        range
            .map(
                |pos| match table.and_then(|t| t.slot(pos, self.block_size)) {
                    Some(s) if s < limit => Ok(s as u32),
                    _ => candle_core::bail!(
                        "the block table of sequence {i}, group {g}, does not hold position {pos}"
                    ),
                },
            )
            .collect()
    }

    /// Writes one layer's new keys and values (`[tokens, kv_heads, head_dim]`).
    pub fn write(&self, layer: usize, step: &StepKv, k: &Tensor, v: &Tensor) -> Result<()> {
        let (g, slot) = self.groups.layer_slots[layer];
        let idx = &step.groups[g].write;
        let t = k.dim(0)?;
        let row = self.kv_heads * self.head_dim;
        self.k[slot].scatter_set(idx, &k.reshape((t, row))?.contiguous()?, 0)?;
        self.v[slot].scatter_set(idx, &v.reshape((t, row))?.contiguous()?, 0)?;
        Ok(())
    }

    /// Where `layer`'s new keys and values go, for kernels that write them
    /// themselves: the layer's key and value pools (`[pool slots, kv_heads *
    /// head_dim]`) and the slot of every new token (`[tokens]` u32).
    pub fn write_target<'a>(
        &'a self,
        layer: usize,
        step: &'a StepKv,
    ) -> (&'a Tensor, &'a Tensor, &'a Tensor) {
        let (g, slot) = self.groups.layer_slots[layer];
        (&self.k[slot], &self.v[slot], &step.groups[g].slots)
    }

    /// Keys and values prefill sequence `i` attends to in `layer` (`[kv_heads,
    /// keys, head_dim]`), with the additive mask of its queries over them (`None`:
    /// every key visible).
    pub fn read(
        &self,
        layer: usize,
        step: &StepKv,
        i: usize,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (g, slot) = self.groups.layer_slots[layer];
        let gs = &step.groups[g];
        let r = &gs.reads[i];
        let idx = gs.read.narrow(0, r.offset, r.len)?;
        let gather = |pool: &Tensor| {
            pool.index_select(&idx, 0)?
                .reshape((r.len, self.kv_heads, self.head_dim))?
                .transpose(0, 1)?
                .contiguous()
        };
        Ok((
            gather(&self.k[slot])?,
            gather(&self.v[slot])?,
            r.mask.clone(),
        ))
    }

    /// Keys and values of every decoding sequence of the step, padded to the
    /// longest: `[seqs, kv_heads, keys, head_dim]`, with the padding mask
    /// `[seqs, 1, 1, keys]` (`None` when no sequence is padded).
    pub fn read_decode(
        &self,
        layer: usize,
        step: &StepKv,
    ) -> Result<Option<(Tensor, Tensor, Option<Tensor>)>> {
        let (g, slot) = self.groups.layer_slots[layer];
        let Some(d) = &step.groups[g].decode else {
            return Ok(None);
        };
        let gather = |pool: &Tensor| {
            pool.index_select(&d.idx, 0)?
                .reshape((d.seqs, d.keys, self.kv_heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        Ok(Some((
            gather(&self.k[slot])?,
            gather(&self.v[slot])?,
            d.mask.clone(),
        )))
    }
}

impl KvPool {
    /// The step's rows in `layer`'s group, with the layer's pools, when the step
    /// goes through the rows kernel.
    pub fn rows_view<'a>(&'a self, layer: usize, step: &'a StepKv) -> Option<RowsView<'a>> {
        let (g, slot) = self.groups.layer_slots[layer];
        let rows = step.groups[g].rows.as_ref()?;
        Some(RowsView {
            k: &self.k[slot],
            v: &self.v[slot],
            slots: &rows.slots,
            meta: &rows.meta,
        })
    }

    /// The decoding sequences' slot table `[seqs, keys]` and key counts `[seqs]`
    /// in `layer`'s group, with the layer's key and value pools, for attention
    /// that reads the pool in place.
    pub fn decode_table(&self, layer: usize, step: &StepKv) -> Result<Option<PagedView<'_>>> {
        let (g, slot) = self.groups.layer_slots[layer];
        let Some(d) = &step.groups[g].decode else {
            return Ok(None);
        };
        Ok(Some(PagedView {
            k: &self.k[slot],
            v: &self.v[slot],
            slots: d.idx.reshape((d.seqs, d.keys))?,
            lens: d.lens.clone(),
        }))
    }
}

/// One layer's pools and the decoding sequences' slot table.
#[derive(Debug)]
pub struct PagedView<'a> {
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub slots: Tensor,
    pub lens: Tensor,
}

/// How the decoding sequences' key tables are laid out.
#[derive(Debug, Clone, Copy)]
struct DecodeShape {
    /// Keys per row; `None`: the longest sequence's.
    width: Option<usize>,
    /// Build the padding mask (attention that does not bound rows by their lengths).
    masked: bool,
}

/// The decoding sequences' key slots, padded to the longest (or a fixed width).
#[derive(Debug)]
struct DecodeGather {
    seqs: usize,
    keys: usize,
    /// `[seqs * keys]` slots; padding repeats a sequence's last slot.
    idx: Tensor,
    /// Keys of each sequence, `[seqs]`.
    lens: Tensor,
    mask: Option<Tensor>,
}

impl DecodeGather {
    fn new(
        rows: Vec<(usize, Vec<u32>)>,
        shape: DecodeShape,
        device: &Device,
        dtype: DType,
    ) -> Result<Option<Self>> {
        let Some(longest) = rows.iter().map(|(_, s)| s.len()).max() else {
            return Ok(None);
        };
        let keys = shape.width.unwrap_or(longest);
        if keys < longest {
            candle_core::bail!("a decode table of {keys} keys cannot hold {longest}")
        }
        let seqs = rows.len();
        let mut idx = Vec::with_capacity(seqs * keys);
        let mut mask = Vec::with_capacity(seqs * keys);
        let lens: Vec<u32> = rows.iter().map(|(_, s)| s.len() as u32).collect();
        for (_, slots) in &rows {
            let last = slots.last().copied().unwrap_or(0);
            idx.extend_from_slice(slots);
            idx.extend(std::iter::repeat_n(last, keys - slots.len()));
            mask.extend(std::iter::repeat_n(0f32, slots.len()));
            mask.extend(std::iter::repeat_n(f32::NEG_INFINITY, keys - slots.len()));
        }
        let padded = rows.iter().any(|(_, s)| s.len() != keys);
        let mask = if shape.masked && (padded || shape.width.is_some()) {
            Some(Tensor::from_vec(mask, (seqs, 1, 1, keys), device)?.to_dtype(dtype)?)
        } else {
            None
        };
        Ok(Some(Self {
            seqs,
            keys,
            idx: Tensor::from_vec(idx, seqs * keys, device)?,
            lens: Tensor::new(lens.as_slice(), device)?,
            mask,
        }))
    }
}

/// One step's slot indices, per group.
#[derive(Debug)]
pub struct StepKv {
    groups: Vec<GroupStep>,
    /// Packed rows of the decoding sequences, when some sequences are not decoding.
    decode_rows: Option<Tensor>,
    all_decode: bool,
}

impl StepKv {
    /// The decoding sequences' queries out of the step's packed rows.
    pub fn decode_queries(&self, q: &Tensor) -> Result<Tensor> {
        match &self.decode_rows {
            Some(rows) => q.index_select(rows, 0),
            None => Ok(q.clone()),
        }
    }

    pub fn all_decode(&self) -> bool {
        self.all_decode
    }

    /// Every tensor of the step, in a fixed order.
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut out: Vec<&Tensor> = self.decode_rows.iter().collect();
        for g in &self.groups {
            out.extend([&g.slots, &g.write, &g.read]);
            out.extend(g.rows.iter().flat_map(|r| [&r.slots, &r.meta]));
            out.extend(g.reads.iter().filter_map(|r| r.mask.as_ref()));
            if let Some(d) = &g.decode {
                out.extend([&d.idx, &d.lens]);
                out.extend(d.mask.as_ref());
            }
        }
        out
    }
}

#[derive(Debug)]
struct GroupStep {
    /// Slot of every new token: `[tokens]`.
    slots: Tensor,
    /// The same, broadcast over the row: `[tokens, row]`.
    write: Tensor,
    /// Slots every prefilling sequence reads, concatenated.
    read: Tensor,
    /// The step as rows for the rows kernel (then `reads` and `decode` are empty).
    rows: Option<RowsStep>,
    reads: Vec<SeqRead>,
    decode: Option<DecodeGather>,
}

#[derive(Debug)]
struct SeqRead {
    offset: usize,
    len: usize,
    /// The prefill chunk's mask (decoding sequences need none).
    mask: Option<Tensor>,
}
