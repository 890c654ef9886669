//! Tunnels through the decoder: each gives the outer flow's summary, then the inner flow's,
//! naming its immediate parent.

use super::*;

const O1: [u8; 4] = [192, 168, 0, 1];
const O2: [u8; 4] = [192, 168, 0, 2];
const INNER_SYN: &str = "6 10.0.0.1:40000 > 10.0.0.2:80 ip=40 pl=0 tcp=0x02 inner";

fn syn() -> Vec<u8> {
    tcp4(A, B, 40000, 80, 1, &[])
}

fn gtp(inner: &[u8]) -> Vec<u8> {
    [
        vec![0x30, 0xff],
        (inner.len() as u16).to_be_bytes().to_vec(),
        vec![0, 0, 0, 1],
        inner.to_vec(),
    ]
    .concat()
}

fn summarised<'a>(lines: &'a [&'a str]) -> (Outcome, &'a [&'a str]) {
    (Summarised, lines)
}

#[test]
fn one_tunnel_of_each_kind() {
    let inner_eth = eth(0x0800, &syn());
    let vxlan = udp4(
        O1,
        O2,
        40000,
        4789,
        &[vec![0x08, 0, 0, 0, 0, 0, 42, 0], inner_eth.clone()].concat(),
    );
    let gre_key = ip4_raw(
        O1,
        O2,
        47,
        &[vec![0x20, 0, 0x08, 0x00, 0, 0, 0, 7], syn()].concat(),
    );
    let gtpu = udp4(O1, O2, 2152, 2152, &gtp(&syn()));
    let ipip = ip4_raw(O1, O2, 4, &syn());
    let six_in_four = ip4_raw(O1, O2, 41, &tcp6(A6, B6, 1, 2, 1, &[]));
    let geneve = udp4(
        O1,
        O2,
        5000,
        6081,
        &[vec![0, 0, 0x65, 0x58, 0, 0, 1, 0], inner_eth.clone()].concat(),
    );
    let erspan = ip4_raw(
        O1,
        O2,
        47,
        &[
            vec![0x10, 0, 0x88, 0xbe, 0, 0, 0, 1],
            vec![0x10, 0, 0, 1, 0, 0, 0, 0],
            inner_eth,
        ]
        .concat(),
    );
    let frames: Vec<Frame> = [vxlan, gre_key, gtpu, ipip, six_in_four, geneve, erspan]
        .into_iter()
        .map(ether)
        .collect();
    let udp_parent = |sport: u16, dport: u16| {
        format!("in[192.168.0.1:{sport} <-> 192.168.0.2:{dport} proto 17]")
    };
    let ip_parent = |proto: u8| format!("in[192.168.0.1:0 <-> 192.168.0.2:0 proto {proto}]");
    let lines = [
        [
            "17 192.168.0.1:40000 > 192.168.0.2:4789 ip=90 pl=62 outer vxlan".to_string(),
            format!("{INNER_SYN} {}", udp_parent(40000, 4789)),
        ],
        [
            "47 192.168.0.1:0 > 192.168.0.2:0 ip=68 pl=48 outer".to_string(),
            format!("{INNER_SYN} {}", ip_parent(47)),
        ],
        [
            "17 192.168.0.1:2152 > 192.168.0.2:2152 ip=76 pl=48 outer gtpv1".to_string(),
            format!("{INNER_SYN} {}", udp_parent(2152, 2152)),
        ],
        [
            "4 192.168.0.1:0 > 192.168.0.2:0 ip=60 pl=40 outer".to_string(),
            format!("{INNER_SYN} {}", ip_parent(4)),
        ],
        [
            "41 192.168.0.1:0 > 192.168.0.2:0 ip=80 pl=60 outer".to_string(),
            format!(
                "6 2001:db8::1:1 > 2001:db8::2:2 ip=60 pl=0 tcp=0x02 inner {}",
                ip_parent(41)
            ),
        ],
        [
            "17 192.168.0.1:5000 > 192.168.0.2:6081 ip=90 pl=62 outer geneve".to_string(),
            format!("{INNER_SYN} {}", udp_parent(5000, 6081)),
        ],
        [
            "47 192.168.0.1:0 > 192.168.0.2:0 ip=90 pl=70 outer".to_string(),
            format!("{INNER_SYN} {}", ip_parent(47)),
        ],
    ];
    let refs: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.iter().map(String::as_str).collect())
        .collect();
    let expected: Vec<(Outcome, &[&str])> = refs.iter().map(|l| summarised(l)).collect();
    let c = check(cfg(), &frames, &expected);
    assert_eq!(
        (
            c.packets,
            c.packets_summarised,
            c.summaries,
            c.inner_undecodable
        ),
        (7, 7, 14, 0)
    );
}

