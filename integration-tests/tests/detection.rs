//! Detection kinds the shared captures do not exercise, on generated captures through the real
//! pipeline, at and just below their thresholds: `address_scan` (one source failing on one
//! port at >= 25 hosts, `--address-scan-hosts`) and `volumetric_flood` by its bits-per-second
//! trigger (>= 1 Gbit/s to one victim averaged over 5 s, while far below 20,000 packets/s).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::craft::{json_lines, tcp, Ipv4, PcapWriter};
use tapflow_integration_tests::{start_pipeline_opts, CollectorSpec, PipelineRun};

const TIMEOUT: Duration = Duration::from_secs(60);
/// Aligned on the 5 s and 60 s windows.
const T0_US: u64 = 1_700_000_000 * 1_000_000;
const SCANNER: [u8; 4] = [192, 168, 7, 7];

fn run(pcap: &Path, aggregator_extra: &[&str]) -> PipelineRun {
    let run = start_pipeline_opts(&[CollectorSpec::pcap(pcap, 2)], 2, &[], aggregator_extra)
        .wait(TIMEOUT);
    assert!(run.all_exited(), "{}", run.aggregator.1);
    assert_eq!(run.aggregator.0, Some(0), "{}", run.aggregator.1);
    run
}

/// One SYN, never answered, from the scanner to port 22 of `hosts` hosts, 100 ms apart.
fn address_scan(path: &Path, hosts: u8) {
    let mut w = PcapWriter::create(path);
    for i in 0..hosts {
        let syn = Ipv4::tcp(
            (SCANNER, 40_000 + u16::from(i)),
            ([10, 1, 0, 1 + i], 22),
            tcp::SYN,
            1000,
            0,
            &[],
        );
        w.packet(T0_US + u64::from(i) * 100_000, &syn);
    }
    w.finish();
}

#[test]
fn address_scan_fires_at_25_hosts_on_one_port_not_at_24() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let path = dir.path().join("scan.pcap");

    address_scan(&path, 25);
    let r = run(&path, &[]);
    assert_eq!(r.conn_log.lines().count(), 25, "one S0 session per host");
    let events = json_lines(&r.alerts_log);
    let kinds: Vec<(&str, &str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default(),
                e["kind"].as_str().unwrap_or_default(),
                e["src"].as_str().unwrap_or_default(),
                e["dst"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("start", "address_scan", "192.168.7.7", "*"),
            ("end", "address_scan", "192.168.7.7", "*"),
        ],
        "exactly one address_scan episode: {}",
        r.alerts_log
    );
    for e in &events {
        assert_eq!(e["distinct_hosts"], Value::from(25), "{e}");
        assert_eq!(e["port"], Value::from(22), "{e}");
        assert_eq!(e["count"], Value::from(25), "{e}");
        assert_eq!(e["peak"], Value::from(25), "{e}");
        assert_eq!(e["windows"], Value::from(1), "{e}");
    }

    address_scan(&path, 24);
    let r = run(&path, &[]);
    assert_eq!(r.conn_log.lines().count(), 24);
    assert_eq!(r.alerts_log, "", "24 hosts are below the threshold");

    // The threshold is the flag's: 24 hosts fire with --address-scan-hosts 24.
    let r = run(&path, &["--address-scan-hosts", "24"]);
    let events = json_lines(&r.alerts_log);
    assert_eq!(events.len(), 2, "{}", r.alerts_log);
    assert_eq!(events[0]["kind"], "address_scan");
    assert_eq!(events[0]["distinct_hosts"], Value::from(24));
}

/// `packets` ESP packets (IP protocol 50: "other traffic") from 100 sources to 10.0.0.99,
/// each claiming an IP total length of 62,500 bytes, spread evenly over 4.9 s of one 5 s
/// window: 10,000 of them are exactly 1 Gbit/s averaged over 5 s, at 2,000 packets/s.
fn esp_flood(path: &Path, packets: u64) {
    let mut w = PcapWriter::create(path);
    for i in 0..packets {
        let src = [172, 16, 0, (i % 100) as u8 + 1];
        let spi_seq = [0, 0, 0x10, 0x01, 0, 0, (i >> 8) as u8, i as u8];
        let mut p = Ipv4::other(src, [10, 0, 0, 99], 50, &spi_seq);
        p.claim = Some(62_500);
        w.packet(T0_US + 4_900_000 * i / packets, &p);
    }
    w.finish();
}

#[test]
fn volumetric_flood_fires_at_1_gbit_per_second_below_the_packet_rate() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let path = dir.path().join("esp.pcap");

    esp_flood(&path, 10_000);
    let r = run(&path, &[]);
    let report = r.report.as_ref().expect("an accounting report");
    assert_eq!(
        report["collectors"][0]["packets_summarised"].as_u64(),
        Some(10_000),
        "every ESP packet summarised (snaplen cut, not dropped): {report:#}"
    );
    let events = json_lines(&r.alerts_log);
    let seen: Vec<(&str, &str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default(),
                e["kind"].as_str().unwrap_or_default(),
                e["src"].as_str().unwrap_or_default(),
                e["dst"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("start", "volumetric_flood", "*", "10.0.0.99"),
            ("end", "volumetric_flood", "*", "10.0.0.99"),
        ],
        "{}",
        r.alerts_log
    );
    assert_eq!(
        events[0]["bps"],
        Value::from(1_000_000_000u64),
        "{}",
        events[0]
    );
    assert_eq!(events[0]["pps"], Value::from(2_000), "{}", events[0]);
    assert_eq!(events[0]["count"], Value::from(10_000), "{}", events[0]);

    // One packet fewer: 999,900,000 bit/s, nothing.
    esp_flood(&path, 9_999);
    let r = run(&path, &[]);
    assert_eq!(r.alerts_log, "", "just below 1 Gbit/s");
}
