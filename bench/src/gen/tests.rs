//! Checks the generator's promises with an independent parser and checksum routine, and with
//! etherparse and tapflow's own flow keys.

use std::collections::{HashMap, HashSet};

use tapflow_proto::{Addr, FiveTuple, FlowKey};

use super::*;
use crate::pcap::write_capture;

fn config(packets: u64, flows: u64, seed: u64) -> GenConfig {
    GenConfig {
        packets,
        flows,
        seed,
        ..GenConfig::default()
    }
}

fn capture(cfg: &GenConfig) -> Vec<u8> {
    let mut gen = Generator::new(cfg).expect("plan");
    let (bytes, summary) = write_capture(&mut gen, Vec::new()).expect("in memory");
    assert_eq!(summary.packets, cfg.packets);
    assert_eq!(summary.bytes, bytes.len() as u64);
    bytes
}

/// What the tests need from one frame, read without any of the generator's code.
#[derive(Debug)]
struct Parsed {
    v6: bool,
    tuple: FiveTuple,
    /// seq, ack, flags, payload length
    tcp: Option<(u32, u32, u8, u32)>,
    dns_qr: Option<bool>,
    checksums_ok: bool,
}

/// The plain RFC 1071 loop over 16-bit words.
fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut acc: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let w = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            acc += u32::from(w);
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    acc as u16
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn parse(frame: &[u8]) -> Parsed {
    assert!(frame.len() >= 60, "frame shorter than the Ethernet minimum");
    etherparse::SlicedPacket::from_ethernet(frame).expect("etherparse accepts the frame");
    let ip = &frame[14..];
    let (v6, proto, src, dst, l4, mut ok) = match be16(frame, 12) {
        0x0800 => {
            let total = usize::from(be16(ip, 2));
            let hdr_ok = ones_sum(&[&ip[..20]]) == 0xffff;
            let (s, d) = (&ip[12..16], &ip[16..20]);
            let a = |x: &[u8]| Addr::from_v4([x[0], x[1], x[2], x[3]]);
            (false, ip[9], a(s), a(d), &ip[20..total], hdr_ok)
        }
        0x86dd => {
            let plen = usize::from(be16(ip, 4));
            let a = |x: &[u8]| {
                let mut b = [0u8; 16];
                b.copy_from_slice(x);
                Addr::from_v6(b)
            };
            (
                true,
                ip[6],
                a(&ip[8..24]),
                a(&ip[24..40]),
                &ip[40..40 + plen],
                true,
            )
        }
        other => panic!("unexpected ethertype {other:#x}"),
    };
    let len = l4.len() as u32;
    let pseudo: Vec<u8> = if v6 {
        [
            src.as_bytes(),
            dst.as_bytes(),
            &len.to_be_bytes(),
            &[0, 0, 0, proto],
        ]
        .concat()
    } else {
        [
            src.as_bytes(),
            dst.as_bytes(),
            &[0, proto],
            &(len as u16).to_be_bytes(),
        ]
        .concat()
    };
    let mut tuple = FiveTuple {
        proto,
        src,
        dst,
        sport: 0,
        dport: 0,
    };
    let (mut tcp, mut dns_qr) = (None, None);
    match proto {
        6 | 17 => {
            ok &= ones_sum(&[&pseudo, l4]) == 0xffff;
            tuple.sport = be16(l4, 0);
            tuple.dport = be16(l4, 2);
            if proto == 6 {
                let off = u32::from(l4[12] >> 4) * 4;
                tcp = Some((be32(l4, 4), be32(l4, 8), l4[13], len - off));
            } else {
                ok &= be16(l4, 6) != 0 && usize::from(be16(l4, 4)) == l4.len();
                if tuple.sport == 53 || tuple.dport == 53 {
                    dns_qr = Some(l4[10] & 0x80 != 0);
                }
            }
        }
        1 => {
            ok &= ones_sum(&[l4]) == 0xffff;
            tuple = FiveTuple::icmp(proto, src, dst, l4[0], l4[1]);
        }
        58 => {
            ok &= ones_sum(&[&pseudo, l4]) == 0xffff;
            tuple = FiveTuple::icmp(proto, src, dst, l4[0], l4[1]);
        }
        other => panic!("unexpected protocol {other}"),
    }
    Parsed {
        v6,
        tuple,
        tcp,
        dns_qr,
        checksums_ok: ok,
    }
}

/// Generates `cfg` in memory and returns every frame parsed, with its timestamp and size.
fn frames(cfg: &GenConfig) -> Vec<(u64, usize, Parsed)> {
    let mut gen = Generator::new(cfg).expect("plan");
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(p) = gen.next_packet(&mut buf) {
        out.push((p.ts_ns, buf.len(), parse(&buf)));
    }
    out
}