#[test]
fn nesting_stops_at_the_depth_limit() {
    let mut p = syn();
    for level in 0..5u8 {
        p = ip4_raw([172, 16, level, 1], [172, 16, level, 2], 4, &p);
    }
    let parent = |level: u8| format!("in[172.16.{level}.1:0 <-> 172.16.{level}.2:0 proto 4]");
    let lines = [
        "4 172.16.4.1:0 > 172.16.4.2:0 ip=140 pl=120 outer".to_string(),
        format!(
            "4 172.16.3.1:0 > 172.16.3.2:0 ip=120 pl=100 outer inner {}",
            parent(4)
        ),
        format!(
            "4 172.16.2.1:0 > 172.16.2.2:0 ip=100 pl=80 outer inner {}",
            parent(3)
        ),
        format!(
            "4 172.16.1.1:0 > 172.16.1.2:0 ip=80 pl=60 outer inner {}",
            parent(2)
        ),
        format!(
            "4 172.16.0.1:0 > 172.16.0.2:0 ip=60 pl=40 inner {}",
            parent(1)
        ),
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let c = check(cfg(), &[ether(p)], &[(Summarised, &refs)]);
    assert_eq!(c.summaries, 5);
}

#[test]
fn undecodable_inner_and_tunnels_off() {
    let arp = eth(0x0806, &[0, 1, 8, 0, 6, 4, 0, 1]);
    let vxlan_arp = udp4(
        O1,
        O2,
        40000,
        4789,
        &[vec![0x08, 0, 0, 0, 0, 0, 42, 0], arp].concat(),
    );
    let short_gtp = udp4(O1, O2, 2152, 2152, &[0x30, 0xff, 0, 0, 0, 0, 0, 1]);
    let garbage_ipip = ip4_raw(O1, O2, 4, &[0x45, 0, 0, 99, 0, 0]);
    let frames: Vec<Frame> = [vxlan_arp, short_gtp, garbage_ipip]
        .into_iter()
        .map(ether)
        .collect();
    let expected: [(Outcome, &[&str]); 3] = [
        // Undecodable inside, but Zeek's ARP analyzer takes the frame: the tunnel is
        // confirmed (`vxlan`, as Zeek labels zeek-tunnels-vxlan.pcap's ARP-only connections).
        (
            Summarised,
            &["17 192.168.0.1:40000 > 192.168.0.2:4789 ip=58 pl=30 vxlan"],
        ),
        (
            Summarised,
            &["17 192.168.0.1:2152 > 192.168.0.2:2152 ip=36 pl=8"],
        ),
        (
            Summarised,
            &["4 192.168.0.1:0 > 192.168.0.2:0 ip=26 pl=6 outer"],
        ),
    ];
    let c = check(cfg(), &frames, &expected);
    assert_eq!(
        (c.packets_summarised, c.summaries, c.inner_undecodable),
        (3, 3, 3)
    );
    // The GTP-U header says no inner packet: a malformed tunnel, not truncation.
    assert_eq!(
        (
            c.inner_drops.get(DropReason::NonIp),
            c.inner_drops.get(DropReason::MalformedTunnel),
            c.inner_drops.get(DropReason::Truncated),
        ),
        (1, 1, 1)
    );
    let off = DecodeConfig {
        decode_tunnels: false,
        ..cfg()
    };
    let c = check(
        off,
        &[ether(udp4(O1, O2, 2152, 2152, &gtp(&syn())))],
        &[(
            Summarised,
            &["17 192.168.0.1:2152 > 192.168.0.2:2152 ip=76 pl=48"],
        )],
    );
    assert_eq!(c.inner_undecodable, 0);
    // A GTP echo request on the GTP-U port is plain UDP, not an undecodable tunnel.
    let c = check(
        cfg(),
        &[ether(udp4(
            O1,
            O2,
            2152,
            2152,
            &[0x32, 1, 0, 4, 0, 0, 0, 0, 0, 1, 0, 0],
        ))],
        &[(
            Summarised,
            &["17 192.168.0.1:2152 > 192.168.0.2:2152 ip=40 pl=12"],
        )],
    );
    assert_eq!(c.inner_undecodable, 0);
}

/// A tunnel header that is wrong is `MalformedTunnel`; one cut by snaplen stays `Truncated`.
/// Either way the outer packet is summarised and the packet accounting does not change.
#[test]
fn a_malformed_tunnel_header_is_not_truncation() {
    // GRE with the routing bit (RFC 2784 deprecates it: not decoded), and a VXLAN header of
    // 5 bytes where 8 are needed, the datagram ending there.
    let gre_routing = ip4_raw(O1, O2, 47, &[vec![0x40, 0, 0x08, 0x00], syn()].concat());
    let short_vxlan = udp4(O1, O2, 40000, 4789, &[0x08, 0, 0, 0, 0]);
    // A Geneve header claiming 63 words of options, cut by a snaplen of 50 bytes.
    let geneve = udp4(
        O1,
        O2,
        5000,
        6081,
        &[vec![0x3f, 0, 0x65, 0x58, 0, 0, 1, 0], vec![0; 252], syn()].concat(),
    );
    let frames = vec![
        ether(gre_routing),
        ether(short_vxlan),
        ether(geneve).snap(50),
    ];
    let expected: [(Outcome, &[&str]); 3] = [
        (
            Summarised,
            &["47 192.168.0.1:0 > 192.168.0.2:0 ip=64 pl=44 outer"],
        ),
        (
            Summarised,
            &["17 192.168.0.1:40000 > 192.168.0.2:4789 ip=33 pl=5"],
        ),
        (
            Summarised,
            &["17 192.168.0.1:5000 > 192.168.0.2:6081 ip=328 pl=300 trunc"],
        ),
    ];
    let c = check(cfg(), &frames, &expected);
    assert_eq!(
        (
            c.packets_summarised,
            c.drops.packet_drops(),
            c.inner_undecodable,
            c.inner_drops.get(DropReason::MalformedTunnel),
            c.inner_drops.get(DropReason::Truncated),
        ),
        (3, 0, 3, 2, 1)
    );
}

#[test]
fn inner_fragments_are_reassembled_outside_the_packet_accounting() {
    let frags = fragments4(&tcp4(A, B, 5, 6, 2, &[9; 40]), 16, 3);
    let frames: Vec<Frame> = frags
        .iter()
        .map(|f| ether(udp4(O1, O2, 2152, 2152, &gtp(f))))
        .collect();
    let parent = "in[192.168.0.1:2152 <-> 192.168.0.2:2152 proto 17]";
    let outer =
        |ip: u32, pl: u32| format!("17 192.168.0.1:2152 > 192.168.0.2:2152 ip={ip} pl={pl}");
    let lines = [
        vec![outer(72, 44)],
        vec![outer(72, 44)],
        vec![outer(72, 44)],
        vec![
            format!("{} outer gtpv1", outer(68, 40)),
            format!("6 10.0.0.1:5 > 10.0.0.2:6 ip=80 pl=40 tcp=0x18 reasm inner {parent}"),
        ],
    ];
    let refs: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.iter().map(String::as_str).collect())
        .collect();
    let expected: Vec<(Outcome, &[&str])> = refs.iter().map(|l| summarised(l)).collect();
    let c = check(cfg(), &frames, &expected);
    assert_eq!(
        (
            c.packets,
            c.packets_summarised,
            c.fragments_merged,
            c.summaries
        ),
        (4, 4, 0, 5)
    );
    // Inner fragments that never complete are inner packets never summarised.
    let c = check(
        cfg(),
        &frames[..2],
        &[summarised(&refs[0]), summarised(&refs[1])],
    );
    assert_eq!((c.inner_undecodable, c.drops.packet_drops()), (2, 0));
}

