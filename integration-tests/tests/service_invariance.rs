//! Services stay shard-invariant (issue 17): on the traces whose data connections are announced
//! on another connection (FTP's PORT/PASV/EPRT/EPSV, IRC's DCC SEND), labelled `ftp-data` and
//! `irc-dcc-data` by the aggregator, and on traces with TLS, HTTP and QUIC names, the conn log is
//! byte-identical with 1 and 3 processors (the control and data connections then land on
//! different processors) and with two taps that see one direction each.

use std::path::PathBuf;
use std::time::Duration;

use tapflow_integration_tests::zeek_corpus::{corpus_dir, manifest};
use tapflow_integration_tests::{
    run_pipeline, shared_pcaps, split_by_direction, without_cross_tap, CollectorSpec, PipelineRun,
};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Corpus tests (by name) and shared captures with announced data connections or names.
const CORPUS: [&str; 4] = [
    "scripts.base.protocols.ftp.ftp-ipv4",
    "scripts.base.protocols.ftp.ftp-auth-tls",
    "scripts.base.protocols.irc.basic",
    "signatures.eval-condition",
];
const PCAPS: [&str; 3] = [
    "zeek-ftp-bigtransfer.pcap",
    "chrissanders-http_espn.pcapng",
    "zeek-quic-firefox-cloudflare.pcap",
];

/// The traces, with their collector flags.
fn traces() -> Vec<(String, PathBuf, Vec<String>)> {
    let mut out = Vec::new();
    if let Some(dir) = corpus_dir() {
        for e in manifest(&dir) {
            if CORPUS.contains(&e.test.as_str()) {
                out.push((e.test.clone(), e.trace, e.collector_flags));
            }
        }
    }
    if let Some(dir) = shared_pcaps() {
        for name in PCAPS {
            out.push((name.to_owned(), dir.join(name), Vec::new()));
        }
    }
    out
}

fn pipeline(specs: Vec<CollectorSpec>, n: usize) -> PipelineRun {
    run_pipeline(&specs, n, TIMEOUT)
}

fn spec(trace: &std::path::Path, n: usize, flags: &[String]) -> CollectorSpec {
    CollectorSpec {
        extra: flags.to_vec(),
        ..CollectorSpec::pcap(trace, n)
    }
}

#[test]
fn services_are_identical_with_1_and_3_processors_and_two_taps() {
    let traces = traces();
    if traces.is_empty() {
        eprintln!("SKIP: neither ../shared/zeek-corpus nor ../shared/pcaps is present");
        return;
    }
    let dir = tempfile::tempdir().expect("create a temp dir");
    let (mut lines, mut services, mut names) = (0, 0, 0);
    for (name, trace, flags) in &traces {
        let one = pipeline(vec![spec(trace, 1, flags)], 1);
        let three = pipeline(vec![spec(trace, 3, flags)], 3);
        let file = |part: &str| dir.path().join(format!("{name}.{part}.pcap"));
        let (all, fwd, rev) = (file("all"), file("fwd"), file("rev"));
        let split = split_by_direction(trace, &all, &fwd, &rev);
        assert!(split.is_some(), "{name}: cannot split by direction");
        let taps = pipeline(vec![spec(&fwd, 2, flags), spec(&rev, 2, flags)], 2);
        let whole = pipeline(vec![spec(&all, 2, flags)], 2);
        for (run, what) in [
            (&one, "1"),
            (&three, "3"),
            (&taps, "taps"),
            (&whole, "whole"),
        ] {
            assert!(
                run.all_exited(),
                "{name} ({what}): {}\n{}",
                run.exit_codes(),
                run.aggregator.1
            );
        }
        assert!(!one.conn_log.is_empty(), "{name}: no sessions");
        assert_eq!(one.conn_log, three.conn_log, "{name}: 1 vs 3 processors");
        let (taps_log, _) = without_cross_tap(&whole.conn_log, &taps.conn_log, name);
        assert_eq!(
            whole.conn_log, taps_log,
            "{name}: one tap vs two taps by direction"
        );
        lines += one.conn_log.lines().count();
        services += one.conn_log.matches("\"service\":").count();
        names += one.conn_log.matches("\"server_name\":").count();
    }
    println!(
        "{lines} conn records identical with 1 and 3 processors and two taps; {services} with a \
         service, {names} with a server_name"
    );
}
