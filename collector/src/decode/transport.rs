//! The transport layer, on etherparse's slices: TCP, UDP, ICMP and ICMPv6 fill their summary
//! fields; any other protocol (SCTP, ESP, OSPF, GRE, IP-in-IP, ...) gives a summary with ports 0.
//!
//! Lengths follow the IP header, never the capture. Checksums (pseudo-header where the protocol
//! has one) are verified unless the packet is cut by snaplen; a wrong one still gives a summary,
//! flagged `BAD_CHECKSUM`, as Zeek records such packets in `history` without counting them.

use etherparse::{Icmpv4Slice, Icmpv6Slice, TcpHeaderSlice, UdpHeaderSlice};
use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::flag;
use tapflow_proto::{DropReason, FiveTuple, PacketSummary};

use super::checksum::{pseudo_header, Sum};
use super::ip::Net;

/// One packet's transport view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Transport<'a> {
    /// Everything but `ts_ns`, the key (see `tuple`) and `tunnel_parent`.
    pub(super) summary: PacketSummary,
    pub(super) tuple: FiveTuple,
    /// The captured bytes after the transport header (UDP payload, GRE packet, ...), where a
    /// tunnel's inner packet is looked for.
    pub(super) inner: &'a [u8],
}

/// Summarises the upper layer `proto` of `net`: `payload` is what was captured of it,
/// `payload_len` its length by the IP header.
#[inline]
pub(super) fn parse<'a>(
    net: &Net,
    proto: u8,
    payload: &'a [u8],
    payload_len: u32,
    verify: bool,
) -> Result<Transport<'a>, DropReason> {
    let verify = verify && !net.truncated;
    let mut summary = PacketSummary {
        ip_len: net.ip_len,
        flags: if net.truncated { flag::TRUNCATED } else { 0 },
        ..PacketSummary::default()
    };
    let mut tuple = FiveTuple {
        proto,
        src: net.src,
        dst: net.dst,
        sport: 0,
        dport: 0,
    };
    let claimed = usize::try_from(payload_len).unwrap_or(usize::MAX);
    // A header that does not fit: cut by snaplen, or longer than the IP layer says it is.
    let short = |required: usize| {
        if required > claimed {
            DropReason::MalformedTransport
        } else {
            DropReason::Truncated
        }
    };
    let checksum_ok = |pseudo: Sum| pseudo.add(payload).is_valid();
    let inner = match proto {
        ip_proto::TCP => {
            use etherparse::err::tcp::HeaderSliceError;
            let tcp = TcpHeaderSlice::from_slice(payload).map_err(|e| match e {
                HeaderSliceError::Len(l) => short(l.required_len),
                HeaderSliceError::Content(_) => DropReason::MalformedTransport,
            })?;
            let hdr = tcp.slice();
            summary.payload_len = payload_len
                .checked_sub(super::ip::len32(hdr.len()))
                .ok_or(DropReason::MalformedTransport)?;
            summary.tcp_flags = hdr.get(13).copied().unwrap_or(0);
            summary.seq = tcp.sequence_number();
            summary.ack = tcp.acknowledgment_number();
            summary.window = tcp.window_size();
            (tuple.sport, tuple.dport) = (tcp.source_port(), tcp.destination_port());
            let pseudo = pseudo_header(net.src_bytes(), net.dst_bytes(), proto, payload_len);
            if verify && !checksum_ok(pseudo) {
                summary.flags |= flag::BAD_CHECKSUM;
            }
            payload.get(hdr.len()..).unwrap_or_default()
        }
        ip_proto::UDP => {
            let udp = UdpHeaderSlice::from_slice(payload).map_err(|_| short(UDP_HDR))?;
            summary.payload_len = payload_len
                .checked_sub(UDP_HDR as u32)
                .ok_or(DropReason::MalformedTransport)?;
            (tuple.sport, tuple.dport) = (udp.source_port(), udp.destination_port());
            let data = payload.get(UDP_HDR..).unwrap_or_default();
            // IPv4 checksum 0 means none was computed; IPv6 requires one (Zeek agrees).
            if verify && (udp.checksum() != 0 || net.v6) {
                // The UDP length field, when sane, bounds what the checksum covers.
                let len = match u32::from(udp.length()) {
                    l if (UDP_HDR as u32..=payload_len).contains(&l) => l,
                    _ => payload_len,
                };
                let covered = payload.get(..len as usize).unwrap_or(payload);
                let pseudo = pseudo_header(net.src_bytes(), net.dst_bytes(), proto, len);
                if !pseudo.add(covered).is_valid() {
                    summary.flags |= flag::BAD_CHECKSUM;
                }
            }
            if (tuple.sport == DNS_PORT || tuple.dport == DNS_PORT)
                && data.get(2).is_some_and(|b| b & 0x80 != 0)
            {
                summary.flags |= flag::DNS_RESPONSE;
            }
            data
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            let (icmp_type, icmp_code) =
                icmp_type_code(proto, payload).ok_or_else(|| short(ICMP_HDR))?;
            summary.payload_len = payload_len.saturating_sub(ICMP_HDR as u32);
            summary.icmp_type = icmp_type;
            summary.icmp_code = icmp_code;
            tuple = FiveTuple::icmp(proto, net.src, net.dst, icmp_type, icmp_code);
            if verify {
                let pseudo = if proto == ip_proto::ICMPV6 {
                    pseudo_header(net.src_bytes(), net.dst_bytes(), proto, payload_len)
                } else {
                    Sum::default()
                };
                if !checksum_ok(pseudo) {
                    summary.flags |= flag::BAD_CHECKSUM;
                }
            }
            payload.get(ICMP_HDR..).unwrap_or_default()
        }
        _ => {
            summary.payload_len = payload_len;
            payload
        }
    };
    Ok(Transport {
        summary,
        tuple,
        inner,
    })
}

