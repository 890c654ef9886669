//! `--conn-interim-log` end to end: a TCP connection longer than the active timeout (1 h of
//! packet time) gives an interim record at each hour it crosses, in the interim log only; the
//! conn log has its one final record.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::craft::{json_lines, tcp, Ipv4, PcapWriter};
use tapflow_integration_tests::{start_pipeline_opts, CollectorSpec};

const T0_US: u64 = 1_700_000_000 * 1_000_000;
const CLIENT: ([u8; 4], u16) = ([10, 9, 0, 1], 51_000);
const SERVER: ([u8; 4], u16) = ([10, 9, 0, 2], 443);
const MINUTE_US: u64 = 60_000_000;
/// Data exchanges, one a minute: the connection lasts 2 h 30 min.
const ROUNDS: u64 = 150;

/// Handshake, then every minute 10 bytes from the client and 20 back, then FIN both ways.
fn long_connection(path: &Path) {
    let mut w = PcapWriter::create(path);
    let (mut c_seq, mut s_seq) = (1_000u32, 50_000u32);
    let c = |flags, seq, ack, data: &[u8]| Ipv4::tcp(CLIENT, SERVER, flags, seq, ack, data);
    let s = |flags, seq, ack, data: &[u8]| Ipv4::tcp(SERVER, CLIENT, flags, seq, ack, data);
    w.packet(T0_US, &c(tcp::SYN, c_seq, 0, &[]));
    c_seq += 1;
    w.packet(T0_US + 1_000, &s(tcp::SYN | tcp::ACK, s_seq, c_seq, &[]));
    s_seq += 1;
    w.packet(T0_US + 2_000, &c(tcp::ACK, c_seq, s_seq, &[]));
    for k in 1..=ROUNDS {
        let t = T0_US + k * MINUTE_US;
        w.packet(t, &c(tcp::PSH | tcp::ACK, c_seq, s_seq, &[b'q'; 10]));
        c_seq += 10;
        w.packet(
            t + 1_000,
            &s(tcp::PSH | tcp::ACK, s_seq, c_seq, &[b'r'; 20]),
        );
        s_seq += 20;
    }
    let t = T0_US + (ROUNDS + 1) * MINUTE_US;
    w.packet(t, &c(tcp::FIN | tcp::ACK, c_seq, s_seq, &[]));
    c_seq += 1;
    w.packet(t + 1_000, &s(tcp::FIN | tcp::ACK, s_seq, c_seq, &[]));
    s_seq += 1;
    w.packet(t + 2_000, &c(tcp::ACK, c_seq, s_seq, &[]));
    w.finish();
}

#[test]
fn interim_records_go_to_the_interim_log_and_the_final_one_to_the_conn_log() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let pcap = dir.path().join("long.pcap");
    long_connection(&pcap);
    let interim_path = dir.path().join("interim.jsonl");
    let interim_arg = interim_path.display().to_string();
    let run = start_pipeline_opts(
        &[CollectorSpec::pcap(&pcap, 2)],
        2,
        &[],
        &["--conn-interim-log", &interim_arg],
    )
    .wait(Duration::from_secs(60));
    assert!(run.all_exited(), "{}", run.aggregator.1);
    assert_eq!(run.aggregator.0, Some(0), "{}", run.aggregator.1);

    let finals = json_lines(&run.conn_log);
    assert_eq!(finals.len(), 1, "one final record: {}", run.conn_log);
    let f = &finals[0];
    assert_eq!(f["conn_state"], "SF", "{f}");
    assert_eq!(f["history"], "ShADdFf", "{f}");
    assert_eq!(f["orig_bytes"], Value::from(10 * ROUNDS), "{f}");
    assert_eq!(f["resp_bytes"], Value::from(20 * ROUNDS), "{f}");
    assert_eq!(f["orig_pkts"], Value::from(ROUNDS + 4), "{f}");
    assert_eq!(f["resp_pkts"], Value::from(ROUNDS + 2), "{f}");

    let interim_text = std::fs::read_to_string(&interim_path).expect("reading the interim log");
    let interim = json_lines(&interim_text);
    // 2 h 31 min: the packets at 1 h and at 2 h cross an hour boundary each.
    assert_eq!(interim.len(), 2, "{interim_text}");
    let mut last_duration = 0.0;
    for r in &interim {
        assert_eq!(r["uid"], f["uid"], "the same connection: {r}");
        assert_eq!(r["id.orig_h"], "10.9.0.1", "{r}");
        assert_eq!(r["id.resp_p"], Value::from(443), "{r}");
        let d = r["duration"]
            .as_f64()
            .expect("an interim record's duration");
        assert!(d > last_duration && d < 3600.0 * 2.5, "{r}");
        last_duration = d;
        // An interim record is not a final one: never in the conn log.
        assert!(
            !run.conn_log.contains(&r.to_string()),
            "interim record in the conn log: {r}"
        );
    }
    assert!(
        (3540.0..=3600.0).contains(&interim[0]["duration"].as_f64().unwrap_or_default()),
        "the first interim record is as of the first hour: {}",
        interim[0]
    );
    // Each is the connection as it stood before the packet that crossed the hour: 59 and 119
    // data segments from the client after its SYN and ACK, still open (S1).
    for (r, pkts) in interim.iter().zip([61u64, 121]) {
        assert_eq!(r["orig_pkts"], Value::from(pkts), "{r}");
        assert_eq!(r["conn_state"], "S1", "{r}");
    }
    let report = run.report.as_ref().expect("an accounting report");
    assert_eq!(report["conns"]["interim"].as_u64(), Some(2), "{report:#}");
}
