//! The shared set-up of the durability tests (issue 18: `tests/aggregator_restart.rs`,
//! `aggregator_checkpoint_restart.rs`, `aggregator_wal_trim.rs`, `aggregator_disk_full.rs`,
//! `membership_restart.rs`, `processor_failover.rs`): the argument lists of a durable pipeline
//! (an aggregator with `--state-dir` / `--ack-listen`, processors with `--aggregator-acks`, a
//! collector over a capture), those of a cluster whose aggregator decides membership, what a
//! run leaves in its directory, InfluxDB's contents read a page at a time and the check that
//! InfluxDB holds every point of a clean run exactly once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{generate, spawn, wait_for, write_set, Cluster};
use crate::fifo::{feed_paced, mkfifo, read_pcap};
use crate::influxd::{answer_points, Contents, Influxd};
use crate::{bin, endpoint, free_ports, read_text, Proc};

/// One pipeline run's directory and endpoints: the aggregator's, its acknowledgements' and one
/// per processor.
pub struct Layout {
    pub dir: PathBuf,
    /// The aggregator's `--listen` endpoint.
    pub agg: String,
    /// The aggregator's `--ack-listen` endpoint.
    pub ack: String,
    /// Each processor's `--listen` port.
    pub ports: Vec<u16>,
}

impl Layout {
    /// Free ports for an aggregator, its acknowledgements and `processors` processors, their
    /// logs in `dir`.
    pub fn new(dir: &Path, processors: usize) -> Layout {
        let ports = free_ports(processors + 2);
        Layout {
            dir: dir.to_path_buf(),
            agg: endpoint(ports[0]),
            ack: endpoint(ports[1]),
            ports: ports[2..].to_vec(),
        }
    }

    /// `name` in the run's directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The aggregator's command line: every processor awaited, ending at the end of the
    /// stream, the conn, alerts and health logs in the run's directory; durable (its
    /// write-ahead log in `state`, acknowledging on [`Layout::ack`]) when `state` is given;
    /// then `extra`.
    pub fn aggregator_args(&self, state: Option<&Path>, extra: &[String]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--listen",
            &self.agg,
            "--processors",
            &self.ports.len().to_string(),
            "--exit-on-eos",
            "--plain",
            "--conn-log",
            &self.path("conn.jsonl"),
            "--alerts-log",
            &self.path("alerts.jsonl"),
            "--health-log",
            &self.path("health.jsonl"),
        ]
        .map(String::from)
        .to_vec();
        if let Some(state) = state {
            let state = state.display().to_string();
            args.extend(["--state-dir", &state, "--ack-listen", &self.ack].map(String::from));
        }
        args.extend_from_slice(extra);
        args
    }

    /// The aggregator's flags writing to InfluxDB at `url`, database `db`, spooling in the
    /// run's directory.
    pub fn influx_args(&self, url: &str, db: &str) -> Vec<String> {
        let spool = self.path("spool");
        [
            "--influx-url",
            url,
            "--influx-db",
            db,
            "--influx-spool-dir",
            &spool,
        ]
        .map(String::from)
        .to_vec()
    }

    /// Processor `i`'s command line (named `processor{i}`, one collector); keeping what the
    /// aggregator has not acknowledged and sending it again after `resend_after_ms` when given.
    pub fn processor_args(&self, i: usize, resend_after_ms: Option<u64>) -> Vec<String> {
        let mut args: Vec<String> = [
            "--listen",
            &endpoint(self.ports[i]),
            "--aggregator",
            &self.agg,
            "--collectors",
            "1",
            "--exit-on-eos",
            "--plain",
            "--name",
            &format!("processor{i}"),
        ]
        .map(String::from)
        .to_vec();
        if let Some(ms) = resend_after_ms {
            let ms = ms.to_string();
            args.extend(
                ["--aggregator-acks", &self.ack, "--resend-after-ms", &ms].map(String::from),
            );
        }
        args
    }

    /// The collector's command line: reading `pcap`, named `name` when given (a fixed name is
    /// InfluxDB's `collector` tag, which two runs must share to be compared), sending to every
    /// processor.
    pub fn collector_args(&self, pcap: &Path, name: Option<&str>) -> Vec<String> {
        let mut args = vec![
            "--pcap".to_string(),
            pcap.display().to_string(),
            "--plain".into(),
        ];
        if let Some(name) = name {
            args.extend(["--name".to_string(), name.to_string()]);
        }
        for port in &self.ports {
            args.extend(["--processor".to_string(), endpoint(*port)]);
        }
        args
    }

    /// Spawns the aggregator as `label` in the run's directory.
    pub fn spawn_aggregator(&self, label: &str, args: &[String]) -> Proc {
        Proc::spawn(label, &bin("tapflow-aggregator"), args, &self.dir)
    }

    /// Spawns every processor ([`Layout::processor_args`]), each named `processor{i}`.
    pub fn spawn_processors(&self, resend_after_ms: Option<u64>) -> Vec<Proc> {
        (0..self.ports.len())
            .map(|i| {
                let args = self.processor_args(i, resend_after_ms);
                let name = format!("processor{i}");
                Proc::spawn(&name, &bin("tapflow-processor"), &args, &self.dir)
            })
            .collect()
    }

    /// Spawns the collector ([`Layout::collector_args`]) as `collector`.
    pub fn spawn_collector(&self, pcap: &Path, name: Option<&str>) -> Proc {
        let args = self.collector_args(pcap, name);
        Proc::spawn("collector", &bin("tapflow-collector"), &args, &self.dir)
    }
}

