//! Nothing lost when the aggregator restarts (issue 18): with `--state-dir` (its write-ahead
//! log) and acknowledged delivery (`--ack-listen` / the processors' `--aggregator-acks`), an
//! aggregator killed (SIGKILL, or SIGTERM) at different moments of a run over a generated
//! capture and started again a second later with the same command line leaves the same conn
//! log, byte for byte, as the run without the fault, the same alert events, and a report that
//! says `complete` with its restarts listed. Every run also writes to a real influxd (a
//! database each): after the restarts InfluxDB holds every point exactly once, the same series
//! with the same counts per field as the run without the fault, and the same session and alert
//! points (time, tags and fields). `tapflow_health` is left out of that comparison: pipeline
//! health points are stamped at the heartbeats' wall-clock instants and tagged with
//! per-incarnation names, so two runs never share them, fault or not.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tapflow_integration_tests::cluster::generate;
use tapflow_integration_tests::durable::{
    check_exactly_once, check_same_outputs, conn_bytes, wait_all_exit0, Layout, Outputs,
};
use tapflow_integration_tests::influxd::{Contents, Influxd};
use tapflow_integration_tests::{bin, Proc};

/// Packets of the generated capture (a tenth of them flows); `TAPFLOW_RESTART_PACKETS` runs the
/// same checks over a larger capture (the 1M packets), for a demonstration.
const PACKETS: u32 = 400_000;

/// The capture's packets and flows.
fn capture_size() -> (u32, u32) {
    let packets = std::env::var("TAPFLOW_RESTART_PACKETS")
        .ok()
        .map(|v| {
            v.parse()
                .expect("TAPFLOW_RESTART_PACKETS: a number of packets")
        })
        .unwrap_or(PACKETS);
    (packets, packets / 10)
}
const PROCESSORS: usize = 2;
/// Every process must have exited this long after the start.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

/// When the aggregator is killed.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// This long after the pipeline started.
    After(Duration),
    /// Once the conn log holds this many bytes.
    ConnBytes(u64),
    /// Once the first processor's end-of-stream has reached it: the end of the stream, when
    /// the processors flush every session and the aggregator writes most of its conn log.
    FirstEnded,
    /// Once a restarted aggregator has said it is restarting from its write-ahead log (its
    /// replay about to begin).
    Restarting,
}

/// One pipeline run's directory, ports and processes.
struct Pipeline {
    dir: PathBuf,
    agg_args: Vec<String>,
    aggregator: Proc,
    restarts: usize,
    others: Vec<Proc>,
}

impl Pipeline {
    /// Starts an aggregator (with a state directory when `durable`, writing to InfluxDB at
    /// `influx`'s URL and database when given), the processors and one collector reading
    /// `pcap`, in `dir`.
    fn start(dir: &Path, pcap: &Path, durable: bool, influx: Option<(&str, &str)>) -> Pipeline {
        let l = Layout::new(dir, PROCESSORS);
        let state = dir.join("state");
        let extra = influx.map_or(Vec::new(), |(url, db)| l.influx_args(url, db));
        let agg_args = l.aggregator_args(durable.then_some(state.as_path()), &extra);
        let aggregator = l.spawn_aggregator("aggregator-0", &agg_args);
        let mut others = l.spawn_processors(durable.then_some(1000));
        // A fixed name (as the systemd unit gives): it is the `collector` tag in InfluxDB,
        // which two runs must share to be compared.
        others.push(l.spawn_collector(pcap, Some("tap0")));
        Pipeline {
            dir: dir.to_path_buf(),
            agg_args,
            aggregator,
            restarts: 0,
            others,
        }
    }

