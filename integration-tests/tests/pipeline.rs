//! The three-process pipeline (collector -> processors -> aggregator) as real processes on
//! loopback over the shared real captures: every process ends on its own with the documented
//! exit code, the collector reads exactly the packets capinfos counts (nothing, for the files
//! libpcap refuses), and the accounting reconciles hop by hop (DESIGN invariant 5).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::{
    bin, capinfos_packets, captures, collector_exit_code, run_pipeline, shared_pcaps,
    CollectorSpec, PipelineRun, REJECTED_CAPTURES,
};

const TIMEOUT: Duration = Duration::from_secs(120);

fn one_collector(pcap: &Path, n: usize, extra: &[&str]) -> PipelineRun {
    let spec = CollectorSpec {
        extra: extra.iter().map(|s| s.to_string()).collect(),
        ..CollectorSpec::pcap(pcap, n)
    };
    run_pipeline(&[spec], n, TIMEOUT)
}

fn u(v: &Value, key: &str) -> u64 {
    assert!(v[key].is_u64(), "{key} missing in {v}");
    v[key].as_u64().expect("a count")
}

/// What one run must show: the collector's exit code and the packets it read.
struct Expect {
    code: i32,
    packets: u64,
}

/// Checks one run and returns its table row.
fn check_run(name: &str, n: usize, run: &PipelineRun, want: Expect) -> String {
    let logs = || {
        format!(
            "collector: {}\nprocessors: {:?}\naggregator: {}",
            run.collectors[0].1,
            run.processors.iter().map(|p| &p.1).collect::<Vec<_>>(),
            run.aggregator.1
        )
    };
    assert!(
        run.all_exited_with(want.code),
        "{name} n={n}: want the collector to exit {} and the others 0, got {}\n{}",
        want.code,
        run.exit_codes(),
        logs()
    );
    let code = run.collectors[0].0;
    if want.code != 0 {
        // A clear one-line error that names the file.
        let errors: Vec<&str> = run.collectors[0]
            .1
            .lines()
            .filter(|l| l.contains("ERROR"))
            .collect();
        assert_eq!(errors.len(), 1, "{name}: {errors:?}");
        assert!(
            errors[0].contains(name),
            "{name}: error does not name the file: {}",
            errors[0]
        );
        assert!(
            !run.collectors[0].1.contains("panicked"),
            "{name}: panic\n{}",
            logs()
        );
    }
    assert!(
        run.report.is_some(),
        "{name} n={n}: no accounting report\n{}",
        logs()
    );
    let report = run.accounting();
    assert_eq!(
        report["reconciled"],
        Value::Bool(true),
        "{name} n={n}: {report:#}"
    );
    assert_eq!(
        report["routing_consistent"],
        Value::Bool(true),
        "{name} n={n}: {report:#}"
    );
    // Every record a processor makes from a real capture is valid.
    assert!(
        report["conns"].get("invalid").is_none(),
        "{name} n={n}: {report:#}"
    );
    // Nothing was restarted: no processor joined a link mid-stream, no flow may be split.
    for p in report["processors"].as_array().into_iter().flatten() {
        assert_eq!(
            p["counters"]["flows_split"].as_u64().unwrap_or(0),
            0,
            "{name} n={n}: split flows without a restart: {p}"
        );
    }
    assert_eq!(
        report["complete"],
        Value::Bool(true),
        "{name} n={n}: {report:#}"
    );
    let c = &report["collectors"][0];
    let links = c["links"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(links, n, "{name} n={n}: links {c:#}");
    assert_eq!(
        u(c, "packets_read"),
        want.packets,
        "{name} n={n}: packets read"
    );
    let drops: u64 = c["drops"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let sent: Vec<String> = c["links"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| format!("{}={}+{}", u(l, "sent"), u(l, "received"), u(l, "gaps")))
        .collect();
    format!(
        "{name:<44} n={n} exit={} read={:<6} = summarised {:<6} + merged {:<4} + drops {:<5} | summaries {:<6} -> {} {}",
        code.unwrap_or(-1),
        u(c, "packets_read"),
        u(c, "packets_summarised"),
        u(c, "fragments_merged"),
        drops,
        u(c, "summaries"),
        sent.join(" "),
        if drops > 0 { c["drops"].to_string() } else { String::new() }
    )
}

#[test]
fn every_capture_reconciles_with_1_and_3_processors() {
    let Some(pcaps) = shared_pcaps() else { return };
    let files = captures(&pcaps);
    assert_eq!(files.len(), 50, "the 50 shared captures");
    let mut table = Vec::new();
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        // capinfos counts every packet of the files it reads, and refuses the others: those
        // libpcap refuses too, so the collector reads nothing of them and exits 3.
        let packets = match capinfos_packets(&pcaps, &name) {
            Some(p) => p,
            None => {
                assert!(
                    REJECTED_CAPTURES.contains(&name.as_str()),
                    "{name}: capinfos gives no packet count, yet it is not a rejected capture"
                );
                0
            }
        };
        let want = || Expect {
            code: collector_exit_code(&name),
            packets,
        };
        for n in [1, 3] {
            let run = one_collector(file, n, &[]);
            table.push(check_run(&name, n, &run, want()));
        }
    }
    println!("{}", table.join("\n"));
}

/// The captures pinned to exit 3 are exactly those MANIFEST.tsv says libpcap rejects.
#[test]
fn rejected_captures_are_those_the_manifest_says_libpcap_rejects() {
    let Some(pcaps) = shared_pcaps() else { return };
    let manifest =
        std::fs::read_to_string(pcaps.join("MANIFEST.tsv")).expect("reading MANIFEST.tsv");
    let mut lines = manifest.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let packets = header
        .iter()
        .position(|h| *h == "packets")
        .expect("MANIFEST.tsv has a packets column");
    let rejected: Vec<&str> = lines
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f.get(packets).is_some_and(|p| p.contains("rejected")))
        .map(|f| f[0])
        .collect();
    assert_eq!(rejected, REJECTED_CAPTURES);
}

