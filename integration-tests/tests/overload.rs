//! Overload, end to end: a processor that stops reading (SIGSTOP) behind a collector with
//! `--slow-policy drop` and a small queue (the collector counts `queue_full`, exits 0, the
//! report reconciles, and the aggregator raises a `drop_rate` self-alert); and a processor
//! whose aggregator is away while it has records to send (`records_unsent`, in the report).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::craft::{json_lines, Ipv4, PcapWriter};
use tapflow_integration_tests::faults::signal;
use tapflow_integration_tests::fifo::{mkfifo, open_fifo_for_writing, read_pcap, write_all};
use tapflow_integration_tests::{
    bin, endpoint, free_ports, start_pipeline_opts, CollectorSpec, Proc, SourceArg,
};

const T0_US: u64 = 1_700_000_000 * 1_000_000;

/// `packets` UDP datagrams over `flows` flows (source ports) from 10.0.0.1 to 10.0.0.2:5353,
/// spread evenly over `span_s` seconds of packet time.
fn udp_capture(path: &Path, packets: u64, flows: u64, span_s: u64) {
    let mut w = PcapWriter::create(path);
    for i in 0..packets {
        let sport = 10_000 + (i % flows) as u16;
        let p = Ipv4::udp(([10, 0, 0, 1], sport), ([10, 0, 0, 2], 5353), b"payload!");
        w.packet(T0_US + span_s * 1_000_000 * i / packets, &p);
    }
    w.finish();
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_default()
}

/// Packets fed to the collector, and in how many slices (one every 12 ms): 250 packets a
/// slice, about 8 batches per link, which a 32-batch queue absorbs while its processor reads.
const PACKETS: u64 = 60_000;
const SLICES: usize = 240;

