use tapflow_proto::conn::{uid, ConnRecord, ConnState};
use tapflow_proto::summary::tcp;
use tapflow_proto::{Addr, FiveTuple};

use super::*;

const T0: u64 = 1_700_000_000_000_000_000;
const S: u64 = 1_000_000_000;

fn v4(s: &str) -> Addr {
    Addr::from(
        s.parse::<std::net::IpAddr>()
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
    )
}

/// A record from `src:sport` to `dst:dport` with Zeek's history and the flags each side sent.
#[allow(clippy::too_many_arguments)]
fn rec(
    ts: u64,
    proto: u8,
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    history: &str,
    pkts: (u64, u64),
    flags: (u8, u8),
) -> ConnRecord {
    let t = FiveTuple {
        proto,
        src: v4(src),
        dst: v4(dst),
        sport,
        dport,
    };
    let key = t.key(0).0;
    ConnRecord {
        ts_ns: ts,
        uid: uid(&key, ts),
        orig_h: t.src,
        orig_p: sport,
        resp_h: t.dst,
        resp_p: dport,
        proto,
        duration_ns: None,
        orig_bytes: None,
        resp_bytes: None,
        conn_state: ConnState::OTH,
        local_orig: None,
        local_resp: None,
        missed_bytes: 0,
        history: history.into(),
        orig_pkts: pkts.0,
        orig_ip_bytes: pkts.0 * 60,
        resp_pkts: pkts.1,
        resp_ip_bytes: pkts.1 * 60,
        tunnel_parents: vec![],
        community_id: Default::default(),
        interim: false,
        evicted: false,
        key,
        orig_tcp_flags: flags.0,
        resp_tcp_flags: flags.1,
        split: 0,
        timing: None,
        service: None,
        server_name: None,
        service_incomplete: false,
    }
}

/// Runs records through a detector and returns the (event, kind, src, dst) it reports.
fn check(cfg: DetectConfig, mut records: Vec<ConnRecord>, expected: &[(&str, &str, &str, &str)]) {
    records.sort_by_key(|r| r.ts_ns + r.duration_ns.unwrap_or(0));
    let mut d = Detector::new(cfg);
    let mut out = Vec::new();
    for r in &records {
        d.on_record(r, &mut out);
    }
    d.finish(&mut out);
    let got: Vec<(String, String, String, String)> = out
        .iter()
        .map(|e| {
            (
                e.event.as_str().into(),
                e.kind.as_str().into(),
                e.src.clone(),
                e.dst.clone(),
            )
        })
        .collect();
    let want: Vec<(String, String, String, String)> = expected
        .iter()
        .map(|(a, b, c, d)| ((*a).into(), (*b).into(), (*c).into(), (*d).into()))
        .collect();
    assert_eq!(got, want);
}

const SYN: u8 = tcp::SYN;
const SA: u8 = tcp::SYN | tcp::ACK;
const RA: u8 = tcp::RST | tcp::ACK;

#[test]
fn syn_scan_answered_by_rsts_is_a_port_scan_not_a_flood() {
    let recs = (0..1000u16)
        .map(|p| {
            rec(
                T0 + u64::from(p) * 1000,
                6,
                "192.168.1.10",
                40000,
                "192.168.1.25",
                p + 1,
                "Sr",
                (1, 1),
                (SYN, RA),
            )
        })
        .collect();
    check(
        DetectConfig::default(),
        recs,
        &[
            ("start", "port_scan", "192.168.1.10", "192.168.1.25"),
            ("end", "port_scan", "192.168.1.10", "192.168.1.25"),
        ],
    );
}

