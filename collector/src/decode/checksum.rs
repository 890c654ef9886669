//! The Internet checksum (RFC 1071): a one's-complement sum of 16-bit words.
//!
//! The sum is byte-order independent (RFC 1071 §2(B)), so [`Sum`] adds native-endian 64-bit
//! words with end-around carry and only a computed checksum is swapped back to network order.
//! Verifying needs no swap at all: a packet whose checksum field is right sums to `0xffff`.
//! Pieces added one after another (pseudo-header, then the segment) must each have an even
//! length, except the last; every piece tapflow adds (addresses, 4- or 8-byte pseudo-header
//! tails) does.

/// A running one's-complement sum, not yet folded.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Sum(u128);

impl Sum {
    /// Adds `bytes`; an odd final byte is padded with zero, as the RFC says.
    #[inline(always)]
    pub(super) fn add(self, bytes: &[u8]) -> Sum {
        // Native-endian 64-bit words into 128 bits: an add and an add-with-carry each, and
        // 2^64 words would be needed to overflow.
        let mut sum = self.0;
        let mut rest = bytes;
        if rest.len() >= 64 {
            // Long payloads: four independent accumulators, so the adds do not wait on each
            // other's carries.
            let mut acc = [0u128; 4];
            let mut blocks = rest.chunks_exact(32);
            for block in &mut blocks {
                for (a, w) in acc.iter_mut().zip(block.chunks_exact(8)) {
                    *a = a.wrapping_add(u128::from(ne64(w)));
                }
            }
            let [a, b, c, d] = acc;
            sum = sum
                .wrapping_add(a)
                .wrapping_add(b)
                .wrapping_add(c)
                .wrapping_add(d);
            rest = blocks.remainder();
        }
        while let Some((w, after)) = rest.split_first_chunk::<8>() {
            sum = sum.wrapping_add(u128::from(u64::from_ne_bytes(*w)));
            rest = after;
        }
        // The last 0-7 bytes start at an even offset. Native-endian pieces of 4 and 2 bytes keep
        // each byte in its half of its 16-bit word, and a last odd byte is the word `[byte, 0]`.
        // (Where a word lands in the accumulator does not matter once folded: 2^16 = 1 modulo
        // 0xffff.)
        if let Some((w, after)) = rest.split_first_chunk::<4>() {
            sum = sum.wrapping_add(u128::from(u32::from_ne_bytes(*w)));
            rest = after;
        }
        if let Some((w, after)) = rest.split_first_chunk::<2>() {
            sum = sum.wrapping_add(u128::from(u16::from_ne_bytes(*w)));
            rest = after;
        }
        if let Some(&last) = rest.first() {
            sum = sum.wrapping_add(u128::from(u16::from_ne_bytes([last, 0])));
        }
        Sum(sum)
    }

    /// The sum folded to 16 bits (in native word order).
    #[inline]
    pub(super) fn fold(self) -> u16 {
        // 128 to 64 bits with the end-around carry, then halve the width down to 16.
        let (lo, carry) = (self.0 as u64).overflowing_add((self.0 >> 64) as u64);
        let s = lo.wrapping_add(u64::from(carry));
        let s = (s & 0xffff_ffff) + (s >> 32);
        let s = (s & 0xffff) + (s >> 16);
        let s = (s & 0xffff) + (s >> 16);
        let s = (s & 0xffff) + (s >> 16);
        // Three folds from below 2^33 leave at most 0xffff.
        s as u16
    }

    /// True when the covered bytes, checksum field included, are consistent.
    #[inline]
    pub(super) fn is_valid(self) -> bool {
        self.fold() == 0xffff
    }

    /// The checksum to write into a packet, in network byte order (as read with
    /// `u16::from_be_bytes`).
    #[cfg(test)]
    pub(super) fn checksum(self) -> u16 {
        u16::from_be(!self.fold())
    }
}

/// The TCP/UDP/ICMPv6 pseudo-header over IPv4 or IPv6 (RFC 793, RFC 8200 §8.1): addresses,
/// protocol and the upper-layer length. `src` and `dst` are 4 or 16 bytes.
#[inline]
pub(super) fn pseudo_header(src: &[u8], dst: &[u8], proto: u8, len: u32) -> Sum {
    let [a, b, hi, lo] = len.to_be_bytes();
    let tail = if src.len() == 4 {
        // IPv4: zero, protocol, 16-bit length (lengths here come from 16-bit fields).
        u128::from(u32::from_ne_bytes([0, proto, hi, lo]))
    } else {
        // IPv6: 32-bit length, three zero bytes, next header. Added in 128 bits: a 32-bit
        // add would lose the carry when the length's low byte plus the next header reach 256.
        u128::from(u32::from_ne_bytes([a, b, hi, lo]))
            + u128::from(u32::from_ne_bytes([0, 0, 0, proto]))
    };
    Sum(tail).add(src).add(dst)
}

