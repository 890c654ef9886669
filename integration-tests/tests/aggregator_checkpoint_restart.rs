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

use std::path::Path;
use std::time::{Duration, Instant};

use tapflow_integration_tests::durable::{
    check_exactly_once, check_same_counts, check_same_outputs, conn_bytes, contents_paged,
    generate_at, wait_all_exit0, Layout, Outputs,
};
use tapflow_integration_tests::influxd::{Contents, Influxd};

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
    /// The conn log, the alert events and the report.
    out: Outputs,
    influx: Contents,
    restarts: usize,
    /// Conn log bytes when the aggregator was killed.
    conn_at_kill: u64,
    /// What the restarted aggregator said as it restarted.
    restart_line: String,
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
    let l = Layout::new(&dir, PROCESSORS);
    let mut extra = vec![
        "--wal-checkpoint-bytes".to_string(),
        CHECKPOINT_BYTES.to_string(),
    ];
    extra.extend(l.influx_args(&influxd.url(), &db));
    let state = dir.join("state");
    let args = l.aggregator_args(Some(&state), &extra);
    let mut aggregator = l.spawn_aggregator("aggregator-0", &args);
    let mut rest = l.spawn_processors(Some(1000));
    // A fixed name: InfluxDB's `collector` tag.
    rest.push(l.spawn_collector(pcap, Some("tap0")));
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
            aggregator = l.spawn_aggregator("aggregator-1", &args);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let label = format!("{name}: ");
    wait_all_exit0(
        &label,
        rest.iter_mut().chain(std::iter::once(&mut aggregator)),
        deadline,
    );
    let restart_line = aggregator
        .stderr()
        .lines()
        .find(|l| l.contains("restarting from the write-ahead log"))
        .unwrap_or_default()
        .to_owned();
    let out = Outputs::read(&dir);
    Outcome {
        out,
        influx: contents_paged(influxd, &db, &[HEALTH], &FULL),
        restarts,
        conn_at_kill,
        restart_line,
    }
}

fn check_same(name: &str, clean: &Outcome, faulty: &Outcome) {
    let d = &faulty.out.report["durability"];
    eprintln!(
        "{name}: {} conn bytes, {} alert events; durability: {d}; {}",
        faulty.out.conn.len(),
        faulty.out.alerts.len(),
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
    check_same_outputs(name, &clean.out, &faulty.out);
    check_same_counts(name, &clean.out, &faulty.out);
    check_exactly_once(name, &clean.influx, &faulty.influx, &FULL);
}

#[test]
fn a_restart_from_a_checkpoint_rebuilds_detection_and_influxdb() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let pcap = generate_at(root.path(), PACKETS, FLOWS, RATE);
    let influxd = Influxd::start().expect("influxd (deploy/install-deps.sh installs it)");
    let clean = run(root.path(), "clean", &pcap, &influxd, None);
    let d = &clean.out.report["durability"];
    assert!(
        d["checkpoints"].as_u64() >= Some(4),
        "checkpoints with InfluxDB: {d}"
    );
    assert_eq!(clean.out.report["complete"], true, "{}", clean.out.report);
    for kind in ["syn_flood", "port_scan"] {
        assert!(
            clean
                .out
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
    let sessions = clean.out.conn.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(clean.influx.point_count("tapflow_conn"), sessions);
    eprintln!(
        "clean: {sessions} sessions, {} alert events, {} points; durability: {d}",
        clean.out.alerts.len(),
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
