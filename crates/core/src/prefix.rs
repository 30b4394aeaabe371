//! Content hashes for prefix caching: a KV block is reusable by another sequence
//! exactly when everything that went into it is the same, which is the chain of
//! all tokens up to the block's end, the images whose soft tokens lie in it (an
//! image's tokens attend to the whole image), and the request's cache salt.
//!
//! Hashes are 128 bits from two SipHash instances with keys drawn at random when
//! the process starts, so a client cannot craft a collision with another
//! request's prefix, and two different prefixes share a hash with probability
//! about 2^-128.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// The content hash of a full KV block (with everything before it), or of an image.
pub type BlockHash = u128;

fn keys() -> &'static [RandomState; 2] {
    static KEYS: OnceLock<[RandomState; 2]> = OnceLock::new();
    KEYS.get_or_init(|| [RandomState::new(), RandomState::new()])
}

/// Feeds the same bytes to both halves of a 128-bit hash.
struct Hash128([std::hash::DefaultHasher; 2]);

impl Hash128 {
    fn new(domain: u8) -> Self {
        let [a, b] = keys();
        let mut h = Self([a.build_hasher(), b.build_hasher()]);
        h.bytes(&[domain]);
        h
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for h in &mut self.0 {
            h.write(bytes);
        }
    }

    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    fn u128(&mut self, v: u128) {
        self.bytes(&v.to_le_bytes());
    }

    fn finish(&self) -> BlockHash {
        ((self.0[0].finish() as u128) << 64) | self.0[1].finish() as u128
    }
}

/// The hash every sequence's chain starts from: requests with different salts
/// (or one with and one without) never share a block.
pub fn chain_root(salt: Option<&str>) -> BlockHash {
    let mut h = Hash128::new(0);
    if let Some(salt) = salt {
        h.u64(salt.len() as u64);
        h.bytes(salt.as_bytes());
    }
    h.finish()
}

/// The hash of a block of `tokens` that follows the block hashed `parent`;
/// `images` holds the key and first soft-token position of every image with a
/// soft token in the block.
pub fn block_hash(parent: BlockHash, tokens: &[u32], images: &[(BlockHash, usize)]) -> BlockHash {
    let mut h = Hash128::new(1);
    h.u128(parent);
    h.u64(tokens.len() as u64);
    let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    h.bytes(&bytes);
    for &(key, start) in images {
        h.u128(key);
        h.u64(start as u64);
    }
    h.finish()
}

/// An image key as requests with `salt` see it: the same image under two salts
/// has two keys, so no cache (prefix or encoder) serves one tenant's image to
/// another.
pub fn salted(key: BlockHash, salt: &str) -> BlockHash {
    let mut h = Hash128::new(3);
    h.u128(key);
    h.u64(salt.len() as u64);
    h.bytes(salt.as_bytes());
    h.finish()
}

/// The key of an image's preprocessed pixels (and their shape).
pub fn image_key(pixels: &[f32], channels: usize, height: usize, width: usize) -> BlockHash {
    let mut h = Hash128::new(2);
    for d in [channels, height, width, pixels.len()] {
        h.u64(d as u64);
    }
    let mut buf = Vec::with_capacity(4096);
    for chunk in pixels.chunks(1024) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|p| p.to_bits().to_le_bytes()));
        h.bytes(&buf);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_hash_covers_its_parent_tokens_and_images() {
        let root = chain_root(None);
        let a = block_hash(root, &[1, 2, 3], &[]);
        assert_eq!(a, block_hash(root, &[1, 2, 3], &[]), "deterministic");
        assert_ne!(a, block_hash(root, &[1, 2, 4], &[]));
        assert_ne!(a, block_hash(chain_root(Some("tenant")), &[1, 2, 3], &[]));
        assert_ne!(a, block_hash(a, &[1, 2, 3], &[]));
        let img = image_key(&[0.5; 12], 3, 2, 2);
        let with = block_hash(root, &[1, 2, 3], &[(img, 1)]);
        assert_ne!(a, with);
        assert_ne!(with, block_hash(root, &[1, 2, 3], &[(img, 0)]));
        let other = image_key(&[0.25; 12], 3, 2, 2);
        assert_ne!(with, block_hash(root, &[1, 2, 3], &[(other, 1)]));
    }

    #[test]
    fn an_image_key_covers_every_pixel_and_the_shape() {
        let mut px = vec![0.0f32; 3 * 40 * 40];
        let base = image_key(&px, 3, 40, 40);
        assert_ne!(base, image_key(&px, 3, 20, 80));
        let last = px.len() - 1;
        px[last] = 1e-7;
        assert_ne!(base, image_key(&px, 3, 40, 40));
        px[last] = -0.0;
        assert_ne!(base, image_key(&px, 3, 40, 40), "bits, not values");
        assert_ne!(salted(base, "a"), salted(base, "b"));
        assert_ne!(salted(base, "a"), base);
        assert_eq!(salted(base, "a"), salted(base, "a"));
    }
}
