//! https to a real InfluxDB (Debian's influxd 1.6.7 with `https-enabled`, a self-signed
//! certificate for 127.0.0.1 made by the openssl CLI): the pipeline writes every point when
//! given the certificate as `--influx-ca-file`; without it, with a certificate for another
//! name, or against a plain-http server, the TLS failure is counted and named, the points wait
//! in the spool, and the aggregator exits cleanly within `--influx-finish-s`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_aggregator::influx::{InfluxApi, InfluxConfig, InfluxWriter};
use tapflow_integration_tests::influxd::{self_signed, Influxd};
use tapflow_integration_tests::{
    free_port, shared_pcaps, start_pipeline_opts, CollectorSpec, PipelineRun,
};

const DB: &str = "tapflow";
const PCAP: &str = "zeek-ssh.pcap";
/// `--influx-finish-s` of the runs that cannot write.
const FINISH_S: u64 = 2;

/// Runs the pipeline over `pcap` writing to `url`; returns the run and its wall time.
fn run(
    pcap: &Path,
    url: &str,
    ca_file: Option<&Path>,
    spool: &Path,
    finish_s: u64,
) -> (PipelineRun, Duration) {
    let (spool, finish) = (spool.display().to_string(), finish_s.to_string());
    let ca = ca_file.map(|p| p.display().to_string());
    let mut agg = vec![
        "--influx-url",
        url,
        "--influx-db",
        DB,
        "--influx-spool-dir",
        &spool,
        "--influx-finish-s",
        &finish,
    ];
    if let Some(ca) = &ca {
        agg.extend(["--influx-ca-file", ca]);
    }
    let t0 = Instant::now();
    let running = start_pipeline_opts(&[CollectorSpec::pcap(pcap, 2)], 2, &[], &agg);
    let run = running.wait(Duration::from_secs(120));
    (run, t0.elapsed())
}

fn influx_report(run: &PipelineRun) -> &Value {
    let report = run.accounting();
    &report["influx"]
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// A certificate for `san` in a new temporary directory (kept alive by the caller).
fn cert(san: &str) -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let (cert, key) = self_signed(dir.path(), san)?;
    Some((dir, cert, key))
}

/// The aggregator could not write: it still exits 0 within its finish deadline, every point
/// waits in the spool, the failure is counted as `tls` and its log line says `says`.
fn assert_refused(run: &PipelineRun, took: Duration, says: &[&str]) -> u64 {
    let (code, log) = &run.aggregator;
    assert_eq!(*code, Some(0), "aggregator exit: {log}");
    assert!(run.all_exited(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let s = influx_report(run);
    assert_eq!(n(&s["points_written"]), 0, "{s:#}");
    assert!(n(&s["points_sent"]) > 0, "{s:#}");
    assert_eq!(n(&s["points_in_spool"]), n(&s["points_sent"]), "{s:#}");
    assert!(n(&s["http_errors"]["tls"]) > 0, "{s:#}");
    assert!(n(&s["retries"]) > 0, "{s:#}");
    let line = log.lines().find(|l| l.contains("TLS with InfluxDB failed"));
    assert!(line.is_some(), "no TLS error line in\n{log}");
    let line = line.expect("the TLS error line");
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        says.iter().any(|w| line.contains(w)),
        "expected one of {says:?} in {line}"
    );
    // The pipeline over this capture takes a few seconds; the writer gives up at its deadline.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    println!(
        "refused in {took:.1?}: {} points in the spool, http_errors {}, log: {}",
        n(&s["points_in_spool"]),
        s["http_errors"],
        line.trim()
    );
    n(&s["points_in_spool"])
}

#[test]
fn https_with_the_ca_file_writes_every_point() {
    let Some(pcaps) = shared_pcaps() else { return };
    let Some((_certs, cert, key)) = cert("IP:127.0.0.1,DNS:localhost") else {
        return;
    };
    let Some(influx) = Influxd::start_https(&cert, &key) else {
        return;
    };
    assert!(influx.url().starts_with("https://"), "{}", influx.url());
    let spool = tempfile::tempdir().expect("create the spool dir");
    let (run, took) = run(
        &pcaps.join(PCAP),
        &influx.url(),
        Some(&cert),
        spool.path(),
        60,
    );
    let (code, log) = &run.aggregator;
    assert_eq!(*code, Some(0), "{log}");
    assert!(run.all_exited(), "{log}");
    let s = influx_report(&run);
    assert_eq!(n(&s["points_written"]), n(&s["points_sent"]), "{s:#}");
    assert_eq!(
        (n(&s["points_in_spool"]), n(&s["points_rejected"])),
        (0, 0),
        "{s:#}"
    );
    assert!(s["http_errors"].get("tls").is_none(), "{s:#}");
    let sessions = run.conn_log.lines().count() as u64;
    assert!(sessions > 0);
    assert_eq!(
        n(&s["points_written_by_measurement"]["tapflow_conn"]),
        sessions
    );
    // Counted back over https, trusting the same certificate.
    let stored = influx.scalar(DB, "SELECT count(uid) FROM tapflow_conn");
    assert_eq!(stored, sessions);
    println!(
        "https: {} points written ({sessions} sessions, {stored} in InfluxDB by InfluxQL over \
         https) in {took:.1?}; {} requests",
        n(&s["points_written"]),
        n(&s["requests_ok"])
    );
}