#[test]
fn malformed_captures_end_with_the_documented_codes() {
    let Some(pcaps) = shared_pcaps() else { return };
    for (name, code) in [
        ("libpcap-pcap-invalid-version-1.pcap", 3),
        ("libpcap-pcapng-invalid-vers-1.pcapng", 3),
        ("libpcap-shb-option-too-long.pcapng", 3),
        ("zeek-empty.pcap", 0),
    ] {
        let run = one_collector(&pcaps.join(name), 2, &[]);
        assert_eq!(
            run.collectors[0].0,
            Some(code),
            "{name}: {}",
            run.collectors[0].1
        );
        check_run(name, 2, &run, Expect { code, packets: 0 });
    }
}

/// Complete records in the first bytes of a classic pcap file, counted here from the record
/// headers: the readable prefix the README's "every packet before the damage was passed on"
/// is held to.
fn complete_records(bytes: &[u8]) -> u64 {
    let mut off = 24;
    let mut n = 0;
    while off + 16 <= bytes.len() {
        let caplen = u32::from_le_bytes([
            bytes[off + 8],
            bytes[off + 9],
            bytes[off + 10],
            bytes[off + 11],
        ]) as usize;
        if off + 16 + caplen > bytes.len() {
            break;
        }
        off += 16 + caplen;
        n += 1;
    }
    n
}

#[test]
fn capture_cut_mid_record_keeps_every_packet_before_the_damage() {
    let Some(pcaps) = shared_pcaps() else { return };
    let whole = std::fs::read(pcaps.join("zeek-ssh.pcap")).expect("read zeek-ssh.pcap");
    let dir = tempfile::tempdir().expect("create a temp dir");
    let cut_len = whole.len() * 2 / 3 + 7;
    let cut = dir.path().join("ssh-cut.pcap");
    std::fs::write(&cut, &whole[..cut_len]).expect("write the cut capture");
    let before = complete_records(&whole[..cut_len]);
    assert!(before > 100 && before < 1797, "{before}");
    for n in [1, 2] {
        let run = one_collector(&cut, n, &[]);
        assert_eq!(run.collectors[0].0, Some(4), "{}", run.collectors[0].1);
        check_run(
            "ssh-cut.pcap",
            n,
            &run,
            Expect {
                code: 4,
                packets: before,
            },
        );
        let c = &run
            .report
            .as_ref()
            .map(|r| r["collectors"][0].clone())
            .unwrap_or_default();
        assert_eq!(
            u(c, "packets_read"),
            before,
            "every complete record before the cut is passed on"
        );
        assert!(
            c["status"]
                .as_str()
                .unwrap_or_default()
                .starts_with("damaged"),
            "{c}"
        );
    }
}

#[test]
fn missing_capture_ends_the_whole_pipeline() {
    let run = one_collector(Path::new("/nonexistent/trace.pcap"), 2, &[]);
    assert_eq!(run.collectors[0].0, Some(3), "{}", run.collectors[0].1);
    check_run(
        "/nonexistent/trace.pcap",
        2,
        &run,
        Expect {
            code: 3,
            packets: 0,
        },
    );
}

