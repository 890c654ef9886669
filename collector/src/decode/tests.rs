//! The decoder end to end: frames in, summaries (shown one per line) and accounting out.
//! Fragments, tunnels and the real captures have their own files below `tests/`.

use std::fmt::Write as _;

use tapflow_proto::summary::flag;

use super::testutil::*;
use super::*;

mod corpus;
mod fragments;
mod layers;
mod link_types;
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
    Frame {
        link,
        ts: 0,
        bytes,
        wire,
    }
}

/// An Ethernet frame around an IP packet.
pub(super) fn ether(ip: Vec<u8>) -> Frame {
    let ty = if ip.first().is_some_and(|b| b >> 4 == 6) {
        0x86dd
    } else {
        0x0800
    };
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
    let mut line = format!(
        "{} {}:{} > {}:{} ip={} pl={}",
        t.proto, t.src, t.sport, t.dst, t.dport, s.ip_len, s.payload_len
    );
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
    if let Some(name) = tapflow_proto::summary::tunnel_kind::service(s.tunnel_kind) {
        let _ = write!(line, " {name}");
    }
    if let Some(p) = s.tunnel_parent {
        let _ = write!(line, " in[{p}]");
    }
    line
}

/// Decodes `frames` in order with `cfg`, checking each outcome and summaries (and their
/// timestamps), the accounting invariant after every frame and after `finish`; returns the
/// counters after `finish`.
pub(super) fn check(
    cfg: DecodeConfig,
    frames: &[Frame],
    expected: &[(Outcome, &[&str])],
) -> DecodeCounters {
    assert_eq!(frames.len(), expected.len(), "one expectation per frame");
    let mut d = Decoder::new(cfg);
    let mut out = Vec::new();
    for (i, (f, (outcome, lines))) in frames.iter().zip(expected).enumerate() {
        out.clear();
        let got = d.decode(f.link, f.ts, &f.bytes, f.wire, &mut out);
        let shown: Vec<String> = out.iter().map(show).collect();
        assert_eq!(
            (got, shown),
            (*outcome, lines.iter().map(|l| l.to_string()).collect()),
            "frame {i}"
        );
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

use Outcome::{Dropped, Held, Summarised};

/// Every prefix of a set of valid frames, and pseudo-random garbage, on every link type:
/// nothing panics and every packet is counted.
#[test]
fn prefixes_and_garbage_are_always_counted() {
    let mut samples = vec![
        ether(tcp4(A, B, 1, 2, 2, b"abc")).bytes,
        ether(ipv6(
            0,
            A6,
            B6,
            &[
                44, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 1, 0, 0, 0, 7, 0, 1, 0, 2, 0, 16, 0, 0,
            ],
        ))
        .bytes,
        eth(
            0x8100,
            &[
                vec![0, 5, 0x88, 0x47, 0, 0, 1, 64],
                udp4(
                    A,
                    B,
                    9,
                    2152,
                    &[vec![0x30, 0xff, 0, 28, 0, 0, 0, 1], udp4(B, A, 3, 4, &[])].concat(),
                ),
            ]
            .concat(),
        ),
        eth(
            0x0800,
            &ip4_raw(
                A,
                B,
                47,
                &[
                    vec![0x20, 0, 0x65, 0x58, 0, 0, 0, 1],
                    ether(icmp6_echo(A6, B6, true)).bytes,
                ]
                .concat(),
            ),
        ),
    ];
    samples.extend(
        fragments4(&tcp4(A, B, 5, 6, 2, &[1; 40]), 16, 3)
            .into_iter()
            .map(|ip| eth(0x0800, &ip)),
    );
    let links = [
        LinkType::Ethernet,
        LinkType::Raw,
        LinkType::Null,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::Nflog,
    ];
    let mut d = Decoder::new(DecodeConfig {
        frag_max_datagrams: 3,
        ..cfg()
    });
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
        d.decode(
            links[i as usize % links.len()],
            u64::from(i) * 1_000_000_000,
            &junk,
            len as u32 + (i % 3),
            &mut out,
        );
        n += 1;
    }
    assert_eq!(d.counters().packets, n);
    assert_eq!(d.counters().summaries, out.len() as u64);
    assert_invariant(d.counters());
    d.finish();
    assert_eq!(d.counters().fragments_held, 0);
    assert_invariant(d.counters());
}
