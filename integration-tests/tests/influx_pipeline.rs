//! The whole pipeline writing to a real InfluxDB (Debian's influxd 1.6.7, started on a temporary
//! directory and free loopback ports): every session and alert event is a point, exactly once,
//! also when InfluxDB is down while the pipeline runs.

use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::influxd::Influxd;
use tapflow_integration_tests::{shared_pcaps, start_pipeline_opts, CollectorSpec, PipelineRun};

const DB: &str = "tapflow";

fn run_with_influx(
    url: String,
    pcap: &std::path::Path,
    spool: &std::path::Path,
    during: impl FnOnce(),
) -> PipelineRun {
    let spool = spool.display().to_string();
    let agg = [
        "--influx-url",
        &url,
        "--influx-db",
        DB,
        "--influx-spool-dir",
        &spool,
        "--influx-finish-s",
        "90",
    ];
    let running = start_pipeline_opts(&[CollectorSpec::pcap(pcap, 2)], 2, &[], &agg);
    during();
    running.wait(Duration::from_secs(180))
}

fn written(run: &PipelineRun, measurement: &str) -> u64 {
    let report = run.accounting();
    report["influx"]["points_written_by_measurement"][measurement]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn sessions_and_alerts_are_points_exactly_once() {
    let Some(pcaps) = shared_pcaps() else { return };
    let Some(influx) = Influxd::start() else {
        return;
    };
    let spool = tempfile::tempdir().expect("create the spool dir");
    let (mut sessions, mut alerts, mut packets) = (0, 0, 0);
    // The spoofed SYN flood: 37,669 sessions, thousands starting in the same microsecond.
    for name in [
        "zeek-ssh.pcap",
        "evilfingers-nmap-fin-scan.pcap",
        "stopddos-pkt-tcp-synflood-spoofed.pcap",
        "stopddos-amp-dns-rrsig-fragmented.pcap",
    ] {
        let run = run_with_influx(influx.url(), &pcaps.join(name), spool.path(), || {});
        assert!(run.all_exited(), "{name}: {}", run.aggregator.1);
        let report = run.accounting();
        assert_eq!(
            report["influx"]["points_rejected"].as_u64(),
            Some(0),
            "{name}: {report:#}"
        );
        assert_eq!(
            report["influx"]["points_in_spool"].as_u64(),
            Some(0),
            "{name}: {report:#}"
        );
        let lines = run.conn_log.lines().count() as u64;
        let events = run.alerts_log.lines().count() as u64;
        assert_eq!(
            written(&run, "tapflow_conn"),
            lines,
            "{name}: session points written vs conn log lines"
        );
        assert_eq!(
            written(&run, "tapflow_alert"),
            events,
            "{name}: alert points written vs alert events"
        );
        sessions += lines;
        alerts += events;
        packets += report["collectors"][0]["packets_summarised"]
            .as_u64()
            .unwrap_or(0);
        // Per-window traffic, summed over the processors' partials: every packet once.
        assert_eq!(
            influx.scalar(DB, "SELECT sum(packets) FROM tapflow_traffic"),
            packets,
            "{name}"
        );
        // No collector went silent: every traffic window is complete.
        assert_eq!(
            influx.scalar(
                DB,
                "SELECT count(packets) FROM tapflow_traffic WHERE complete = false"
            ),
            0,
            "{name}"
        );
        assert!(
            influx.scalar(
                DB,
                "SELECT count(packets) FROM tapflow_traffic WHERE complete = true"
            ) > 0,
            "{name}: traffic windows without their complete field"
        );
        // What InfluxDB holds, counted with InfluxQL: every point there, none twice.
        assert_eq!(
            influx.scalar(DB, "SELECT count(uid) FROM tapflow_conn"),
            sessions,
            "{name}"
        );
        assert_eq!(
            influx.scalar(DB, "SELECT count(src) FROM tapflow_alert"),
            alerts,
            "{name}"
        );
    }
    assert!(
        sessions > 37_669 && alerts >= 6,
        "{sessions} sessions, {alerts} alert events"
    );
    // IPs, ports and uids are fields, never tags.
    let tags: Value = influx.query(DB, "SHOW TAG KEYS");
    let text = tags.to_string();
    for forbidden in ["orig_h", "resp_h", "orig_p", "uid", "\"src\"", "\"dst\""] {
        assert!(!text.contains(forbidden), "{forbidden} is a tag: {text}");
    }
    println!("{sessions} session points and {alerts} alert points in InfluxDB, each once");
}

#[test]
fn influxdb_down_during_the_run_loses_nothing() {
    let Some(pcaps) = shared_pcaps() else { return };
    let Some(mut influx) = Influxd::start() else {
        return;
    };
    let spool = tempfile::tempdir().expect("create the spool dir");
    influx.kill();
    let url = influx.url();
    let run = run_with_influx(
        url,
        &pcaps.join("evilfingers-nmap-connect-scan.pcap"),
        spool.path(),
        || {
            // Down while the pipeline runs and ends; back a few seconds later.
            std::thread::sleep(Duration::from_secs(4));
            influx.restart();
        },
    );
    assert!(run.all_exited(), "{}", run.aggregator.1);
    let report = run.accounting();
    let stats = &report["influx"];
    assert!(
        stats["retries"].as_u64() > Some(0) || stats["points_spooled"].as_u64() > Some(0),
        "{stats:#}"
    );
    assert_eq!(stats["points_in_spool"].as_u64(), Some(0), "{stats:#}");
    let lines = run.conn_log.lines().count() as u64;
    let events = run.alerts_log.lines().count() as u64;
    assert_eq!(written(&run, "tapflow_conn"), lines);
    assert_eq!(
        influx.scalar(DB, "SELECT count(uid) FROM tapflow_conn"),
        lines,
        "every session once"
    );
    assert_eq!(
        influx.scalar(DB, "SELECT count(src) FROM tapflow_alert"),
        events,
        "every alert event once"
    );
    println!("outage: {lines} sessions and {events} alert events written once; {stats}");
}
