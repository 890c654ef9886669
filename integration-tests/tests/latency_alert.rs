//! Per-server latency over time through the real pipeline (issue 15): generated captures of
//! TCP sessions whose handshakes take a chosen time per server and window. One server's
//! handshake p95 reaches exactly 4 times (the default `latency_factor_pct`, 400) its baseline
//! and raises `latency`; another, one microsecond short of it, does not; the alerts are the same
//! with 1, 2 and 3 processors and with two taps that each see one direction. The `tapflow_latency` points land in a real influxd.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::craft::{json_lines, tcp_session, Ipv4, PcapWriter};
use tapflow_integration_tests::influxd::Influxd;
use tapflow_integration_tests::{
    split_by_direction, start_pipeline_opts, CollectorSpec, PipelineRun,
};

const TIMEOUT: Duration = Duration::from_secs(120);
/// A minute boundary (the detection windows are 60 s), Unix microseconds.
const T0_US: u64 = 1_700_000_040_000_000;
const WINDOW_US: u64 = 60_000_000;
/// Sessions per server and window: the default `latency_min_sessions`.
const SESSIONS: u64 = 20;
const FIRES: [u8; 4] = [192, 0, 2, 10];
const SHORT: [u8; 4] = [192, 0, 2, 20];

/// Five windows of 20 sessions to each server: handshakes of 2.5 ms (2 ms + 0.5 ms), but in
/// the fourth window 10 ms (8 + 2) to `FIRES` and 9.999 ms (7.999 + 2) to `SHORT`.
fn write_capture(path: &Path) {
    let mut packets: Vec<(u64, Ipv4)> = Vec::new();
    for w in 0..5u64 {
        for (n, server) in [FIRES, SHORT].into_iter().enumerate() {
            let (synack, ackdat) = match (w, n) {
                (3, 0) => (8_000, 2_000),
                (3, _) => (7_999, 2_000),
                _ => (2_000, 500),
            };
            for i in 0..SESSIONS {
                let start = T0_US + w * WINDOW_US + i * 2_500_000 + n as u64 * 1_000_000;
                let client = ([10, 0, n as u8, 1], 40_000 + (w * SESSIONS + i) as u16);
                packets.extend(tcp_session(start, client, (server, 443), synack, ackdat));
            }
        }
    }
    packets.sort_by_key(|(t, _)| *t);
    let mut pcap = PcapWriter::create(path);
    for (t, p) in &packets {
        pcap.packet(*t, p);
    }
    pcap.finish();
}

fn run(pcap: &Path, n: usize, aggregator_extra: &[&str]) -> PipelineRun {
    let run = start_pipeline_opts(&[CollectorSpec::pcap(pcap, n)], n, &[], aggregator_extra)
        .wait(TIMEOUT);
    assert!(run.all_exited(), "{}", run.aggregator.1);
    run
}

/// The alerts log's `latency` events.
fn latency_events(run: &PipelineRun) -> Vec<Value> {
    json_lines(&run.alerts_log)
        .into_iter()
        .filter(|e| e["kind"] == "latency")
        .collect()
}