    /// Waits for `moment`, then sends `signal` to the aggregator, waits for it to end, and a
    /// second later starts it again with the same command line.
    fn kill_and_restart(&mut self, started: Instant, moment: Moment, signal: &str) {
        let deadline = Instant::now() + RUN_TIMEOUT;
        while !self.reached(started, moment) {
            assert!(Instant::now() < deadline, "{moment:?} never came");
            std::thread::sleep(Duration::from_millis(1));
        }
        let running = self.aggregator.child.try_wait().ok().flatten().is_none();
        assert!(
            running,
            "the aggregator ended before {moment:?}: {}",
            self.aggregator.stderr()
        );
        let lines = conn_lines(&self.dir);
        let health = std::fs::read_to_string(self.dir.join("health.jsonl")).unwrap_or_default();
        if signal == "TERM" && health.contains("\"accounting\"") {
            // A restarted aggregator can finish the run before the moment is seen.
            eprintln!("the run was over before {moment:?}: no SIGTERM");
            return;
        }
        assert!(
            !health.contains("\"accounting\""),
            "the run was over before {moment:?}: {health}"
        );
        tapflow_integration_tests::faults::signal(self.aggregator.child.id(), signal);
        let status = self
            .aggregator
            .wait_until(Instant::now() + Duration::from_secs(60));
        eprintln!(
            "aggregator: signal {signal} at {moment:?} ({lines} conn lines then): {status:?}"
        );
        // SIGTERM during the final flush lets it finish: the run is over, its report written
        // and its log emptied; started again it would be a new run. Not restarted then.
        let health = std::fs::read_to_string(self.dir.join("health.jsonl")).unwrap_or_default();
        if health.contains("\"accounting\"") {
            assert_eq!(signal, "TERM", "a report after SIGKILL");
            eprintln!("the run ended at SIGTERM, with its report: not restarted");
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
        self.restarts += 1;
        self.aggregator = Proc::spawn(
            &format!("aggregator-{}", self.restarts),
            &bin("tapflow-aggregator"),
            &self.agg_args,
            &self.dir,
        );
    }

    fn reached(&self, started: Instant, moment: Moment) -> bool {
        match moment {
            Moment::After(d) => started.elapsed() >= d,
            Moment::ConnBytes(n) => conn_bytes(&self.dir) >= n,
            Moment::FirstEnded => self.aggregator.stderr().contains("processor ended"),
            Moment::Restarting => self
                .aggregator
                .stderr()
                .contains("restarting from the write-ahead log"),
        }
    }

    /// Waits for every process to end by itself; returns what the run wrote (and what
    /// `influx` holds in database `db`).
    fn finish(mut self, influx: Option<(&Influxd, &str)>) -> Outcome {
        let deadline = Instant::now() + RUN_TIMEOUT;
        wait_all_exit0(
            "",
            self.others
                .iter_mut()
                .chain(std::iter::once(&mut self.aggregator)),
            deadline,
        );
        let out = Outputs::read(&self.dir);
        assert!(
            !out.report.is_null(),
            "no accounting report: {}",
            self.aggregator.stderr()
        );
        Outcome {
            influx: influx.map(|(i, db)| i.contents(db, &[HEALTH], &FULL)),
            restarts: self.restarts,
            out,
        }
    }
}

/// Left out of the InfluxDB comparison (see the module's comment).
const HEALTH: &str = "tapflow_health";
/// Compared point for point.
const FULL: [&str; 2] = ["tapflow_conn", "tapflow_alert"];

struct Outcome {
    /// What InfluxDB holds after the run, when it was written.
    influx: Option<Contents>,
    restarts: usize,
    /// The conn log, the alert events and the report.
    out: Outputs,
}

fn conn_lines(dir: &Path) -> usize {
    std::fs::read(dir.join("conn.jsonl")).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

/// A run over `pcap` in a new directory under `root`, with the aggregator signalled at each of
/// `moments` in turn (each restart a second later), writing to a database of its own in
/// `influx` when given.
fn run(
    root: &Path,
    name: &str,
    pcap: &Path,
    durable: bool,
    moments: &[(Moment, &str)],
    influx: Option<&Influxd>,
) -> Outcome {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("a run directory");
    let db = name.replace('-', "_");
    let url = influx.map(Influxd::url);
    let started = Instant::now();
    let mut p = Pipeline::start(
        &dir,
        pcap,
        durable,
        url.as_deref().map(|u| (u, db.as_str())),
    );
    for &(moment, signal) in moments {
        p.kill_and_restart(started, moment, signal);
    }
    p.finish(influx.map(|i| (i, db.as_str())))
}

/// InfluxDB after the faulty run holds what it holds after the clean one: the same series
/// with the same counts, the same session and alert points, each session once.
fn check_influx(name: &str, clean: &Outcome, faulty: &Outcome) {
    let (Some(c), Some(f)) = (&clean.influx, &faulty.influx) else {
        return;
    };
    let sessions = clean.out.conn.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(
        f.point_count("tapflow_conn"),
        sessions,
        "{name}: session points against conn log lines"
    );
    assert_eq!(
        f.points.get("tapflow_conn").map_or(0, Vec::len) as u64,
        sessions,
        "{name}: SELECT * FROM tapflow_conn"
    );
    check_exactly_once(name, c, f, &FULL);
    let points: u64 = c.counts.keys().map(|m| f.point_count(m)).sum();
    eprintln!(
        "{name}: InfluxDB holds the clean run's {points} points in {} measurements ({} sessions), each once",
        c.counts.len(),
        sessions
    );
}

/// The faulty run's outputs are the clean run's, and its report lists its restarts.
fn check_same(name: &str, clean: &Outcome, faulty: &Outcome) {
    let restarts = faulty.restarts;
    let d = &faulty.out.report["durability"];
    eprintln!(
        "{name}: {} conn bytes, {} alert events; durability: {d}",
        faulty.out.conn.len(),
        faulty.out.alerts.len()
    );
    check_same_outputs(name, &clean.out, &faulty.out);
    assert_eq!(
        d["restarts"].as_array().map(Vec::len),
        Some(restarts),
        "{name}: {d}"
    );
    check_influx(name, clean, faulty);
}

#[test]
fn aggregator_killed_at_five_moments_loses_nothing() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let (packets, flows) = capture_size();
    let pcap = generate(root.path(), packets, flows);
    let influxd = Influxd::start();
    let influx = influxd.as_ref();
    let plain = run(root.path(), "plain", &pcap, false, &[], influx);
    let clean = run(root.path(), "clean", &pcap, true, &[], influx);
    // With a state directory and nothing failing, the outputs are those of a run without one.
    assert!(
        clean.out.conn == plain.out.conn,
        "--state-dir changed the conn log"
    );
    assert_eq!(clean.out.alerts, plain.out.alerts);
    assert!(
        clean
            .influx
            .as_ref()
            .is_none_or(|c| c.point_count("tapflow_conn") > 0),
        "the clean run wrote no session to InfluxDB"
    );
    check_influx("clean against plain", &plain, &clean);
    assert_eq!(clean.out.report["complete"], true, "{}", clean.out.report);
    let lines = clean.out.conn.iter().filter(|&&c| c == b'\n').count();
    eprintln!(
        "clean run: {lines} sessions, {} alert events",
        clean.out.alerts.len()
    );
    assert!(lines > 10_000, "too few sessions to be a test: {lines}");
    let bytes = clean.out.conn.len() as u64;
    let kill = "KILL";
    let cases: [(&str, Vec<(Moment, &str)>); 5] = [
        (
            "early",
            vec![(Moment::After(Duration::from_millis(300)), kill)],
        ),
        ("first-lines", vec![(Moment::ConnBytes(1), kill)]),
        ("a-third", vec![(Moment::ConnBytes(bytes / 3), kill)]),
        ("end-of-stream", vec![(Moment::FirstEnded, kill)]),
        (
            "twice",
            vec![
                (Moment::ConnBytes(1), kill),
                // The second incarnation, as its replay begins (a run over in well under a
                // second leaves no later moment that is sure to come before its end).
                (Moment::Restarting, kill),
            ],
        ),
    ];
    for (name, moments) in cases {
        let faulty = run(root.path(), name, &pcap, true, &moments, influx);
        assert_eq!(
            faulty.restarts,
            moments.len(),
            "{name}: a kill -9 is always restarted"
        );
        check_same(name, &clean, &faulty);
    }
}

/// A case: its name, the moments of its signals, the restarts it has at least.
type Case<'a> = (&'a str, Vec<(Moment, &'a str)>, usize);

#[test]
fn aggregator_stopped_by_sigterm_and_started_again_loses_nothing() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let root = root.path();
    let (packets, flows) = capture_size();
    let pcap = generate(root, packets, flows);
    let influxd = Influxd::start();
    let influx = influxd.as_ref();
    let clean = run(root, "clean", &pcap, true, &[], influx);
    let term = "TERM";
    // A SIGTERM in the final flush lets the run finish with its report (then it is not
    // restarted); the conn log's first lines come before the end of the stream.
    let cases: [Case; 4] = [
        ("term-first-lines", vec![(Moment::ConnBytes(1), term)], 1),
        (
            "term-early",
            vec![(Moment::After(Duration::from_millis(300)), term)],
            0,
        ),
        ("term-end-of-stream", vec![(Moment::FirstEnded, term)], 0),
        (
            "term-twice",
            vec![(Moment::ConnBytes(1), term), (Moment::FirstEnded, term)],
            1,
        ),
    ];
    for (name, moments, at_least) in cases {
        let faulty = run(root, name, &pcap, true, &moments, influx);
        assert!(
            faulty.restarts >= at_least,
            "{name}: the first SIGTERM comes mid-run"
        );
        check_same(name, &clean, &faulty);
    }
}
