//! GRE, as Zeek's GRE analyzer reads it (over IP protocol 47, or in UDP on port 4754 per
//! RFC 8086):
//!
//! - the header is 4 bytes, +4 each for the checksum (C), key (K), sequence (S) and
//!   acknowledgement (A, 0x0080) flags; the routing flag (R), a reserved flag (0x0078) or a
//!   version other than 0 and 1 make it malformed;
//! - version 0: 0x6558 Ethernet, 0x88be ERSPAN II (8 more bytes; type I without S), 0x22eb
//!   ERSPAN III (12, +8 if O), Aruba's 0x8200-0x82f0, 0x8300-0x8370 and 0x9000 (an
//!   802.11 frame inside, decoded as the 802.11 link type is), else an ethertype;
//! - version 1 is PPTP's enhanced GRE: protocol 0x880b, then a 4-byte PPP header whose protocol
//!   is 0x0021 (IPv4) or 0x0057 (IPv6); any other PPP protocol (LCP, CCP, compressed data) is
//!   `NonIp`; a packet with no PPP frame (an acknowledgement alone) is no tunnel.

use tapflow_proto::DropReason;

use super::{be16, ethertype_or_ethernet, Inner, Tunnel};

pub(super) fn gre(data: &[u8]) -> Tunnel<'_> {
    let (Some(flags), Some(ty)) = (be16(data, 0), be16(data, 2)) else {
        return Tunnel::Bad;
    };
    if flags & (GRE_R | GRE_RESERVED) != 0 {
        return Tunnel::Bad;
    }
    let optional = [GRE_C, GRE_K, GRE_S, GRE_A]
        .iter()
        .filter(|f| flags & **f != 0)
        .count();
    let Some(inner) = data.get(4 + 4 * optional..) else {
        return Tunnel::Bad;
    };
    match flags & GRE_VERSION {
        0 => version0(flags, ty, inner),
        1 => pptp(ty, inner),
        _ => Tunnel::Bad,
    }
}

fn version0(flags: u16, ty: u16, inner: &[u8]) -> Tunnel<'_> {
    match ty {
        ERSPAN_2 if flags & GRE_S == 0 => Tunnel::Inner(Inner::Ethernet(inner)), // type I
        ERSPAN_2 => inner
            .get(8..)
            .map_or(Tunnel::Bad, |e| Tunnel::Inner(Inner::Ethernet(e))),
        ERSPAN_3 => {
            let len = match inner.get(11) {
                Some(b) if b & 0x01 != 0 => 20,
                Some(_) => 12,
                None => return Tunnel::Bad,
            };
            inner
                .get(len..)
                .map_or(Tunnel::Bad, |e| Tunnel::Inner(Inner::Ethernet(e)))
        }
        t if aruba(t) && inner.is_empty() => Tunnel::Bad,
        t if aruba(t) => Tunnel::Inner(Inner::Ieee80211(inner)),
        _ => ethertype_or_ethernet(ty, inner),
    }
}

/// The protocol types Zeek hands to its 802.11 analyzer (Aruba's access points).
fn aruba(ty: u16) -> bool {
    matches!(ty, 0x8200..=0x82f0 | 0x8300..=0x8370 if ty & 0x0f == 0) || ty == 0x9000
}

/// PPTP: the PPP frame behind enhanced GRE, assumed to keep its address and control bytes.
fn pptp(ty: u16, ppp: &[u8]) -> Tunnel<'_> {
    if ty != PPTP_PPP {
        return Tunnel::Bad;
    }
    match (ppp.is_empty(), be16(ppp, 2), ppp.get(4..)) {
        (true, _, _) => Tunnel::No,
        (false, Some(PPP_IPV4 | PPP_IPV6), Some(ip)) if !ip.is_empty() => {
            Tunnel::Inner(Inner::Ip(ip))
        }
        (false, Some(PPP_IPV4 | PPP_IPV6), _) | (false, None, _) => Tunnel::Bad,
        (false, Some(_), _) => Tunnel::Skip(DropReason::NonIp),
    }
}

const GRE_C: u16 = 0x8000;
const GRE_R: u16 = 0x4000;
const GRE_K: u16 = 0x2000;
const GRE_S: u16 = 0x1000;
const GRE_A: u16 = 0x0080;
const GRE_RESERVED: u16 = 0x0078;
const GRE_VERSION: u16 = 0x0007;
const ERSPAN_2: u16 = 0x88be;
const ERSPAN_3: u16 = 0x22eb;
const PPTP_PPP: u16 = 0x880b;
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;

#[cfg(test)]
mod tests {
    use super::*;
    use Inner::{EtherType, Ethernet, Ip};

    const PAYLOAD: &[u8] = &[0x45, 0, 0, 20, 1, 2, 3, 4];

