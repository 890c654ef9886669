//! Tunnels, hand-written: find the inner packet of VXLAN, Geneve, GTP-U, GRE (with ERSPAN) and
//! IP-in-IP. Teredo and AYIYA are out of scope (their inner packets are not looked for).
//!
//! | tunnel   | recognised by                    | header                                   | inner |
//! |----------|----------------------------------|------------------------------------------|-------|
//! | VXLAN    | UDP destination port 4789        | 8 bytes                                  | Ethernet |
//! | Geneve   | UDP destination port 6081        | 8 + 4 × option length                    | by protocol type: 0x6558 Ethernet, else an ethertype |
//! | GTP-U    | UDP port 2152, either side; GTPv1, T-PDU (type 0xff) | 8, +4 if E/S/PN, + extension headers if E | IP |
//! | GRE      | IP protocol 47, version 0        | 4, +4 each for C, K, S                   | by protocol type: 0x6558 Ethernet, 0x88be ERSPAN II (8 more bytes; type I without S), 0x22eb ERSPAN III (12, +8 if O), else an ethertype |
//! | IP-in-IP | IP protocol 4 or 41              | none                                     | IP |
//!
//! A packet that is not the tunnel after all (GTP-C echo, enhanced GRE of PPTP) is [`Tunnel::No`];
//! one whose tunnel header is cut or unknown is [`Tunnel::Bad`].

use tapflow_proto::key::ip_proto;

use super::be16;

/// Where a tunnel's inner packet starts, and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Inner<'a> {
    Ethernet(&'a [u8]),
    /// IPv4 or IPv6, by the version nibble.
    Ip(&'a [u8]),
    /// Bytes after an ethertype field (IPv4, IPv6, MPLS, VLAN, ...).
    EtherType(u16, &'a [u8]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tunnel<'a> {
    /// Not a tunnel: the packet is summarised as it is.
    No,
    Inner(Inner<'a>),
    /// A tunnel whose inner packet cannot be found (cut short, unknown payload type).
    Bad,
}

/// The tunnel carried by a transport payload `data` (after the UDP header, or the whole IP
/// payload for other protocols).
#[inline]
pub(super) fn detect(proto: u8, sport: u16, dport: u16, data: &[u8]) -> Tunnel<'_> {
    match proto {
        ip_proto::UDP => match (sport, dport) {
            (_, VXLAN_PORT) => vxlan(data),
            (_, GENEVE_PORT) => geneve(data),
            (GTPU_PORT, _) | (_, GTPU_PORT) => gtpu(data),
            _ => Tunnel::No,
        },
        ip_proto::GRE => gre(data),
        IPIP | IPV6_IN_IP if !data.is_empty() => Tunnel::Inner(Inner::Ip(data)),
        IPIP | IPV6_IN_IP => Tunnel::Bad,
        _ => Tunnel::No,
    }
}

fn vxlan(data: &[u8]) -> Tunnel<'_> {
    data.get(8..)
        .map_or(Tunnel::Bad, |inner| Tunnel::Inner(Inner::Ethernet(inner)))
}

fn geneve(data: &[u8]) -> Tunnel<'_> {
    let Some(&first) = data.first() else {
        return Tunnel::Bad;
    };
    if first >> 6 != 0 {
        return Tunnel::Bad;
    }
    let len = 8 + usize::from(first & 0x3f) * 4;
    match (be16(data, 2), data.get(len..)) {
        (Some(ty), Some(inner)) => ethertype_or_ethernet(ty, inner),
        _ => Tunnel::Bad,
    }
}

fn gtpu(data: &[u8]) -> Tunnel<'_> {
    let (Some(&flags), Some(&msg_type)) = (data.first(), data.get(1)) else {
        return Tunnel::Bad;
    };
    if flags >> 5 != 1 || flags & GTP_PT == 0 || msg_type != GTP_TPDU {
        return Tunnel::No;
    }
    let Some(len) = be16(data, 2) else {
        return Tunnel::Bad;
    };
    let end = data.len().min(8 + usize::from(len));
    let mut at = 8usize;
    if flags & (GTP_E | GTP_S | GTP_PN) != 0 {
        at = 12;
        let mut next = data.get(11).copied().unwrap_or(0);
        if flags & GTP_E != 0 {
            // Each extension header: length in 4-byte units, content, next type last.
            while next != 0 {
                let units = usize::from(data.get(at).copied().unwrap_or(0));
                if units == 0 {
                    return Tunnel::Bad;
                }
                at += units * 4;
                next = match data.get(at - 1) {
                    Some(&n) => n,
                    None => return Tunnel::Bad,
                };
            }
        }
    }
    match data.get(at..end) {
        Some(inner) if !inner.is_empty() => Tunnel::Inner(Inner::Ip(inner)),
        _ => Tunnel::Bad,
    }
}