/// A capture of `packets` packets of `flows` flows at `rate` packets per second of capture
/// time (seed 8), written in `dir`.
pub fn generate_at(dir: &Path, packets: u32, flows: u32, rate: u32) -> PathBuf {
    let out = dir.join(format!("generated-{rate}.pcap"));
    let ok = Command::new(bin("tapflow-gen"))
        .args(["--packets", &packets.to_string()])
        .args(["--flows", &flows.to_string()])
        .args(["--seed", "8", "--rate", &rate.to_string(), "--out"])
        .arg(&out)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "tapflow-gen failed");
    out
}

/// Waits for each of `procs` to end by itself before `deadline`, asserting it exited 0 (the
/// message prefixed by `label`); returns their stderr in order.
pub fn wait_all_exit0<'a>(
    label: &str,
    procs: impl IntoIterator<Item = &'a mut Proc>,
    deadline: Instant,
) -> Vec<String> {
    let mut logs = Vec::new();
    for p in procs {
        let status = p.wait_until(deadline);
        assert!(
            status.is_some_and(|s| s.success()),
            "{label}{} did not exit 0: {status:?}\n{}",
            p.name,
            p.stderr()
        );
        logs.push(p.stderr());
    }
    logs
}

/// The conn log's size in `dir`, bytes (0 before it exists).
pub fn conn_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("conn.jsonl")).map_or(0, |m| m.len())
}

