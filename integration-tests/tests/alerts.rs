//! Detection through the real pipeline: the golden table of alerts per capture
//! (`golden/alerts.tsv`: every shared capture has a row, and yields exactly it), the same alerts log with 1, 2 and 3 processors and with the two
//! directions through two collectors, and volumetric floods at, above and below their real
//! thresholds on generated captures.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::{
    captures, collector_exit_code, run_pipeline, shared_pcaps, split_by_direction,
    start_pipeline_opts, CollectorSpec, PipelineRun, REJECTED_CAPTURES,
};

const TIMEOUT: Duration = Duration::from_secs(120);

type Alert = (String, String, String);

fn alerts(run: &PipelineRun) -> BTreeSet<Alert> {
    run.alerts_log
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_default();
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (s("kind"), s("src"), s("dst"))
        })
        .collect()
}

fn run(pcap: &Path, n: usize, collector_extra: &[&str], aggregator_extra: &[&str]) -> PipelineRun {
    let spec = CollectorSpec {
        extra: collector_extra.iter().map(|s| s.to_string()).collect(),
        ..CollectorSpec::pcap(pcap, n)
    };
    start_pipeline_opts(&[spec], n, &[], aggregator_extra).wait(TIMEOUT)
}

/// One row of the golden table.
struct GoldenRow {
    capture: String,
    /// Aggregator flags (`-` in the file: none).
    flags: Vec<String>,
    /// Every (kind, src, dst) the alerts log must hold, and nothing else.
    alerts: BTreeSet<Alert>,
    /// Where the expectation comes from.
    why: String,
}

fn golden_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/alerts.tsv")
}

/// Rows of the golden table.
fn golden() -> Vec<GoldenRow> {
    let text = std::fs::read_to_string(golden_path()).expect("reading golden/alerts.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(cols.len(), 4, "bad golden row {l:?}");
            assert!(!cols[3].trim().is_empty(), "a row without its why: {l:?}");
            let flags = if cols[1] == "-" {
                vec![]
            } else {
                cols[1].split_whitespace().map(str::to_owned).collect()
            };
            let alerts = if cols[2] == "-" {
                BTreeSet::new()
            } else {
                cols[2]
                    .split(';')
                    .map(|a| {
                        let f: Vec<&str> = a.split_whitespace().collect();
                        assert_eq!(f.len(), 3, "bad alert {a:?} in {l:?}");
                        (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
                    })
                    .collect()
            };
            GoldenRow {
                capture: cols[0].to_owned(),
                flags,
                alerts,
                why: cols[3].to_owned(),
            }
        })
        .collect()
}

/// Every shared capture has a row with the default flags: a new capture without one fails.
#[test]
fn every_shared_capture_has_a_golden_row() {
    let Some(pcaps) = shared_pcaps() else { return };
    let rows = golden();
    let with_defaults: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.flags.is_empty())
        .map(|r| r.capture.as_str())
        .collect();
    let on_disk: BTreeSet<String> = captures(&pcaps)
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
        .collect();
    let missing: Vec<&String> = on_disk
        .iter()
        .filter(|c| !with_defaults.contains(c.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "captures without a row (default flags) in {}: {missing:?}",
        golden_path().display()
    );
    let unknown: Vec<&str> = rows
        .iter()
        .map(|r| r.capture.as_str())
        .filter(|c| !on_disk.contains(*c))
        .collect();
    assert!(
        unknown.is_empty(),
        "rows for captures not in ../shared/pcaps: {unknown:?}"
    );
    assert_eq!(
        with_defaults.len(),
        rows.iter().filter(|r| r.flags.is_empty()).count(),
        "a capture with two rows under the default flags"
    );
}

