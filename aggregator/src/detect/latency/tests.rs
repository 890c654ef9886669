use tapflow_proto::Addr;

use super::super::{AlertEvent, AlertKind, DetectConfig, DetectInput, Detector, EventKind};
use crate::detect::SubnetThresholds;
use crate::latency::Sample;

/// A window start (60 s windows).
const T0: u64 = 1_700_000_040_000_000_000;
const W: u64 = 60_000_000_000;
const MS: u64 = 1_000_000;

/// A TCP session from client `c` to `192.0.2.<server>:443` whose handshake took `rtt_ns`.
fn session(ts: u64, c: u16, server: u8, rtt_ns: u64) -> DetectInput {
    DetectInput {
        ts_ns: ts,
        duration_ns: Some(MS),
        orig_h: Addr::from_v4([10, 0, (c >> 8) as u8, c as u8]),
        resp_h: Addr::from_v4([192, 0, 2, server]),
        orig_p: 40_000,
        resp_p: 443,
        proto: 6,
        orig_pkts: 4,
        resp_pkts: 4,
        orig_ip_bytes: 300,
        resp_ip_bytes: 300,
        orig_tcp_flags: 0x1b,
        resp_tcp_flags: 0x1b,
        history_first: b'S',
        syn_acked: true,
        answered: true,
        latency: Sample {
            tcp_rtt_ns: Some(rtt_ns),
            data_rtt_ns: None,
        },
    }
}

/// `n` sessions to `server` in window `w`: 95% of them at `p95`, the rest at twice it.
fn window(w: u64, server: u8, n: u16, p95: u64) -> Vec<DetectInput> {
    (0..n)
        .map(|i| {
            let slow = u64::from(i) * 100 >= u64::from(n) * 95;
            let rtt = if slow { 2 * p95 } else { p95 };
            session(T0 + w * W + u64::from(i) * MS, i, server, rtt)
        })
        .collect()
}

/// The latency events of a run over `inputs` (sorted by time as the aggregator releases them).
fn run(cfg: DetectConfig, mut inputs: Vec<DetectInput>) -> Vec<AlertEvent> {
    inputs.sort_by_key(|r| (r.last_ns(), r.orig_h, r.resp_h));
    let mut d = Detector::new(cfg);
    let mut out = Vec::new();
    for r in &inputs {
        d.on_input(r, &mut out);
    }
    d.finish(&mut out);
    out.retain(|e| e.kind == AlertKind::Latency);
    out
}

/// Three normal windows (p95 10 ms) for `server`, then `slow` as the fourth's p95.
fn warm_then(server: u8, n: u16, slow: u64) -> Vec<DetectInput> {
    let mut v: Vec<DetectInput> = (0..3)
        .flat_map(|w| window(w, server, 20, 10 * MS))
        .collect();
    v.extend(window(3, server, n, slow));
    v
}

#[test]
fn fires_at_k_times_the_baseline_not_just_below() {
    // Default k: 400%. Server .1 at exactly 4 times, .2 one nanosecond below.
    let mut inputs = warm_then(1, 20, 40 * MS);
    inputs.extend(warm_then(2, 20, 40 * MS - 1));
    let events = run(DetectConfig::default(), inputs);
    let kinds: Vec<(EventKind, &str)> = events.iter().map(|e| (e.event, e.dst.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Start, "192.0.2.1:443"),
            (EventKind::End, "192.0.2.1:443")
        ]
    );
    let start = &events[0];
    assert_eq!(
        (start.src.as_str(), start.window_start_ns, start.count),
        ("*", T0 + 3 * W, 40_000)
    );
    let ev = &start.evidence;
    assert_eq!(
        [
            ev["tcp_rtt_p95_us"],
            ev["baseline_p95_us"],
            ev["factor_pct"],
            ev["sessions"],
            ev["baseline_windows"],
            ev["port"]
        ],
        [40_000, 10_000, 400, 20, 3, 443]
    );
}

