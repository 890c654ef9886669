//! Tunnels, hand-written: find the inner packet of VXLAN, Geneve, GTP-U, GRE (with ERSPAN, PPTP
//! and GRE in UDP), IP-in-IP, Teredo and AYIYA, as Zeek's packet analyzers find it.
//!
//! | tunnel   | recognised by                    | header                                   | inner |
//! |----------|----------------------------------|------------------------------------------|-------|
//! | VXLAN    | UDP destination port 4789        | 8 bytes                                  | Ethernet |
//! | Geneve   | UDP destination port 6081        | 8 + 4 × option length                    | by protocol type: 0x6558 Ethernet, else an ethertype |
//! | GTP-U    | UDP port 2152, either side; GTPv1, T-PDU (type 0xff) | 8, +4 if E/S/PN, + extension headers if E | IP |
//! | GRE      | IP protocol 47; UDP destination port 4754 (RFC 8086) | see [`gre`]                  | Ethernet, ERSPAN, an ethertype, PPP (PPTP); Aruba's 802.11 is skipped |
//! | IP-in-IP | IP protocol 4 or 41              | none                                     | IP |
//! | Teredo   | UDP port 3544, either side, or Zeek's detection elsewhere | see [`teredo`]  | IPv6 |
//! | AYIYA    | UDP port 5072, either side, or Zeek's detection elsewhere | see [`ayiya`]   | IPv4 or IPv6 |
//!
//! A packet that is not the tunnel after all (GTP-C echo, an AYIYA heartbeat, a Teredo bubble, a
//! PPTP acknowledgement) is [`Tunnel::No`]; one whose tunnel header is cut or wrong is
//! [`Tunnel::Bad`]; one whose inner packet tapflow does not decode is [`Tunnel::Skip`]. A UDP
//! datagram that only Zeek's detection takes for Teredo or AYIYA (not on their ports) is no
//! tunnel unless its inner packet is found: random traffic is not counted as broken tunnels.

use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::tunnel_kind;
use tapflow_proto::DropReason;

use super::be16;

mod ayiya;
mod gre;
mod teredo;

