//! Helpers for the integration tests: locate the real binaries, pick free loopback ports, run
//! the three-process pipeline over a capture with deadlines, and read what it reported.
//!
//! The binaries are the workspace's own build output (`target/debug` unless `TAPFLOW_BIN_DIR`
//! says otherwise); the README's test command builds them before running the tests.
//!
//! Failing on errors, the convention of every test in the workspace: a fallible call that must
//! succeed ends in `.expect("what was being done")` (a short static phrase, e.g. `.expect("create
//! a temp dir")`; `expect` prints the error after it), for `Result`s and `Option`s alike, and
//! never `.unwrap_or_else(|e| panic!(..))` or a `match` arm that panics (`.ci/test-convention.py`
//! rejects the former). When a runtime value is needed to understand the failure (a path, a
//! capture's name, a process's stderr), the enclosing assertion shows it, or an `assert!(r.is_ok(),
//! "{}: {r:?}", path.display())` (`is_some`) just before the `expect` does; helpers here do it once
//! for the common cases ([`read_file`], [`read_text`], [`PipelineRun::accounting`]).

// `deny`, not `forbid`: `ports` makes the crate's one FFI call (flock).
#![deny(unsafe_code)]

pub mod browser;
pub mod cluster;
pub mod craft;
pub mod craft_service;
pub mod durable;
pub mod fifo;
pub mod ports;
pub mod refs;
pub mod service_corpus;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod faults;
pub mod influxd;
pub mod inprocess;
pub mod k8s;
pub mod zeek;
pub mod zeek_bare;
pub mod zeek_corpus;

/// The repository root (this crate's parent directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `../shared/pcaps` beside the repository, or `None` (with the reason printed) when absent:
/// a user's clone may not have it; CI always does.
pub fn shared_pcaps() -> Option<PathBuf> {
    let dir = repo_root().join("../shared/pcaps");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: {} is absent (the shared captures sit beside the clone in CI)",
            dir.display()
        );
        None
    }
}

/// Every capture file in `dir`, sorted by name.
pub fn captures(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("pcap" | "pcapng")
        )
    });
    files.sort();
    files
}

/// Path of one of the workspace's binaries.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("TAPFLOW_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not built: run `cargo build --workspace` first (or set TAPFLOW_BIN_DIR)",
        path.display()
    );
    path
}

/// The bytes of `path`; a failure names the file.
pub fn read_file(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path);
    assert!(bytes.is_ok(), "{}: {bytes:?}", path.display());
    bytes.expect("read a file")
}

/// The text of `path`; a failure names the file.
pub fn read_text(path: &Path) -> String {
    let text = std::fs::read_to_string(path);
    assert!(text.is_ok(), "{}: {text:?}", path.display());
    text.expect("read a text file")
}

/// A loopback port reserved for this test process (see [`ports`]): no concurrent test can be
/// given it, and it was bindable on 127.0.0.1 (TCP and UDP) when chosen.
pub fn free_port() -> u16 {
    ports::reserve(1)[0]
}

/// `k` distinct loopback ports, reserved like [`free_port`]'s.
pub fn free_ports(k: usize) -> Vec<u16> {
    ports::reserve(k)
}

pub fn endpoint(port: u16) -> String {
    format!("tcp://127.0.0.1:{port}")
}

/// A spawned process whose stderr goes to a file, killed if still running when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub stderr_path: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[String], dir: &Path) -> Proc {
        let stderr_path = dir.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn();
        assert!(child.is_ok(), "{}: {child:?}", program.display());
        let child = child.expect("start the process");
        Proc {
            name: name.to_owned(),
            child,
            stderr_path,
        }
    }

    /// Waits until the process exits or `deadline` passes (then kills it and returns None).
    pub fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return None;
                }
            }
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One collector of a pipeline run: its source, its `--processor` order (indices into the
/// processors) and any further flags.
pub struct CollectorSpec {
    pub source: SourceArg,
    pub order: Vec<usize>,
    pub extra: Vec<String>,
}

pub enum SourceArg {
    Pcap(PathBuf),
    Interface(String),
}

impl CollectorSpec {
    pub fn pcap(pcap: &Path, n: usize) -> CollectorSpec {
        CollectorSpec {
            source: SourceArg::Pcap(pcap.to_path_buf()),
            order: (0..n).collect(),
            extra: vec![],
        }
    }
}

impl CollectorSpec {
    /// A live collector on `lo` that sees only UDP to `udp_port`, heartbeating every 200 ms,
    /// over `n` processors, with further flags.
    pub fn loopback(udp_port: u16, n: usize, extra: &[&str]) -> CollectorSpec {
        let mut args = vec![
            "--filter".to_owned(),
            format!("udp and dst port {udp_port}"),
            "--heartbeat-ms".into(),
            "200".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        CollectorSpec {
            source: SourceArg::Interface("lo".into()),
            order: (0..n).collect(),
            extra: args,
        }
    }
}

/// Live capture needs root; tests that capture skip, saying so, without it (CI runs as root).
pub fn is_root() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        eprintln!("SKIP: live capture needs root (CI runs as root)");
    }
    root
}

