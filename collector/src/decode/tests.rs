//! The decoder end to end: frames in, summaries (shown one per line) and accounting out.
//! Fragments, tunnels and the real captures have their own files below `tests/`.

use std::fmt::Write as _;

use tapflow_proto::summary::flag;

use super::testutil::*;
use super::*;

mod fragments;
mod pcaps;
mod tunnels;

/// One captured frame.
#[derive(Clone, Debug)]
pub(super) struct Frame {
    pub(super) link: LinkType,
    pub(super) ts: u64,
    pub(super) bytes: Vec<u8>,
    pub(super) wire: u32,
}

pub(super) fn frame(link: LinkType, bytes: Vec<u8>) -> Frame {
    let wire = bytes.len() as u32;
    Frame { link, ts: 0, bytes, wire }
}

/// An Ethernet frame around an IP packet.
pub(super) fn ether(ip: Vec<u8>) -> Frame {
    let ty = if ip.first().is_some_and(|b| b >> 4 == 6) { 0x86dd } else { 0x0800 };
    frame(LinkType::Ethernet, eth(ty, &ip))
}

impl Frame {
    pub(super) fn at(mut self, ts: u64) -> Frame {
        self.ts = ts;
        self
    }

    /// Cut by snaplen: `n` bytes captured, the wire length unchanged.
    pub(super) fn snap(mut self, n: usize) -> Frame {
        self.bytes.truncate(n);
        self
    }

    /// Shorter than its headers say, with no snaplen to blame.
    pub(super) fn cut(mut self, n: usize) -> Frame {
        self.bytes.truncate(n);
        self.wire = self.bytes.len() as u32;
        self
    }
}

/// A summary on one line: `proto src:sport > dst:dport ip= pl=`, then what else is set.
pub(super) fn show(s: &PacketSummary) -> String {
    let t = s.tuple();
    let mut line = format!("{} {}:{} > {}:{} ip={} pl={}", t.proto, t.src, t.sport, t.dst, t.dport, s.ip_len, s.payload_len);
    if s.key.vlan != 0 {
        let _ = write!(line, " vlan={}", s.key.vlan);
    }
    if t.proto == 6 {
        let _ = write!(line, " tcp={:#04x}", s.tcp_flags);
    }
    if t.proto == 1 || t.proto == 58 {
        let _ = write!(line, " icmp={}/{}", s.icmp_type, s.icmp_code);
    }
    let names = [
        (flag::BAD_CHECKSUM, "bad"),
        (flag::REASSEMBLED, "reasm"),
        (flag::TUNNEL_OUTER, "outer"),
        (flag::TUNNEL_INNER, "inner"),
        (flag::DNS_RESPONSE, "dns"),
        (flag::TRUNCATED, "trunc"),
    ];
    for (bit, name) in names {
        if s.flags & bit != 0 {
            let _ = write!(line, " {name}");
        }
    }
    if let Some(p) = s.tunnel_parent {
        let _ = write!(line, " in[{p}]");
    }
    line
}

/// Decodes `frames` in order with `cfg`, checking each outcome and summaries (and their
/// timestamps), the accounting invariant after every frame and after `finish`; returns the
/// counters after `finish`.
pub(super) fn check(cfg: DecodeConfig, frames: &[Frame], expected: &[(Outcome, &[&str])]) -> DecodeCounters {
    assert_eq!(frames.len(), expected.len(), "one expectation per frame");
    let mut d = Decoder::new(cfg);
    let mut out = Vec::new();
    for (i, (f, (outcome, lines))) in frames.iter().zip(expected).enumerate() {
        out.clear();
        let got = d.decode(f.link, f.ts, &f.bytes, f.wire, &mut out);
        let shown: Vec<String> = out.iter().map(show).collect();
        assert_eq!((got, shown), (*outcome, lines.iter().map(|l| l.to_string()).collect()), "frame {i}");
        assert!(out.iter().all(|s| s.ts_ns == f.ts));
        assert_invariant(d.counters());
    }
    d.finish();
    assert_eq!(d.counters().fragments_held, 0);
    assert_eq!(d.datagrams_held(), 0);
    assert_invariant(d.counters());
    d.counters().clone()
}

pub(super) fn assert_invariant(c: &DecodeCounters) {
    assert_eq!(
        c.packets,
        c.packets_summarised + c.fragments_merged + c.fragments_held + c.drops.packet_drops(),
        "{c:?}"
    );
}

pub(super) fn cfg() -> DecodeConfig {
    DecodeConfig::default()
}