#[test]
fn same_seed_same_bytes() {
    let a = capture(&config(20_000, 1_000, 7));
    let b = capture(&config(20_000, 1_000, 7));
    assert!(a == b, "two runs with seed 7 differ");
    let c = capture(&config(20_000, 1_000, 8));
    assert!(a != c, "seeds 7 and 8 gave the same capture");
    assert_eq!(&a[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
}

#[test]
fn exact_packets_and_flows_all_checksums_correct() {
    for (packets, flows) in [(100_000, 4_000), (30_000, 3_000), (5_000, 50), (100, 20)] {
        let cfg = config(packets, flows, 3);
        let all = frames(&cfg);
        assert_eq!(all.len() as u64, packets);
        let keys: HashSet<FlowKey> = all.iter().map(|(_, _, p)| p.tuple.key(0).0).collect();
        assert_eq!(
            keys.len() as u64,
            flows,
            "distinct five-tuples for {packets}/{flows}"
        );
        for (i, (ts, _, p)) in all.iter().enumerate() {
            assert!(p.checksums_ok, "packet {i}: bad checksum in {p:?}");
            assert!(
                i == 0 || *ts >= all[i - 1].0,
                "packet {i}: time goes backwards"
            );
            if let Some(qr) = p.dns_qr {
                assert_eq!(qr, p.tuple.sport == 53, "packet {i}: DNS QR bit {p:?}");
            }
        }
    }
}

#[test]
fn tcp_sequence_numbers_progress() {
    let all = frames(&config(60_000, 2_400, 11));
    // Next sequence number per direction: (src, sport, dst, dport).
    let mut next: HashMap<(Addr, u16, Addr, u16), u32> = HashMap::new();
    let mut checked = 0;
    for (i, (_, _, p)) in all.iter().enumerate() {
        let Some((seq, ack, flags, len)) = p.tcp else {
            continue;
        };
        let t = p.tuple;
        let dir = (t.src, t.sport, t.dst, t.dport);
        let rev = (t.dst, t.dport, t.src, t.sport);
        let (syn, fin, rst, ack_flag) = (
            flags & 2 != 0,
            flags & 1 != 0,
            flags & 4 != 0,
            flags & 0x10 != 0,
        );
        if let (Some(&want), false) = (next.get(&dir), syn && !ack_flag) {
            assert_eq!(seq, want, "packet {i}: seq in {p:?}");
            checked += 1;
        }
        if let (Some(&want), true) = (next.get(&rev), ack_flag) {
            assert_eq!(ack, want, "packet {i}: ack in {p:?}");
        }
        if !rst {
            next.insert(dir, seq.wrapping_add(len + u32::from(syn) + u32::from(fin)));
        }
    }
    assert!(checked > 30_000, "only {checked} segments checked");
}

#[test]
fn mix_looks_like_the_plan() {
    let cfg = config(100_000, 4_000, 5);
    let all = frames(&cfg);
    let n = all.len() as f64;
    let bytes: usize = all.iter().map(|(_, len, _)| len).sum();
    let avg = bytes as f64 / n;
    assert!(
        (500.0..700.0).contains(&avg),
        "average frame {avg:.0} bytes"
    );
    let mut first_by_key: HashMap<FlowKey, &Parsed> = HashMap::new();
    for (_, _, p) in &all {
        first_by_key.entry(p.tuple.key(0).0).or_insert(p);
    }
    let flows = first_by_key.len() as f64;
    let share =
        |f: &dyn Fn(&Parsed) -> bool| first_by_key.values().filter(|p| f(p)).count() as f64 / flows;
    let v6 = share(&|p| p.v6);
    assert!((0.03..0.07).contains(&v6), "IPv6 share of flows {v6}");
    let udp = share(&|p| p.tuple.proto == 17);
    assert!((0.09..0.15).contains(&udp), "UDP share of flows {udp}");
    let victim = Addr::from_v4(attack::FLOOD_VICTIM.0);
    let flood = all
        .iter()
        .filter(|(_, _, p)| p.tuple.dst == victim && p.tuple.dport == 80)
        .count();
    assert!(
        (0.015..0.025).contains(&(flood as f64 / n)),
        "SYN flood packets {flood}"
    );
    let scanner = Addr::from_v4(attack::SCANNER);
    let scanned: HashSet<u16> = all
        .iter()
        .filter(|(_, _, p)| p.tuple.src == scanner)
        .map(|(_, _, p)| p.tuple.dport)
        .collect();
    assert_eq!(
        scanned.len() as u64,
        Plan::new(&cfg).expect("plan").scan_ports
    );
}

#[test]
fn plans_reject_impossible_configs() {
    assert_eq!(Plan::new(&config(10, 0, 1)), Err(PlanError::NoFlows));
    assert!(matches!(
        Plan::new(&config(10, 100, 1)),
        Err(PlanError::TooFewPackets { .. })
    ));
    let p = Plan::new(&config(5_000_000, 200_000, 1)).expect("plan");
    assert_eq!(p.scan_ports, 1500);
    assert_eq!(p.flood_packets, 100_000);
    assert_eq!(
        p.tcp_flows + p.dns_flows + p.udp_flows + p.icmp_flows + p.flood_tuples + p.scan_ports,
        200_000
    );
}

#[test]
fn a_syn_flood_is_one_valid_unanswered_syn_per_five_tuple() {
    let mut flood = attack::SynFlood::new(20_000, 1_000_000, 3, 1_000_000_000);
    let (bytes, summary) = write_capture(&mut flood, Vec::new()).expect("in memory");
    assert_eq!(summary.packets, 20_000);
    assert_eq!(summary.bytes, bytes.len() as u64);
    assert_eq!(summary.last_ts_ns - summary.first_ts_ns, 19_999 * 1000);
    let mut flood = attack::SynFlood::new(20_000, 1_000_000, 3, 1_000_000_000);
    let mut frame = Vec::new();
    let mut tuples = HashSet::new();
    while flood.next_packet(&mut frame).is_some() {
        let p = parse(&frame);
        assert!(p.checksums_ok);
        assert_eq!(p.tcp.map(|t| t.2), Some(0x02), "a bare SYN");
        assert_eq!(p.tuple.dport, attack::FLOOD_VICTIM.1);
        assert!(tuples.insert(p.tuple), "{:?} repeats", p.tuple);
    }
    assert_eq!(tuples.len(), 20_000);
}

/// Packets, distinct five-tuples (sessions, as tapflow keys them) and the flood's SYNs with
/// their first and last packet index, counted in the generated frames.
fn sessions(mix: Mix, packets: u64, seed: u64) -> (u64, u64, u64, (usize, usize)) {
    let cfg = GenConfig {
        mix,
        flows: mix.default_flows(packets),
        ..config(packets, 0, seed)
    };
    let all = frames(&cfg);
    let keys: HashSet<FlowKey> = all.iter().map(|(_, _, p)| p.tuple.key(0).0).collect();
    let victim = Addr::from_v4(attack::FLOOD_VICTIM.0);
    let flood: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].2.tuple.dst == victim && all[i].2.tuple.dport == 80)
        .collect();
    assert!(
        all.iter().all(|(_, _, p)| p.checksums_ok),
        "{mix}: checksum"
    );
    let span = (flood[0], flood[flood.len() - 1]);
    (
        all.len() as u64,
        keys.len() as u64,
        flood.len() as u64,
        span,
    )
}

