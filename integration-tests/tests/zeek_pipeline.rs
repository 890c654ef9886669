//! Sessions through the real three-process pipeline: compared with Zeek's own conn.log on the
//! captures that have one, and byte-identical whatever the number of processors or the way the
//! two directions of each connection reach them (DESIGN invariant 2).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::zeek::{
    assert_golden, golden_path, json_row, parse_zeek_log, Tally, IGNORE_CHECKSUMS,
};
use tapflow_integration_tests::{
    captures, collector_exit_code, run_pipeline, shared_pcaps, split_by_direction,
    without_cross_tap, CollectorSpec, PipelineRun,
};

const TIMEOUT: Duration = Duration::from_secs(120);

fn pipeline(pcap: &Path, n: usize, extra: &[&str]) -> PipelineRun {
    let spec = CollectorSpec {
        extra: extra.iter().map(|s| s.to_string()).collect(),
        ..CollectorSpec::pcap(pcap, n)
    };
    run_pipeline(&[spec], n, TIMEOUT)
}

/// No cap may be reached where outputs are compared: counted evictions, forced merges and
/// forced conn-log releases are all zero.
fn assert_no_cap_hits(name: &str, run: &PipelineRun) {
    assert!(
        run.report.is_some(),
        "{name}: no report\n{}",
        run.aggregator.1
    );
    let report = run.accounting();
    for p in report["processors"].as_array().into_iter().flatten() {
        for counter in ["flows_evicted", "merge_forced"] {
            assert_eq!(
                p["counters"][counter].as_u64(),
                Some(0),
                "{name}: {counter} in {p:#}"
            );
        }
    }
    assert_eq!(
        report["conns"]["forced"].as_u64(),
        Some(0),
        "{name}: {report:#}"
    );
}

fn checksum_flag(file: &str) -> &'static [&'static str] {
    let name = file.trim_end_matches(".pcapng").trim_end_matches(".pcap");
    if IGNORE_CHECKSUMS.contains(&name) {
        &["--ignore-checksums"]
    } else {
        &[]
    }
}

#[test]
fn pipeline_sessions_agree_with_zeek() {
    let Some(pcaps) = shared_pcaps() else { return };
    let mut truths: Vec<String> = std::fs::read_dir(pcaps.join("truth"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    truths.retain(|n| n.ends_with(".zeek-conn.log"));
    truths.sort();
    assert!(!truths.is_empty(), "no Zeek truth in {}", pcaps.display());
    let mut tally = Tally::default();
    for truth in &truths {
        let file = truth.trim_end_matches(".zeek-conn.log");
        let run = pipeline(&pcaps.join(file), 2, checksum_flag(file));
        assert!(
            run.all_exited(),
            "{file}: {}\n{}",
            run.exit_codes(),
            run.aggregator.1
        );
        assert_no_cap_hits(file, &run);
        let ours = run
            .conn_log
            .lines()
            .map(|l| json_row(&serde_json::from_str::<Value>(l).unwrap_or_default()))
            .collect();
        let zeek = parse_zeek_log(
            &std::fs::read_to_string(pcaps.join("truth").join(truth)).unwrap_or_default(),
        );
        tally.add(file, &zeek, ours);
    }
    let readme = tally.readme_differences();
    println!("{}", tally.report);
    assert_golden(&golden_path(), &tally.table());
    assert!(readme.is_empty(), "{}\n{}", readme.join("\n"), tally.report);
}

#[test]
fn conn_log_is_identical_with_1_2_and_3_processors() {
    const TIMED: [&str; 4] = [
        "\"tcp_rtt\"",
        "\"orig_iat_stddev\"",
        "\"resp_iat_mean\"",
        "\"orig_ack_rtt_n\"",
    ];
    let Some(pcaps) = shared_pcaps() else { return };
    let (mut lines, mut timed) = (0, [0; 4]);
    for file in captures(&pcaps) {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let runs: Vec<PipelineRun> = [1, 2, 3].iter().map(|&n| pipeline(&file, n, &[])).collect();
        for (run, n) in runs.iter().zip([1, 2, 3]) {
            let code = collector_exit_code(&name);
            assert!(
                run.all_exited_with(code),
                "{name} n={n}: want the collector to exit {code} and the others 0, got {}",
                run.exit_codes()
            );
            assert_no_cap_hits(&name, run);
        }
        assert_eq!(
            runs[0].conn_log, runs[1].conn_log,
            "{name}: 1 vs 2 processors"
        );
        assert_eq!(
            runs[0].conn_log, runs[2].conn_log,
            "{name}: 1 vs 3 processors"
        );
        lines += runs[0].conn_log.lines().count();
        for (i, field) in TIMED.iter().enumerate() {
            timed[i] += runs[0].conn_log.matches(field).count();
        }
    }
    assert!(lines > 1000, "the captures give sessions: {lines}");
    // The latency fields are in what was compared (issue 15).
    assert!(timed.iter().all(|&n| n > 20), "{TIMED:?}: {timed:?}");
    println!(
        "{lines} conn records identical with 1, 2 and 3 processors; with {TIMED:?}: {timed:?}"
    );
}

#[test]
fn two_taps_seeing_one_direction_each_give_the_same_sessions_as_one() {
    let Some(pcaps) = shared_pcaps() else { return };
    let dir = tempfile::tempdir().expect("create a temp dir");
    let (mut compared, mut flagged) = (0, 0);
    for name in [
        "zeek-ssh.pcap",
        "zeek-ftp-bigtransfer.pcap",
        "chrissanders-http_espn.pcapng",
        "evilfingers-nmap-connect-scan.pcap",
        "zeek-tunnels-vxlan.pcap",
        "zeek-quic-firefox-cloudflare.pcap",
        "tcpdump-tcp-handshake-nano.pcap",
    ] {
        let (all, fwd, rev) = (
            dir.path().join(format!("{name}.all.pcap")),
            dir.path().join(format!("{name}.fwd.pcap")),
            dir.path().join(format!("{name}.rev.pcap")),
        );
        let Some((nf, nr)) = split_by_direction(&pcaps.join(name), &all, &fwd, &rev) else {
            panic!("{name}: cannot rewrite")
        };
        assert!(
            nf > 0 && nr > 0,
            "{name}: both directions present ({nf}/{nr})"
        );
        let one = pipeline(&all, 2, &[]);
        let two = run_pipeline(
            &[CollectorSpec::pcap(&fwd, 2), CollectorSpec::pcap(&rev, 2)],
            2,
            TIMEOUT,
        );
        assert!(
            one.all_exited() && two.all_exited(),
            "{name}: {}",
            two.aggregator.1
        );
        assert_no_cap_hits(name, &one);
        assert_no_cap_hits(name, &two);
        assert!(!one.conn_log.is_empty(), "{name}");
        let (two_log, cross) = without_cross_tap(&one.conn_log, &two.conn_log, name);
        assert_eq!(
            one.conn_log, two_log,
            "{name}: one tap vs two taps by direction (but for rtt_cross_tap)"
        );
        compared += one.conn_log.lines().count();
        flagged += cross;
    }
    assert!(flagged > 50, "round trips measured across taps: {flagged}");
    println!(
        "{compared} conn records identical through one tap and through two taps split by \
         direction, but for rtt_cross_tap on {flagged}"
    );
}
