//! A set {0, 1} gains processor 2 at `T` (and, where said, loses 1 at `T2`): what each
//! processor's flow table does at the switches, with a real [`FlowTable`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use tapflow_proto::conn::split;
use tapflow_proto::key::ip_proto;
use tapflow_proto::procset::{Change, ProcessorSet};
use tapflow_proto::slots::SlotTable;
use tapflow_proto::summary::tcp as tf;
use tapflow_proto::{Addr, FiveTuple, FlowKey, PacketSummary};

use super::{continues, Epochs};
use crate::session::{ConnRecord, FlowTable, SessionConfig};

const SECOND: u64 = 1_000_000_000;
/// The switch that adds processor 2.
const T: u64 = 1_700_000_100 * SECOND;
/// The switch that removes processor 1.
const T2: u64 = T + 600 * SECOND;

fn set(changes: &[(Change, u64)]) -> ProcessorSet {
    ProcessorSet::replay(&[0, 1], changes, BTreeMap::new()).expect("a valid history")
}

fn table(set: &ProcessorSet, epoch: u32) -> &SlotTable {
    &set.epoch(epoch).expect("the epoch exists").table
}

/// A packet from 10.0.0.1:`sport` to 10.0.0.2:5000 (TCP: mid-stream unless `tcp_flags` say).
fn packet(proto: u8, sport: u16, ts_ns: u64, tcp_flags: u8) -> PacketSummary {
    let mut s = PacketSummary {
        ts_ns,
        ip_len: 100,
        payload_len: 60,
        tcp_flags,
        ..PacketSummary::default()
    };
    let tuple = FiveTuple {
        proto,
        src: Addr::from(IpAddr::from([10, 0, 0, 1])),
        dst: Addr::from(IpAddr::from([10, 0, 0, 2])),
        sport,
        dport: 5000,
    };
    s.set_tuple(&tuple, 0);
    if proto == ip_proto::TCP {
        (s.seq, s.ack, s.window) = (1000, 1, 1024);
    }
    s
}

/// Mid-stream packets at `ts_ns` on flows `keep` selects, alternately UDP and TCP, distinct
/// source ports from 1024 up.
fn flows(n: usize, ts_ns: u64, keep: impl Fn(&FlowKey) -> bool) -> Vec<PacketSummary> {
    (1024..=u16::MAX)
        .map(|p| {
            if p % 2 == 0 {
                packet(ip_proto::UDP, p, ts_ns, 0)
            } else {
                packet(ip_proto::TCP, p, ts_ns, tf::ACK | tf::PSH)
            }
        })
        .filter(|s| keep(&s.key))
        .take(n)
        .collect()
}

/// What the engine does with one summary: into the table, and `on_created` when it made a flow.
fn feed(e: &mut Epochs, table: &mut FlowTable, s: &PacketSummary, out: &mut Vec<ConnRecord>) {
    let created = table.stats().flows_created;
    table.on_summary(s, out);
    if table.stats().flows_created > created {
        e.on_created(s, table);
    }
}

fn keys(records: &[ConnRecord]) -> BTreeSet<FlowKey> {
    records.iter().map(|r| r.key).collect()
}

#[test]
fn a_switch_closes_exactly_the_flows_whose_slot_moved_away() {
    let set = set(&[(Change::Add(2), T)]);
    let (e1, e2) = (table(&set, 1), table(&set, 2));
    let mut e = Epochs::new(set.clone(), 0);
    let mut t = FlowTable::new(SessionConfig::default());
    let mut out = Vec::new();
    let before = flows(200, T - 10 * SECOND, |k| e1.owner(k) == 0);
    assert_eq!(before.len(), 200);
    for s in &before {
        feed(&mut e, &mut t, s, &mut out);
    }
    assert!(out.is_empty());
    assert_eq!(t.stats().open_flows, 200);
    let moved: BTreeSet<FlowKey> = before
        .iter()
        .map(|s| s.key)
        .filter(|k| e2.owner(k) != 0)
        .collect();
    assert!(
        !moved.is_empty() && moved.len() < 200,
        "some flows move and some stay ({} moved)",
        moved.len()
    );

    // Not yet: the switch is at T, not before.
    assert_eq!(e.next_switch_ns(), T);
    e.apply(T - 1, &mut t, &mut out);
    assert!(out.is_empty());
    assert_eq!((t.stats().open_flows, e.next_switch_ns()), (200, T));

    e.apply(T, &mut t, &mut out);
    assert_eq!(keys(&out), moved);
    assert_eq!(out.len(), moved.len());
    assert!(out.iter().all(|r| r.split == split::CLOSED));
    assert_eq!(e.flows_moved_out, moved.len() as u64);
    assert_eq!(e.flows_continued, 0);
    assert_eq!(t.stats().open_flows, 200 - moved.len() as u64);
    assert_eq!(e.next_switch_ns(), u64::MAX);

    // Applied once: later times change nothing.
    e.apply(T, &mut t, &mut out);
    e.apply(u64::MAX, &mut t, &mut out);
    assert_eq!(out.len(), moved.len());
    assert_eq!(e.flows_moved_out, moved.len() as u64);
    assert_eq!(t.stats().open_flows, 200 - moved.len() as u64);

    // The flows that stayed end unmarked.
    let closed = out.len();
    t.flush(&mut out);
    let stayed: BTreeSet<FlowKey> = before
        .iter()
        .map(|s| s.key)
        .filter(|k| !moved.contains(k))
        .collect();
    assert_eq!(keys(&out[closed..]), stayed);
    assert!(out[closed..].iter().all(|r| r.split == 0));
}