#[test]
fn outer_fragments_carry_the_tunnel() {
    // Zeek's gtp outer_ip_frag case: the outer UDP datagram is fragmented, the inner TCP is not.
    let inner = tcp4(A, B, 40000, 80, 2, &[5; 100]);
    let outer = udp4(O1, O2, 2152, 2152, &gtp(&inner));
    let frames: Vec<Frame> = fragments4(&outer, 64, 77).into_iter().map(ether).collect();
    let lines = [
        "17 192.168.0.1:2152 > 192.168.0.2:2152 ip=176 pl=148 reasm outer gtpv1",
        "6 10.0.0.1:40000 > 10.0.0.2:80 ip=140 pl=100 tcp=0x18 inner in[192.168.0.1:2152 <-> 192.168.0.2:2152 proto 17]",
    ];
    let c = check(
        cfg(),
        &frames,
        &[(Held, &[]), (Held, &[]), (Summarised, &lines)],
    );
    assert_eq!(
        (
            c.packets,
            c.packets_summarised,
            c.fragments_merged,
            c.summaries
        ),
        (3, 1, 2, 2)
    );
}

/// Teredo (behind an origin indication), AYIYA, PPTP's enhanced GRE and GRE in UDP give their
/// inner flows; GRE in UDP names the GRE tunnel between the outer addresses as parent.
#[test]
fn teredo_ayiya_pptp_and_gre_in_udp() {
    let origin = [0u8, 0, 0x3c, 0xaf, 0x3f, 0x57, 0xfe, 0xfe];
    let teredo = udp4(
        O1,
        O2,
        50000,
        3544,
        &[origin.as_slice(), &udp6(A6, B6, 1000, 2000, b"hi")].concat(),
    );
    let ayiya_head = [vec![0x11, 0x52, 0x11, 4, 0, 0, 0, 0], vec![0; 22]].concat();
    let ayiya = udp4(O1, O2, 5072, 40001, &[ayiya_head, syn()].concat());
    let pptp_head = [0x30, 0x81, 0x88, 0x0b, 0, 44, 0, 1, 0, 0, 0, 7, 0, 0, 0, 6];
    let pptp = ip4_raw(
        O1,
        O2,
        47,
        &[pptp_head.as_slice(), &[0xff, 3, 0, 0x21], &syn()].concat(),
    );
    let gre_udp = udp4(
        O1,
        O2,
        40000,
        4754,
        &[vec![0, 0, 0x08, 0x00], syn()].concat(),
    );
    let frames: Vec<Frame> = [teredo, ayiya, pptp, gre_udp]
        .into_iter()
        .map(ether)
        .collect();
    let gre_parent = "in[192.168.0.1:0 <-> 192.168.0.2:0 proto 47]";
    let lines = [
        [
            "17 192.168.0.1:50000 > 192.168.0.2:3544 ip=86 pl=58 outer teredo".to_string(),
            "17 2001:db8::1:1000 > 2001:db8::2:2000 ip=50 pl=2 inner \
             in[192.168.0.1:50000 <-> 192.168.0.2:3544 proto 17]"
                .to_string(),
        ],
        [
            "17 192.168.0.1:5072 > 192.168.0.2:40001 ip=98 pl=70 outer ayiya".to_string(),
            format!("{INNER_SYN} in[192.168.0.1:5072 <-> 192.168.0.2:40001 proto 17]"),
        ],
        [
            "47 192.168.0.1:0 > 192.168.0.2:0 ip=80 pl=60 outer".to_string(),
            format!("{INNER_SYN} {gre_parent}"),
        ],
        [
            "17 192.168.0.1:40000 > 192.168.0.2:4754 ip=72 pl=44 outer".to_string(),
            format!("{INNER_SYN} {gre_parent}"),
        ],
    ];
    let refs: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.iter().map(String::as_str).collect())
        .collect();
    let expected: Vec<(Outcome, &[&str])> = refs.iter().map(|l| summarised(l)).collect();
    let c = check(cfg(), &frames, &expected);
    assert_eq!((c.summaries, c.inner_undecodable), (8, 0));
}

