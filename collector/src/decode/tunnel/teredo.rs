//! Teredo (RFC 4380): IPv6 in UDP, as Zeek's Teredo analyzer reads it. An authentication header
//! (tag 1: 13 bytes + client id + authentication value) may come first, then an origin
//! indication (tag 0, 8 bytes), then the IPv6 packet, which must fill the datagram exactly: a
//! cut one (snaplen included), one with bytes after it, or one of another IP version is no
//! Teredo ([`Tunnel::Bad`]). A bubble (no next header, empty payload) is a Teredo packet with
//! no inner flow ([`Tunnel::No`]), as Zeek makes no connection of it.
//!
//! Zeek looks for Teredo on UDP port 3544 and, on ports no tunnel is registered for, in any
//! datagram that passes its detection ([`looks_like`]): one starting with an origin indication
//! (behind an authentication header or not) followed by IPv6, or a 40-byte IPv6 header alone
//! (a bubble) with a Teredo address (2001:0::/32) as source or destination.

use super::{be16, Inner, Tunnel};

pub(super) fn teredo(data: &[u8]) -> Tunnel<'_> {
    let (mut at, mut origin, mut auth) = (0usize, false, false);
    loop {
        let Some(tag) = be16(data, at) else {
            return Tunnel::Bad;
        };
        match tag {
            0 if !origin => {
                origin = true;
                at += ORIGIN_LEN;
            }
            1 if !origin && !auth => {
                let (Some(&id), Some(&au)) = (data.get(at + 2), data.get(at + 3)) else {
                    return Tunnel::Bad;
                };
                auth = true;
                at += AUTH_FIXED + usize::from(id) + usize::from(au);
            }
            t if t >> 12 == 6 => break,
            _ => return Tunnel::Bad,
        }
    }
    let (Some(ip), Some(payload_len)) = (data.get(at..), be16(data, at + 4)) else {
        return Tunnel::Bad;
    };
    let total = IPV6_HDR + usize::from(payload_len);
    let next = ip.get(6).copied();
    match (ip.len().cmp(&total), next) {
        _ if ip.len() < IPV6_HDR => Tunnel::Bad,
        (std::cmp::Ordering::Less, _) => Tunnel::Bad,
        (_, Some(NO_NEXT_HEADER)) if payload_len == 0 => Tunnel::No,
        (std::cmp::Ordering::Greater, _) => Tunnel::Bad,
        _ => Tunnel::Inner(Inner::Ip(ip)),
    }
}

/// Zeek's Teredo detection for a UDP payload on a port without a registered tunnel.
pub(super) fn looks_like(data: &[u8]) -> bool {
    let (Some(&b0), Some(&b1)) = (data.first(), data.get(1)) else {
        return false;
    };
    if data.len() < IPV6_HDR || (b0 >> 4 != 6 && !(b0 == 0 && (b1 == 0 || b1 == 1))) {
        return false;
    }
    if data.len() == IPV6_HDR && b0 >> 4 == 6 {
        let teredo_addr = |at: usize| data.get(at..at + 4) == Some(&TEREDO_PREFIX[..]);
        if teredo_addr(8) || teredo_addr(24) {
            return true;
        }
    }
    // Zeek reads the tag from the second byte alone.
    let mut rest = data;
    let mut tag = u16::from(b1);
    if tag == 1 {
        let (Some(&id), Some(&au)) = (data.get(2), data.get(3)) else {
            return false;
        };
        let Some(after) = rest.get(AUTH_FIXED + usize::from(id) + usize::from(au)..) else {
            return false;
        };
        if after.len() < IPV6_HDR {
            return false;
        }
        rest = after;
        tag = be16(rest, 0).unwrap_or(u16::MAX);
    }
    tag == 0
        && rest
            .get(ORIGIN_LEN..)
            .is_some_and(|ip| ip.len() >= IPV6_HDR && ip.first().is_some_and(|b| b >> 4 == 6))
}

