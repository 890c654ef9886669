//! The generator's own PRNG (splitmix64) and bijective integer mixers.
//!
//! Everything here uses integer arithmetic, or floating point with only `+ - * /`, so a seed
//! gives the same stream on every host and every build.

/// splitmix64 (Steele, Lea and Flood): one 64-bit state, passes BigCrush, and is fast.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    pub(crate) fn next_u16(&mut self) -> u16 {
        (self.next_u64() >> 48) as u16
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for our `n`).
    /// `n == 0` gives 0.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)`, 53 bits.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// splitmix64's finaliser: a bijection on `u64` with good avalanche.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A keyed bijection on `0..2^24`: scatters consecutive indices over a /8 without collisions.
pub(crate) fn perm24(mut x: u32, key: u64) -> u32 {
    const MASK: u32 = 0x00ff_ffff;
    for round in 0..3 {
        x ^= (key >> (round * 20)) as u32 & MASK;
        x = x.wrapping_mul(0x0009_e3b5) & MASK; // odd: invertible mod 2^24
        x ^= x >> 11;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perm24_is_a_bijection() {
        let mut seen = vec![false; 1 << 24];
        for x in 0..(1u32 << 24) {
            let y = perm24(x, 0x1234_5678_9abc_def0) as usize;
            assert!(!seen[y], "{x} collides");
            seen[y] = true;
        }
    }

    #[test]
    fn streams_are_reproducible() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let mut r = Rng::new(7);
        assert!(a.iter().all(|&v| v == r.next_u64()));
        let mut r = Rng::new(7);
        assert!((0..10_000).all(|_| r.below(10) < 10 && r.range(3, 5) >= 3));
    }
}