#[test]
fn an_untrusted_certificate_is_refused_and_the_spool_keeps_the_points() {
    let Some(pcaps) = shared_pcaps() else { return };
    let Some((_certs, cert, key)) = cert("IP:127.0.0.1,DNS:localhost") else {
        return;
    };
    let Some(influx) = Influxd::start_https(&cert, &key) else {
        return;
    };
    let spool = tempfile::tempdir().expect("create the spool dir");
    let (run, took) = run(
        &pcaps.join(PCAP),
        &influx.url(),
        None,
        spool.path(),
        FINISH_S,
    );
    // UnknownIssuer with the system's roots; a machine without any says so instead.
    let spooled = assert_refused(&run, took, &["UnknownIssuer", "No CA certificates"]);
    assert!(run.aggregator.1.contains("--influx-ca-file"));
    // Nothing reached it: not even CREATE DATABASE.
    let dbs = influx.query(DB, "SHOW DATABASES").to_string();
    assert!(!dbs.contains("\"tapflow\""), "{dbs}");
    // The next start that trusts the certificate writes what waited in the spool.
    let mut cfg = InfluxConfig::new(
        influx.url(),
        InfluxApi::V1 {
            db: DB.into(),
            rp: None,
            user: None,
            password: None,
        },
        spool.path(),
    );
    cfg.ca_file = Some(cert.clone());
    let w = InfluxWriter::start(cfg).expect("start the InfluxDB writer");
    let s = w.finish(Duration::from_secs(60));
    assert_eq!(
        (s.points_recovered, s.points_written, s.points_in_spool),
        (spooled, spooled, 0),
        "{s:#?}"
    );
    let sessions = run.conn_log.lines().count() as u64;
    assert_eq!(
        influx.scalar(DB, "SELECT count(uid) FROM tapflow_conn"),
        sessions
    );
    println!("then with the CA file: {spooled} spooled points written, {sessions} sessions");
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let Some(pcaps) = shared_pcaps() else { return };
    // For 127.0.0.1 only (the helper's own requests go there); the aggregator asks for
    // localhost, a name the certificate does not hold.
    let Some((_certs, cert, key)) = cert("IP:127.0.0.1") else {
        return;
    };
    let Some(influx) = Influxd::start_https(&cert, &key) else {
        return;
    };
    let spool = tempfile::tempdir().expect("create the spool dir");
    let url = format!("https://localhost:{}", influx.http_port);
    let (run, took) = run(&pcaps.join(PCAP), &url, Some(&cert), spool.path(), FINISH_S);
    assert_refused(&run, took, &["NotValidForName", "not valid for name"]);
    assert!(run.aggregator.1.contains("does not name the host"));
}

#[test]
fn https_to_a_plain_http_influxdb_is_a_clear_error() {
    let Some(pcaps) = shared_pcaps() else { return };
    let Some(influx) = Influxd::start() else {
        return;
    };
    let spool = tempfile::tempdir().expect("create the spool dir");
    let url = format!("https://127.0.0.1:{}", influx.http_port);
    let (run, took) = run(&pcaps.join(PCAP), &url, None, spool.path(), FINISH_S);
    assert_refused(&run, took, &["does not speak TLS"]);
    // Nothing reached it: not even CREATE DATABASE.
    let dbs = influx.query(DB, "SHOW DATABASES").to_string();
    assert!(!dbs.contains("\"tapflow\""), "{dbs}");
}

/// `openssl req -x509` without `basicConstraints=CA:FALSE` makes a CA certificate, which
/// rustls refuses as a server's own even when it is the CA file: the error says so. The
/// server here is `openssl s_server` (influxd's readiness check would refuse it too).
#[test]
fn a_ca_certificate_as_the_servers_own_is_named() {
    let Some(pcaps) = shared_pcaps() else { return };
    let dir = tempfile::tempdir().expect("create a temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=tapflow test CA as server", "-addext"])
        .arg("subjectAltName=IP:127.0.0.1")
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIP: cannot run openssl req (Debian package `openssl`)");
        return;
    }
    let port = free_port();
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let spool = tempfile::tempdir().expect("create the spool dir");
    let url = format!("https://127.0.0.1:{port}");
    let (run, took) = run(&pcaps.join(PCAP), &url, Some(&cert), spool.path(), FINISH_S);
    let _ = server.kill();
    let _ = server.wait();
    assert_refused(&run, took, &["CaUsedAsEndEntity"]);
    assert!(run.aggregator.1.contains("CA:FALSE"));
}
