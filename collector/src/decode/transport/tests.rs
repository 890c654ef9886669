//! Transport fields, lengths and checksums, on packets built by etherparse.

use super::*;
use crate::decode::ip;
use crate::decode::testutil::{icmp4_echo, icmp6_echo, ip4_raw, tcp4, udp4, udp6, v4, A6, B6};
use tapflow_proto::summary::tcp;

/// What a transport parse should give: ports (ICMP: Zeek's pseudo-ports), payload length,
/// flags, TCP flags, ICMP type and code, and how many bytes follow the header.
type Expect = ((u16, u16), u32, u8, u8, (u8, u8), usize);

/// `packet` is a whole IP packet; `cut` keeps that many bytes of it (snaplen).
fn check(packet: &[u8], cut: usize, verify: bool, expected: Result<Expect, DropReason>) {
    let cut = cut.min(packet.len());
    let missing = (packet.len() - cut) as u32;
    let got = ip::parse(&packet[..cut], missing, false).and_then(|p| {
        let mut s = PacketSummary::default();
        parse(&p.net, p.proto, p.payload, p.payload_len, verify, &mut s).map(|t| {
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
    check(
        &syn,
        ALL,
        true,
        Ok(((40000, 80), 0, 0, tcp::SYN, (0, 0), 0)),
    );
    let data = tcp4(a, b, 40000, 80, 2, b"GET / HTTP/1.0");
    let psh_ack = tcp::PSH | tcp::ACK;
    check(
        &data,
        ALL,
        true,
        Ok(((40000, 80), 14, 0, psh_ack, (0, 0), 14)),
    );
    let mut bad = data.clone();
    *bad.last_mut().unwrap_or(&mut 0) ^= 1;
    check(
        &bad,
        ALL,
        true,
        Ok(((40000, 80), 14, flag::BAD_CHECKSUM, psh_ack, (0, 0), 14)),
    );
    check(
        &bad,
        ALL,
        false,
        Ok(((40000, 80), 14, 0, psh_ack, (0, 0), 14)),
    );
    // Cut by snaplen: the lengths still come from the header, checksums are skipped.
    check(
        &bad,
        45,
        true,
        Ok(((40000, 80), 14, flag::TRUNCATED, psh_ack, (0, 0), 5)),
    );
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
    let ip = ip::parse(&p, 0, true).expect("parse the IP header");
    let mut s = PacketSummary::default();
    let t = parse(&ip.net, ip.proto, ip.payload, ip.payload_len, true, &mut s);
    assert!(t.is_ok());
    assert_eq!((s.seq, s.ack, s.window), (0x1234_5678, 7, 1000));
}

#[test]
fn udp_dns_and_checksums() {
    let (a, b) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
    check(
        &udp4(a, b, 5353, 53, &[0xab, 0xcd, 0x01, 0x00]),
        ALL,
        true,
        Ok(((5353, 53), 4, 0, 0, (0, 0), 4)),
    );
    let response = udp4(b, a, 53, 5353, &[0xab, 0xcd, 0x81, 0x80]);
    check(
        &response,
        ALL,
        true,
        Ok(((53, 5353), 4, flag::DNS_RESPONSE, 0, (0, 0), 4)),
    );
    check(
        &udp4(b, a, 53, 5353, &[0xab, 0xcd]),
        ALL,
        true,
        Ok(((53, 5353), 2, 0, 0, (0, 0), 2)),
    );
    check(
        &udp4(b, a, 54, 5353, &[0xab, 0xcd, 0x81]),
        ALL,
        true,
        Ok(((54, 5353), 3, 0, 0, (0, 0), 3)),
    );
    let mut bad = response.clone();
    bad[26] ^= 0x55;
    check(
        &bad,
        ALL,
        true,
        Ok((
            (53, 5353),
            4,
            flag::BAD_CHECKSUM | flag::DNS_RESPONSE,
            0,
            (0, 0),
            4,
        )),
    );
    // IPv4: a zero checksum means none. IPv6: zero is wrong.
    let mut none = bad.clone();
    none[26..28].copy_from_slice(&[0, 0]);
    check(
        &none,
        ALL,
        true,
        Ok(((53, 5353), 4, flag::DNS_RESPONSE, 0, (0, 0), 4)),
    );
    let six = udp6(A6, B6, 1000, 2000, b"hello");
    check(&six, ALL, true, Ok(((1000, 2000), 5, 0, 0, (0, 0), 5)));
    let mut zero6 = six.clone();
    zero6[46..48].copy_from_slice(&[0, 0]);
    check(
        &zero6,
        ALL,
        true,
        Ok(((1000, 2000), 5, flag::BAD_CHECKSUM, 0, (0, 0), 5)),
    );
    // VXLAN over IPv6 may send a zero checksum (Zeek accepts it when the datagram looks like
    // VXLAN: the I flag and room for an Ethernet header).
    let vxlan = [vec![0x08, 0, 0, 0, 0, 0, 42, 0], vec![0; 15]].concat();
    let mut zero_vxlan = udp6(A6, B6, 1000, 4789, &vxlan);
    zero_vxlan[46..48].copy_from_slice(&[0, 0]);
    check(
        &zero_vxlan,
        ALL,
        true,
        Ok(((1000, 4789), 23, 0, 0, (0, 0), 23)),
    );
    let mut short = udp6(A6, B6, 1000, 4789, &vxlan[..22]);
    short[46..48].copy_from_slice(&[0, 0]);
    check(
        &short,
        ALL,
        true,
        Ok(((1000, 4789), 22, flag::BAD_CHECKSUM, 0, (0, 0), 22)),
    );
    check(
        &ip4_raw(a, b, 17, &[0, 53, 0, 53, 0]),
        ALL,
        false,
        Err(DropReason::MalformedTransport),
    );
    check(&six, 45, true, Err(DropReason::Truncated));
}

#[test]
fn icmp_pairs_and_checksums() {
    let (a, b) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
    check(
        &icmp4_echo(a, b, true),
        ALL,
        true,
        Ok(((8, 0), 4, 0, 0, (8, 0), 4)),
    );
    check(
        &icmp4_echo(b, a, false),
        ALL,
        true,
        Ok(((0, 8), 4, 0, 0, (0, 0), 4)),
    );
    let mut bad = icmp4_echo(a, b, true);
    bad[30] ^= 1;
    check(
        &bad,
        ALL,
        true,
        Ok(((8, 0), 4, flag::BAD_CHECKSUM, 0, (8, 0), 4)),
    );
    // Destination unreachable (port, code 3): type and code as the ports; the quoted
    // packet is not looked into.
    let mut unreach = vec![3, 3, 0, 0, 0, 0, 0, 0];
    unreach.extend_from_slice(&udp4(b, a, 1, 2, &[])[..28]);
    let c = Sum::default().add(&unreach).checksum().to_be_bytes();
    unreach[2..4].copy_from_slice(&c);
    check(
        &ip4_raw(a, b, 1, &unreach),
        ALL,
        true,
        Ok(((3, 3), 28, 0, 0, (3, 3), 28)),
    );
    // A timestamp request of the wrong length still has a type and code.
    check(
        &ip4_raw(a, b, 1, &[13, 0, 0, 0, 0, 0, 0, 0]),
        ALL,
        false,
        Ok(((13, 14), 0, 0, 0, (13, 0), 0)),
    );
    check(
        &ip4_raw(a, b, 1, &[8, 0, 0, 0]),
        ALL,
        false,
        Err(DropReason::MalformedTransport),
    );
    check(
        &icmp6_echo(A6, B6, true),
        ALL,
        true,
        Ok(((128, 129), 4, 0, 0, (128, 0), 4)),
    );
    check(
        &icmp6_echo(B6, A6, false),
        ALL,
        true,
        Ok(((129, 128), 4, 0, 0, (129, 0), 4)),
    );
    let mut bad6 = icmp6_echo(B6, A6, false);
    bad6[8] ^= 1; // the source address is in the pseudo-header
    check(
        &bad6,
        ALL,
        true,
        Ok(((129, 128), 4, flag::BAD_CHECKSUM, 0, (129, 0), 4)),
    );
}

#[test]
fn other_protocols_have_no_ports() {
    let (a, b) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
    check(
        &ip4_raw(a, b, 132, &[1; 28]),
        ALL,
        true,
        Ok(((0, 0), 28, 0, 0, (0, 0), 28)),
    );
    check(
        &ip4_raw(a, b, 50, &[]),
        ALL,
        true,
        Ok(((0, 0), 0, 0, 0, (0, 0), 0)),
    );
    // IGMP (Zeek's IGMP analyzer takes it) and IPv6's no next header make no connection; 59
    // over IPv4 is just another protocol.
    let igmp_report = [0x16, 0, 0xfa, 0x04, 224, 0, 0, 251];
    let no_conn = Err(DropReason::NoConnection);
    check(&ip4_raw(a, b, 2, &igmp_report), ALL, true, no_conn);
    check(
        &crate::decode::testutil::ipv6(59, A6, B6, &[]),
        ALL,
        true,
        no_conn,
    );
    check(
        &ip4_raw(a, b, 59, &[]),
        ALL,
        true,
        Ok(((0, 0), 0, 0, 0, (0, 0), 0)),
    );
}