/// A pipeline whose processes are running.
pub struct RunningPipeline {
    pub dir: tempfile::TempDir,
    pub collectors: Vec<Proc>,
    pub processors: Vec<Proc>,
    pub aggregator: Proc,
    /// The loopback ports the aggregator and each processor listen on.
    pub aggregator_port: u16,
    pub processor_ports: Vec<u16>,
    health: PathBuf,
}

impl RunningPipeline {
    /// Sends a signal (e.g. "TERM") to collector `i`.
    pub fn signal_collector(&self, i: usize, signal: &str) {
        let pid = self.collectors[i].child.id().to_string();
        let ok = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{signal} failed");
    }

    /// Sends a signal (e.g. "HUP") to the aggregator.
    pub fn signal_aggregator(&self, signal: &str) {
        let pid = self.aggregator.child.id().to_string();
        let ok = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{signal} failed");
    }

    /// Waits for every process (at most `timeout` in all) and collects what they reported.
    pub fn wait(mut self, timeout: Duration) -> PipelineRun {
        let deadline = Instant::now() + timeout;
        let mut finish = |p: &mut Proc| (p.wait_until(deadline).and_then(|s| s.code()), p.stderr());
        let collectors: Vec<_> = self.collectors.iter_mut().map(&mut finish).collect();
        let processors: Vec<_> = self.processors.iter_mut().map(&mut finish).collect();
        let aggregator = finish(&mut self.aggregator);
        let report = std::fs::read_to_string(&self.health)
            .ok()
            .and_then(|s| s.lines().last().map(str::to_owned))
            .and_then(|l| serde_json::from_str(&l).ok());
        let conn_log =
            std::fs::read_to_string(self.dir.path().join("conn.jsonl")).unwrap_or_default();
        let alerts_log =
            std::fs::read_to_string(self.dir.path().join("alerts.jsonl")).unwrap_or_default();
        PipelineRun {
            dir: self.dir,
            collectors,
            processors,
            aggregator,
            report,
            conn_log,
            alerts_log,
        }
    }
}

/// What a pipeline run left behind.
pub struct PipelineRun {
    pub dir: tempfile::TempDir,
    /// Exit codes (None: killed at the deadline) of the collectors, processors, aggregator.
    pub collectors: Vec<(Option<i32>, String)>,
    pub processors: Vec<(Option<i32>, String)>,
    pub aggregator: (Option<i32>, String),
    /// The aggregator's accounting report (last line of its health log).
    pub report: Option<Value>,
    /// The aggregator's conn log (JSON lines).
    pub conn_log: String,
    /// The aggregator's alerts log (JSON lines).
    pub alerts_log: String,
}

impl PipelineRun {
    /// The accounting report; a run without one fails the test, showing the aggregator's stderr.
    pub fn accounting(&self) -> &Value {
        assert!(
            self.report.is_some(),
            "no accounting report; aggregator: {}",
            self.aggregator.1
        );
        self.report
            .as_ref()
            .expect("the aggregator's accounting report")
    }

    /// True when every process exited by itself (before the deadline) with 0.
    pub fn all_exited(&self) -> bool {
        self.all_exited_with(0)
    }

    /// True when every collector exited by itself with `collector_code`, and every processor
    /// and the aggregator with 0 (they end cleanly whatever became of a collector's input).
    pub fn all_exited_with(&self, collector_code: i32) -> bool {
        self.collectors
            .iter()
            .all(|(c, _)| *c == Some(collector_code))
            && self
                .processors
                .iter()
                .chain(std::iter::once(&self.aggregator))
                .all(|(c, _)| *c == Some(0))
    }

    /// Every process's exit code (`killed`: still running at the deadline), for messages.
    pub fn exit_codes(&self) -> String {
        let code = |c: &Option<i32>| c.map_or_else(|| "killed".to_owned(), |c| c.to_string());
        let mut out: Vec<String> = self
            .collectors
            .iter()
            .enumerate()
            .map(|(i, (c, _))| format!("collector{i}={}", code(c)))
            .collect();
        out.extend(
            self.processors
                .iter()
                .enumerate()
                .map(|(i, (c, _))| format!("processor{i}={}", code(c))),
        );
        out.push(format!("aggregator={}", code(&self.aggregator.0)));
        out.join(" ")
    }
}