/// ICMP type and code through etherparse's slices. `Icmpv4Slice` insists that timestamp
/// messages are exactly 20 bytes; any other ICMP message of 8 bytes or more still has a type
/// and a code, so those are read from the fixed header.
fn icmp_type_code(proto: u8, payload: &[u8]) -> Option<(u8, u8)> {
    if proto == ip_proto::ICMPV6 {
        return Icmpv6Slice::from_slice(payload)
            .ok()
            .map(|s| (s.type_u8(), s.code_u8()));
    }
    match Icmpv4Slice::from_slice(payload) {
        Ok(s) => Some((s.type_u8(), s.code_u8())),
        Err(_) if payload.len() >= ICMP_HDR => Some((*payload.first()?, *payload.get(1)?)),
        Err(_) => None,
    }
}

const UDP_HDR: usize = 8;
/// The ICMP header including its 4-byte rest-of-header.
const ICMP_HDR: usize = 8;
const DNS_PORT: u16 = 53;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::ip;
    use tapflow_proto::summary::tcp;
    use crate::decode::testutil::{icmp4_echo, icmp6_echo, ip4_raw, tcp4, udp4, udp6, v4, A6, B6};

    /// What a transport parse should give: ports (ICMP: Zeek's pseudo-ports), payload length,
    /// flags, TCP flags, ICMP type and code, and how many bytes follow the header.
    type Expect = ((u16, u16), u32, u8, u8, (u8, u8), usize);

    /// `packet` is a whole IP packet; `cut` keeps that many bytes of it (snaplen).
    fn check(packet: &[u8], cut: usize, verify: bool, expected: Result<Expect, DropReason>) {
        let cut = cut.min(packet.len());
        let missing = (packet.len() - cut) as u32;
        let got = ip::parse(&packet[..cut], missing, false).and_then(|p| {
            parse(&p.net, p.proto, p.payload, p.payload_len, verify).map(|t| {
                let s = t.summary;
                assert_eq!(s.ip_len, p.net.ip_len);
                (
                    (t.tuple.sport, t.tuple.dport),
                    s.payload_len,
                    s.flags,
                    s.tcp_flags,
                    (s.icmp_type, s.icmp_code),
                    t.inner.len(),
                )
            })
        });
        assert_eq!(got, expected, "{packet:02x?} cut to {cut}");
    }

    const ALL: usize = usize::MAX;

    #[test]
    fn tcp_fields_and_checksum() {
        let (a, b) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
        let syn = tcp4(a, b, 40000, 80, 1, &[]);
        check(&syn, ALL, true, Ok(((40000, 80), 0, 0, tcp::SYN, (0, 0), 0)));
        let data = tcp4(a, b, 40000, 80, 2, b"GET / HTTP/1.0");
        let psh_ack = tcp::PSH | tcp::ACK;
        check(&data, ALL, true, Ok(((40000, 80), 14, 0, psh_ack, (0, 0), 14)));
        let mut bad = data.clone();
        *bad.last_mut().unwrap_or(&mut 0) ^= 1;
        check(&bad, ALL, true, Ok(((40000, 80), 14, flag::BAD_CHECKSUM, psh_ack, (0, 0), 14)));
        check(&bad, ALL, false, Ok(((40000, 80), 14, 0, psh_ack, (0, 0), 14)));
        // Cut by snaplen: the lengths still come from the header, checksums are skipped.
        check(&bad, 45, true, Ok(((40000, 80), 14, flag::TRUNCATED, psh_ack, (0, 0), 5)));
        check(&bad, 30, true, Err(DropReason::Truncated));
        // Data offset below 5; data offset beyond the IP payload.
        let mut low = syn.clone();
        low[32] = 0x40;
        check(&low, ALL, false, Err(DropReason::MalformedTransport));
        let mut high = syn.clone();
        high[32] = 0xf0;
        check(&high, ALL, false, Err(DropReason::MalformedTransport));
        let seg = ip4_raw(a, b, 6, &syn[20..36]);
        check(&seg, ALL, false, Err(DropReason::MalformedTransport));
    }

    #[test]
    fn tcp_sequence_ack_window() {
        let p = tcp4(v4(1, 1, 1, 1), v4(2, 2, 2, 2), 5, 6, 0x1234_5678, &[]);
        let ip = ip::parse(&p, 0, true).unwrap_or_else(|e| panic!("{e:?}"));
        let t = parse(&ip.net, ip.proto, ip.payload, ip.payload_len, true);
        let s = t.map(|t| (t.summary.seq, t.summary.ack, t.summary.window));
        assert_eq!(s, Ok((0x1234_5678, 7, 1000)));
    }

    #[test]
    fn udp_dns_and_checksums() {
        let (a, b) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
        check(&udp4(a, b, 5353, 53, &[0xab, 0xcd, 0x01, 0x00]), ALL, true, Ok(((5353, 53), 4, 0, 0, (0, 0), 4)));
        let response = udp4(b, a, 53, 5353, &[0xab, 0xcd, 0x81, 0x80]);
        check(&response, ALL, true, Ok(((53, 5353), 4, flag::DNS_RESPONSE, 0, (0, 0), 4)));
        check(&udp4(b, a, 53, 5353, &[0xab, 0xcd]), ALL, true, Ok(((53, 5353), 2, 0, 0, (0, 0), 2)));
        check(&udp4(b, a, 54, 5353, &[0xab, 0xcd, 0x81]), ALL, true, Ok(((54, 5353), 3, 0, 0, (0, 0), 3)));
        let mut bad = response.clone();
        bad[26] ^= 0x55;
        check(&bad, ALL, true, Ok(((53, 5353), 4, flag::BAD_CHECKSUM | flag::DNS_RESPONSE, 0, (0, 0), 4)));
        // IPv4: a zero checksum means none. IPv6: zero is wrong.
        let mut none = bad.clone();
        none[26..28].copy_from_slice(&[0, 0]);
        check(&none, ALL, true, Ok(((53, 5353), 4, flag::DNS_RESPONSE, 0, (0, 0), 4)));
        let six = udp6(A6, B6, 1000, 2000, b"hello");
        check(&six, ALL, true, Ok(((1000, 2000), 5, 0, 0, (0, 0), 5)));
        let mut zero6 = six.clone();
        zero6[46..48].copy_from_slice(&[0, 0]);
        check(&zero6, ALL, true, Ok(((1000, 2000), 5, flag::BAD_CHECKSUM, 0, (0, 0), 5)));
        check(&ip4_raw(a, b, 17, &[0, 53, 0, 53, 0]), ALL, false, Err(DropReason::MalformedTransport));
        check(&six, 45, true, Err(DropReason::Truncated));
    }

    #[test]
    fn icmp_pairs_and_checksums() {
        let (a, b) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
        check(&icmp4_echo(a, b, true), ALL, true, Ok(((8, 0), 4, 0, 0, (8, 0), 4)));
        check(&icmp4_echo(b, a, false), ALL, true, Ok(((0, 8), 4, 0, 0, (0, 0), 4)));
        let mut bad = icmp4_echo(a, b, true);
        bad[30] ^= 1;
        check(&bad, ALL, true, Ok(((8, 0), 4, flag::BAD_CHECKSUM, 0, (8, 0), 4)));
        // Destination unreachable (port, code 3): type and code as the ports; the quoted
        // packet is not looked into.
        let mut unreach = vec![3, 3, 0, 0, 0, 0, 0, 0];
        unreach.extend_from_slice(&udp4(b, a, 1, 2, &[])[..28]);
        let c = Sum::default().add(&unreach).checksum().to_be_bytes();
        unreach[2..4].copy_from_slice(&c);
        check(&ip4_raw(a, b, 1, &unreach), ALL, true, Ok(((3, 3), 28, 0, 0, (3, 3), 28)));
        // A timestamp request of the wrong length still has a type and code.
        check(&ip4_raw(a, b, 1, &[13, 0, 0, 0, 0, 0, 0, 0]), ALL, false, Ok(((13, 14), 0, 0, 0, (13, 0), 0)));
        check(&ip4_raw(a, b, 1, &[8, 0, 0, 0]), ALL, false, Err(DropReason::MalformedTransport));
        check(&icmp6_echo(A6, B6, true), ALL, true, Ok(((128, 129), 4, 0, 0, (128, 0), 4)));
        check(&icmp6_echo(B6, A6, false), ALL, true, Ok(((129, 128), 4, 0, 0, (129, 0), 4)));
        let mut bad6 = icmp6_echo(B6, A6, false);
        bad6[8] ^= 1; // the source address is in the pseudo-header
        check(&bad6, ALL, true, Ok(((129, 128), 4, flag::BAD_CHECKSUM, 0, (129, 0), 4)));
    }

    #[test]
    fn other_protocols_have_no_ports() {
        let (a, b) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
        check(&ip4_raw(a, b, 132, &[1; 28]), ALL, true, Ok(((0, 0), 28, 0, 0, (0, 0), 28)));
        check(&ip4_raw(a, b, 50, &[]), ALL, true, Ok(((0, 0), 0, 0, 0, (0, 0), 0)));
    }
}
