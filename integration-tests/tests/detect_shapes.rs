//! Issue 22 on generated captures through the real pipeline: reflection recognised by its shape
//! from eight amplifier ports Zeek does not orient (SSDP 1900, memcached 11211, WS-Discovery
//! 3702, ARD 3283, CoAP 5683, Ubiquiti 10001, BACnet 47808, NAT-T 4500), a 50 ms burst caught
//! by its peak rate over 100 ms, and a flood of new flows from spoofed sources: each just
//! above, at and just below its threshold.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::craft::{json_lines, Ipv4, PcapWriter};
use tapflow_integration_tests::{start_pipeline_opts, CollectorSpec, PipelineRun};

const TIMEOUT: Duration = Duration::from_secs(120);
/// Aligned on the 5 s and 60 s windows (and so on the 100 ms intervals).
const T0_US: u64 = 1_700_000_000 * 1_000_000;
const VICTIM: [u8; 4] = [10, 0, 0, 99];
const AMPLIFIER_PORTS: [u16; 8] = [1900, 11211, 3702, 3283, 5683, 10001, 47808, 4500];

type Alert = (String, String, String);

fn run(pcap: &Path, processors: usize) -> PipelineRun {
    let spec = CollectorSpec::pcap(pcap, processors);
    let run = start_pipeline_opts(&[spec], processors, &[], &[]).wait(TIMEOUT);
    assert!(run.all_exited(), "{}", run.aggregator.1);
    assert_eq!(run.aggregator.0, Some(0), "{}", run.aggregator.1);
    let report = run.report.as_ref().expect("an accounting report");
    assert_eq!(
        report["detection"]["cap_hits"].as_u64(),
        Some(0),
        "{report:#}"
    );
    run
}

/// The (kind, src, dst) of every episode's start.
fn started(run: &PipelineRun) -> BTreeSet<Alert> {
    json_lines(&run.alerts_log)
        .iter()
        .filter(|e| e["event"] == "start")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("kind"), s("src"), s("dst"))
        })
        .collect()
}

fn write(path: &Path, mut packets: Vec<(u64, Ipv4)>) {
    packets.sort_by_key(|(t, _)| *t);
    let mut w = PcapWriter::create(path);
    for (t, p) in &packets {
        w.packet(*t, p);
    }
    w.finish();
}

/// For each amplifier port k: victims 10.20.k.1, 10.21.k.1 and 10.22.k.1 receive two
/// 468-byte datagrams from each of 20, 19 and 40 reflectors answering from that port to a
/// port of the victim's (no request from the victim in the capture). And 10.23.0.1 sends an
/// SSDP M-SEARCH to the multicast group and is answered from port 1900 by 40 devices: asked.
fn reflections(path: &Path) {
    let mut packets = Vec::new();
    let payload = [0x5a; 440];
    for (k, port) in AMPLIFIER_PORTS.iter().enumerate() {
        for (group, sources) in [(20u8, 20u8), (21, 19), (22, 40)] {
            let victim = [10, group, k as u8, 1];
            for i in 0..sources {
                let src = ([100, 64 + k as u8, group, i + 1], *port);
                let dst = (victim, 30_000 + u16::from(i));
                for n in 0..2u64 {
                    let t = T0_US + u64::from(i) * 1_000 + n * 300 + k as u64 * 50_000;
                    packets.push((t, Ipv4::udp(src, dst, &payload)));
                }
            }
        }
    }
    let asker = [10, 23, 0, 1];
    let search = Ipv4::udp((asker, 50_000), ([239, 255, 255, 250], 1900), b"M-SEARCH");
    packets.push((T0_US + 1_000_000, search));
    for i in 0..40u8 {
        let answer = Ipv4::udp(([192, 168, 1, i + 1], 1900), (asker, 50_000), &payload);
        packets.push((T0_US + 1_010_000 + u64::from(i) * 1_000, answer));
    }
    write(path, packets);
}

