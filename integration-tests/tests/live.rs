//! Live capture through the whole pipeline: real packets on the loopback interface, libpcap in
//! the collector, and SIGTERM as the way the run ends (an exit path that must still send
//! end-of-stream everywhere and reconcile).

use std::net::UdpSocket;
use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::{
    free_port, free_ports, is_root, start_pipeline, start_pipeline_opts, CollectorSpec,
};

#[test]
fn live_loopback_capture_ends_on_sigterm_and_reconciles() {
    if !is_root() {
        return;
    }
    let port = free_port();
    let spec = CollectorSpec::loopback(port, 2, &["--immediate"]);
    let running = start_pipeline(&[spec], 2);
    // Let the capture open before sending.
    std::thread::sleep(Duration::from_millis(1500));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    const SENT: u64 = 300;
    for i in 0..SENT {
        let payload = format!("tapflow live test datagram {i}");
        sock.send_to(payload.as_bytes(), ("127.0.0.1", port))
            .expect("send a datagram");
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    running.signal_collector(0, "TERM");
    let run = running.wait(Duration::from_secs(60));
    assert!(
        run.all_exited(),
        "collector: {}\naggregator: {}",
        run.collectors[0].1,
        run.aggregator.1
    );
    assert_eq!(run.collectors[0].0, Some(0), "{}", run.collectors[0].1);
    let report = run.accounting();
    assert_eq!(report["reconciled"], Value::Bool(true), "{report:#}");
    let c = &report["collectors"][0];
    assert_eq!(c["status"], Value::String("interrupted".into()), "{c:#}");
    assert_eq!(
        c["packets_read"].as_u64(),
        Some(SENT),
        "the filter passes exactly our datagrams: {c:#}"
    );
    assert_eq!(c["packets_summarised"].as_u64(), Some(SENT), "{c:#}");
    // libpcap's own statistics are reported beside the accounting.
    assert!(
        run.collectors[0].1.contains("pcap_received"),
        "{}",
        run.collectors[0].1
    );
    println!(
        "live: read {} summarised {} kernel_dropped {} if_dropped {}",
        c["packets_read"], c["packets_summarised"], c["kernel_dropped"], c["if_dropped"]
    );
}

#[test]
fn a_silent_collector_is_declared_dead_and_rejoins() {
    if !is_root() {
        return;
    }
    let Some(pcaps) = tapflow_integration_tests::shared_pcaps() else {
        return;
    };
    let live = CollectorSpec::loopback(free_port(), 1, &[]);
    let file = CollectorSpec::pcap(&pcaps.join("zeek-ssh.pcap"), 1);
    let running = tapflow_integration_tests::start_pipeline_with(
        &[live, file],
        1,
        &["--dead-after-ms", "1500"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    // The live collector stops talking (no heartbeats) without ending its stream.
    running.signal_collector(0, "STOP");
    std::thread::sleep(Duration::from_millis(4000));
    running.signal_collector(0, "CONT");
    std::thread::sleep(Duration::from_millis(1500));
    running.signal_collector(0, "TERM");
    let run = running.wait(Duration::from_secs(60));
    assert!(run.all_exited(), "processor: {}", run.processors[0].1);
    let log = &run.processors[0].1;
    assert!(log.contains("declared dead"), "{log}");
    assert!(log.contains("is back"), "{log}");
    let report = run.accounting();
    assert_eq!(report["reconciled"], Value::Bool(true), "{report:#}");
    assert!(
        report["processors"][0]["counters"]["collectors_declared_dead"].as_u64() >= Some(1),
        "{report:#}"
    );
    assert_eq!(
        run.conn_log.lines().count(),
        25,
        "zeek-ssh's sessions are all written"
    );
}

#[test]
fn aggregator_reopens_its_logs_on_sighup() {
    if !is_root() {
        return;
    }
    let port = free_port();
    let spec = CollectorSpec::loopback(port, 1, &["--ignore-checksums"]);
    let running = start_pipeline(&[spec], 1);
    std::thread::sleep(Duration::from_millis(1000));
    // logrotate: move the conn log away, then SIGHUP.
    let conn = running.dir.path().join("conn.jsonl");
    let rotated = running.dir.path().join("conn.jsonl.1");
    std::fs::rename(&conn, &rotated).expect("rotate the conn log");
    running.signal_aggregator("HUP");
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    for i in 0..20 {
        sock.send_to(format!("rotate {i}").as_bytes(), ("127.0.0.1", port))
            .expect("send a datagram");
    }
    std::thread::sleep(Duration::from_millis(1000));
    running.signal_collector(0, "TERM");
    let run = running.wait(Duration::from_secs(60));
    assert!(run.all_exited(), "{}", run.aggregator.1);
    assert!(
        run.aggregator.1.contains("SIGHUP: log files reopened"),
        "{}",
        run.aggregator.1
    );
    // The session, written at end of stream, is in the new file at the configured path.
    assert_eq!(run.conn_log.lines().count(), 1, "{}", run.conn_log);
    assert!(
        run.conn_log.contains("\"orig_pkts\":20"),
        "{}",
        run.conn_log
    );
}

/// `GET /metrics` from a local port.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut c =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send the request");
    let mut reply = String::new();
    let _ = c.read_to_string(&mut reply);
    reply
}

#[test]
fn every_process_serves_prometheus_metrics() {
    if !is_root() {
        return;
    }
    let port = free_port();
    let m = free_ports(3);
    let (mc, mp, ma) = (
        format!("127.0.0.1:{}", m[0]),
        format!("127.0.0.1:{}", m[1]),
        format!("127.0.0.1:{}", m[2]),
    );
    let spec = CollectorSpec::loopback(port, 1, &["--ignore-checksums", "--metrics-listen", &mc]);
    let running = start_pipeline_opts(
        &[spec],
        1,
        &["--metrics-listen", &mp, "--heartbeat-ms", "200"],
        &["--metrics-listen", &ma],
    );
    std::thread::sleep(Duration::from_millis(1000));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    for i in 0..40 {
        sock.send_to(format!("metrics {i}").as_bytes(), ("127.0.0.1", port))
            .expect("send a datagram");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (c, p, a) = (scrape(m[0]), scrape(m[1]), scrape(m[2]));
    running.signal_collector(0, "TERM");
    let run = running.wait(Duration::from_secs(60));
    assert!(run.all_exited(), "{}", run.aggregator.1);
    assert!(
        c.starts_with("HTTP/1.1 200 OK") && c.contains("tapflow_collector_packets_read_total 40"),
        "{c}"
    );
    assert!(
        c.contains("# TYPE tapflow_collector_summaries_sent_total counter"),
        "{c}"
    );
    assert!(
        p.contains("tapflow_processor_summaries_received_total 40")
            && p.contains("tapflow_processor_flows_open 1"),
        "{p}"
    );
    assert!(
        a.contains("# TYPE tapflow_aggregator_conn_records_received_total counter"),
        "{a}"
    );
}

/// Traffic windows that a silent collector should have contributed to are written to InfluxDB
/// with `complete=false`; the rest of the pipeline goes on and the run reconciles.
#[test]
fn windows_with_a_silent_collector_are_marked_incomplete() {
    if !is_root() {
        return;
    }
    let Some(influx) = tapflow_integration_tests::influxd::Influxd::start() else {
        return;
    };
    let spool = tempfile::tempdir().expect("create the spool dir");
    let url = influx.url();
    let spool_dir = spool.path().display().to_string();
    let port = free_port();
    let running = start_pipeline_opts(
        &[CollectorSpec::loopback(port, 2, &["--immediate"])],
        2,
        &["--dead-after-ms", "1000"],
        &[
            "--influx-url",
            &url,
            "--influx-db",
            "tapflow",
            "--influx-spool-dir",
            &spool_dir,
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    let send = |n: u32| {
        for i in 0..n {
            sock.send_to(&i.to_be_bytes(), ("127.0.0.1", port))
                .expect("send a datagram");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    send(100);
    running.signal_collector(0, "STOP");
    std::thread::sleep(Duration::from_millis(3000));
    running.signal_collector(0, "CONT");
    std::thread::sleep(Duration::from_millis(500));
    send(100);
    std::thread::sleep(Duration::from_millis(500));
    running.signal_collector(0, "TERM");
    let run = running.wait(Duration::from_secs(60));
    assert!(run.all_exited(), "aggregator: {}", run.aggregator.1);
    let report = run.accounting();
    assert_eq!(report["reconciled"], Value::Bool(true), "{report:#}");
    let rows = influx.query(
        "tapflow",
        "SELECT packets, complete, collector FROM tapflow_traffic",
    );
    let values = rows["results"][0]["series"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    println!("traffic windows (time, packets, complete, collector): {values:?}");
    assert!(!values.is_empty(), "no traffic points: {rows}");
    assert!(
        values.iter().any(|v| v[2] == Value::Bool(false)),
        "no window marked incomplete: {values:?}"
    );
    let packets: u64 = values.iter().filter_map(|v| v[1].as_u64()).sum();
    assert_eq!(
        packets, 200,
        "the traffic itself is all counted: {values:?}"
    );
    // Health while it ran, not only at its end: live points from the processors' heartbeats.
    let live = influx.scalar(
        "tapflow",
        "SELECT count(losses) FROM tapflow_health WHERE component = 'collector'",
    );
    let flows = influx.scalar(
        "tapflow",
        "SELECT count(flows_open) FROM tapflow_health WHERE component = 'processor'",
    );
    println!("live health points: {live} collector, {flows} processor");
    assert!(
        live >= 2 && flows >= 2,
        "no live health points: {live}, {flows}"
    );
}