#[test]
fn four_times_the_baseline_fires_and_just_below_does_not() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let pcap = dir.path().join("latency.pcap");
    write_capture(&pcap);
    let one = run(&pcap, 1, &[]);
    // The handshakes are measured as generated.
    let rtts: Vec<f64> = json_lines(&one.conn_log)
        .iter()
        .filter_map(|r| r["tcp_rtt"].as_f64())
        .collect();
    assert_eq!(rtts.len() as u64, 10 * SESSIONS, "sessions with a tcp_rtt");
    let events = latency_events(&one);
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default();
            (s("event"), s("src"), s("dst"))
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("start", "*", "192.0.2.10:443"),
            ("end", "*", "192.0.2.10:443")
        ],
        "{}",
        one.alerts_log
    );
    let start = &events[0];
    let evidence: Vec<u64> = [
        "tcp_rtt_p95_us",
        "baseline_p95_us",
        "factor_pct",
        "sessions",
        "baseline_windows",
    ]
    .iter()
    .map(|k| start[*k].as_u64().unwrap_or(u64::MAX))
    .collect();
    assert_eq!(evidence, [10_000, 2_500, 400, 20, 3], "{start}");
    assert_eq!(
        start["window_start"].as_f64(),
        Some((T0_US + 3 * WINDOW_US) as f64 / 1e6)
    );
    for n in [2, 3] {
        let again = run(&pcap, n, &[]);
        assert_eq!(
            latency_events(&again),
            events,
            "{n} processors: the same latency alerts"
        );
    }
    // Two taps, one direction each: the handshake is measured across them, the same alerts.
    let (all, fwd, rev) = (
        dir.path().join("all.pcap"),
        dir.path().join("fwd.pcap"),
        dir.path().join("rev.pcap"),
    );
    split_by_direction(&pcap, &all, &fwd, &rev).expect("split the capture by direction");
    let two_taps = start_pipeline_opts(
        &[CollectorSpec::pcap(&fwd, 2), CollectorSpec::pcap(&rev, 2)],
        2,
        &[],
        &[],
    )
    .wait(TIMEOUT);
    assert!(two_taps.all_exited(), "{}", two_taps.aggregator.1);
    assert_eq!(latency_events(&two_taps), events, "two taps by direction");
    // A factor of 401%: nothing.
    let stricter = run(&pcap, 1, &["--latency-factor-pct", "401"]);
    assert!(
        latency_events(&stricter).is_empty(),
        "{}",
        stricter.alerts_log
    );
}

#[test]
fn latency_points_land_in_influxdb() {
    let Some(influx) = Influxd::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("create a temp dir");
    let pcap = dir.path().join("latency.pcap");
    write_capture(&pcap);
    let spool = dir.path().join("spool");
    let (url, spool) = (influx.url(), spool.display().to_string());
    let agg = [
        "--influx-url",
        &url,
        "--influx-db",
        "tapflow",
        "--influx-spool-dir",
        &spool,
        "--influx-finish-s",
        "60",
    ];
    let run = run(&pcap, 2, &agg);
    let report = run.accounting();
    assert_eq!(
        report["influx"]["points_written_by_measurement"]["tapflow_latency"].as_u64(),
        Some(10),
        "five windows of two servers: {report:#}"
    );
    let answer = influx.query(
        "tapflow",
        "SELECT \"resp_h\", \"resp_p\", \"sessions\", \"tcp_rtt_n\", \"tcp_rtt_p95\", \
         \"data_rtt_p95\", \"ip_version\" FROM \"tapflow_latency\"",
    );
    let rows = answer["results"][0]["series"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(rows.len(), 10, "{answer}");
    // The fourth window starts at T0 + 180 s: 2023-11-14T22:17:00Z (its second server 1 ns on).
    let slow_window = "2023-11-14T22:17:00";
    for row in &rows {
        let at = |i: usize| row[i].as_f64().unwrap_or(f64::NAN);
        let (t, host) = (
            row[0].as_str().unwrap_or_default(),
            row[1].as_str().unwrap_or_default(),
        );
        assert_eq!(
            (
                row[2].as_u64(),
                row[3].as_u64(),
                row[4].as_u64(),
                row[7].as_str()
            ),
            (Some(443), Some(SESSIONS), Some(SESSIONS), Some("4")),
            "{row}"
        );
        let want = match (t.starts_with(slow_window), host) {
            (true, "192.0.2.10") => 0.010,
            (true, _) => 0.009999,
            _ => 0.0025,
        };
        assert!(
            (at(5) - want).abs() < 1e-9 && (at(6) - want).abs() < 1e-9,
            "tcp_rtt_p95 and data_rtt_p95 of {row}: want {want}"
        );
    }
}