/// What is not looked into: a Teredo bubble and a PPTP acknowledgement (no inner packet, no
/// drop), PPP control inside PPTP and a cut 802.11 frame in Aruba's GRE (counted as not decoded), and any tunnel in
/// a UDP datagram whose checksum is wrong (Zeek stops there). A GRE packet is an outer packet
/// all the same: Zeek makes no connection of GRE.
#[test]
fn bubbles_acks_ppp_control_aruba_and_bad_checksums() {
    let bubble = udp4(O1, O2, 3544, 50000, &ipv6(59, A6, B6, &[]));
    let ack = ip4_raw(
        O1,
        O2,
        47,
        &[0x20, 0x81, 0x88, 0x0b, 0, 0, 0, 1, 0, 0, 0, 6],
    );
    let lcp = ip4_raw(
        O1,
        O2,
        47,
        &[
            0x30, 0x01, 0x88, 0x0b, 0, 8, 0, 1, 0, 0, 0, 7, 0xff, 3, 0xc0, 0x21, 1, 1, 0, 4,
        ],
    );
    let aruba = ip4_raw(O1, O2, 47, &[0, 0, 0x82, 0x00, 0x08, 0x02, 0, 0]);
    let mut vxlan = udp4(
        O1,
        O2,
        40000,
        4789,
        &[vec![0x08, 0, 0, 0, 0, 0, 42, 0], eth(0x0800, &syn())].concat(),
    );
    vxlan[27] ^= 0x01; // the UDP checksum
    let frames: Vec<Frame> = [bubble, ack, lcp, aruba, vxlan]
        .into_iter()
        .map(ether)
        .collect();
    let expected: [(Outcome, &[&str]); 5] = [
        summarised(&["17 192.168.0.1:3544 > 192.168.0.2:50000 ip=68 pl=40"]),
        summarised(&["47 192.168.0.1:0 > 192.168.0.2:0 ip=32 pl=12 outer"]),
        summarised(&["47 192.168.0.1:0 > 192.168.0.2:0 ip=40 pl=20 outer"]),
        summarised(&["47 192.168.0.1:0 > 192.168.0.2:0 ip=28 pl=8 outer"]),
        summarised(&["17 192.168.0.1:40000 > 192.168.0.2:4789 ip=90 pl=62 bad"]),
    ];
    let c = check(cfg(), &frames, &expected);
    assert_eq!(
        (
            c.inner_undecodable,
            c.inner_drops.get(DropReason::NonIp),
            c.inner_drops.get(DropReason::Truncated),
        ),
        (2, 1, 1)
    );
}

