//! A restart from a checkpoint of the write-ahead log rebuilds everything (issue 18): the
//! detector's windows, open episodes and baselines, and InfluxDB's points. An aggregator with
//! a small `--wal-checkpoint-bytes`, writing to a real influxd, runs over a generated capture
//! that raises alerts (the bench mix: a SYN flood and a port scan among ordinary sessions,
//! over an hour of packet time). Killed (SIGKILL) after some checkpoints, once records have
//! been released (so detection is under way), and started again a second later with the same
//! command line, it leaves the conn log byte-identical to the run without the fault, the same
//! alert events, the same detection counters in its report, and InfluxDB holding every point
//! of the run without the fault exactly once: sessions, alerts, traffic, service and latency
//! windows, point for point. `tapflow_health` is left out (wall-clock points of heartbeats,
//! tagged with per-incarnation names: two runs never share them).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::influxd::{Contents, Influxd};
use tapflow_integration_tests::{bin, endpoint, free_ports, read_text, Proc};

const PACKETS: u32 = 400_000;
const FLOWS: u32 = 40_000;
/// Packets per second of capture time: sessions end and are released all along the run.
const RATE: u32 = 100;
const PROCESSORS: usize = 2;
const RUN_TIMEOUT: Duration = Duration::from_secs(240);
const CHECKPOINT_BYTES: u64 = 256 << 10;
/// Left out of the InfluxDB comparison (see the module's comment).
const HEALTH: &str = "tapflow_health";
/// Compared point for point (time, tags, fields).
const FULL: [&str; 5] = [
    "tapflow_conn",
    "tapflow_alert",
    "tapflow_traffic",
    "tapflow_service",
    "tapflow_latency",
];

struct Outcome {
    conn: Vec<u8>,
    alerts: Vec<String>,
    report: Value,
    influx: Contents,
    restarts: usize,
    /// Conn log bytes when the aggregator was killed.
    conn_at_kill: u64,
    /// What the restarted aggregator said as it restarted.
    restart_line: String,
}

fn aggregator_args(dir: &Path, agg: &str, ack: &str, url: &str, db: &str) -> Vec<String> {
    let path = |name: &str| dir.join(name).display().to_string();
    [
        "--listen",
        agg,
        "--processors",
        &PROCESSORS.to_string(),
        "--exit-on-eos",
        "--plain",
        "--conn-log",
        &path("conn.jsonl"),
        "--alerts-log",
        &path("alerts.jsonl"),
        "--health-log",
        &path("health.jsonl"),
        "--state-dir",
        &path("state"),
        "--ack-listen",
        ack,
        "--wal-checkpoint-bytes",
        &CHECKPOINT_BYTES.to_string(),
        "--influx-url",
        url,
        "--influx-db",
        db,
        "--influx-spool-dir",
        &path("spool"),
    ]
    .map(String::from)
    .to_vec()
}

/// The processors and the collector (a fixed name: InfluxDB's `collector` tag) reading `pcap`.
fn others(dir: &Path, pcap: &Path, agg: &str, ack: &str, ports: &[u16]) -> Vec<Proc> {
    let mut procs = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let name = format!("processor{i}");
        let args: Vec<String> = [
            "--listen",
            &endpoint(*port),
            "--aggregator",
            agg,
            "--collectors",
            "1",
            "--exit-on-eos",
            "--plain",
            "--name",
            &name,
            "--aggregator-acks",
            ack,
            "--resend-after-ms",
            "1000",
        ]
        .map(String::from)
        .to_vec();
        procs.push(Proc::spawn(&name, &bin("tapflow-processor"), &args, dir));
    }
    let mut args = vec![
        "--pcap".to_string(),
        pcap.display().to_string(),
        "--plain".into(),
        "--name".into(),
        "tap0".into(),
    ];
    for port in ports {
        args.extend(["--processor".to_string(), endpoint(*port)]);
    }
    procs.push(Proc::spawn(
        "collector",
        &bin("tapflow-collector"),
        &args,
        dir,
    ));
    procs
}

fn generate(dir: &Path) -> PathBuf {
    let out = dir.join("alerts.pcap");
    let ok = std::process::Command::new(bin("tapflow-gen"))
        .args(["--packets", &PACKETS.to_string()])
        .args(["--flows", &FLOWS.to_string()])
        .args(["--seed", "8", "--rate", &RATE.to_string(), "--out"])
        .arg(&out)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "tapflow-gen failed");
    out
}