#[test]
fn a_busy_servers_answers_count_for_nothing() {
    // 500 clients each complete a connection to one server port, and 500 DNS answers reach a
    // client from its resolver: replies, never failed attempts.
    let mut recs: Vec<_> = (0..500u16)
        .map(|i| {
            rec(
                T0 + u64::from(i) * S / 10,
                6,
                &format!("10.0.{}.{}", i / 250, i % 250 + 1),
                40000 + i,
                "10.1.0.1",
                443,
                "ShADadFf",
                (6, 5),
                (SA | tcp::FIN | tcp::PSH, SA | tcp::FIN),
            )
        })
        .collect();
    recs.extend((0..500u16).map(|i| {
        rec(
            T0 + u64::from(i) * S / 10,
            17,
            "10.0.0.7",
            30000 + i,
            "10.1.0.53",
            53,
            "Dd",
            (1, 1),
            (0, 0),
        )
    }));
    check(DetectConfig::default(), recs, &[]);
}

#[test]
fn fin_and_null_probes_are_stealth_scans_too() {
    let fin = (0..100u16).map(|p| {
        rec(
            T0 + u64::from(p),
            6,
            "10.9.9.9",
            5555,
            "10.0.0.1",
            p + 1,
            "Fr",
            (1, 1),
            (tcp::FIN, RA),
        )
    });
    let null = (0..100u16).map(|p| {
        rec(
            T0 + 10 * S + u64::from(p),
            6,
            "10.9.9.8",
            5555,
            "10.0.0.2",
            p + 1,
            "r",
            (1, 1),
            (0, RA),
        )
    });
    check(
        DetectConfig::default(),
        fin.chain(null).collect(),
        &[
            ("start", "port_scan", "10.9.9.8", "10.0.0.2"),
            ("start", "port_scan", "10.9.9.9", "10.0.0.1"),
            ("start", "stealth_scan", "10.9.9.8", "10.0.0.2"),
            ("start", "stealth_scan", "10.9.9.9", "10.0.0.1"),
            ("end", "port_scan", "10.9.9.8", "10.0.0.2"),
            ("end", "port_scan", "10.9.9.9", "10.0.0.1"),
            ("end", "stealth_scan", "10.9.9.8", "10.0.0.2"),
            ("end", "stealth_scan", "10.9.9.9", "10.0.0.1"),
        ],
    );
}

#[test]
fn spoofed_syn_flood_and_its_threshold() {
    let flood = |n: u32| {
        (0..n)
            .map(|i| {
                rec(
                    T0 + u64::from(i) * 1000,
                    6,
                    &format!("11.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                    1024,
                    "10.10.10.10",
                    25565,
                    "S",
                    (1, 0),
                    (SYN, 0),
                )
            })
            .collect::<Vec<_>>()
    };
    check(
        DetectConfig::default(),
        flood(257),
        &[
            ("start", "syn_flood", "*", "10.10.10.10"),
            ("end", "syn_flood", "*", "10.10.10.10"),
        ],
    );
    check(DetectConfig::default(), flood(256), &[]);
}

#[test]
fn unsolicited_dns_answers_from_many_servers_are_reflection() {
    let recs = (0..40u16)
        .map(|i| {
            rec(
                T0 + u64::from(i) * S / 4,
                17,
                "10.10.10.10",
                40000 + i,
                &format!("198.18.0.{}", i + 1),
                53,
                "^d",
                (0, 3),
                (0, 0),
            )
        })
        .collect();
    check(
        DetectConfig::default(),
        recs,
        &[
            ("start", "reflection", "*", "10.10.10.10"),
            ("end", "reflection", "*", "10.10.10.10"),
        ],
    );
}

#[test]
fn allowlisted_scanner_is_quiet_and_an_episode_spans_windows() {
    let scan = |src: &'static str, w: u64| {
        (0..30u16).map(move |p| {
            rec(
                T0 + w * 60 * S + u64::from(p),
                6,
                src,
                1,
                "10.0.0.1",
                p + 1,
                "S",
                (1, 0),
                (SYN, 0),
            )
        })
    };
    let cfg = DetectConfig {
        allow: vec![(v4("10.200.0.0"), 16)],
        ..DetectConfig::default()
    };
    let recs: Vec<_> = scan("10.200.1.1", 0)
        .chain(scan("10.7.7.7", 0))
        .chain(scan("10.7.7.7", 1))
        .chain(scan("10.7.7.7", 2))
        .collect();
    check(
        cfg,
        recs,
        &[
            ("start", "port_scan", "10.7.7.7", "10.0.0.1"),
            ("update", "port_scan", "10.7.7.7", "10.0.0.1"),
            ("update", "port_scan", "10.7.7.7", "10.0.0.1"),
            ("end", "port_scan", "10.7.7.7", "10.0.0.1"),
        ],
    );
}