pub(super) const A: [u8; 4] = [10, 0, 0, 1];
pub(super) const B: [u8; 4] = [10, 0, 0, 2];
const SYN: &str = "6 10.0.0.1:40000 > 10.0.0.2:80 ip=40 pl=0 tcp=0x02";

use Outcome::{Dropped, Held, Summarised};

#[test]
fn every_link_type() {
    let ip = tcp4(A, B, 40000, 80, 1, &[]);
    let nflog = [vec![2, 0, 0, 0, 8, 0, 1, 0, 0, 0, 8, 0], ((ip.len() + 4) as u16).to_le_bytes().to_vec(), vec![9, 0], ip.clone()].concat();
    let sll = [vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00], ip.clone()].concat();
    let sll2 = [vec![0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0], ip.clone()].concat();
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
    let frames = [frame(LinkType::Ipv6, six.clone()), frame(LinkType::Null, [30u32.to_le_bytes().to_vec(), six.clone()].concat()), ether(six)];
    check(cfg(), &frames, &[(Summarised, &[v6] as &[&str]); 3]);
    assert_eq!(LinkType::from_dlt(1), Some(LinkType::Ethernet));
    for (dlt, link) in [(0, "NULL"), (12, "RAW"), (14, "RAW"), (101, "RAW"), (108, "LOOP"), (113, "LINUX_SLL"), (228, "IPV4"), (229, "IPV6"), (239, "NFLOG"), (276, "LINUX_SLL2")] {
        assert_eq!(LinkType::from_dlt(dlt).map(LinkType::name), Some(link));
    }
    assert_eq!(LinkType::from_dlt(105), None);
    let mut d = Decoder::new(cfg());
    assert_eq!(d.unsupported_link(), Dropped(DropReason::UnsupportedLink));
    assert_invariant(d.counters());
}

#[test]
fn vlans_mpls_pppoe_and_non_ip() {
    let ip = tcp4(A, B, 40000, 80, 1, &[]);
    let qinq = eth(0x88a8, &[vec![0, 100, 0x81, 0x00, 0, 200, 0x08, 0x00], ip.clone()].concat());
    let mpls = eth(0x8847, &[vec![0, 1, 0, 64, 0, 2, 1, 64], ip.clone()].concat());
    let pppoe = eth(0x8864, &[vec![0x11, 0, 0, 1, 0, 42, 0, 0x21], ip.clone()].concat());
    let frames = [frame(LinkType::Ethernet, qinq.clone()), frame(LinkType::Ethernet, mpls), frame(LinkType::Ethernet, pppoe)];
    check(cfg(), &frames, &[(Summarised, &[SYN] as &[&str]); 3]);
    let keyed = DecodeConfig { vlan_in_key: true, ..cfg() };
    let vlan_syn = "6 10.0.0.1:40000 > 10.0.0.2:80 ip=40 pl=0 vlan=100 tcp=0x02";
    check(keyed, &[frame(LinkType::Ethernet, qinq), ether(ip)], &[(Summarised, &[vlan_syn]), (Summarised, &[SYN])]);
    let arp = frame(LinkType::Ethernet, eth(0x0806, &[0, 1, 8, 0, 6, 4, 0, 1]));
    let lldp = frame(LinkType::Ethernet, eth(0x88cc, &[2, 7, 4]));
    let c = check(cfg(), &[arp, lldp], &[(Dropped(DropReason::NonIp), &[]), (Dropped(DropReason::NonIp), &[])]);
    assert_eq!(c.drops.get(DropReason::NonIp), 2);
}