#[inline(always)]
fn ne64(bytes: &[u8]) -> u64 {
    bytes.try_into().map_or(0, u64::from_ne_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A straightforward RFC 1071 reference: big-endian 16-bit words, carries folded.
    fn reference(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair.first().copied().unwrap_or(0));
            let lo = u32::from(pair.get(1).copied().unwrap_or(0));
            sum += (hi << 8) | lo;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn check(bytes: &[u8], expected: u16) {
        assert_eq!(
            Sum::default().add(bytes).checksum(),
            expected,
            "{bytes:02x?}"
        );
        assert_eq!(
            reference(bytes),
            expected,
            "reference disagrees on {bytes:02x?}"
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap_or("0"), 16).unwrap_or(0))
            .collect()
    }

    #[test]
    fn known_values() {
        // RFC 1071 §3's example words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is !ddf2.
        check(&hex("0001 f203 f4f5 f6f7"), 0x220d);
        check(&[], 0xffff);
        check(&[0xff], 0x00ff);
        check(&[0x12, 0x34, 0x56], !(0x1234u16 + 0x5600));
        // An IPv4 header (Wikipedia's example) with its checksum field zeroed: b861.
        check(
            &hex("4500 0073 0000 4000 4011 0000 c0a8 0001 c0a8 00c7"),
            0xb861,
        );
    }

    #[test]
    fn known_packet_verifies() {
        // The same header with its checksum in place, and a real UDP datagram (DNS query,
        // 10.0.0.1:35000 -> 10.0.0.2:53) whose checksum was computed by Linux.
        let ip = hex("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7");
        assert!(Sum::default().add(&ip).is_valid());
        let mut udp = hex("88b8 0035 0011 0000 6162 6364 6566 6768 69");
        let sum = pseudo_header(&[10, 0, 0, 1], &[10, 0, 0, 2], 17, 17).add(&udp);
        let field = sum.checksum().to_be_bytes();
        udp[6] = field[0];
        udp[7] = field[1];
        assert!(pseudo_header(&[10, 0, 0, 1], &[10, 0, 0, 2], 17, 17)
            .add(&udp)
            .is_valid());
        udp[9] ^= 1;
        assert!(!pseudo_header(&[10, 0, 0, 1], &[10, 0, 0, 2], 17, 17)
            .add(&udp)
            .is_valid());
    }

    /// Regression: the IPv6 pseudo-header lost a carry when the length's low byte plus the
    /// next header reached 256 (found by the benchmark generator's IPv6 flows).
    #[test]
    fn ipv6_pseudo_header_keeps_its_carries() {
        let src = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe,
        ];
        let dst = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd];
        for len in (0u32..70_000).step_by(7).chain([250, 255, 1_000_000]) {
            for proto in [6u8, 17, 58, 255] {
                let mut bytes = Vec::new();
                bytes.extend_from_slice(&src);
                bytes.extend_from_slice(&dst);
                bytes.extend_from_slice(&len.to_be_bytes());
                bytes.extend_from_slice(&[0, 0, 0, proto]);
                assert_eq!(
                    pseudo_header(&src, &dst, proto, len).checksum(),
                    reference(&bytes),
                    "len {len} proto {proto}"
                );
            }
        }
    }

    #[test]
    fn agrees_with_reference_on_every_length_and_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 13) as u8 ^ 0xa5).collect();
        for len in 0..data.len() {
            let bytes = &data[..len];
            check(bytes, reference(bytes));
            // Even-length pieces added one after another give the same sum.
            let split = (len / 2) & !1;
            let (a, b) = bytes.split_at(split);
            assert_eq!(
                Sum::default().add(a).add(b).checksum(),
                reference(bytes),
                "split at {split} of {len}"
            );
        }
    }

    #[test]
    fn all_ones_data_does_not_overflow() {
        let data = vec![0xffu8; 65_536];
        check(&data, reference(&data));
    }
}