/// Aruba's GRE carries 802.11 data frames: LLC/SNAP, then the inner packet.
#[test]
fn aruba_gre_carries_an_802_11_frame() {
    let wifi = [
        &[0x08u8, 0x02, 0, 0][..],
        &[0; 18],
        &[0, 0],
        &[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00],
        &syn(),
    ]
    .concat();
    let aruba = ip4_raw(O1, O2, 47, &[&[0u8, 0, 0x82, 0x00][..], &wifi].concat());
    check(
        cfg(),
        &[ether(aruba)],
        &[summarised(&[
            "47 192.168.0.1:0 > 192.168.0.2:0 ip=96 pl=76 outer",
            "6 10.0.0.1:40000 > 10.0.0.2:80 ip=40 pl=0 tcp=0x02 inner in[192.168.0.1:0 <-> 192.168.0.2:0 proto 47]",
        ])],
    );
}

/// A snaplen cut inside the inner packet: a UDP tunnel hands it on as cut (Zeek keeps its wire
/// length), an IP tunnel (GRE, IP-in-IP) takes what was captured for all of it, so Zeek drops it
/// as truncated, and so does tapflow.
#[test]
fn a_cut_inner_packet_lives_in_udp_tunnels_only() {
    let data = tcp4(A, B, 40000, 80, 2, &[7; 100]);
    let vxlan = udp4(
        O1,
        O2,
        40000,
        4789,
        &[vec![0x08, 0, 0, 0, 0, 0, 42, 0], eth(0x0800, &data)].concat(),
    );
    let gre = ip4_raw(O1, O2, 47, &[vec![0, 0, 0x08, 0x00], data].concat());
    let frames = [ether(vxlan).snap(120), ether(gre).snap(100)];
    let expected: [(Outcome, &[&str]); 2] = [
        summarised(&[
            "17 192.168.0.1:40000 > 192.168.0.2:4789 ip=190 pl=162 outer trunc vxlan",
            "6 10.0.0.1:40000 > 10.0.0.2:80 ip=140 pl=100 tcp=0x18 inner trunc \
             in[192.168.0.1:40000 <-> 192.168.0.2:4789 proto 17]",
        ]),
        summarised(&["47 192.168.0.1:0 > 192.168.0.2:0 ip=164 pl=144 outer trunc"]),
    ];
    let c = check(cfg(), &frames, &expected);
    assert_eq!(
        (
            c.inner_undecodable,
            c.inner_drops.get(DropReason::Truncated)
        ),
        (1, 1)
    );
}
