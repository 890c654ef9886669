//! The shard function: which processor owns a flow.
//!
//! `shard(key, n) = jump(flow_hash(key), n)`, where
//! - `flow_hash` is a fixed multiply-xorshift hash of the canonical key, identical on every
//!   build and host (unlike Rust's randomly seeded `DefaultHasher`): the key is read as five
//!   little-endian 64-bit words, `lo[0..8]`, `lo[8..16]`, `hi[0..8]`, `hi[8..16]` (addresses
//!   in their 16-byte form) and `proto | lo_port << 8 | hi_port << 24 | vlan << 40`; starting
//!   from [`HASH_SEED`], each word is folded in as `h = (h ^ w) * K; h ^= h >> 29` with
//!   `K` = [`HASH_MULTIPLIER`], and the result is finished with MurmurHash3's `fmix64`;
//! - `jump` is Lamping and Veach's jump consistent hash (the `jumphash` crate's loop, fed the
//!   64-bit hash directly).
//!
//! Both directions of a flow share a [`FlowKey`], so they share a shard. Going from `n` to
//! `n + 1` shards moves about `1 / (n + 1)` of the keys, all of them to the new shard. The hash
//! is not keyed: like any public hash it can be aimed at by someone who knows it; it balances
//! traffic, it does not defend against an adversary choosing five-tuples.

use std::hash::Hasher;

use jumphash::CustomJumpHasher;

use crate::key::FlowKey;

/// Starting value of [`flow_hash`]: the ASCII of "tapflow!", little-endian.
pub const HASH_SEED: u64 = 0x2177_6f6c_6670_6174;
/// Multiplier of [`flow_hash`] (2^64 / golden ratio, odd).
pub const HASH_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

/// The fixed 64-bit hash of a canonical key.
#[inline]
pub fn flow_hash(key: &FlowKey) -> u64 {
    let word = |b: &[u8; 16], i: usize| {
        u64::from_le_bytes([
            b[i],
            b[i + 1],
            b[i + 2],
            b[i + 3],
            b[i + 4],
            b[i + 5],
            b[i + 6],
            b[i + 7],
        ])
    };
    let tail = u64::from(key.proto)
        | u64::from(key.lo_port) << 8
        | u64::from(key.hi_port) << 24
        | u64::from(key.vlan) << 40;
    let mut h = HASH_SEED;
    for w in [
        word(&key.lo.0, 0),
        word(&key.lo.0, 8),
        word(&key.hi.0, 0),
        word(&key.hi.0, 8),
        tail,
    ] {
        h = (h ^ w).wrapping_mul(HASH_MULTIPLIER);
        h ^= h >> 29;
    }
    fmix64(h)
}

/// MurmurHash3's 64-bit finaliser.
#[inline]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
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