const ORIGIN_LEN: usize = 8;
/// Tag, two lengths, then (after the variable parts) an 8-byte nonce and a confirmation byte.
const AUTH_FIXED: usize = 13;
const IPV6_HDR: usize = 40;
const NO_NEXT_HEADER: u8 = 59;
const TEREDO_PREFIX: [u8; 4] = [0x20, 0x01, 0x00, 0x00];

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv6 header (2001:0:: Teredo source) and `payload_len` bytes of UDP-ish payload.
    fn ipv6(next: u8, payload_len: u16) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&payload_len.to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&[0x20, 1, 0, 0, 0x41, 0x37, 0x9c, 0x44, 0, 0, 0xf2, 0x27]);
        p.extend_from_slice(&[0xbe, 0xab, 0xc3, 0xf6]);
        p.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend(vec![0xaa; usize::from(payload_len)]);
        p
    }

    #[test]
    fn headers_and_the_inner_packet() {
        let ip = ipv6(17, 12);
        assert_eq!(teredo(&ip), Tunnel::Inner(Inner::Ip(&ip)));
        let origin = [0u8, 0, 0xf2, 0x27, 0xbe, 0xab, 0xc3, 0xf6];
        let with_origin = [origin.as_slice(), &ip].concat();
        assert_eq!(teredo(&with_origin), Tunnel::Inner(Inner::Ip(&ip)));
        // Authentication: id length 2, value length 1, nonce and confirmation.
        let auth = [0u8, 1, 2, 1, 9, 9, 7, 1, 2, 3, 4, 5, 6, 7, 8, 0];
        let with_both = [auth.as_slice(), &origin, &ip].concat();
        assert_eq!(teredo(&with_both), Tunnel::Inner(Inner::Ip(&ip)));
        // Two origin indications; authentication after the origin; an unknown tag.
        assert_eq!(teredo(&[&origin[..], &origin, &ip].concat()), Tunnel::Bad);
        assert_eq!(teredo(&[&origin[..], &auth, &ip].concat()), Tunnel::Bad);
        assert_eq!(teredo(&[&[0u8, 2][..], &ip].concat()), Tunnel::Bad);
        // IPv4 is not Teredo's.
        assert_eq!(teredo(&[0x45, 0, 0, 20, 0, 0, 0, 0]), Tunnel::Bad);
    }

    #[test]
    fn the_ipv6_packet_must_fill_the_datagram() {
        let ip = ipv6(17, 12);
        assert_eq!(teredo(&ip[..ip.len() - 1]), Tunnel::Bad);
        assert_eq!(teredo(&[ip.as_slice(), &[0]].concat()), Tunnel::Bad);
        assert_eq!(teredo(&ip[..39]), Tunnel::Bad);
        // A bubble: no inner flow, with trailing bytes or not.
        let bubble = ipv6(59, 0);
        assert_eq!(teredo(&bubble), Tunnel::No);
        assert_eq!(teredo(&[bubble.as_slice(), &[0, 0]].concat()), Tunnel::No);
        for n in 0..ip.len() {
            let _ = teredo(&ip[..n]);
            let _ = looks_like(&ip[..n]);
        }
    }

    #[test]
    fn detection_off_the_teredo_port() {
        let bubble = ipv6(59, 0);
        assert!(looks_like(&bubble));
        // A bubble between two non-Teredo addresses, and a longer IPv6 packet: not detected.
        let mut plain = bubble.clone();
        plain[8..12].copy_from_slice(&[0x20, 1, 0xd, 0xb8]);
        assert!(!looks_like(&plain));
        assert!(!looks_like(&ipv6(17, 12)));
        // An origin indication, then IPv6; behind an authentication header too.
        let origin = [0u8, 0, 0xf2, 0x27, 0xbe, 0xab, 0xc3, 0xf6];
        let ip = ipv6(17, 12);
        assert!(looks_like(&[origin.as_slice(), &ip].concat()));
        let auth = [0u8, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0];
        assert!(looks_like(&[auth.as_slice(), &origin, &ip].concat()));
        assert!(!looks_like(&[auth.as_slice(), &ip].concat()));
        assert!(!looks_like(&[0x45, 0, 0, 20]));
    }
}