/// Shared captures libpcap refuses to open (MANIFEST.tsv: "file rejected by libpcap/wiretap"):
/// the collector exits 3 on them, having read nothing. No shared capture is damaged mid-file
/// (exit 4); `tests/pipeline.rs` cuts one to test that.
pub const REJECTED_CAPTURES: &[&str] = &[
    "libpcap-pcap-invalid-version-1.pcap",
    "libpcap-pcapng-invalid-vers-1.pcapng",
    "libpcap-shb-option-too-long.pcapng",
];

/// The collector's documented exit code for a shared capture: 3 when it cannot be opened,
/// else 0.
pub fn collector_exit_code(capture: &str) -> i32 {
    if REJECTED_CAPTURES.contains(&capture) {
        3
    } else {
        0
    }
}

/// Runs `collectors` -> `n` processors -> aggregator on loopback, every process with
/// `--exit-on-eos`, and waits for all of them (at most `timeout`).
pub fn run_pipeline(collectors: &[CollectorSpec], n: usize, timeout: Duration) -> PipelineRun {
    start_pipeline(collectors, n).wait(timeout)
}

/// Starts the aggregator, `n` processors and the collectors, in that order.
pub fn start_pipeline(collectors: &[CollectorSpec], n: usize) -> RunningPipeline {
    start_pipeline_with(collectors, n, &[])
}

/// [`start_pipeline`] with further flags for every processor.
pub fn start_pipeline_with(
    collectors: &[CollectorSpec],
    n: usize,
    processor_extra: &[&str],
) -> RunningPipeline {
    start_pipeline_opts(collectors, n, processor_extra, &[])
}

/// [`start_pipeline`] with further flags for every processor and for the aggregator.
pub fn start_pipeline_opts(
    collectors: &[CollectorSpec],
    n: usize,
    processor_extra: &[&str],
    aggregator_extra: &[&str],
) -> RunningPipeline {
    let dir = tempfile::tempdir().expect("create the pipeline's directory");
    let mut ports = free_ports(n + 1);
    let agg_port = ports.remove(0);
    let health = dir.path().join("health.jsonl");
    let mut aggregator_args: Vec<String> = vec![
        "--listen".into(),
        endpoint(agg_port),
        "--processors".into(),
        n.to_string(),
        "--exit-on-eos".into(),
        "--health-log".into(),
        health.display().to_string(),
        "--conn-log".into(),
        dir.path().join("conn.jsonl").display().to_string(),
        "--alerts-log".into(),
        dir.path().join("alerts.jsonl").display().to_string(),
    ];
    aggregator_args.extend(aggregator_extra.iter().map(|s| s.to_string()));
    plain_unless_curve(&mut aggregator_args);
    let aggregator = Proc::spawn(
        "aggregator",
        &bin("tapflow-aggregator"),
        &aggregator_args,
        dir.path(),
    );
    let processors: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut args: Vec<String> = vec![
                "--listen".into(),
                endpoint(*p),
                "--aggregator".into(),
                endpoint(agg_port),
                "--collectors".into(),
                collectors.len().to_string(),
                "--exit-on-eos".into(),
                "--name".into(),
                format!("processor{i}"),
            ];
            args.extend(processor_extra.iter().map(|s| s.to_string()));
            plain_unless_curve(&mut args);
            Proc::spawn(
                &format!("processor{i}"),
                &bin("tapflow-processor"),
                &args,
                dir.path(),
            )
        })
        .collect();
    let collectors: Vec<Proc> = collectors
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut args: Vec<String> = match &c.source {
                SourceArg::Pcap(p) => vec!["--pcap".into(), p.display().to_string()],
                SourceArg::Interface(i) => vec!["--interface".into(), i.clone()],
            };
            args.extend(["--name".into(), format!("collector{i}")]);
            for &p in &c.order {
                args.push("--processor".into());
                args.push(endpoint(ports[p]));
            }
            args.extend(c.extra.iter().cloned());
            plain_unless_curve(&mut args);
            Proc::spawn(
                &format!("collector{i}"),
                &bin("tapflow-collector"),
                &args,
                dir.path(),
            )
        })
        .collect();
    RunningPipeline {
        dir,
        collectors,
        processors,
        aggregator,
        aggregator_port: agg_port,
        processor_ports: ports,
        health,
    }
}

/// Links on loopback are plain (`--plain`) unless the flags give CURVE keys (`--curve-key`).
pub fn plain_unless_curve(args: &mut Vec<String>) {
    if !args.iter().any(|a| a == "--curve-key" || a == "--plain") {
        args.push("--plain".into());
    }
}