fn gre(data: &[u8]) -> Tunnel<'_> {
    let (Some(flags), Some(ty)) = (be16(data, 0), be16(data, 2)) else {
        return Tunnel::Bad;
    };
    if flags & GRE_VERSION != 0 {
        // Version 1 is PPTP's enhanced GRE (PPP inside): not looked into.
        return Tunnel::No;
    }
    if flags & GRE_R != 0 {
        return Tunnel::Bad;
    }
    let optional = [GRE_C, GRE_K, GRE_S]
        .iter()
        .filter(|f| flags & **f != 0)
        .count();
    let Some(inner) = data.get(4 + 4 * optional..) else {
        return Tunnel::Bad;
    };
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
        _ => ethertype_or_ethernet(ty, inner),
    }
}

fn ethertype_or_ethernet(ty: u16, inner: &[u8]) -> Tunnel<'_> {
    if ty == TRANSPARENT_ETHERNET {
        Tunnel::Inner(Inner::Ethernet(inner))
    } else {
        Tunnel::Inner(Inner::EtherType(ty, inner))
    }
}

const VXLAN_PORT: u16 = 4789;
const GENEVE_PORT: u16 = 6081;
const GTPU_PORT: u16 = 2152;
const GTP_PT: u8 = 0x10;
const GTP_E: u8 = 0x04;
const GTP_S: u8 = 0x02;
const GTP_PN: u8 = 0x01;
const GTP_TPDU: u8 = 0xff;
const GRE_C: u16 = 0x8000;
const GRE_R: u16 = 0x4000;
const GRE_K: u16 = 0x2000;
const GRE_S: u16 = 0x1000;
const GRE_VERSION: u16 = 0x0007;
const TRANSPARENT_ETHERNET: u16 = 0x6558;
const ERSPAN_2: u16 = 0x88be;
const ERSPAN_3: u16 = 0x22eb;
const IPIP: u8 = 4;
const IPV6_IN_IP: u8 = 41;

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &[u8] = &[0x45, 0, 0, 20, 1, 2, 3, 4];

    /// `head ++ PAYLOAD` must give `expected`, where an inner view, if any, covers `PAYLOAD`.
    fn check(proto: u8, ports: (u16, u16), head: &[u8], expected: Tunnel<'_>) {
        let data = [head, PAYLOAD].concat();
        assert_eq!(
            detect(proto, ports.0, ports.1, &data),
            expected,
            "{head:02x?}"
        );
    }

    use Inner::{EtherType, Ethernet, Ip};

    #[test]
    fn udp_tunnels() {
        check(
            17,
            (40000, 4789),
            &[0x08, 0, 0, 0, 0, 0, 42, 0],
            Tunnel::Inner(Ethernet(PAYLOAD)),
        );
        check(17, (4789, 40000), &[0x08, 0, 0, 0, 0, 0, 42, 0], Tunnel::No);
        assert_eq!(detect(17, 1, 4789, &[8, 0, 0]), Tunnel::Bad);
        // Geneve: one 4-byte option; Ethernet and IPv4 payload types.
        check(
            17,
            (1, 6081),
            &[0x01, 0, 0x65, 0x58, 0, 0, 1, 0, 1, 2, 3, 4],
            Tunnel::Inner(Ethernet(PAYLOAD)),
        );
        check(
            17,
            (1, 6081),
            &[0x00, 0, 0x08, 0x00, 0, 0, 1, 0],
            Tunnel::Inner(EtherType(0x0800, PAYLOAD)),
        );
        check(
            17,
            (1, 6081),
            &[0x40, 0, 0x08, 0x00, 0, 0, 1, 0],
            Tunnel::Bad,
        );
        assert_eq!(detect(17, 1, 6081, &[0x3f, 0, 0x08, 0]), Tunnel::Bad);
    }

    #[test]
    fn gtpu() {
        let len = (PAYLOAD.len() as u16).to_be_bytes();
        let plain = [0x30, 0xff, len[0], len[1], 0, 0, 0, 1];
        check(17, (2152, 2152), &plain, Tunnel::Inner(Ip(PAYLOAD)));
        check(17, (2152, 9), &plain, Tunnel::Inner(Ip(PAYLOAD)));
        check(17, (9, 2152), &plain, Tunnel::Inner(Ip(PAYLOAD)));
        // The length field bounds the inner packet.
        let short = [0x30, 0xff, 0, 4, 0, 0, 0, 1];
        check(17, (2152, 2152), &short, Tunnel::Inner(Ip(&PAYLOAD[..4])));
        // S set: 4 optional bytes. E set: one extension header (PDU session, 4 bytes).
        let len12 = (PAYLOAD.len() as u16 + 4).to_be_bytes();
        let seq = [0x32, 0xff, len12[0], len12[1], 0, 0, 0, 1, 0, 7, 0, 0];
        check(17, (2152, 2152), &seq, Tunnel::Inner(Ip(PAYLOAD)));
        let len16 = (PAYLOAD.len() as u16 + 8).to_be_bytes();
        let ext = [
            0x34, 0xff, len16[0], len16[1], 0, 0, 0, 1, 0, 0, 0, 0x85, 1, 0x10, 9, 0,
        ];
        check(17, (2152, 2152), &ext, Tunnel::Inner(Ip(PAYLOAD)));
        let zero_ext = [
            0x34, 0xff, len16[0], len16[1], 0, 0, 0, 1, 0, 0, 0, 0x85, 0, 0, 0, 0,
        ];
        check(17, (2152, 2152), &zero_ext, Tunnel::Bad);
        // Echo request (type 1), GTP' (PT 0), GTPv2: not GTP-U.
        check(
            17,
            (2152, 2152),
            &[0x32, 0x01, 0, 4, 0, 0, 0, 0],
            Tunnel::No,
        );
        check(
            17,
            (2152, 2152),
            &[0x20, 0xff, 0, 8, 0, 0, 0, 0],
            Tunnel::No,
        );
        check(
            17,
            (2152, 2152),
            &[0x48, 0xff, 0, 8, 0, 0, 0, 0],
            Tunnel::No,
        );
        assert_eq!(
            detect(17, 2152, 2152, &[0x30, 0xff, 0, 0, 0, 0, 0, 1]),
            Tunnel::Bad
        );
    }

    #[test]
    fn gre_and_erspan() {
        check(
            47,
            (0, 0),
            &[0, 0, 0x08, 0x00],
            Tunnel::Inner(EtherType(0x0800, PAYLOAD)),
        );
        check(
            47,
            (0, 0),
            &[0x20, 0, 0x86, 0xdd, 0, 0, 0, 5],
            Tunnel::Inner(EtherType(0x86dd, PAYLOAD)),
        );
        let cks = [0xb0, 0, 0x65, 0x58, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 9];
        check(47, (0, 0), &cks, Tunnel::Inner(Ethernet(PAYLOAD)));
        check(
            47,
            (0, 0),
            &[0x10, 0, 0x88, 0xbe, 0, 0, 0, 1, 0x10, 0, 0, 1, 0, 0, 0, 0],
            Tunnel::Inner(Ethernet(PAYLOAD)),
        );
        check(
            47,
            (0, 0),
            &[0, 0, 0x88, 0xbe],
            Tunnel::Inner(Ethernet(PAYLOAD)),
        );
        let e3 = [
            [0u8, 0, 0x22, 0xeb].as_slice(),
            &[0x20, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        ]
        .concat();
        check(47, (0, 0), &e3, Tunnel::Inner(Ethernet(PAYLOAD)));
        let e3o = [
            [0u8, 0, 0x22, 0xeb].as_slice(),
            &[0x20, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0; 8],
        ]
        .concat();
        check(47, (0, 0), &e3o, Tunnel::Inner(Ethernet(PAYLOAD)));
        check(47, (0, 0), &[0, 1, 0x88, 0x0b], Tunnel::No);
        check(47, (0, 0), &[0x40, 0, 0x08, 0x00], Tunnel::Bad);
        assert_eq!(detect(47, 0, 0, &[0xb0, 0, 0x08, 0, 0, 0]), Tunnel::Bad);
        assert_eq!(detect(47, 0, 0, &[0, 0, 0x22, 0xeb, 0]), Tunnel::Bad);
    }

    #[test]
    fn ip_in_ip_and_prefixes() {
        check(4, (0, 0), &[], Tunnel::Inner(Ip(PAYLOAD)));
        check(41, (0, 0), &[], Tunnel::Inner(Ip(PAYLOAD)));
        assert_eq!(detect(4, 0, 0, &[]), Tunnel::Bad);
        check(6, (2152, 4789), &[], Tunnel::No);
        let samples: [(u8, u16, &[u8]); 3] = [
            (
                17,
                2152,
                &[
                    0x37, 0xff, 0, 40, 0, 0, 0, 1, 0, 0, 0, 0x85, 2, 0, 0, 0, 0, 0, 0, 0x40, 1, 0,
                    0, 0,
                ],
            ),
            (17, 6081, &[0x3f, 0, 0x65, 0x58, 0, 0, 0, 0]),
            (
                47,
                0,
                &[
                    0xf0, 0, 0x22, 0xeb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                ],
            ),
        ];
        for (proto, port, bytes) in samples {
            for n in 0..=bytes.len() {
                let _ = detect(proto, port, port, &bytes[..n]);
            }
        }
    }
}
