//! The write-ahead log trimmed behind checkpoints (issue 18): with a small
//! `--wal-checkpoint-bytes`, an aggregator replaces its log by a checkpoint several times during
//! a run over a generated capture, so the log stays far below what the same run without
//! checkpoints reaches. Killed (SIGKILL) after checkpoints and started again a second later
//! with the same command line, it restores the checkpoint and replays what followed: the conn
//! log is byte-identical to the run without the fault, the alerts the same, the report
//! complete. The same when the checkpoint is found damaged at the restart (a byte of it
//! flipped while the aggregator was down): it falls back to the previous generation.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tapflow_integration_tests::durable::{
    check_same_counts, check_same_outputs, conn_bytes, generate_at, wait_all_exit0, Layout, Outputs,
};
use tapflow_integration_tests::Proc;

const PACKETS: u32 = 400_000;
const FLOWS: u32 = 40_000;
/// Packets per second of capture time: slow enough (4,000 s) that sessions end and are released
/// all along the run, not mostly at its end: what is held stays small beside what is logged,
/// as in a live run.
const RATE: u32 = 100;
const PROCESSORS: usize = 2;
const RUN_TIMEOUT: Duration = Duration::from_secs(240);
/// The checkpoint interval of the trimmed runs, bytes logged.
const CHECKPOINT_BYTES: u64 = 256 << 10;

/// What happens to the aggregator once it has taken this many checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    /// SIGKILL after this many checkpoints, restarted a second later.
    Kill(usize),
    /// The same, the checkpoint frame's body damaged before the restart.
    KillAndDamage(usize),
}

struct Outcome {
    /// The conn log, the alert events and the report.
    out: Outputs,
    /// The largest the log was seen, bytes: before the first processor's end-of-stream (the
    /// run's steady state, as a live run's), and over the whole run (the end-of-stream flush
    /// hands over every open session at once: the state is then the size of the log).
    wal_live: u64,
    wal_max: u64,
    restarts: usize,
    /// Conn log bytes when the aggregator was killed.
    conn_at_kill: u64,
    /// The largest checkpoint the (last) aggregator took, bytes (its log line's `after`).
    state_max: u64,
}

fn wal_path(dir: &Path) -> PathBuf {
    dir.join("state").join("aggregator.wal")
}

fn checkpoints_said(p: &Proc) -> usize {
    p.stderr().matches("write-ahead log checkpoint").count()
}

/// One run in `dir` under `root`, the aggregator faulted as `fault` says; the log's size
/// watched throughout.
fn run(root: &Path, name: &str, pcap: &Path, checkpoint_bytes: u64, fault: Fault) -> Outcome {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("a run directory");
    let l = Layout::new(&dir, PROCESSORS);
    let extra = [
        "--wal-checkpoint-bytes".to_string(),
        checkpoint_bytes.to_string(),
    ];
    let args = l.aggregator_args(Some(&dir.join("state")), &extra);
    let mut aggregator = l.spawn_aggregator("aggregator-0", &args);
    let mut rest = l.spawn_processors(Some(1000));
    rest.push(l.spawn_collector(pcap, None));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let (mut wal_max, mut wal_live) = (0, 0);
    let mut ended = false;
    let mut restarts = 0;
    let mut conn_at_kill = 0;
    let mut pending = fault;
    loop {
        let size = std::fs::metadata(wal_path(&dir)).map_or(0, |m| m.len());
        wal_max = wal_max.max(size);
        ended = ended || aggregator.stderr().contains("processor ended");
        if !ended {
            wal_live = wal_live.max(size);
        }
        if aggregator.child.try_wait().ok().flatten().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "{name}: the run did not end");
        let after = match pending {
            Fault::Kill(n) | Fault::KillAndDamage(n) => n,
            Fault::None => usize::MAX,
        };
        if checkpoints_said(&aggregator) >= after {
            tapflow_integration_tests::faults::signal(aggregator.child.id(), "KILL");
            conn_at_kill = conn_bytes(&dir);
            let status = aggregator.wait_until(Instant::now() + Duration::from_secs(60));
            eprintln!("{name}: SIGKILL after {after} checkpoints: {status:?}");
            if matches!(pending, Fault::KillAndDamage(_)) {
                damage_checkpoint(&wal_path(&dir));
            }
            pending = Fault::None;
            std::thread::sleep(Duration::from_secs(1));
            restarts += 1;
            let label = format!("aggregator-{restarts}");
            aggregator = l.spawn_aggregator(&label, &args);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        pending,
        Fault::None,
        "{name}: the run ended before 2 checkpoints"
    );
    let label = format!("{name}: ");
    wait_all_exit0(
        &label,
        rest.iter_mut().chain(std::iter::once(&mut aggregator)),
        deadline,
    );
    let mut state_max = 0;
    for l in aggregator
        .stderr()
        .lines()
        .filter(|l| l.contains("checkpoint"))
    {
        eprintln!("{name}: {l}");
        let after = l.split_whitespace().find_map(|w| w.strip_prefix("after="));
        state_max = state_max.max(after.and_then(|a| a.parse().ok()).unwrap_or(0));
    }
    let out = Outputs::read(&dir);
    Outcome {
        out,
        wal_live,
        wal_max,
        restarts,
        conn_at_kill,
        state_max,
    }
}