fn format_alerts(alerts: &BTreeSet<Alert>) -> String {
    if alerts.is_empty() {
        return "-".to_owned();
    }
    alerts
        .iter()
        .map(|(k, s, d)| format!("{k} {s} {d}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn alerts_match_the_golden_table() {
    let Some(pcaps) = shared_pcaps() else { return };
    let rows = golden();
    let mut failures = Vec::new();
    for row in &rows {
        let (capture, want) = (&row.capture, &row.alerts);
        let flags: Vec<&str> = row.flags.iter().map(String::as_str).collect();
        let r = run(&pcaps.join(capture), 2, &[], &flags);
        let code = collector_exit_code(capture);
        assert!(
            r.all_exited_with(code),
            "{capture}: want the collector to exit {code} and the others 0, got {}\n{}",
            r.exit_codes(),
            r.aggregator.1
        );
        let report = r
            .report
            .as_ref()
            .ok_or_else(|| format!("{capture}: no report\n{}", r.aggregator.1))
            .expect("reading the accounting report");
        assert_eq!(
            report["detection"]["cap_hits"].as_u64(),
            Some(0),
            "{capture}: {report:#}"
        );
        let got = alerts(&r);
        println!("{capture}\t{}\t{}", flags.join(" "), format_alerts(&got));
        if got != *want {
            failures.push(format!(
                "{capture} {flags:?}: got {}, want {} ({})",
                format_alerts(&got),
                format_alerts(want),
                row.why
            ));
        }
        // Every episode that starts also ends, with its peak.
        let events: Vec<Value> = r
            .alerts_log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_default())
            .collect();
        let starts = events.iter().filter(|e| e["event"] == "start").count();
        let ends = events.iter().filter(|e| e["event"] == "end").count();
        assert_eq!(starts, ends, "{capture}: {}", r.alerts_log);
        for e in &events {
            for field in [
                "ts",
                "kind",
                "src",
                "dst",
                "window_start",
                "window_end",
                "count",
                "peak",
            ] {
                assert!(!e[field].is_null(), "{capture}: {field} missing in {e}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn alerts_are_identical_with_1_2_3_processors_and_two_taps() {
    let Some(pcaps) = shared_pcaps() else { return };
    let dir = tempfile::tempdir().expect("create a temp dir");
    // Every capture with a row, but those libpcap refuses (they give no alerts log at all).
    let mut captures: Vec<String> = golden()
        .into_iter()
        .map(|r| r.capture)
        .filter(|c| !REJECTED_CAPTURES.contains(&c.as_str()))
        .collect();
    captures.dedup();
    let mut events = 0;
    for capture in &captures {
        let pcap = pcaps.join(capture);
        let logs: Vec<String> = [1, 2, 3]
            .iter()
            .map(|&n| run(&pcap, n, &[], &[]).alerts_log)
            .collect();
        assert_eq!(logs[0], logs[1], "{capture}: 1 vs 2 processors");
        assert_eq!(logs[0], logs[2], "{capture}: 1 vs 3 processors");
        // Two taps, one direction each, against one tap on the same rewritten capture.
        let (all, fwd, rev) = (
            dir.path().join("all.pcap"),
            dir.path().join("fwd.pcap"),
            dir.path().join("rev.pcap"),
        );
        split_by_direction(&pcap, &all, &fwd, &rev).expect("split the capture by direction");
        let one = run(&all, 2, &[], &[]);
        let two = run_pipeline(
            &[CollectorSpec::pcap(&fwd, 2), CollectorSpec::pcap(&rev, 2)],
            2,
            TIMEOUT,
        );
        assert_eq!(
            one.alerts_log, two.alerts_log,
            "{capture}: one tap vs two taps by direction"
        );
        events += logs[0].lines().count();
    }
    assert!(events >= 20, "the captures raise alerts: {events}");
    println!("{events} alert events identical with 1, 2, 3 processors and two taps");
}

// ---------------------------------------------------------------------------------------------
// Volumetric floods on generated captures

const T0_US: i64 = 1_700_000_000 * 1_000_000; // aligned on 5 s and 60 s windows

/// A classic pcap of `n` packets spread evenly over `span_us` from T0, each from one of
/// `sources` spoofed addresses to 10.0.0.99. `proto` 17: UDP to port 9; 1: ICMP echo;
/// 6: TCP SYN to port 80.
fn flood(path: &Path, proto: u8, n: usize, sources: usize, span_us: i64) {
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).expect("open a dead capture");
    let mut w = dead.savefile(path).expect("create the capture file");
    for i in 0..n {
        let src = (i % sources) as u32;
        let l4: Vec<u8> = match proto {
            17 => [&[0x10, 0x00, 0x00, 0x09, 0, 26, 0, 0][..], &[0xab; 18]].concat(),
            1 => [
                &[8, 0, 0, 0, 0x12, 0x34, (i >> 8) as u8, i as u8][..],
                &[0xab; 18],
            ]
            .concat(),
            _ => vec![
                (1024 + src % 60000) as u8,
                ((1024 + src % 60000) >> 8) as u8,
                0,
                80,
                0,
                0,
                0,
                1,
                0,
                0,
                0,
                0,
                0x50,
                0x02,
                0xff,
                0xff,
                0,
                0,
                0,
                0,
            ],
        };
        let total = 20 + l4.len();
        let mut frame = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00];
        frame.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            proto,
            0,
            0,
        ]);
        frame.extend_from_slice(&[
            11,
            (src >> 16) as u8,
            (src >> 8) as u8,
            src as u8,
            10,
            0,
            0,
            99,
        ]);
        frame.extend_from_slice(&l4);
        let us = T0_US + span_us * i as i64 / n as i64;
        let header = pcap::PacketHeader {
            ts: libc_timeval(us),
            caplen: frame.len() as u32,
            len: frame.len() as u32,
        };
        w.write(&pcap::Packet::new(&header, &frame));
    }
    w.flush().expect("flush the capture");
}

fn libc_timeval(us: i64) -> libc::timeval {
    libc::timeval {
        tv_sec: us / 1_000_000,
        tv_usec: us % 1_000_000,
    }
}

#[test]
fn volumetric_floods_fire_at_and_above_their_thresholds_not_below() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("flood.pcap");
    let victim = ("*".to_owned(), "10.0.0.99".to_owned());
    // 20,000 packets/s averaged over 5 s is 100,000 packets in one 5-second window.
    for (proto, kind, n, sources, fires) in [
        (17u8, "udp_flood", 100_000, 500, true),
        (17, "udp_flood", 150_000, 500, true),
        (17, "udp_flood", 99_000, 500, false),
        (1, "icmp_flood", 100_000, 50, true),
        (1, "icmp_flood", 99_000, 50, false),
    ] {
        flood(&path, proto, n, sources, 4_900_000);
        let r = run(&path, 2, &["--ignore-checksums"], &[]);
        assert!(r.all_exited(), "{kind} {n}: {}", r.aggregator.1);
        let got = alerts(&r);
        let want: BTreeSet<Alert> = if fires {
            [(kind.to_owned(), victim.0.clone(), victim.1.clone())].into()
        } else {
            BTreeSet::new()
        };
        assert_eq!(got, want, "{kind} with {n} packets in 5 s");
    }
    // SYN flood: more than 256 unanswered SYNs in a minute from many sources.
    for (n, fires) in [(257, true), (400, true), (256, false)] {
        flood(&path, 6, n, n, 30_000_000);
        let r = run(&path, 2, &["--ignore-checksums"], &[]);
        let want: BTreeSet<Alert> = if fires {
            [("syn_flood".to_owned(), victim.0.clone(), victim.1.clone())].into()
        } else {
            BTreeSet::new()
        };
        assert_eq!(alerts(&r), want, "syn flood with {n} SYNs in a minute");
    }
}