    fn check(head: &[u8], expected: Tunnel<'_>) {
        let data = [head, PAYLOAD].concat();
        assert_eq!(gre(&data), expected, "{head:02x?}");
    }

    #[test]
    fn version_0_and_erspan() {
        check(
            &[0, 0, 0x08, 0x00],
            Tunnel::Inner(EtherType(0x0800, PAYLOAD)),
        );
        check(
            &[0x20, 0, 0x86, 0xdd, 0, 0, 0, 5],
            Tunnel::Inner(EtherType(0x86dd, PAYLOAD)),
        );
        let cks = [0xb0, 0, 0x65, 0x58, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 9];
        check(&cks, Tunnel::Inner(Ethernet(PAYLOAD)));
        check(
            &[0x10, 0, 0x88, 0xbe, 0, 0, 0, 1, 0x10, 0, 0, 1, 0, 0, 0, 0],
            Tunnel::Inner(Ethernet(PAYLOAD)),
        );
        check(&[0, 0, 0x88, 0xbe], Tunnel::Inner(Ethernet(PAYLOAD)));
        let e3 = [
            [0u8, 0, 0x22, 0xeb].as_slice(),
            &[0x20, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        ]
        .concat();
        check(&e3, Tunnel::Inner(Ethernet(PAYLOAD)));
        let e3o = [
            [0u8, 0, 0x22, 0xeb].as_slice(),
            &[0x20, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0; 8],
        ]
        .concat();
        check(&e3o, Tunnel::Inner(Ethernet(PAYLOAD)));
        // Routing, a reserved flag, version 2..7; cut headers.
        check(&[0x40, 0, 0x08, 0x00], Tunnel::Bad);
        check(&[0, 0x08, 0x08, 0x00], Tunnel::Bad);
        check(&[0, 0x02, 0x08, 0x00], Tunnel::Bad);
        assert_eq!(gre(&[0xb0, 0, 0x08, 0, 0, 0]), Tunnel::Bad);
        assert_eq!(gre(&[0, 0, 0x22, 0xeb, 0]), Tunnel::Bad);
    }

    #[test]
    fn aruba_carries_802_11() {
        for ty in [0x8200u16, 0x8230, 0x82f0, 0x8300, 0x8370, 0x9000] {
            let [hi, lo] = ty.to_be_bytes();
            check(&[0, 0, hi, lo], Tunnel::Inner(Inner::Ieee80211(PAYLOAD)));
            assert_eq!(gre(&[0, 0, hi, lo]), Tunnel::Bad, "{ty:#x} without a frame");
        }
        // Not Aruba: a low nibble set, past 0x8370.
        for ty in [0x8201u16, 0x8380] {
            let [hi, lo] = ty.to_be_bytes();
            check(&[0, 0, hi, lo], Tunnel::Inner(EtherType(ty, PAYLOAD)));
        }
    }

    #[test]
    fn pptp_enhanced_gre() {
        // Key (payload length, call id), sequence and acknowledgement numbers, then PPP.
        let ppp4 = [0xff, 0x03, 0x00, 0x21];
        let head = [
            [0x30, 0x81, 0x88, 0x0b, 0, 8, 0, 1, 0, 0, 0, 7, 0, 0, 0, 6].as_slice(),
            &ppp4,
        ]
        .concat();
        check(&head, Tunnel::Inner(Ip(PAYLOAD)));
        // Key and sequence only; IPv6 in PPP.
        let head6 = [
            0x30, 0x01, 0x88, 0x0b, 0, 8, 0, 1, 0, 0, 0, 7, 0xff, 3, 0, 0x57,
        ];
        check(&head6, Tunnel::Inner(Ip(PAYLOAD)));
        // LCP inside PPP: not IP.
        let lcp = [
            0x30, 0x01, 0x88, 0x0b, 0, 8, 0, 1, 0, 0, 0, 7, 0xff, 3, 0xc0, 0x21,
        ];
        check(&lcp, Tunnel::Skip(DropReason::NonIp));
        // An acknowledgement alone carries no PPP frame.
        assert_eq!(
            gre(&[0x20, 0x81, 0x88, 0x0b, 0, 0, 0, 1, 0, 0, 0, 6]),
            Tunnel::No
        );
        // Version 1 must carry PPP; a PPP header cut short; PPP with nothing in it.
        check(&[0x20, 0x01, 0x08, 0x00, 0, 8, 0, 1], Tunnel::Bad);
        assert_eq!(
            gre(&[0x20, 0x01, 0x88, 0x0b, 0, 8, 0, 1, 0xff]),
            Tunnel::Bad
        );
        assert_eq!(
            gre(&[0x20, 0x01, 0x88, 0x0b, 0, 8, 0, 1, 0xff, 3, 0, 0x21]),
            Tunnel::Bad
        );
    }
}