/// Flips a byte in the body of the log's first frame (the checkpoint): its checksum fails.
fn damage_checkpoint(path: &Path) {
    let mut all = std::fs::read(path).expect("the log");
    assert_eq!(all.get(8), Some(&b'C'), "the log starts with a checkpoint");
    all[9] ^= 0xff;
    std::fs::write(path, &all).expect("write the log back");
}

fn check_same(name: &str, clean: &Outcome, faulty: &Outcome) {
    let d = &faulty.out.report["durability"];
    eprintln!(
        "{name}: {} conn bytes, {} alert events, log at most {} bytes; durability: {d}",
        faulty.out.conn.len(),
        faulty.out.alerts.len(),
        faulty.wal_max
    );
    check_same_outputs(name, &clean.out, &faulty.out);
    assert_eq!(
        d["restarts"].as_array().map(Vec::len),
        Some(faulty.restarts),
        "{name}: {d}"
    );
    // The detector's state is in the checkpoint: the same events wherever the kill came.
    eprintln!(
        "{name}: killed with {} conn bytes written",
        faulty.conn_at_kill
    );
    check_same_counts(name, &clean.out, &faulty.out);
}

#[test]
fn a_trimmed_log_stays_small_and_a_restart_from_a_checkpoint_loses_nothing() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let pcap = generate_at(root.path(), PACKETS, FLOWS, RATE);
    // No checkpoint during the run: the log grows with every message.
    let whole = run(root.path(), "untrimmed", &pcap, u64::MAX, Fault::None);
    let clean = run(root.path(), "trimmed", &pcap, CHECKPOINT_BYTES, Fault::None);
    let lines = clean.out.conn.iter().filter(|&&c| c == b'\n').count();
    let (dw, dc) = (
        &whole.out.report["durability"],
        &clean.out.report["durability"],
    );
    eprintln!(
        "untrimmed: log at most {} bytes ({} before the first end-of-stream), {dw}; trimmed: at most {} bytes ({} before), {dc}; {lines} sessions",
        whole.wal_max, whole.wal_live, clean.wal_max, clean.wal_live
    );
    assert!(lines > 10_000, "too few sessions to be a test: {lines}");
    assert_eq!(dw["checkpoints"], 0, "{dw}");
    assert!(dc["checkpoints"].as_u64() >= Some(3), "{dc}");
    // A checkpoint is due past CHECKPOINT_BYTES logged and past its own size (the state: the
    // records held for ordering, about five minutes of packet time of sessions, 2-3 MB here,
    // and the detector's windows, about as much), so the log stays under twice the largest
    // state plus the interval and one message (1 MiB at most here).
    let bound: u64 = 2 * clean.state_max + CHECKPOINT_BYTES + (1 << 20);
    assert!(
        clean.state_max > 0 && whole.wal_live > bound && clean.wal_live < bound,
        "the log's largest before the end of stream: {} bytes untrimmed, {} trimmed, bound {bound} (largest state {})",
        whole.wal_live,
        clean.wal_live,
        clean.state_max
    );
    assert!(
        clean.wal_max < whole.wal_max,
        "{} against {}",
        clean.wal_max,
        whole.wal_max
    );
    assert!(
        clean.out.conn == whole.out.conn,
        "checkpoints changed the conn log"
    );
    assert_eq!(
        clean.out.alerts, whole.out.alerts,
        "checkpoints changed the alerts"
    );
    assert_eq!(clean.out.report["complete"], true, "{}", clean.out.report);
    let cases = [
        ("killed", Fault::Kill(2)),
        ("killed-later", Fault::Kill(6)),
        ("damaged", Fault::KillAndDamage(2)),
    ];
    for (name, fault) in cases {
        let faulty = run(root.path(), name, &pcap, CHECKPOINT_BYTES, fault);
        assert_eq!(faulty.restarts, 1, "{name}");
        check_same(name, &clean, &faulty);
        if matches!(fault, Fault::KillAndDamage(_)) {
            let d = &faulty.out.report["durability"];
            assert_eq!(d["checkpoint_fell_back"], 1, "{name}: {d}");
        }
    }
}