/// Collector (`--slow-policy drop`, a 32-batch queue) -> 2 processors -> aggregator over
/// `PACKETS` UDP datagrams fed through a FIFO in slices, with processor 1 stopped (SIGSTOP)
/// before anything is sent and continued once the collector has read everything, when `stop`.
fn overload_run(stop: bool) -> tapflow_integration_tests::PipelineRun {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let pcap = dir.path().join("udp.pcap");
    // 60 s of packet time at 1,000 packets/s: no flood.
    udp_capture(&pcap, PACKETS, 1000, 60);
    let capture = read_pcap(&pcap);
    let fifo = dir.path().join("tap.fifo");
    mkfifo(&fifo);
    let collector = CollectorSpec {
        source: SourceArg::Pcap(fifo.clone()),
        order: vec![0, 1],
        extra: [
            "--slow-policy",
            "drop",
            "--queue-batches",
            "32",
            "--batch-size",
            "16",
            "--heartbeat-ms",
            "100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    };
    let running = start_pipeline_opts(&[collector], 2, &["--heartbeat-ms", "100"], &[]);
    // Processor 1 stops reading before the collector has anything to send.
    let stopped = running.processors[1].child.id();
    if stop {
        signal(stopped, "STOP");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut f = open_fifo_for_writing(&fifo, deadline);
    write_all(&mut f, &capture.header, deadline);
    // In slices over 3 s, so that heartbeats see the losses as they climb.
    for slice in capture.records.chunks(capture.records.len() / SLICES) {
        let bytes: Vec<u8> = slice
            .iter()
            .flat_map(|(_, rec)| rec.iter().copied())
            .collect();
        write_all(&mut f, &bytes, deadline);
        std::thread::sleep(Duration::from_millis(12));
    }
    drop(f);
    if stop {
        // The collector has read it all and waits (linger) for the stopped processor.
        std::thread::sleep(Duration::from_secs(1));
        signal(stopped, "CONT");
    }
    running.wait(Duration::from_secs(60))
}

#[test]
fn a_stopped_processor_gives_queue_full_drops_that_reconcile_and_a_drop_rate_alert() {
    // The control: with both processors reading, the same run drops nothing.
    let control = overload_run(false);
    assert!(control.all_exited(), "{}", control.aggregator.1);
    let report = control.report.as_ref().expect("an accounting report");
    let c = &report["collectors"][0];
    assert_eq!(u(&c["drops"]["queue_full"]), 0, "{c:#}");
    assert_eq!(control.alerts_log, "", "no drop_rate");
    assert_eq!(report["complete"], true, "{report:#}");
    let share0 = u(&c["links"][0]["sent"]);
    assert!(share0 > 0 && share0 < PACKETS, "{c:#}");

    let run = overload_run(true);
    assert!(run.all_exited(), "{}", run.aggregator.1);
    assert_eq!(run.collectors[0].0, Some(0), "{}", run.collectors[0].1);
    assert_eq!(run.aggregator.0, Some(0), "{}", run.aggregator.1);

    let report = run.report.as_ref().expect("an accounting report");
    let c = &report["collectors"][0];
    assert_eq!(u(&c["packets_read"]), PACKETS, "{c:#}");
    assert_eq!(u(&c["packets_summarised"]), PACKETS, "{c:#}");
    let queue_full = u(&c["drops"]["queue_full"]);
    assert!(
        queue_full > 0,
        "the stopped processor's queue overflowed: {c:#}"
    );
    let links = c["links"].as_array().expect("the collector's links");
    assert_eq!(links.len(), 2, "{c:#}");
    let sent: u64 = links.iter().map(|l| u(&l["sent"])).sum();
    assert_eq!(
        u(&c["summaries"]),
        sent + queue_full,
        "summaries = Σ sent + queue_full: {c:#}"
    );
    // Every loss is on the stopped processor's link: the running one got its whole share.
    assert_eq!(u(&links[0]["sent"]), share0, "{c:#}");
    assert_eq!(u(&links[1]["sent"]) + queue_full, PACKETS - share0, "{c:#}");
    for l in links {
        assert_eq!(u(&l["sent"]), u(&l["received"]) + u(&l["gaps"]), "{l:#}");
        assert_eq!(u(&l["gaps"]), 0, "what was sent arrived: {l:#}");
    }
    assert_eq!(c["summaries_reconcile"], true, "{c:#}");
    assert_eq!(c["packets_reconcile"], true, "{c:#}");
    assert_eq!(report["reconciled"], true, "{report:#}");
    // What reached the processors is what the conn log holds.
    let packets: u64 = json_lines(&run.conn_log)
        .iter()
        .map(|r| u(&r["orig_pkts"]) + u(&r["resp_pkts"]))
        .sum();
    assert_eq!(packets, sent, "conn log packets vs summaries delivered");

    // The losses climbed past 1% over a heartbeat interval: one drop_rate episode.
    let alerts = json_lines(&run.alerts_log);
    let drop_rate: Vec<&Value> = alerts.iter().filter(|a| a["kind"] == "drop_rate").collect();
    let events: Vec<&str> = drop_rate
        .iter()
        .map(|a| a["event"].as_str().unwrap_or_default())
        .collect();
    // One episode. Its `end` is not asserted: an episode still open when the run ends is not
    // closed in the log (the aggregator's self-alerts have no end-of-stream step, and a
    // collector that read nothing over an interval is skipped, so its rate never falls back):
    // reported as a finding, not enshrined here.
    assert_eq!(events.first(), Some(&"start"), "{}", run.alerts_log);
    assert_eq!(
        events.iter().filter(|e| **e == "start").count(),
        1,
        "{}",
        run.alerts_log
    );
    assert!(
        events.iter().skip(1).all(|e| *e == "end"),
        "{}",
        run.alerts_log
    );
    for a in &drop_rate {
        assert_eq!(a["src"], "collector0", "{a}");
        assert!(u(&a["peak"]) > 10, "peak over 1% (in ‰): {a}");
    }
    assert_eq!(
        alerts.len(),
        drop_rate.len(),
        "nothing else: {}",
        run.alerts_log
    );
    println!(
        "queue_full {queue_full} of {} summaries; links {}; {}",
        u(&c["summaries"]),
        serde_json::to_string(links).unwrap_or_default(),
        run.alerts_log
    );
}

#[test]
fn records_a_processor_cannot_hand_to_its_aggregator_are_counted_as_records_unsent() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let pcap = dir.path().join("flows.pcap");
    // 20,000 one-datagram flows over 10 minutes of packet time: UDP's 1 min inactivity
    // timeout ends most of them while the capture is read.
    udp_capture(&pcap, 20_000, 20_000, 600);
    let ports = free_ports(2);
    let (agg, proc_port) = (endpoint(ports[0]), endpoint(ports[1]));
    let s = |v: &[&str]| -> Vec<String> { v.iter().map(|s| s.to_string()).collect() };
    // The aggregator is away: heartbeats every millisecond fill the processor's queue to it
    // (ZeroMQ's high-water mark, 1000 messages) within a second.
    let mut processor = Proc::spawn(
        "processor",
        &bin("tapflow-processor"),
        &s(&[
            "--plain",
            "--listen",
            &proc_port,
            "--aggregator",
            &agg,
            "--collectors",
            "1",
            "--exit-on-eos",
            "--name",
            "p0",
            "--heartbeat-ms",
            "1",
        ]),
        dir.path(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let mut collector = Proc::spawn(
        "collector",
        &bin("tapflow-collector"),
        &s(&[
            "--plain",
            "--pcap",
            &pcap.display().to_string(),
            "--processor",
            &proc_port,
            "--name",
            "tap",
        ]),
        dir.path(),
    );
    let status = collector
        .wait_until(Instant::now() + Duration::from_secs(30))
        .expect("the collector ends");
    assert_eq!(status.code(), Some(0), "{}", collector.stderr());
    // The processor's end of stream waits for the aggregator, which now starts.
    std::thread::sleep(Duration::from_millis(500));
    let health = dir.path().join("health.jsonl");
    let conn = dir.path().join("conn.jsonl");
    let mut aggregator = Proc::spawn(
        "aggregator",
        &bin("tapflow-aggregator"),
        &s(&[
            "--plain",
            "--listen",
            &agg,
            "--processors",
            "1",
            "--exit-on-eos",
            "--health-log",
            &health.display().to_string(),
            "--conn-log",
            &conn.display().to_string(),
        ]),
        dir.path(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let p = processor.wait_until(deadline).expect("the processor ends");
    assert_eq!(p.code(), Some(0), "{}", processor.stderr());
    let a = aggregator
        .wait_until(deadline)
        .expect("the aggregator ends");
    assert_eq!(a.code(), Some(0), "{}", aggregator.stderr());

    let text = std::fs::read_to_string(&health).expect("reading the health log");
    let report: Value = serde_json::from_str(text.lines().last().unwrap_or_default())
        .expect("parsing the accounting report");
    let row = &report["processors"][0];
    let counters = &row["counters"];
    let unsent = u(&counters["records_unsent"]);
    let sent = u(&counters["records_sent"]);
    assert!(unsent > 0, "records could not be handed over: {row:#}");
    assert_eq!(sent + unsent, u(&counters["records"]), "{row:#}");
    assert_eq!(u(&row["records_handed"]), sent + unsent, "{row:#}");
    assert_eq!(u(&row["records_received"]), sent, "{row:#}");
    assert_eq!(
        u(&row["records_gaps"]),
        unsent,
        "the unsent are the gaps: {row:#}"
    );
    assert_eq!(row["records_reconcile"], true, "{row:#}");
    assert_eq!(report["reconciled"], true, "{report:#}");
    assert_eq!(report["complete"], false, "records are missing: {report:#}");
    let lines = std::fs::read_to_string(&conn)
        .expect("reading the conn log")
        .lines()
        .count() as u64;
    assert_eq!(lines, sent, "the conn log holds what was sent");
    assert!(
        processor
            .stderr()
            .contains("connection records not sent to the aggregator (lost)"),
        "the loss is logged"
    );
    println!("records_unsent {unsent}, records_sent {sent}");
}