#[test]
fn reflection_from_eight_ports_zeek_does_not_orient_fires_at_20_sources_not_19() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let path = dir.path().join("reflection.pcap");
    reflections(&path);
    for processors in [1, 3] {
        let r = run(&path, processors);
        let want: BTreeSet<Alert> = (0..AMPLIFIER_PORTS.len())
            .flat_map(|k| [20, 22].map(|g| format!("10.{g}.{k}.1")))
            .map(|dst| ("reflection".to_owned(), "*".to_owned(), dst))
            .collect();
        assert_eq!(started(&r), want, "{}", r.alerts_log);
        for e in json_lines(&r.alerts_log) {
            let dst = e["dst"].as_str().unwrap_or_default().to_owned();
            let k: usize = dst
                .split('.')
                .nth(2)
                .and_then(|x| x.parse().ok())
                .unwrap_or(99);
            let sources = if dst.starts_with("10.20.") { 20 } else { 40 };
            assert_eq!(e["src_port_1"], Value::from(AMPLIFIER_PORTS[k]), "{e}");
            assert_eq!(e["src_port_1_pct"], Value::from(100), "{e}");
            assert_eq!(e["distinct_sources"], Value::from(sources), "{e}");
            assert_eq!(e["packets"], Value::from(2 * sources), "{e}");
            assert_eq!(e["bytes_per_packet"], Value::from(468), "{e}");
        }
    }
}

/// `n` datagrams of `size` IP bytes from `n` spoofed sources, each
/// from its own port, to the victim's port 9, spread evenly over `span_us` from T0.
fn spoofed(path: &Path, n: u32, size: u16, span_us: u64) {
    let payload = vec![0x5a; usize::from(size) - 28];
    let packets = (0..n)
        .map(|i| {
            let b = i.to_be_bytes();
            let src = ([100, b[1], b[2], b[3]], 1024 + (i % 60_000) as u16);
            let p = Ipv4::udp(src, (VICTIM, 9), &payload);
            (T0_US + span_us * u64::from(i) / u64::from(n), p)
        })
        .collect();
    write(path, packets);
}

fn one(kind: &str) -> BTreeSet<Alert> {
    [(kind.to_owned(), "*".to_owned(), "10.0.0.99".to_owned())].into()
}

#[test]
fn a_50_ms_burst_fires_by_its_peak_rate_at_and_above_50000_pps_and_2_5_gbits() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let path = dir.path().join("burst.pcap");
    // 5,000 packets in 50 ms: 50,000 packets/s over the 100 ms interval, 1,000/s over 5 s.
    for (n, size, fires) in [
        (5_000, 60, true),
        (6_000, 60, true),
        (4_999, 60, false),
        // 3,473 packets of 9,000 bytes in 50 ms: 2.5006 Gbit/s over 100 ms, 34,730 pps.
        (3_473, 9_000, true),
        (3_472, 9_000, false),
    ] {
        spoofed(&path, n, size, 50_000);
        let r = run(&path, 2);
        let want = if fires {
            one("udp_flood")
        } else {
            BTreeSet::new()
        };
        assert_eq!(
            started(&r),
            want,
            "{n} x {size} bytes in 50 ms: {}",
            r.alerts_log
        );
        if let Some(e) = json_lines(&r.alerts_log).first() {
            let peak_pps = u64::from(n) * 10;
            assert_eq!(e["peak_pps"], Value::from(peak_pps), "{e}");
            assert_eq!(
                e["peak_bps"],
                Value::from(peak_pps * u64::from(size) * 8),
                "{e}"
            );
            assert_eq!(e["pps"], Value::from((n * 2 + 5) / 10), "{e}");
        }
    }
}

#[test]
fn a_flood_of_new_flows_fires_at_3500_per_second_not_below() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let path = dir.path().join("flows.pcap");
    // 17,500 new flows in one 5 s window are 3,500 a second.
    for (n, fires) in [(17_500, true), (20_000, true), (17_499, false)] {
        spoofed(&path, n, 60, 4_900_000);
        let r = run(&path, 2);
        let want = if fires {
            one("flow_flood")
        } else {
            BTreeSet::new()
        };
        assert_eq!(started(&r), want, "{n} new flows in 5 s: {}", r.alerts_log);
        if let Some(e) = json_lines(&r.alerts_log).first() {
            assert_eq!(e["new_flows"], Value::from(n), "{e}");
            assert_eq!(e["new_flows_per_s"], Value::from(n / 5), "{e}");
            assert_eq!(e["distinct_sources"], Value::from(n), "{e}");
        }
    }
}