#[test]
fn the_newcomer_marks_flows_it_creates_in_moved_in_slots_within_the_timeout() {
    let set = set(&[(Change::Add(2), T)]);
    let e2 = table(&set, 2);
    let mut e = Epochs::new(set.clone(), 2);
    let mut t = FlowTable::new(SessionConfig::default());
    let mut out = Vec::new();
    e.apply(T, &mut t, &mut out);
    assert!(out.is_empty());
    assert_eq!((e.flows_moved_out, e.next_switch_ns()), (0, u64::MAX));

    let udp = SessionConfig::default().udp_inactivity_ns;
    let tcp = SessionConfig::default().tcp_inactivity_ns;
    // (case, moved in, protocol, TCP flags, packet time, marked continued)
    let cases: [(&str, bool, u8, u8, u64, bool); 8] = [
        ("udp at the switch", true, ip_proto::UDP, 0, T, true),
        ("udp 1 s after", true, ip_proto::UDP, 0, T + SECOND, true),
        (
            "udp in a slot that did not move in",
            false,
            ip_proto::UDP,
            0,
            T + SECOND,
            false,
        ),
        // A SYN may retransmit an attempt the old owner saw: the aggregator decides.
        (
            "tcp syn 1 s after",
            true,
            ip_proto::TCP,
            tf::SYN,
            T + SECOND,
            true,
        ),
        (
            "udp just inside its timeout",
            true,
            ip_proto::UDP,
            0,
            T + udp - 1,
            true,
        ),
        ("udp at its timeout", true, ip_proto::UDP, 0, T + udp, false),
        (
            "tcp past the udp timeout",
            true,
            ip_proto::TCP,
            tf::ACK,
            T + 2 * udp,
            true,
        ),
        (
            "tcp at its timeout",
            true,
            ip_proto::TCP,
            tf::ACK,
            T + tcp,
            false,
        ),
    ];
    let mut ports = 1024..=u16::MAX;
    let mut fed = Vec::new();
    for &(name, moved_in, proto, flags, ts, _) in &cases {
        let s = ports
            .by_ref()
            .map(|p| packet(proto, p, ts, flags))
            .find(|s| (e2.owner(&s.key) == 2) == moved_in)
            .expect("ports enough");
        feed(&mut e, &mut t, &s, &mut out);
        fed.push((name, s.key));
    }
    assert!(out.is_empty());
    t.flush(&mut out);
    let split_of: BTreeMap<FlowKey, u8> = out.iter().map(|r| (r.key, r.split)).collect();
    let got: Vec<(&str, bool)> = fed
        .iter()
        .map(|&(name, key)| (name, split_of.get(&key) == Some(&split::CONTINUED)))
        .collect();
    let want: Vec<(&str, bool)> = cases.iter().map(|c| (c.0, c.5)).collect();
    assert_eq!(got, want);
    assert_eq!(out.len(), cases.len());
    assert!(out.iter().all(|r| r.split & split::CLOSED == 0));
    let marked = cases.iter().filter(|c| c.5).count() as u64;
    assert_eq!(e.flows_continued, marked);
}

