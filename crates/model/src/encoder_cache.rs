//! Image features kept on the device after the vision tower computed them, keyed
//! by the image's content hash (`ImageInput::key`: its pixels and shape), so the
//! same image in another request is not encoded again. The prefix cache already
//! spares an image that sits in a reused prefix; this one covers the same image
//! after different text (another question about the same X-ray, a new
//! conversation). Bounded in bytes; the least recently used features go first.

use std::collections::HashMap;

use candle_core::Tensor;
use medgemma_core::BlockHash;

/// Default bound: about 48 MedGemma 4B images in bf16.
pub const DEFAULT_ENCODER_CACHE_BYTES: usize = 64 << 20;

struct Entry {
    features: Tensor,
    bytes: usize,
    last_use: u64,
}

pub struct EncoderCache {
    entries: HashMap<BlockHash, Entry>,
    limit: usize,
    bytes: usize,
    clock: u64,
    hits: u64,
}

impl EncoderCache {
    /// A cache of at most `limit` bytes (0: nothing is kept).
    pub fn new(limit: usize) -> Self {
        Self {
            entries: HashMap::new(),
            limit,
            bytes: 0,
            clock: 0,
            hits: 0,
        }
    }

    /// The features of the image keyed `key`, if kept.
    pub fn get(&mut self, key: BlockHash) -> Option<Tensor> {
        self.clock += 1;
        let e = self.entries.get_mut(&key)?;
        e.last_use = self.clock;
        self.hits += 1;
        Some(e.features.clone())
    }

    /// Keeps `features` (one image's `[tokens, hidden]`, in storage of its own)
    /// under `key`, evicting the least recently used until they fit.
    pub fn insert(&mut self, key: BlockHash, features: Tensor) {
        let bytes = features.elem_count() * features.dtype().size_in_bytes();
        if bytes > self.limit || self.entries.contains_key(&key) {
            return;
        }
        while self.bytes + bytes > self.limit {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_use)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= e.bytes;
            }
        }
        self.clock += 1;
        self.bytes += bytes;
        self.entries.insert(
            key,
            Entry {
                features,
                bytes,
                last_use: self.clock,
            },
        );
    }

    /// Images kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Images served from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn features(v: f32) -> Tensor {
        // 4 x 8 f32: 128 bytes.
        Tensor::full(v, (4, 8), &Device::Cpu).unwrap()
    }

    fn value(t: &Tensor) -> f32 {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
    }

    #[test]
    fn keeps_what_fits_and_evicts_the_least_recently_used() {
        let mut c = EncoderCache::new(256);
        c.insert(1, features(1.0));
        c.insert(2, features(2.0));
        assert_eq!(c.get(1).map(|t| value(&t)), Some(1.0));
        c.insert(3, features(3.0));
        assert!(c.get(2).is_none(), "2 was used least recently");
        assert_eq!(c.get(3).map(|t| value(&t)), Some(3.0));
        assert_eq!((c.len(), c.hits()), (2, 2));
        let big = Tensor::zeros((64, 8), DType::F32, &Device::Cpu).unwrap();
        c.insert(4, big);
        assert!(c.get(4).is_none(), "larger than the whole cache");
        let mut off = EncoderCache::new(0);
        off.insert(1, features(1.0));
        assert!(off.is_empty());
    }
}