fn conn_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("conn.jsonl")).map_or(0, |m| m.len())
}

/// One run in a directory of its own under `root`, writing to database `name` of `influxd`;
/// `kill_after`: SIGKILL once the aggregator has taken that many checkpoints and written some
/// of its conn log, restarted a second later.
fn run(
    root: &Path,
    name: &str,
    pcap: &Path,
    influxd: &Influxd,
    kill_after: Option<usize>,
) -> Outcome {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("a run directory");
    let db = name.replace('-', "_");
    let ports = free_ports(PROCESSORS + 2);
    let (agg, ack) = (endpoint(ports[0]), endpoint(ports[1]));
    let args = aggregator_args(&dir, &agg, &ack, &influxd.url(), &db);
    let mut aggregator = Proc::spawn("aggregator-0", &bin("tapflow-aggregator"), &args, &dir);
    let mut rest = others(&dir, pcap, &agg, &ack, &ports[2..]);
    let deadline = Instant::now() + RUN_TIMEOUT;
    let (mut pending, mut restarts, mut conn_at_kill) = (kill_after, 0, 0);
    // The log's size when the checkpoints wanted were first seen: the kill waits for half an
    // interval more of messages (so a restart replays some, not none).
    let mut base: Option<u64> = None;
    let wal = dir.join("state").join("aggregator.wal");
    while let Some(after) = pending {
        assert!(
            aggregator.child.try_wait().ok().flatten().is_none(),
            "{name}: the run ended before {after} checkpoints: {}",
            aggregator.stderr()
        );
        assert!(Instant::now() < deadline, "{name}: the run did not end");
        let checkpoints = aggregator
            .stderr()
            .matches("write-ahead log checkpoint")
            .count();
        let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
        if checkpoints >= after && base.is_none() {
            base = Some(size);
        }
        let midway = base.is_some_and(|b| size >= b + CHECKPOINT_BYTES / 2) || checkpoints > after;
        if checkpoints >= after && midway && conn_bytes(&dir) > 0 {
            tapflow_integration_tests::faults::signal(aggregator.child.id(), "KILL");
            conn_at_kill = conn_bytes(&dir);
            let status = aggregator.wait_until(Instant::now() + Duration::from_secs(60));
            eprintln!("{name}: SIGKILL after {checkpoints} checkpoints, {conn_at_kill} conn bytes: {status:?}");
            pending = None;
            std::thread::sleep(Duration::from_secs(1));
            restarts += 1;
            aggregator = Proc::spawn("aggregator-1", &bin("tapflow-aggregator"), &args, &dir);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for p in rest.iter_mut().chain(std::iter::once(&mut aggregator)) {
        let status = p.wait_until(deadline);
        assert!(
            status.is_some_and(|s| s.success()),
            "{name}: {} did not exit 0: {status:?}\n{}",
            p.name,
            p.stderr()
        );
    }
    let restart_line = aggregator
        .stderr()
        .lines()
        .find(|l| l.contains("restarting from the write-ahead log"))
        .unwrap_or_default()
        .to_owned();
    let report = read_text(&dir.join("health.jsonl"))
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["kind"] == "accounting")
        .unwrap_or_default();
    let mut alerts: Vec<String> = read_text(&dir.join("alerts.jsonl"))
        .lines()
        .map(String::from)
        .collect();
    alerts.sort();
    Outcome {
        conn: std::fs::read(dir.join("conn.jsonl")).unwrap_or_default(),
        alerts,
        report,
        influx: contents(influxd, &db),
        restarts,
        conn_at_kill,
        restart_line,
    }
}

/// What database `db` holds: every series' counts, and the points of [`FULL`], read a page
/// at a time (one answer with every session is past what the HTTP client reads at once).
fn contents(influxd: &Influxd, db: &str) -> Contents {
    const PAGE: usize = 10_000;
    let mut out = influxd.contents(db, &[HEALTH], &[]);
    for m in FULL {
        let mut points = Vec::new();
        for page in 0.. {
            let q = format!("SELECT * FROM \"{m}\" LIMIT {PAGE} OFFSET {}", page * PAGE);
            let v = influxd.query(db, &q);
            assert!(v["results"][0]["error"].is_null(), "{q}: {v}");
            let before = points.len();
            for s in v["results"][0]["series"].as_array().into_iter().flatten() {
                let cols = s["columns"].as_array().cloned().unwrap_or_default();
                for row in s["values"].as_array().into_iter().flatten() {
                    let fields: std::collections::BTreeMap<String, Value> = cols
                        .iter()
                        .filter_map(|c| c.as_str().map(String::from))
                        .zip(row.as_array().cloned().unwrap_or_default())
                        .filter(|(_, v)| !v.is_null())
                        .collect();
                    points.push(serde_json::to_string(&fields).unwrap_or_default());
                }
            }
            if points.len() - before < PAGE {
                break;
            }
        }
        points.sort();
        out.points.insert(m.to_owned(), points);
    }
    out
}

/// InfluxDB after the faulty run holds the clean run's points, each once.
fn check_influx(name: &str, c: &Contents, f: &Contents) {
    for (m, series) in &c.counts {
        assert_eq!(
            f.counts.get(m),
            Some(series),
            "{name}: {m}'s series and counts differ from the clean run's"
        );
    }
    let extra: Vec<&String> = f
        .counts
        .keys()
        .filter(|m| !c.counts.contains_key(*m))
        .collect();
    assert!(
        extra.is_empty(),
        "{name}: measurements the clean run lacks: {extra:?}"
    );
    for m in FULL {
        let (cp, fp) = (&c.points[m], &f.points[m]);
        let missing = cp.iter().filter(|p| fp.binary_search(p).is_err()).count();
        let more = fp.iter().filter(|p| cp.binary_search(p).is_err()).count();
        assert!(
            missing == 0 && more == 0 && cp.len() == fp.len(),
            "{name}: {m}: {missing} points of the clean run missing, {more} not in it ({} against {})",
            fp.len(),
            cp.len()
        );
    }
}

fn check_same(name: &str, clean: &Outcome, faulty: &Outcome) {
    let d = &faulty.report["durability"];
    eprintln!(
        "{name}: {} conn bytes, {} alert events; durability: {d}; {}",
        faulty.conn.len(),
        faulty.alerts.len(),
        faulty.restart_line
    );
    assert_eq!(faulty.restarts, 1, "{name}");
    assert!(
        faulty.conn_at_kill > 0,
        "{name}: killed before any record was released"
    );
    assert!(
        faulty.restart_line.contains("checkpoint=true"),
        "{name}: the restart was not from a checkpoint: {:?}",
        faulty.restart_line
    );
    assert_eq!(faulty.report["complete"], true, "{name}: {}", faulty.report);
    assert_eq!(
        faulty.report["reconciled"], true,
        "{name}: {}",
        faulty.report
    );
    assert!(
        faulty.conn == clean.conn,
        "{name}: the conn log differs from the clean run's ({} bytes against {})",
        faulty.conn.len(),
        clean.conn.len()
    );
    assert_eq!(
        faulty.alerts, clean.alerts,
        "{name}: the alert events differ"
    );
    assert_eq!(faulty.report["conns"], clean.report["conns"], "{name}");
    assert_eq!(
        faulty.report["detection"], clean.report["detection"],
        "{name}"
    );
    check_influx(name, &clean.influx, &faulty.influx);
}

#[test]
fn a_restart_from_a_checkpoint_rebuilds_detection_and_influxdb() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let pcap = generate(root.path());
    let influxd = Influxd::start().expect("influxd (deploy/install-deps.sh installs it)");
    let clean = run(root.path(), "clean", &pcap, &influxd, None);
    let d = &clean.report["durability"];
    assert!(
        d["checkpoints"].as_u64() >= Some(4),
        "checkpoints with InfluxDB: {d}"
    );
    assert_eq!(clean.report["complete"], true, "{}", clean.report);
    for kind in ["syn_flood", "port_scan"] {
        assert!(
            clean
                .alerts
                .iter()
                .any(|a| a.contains(&format!("\"kind\":\"{kind}\""))),
            "the capture raises {kind}"
        );
    }
    for m in FULL {
        assert!(
            !clean.influx.points[m].is_empty(),
            "the clean run wrote {m}"
        );
    }
    let sessions = clean.conn.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(clean.influx.point_count("tapflow_conn"), sessions);
    eprintln!(
        "clean: {sessions} sessions, {} alert events, {} points; durability: {d}",
        clean.alerts.len(),
        clean
            .influx
            .counts
            .keys()
            .map(|m| clean.influx.point_count(m))
            .sum::<u64>()
    );
    for (name, after) in [("killed-after-2", 2), ("killed-after-5", 5)] {
        let faulty = run(root.path(), name, &pcap, &influxd, Some(after));
        check_same(name, &clean, &faulty);
    }
}
