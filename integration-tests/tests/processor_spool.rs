//! The processor's disk spool (issue 18): processors holding at most 64 KiB of unacknowledged
//! messages in memory (`--unacked-max-bytes`) move the oldest to their `--spool-dir` while the
//! aggregator is down (killed with SIGKILL early in the run), and send them again, read back
//! from disk in order, to the aggregator started again with the same flags and `--state-dir`.
//! The conn log is then byte-identical to a run without the fault, the report says `complete`,
//! and nothing was given up, by either side. What the processors hold is visible: the health
//! log has their `unacked` lines, non-zero, and the report's durability section has each
//! processor incarnation ended, holding nothing. Real processes on loopback over a generated capture.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::cluster::generate;
use tapflow_integration_tests::durable::Layout;
use tapflow_integration_tests::{bin, read_text, Proc};

const PACKETS: u32 = 120_000;
const FLOWS: u32 = 30_000;
const PROCESSORS: usize = 2;
/// Each processor's memory for unacknowledged messages: less than one message of records
/// (2048 of them, some 500 KB), so every message but the newest goes to the spool.
const UNACKED_MAX_BYTES: &str = "65536";
/// Each processor's spool: segments of a quarter of it, a few messages each.
const SPOOL_MAX_BYTES: &str = "8388608";
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// When the aggregator is killed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Moment {
    /// 600 ms after every process started: before the processors send much.
    Early,
    /// As soon as a processor starts spooling: the records of the end of the stream flowing,
    /// some acknowledged.
    FirstSpooling,
}

struct Run {
    dir: PathBuf,
    agg_args: Vec<String>,
    aggregator: Proc,
    processors: Vec<Proc>,
    collector: Proc,
}

impl Run {
    /// An aggregator with a state directory and acknowledgements, two processors with a
    /// spool each, and a collector reading `pcap`, in `dir`.
    fn start(dir: &Path, pcap: &Path) -> Run {
        std::fs::create_dir_all(dir).expect("a run directory");
        let layout = Layout::new(dir, PROCESSORS);
        let agg_args = layout.aggregator_args(Some(&dir.join("state")), &[]);
        let aggregator = layout.spawn_aggregator("aggregator-0", &agg_args);
        let processors = (0..PROCESSORS)
            .map(|i| {
                let mut args = layout.processor_args(i, Some(1000));
                let spool = layout.path(&format!("spool{i}"));
                args.extend(
                    [
                        "--unacked-max-bytes",
                        UNACKED_MAX_BYTES,
                        "--spool-dir",
                        &spool,
                        "--spool-max-bytes",
                        SPOOL_MAX_BYTES,
                        // Heartbeats often: an aggregator killed 600 ms in has heard several,
                        // each saying what the processor holds.
                        "--heartbeat-ms",
                        "200",
                    ]
                    .map(String::from),
                );
                Proc::spawn(
                    &format!("processor{i}"),
                    &bin("tapflow-processor"),
                    &args,
                    dir,
                )
            })
            .collect();
        let args = layout.collector_args(pcap, Some("tap0"));
        let collector = Proc::spawn("collector", &bin("tapflow-collector"), &args, dir);
        Run {
            dir: dir.to_path_buf(),
            agg_args,
            aggregator,
            processors,
            collector,
        }
    }