/// The number after `name: ` in a log line (a processor's `DeliveryStats { ... }`).
pub fn stat(line: &str, name: &str) -> Option<u64> {
    let at = line.find(&format!("{name}: "))? + name.len() + 2;
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// What a run wrote in its directory.
pub struct Outputs {
    /// The conn log, as written.
    pub conn: Vec<u8>,
    /// The alert events, one a line, sorted.
    pub alerts: Vec<String>,
    /// The last accounting report of the health log (null when there is none).
    pub report: Value,
}

impl Outputs {
    /// Reads `conn.jsonl`, `alerts.jsonl` and `health.jsonl` in `dir`.
    pub fn read(dir: &Path) -> Outputs {
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
        Outputs {
            conn: std::fs::read(dir.join("conn.jsonl")).unwrap_or_default(),
            alerts,
            report,
        }
    }
}

/// What database `db` holds: every series' counts (but those of `skip`), and the points of
/// `full`, read a page at a time (one answer with every session is past what the HTTP client
/// reads at once).
pub fn contents_paged(influxd: &Influxd, db: &str, skip: &[&str], full: &[&str]) -> Contents {
    let mut out = influxd.contents(db, skip, &[]);
    for &m in full {
        let mut points = measurement_points(influxd, db, m);
        points.sort();
        out.points.insert(m.to_owned(), points);
    }
    out
}

/// Every point of measurement `m`, one JSON line of its time, tags and fields each, unsorted.
fn measurement_points(influxd: &Influxd, db: &str, m: &str) -> Vec<String> {
    const PAGE: usize = 10_000;
    let mut points = Vec::new();
    for page in 0.. {
        let q = format!("SELECT * FROM \"{m}\" LIMIT {PAGE} OFFSET {}", page * PAGE);
        let v = influxd.query(db, &q);
        assert!(v["results"][0]["error"].is_null(), "{q}: {v}");
        let page_points = answer_points(&v);
        let got = page_points.len();
        points.extend(page_points);
        if got < PAGE {
            break;
        }
    }
    points
}

/// InfluxDB after the faulty run (`f`) holds what it holds after the clean one (`c`): the same
/// series with the same counts, no other measurement, and the points of `full` point for point,
/// each once.
pub fn check_exactly_once(name: &str, c: &Contents, f: &Contents, full: &[&str]) {
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
    for &m in full {
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

/// A cluster whose aggregator decides membership (`membership_restart.rs`,
/// `processor_failover.rs`): its timings.
pub struct Membership {
    /// `--processor-dead-after`.
    pub dead_after_ms: u64,
    /// `--processor-hold-down`.
    pub hold_down_ms: u64,
    /// The processors' `--heartbeat-ms`.
    pub heartbeat_ms: u64,
}

impl Membership {
    /// The aggregator of `c`, routed by its set, deciding membership and announcing it on
    /// `control`; then `extra`.
    pub fn aggregator_args(&self, c: &Cluster, control: &str, extra: &[String]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--listen",
            &endpoint(c.agg_port),
            "--processor-set",
            &c.set.display().to_string(),
            "--exit-on-eos",
            "--health-log",
            &c.log("health.jsonl"),
            "--conn-log",
            &c.log("conn.jsonl"),
            "--alerts-log",
            &c.log("alerts.jsonl"),
            "--control-listen",
            control,
            "--processor-dead-after",
            &format!("{}ms", self.dead_after_ms),
            "--processor-hold-down",
            &format!("{}ms", self.hold_down_ms),
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend_from_slice(extra);
        args
    }

    /// Processor `id` of `c`'s set (named `processor{id}`), subscribed to the aggregator's
    /// control channel (its decisions reach it as a SIGHUP reload would), spawned as `label`;
    /// its command line ends with `extra`.
    pub fn processor(
        &self,
        c: &Cluster,
        id: usize,
        control: &str,
        label: &str,
        extra: &[String],
    ) -> Proc {
        let mut args: Vec<String> = [
            "--listen",
            &endpoint(c.proc_ports[id]),
            "--aggregator",
            &endpoint(c.agg_port),
            "--collectors",
            &c.collectors.to_string(),
            "--exit-on-eos",
            "--name",
            &format!("processor{id}"),
            "--processor-set",
            &c.set.display().to_string(),
            "--id",
            &id.to_string(),
            "--heartbeat-ms",
            &self.heartbeat_ms.to_string(),
            "--control",
            control,
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend_from_slice(extra);
        spawn(label, "tapflow-processor", args, &c.dir)
    }
}

/// A running membership scene: three processors of a set, the aggregator deciding membership,
/// the collector reading the generated capture through a FIFO at its own pace.
pub struct Scene {
    pub dir: tempfile::TempDir,
    pub capture: PathBuf,
    pub c: Cluster,
    /// The aggregator's control channel.
    pub control: String,
    pub aggregator: Proc,
    pub processors: Vec<Proc>,
    pub collector: Proc,
    pub feeder: std::thread::JoinHandle<()>,
    /// When the collector opened the capture.
    pub started: Instant,
    pub deadline: Instant,
}

impl Scene {
    /// A capture of `packets` packets (12,000 flows) generated in a new directory, a set of
    /// three processors, the aggregator spawned by `aggregator` and processor `id` by
    /// `processor` (each given the cluster and the control channel), and the collector (subscribed
    /// to the control channel) fed through a FIFO; returns once the collector has opened it.
    pub fn start(
        packets: u32,
        timeout: Duration,
        aggregator: impl FnOnce(&Cluster, &str) -> Proc,
        processor: impl Fn(&Cluster, usize, &str) -> Proc,
    ) -> Scene {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let d = dir.path();
        let capture = generate(d, packets, 12_000);
        let deadline = Instant::now() + timeout;
        let c = Cluster::new(d, 1);
        write_set(&c.set, "[0, 1, 2]", &c.proc_ports, &[]);
        let control = endpoint(free_ports(1)[0]);
        let aggregator = aggregator(&c, &control);
        let processors: Vec<Proc> = (0..3).map(|id| processor(&c, id, &control)).collect();
        let fifo = d.join("tap.fifo");
        mkfifo(&fifo);
        // As in `--test scaling`'s crash: drop rather than stall the tap while a dead processor
        // takes nothing, and a linger long enough for a loaded machine.
        let collector = c.collector(
            &fifo,
            "collector",
            &[
                "--slow-policy",
                "drop",
                "--linger-ms",
                "10000",
                "--control",
                &control,
            ],
        );
        let feeder = feed_paced(vec![(read_pcap(&capture), fifo, 0)], timeout);
        wait_for(&collector, "capture open", deadline);
        Scene {
            started: Instant::now(),
            dir,
            capture,
            c,
            control,
            aggregator,
            processors,
            collector,
            feeder,
            deadline,
        }
    }
}

/// The `change` of each membership decision in an accounting report, as JSON.
pub fn decisions(report: &Value) -> Vec<String> {
    report["membership"]["decisions"]
        .as_array()
        .map(|a| a.iter().map(|d| d["change"].to_string()).collect())
        .unwrap_or_default()
}

/// The processors an accounting report lists as dead.
pub fn dead_processors(report: &Value) -> Vec<&str> {
    report["dead_processors"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["processor"].as_str()).collect())
        .unwrap_or_default()
}

/// A conn record's start, seconds.
pub fn conn_ts(c: &Value) -> f64 {
    c["ts"].as_f64().unwrap_or(0.0)
}

/// A conn record's uid.
pub fn conn_uid(c: &Value) -> String {
    c["uid"].as_str().unwrap_or_default().to_owned()
}

/// What must be the same of a session in two runs: its state, history, packets and bytes.
pub fn conn_summary(c: &Value) -> String {
    [
        "conn_state",
        "history",
        "orig_pkts",
        "resp_pkts",
        "orig_ip_bytes",
        "resp_ip_bytes",
        "duration",
    ]
    .map(|f| c[f].to_string())
    .join(" ")
}

/// Conn records by uid.
pub fn conns_by_uid(conns: &[Value]) -> BTreeMap<String, Value> {
    conns.iter().map(|c| (conn_uid(c), c.clone())).collect()
}

/// The faulty run's report says `complete` and `reconciled`, and it wrote the clean run's conn
/// log, byte for byte, and the same alert events.
pub fn check_same_outputs(name: &str, clean: &Outputs, faulty: &Outputs) {
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
}

/// The faulty run's report counts the same sessions (`conns`) and the same detection as the
/// clean run's.
pub fn check_same_counts(name: &str, clean: &Outputs, faulty: &Outputs) {
    assert_eq!(faulty.report["conns"], clean.report["conns"], "{name}");
    assert_eq!(
        faulty.report["detection"], clean.report["detection"],
        "{name}"
    );
}

/// The stderr of the process spawned as `label` among `procs` (empty when none was).
pub fn log_of(procs: &[Proc], label: &str) -> String {
    procs
        .iter()
        .find(|p| p.name == label)
        .map(Proc::stderr)
        .unwrap_or_default()
}