#[test]
fn a_processor_the_latest_epoch_removes_is_leaving_and_closes_every_flow() {
    let added = set(&[(Change::Add(2), T)]);
    let removed = set(&[(Change::Add(2), T), (Change::Remove(1), T2)]);
    let mut e = Epochs::new(added.clone(), 1);
    assert!(!e.leaving());
    e.update(removed.clone());
    assert!(e.leaving());
    assert!(!Epochs::new(removed.clone(), 0).leaving());
    assert!(!Epochs::new(removed.clone(), 2).leaving());

    let mut t = FlowTable::new(SessionConfig::default());
    let mut out = Vec::new();
    let (e1, e2) = (table(&removed, 1), table(&removed, 2));
    let before = flows(100, T - 10 * SECOND, |k| e1.owner(k) == 1);
    for s in &before {
        feed(&mut e, &mut t, s, &mut out);
    }
    assert_eq!(e.next_switch_ns(), T);
    e.apply(T, &mut t, &mut out);
    let to_2 = before.iter().filter(|s| e2.owner(&s.key) == 2).count();
    assert!(to_2 > 0 && to_2 < 100, "{to_2} of 100 move to the newcomer");
    assert_eq!(out.len(), to_2);
    assert_eq!(e.next_switch_ns(), T2);

    // New flows that arrive between the switches, in the slots 1 still owns.
    let seen: BTreeSet<FlowKey> = before.iter().map(|s| s.key).collect();
    let between = flows(50, T + 10 * SECOND, |k| {
        e2.owner(k) == 1 && !seen.contains(k)
    });
    for s in &between {
        feed(&mut e, &mut t, s, &mut out);
    }
    assert_eq!(t.stats().open_flows, (100 - to_2 + 50) as u64);

    // The engine's end of stream for a leaving processor.
    e.apply(u64::MAX, &mut t, &mut out);
    let all: BTreeSet<FlowKey> = before.iter().chain(&between).map(|s| s.key).collect();
    assert_eq!(all.len(), 150);
    assert_eq!(keys(&out), all);
    assert_eq!(out.len(), 150);
    assert!(out.iter().all(|r| r.split == split::CLOSED));
    assert_eq!(t.stats().open_flows, 0);
    assert_eq!(e.flows_moved_out, 150);
    assert_eq!(e.next_switch_ns(), u64::MAX);
}

/// `continues(default config, packet, T)` for each `(case, packet, expected)`.
fn check(cases: &[(&str, PacketSummary, bool)]) {
    let c = SessionConfig::default();
    let got: Vec<(&str, bool)> = cases
        .iter()
        .map(|(name, s, _)| (*name, continues(&c, s, T)))
        .collect();
    let want: Vec<(&str, bool)> = cases.iter().map(|(name, _, v)| (*name, *v)).collect();
    assert_eq!(got, want);
}

#[test]
fn continues_needs_a_non_syn_packet_within_the_protocol_timeout() {
    let c = SessionConfig::default();
    let (tcp, udp) = (c.tcp_inactivity_ns, c.udp_inactivity_ns);
    let t = |ts, flags| packet(ip_proto::TCP, 40000, ts, flags);
    let other = |proto, ts| packet(proto, 40000, ts, 0);
    check(&[
        ("tcp pure syn", t(T + SECOND, tf::SYN), false),
        ("tcp syn-ack", t(T + SECOND, tf::SYN | tf::ACK), true),
        ("tcp mid-stream", t(T + SECOND, tf::ACK | tf::PSH), true),
        ("tcp fin", t(T + SECOND, tf::FIN | tf::ACK), true),
        ("tcp just inside its timeout", t(T + tcp - 1, tf::ACK), true),
        ("tcp at its timeout", t(T + tcp, tf::ACK), false),
        ("tcp past its timeout", t(T + tcp + SECOND, tf::ACK), false),
        (
            "udp past its timeout, inside tcp's",
            other(ip_proto::UDP, T + udp),
            false,
        ),
        (
            "udp inside its timeout",
            other(ip_proto::UDP, T + udp - 1),
            true,
        ),
        ("icmp inside", other(ip_proto::ICMP, T + SECOND), true),
        (
            "icmp at its timeout",
            other(ip_proto::ICMP, T + c.icmp_inactivity_ns),
            false,
        ),
        ("sctp inside", other(132, T + SECOND), true),
        (
            "sctp at its timeout",
            other(132, T + c.other_inactivity_ns),
            false,
        ),
    ]);
}
