//! Each layer through the decoder: link types, tags, IP options and extension headers,
//! transport fields, checksums, padding and snaplen.

use super::*;

const SYN: &str = "6 10.0.0.1:40000 > 10.0.0.2:80 ip=40 pl=0 tcp=0x02";

#[test]
fn every_link_type() {
    let ip = tcp4(A, B, 40000, 80, 1, &[]);
    let nflog = [
        vec![2, 0, 0, 0, 8, 0, 1, 0, 0, 0, 8, 0],
        ((ip.len() + 4) as u16).to_le_bytes().to_vec(),
        vec![9, 0],
        ip.clone(),
    ]
    .concat();
    let sll = [
        vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00],
        ip.clone(),
    ]
    .concat();
    let sll2 = [
        vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0,
        ],
        ip.clone(),
    ]
    .concat();
    let frames = [
        ether(ip.clone()),
        frame(LinkType::Raw, ip.clone()),
        frame(LinkType::Ipv4, ip.clone()),
        frame(LinkType::Null, [vec![2, 0, 0, 0], ip.clone()].concat()),
        frame(LinkType::Null, [vec![0, 0, 0, 2], ip.clone()].concat()),
        frame(LinkType::Loop, [vec![0, 0, 0, 2], ip.clone()].concat()),
        frame(LinkType::LinuxSll, sll),
        frame(LinkType::LinuxSll2, sll2),
        frame(LinkType::Nflog, nflog),
    ];
    let c = check(cfg(), &frames, &[(Summarised, &[SYN] as &[&str]); 9]);
    assert_eq!((c.packets, c.packets_summarised, c.summaries), (9, 9, 9));
    let six = tcp6(A6, B6, 1, 2, 1, &[]);
    let v6 = "6 2001:db8::1:1 > 2001:db8::2:2 ip=60 pl=0 tcp=0x02";
    let frames = [
        frame(LinkType::Ipv6, six.clone()),
        frame(
            LinkType::Null,
            [30u32.to_le_bytes().to_vec(), six.clone()].concat(),
        ),
        ether(six),
    ];
    check(cfg(), &frames, &[(Summarised, &[v6] as &[&str]); 3]);
    assert_eq!(LinkType::from_dlt(1), Some(LinkType::Ethernet));
    for (dlt, link) in [
        (0, "NULL"),
        (12, "RAW"),
        (14, "RAW"),
        (101, "RAW"),
        (108, "LOOP"),
        (113, "LINUX_SLL"),
        (228, "IPV4"),
        (229, "IPV6"),
        (239, "NFLOG"),
        (276, "LINUX_SLL2"),
    ] {
        assert_eq!(LinkType::from_dlt(dlt).map(LinkType::name), Some(link));
    }
    assert_eq!(LinkType::from_dlt(147), None);
    let mut d = Decoder::new(cfg());
    assert_eq!(d.unsupported_link(), Dropped(DropReason::UnsupportedLink));
    assert_invariant(d.counters());
}

#[test]
fn vlans_mpls_pppoe_and_non_ip() {
    let ip = tcp4(A, B, 40000, 80, 1, &[]);
    let qinq = eth(
        0x88a8,
        &[vec![0, 100, 0x81, 0x00, 0, 200, 0x08, 0x00], ip.clone()].concat(),
    );
    let mpls = eth(
        0x8847,
        &[vec![0, 1, 0, 64, 0, 2, 1, 64], ip.clone()].concat(),
    );
    let pppoe = eth(
        0x8864,
        &[vec![0x11, 0, 0, 1, 0, 42, 0, 0x21], ip.clone()].concat(),
    );
    let frames = [
        frame(LinkType::Ethernet, qinq.clone()),
        frame(LinkType::Ethernet, mpls),
        frame(LinkType::Ethernet, pppoe),
    ];
    check(cfg(), &frames, &[(Summarised, &[SYN] as &[&str]); 3]);
    let keyed = DecodeConfig {
        vlan_in_key: true,
        ..cfg()
    };
    let vlan_syn = "6 10.0.0.1:40000 > 10.0.0.2:80 ip=40 pl=0 vlan=100 tcp=0x02";
    check(
        keyed,
        &[frame(LinkType::Ethernet, qinq), ether(ip)],
        &[(Summarised, &[vlan_syn]), (Summarised, &[SYN])],
    );
    let arp = frame(LinkType::Ethernet, eth(0x0806, &[0, 1, 8, 0, 6, 4, 0, 1]));
    let lldp = frame(LinkType::Ethernet, eth(0x88cc, &[2, 7, 4]));
    let c = check(
        cfg(),
        &[arp, lldp],
        &[
            (Dropped(DropReason::NonIp), &[]),
            (Dropped(DropReason::NonIp), &[]),
        ],
    );
    assert_eq!(c.drops.get(DropReason::NonIp), 2);
}