/// `Number of packets:` from a capinfos truth file, if it has one.
pub fn capinfos_packets(pcaps: &Path, name: &str) -> Option<u64> {
    let text =
        std::fs::read_to_string(pcaps.join("truth").join(format!("{name}.capinfos.txt"))).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("Number of packets:")
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Rewrites a capture with strictly increasing timestamps (1 µs apart at least) into `all`, and
/// splits it by direction along each flow's canonical key into `fwd` and `rev`, as two taps
/// that each see one direction would. Returns the packets in each half.
pub fn split_by_direction(
    pcap: &Path,
    all: &Path,
    fwd: &Path,
    rev: &Path,
) -> Option<(usize, usize)> {
    use tapflow_collector::decode::{DecodeConfig, Decoder, LinkType};
    let mut cap = pcap::Capture::from_file(pcap).ok()?;
    let dlt = cap.get_datalink();
    let link = LinkType::from_dlt(dlt.0)?;
    let dead = pcap::Capture::dead(dlt).ok()?;
    let (mut w_all, mut w_fwd, mut w_rev) = (
        dead.savefile(all).ok()?,
        dead.savefile(fwd).ok()?,
        dead.savefile(rev).ok()?,
    );
    let mut decoder = Decoder::new(DecodeConfig::default());
    let mut out = Vec::new();
    let mut last_us: i64 = 0;
    let (mut nf, mut nr) = (0, 0);
    while let Ok(p) = cap.next_packet() {
        let us = (p.header.ts.tv_sec * 1_000_000 + p.header.ts.tv_usec).max(last_us + 1);
        last_us = us;
        let mut header = *p.header;
        header.ts.tv_sec = us / 1_000_000;
        header.ts.tv_usec = us % 1_000_000;
        let packet = pcap::Packet::new(&header, p.data);
        w_all.write(&packet);
        out.clear();
        decoder.decode(link, (us as u64) * 1000, p.data, p.header.len, &mut out);
        let reverse = match out.first() {
            Some(s) => s.flags & tapflow_proto::summary::flag::REVERSE != 0,
            // No summary (a fragment held for reassembly, a drop): by address order, so all the
            // fragments of a datagram take the same tap as the datagram's summary.
            None => ip_addresses(link, p.data).is_some_and(|(src, dst)| src > dst),
        };
        if reverse {
            w_rev.write(&packet);
            nr += 1;
        } else {
            w_fwd.write(&packet);
            nf += 1;
        }
    }
    w_all.flush().ok()?;
    w_fwd.flush().ok()?;
    w_rev.flush().ok()?;
    Some((nf, nr))
}

/// Source and destination address bytes of an Ethernet (untagged) or raw IP frame.
fn ip_addresses(link: tapflow_collector::decode::LinkType, frame: &[u8]) -> Option<(&[u8], &[u8])> {
    use tapflow_collector::decode::LinkType;
    let ip = match link {
        LinkType::Ethernet => frame.get(14..)?,
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => frame,
        _ => return None,
    };
    match ip.first()? >> 4 {
        4 => Some((ip.get(12..16)?, ip.get(16..20)?)),
        6 => Some((ip.get(8..24)?, ip.get(24..40)?)),
        _ => None,
    }
}

/// A conn log written through two taps split by direction against the same capture through
/// one tap: a round trip always pairs packets of opposite directions, so in the two-tap log
/// every TCP record with a complete handshake measured (`tcp_rtt`) and not tunnelled carries
/// `"rtt_cross_tap":true`, no record without a round trip does, and the one-tap log has none.
/// Returns the two-tap log without the flag (to compare with the one-tap log byte for byte)
/// and how many records carry it.
pub fn without_cross_tap(one: &str, two: &str, what: &str) -> (String, usize) {
    const FLAG: &str = ",\"rtt_cross_tap\":true";
    assert!(
        !one.contains(FLAG),
        "{what}: one tap, yet a cross-tap round trip"
    );
    let mut flagged = 0;
    for line in two.lines() {
        let c: Value = serde_json::from_str(line).unwrap_or_default();
        let flag = c.get("rtt_cross_tap") == Some(&Value::Bool(true));
        flagged += usize::from(flag);
        let round_trip = [
            "tcp_synack",
            "tcp_ackdat",
            "orig_ack_rtt_n",
            "resp_ack_rtt_n",
        ]
        .iter()
        .any(|k| c.get(*k).is_some());
        assert!(
            !flag || round_trip,
            "{what}: flagged without a round trip: {line}"
        );
        if c.get("tcp_rtt").is_some() && c.get("tunnel_parents").is_none() {
            assert!(flag, "{what}: a handshake across taps not flagged: {line}");
        }
    }
    (two.replace(FLAG, ""), flagged)
}
