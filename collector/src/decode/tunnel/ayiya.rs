//! AYIYA ("Anything In Anything", SixXS): IPv4 or IPv6 in UDP, as Zeek's AYIYA analyzer reads
//! it. An 8-byte header, then an identity of `1 << (first byte >> 4)` bytes and a signature of
//! `4 × (second byte >> 4)` bytes. Only the forward operation (opcode 1) carries a packet, of
//! the protocol in the fourth byte: 4 (IPv4) or 41 (IPv6) are decoded, anything else is
//! counted as `NonIp`. Other operations (heartbeats, queries) are no tunnel.
//!
//! Zeek looks for AYIYA on UDP port 5072 and, on ports no tunnel is registered for, in any
//! datagram whose second and third bytes are 0x52 0x11 ([`looks_like`]: a SHA-1 signature, a
//! shared-secret authentication, the forward operation).

use tapflow_proto::DropReason;

use super::{Inner, Tunnel};

pub(super) fn ayiya(data: &[u8]) -> Tunnel<'_> {
    let (Some(&ids), Some(&sig), Some(&op), Some(&next)) =
        (data.first(), data.get(1), data.get(2), data.get(3))
    else {
        return Tunnel::Bad;
    };
    let identity = 1usize << (ids >> 4);
    let signature = usize::from(sig >> 4) * 4;
    let Some(inner) = data.get(FIXED + identity + signature..) else {
        return Tunnel::Bad;
    };
    if op & 0x0f != FORWARD {
        return Tunnel::No;
    }
    match next {
        _ if inner.is_empty() => Tunnel::Bad,
        IPV4 | IPV6 => Tunnel::Inner(Inner::Ip(inner)),
        _ => Tunnel::Skip(DropReason::NonIp),
    }
}

/// Zeek's AYIYA detection for a UDP payload on a port without a registered tunnel.
pub(super) fn looks_like(data: &[u8]) -> bool {
    data.get(1..3) == Some(&[0x52, 0x11][..])
}

const FIXED: usize = 8;
const FORWARD: u8 = 1;
const IPV4: u8 = 4;
const IPV6: u8 = 41;

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &[u8] = &[0x60, 0, 0, 0, 0, 0, 59, 64];

    #[test]
    fn identity_signature_and_operation() {
        // Identity 2^1 = 2 bytes, signature 5 × 4 = 20 bytes.
        let head = [vec![0x11, 0x52, 0x11, 41, 0, 0, 0, 0], vec![0; 22]].concat();
        let data = [head.as_slice(), PAYLOAD].concat();
        assert_eq!(ayiya(&data), Tunnel::Inner(Inner::Ip(PAYLOAD)));
        assert!(looks_like(&data));
        // An identity of 2^8 = 256 bytes (Zeek's large-identity test).
        let large = [
            vec![0x81, 0x52, 0x11, 4],
            vec![0; 4 + 256 + 20],
            PAYLOAD.to_vec(),
        ]
        .concat();
        assert_eq!(ayiya(&large), Tunnel::Inner(Inner::Ip(PAYLOAD)));
        // Not the forward operation; not IP; nothing after the header; cut.
        let mut heartbeat = data.clone();
        heartbeat[2] = 0x10;
        assert_eq!(ayiya(&heartbeat), Tunnel::No);
        assert!(!looks_like(&heartbeat));
        let mut tcp = data.clone();
        tcp[3] = 6;
        assert_eq!(ayiya(&tcp), Tunnel::Skip(DropReason::NonIp));
        assert_eq!(ayiya(&head), Tunnel::Bad);
        assert_eq!(ayiya(&data[..20]), Tunnel::Bad);
        for n in 0..large.len() {
            let _ = ayiya(&large[..n]);
        }
        let widest = [0xf0u8, 0xf0, 0x01, 4];
        assert_eq!(ayiya(&widest), Tunnel::Bad);
    }
}