#[test]
fn ip_options_and_ipv6_extension_headers() {
    let tcp = &tcp4(A, B, 40000, 80, 1, &[])[20..];
    let with_opts = [
        ipv4_header(6, A, B, 20, 1, 0, false, &[0x94, 4, 0, 0]),
        tcp.to_vec(),
    ]
    .concat();
    // Hop-by-hop (8 bytes) and destination options (8 bytes) before UDP.
    let udp = &udp6(A6, B6, 5000, 53, b"abc")[40..];
    let ext = ipv6(
        0,
        A6,
        B6,
        &[
            vec![60, 0, 1, 4, 0, 0, 0, 0],
            vec![17, 0, 1, 4, 0, 0, 0, 0],
            udp.to_vec(),
        ]
        .concat(),
    );
    check(
        cfg(),
        &[ether(with_opts), ether(ext)],
        &[
            (
                Summarised,
                &["6 10.0.0.1:40000 > 10.0.0.2:80 ip=44 pl=0 tcp=0x02"],
            ),
            (
                Summarised,
                &["17 2001:db8::1:5000 > 2001:db8::2:53 ip=67 pl=3"],
            ),
        ],
    );
}

#[test]
fn transport_fields_and_icmp_pairing() {
    let dns = udp4(B, A, 53, 5353, &[0, 1, 0x81, 0x80, 0, 1]);
    let frames = [
        ether(tcp4(A, B, 40000, 80, 2, b"hello")),
        ether(dns),
        ether(icmp4_echo(A, B, true)),
        ether(icmp4_echo(B, A, false)),
        ether(icmp6_echo(A6, B6, true)),
        ether(ip4_raw(A, B, 132, &[0; 12])),
    ];
    let expected: [(Outcome, &[&str]); 6] = [
        (
            Summarised,
            &["6 10.0.0.1:40000 > 10.0.0.2:80 ip=45 pl=5 tcp=0x18"],
        ),
        (
            Summarised,
            &["17 10.0.0.2:53 > 10.0.0.1:5353 ip=34 pl=6 dns"],
        ),
        (
            Summarised,
            &["1 10.0.0.1:8 > 10.0.0.2:0 ip=32 pl=4 icmp=8/0"],
        ),
        (
            Summarised,
            &["1 10.0.0.2:0 > 10.0.0.1:8 ip=32 pl=4 icmp=0/0"],
        ),
        (
            Summarised,
            &["58 2001:db8::1:128 > 2001:db8::2:129 ip=52 pl=4 icmp=128/0"],
        ),
        (Summarised, &["132 10.0.0.1:0 > 10.0.0.2:0 ip=32 pl=12"]),
    ];
    check(cfg(), &frames, &expected);
    // Request and reply share one key, in opposite directions.
    let mut d = Decoder::new(cfg());
    let mut out = Vec::new();
    d.decode(LinkType::Raw, 0, &icmp4_echo(A, B, true), 32, &mut out);
    d.decode(LinkType::Raw, 0, &icmp4_echo(B, A, false), 32, &mut out);
    assert_eq!(out[0].key, out[1].key);
    assert_ne!(out[0].direction(), out[1].direction());
}

#[test]
fn checksums_good_bad_and_ignored() {
    let good = tcp4(A, B, 40000, 80, 2, b"data");
    let mut bad_tcp = good.clone();
    bad_tcp[39] ^= 0xff;
    let mut bad_ip = good.clone();
    bad_ip[8] = 1; // TTL changed, header checksum not updated
    let frames = [ether(good), ether(bad_tcp.clone()), ether(bad_ip.clone())];
    let line = "6 10.0.0.1:40000 > 10.0.0.2:80 ip=44 pl=4 tcp=0x18";
    let bad_line = "6 10.0.0.1:40000 > 10.0.0.2:80 ip=44 pl=4 tcp=0x18 bad";
    let c = check(
        cfg(),
        &frames,
        &[
            (Summarised, &[line]),
            (Summarised, &[bad_line]),
            (Dropped(DropReason::BadIpChecksum), &[]),
        ],
    );
    assert_eq!(c.drops.get(DropReason::BadIpChecksum), 1);
    let ignore = DecodeConfig {
        verify_checksums: false,
        ..cfg()
    };
    check(
        ignore,
        &[ether(bad_tcp), ether(bad_ip)],
        &[(Summarised, &[line]), (Summarised, &[line])],
    );
}

#[test]
fn padding_snaplen_and_truncation() {
    let syn = tcp4(A, B, 40000, 80, 1, &[]);
    let padded = frame(LinkType::Ethernet, [eth(0x0800, &syn), vec![0; 6]].concat());
    let data = ether(tcp4(A, B, 40000, 80, 2, &[7; 100]));
    let frames = [
        padded,
        data.clone().snap(70),
        data.clone().cut(70),
        data.clone().snap(40),
        data.clone().cut(10),
        data.snap(20),
    ];
    let expected: [(Outcome, &[&str]); 6] = [
        (Summarised, &[SYN]),
        (
            Summarised,
            &["6 10.0.0.1:40000 > 10.0.0.2:80 ip=140 pl=100 tcp=0x18 trunc"],
        ),
        (Dropped(DropReason::Truncated), &[]),
        (Dropped(DropReason::Truncated), &[]),
        (Dropped(DropReason::Truncated), &[]),
        (Dropped(DropReason::Truncated), &[]),
    ];
    check(cfg(), &frames, &expected);
}