#[test]
fn ip_options_and_ipv6_extension_headers() {
    let tcp = &tcp4(A, B, 40000, 80, 1, &[])[20..];
    let with_opts = [ipv4_header(6, A, B, 20, 1, 0, false, &[0x94, 4, 0, 0]), tcp.to_vec()].concat();
    // Hop-by-hop (8 bytes) and destination options (8 bytes) before UDP.
    let udp = &udp6(A6, B6, 5000, 53, b"abc")[40..];
    let ext = ipv6(0, A6, B6, &[vec![60, 0, 1, 4, 0, 0, 0, 0], vec![17, 0, 1, 4, 0, 0, 0, 0], udp.to_vec()].concat());
    check(
        cfg(),
        &[ether(with_opts), ether(ext)],
        &[
            (Summarised, &["6 10.0.0.1:40000 > 10.0.0.2:80 ip=44 pl=0 tcp=0x02"]),
            (Summarised, &["17 2001:db8::1:5000 > 2001:db8::2:53 ip=67 pl=3"]),
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
        (Summarised, &["6 10.0.0.1:40000 > 10.0.0.2:80 ip=45 pl=5 tcp=0x18"]),
        (Summarised, &["17 10.0.0.2:53 > 10.0.0.1:5353 ip=34 pl=6 dns"]),
        (Summarised, &["1 10.0.0.1:8 > 10.0.0.2:0 ip=32 pl=4 icmp=8/0"]),
        (Summarised, &["1 10.0.0.2:0 > 10.0.0.1:8 ip=32 pl=4 icmp=0/0"]),
        (Summarised, &["58 2001:db8::1:128 > 2001:db8::2:129 ip=52 pl=4 icmp=128/0"]),
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
    let c = check(cfg(), &frames, &[(Summarised, &[line]), (Summarised, &[bad_line]), (Dropped(DropReason::BadIpChecksum), &[])]);
    assert_eq!(c.drops.get(DropReason::BadIpChecksum), 1);
    let ignore = DecodeConfig { verify_checksums: false, ..cfg() };
    check(ignore, &[ether(bad_tcp), ether(bad_ip)], &[(Summarised, &[line]), (Summarised, &[line])]);
}

#[test]
fn padding_snaplen_and_truncation() {
    let syn = tcp4(A, B, 40000, 80, 1, &[]);
    let padded = frame(LinkType::Ethernet, [eth(0x0800, &syn), vec![0; 6]].concat());
    let data = ether(tcp4(A, B, 40000, 80, 2, &[7; 100]));
    let frames = [padded, data.clone().snap(70), data.clone().cut(70), data.clone().snap(40), data.clone().cut(10), data.snap(20)];
    let expected: [(Outcome, &[&str]); 6] = [
        (Summarised, &[SYN]),
        (Summarised, &["6 10.0.0.1:40000 > 10.0.0.2:80 ip=140 pl=100 tcp=0x18 trunc"]),
        (Dropped(DropReason::Truncated), &[]),
        (Dropped(DropReason::Truncated), &[]),
        (Dropped(DropReason::Truncated), &[]),
        (Dropped(DropReason::Truncated), &[]),
    ];
    check(cfg(), &frames, &expected);
}

/// Every prefix of a set of valid frames, and pseudo-random garbage, on every link type:
/// nothing panics and every packet is counted.
#[test]
fn prefixes_and_garbage_are_always_counted() {
    let mut samples = vec![
        ether(tcp4(A, B, 1, 2, 2, b"abc")).bytes,
        ether(ipv6(0, A6, B6, &[44, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 1, 0, 0, 0, 7, 0, 1, 0, 2, 0, 16, 0, 0])).bytes,
        eth(0x8100, &[vec![0, 5, 0x88, 0x47, 0, 0, 1, 64], udp4(A, B, 9, 2152, &[vec![0x30, 0xff, 0, 28, 0, 0, 0, 1], udp4(B, A, 3, 4, &[])].concat())].concat()),
        eth(0x0800, &ip4_raw(A, B, 47, &[vec![0x20, 0, 0x65, 0x58, 0, 0, 0, 1], ether(icmp6_echo(A6, B6, true)).bytes].concat())),
    ];
    samples.extend(fragments4(&tcp4(A, B, 5, 6, 2, &[1; 40]), 16, 3).into_iter().map(|ip| eth(0x0800, &ip)));
    let links = [LinkType::Ethernet, LinkType::Raw, LinkType::Null, LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::Nflog];
    let mut d = Decoder::new(DecodeConfig { frag_max_datagrams: 3, ..cfg() });
    let mut out = Vec::new();
    let mut n = 0u64;
    for s in &samples {
        for len in 0..=s.len() {
            for link in links {
                d.decode(link, n, &s[..len], s.len() as u32, &mut out);
                d.decode(link, n, &s[..len], len as u32, &mut out);
                n += 2;
            }
        }
    }
    let mut x: u32 = 0x1234_5678;
    for i in 0..20_000u32 {
        let len = (i % 120) as usize;
        let mut junk = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            junk.push(x as u8);
        }
        if let (Some(s), true) = (samples.get(i as usize % samples.len()), len > 20) {
            // Keep a valid start some of the time so the fuzz reaches deeper layers.
            let keep = (i as usize % s.len()).min(len);
            junk[..keep].copy_from_slice(&s[..keep]);
        }
        d.decode(links[i as usize % links.len()], u64::from(i) * 1_000_000_000, &junk, len as u32 + (i % 3), &mut out);
        n += 1;
    }
    assert_eq!(d.counters().packets, n);
    assert_eq!(d.counters().summaries, out.len() as u64);
    assert_invariant(d.counters());
    d.finish();
    assert_eq!(d.counters().fragments_held, 0);
    assert_invariant(d.counters());
}