#[test]
fn udp_flood_at_and_above_the_rate_not_below() {
    // One record per source, spread over one 5-second window: 20,000 pps needs 100,000 packets.
    let flood = |pkts: u64| {
        (0..100u64)
            .map(|i| {
                let mut r = rec(
                    T0 + i * 1000,
                    17,
                    &format!("11.0.0.{}", i + 1),
                    1000,
                    "10.0.0.99",
                    9,
                    "D",
                    (pkts / 100, 0),
                    (0, 0),
                );
                r.duration_ns = Some(4 * S);
                r
            })
            .collect::<Vec<_>>()
    };
    check(
        DetectConfig::default(),
        flood(100_000),
        &[
            ("start", "udp_flood", "*", "10.0.0.99"),
            ("end", "udp_flood", "*", "10.0.0.99"),
        ],
    );
    check(DetectConfig::default(), flood(99_000), &[]);
}

#[test]
fn unsolicited_rsts_are_backscatter_not_a_scan() {
    // One host answering RST to SYNs it never got, towards 28 ports of a victim: responses.
    let recs: Vec<_> = (0..28u16)
        .map(|i| {
            rec(
                T0 + u64::from(i) * S,
                6,
                "178.32.105.182",
                5050,
                "10.10.10.10",
                49990 + 2 * i,
                "R",
                (1, 0),
                (RA, 0),
            )
        })
        .collect();
    check(DetectConfig::default(), recs, &[]);
    // From 25 reflectors it is reflection (backscatter) to the victim.
    let recs: Vec<_> = (0..25u16)
        .map(|i| {
            rec(
                T0 + u64::from(i) * S,
                6,
                &format!("198.18.1.{}", i + 1),
                80,
                "10.10.10.10",
                40000 + i,
                "H",
                (1, 0),
                (SA, 0),
            )
        })
        .collect();
    check(
        DetectConfig::default(),
        recs,
        &[
            ("start", "reflection", "*", "10.10.10.10"),
            ("end", "reflection", "*", "10.10.10.10"),
        ],
    );
}

#[test]
fn per_subnet_thresholds_override_the_global_ones() {
    let flood = (0..300u32)
        .map(|i| {
            rec(
                T0 + u64::from(i) * 1000,
                6,
                &format!("11.0.{}.{}", i >> 8, i & 255),
                1024,
                "10.10.10.10",
                80,
                "S",
                (1, 0),
                (SYN, 0),
            )
        })
        .collect::<Vec<_>>();
    let quiet = SubnetThresholds {
        net: "10.10.0.0/16".into(),
        parsed: Some((v4("10.10.0.0"), 16)),
        syn_flood_per_min: Some(1000),
        ..Default::default()
    };
    let louder = SubnetThresholds {
        net: "10.10.10.0/24".into(),
        parsed: Some((v4("10.10.10.0"), 24)),
        syn_flood_per_min: Some(100),
        ..Default::default()
    };
    check(
        DetectConfig {
            subnets: vec![quiet.clone()],
            ..DetectConfig::default()
        },
        flood.clone(),
        &[],
    );
    // The longest prefix wins.
    check(
        DetectConfig {
            subnets: vec![quiet, louder],
            ..DetectConfig::default()
        },
        flood,
        &[
            ("start", "syn_flood", "*", "10.10.10.10"),
            ("end", "syn_flood", "*", "10.10.10.10"),
        ],
    );
}