/// Where a tunnel's inner packet starts, and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Inner<'a> {
    Ethernet(&'a [u8]),
    /// IPv4 or IPv6, by the version nibble.
    Ip(&'a [u8]),
    /// Bytes after an ethertype field (IPv4, IPv6, MPLS, VLAN, ...).
    EtherType(u16, &'a [u8]),
    /// An IEEE 802.11 frame (Aruba's GRE).
    Ieee80211(&'a [u8]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tunnel<'a> {
    /// Not a tunnel: the packet is summarised as it is.
    No,
    Inner(Inner<'a>),
    /// A tunnel whose inner packet cannot be found (cut short, unknown payload type).
    Bad,
    /// A tunnel whose inner packet tapflow does not decode, counted with this reason.
    Skip(DropReason),
}

/// The [`tunnel_kind`] of a UDP tunnel [`detect`] found an inner packet in (Zeek names the
/// outer connection's `service` after it); 0 for the others (GRE in UDP, IP tunnels).
pub(super) fn kind(proto: u8, sport: u16, dport: u16, data: &[u8]) -> u8 {
    if proto != ip_proto::UDP {
        return 0;
    }
    match (sport, dport) {
        (_, VXLAN_PORT) => tunnel_kind::VXLAN,
        (_, GENEVE_PORT) => tunnel_kind::GENEVE,
        (_, GRE_UDP_PORT) => 0,
        (GTPU_PORT, _) | (_, GTPU_PORT) => tunnel_kind::GTPV1,
        (TEREDO_PORT, _) | (_, TEREDO_PORT) => tunnel_kind::TEREDO,
        (AYIYA_PORT, _) | (_, AYIYA_PORT) => tunnel_kind::AYIYA,
        _ if teredo::looks_like(data) => tunnel_kind::TEREDO,
        _ => tunnel_kind::AYIYA,
    }
}

/// The tunnel carried by a transport payload `data` (after the UDP header, or the whole IP
/// payload for other protocols).
#[inline]
pub(super) fn detect(proto: u8, sport: u16, dport: u16, data: &[u8]) -> Tunnel<'_> {
    match proto {
        ip_proto::UDP => match (sport, dport) {
            (_, VXLAN_PORT) => vxlan(data),
            (_, GENEVE_PORT) => geneve(data),
            (_, GRE_UDP_PORT) => gre::gre(data), // see ip_tunnel
            (GTPU_PORT, _) | (_, GTPU_PORT) => gtpu(data),
            (TEREDO_PORT, _) | (_, TEREDO_PORT) => teredo::teredo(data),
            (AYIYA_PORT, _) | (_, AYIYA_PORT) => ayiya::ayiya(data),
            _ => detected(data),
        },
        ip_proto::GRE => gre::gre(data),
        IPIP | IPV6_IN_IP if !data.is_empty() => Tunnel::Inner(Inner::Ip(data)),
        IPIP | IPV6_IN_IP => Tunnel::Bad,
        _ => Tunnel::No,
    }
}

/// The tunnel's inner packet is an Ethernet frame carrying ARP (behind at most one VLAN tag).
pub(super) fn carries_arp(t: &Tunnel<'_>) -> bool {
    const ARP: u16 = 0x0806;
    const VLAN: u16 = 0x8100;
    let Tunnel::Inner(Inner::Ethernet(frame)) = t else {
        return false;
    };
    match be16(frame, 12) {
        Some(VLAN) => be16(frame, 16) == Some(ARP),
        ty => ty == Some(ARP),
    }
}

/// Zeek's IP tunnels: GRE (over IP, or in UDP per RFC 8086) and IP-in-IP. Their inner flows
/// name the tunnel between the outer addresses, and an inner packet is taken as whole as it
/// was captured.
pub(super) fn ip_tunnel(proto: u8, dport: u16) -> bool {
    match proto {
        ip_proto::GRE | IPIP | IPV6_IN_IP => true,
        ip_proto::UDP => dport == GRE_UDP_PORT,
        _ => false,
    }
}

/// Zeek's protocol detection, on UDP ports no tunnel is registered for: Teredo, then AYIYA.
/// Only a packet that decodes as the tunnel counts.
#[inline]
fn detected(data: &[u8]) -> Tunnel<'_> {
    let tunnel = if teredo::looks_like(data) {
        teredo::teredo(data)
    } else if ayiya::looks_like(data) {
        ayiya::ayiya(data)
    } else {
        return Tunnel::No;
    };
    match tunnel {
        Tunnel::Inner(inner) => Tunnel::Inner(inner),
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
const GRE_UDP_PORT: u16 = 4754;
const TEREDO_PORT: u16 = 3544;
const AYIYA_PORT: u16 = 5072;
const GTP_PT: u8 = 0x10;
const GTP_E: u8 = 0x04;
const GTP_S: u8 = 0x02;
const GTP_PN: u8 = 0x01;
const GTP_TPDU: u8 = 0xff;
const TRANSPARENT_ETHERNET: u16 = 0x6558;
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
    fn gre_in_udp_teredo_and_ayiya_by_port() {
        check(
            17,
            (40000, 4754),
            &[0, 0, 0x08, 0x00],
            Tunnel::Inner(EtherType(0x0800, PAYLOAD)),
        );
        check(17, (4754, 40000), &[0, 0, 0x08, 0x00], Tunnel::No);
        // Teredo and AYIYA on their ports, either side; a broken one there is Bad.
        let v6 = [0x60u8, 0, 0, 0, 0, 8, 17, 64];
        let teredo = [v6.as_slice(), &[0; 32], PAYLOAD].concat();
        for ports in [(3544, 50000), (50000, 3544)] {
            assert_eq!(
                detect(17, ports.0, ports.1, &teredo),
                Tunnel::Inner(Ip(&teredo)),
                "{ports:?}"
            );
            assert_eq!(detect(17, ports.0, ports.1, &teredo[..47]), Tunnel::Bad);
        }
        let ayiya = [0x01u8, 0x52, 0x11, 4, 0, 0, 0, 0, 9];
        let ayiya_sig = [ayiya.as_slice(), &[0; 20]].concat();
        check(17, (5072, 1), &ayiya_sig, Tunnel::Inner(Ip(PAYLOAD)));
        check(17, (1, 5072), &ayiya_sig, Tunnel::Inner(Ip(PAYLOAD)));
        assert_eq!(detect(17, 1, 5072, &ayiya), Tunnel::Bad);
        // Off their ports, only Zeek's detection finds them, and only whole.
        check(17, (1, 2), &ayiya_sig, Tunnel::Inner(Ip(PAYLOAD)));
        assert_eq!(detect(17, 1, 2, &ayiya), Tunnel::No);
        let mut not_ip = ayiya_sig.clone();
        not_ip[3] = 17;
        check(17, (1, 2), &not_ip, Tunnel::No);
        check(17, (5072, 2), &not_ip, Tunnel::Skip(DropReason::NonIp));
        assert_eq!(detect(17, 1, 2, &teredo), Tunnel::No);
        let origin = [0u8, 0, 1, 2, 3, 4, 5, 6];
        let with_origin = [origin.as_slice(), &teredo].concat();
        assert_eq!(detect(17, 1, 2, &with_origin), Tunnel::Inner(Ip(&teredo)));
    }

    #[test]
    fn ip_in_ip_and_prefixes() {
        check(4, (0, 0), &[], Tunnel::Inner(Ip(PAYLOAD)));
        check(41, (0, 0), &[], Tunnel::Inner(Ip(PAYLOAD)));
        assert_eq!(detect(4, 0, 0, &[]), Tunnel::Bad);
        check(6, (2152, 4789), &[], Tunnel::No);
        let samples: [(u8, u16, &[u8]); 6] = [
            (
                17,
                3544,
                &[
                    0, 1, 1, 1, 9, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x60,
                ],
            ),
            (17, 5072, &[0xf1, 0x52, 0x11, 41, 0, 0, 0, 0]),
            (
                47,
                0,
                &[
                    0x30, 0x81, 0x88, 0x0b, 0, 8, 0, 1, 0, 0, 0, 7, 0, 0, 0, 6, 0xff, 3, 0, 0x21,
                    0x45,
                ],
            ),
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
