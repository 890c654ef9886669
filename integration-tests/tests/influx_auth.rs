//! InfluxDB v1 with authentication (a real influxd 1.x with `auth-enabled = true`): with the
//! right user and password every point is written; with a wrong password the aggregator does
//! not crash, counts the 401s, logs the refusal once, keeps the points in its spool, and the
//! next run with the right password writes them.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::craft::{tcp, Ipv4, PcapWriter};
use tapflow_integration_tests::influxd::Influxd;
use tapflow_integration_tests::{start_pipeline_opts, CollectorSpec, PipelineRun};

const USER: &str = "tapadmin";
const PASSWORD: &str = "c0rrect-h0rse";

/// 25 unanswered SYNs from one source to port 22 of 25 hosts: 25 sessions and one
/// address_scan episode (2 alert events).
fn scan(path: &Path) {
    let mut w = PcapWriter::create(path);
    for i in 0..25u8 {
        let syn = Ipv4::tcp(
            ([192, 168, 7, 7], 40_000 + u16::from(i)),
            ([10, 1, 0, 1 + i], 22),
            tcp::SYN,
            1000,
            0,
            &[],
        );
        w.packet(1_700_000_000_000_000 + u64::from(i) * 100_000, &syn);
    }
    w.finish();
}

fn run(influx: &Influxd, pcap: &Path, db: &str, password_file: &Path, spool: &Path) -> PipelineRun {
    let (url, pw, spool) = (
        influx.url(),
        password_file.display().to_string(),
        spool.display().to_string(),
    );
    let agg = [
        "--influx-url",
        &url,
        "--influx-db",
        db,
        "--influx-user",
        USER,
        "--influx-password-file",
        &pw,
        "--influx-spool-dir",
        &spool,
        "--influx-finish-s",
        "3",
    ];
    let run = start_pipeline_opts(&[CollectorSpec::pcap(pcap, 1)], 1, &[], &agg)
        .wait(Duration::from_secs(60));
    assert!(
        run.all_exited(),
        "{:?}\n{:?}\n{:?}",
        run.collectors,
        run.processors,
        run.aggregator
    );
    assert_eq!(run.aggregator.0, Some(0), "{}", run.aggregator.1);
    run
}

fn influx_stats(run: &PipelineRun) -> Value {
    run.report.as_ref().expect("an accounting report")["influx"].clone()
}

fn count(influx: &Influxd, db: &str, q: &str) -> Value {
    influx.query_as(Some((USER, PASSWORD)), db, q)["results"][0]["series"][0]["values"][0][1]
        .clone()
}

#[test]
fn v1_user_and_password_write_every_point_and_a_wrong_password_is_counted_not_fatal() {
    let Some(mut influx) = Influxd::start() else {
        return;
    };
    influx.enable_auth(USER, PASSWORD);
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let pcap = dir.path().join("scan.pcap");
    scan(&pcap);
    // Authentication is on: without credentials influxd refuses.
    let anonymous = influx.query_as(None, "", "SHOW DATABASES");
    assert!(anonymous["error"].is_string(), "{anonymous}");

    // The right password: every point written.
    let good = dir.path().join("good.password");
    std::fs::write(&good, format!("{PASSWORD}\n")).expect("writing the password file");
    let spool = dir.path().join("spool-good");
    let r = run(&influx, &pcap, "authdb", &good, &spool);
    let stats = influx_stats(&r);
    assert_eq!(
        stats["points_written_by_measurement"]["tapflow_conn"],
        Value::from(25),
        "{stats:#}"
    );
    assert_eq!(
        stats["points_written_by_measurement"]["tapflow_alert"],
        Value::from(2),
        "{stats:#}"
    );
    assert_eq!(stats["points_in_spool"], Value::from(0), "{stats:#}");
    assert_eq!(stats["http_errors"], serde_json::json!({}), "{stats:#}");
    assert_eq!(
        count(&influx, "authdb", "SELECT count(uid) FROM tapflow_conn"),
        Value::from(25)
    );
    assert_eq!(
        count(&influx, "authdb", "SELECT count(src) FROM tapflow_alert"),
        Value::from(2)
    );

    // A wrong password: 401s counted and retried, the points kept in the spool, exit 0.
    let bad = dir.path().join("bad.password");
    std::fs::write(&bad, "not-the-password").expect("writing the password file");
    let spool = dir.path().join("spool-bad");
    let r = run(&influx, &pcap, "baddb", &bad, &spool);
    let stats = influx_stats(&r);
    assert_eq!(stats["points_written"], Value::from(0), "{stats:#}");
    let refused = stats["http_errors"]["401"].as_u64().unwrap_or_default();
    assert!(refused > 0, "{stats:#}");
    assert!(stats["retries"].as_u64() > Some(0), "retried: {stats:#}");
    let sent = stats["points_sent"].as_u64().unwrap_or_default();
    assert!(
        sent >= 27,
        "25 sessions, 2 alert events and more: {stats:#}"
    );
    assert_eq!(
        stats["points_in_spool"].as_u64(),
        Some(sent),
        "nothing lost silently: {stats:#}"
    );
    let log = &r.aggregator.1;
    assert_eq!(
        log.matches("InfluxDB refused the credentials").count(),
        1,
        "logged once per outage: {log}"
    );
    assert!(
        !log.contains("not-the-password"),
        "the password is never logged"
    );
    let dbs = influx
        .query_as(Some((USER, PASSWORD)), "", "SHOW DATABASES")
        .to_string();
    assert!(!dbs.contains("baddb"), "created without credentials: {dbs}");

    // The next run with the right password writes what the spool held first.
    let r = run(&influx, &pcap, "baddb", &good, &spool);
    let stats = influx_stats(&r);
    assert_eq!(stats["points_recovered"].as_u64(), Some(sent), "{stats:#}");
    assert_eq!(stats["points_in_spool"], Value::from(0), "{stats:#}");
    assert_eq!(
        stats["points_written_by_measurement"]["tapflow_conn"],
        Value::from(50),
        "the spooled run's 25 sessions and this run's: {stats:#}"
    );
    // The same capture twice gives the same points (same uids, same times): InfluxDB keeps one.
    assert_eq!(
        count(&influx, "baddb", "SELECT count(uid) FROM tapflow_conn"),
        Value::from(25)
    );
}