#[test]
fn collectors_that_disagree_on_processor_order_are_detected_as_misrouted() {
    let Some(pcaps) = shared_pcaps() else { return };
    let pcap = pcaps.join("zeek-ssh.pcap");
    let spec = |order: Vec<usize>| CollectorSpec {
        order,
        ..CollectorSpec::pcap(&pcap, 2)
    };
    let run = run_pipeline(&[spec(vec![0, 1]), spec(vec![1, 0])], 2, TIMEOUT);
    assert!(run.all_exited(), "{}", run.exit_codes());
    let report = run.accounting();
    assert_eq!(
        report["routing_consistent"],
        Value::Bool(false),
        "{report:#}"
    );
    let misrouted: u64 = report["processors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| u(p, "misrouted_messages"))
        .sum();
    assert!(misrouted > 0, "{report:#}");
    assert!(
        run.processors
            .iter()
            .all(|(_, err)| err.contains("MISROUTED")),
        "each processor logs it loudly"
    );
    // Counts still reconcile: misrouted summaries were received, then dropped and counted.
    assert_eq!(report["reconciled"], Value::Bool(true), "{report:#}");

    // The control: two collectors that agree are consistent.
    let run = run_pipeline(&[spec(vec![0, 1]), spec(vec![0, 1])], 2, TIMEOUT);
    let report = run.accounting();
    assert_eq!(
        report["routing_consistent"],
        Value::Bool(true),
        "{report:#}"
    );
    assert_eq!(report["reconciled"], Value::Bool(true), "{report:#}");
    assert_eq!(report["collectors"].as_array().map(Vec::len), Some(2));
}

#[test]
fn wrong_flags_are_usage_errors_without_stack_traces() {
    for (program, args) in [
        ("tapflow-collector", vec!["--pcap", "x.pcap"]),
        ("tapflow-collector", vec!["--bogus"]),
        ("tapflow-processor", vec!["--listen", "http://x"]),
        ("tapflow-aggregator", vec![]),
    ] {
        let out = std::process::Command::new(bin(program))
            .args(&args)
            .output()
            .expect("run the binary");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{program} {args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
        assert!(!err.trim().is_empty());
    }
}

#[test]
fn batches_split_by_bytes_and_tiny_batches_still_reconcile() {
    let Some(pcaps) = shared_pcaps() else { return };
    let pcap = pcaps.join("zeek-ssh.pcap");
    for extra in [["--batch-bytes", "512"], ["--batch-size", "1"]] {
        let run = one_collector(&pcap, 2, &extra);
        let row = check_run(
            "zeek-ssh.pcap",
            2,
            &run,
            Expect {
                code: 0,
                packets: 1797,
            },
        );
        println!("{extra:?}: {row}");
    }
}

/// A processor sends at most 2048 records per message; here each ends the capture with thousands
/// of flows still open, so its end-of-stream records go in several messages, only the last with
/// the final watermark. The conn log must still hold every record once, and be the same, byte for
/// byte, with 1 and 2 processors (the aggregator's order does not depend on how they arrived).
#[test]
fn a_table_flushed_in_many_messages_is_written_whole_and_in_the_same_order() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let pcap = tapflow_integration_tests::cluster::generate(dir.path(), 60_000, 12_000);
    let mut logs = Vec::new();
    for n in [1, 2] {
        let run = one_collector(&pcap, n, &[]);
        let want = Expect {
            code: 0,
            packets: 60_000,
        };
        println!("{}", check_run("generated", n, &run, want));
        let report = run.accounting();
        let sent: Vec<u64> = report["processors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| u(&p["counters"], "records_sent"))
            .collect();
        assert!(
            sent.iter().all(|&s| s > 2 * 2048),
            "n={n}: each processor should end with more records than two messages hold: {sent:?}"
        );
        let lines = run.conn_log.lines().count() as u64;
        assert_eq!(
            lines,
            sent.iter().sum::<u64>(),
            "n={n}: records in the conn log"
        );
        assert_eq!(u(&report["conns"], "released"), lines, "n={n}");
        let uids: std::collections::BTreeSet<&str> = run
            .conn_log
            .lines()
            .map(|l| {
                l.split("\"uid\":\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("")
            })
            .collect();
        assert_eq!(uids.len() as u64, lines, "n={n}: a uid written twice");
        logs.push(run.conn_log.clone());
    }
    assert!(
        logs[0] == logs[1],
        "the conn log differs between 1 and 2 processors"
    );
}