#[test]
fn each_mix_has_its_stated_session_share() {
    for seed in [1, 4] {
        let (n, s, flood, _) = sessions(Mix::Bench, 100_000, seed);
        assert_eq!(
            (n, s),
            (100_000, 4_000),
            "bench: one session per 25 packets"
        );
        assert!((1_500..2_500).contains(&flood), "bench: flood {flood}");

        let (n, s, _, _) = sessions(Mix::SessionHeavy, 120_000, seed);
        assert_eq!(n, 120_000);
        let per = n as f64 / s as f64;
        assert!(
            (5.9..6.1).contains(&per),
            "session-heavy: {per} packets per session"
        );

        let (n, s, flood, (first, last)) = sessions(Mix::FloodHeavy, 100_000, seed);
        assert_eq!(n, 100_000);
        assert!(s * 4 >= n, "flood-heavy: {s} sessions in {n} packets");
        assert!(
            s * 10 <= n * 3,
            "flood-heavy: {s} sessions, more than planned"
        );
        assert!(flood * 4 >= n * 23 / 25, "flood-heavy: {flood} flood SYNs");
        // Spread over the middle of the capture, not in one burst.
        assert!(
            first >= 9_000 && (80_000..91_000).contains(&last),
            "{first}..{last}"
        );
    }
}

#[test]
fn flood_heavy_syns_each_open_their_own_session() {
    let cfg = GenConfig {
        mix: Mix::FloodHeavy,
        flows: Mix::FloodHeavy.default_flows(40_000),
        ..config(40_000, 0, 2)
    };
    let plan = Plan::new(&cfg).expect("plan");
    assert_eq!(plan.flood_tuples, plan.flood_packets);
    let victim = Addr::from_v4(attack::FLOOD_VICTIM.0);
    let mut seen = HashSet::new();
    for (_, _, p) in frames(&cfg) {
        if p.tuple.dst == victim && p.tuple.dport == 80 {
            assert_eq!(p.tcp.map(|t| t.2), Some(0x02), "a bare SYN");
            assert!(seen.insert(p.tuple), "{:?} repeats", p.tuple);
        }
    }
    assert_eq!(seen.len() as u64, plan.flood_tuples);
    let again = capture(&cfg);
    assert!(again == capture(&cfg), "flood-heavy is not deterministic");
    assert!(again != capture(&GenConfig { seed: 3, ..cfg }));
}

#[test]
fn mix_names_parse_and_unknown_ones_are_refused() {
    for mix in Mix::ALL {
        assert_eq!(mix.name().parse::<Mix>(), Ok(mix));
    }
    assert!("flood".parse::<Mix>().is_err());
    assert_eq!(Mix::default(), Mix::Bench);
}