#[test]
fn windows_with_too_few_handshakes_neither_raise_nor_make_the_baseline() {
    // 19 handshakes in the slow window: not judged.
    assert!(run(DetectConfig::default(), warm_then(1, 19, 400 * MS)).is_empty());
    // Warm-up windows of 19 handshakes do not count towards the three needed.
    let mut inputs: Vec<DetectInput> = (0..3).flat_map(|w| window(w, 1, 19, 10 * MS)).collect();
    inputs.extend(window(3, 1, 20, 400 * MS));
    assert!(run(DetectConfig::default(), inputs).is_empty());
    // With the minimum lowered to 19, the same windows raise.
    let cfg = DetectConfig {
        latency_min_sessions: 19,
        ..DetectConfig::default()
    };
    assert_eq!(run(cfg, warm_then(1, 19, 400 * MS)).len(), 2);
}

#[test]
fn no_alert_before_the_warm_up() {
    let mut inputs: Vec<DetectInput> = (0..2).flat_map(|w| window(w, 1, 20, 10 * MS)).collect();
    inputs.extend(window(2, 1, 20, 400 * MS));
    assert!(
        run(DetectConfig::default(), inputs.clone()).is_empty(),
        "two windows of history"
    );
    let cfg = DetectConfig {
        latency_warmup: 2,
        ..DetectConfig::default()
    };
    assert_eq!(run(cfg, inputs).len(), 2, "a warm-up of two windows");
}

#[test]
fn an_episode_goes_on_while_slow_and_ends_when_a_window_is_normal_again() {
    let mut inputs = warm_then(1, 20, 50 * MS);
    inputs.extend(window(4, 1, 20, 60 * MS));
    inputs.extend(window(5, 1, 20, 10 * MS));
    inputs.extend(window(6, 1, 20, 10 * MS));
    let events = run(DetectConfig::default(), inputs);
    let seen: Vec<(EventKind, u64, u64, u64)> = events
        .iter()
        .map(|e| (e.event, e.ts_ns, e.count, e.peak))
        .collect();
    assert_eq!(
        seen,
        [
            (EventKind::Start, T0 + 4 * W, 50_000, 50_000),
            (EventKind::Update, T0 + 5 * W, 60_000, 60_000),
            (EventKind::End, T0 + 5 * W, 60_000, 60_000),
        ]
    );
    // The update's baseline: the lower median of 10, 10, 10, 50 ms.
    assert_eq!(events[1].evidence["baseline_p95_us"], 10_000);
}

#[test]
fn the_factor_and_minimum_follow_the_servers_subnet() {
    let mut subnet = SubnetThresholds {
        net: "192.0.2.0/28".into(),
        latency_factor_pct: Some(200),
        latency_min_sessions: Some(10),
        ..SubnetThresholds::default()
    };
    subnet.parsed = Some((Addr::from_v4([192, 0, 2, 0]), 28));
    let cfg = DetectConfig {
        subnets: vec![subnet],
        ..DetectConfig::default()
    };
    // 20 ms is twice the baseline: enough in 192.0.2.0/28, not for .200 outside it.
    let mut inputs = warm_then(1, 10, 20 * MS);
    inputs.extend(warm_then(200, 20, 20 * MS));
    let events = run(cfg, inputs);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e.dst == "192.0.2.1:443"));
    assert_eq!(events[0].evidence["factor_pct"], 200);
}

#[test]
fn a_zero_baseline_raises_nothing_on_zero_and_v6_servers_are_bracketed() {
    // Captures with coarse timestamps give handshakes of 0 ns: 0 is not 4 times 0.
    assert!(run(
        DetectConfig::default(),
        warm_then(1, 20, 0)
            .into_iter()
            .map(|mut r| {
                r.latency.tcp_rtt_ns = Some(0);
                r
            })
            .collect()
    )
    .is_empty());
    let v6 = Addr::from_v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    let inputs = warm_then(1, 20, 40 * MS)
        .into_iter()
        .map(|mut r| {
            r.resp_h = v6;
            r
        })
        .collect();
    let events = run(DetectConfig::default(), inputs);
    assert_eq!(events[0].dst, "[2001:db8::1]:443");
}
