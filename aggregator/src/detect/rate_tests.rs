//! Reflection by shape, peak rates and new flows per second, on records made here.

use tapflow_proto::conn::{uid, ConnRecord, ConnState};
use tapflow_proto::key::ip_proto;
use tapflow_proto::{Addr, FiveTuple};

use super::*;

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

fn v4(a: [u8; 4]) -> Addr {
    Addr::from_v4(a)
}

/// A UDP record of `pkts` datagrams of `size` bytes from `src` to `dst` only, at `ts`.
fn one_way(ts: u64, src: ([u8; 4], u16), dst: ([u8; 4], u16), pkts: u64, size: u64) -> ConnRecord {
    let t = FiveTuple {
        proto: ip_proto::UDP,
        src: v4(src.0),
        dst: v4(dst.0),
        sport: src.1,
        dport: dst.1,
    };
    let key = t.key(0).0;
    ConnRecord {
        ts_ns: ts,
        uid: uid(&key, ts),
        orig_h: t.src,
        orig_p: src.1,
        resp_h: t.dst,
        resp_p: dst.1,
        proto: ip_proto::UDP,
        duration_ns: None,
        orig_bytes: None,
        resp_bytes: None,
        conn_state: ConnState::S0,
        local_orig: None,
        local_resp: None,
        missed_bytes: 0,
        history: "D".into(),
        orig_pkts: pkts,
        orig_ip_bytes: pkts * size,
        resp_pkts: 0,
        resp_ip_bytes: 0,
        tunnel_parents: vec![],
        community_id: Default::default(),
        interim: false,
        evicted: false,
        key,
        orig_tcp_flags: 0,
        resp_tcp_flags: 0,
        split: 0,
        timing: None,
        service: None,
        server_name: None,
        service_incomplete: false,
    }
}

fn run(cfg: DetectConfig, records: &[ConnRecord]) -> Vec<AlertEvent> {
    let mut d = Detector::new(cfg);
    let mut out = Vec::new();
    let mut sorted: Vec<&ConnRecord> = records.iter().collect();
    sorted.sort_by_key(|r| (r.ts_ns + r.duration_ns.unwrap_or(0), r.uid.clone()));
    for r in sorted {
        d.on_record(r, &mut out);
    }
    d.finish(&mut out);
    assert_eq!(d.stats().cap_hits, 0);
    out
}

fn starts(events: &[AlertEvent]) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter(|e| e.event == EventKind::Start)
        .map(|e| (e.kind.to_string(), e.src.clone(), e.dst.clone()))
        .collect()
}

const VICTIM: [u8; 4] = [10, 9, 9, 9];

/// `n` reflectors answering from `port` to random ports of the victim.
fn reflection(n: u8, port: u16) -> Vec<ConnRecord> {
    (0..n)
        .map(|i| {
            one_way(
                T0 + u64::from(i) * MS,
                ([198, 51, 100, i], port),
                (VICTIM, 20_000 + u16::from(i)),
                2,
                400,
            )
        })
        .collect()
}

#[test]
fn reflection_by_shape_from_a_port_zeek_does_not_orient() {
    let want = vec![(
        "reflection".to_owned(),
        "*".to_owned(),
        "10.9.9.9".to_owned(),
    )];
    let events = run(DetectConfig::default(), &reflection(20, 47808));
    assert_eq!(starts(&events), want);
    let e = &events[0];
    for (k, v) in [
        ("distinct_sources", 20),
        ("one_way_sources", 20),
        ("packets", 40),
        ("bytes", 16_000),
        ("bytes_per_packet", 400),
        ("src_ports", 1),
        ("src_port_1", 47808),
        ("src_port_1_pct", 100),
    ] {
        assert_eq!(e.evidence.get(k), Some(&v), "{k}: {:?}", e.evidence);
    }
    assert!(starts(&run(DetectConfig::default(), &reflection(19, 47808))).is_empty());
    // Many packets per source is not the shape of reflection.
    let heavy: Vec<ConnRecord> = reflection(20, 4500)
        .into_iter()
        .map(|mut r| {
            r.orig_pkts = 101;
            r
        })
        .collect();
    assert!(starts(&run(DetectConfig::default(), &heavy)).is_empty());
}

#[test]
fn answers_to_a_discovery_the_victim_sent_are_not_reflection() {
    let mut records = reflection(30, 1900);
    // The victim asked port 1900 itself (an SSDP M-SEARCH to the multicast group).
    records.push(one_way(
        T0,
        (VICTIM, 50_000),
        ([239, 255, 255, 250], 1900),
        1,
        200,
    ));
    assert!(starts(&run(DetectConfig::default(), &records)).is_empty());
}

#[test]
fn a_burst_fires_at_its_peak_rate_and_new_flows_by_subnet() {
    // 5,000 datagrams in 50 ms from 5,000 sources, each from its own port: 50,000 packets/s
    // over the 100 ms interval, 1,000/s over the 5 s window.
    let burst = |n: u32| -> Vec<ConnRecord> {
        (0..n)
            .map(|i| {
                let b = i.to_be_bytes();
                one_way(
                    T0 + u64::from(i) * 50 * MS / u64::from(n),
                    ([100, b[1], b[2], b[3]], 1024 + (i % 60_000) as u16),
                    (VICTIM, 9),
                    1,
                    60,
                )
            })
            .collect()
    };
    let flood = (
        "udp_flood".to_owned(),
        "*".to_owned(),
        "10.9.9.9".to_owned(),
    );
    let events = run(DetectConfig::default(), &burst(5_000));
    assert_eq!(starts(&events), vec![flood.clone()]);
    assert_eq!(events[0].evidence.get("peak_pps"), Some(&50_000));
    assert_eq!(events[0].evidence.get("pps"), Some(&1_000));
    assert!(starts(&run(DetectConfig::default(), &burst(4_999))).is_empty());
    // The same 5,000 new flows in one window are 1,000 a second: a flow_flood where a subnet
    // sets 1,000, not elsewhere.
    let cfg = DetectConfig {
        subnets: vec![SubnetThresholds {
            net: "10.9.9.0/24".into(),
            parsed: Some((v4([10, 9, 9, 0]), 24)),
            new_flows_per_s: Some(1_000),
            peak_pps: Some(60_000),
            ..SubnetThresholds::default()
        }],
        ..DetectConfig::default()
    };
    let events = run(cfg.clone(), &burst(5_000));
    let flows = (
        "flow_flood".to_owned(),
        "*".to_owned(),
        "10.9.9.9".to_owned(),
    );
    assert_eq!(starts(&events), vec![flows]);
    assert_eq!(events[0].evidence.get("new_flows"), Some(&5_000));
    assert_eq!(events[0].evidence.get("distinct_sources"), Some(&5_000));
    assert!(starts(&run(cfg, &burst(4_999))).is_empty());
}