    /// Kills the aggregator (SIGKILL) at `moment`, waits until every processor has made all
    /// its records and spooled, and a second later starts it again with the same command line.
    fn kill_and_restart(&mut self, moment: Moment) {
        let deadline = Instant::now() + RUN_TIMEOUT;
        let until = |what: &str, done: &dyn Fn() -> bool| {
            while !done() {
                assert!(Instant::now() < deadline, "{what} never came");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        let spooling = |p: &Proc| p.stderr().contains("spooling the oldest to disk");
        match moment {
            Moment::Early => {
                until("every process started", &|| {
                    self.aggregator.stderr().contains("aggregator started")
                        && self
                            .processors
                            .iter()
                            .all(|p| p.stderr().contains("processor started"))
                });
                // A few of the aggregator's acknowledgement periods (200 ms): the processors
                // have heard from this incarnation, so they see the next one as a restart.
                std::thread::sleep(Duration::from_millis(600));
            }
            Moment::FirstSpooling => until("a processor spooling", &|| {
                self.processors.iter().any(spooling)
            }),
        }
        assert!(
            !read_text(&self.dir.join("health.jsonl")).contains("\"accounting\""),
            "the run ended before the kill"
        );
        tapflow_integration_tests::faults::signal(self.aggregator.child.id(), "KILL");
        let status = self
            .aggregator
            .wait_until(Instant::now() + Duration::from_secs(30));
        eprintln!("aggregator killed: {status:?}");
        // Every record made and waiting, in the spool and in memory, for an aggregator.
        until("every processor spooling and finished", &|| {
            self.processors
                .iter()
                .all(|p| spooling(p) && p.stderr().contains("processor finished"))
        });
        std::thread::sleep(Duration::from_secs(1));
        self.aggregator = Proc::spawn(
            "aggregator-1",
            &bin("tapflow-aggregator"),
            &self.agg_args,
            &self.dir,
        );
    }

    /// Waits for every process to exit 0; returns the conn log, the report and each
    /// processor's end log line.
    fn finish(mut self) -> (Vec<u8>, Value, Vec<String>) {
        let deadline = Instant::now() + RUN_TIMEOUT;
        let procs = std::iter::once(&mut self.collector)
            .chain(self.processors.iter_mut())
            .chain(std::iter::once(&mut self.aggregator));
        tapflow_integration_tests::durable::wait_all_exit0("", procs, deadline);
        let report = read_text(&self.dir.join("health.jsonl"))
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .rfind(|v| v["kind"] == "accounting")
            .unwrap_or_default();
        let ends = self
            .processors
            .iter()
            .map(|p| {
                p.stderr()
                    .lines()
                    .find(|l| l.contains("acknowledged by the aggregator"))
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        let conn = std::fs::read(self.dir.join("conn.jsonl")).unwrap_or_default();
        (conn, report, ends)
    }
}

/// The `unacked` lines of the health log at `path` (both aggregator incarnations').
fn unacked_lines(path: &Path) -> Vec<Value> {
    read_text(path)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "unacked")
        .collect()
}

/// The health log says a processor held something (a heartbeat goes right after a batch is
/// handed over, before its acknowledgement), and the report has each processor incarnation's
/// last counts: ended, nothing held, nothing given up.
fn held_then_settled(moment: Moment, unacked: &[Value], report: &Value) {
    let held = |v: &Value| {
        v["memory_bytes"].as_u64().unwrap_or(0) + v["spool_bytes"].as_u64().unwrap_or(0)
    };
    assert!(
        unacked.iter().any(|v| held(v) > 0),
        "{moment:?}: no processor held anything, by the health log: {unacked:?}"
    );
    let last = report["durability"]["unacked"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut names: Vec<&str> = last
        .iter()
        .filter_map(|v| v["processor"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["processor0", "processor1"], "{moment:?}: {last:?}");
    for v in &last {
        assert_eq!(v["ended"], true, "{moment:?}: {v}");
        assert_eq!(held(v), 0, "{moment:?}: {v}");
        assert_eq!(v["given_up_messages"].as_u64(), Some(0), "{moment:?}: {v}");
    }
}

/// The number after `name: ` in a processor's end log line (its `DeliveryStats`).
fn counter(line: &str, name: &str) -> Option<u64> {
    let at = line.find(&format!("{name}: "))? + name.len() + 2;
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn spooled_messages_reach_a_restarted_aggregator_and_nothing_is_lost() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let pcap = generate(root.path(), PACKETS, FLOWS);
    let (clean, clean_report, clean_ends) = Run::start(&root.path().join("clean"), &pcap).finish();
    assert_eq!(clean_report["complete"], true, "{clean_report}");
    let sessions = clean.iter().filter(|&&b| b == b'\n').count();
    eprintln!("clean run: {sessions} sessions");
    assert!(
        sessions > 10_000,
        "too few sessions to be a test: {sessions}"
    );
    for line in &clean_ends {
        eprintln!("clean: {line}");
        assert_eq!(
            counter(line, "spool_given_up"),
            Some(0),
            "clean run: {line}"
        );
    }
    for moment in [Moment::Early, Moment::FirstSpooling] {
        let mut faulty = Run::start(&root.path().join(format!("{moment:?}")), &pcap);
        faulty.kill_and_restart(moment);
        let spool_dirs: Vec<PathBuf> = (0..PROCESSORS)
            .map(|i| faulty.dir.join(format!("spool{i}")))
            .collect();
        let health = faulty.dir.join("health.jsonl");
        let (conn, report, ends) = faulty.finish();
        held_then_settled(moment, &unacked_lines(&health), &report);
        for (line, dir) in ends.iter().zip(&spool_dirs) {
            eprintln!("{moment:?}: {line}");
            let spooled = counter(line, "spooled_bytes");
            assert!(
                spooled.is_some_and(|b| b > 0),
                "{moment:?}: nothing spooled: {line}"
            );
            for name in ["given_up", "spool_given_up", "spool_damaged"] {
                assert_eq!(counter(line, name), Some(0), "{moment:?}: {name}: {line}");
            }
            // What the restarted aggregator gets is read back from disk.
            assert!(
                counter(line, "spool_read").is_some_and(|n| n > 0),
                "{moment:?}: nothing read back from the spool: {line}"
            );
            let left = std::fs::read_dir(dir).map_or(0, Iterator::count);
            assert_eq!(left, 0, "{}: segments left at exit", dir.display());
        }
        let d = &report["durability"];
        eprintln!("{moment:?}: durability: {d}");
        assert_eq!(report["complete"], true, "{moment:?}: {report}");
        assert_eq!(report["reconciled"], true, "{moment:?}: {report}");
        assert_eq!(d["restarts"].as_array().map(Vec::len), Some(1), "{d}");
        assert_eq!(d["given_up"].as_u64(), Some(0), "{d}");
        assert!(
            conn == clean,
            "{moment:?}: the conn log differs from the clean run's ({} bytes against {})",
            conn.len(),
            clean.len()
        );
    }
}
