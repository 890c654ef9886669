use tapflow_proto::conn::{uid, ConnRecord, ConnState, DurStats, Timing};
use tapflow_proto::{Addr, FiveTuple};

use super::*;

const T0: u64 = 1_700_000_040_000_000_000;
const MS: u64 = 1_000_000;

/// A TCP session from a client to `server:443` starting at `ts`, with a handshake of `rtt_ns`
/// (synack + ackdat) and the originator's data round trips `data`.
fn session(ts: u64, client: u8, server: u8, rtt_ns: Option<u64>, data: &[u64]) -> ConnRecord {
    let t = FiveTuple {
        proto: 6,
        src: Addr::from_v4([10, 0, 0, client]),
        dst: Addr::from_v4([192, 0, 2, server]),
        sport: 40_000 + u16::from(client),
        dport: 443,
    };
    let key = t.key(0).0;
    let mut timing = Timing {
        tcp_synack_ns: rtt_ns.map(|r| r - r / 4),
        tcp_ackdat_ns: rtt_ns.map(|r| r / 4),
        ..Timing::default()
    };
    for d in data {
        timing.orig_ack_rtt.add(*d);
    }
    ConnRecord {
        ts_ns: ts,
        uid: uid(&key, ts),
        orig_h: t.src,
        orig_p: t.sport,
        resp_h: t.dst,
        resp_p: 443,
        proto: 6,
        duration_ns: Some(MS),
        orig_bytes: Some(10),
        resp_bytes: Some(10),
        conn_state: ConnState::SF,
        local_orig: None,
        local_resp: None,
        missed_bytes: 0,
        history: "ShADadFf".into(),
        orig_pkts: 4,
        orig_ip_bytes: 300,
        resp_pkts: 4,
        resp_ip_bytes: 300,
        tunnel_parents: vec![],
        community_id: Default::default(),
        interim: false,
        evicted: false,
        key,
        orig_tcp_flags: 0x1b,
        resp_tcp_flags: 0x1b,
        split: 0,
        timing: (!timing.is_empty()).then(|| Box::new(timing)),
        service: None,
        server_name: None,
        service_incomplete: false,
    }
}

fn server(last: u8) -> Server {
    Server {
        addr: Addr::from_v4([192, 0, 2, last]),
        port: 443,
    }
}

#[test]
fn nearest_rank_percentiles_of_one_to_a_hundred_and_of_few() {
    let v: Vec<u64> = (1..=100).collect();
    assert_eq!(
        [50, 95, 99, 100].map(|p| nearest_rank(&v, p)),
        [50, 95, 99, 100]
    );
    let p = Percentiles::of(&v, 100).expect("percentiles of 100 values");
    assert_eq!(
        (p.p50, p.p95, p.p99, p.max, p.dropped),
        (50, 95, 99, 100, 0)
    );
    // 20 values: the 95th percentile is the 19th, not the maximum.
    let v: Vec<u64> = (1..=20).collect();
    assert_eq!((nearest_rank(&v, 95), nearest_rank(&v, 99)), (19, 20));
    assert_eq!(nearest_rank(&[7], 50), 7);
    assert_eq!(Percentiles::of(&[], 0), None);
}

#[test]
fn samples_are_the_handshake_and_the_mean_originator_data_round_trip() {
    let r = session(T0, 1, 1, Some(4 * MS), &[2 * MS, 4 * MS, 9 * MS]);
    assert_eq!(
        samples_of(&r),
        Sample {
            tcp_rtt_ns: Some(4 * MS),
            data_rtt_ns: Some(5 * MS)
        }
    );
    // The responder's data acknowledged by the client says nothing about the server.
    let mut only_resp = session(T0, 1, 1, None, &[]);
    let mut t = Timing::default();
    t.resp_ack_rtt.add(3 * MS);
    t.resp_iat = DurStats::default();
    only_resp.timing = Some(Box::new(t));
    assert!(samples_of(&only_resp).is_empty());
    let mut udp = session(T0, 1, 1, Some(MS), &[]);
    udp.proto = 17;
    assert!(samples_of(&udp).is_empty());
    assert!(samples_of(&session(T0, 1, 1, None, &[])).is_empty());
}

#[test]
fn past_the_sample_cap_samples_are_counted_not_kept() {
    let caps = Caps {
        samples: 10,
        servers: 2,
    };
    let mut w = Window::default();
    for i in 1..=15u64 {
        let s = Sample {
            tcp_rtt_ns: Some(i * MS),
            data_rtt_ns: (i % 2 == 0).then_some(i),
        };
        assert!(w.add(server(1), s, caps));
    }
    let all = w.summarise();
    let s = all[&server(1)];
    assert_eq!(s.sessions, 15);
    let rtt = s.tcp_rtt.expect("handshake percentiles");
    // The first 10 kept (release order): 1..=10 ms.
    assert_eq!(
        (rtt.n, rtt.dropped, rtt.p50, rtt.p95, rtt.max),
        (15, 5, 5 * MS, 10 * MS, 10 * MS)
    );
    let data = s.data_rtt.expect("data percentiles");
    assert_eq!((data.n, data.dropped, data.p50, data.max), (7, 0, 8, 14));
}

#[test]
fn past_the_servers_cap_sessions_are_counted() {
    let caps = Caps {
        samples: 10,
        servers: 2,
    };
    let mut w = Window::default();
    let s = Sample {
        tcp_rtt_ns: Some(MS),
        data_rtt_ns: None,
    };
    assert!(w.add(server(1), s, caps) && w.add(server(2), s, caps));
    assert!(!w.add(server(3), s, caps), "a third server past cap 2");
    assert!(w.add(server(1), s, caps), "a server tracked already");
    assert!(w.add(server(3), Sample::default(), caps), "nothing to keep");
    assert_eq!(w.over_cap(), 1);
    assert_eq!(w.summarise().len(), 2);
}

#[test]
fn windows_close_after_the_hold_and_the_order_of_records_does_not_matter() {
    let recs: Vec<ConnRecord> = (0..40u64)
        .map(|i| {
            session(
                T0 + i * 3 * 1_000_000_000,
                i as u8,
                (i % 2) as u8,
                Some((1 + i * 7 % 13) * MS),
                &[(2 + i % 5) * MS],
            )
        })
        .collect();
    let run = |order: &mut dyn Iterator<Item = &ConnRecord>| {
        let mut t = Tracker::new(60, 120, Caps::default());
        let mut out = Vec::new();
        for r in order {
            t.on_record(r, &mut out);
        }
        assert!(
            out.is_empty(),
            "no window ends 120 s before the last record"
        );
        t.close_until(u64::MAX, &mut out);
        out
    };
    let forward = run(&mut recs.iter());
    let backward = run(&mut recs.iter().rev());
    assert_eq!(forward, backward);
    assert_eq!(forward.len(), 2, "two minutes of sessions: two windows");
    let first = &forward[0];
    assert_eq!(first.start_ns, T0 / 60_000_000_000 * 60_000_000_000);
    let s = first.servers[&server(0)];
    assert_eq!(s.sessions, 10);

    let mut t = Tracker::new(60, 120, Caps::default());
    let mut out = Vec::new();
    t.on_record(&session(T0, 1, 1, Some(MS), &[]), &mut out);
    t.on_record(
        &session(T0 + 181_000_000_000, 1, 1, Some(MS), &[]),
        &mut out,
    );
    assert_eq!(out.len(), 1, "the first window closed 120 s past its end");
    t.on_record(&session(T0 + 1_000_000_000, 2, 1, Some(MS), &[]), &mut out);
    assert_eq!(t.stats().late, 1);
}
