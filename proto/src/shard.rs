//! The shard function: which processor owns a flow.
//!
//! `shard(key, n) = jump(flow_hash(key), n)`, where
//! - `flow_hash` is SipHash-1-3 keyed with [`HASH_KEYS`] over the 39 bytes of
//!   [`FlowKey::to_bytes`] (fixed layout, little-endian ports), so every build on every host
//!   agrees, unlike Rust's randomly seeded `DefaultHasher`;
//! - `jump` is Lamping and Veach's jump consistent hash (the `jumphash` crate's loop, fed the
//!   64-bit hash directly).
//!
//! Both directions of a flow share a [`FlowKey`], so they share a shard. Going from `n` to
//! `n + 1` shards moves about `1 / (n + 1)` of the keys, all of them to the new shard.

use std::hash::Hasher;

use jumphash::CustomJumpHasher;
use siphasher::sip::SipHasher13;

use crate::key::FlowKey;

/// SipHash-1-3 keys: the ASCII of "tapflow!" and "flowkey1", little-endian.
pub const HASH_KEYS: (u64, u64) = (0x2177_6f6c_6670_6174, 0x3179_656b_776f_6c66);

/// The fixed 64-bit hash of a canonical key.
pub fn flow_hash(key: &FlowKey) -> u64 {
    let mut h = SipHasher13::new_with_keys(HASH_KEYS.0, HASH_KEYS.1);
    h.write(&key.to_bytes());
    h.finish()
}

/// The shard (processor index in `0..n`) that owns `key`. `n == 0` is treated as 1.
pub fn shard(key: &FlowKey, n: u16) -> u16 {
    shard_of_hash(flow_hash(key), n)
}

/// Jump consistent hash of an already computed [`flow_hash`].
pub fn shard_of_hash(hash: u64, n: u16) -> u16 {
    let jump = CustomJumpHasher::new(Passthrough(0));
    // `slot` is < n <= u16::MAX, so the narrowing is lossless.
    jump.slot(&hash, u32::from(n.max(1))) as u16
}

/// A "hasher" that hands the jump loop the 64-bit value it was given, unchanged.
#[derive(Clone, Copy)]
struct Passthrough(u64);

impl Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lamping & Veach's reference implementation, written out, to check the crate against.
    fn reference_jump(mut key: u64, buckets: i32) -> i32 {
        let (mut b, mut j) = (-1i64, 0i64);
        while j < i64::from(buckets) {
            b = j;
            key = key.wrapping_mul(2862933555777941757).wrapping_add(1);
            j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
        }
        b as i32
    }

    #[test]
    fn matches_reference_jump() {
        for h in [0u64, 1, 42, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            for n in 1..=64u16 {
                assert_eq!(
                    i32::from(shard_of_hash(h, n)),
                    reference_jump(h, i32::from(n)),
                    "h={h} n={n}"
                );
            }
        }
    }

    #[test]
    fn zero_shards_means_one() {
        assert_eq!(shard(&FlowKey::default(), 0), 0);
    }
}
