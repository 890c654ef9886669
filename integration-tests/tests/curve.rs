//! CURVE on every link (issue 7): a pipeline encrypted on both hops gives exactly what a plain
//! one gives; collectors and processors without an authorized key (another key pair, or no
//! CURVE at all) are rejected and counted, and none of their data gets in; configuration
//! mistakes (plain off loopback, no key, a secret key others can read) exit 2 with one line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::{
    bin, endpoint, free_ports, run_pipeline, shared_pcaps, start_pipeline_opts, CollectorSpec,
    PipelineRun, Proc,
};

const TIMEOUT: Duration = Duration::from_secs(60);
/// The capture the legitimate collector reads, and the one the rogues try to inject.
const LEGIT: &str = "zeek-ssh.pcap";
const ROGUE: &str = "zeek-icmp-5-pings.pcap";

/// `tapflow-<role> keygen --out DIR/NAME`: (NAME.key, NAME.pub).
fn keygen(role: &str, dir: &Path, name: &str) -> (String, String) {
    let prefix = dir.join(name);
    let out = run(role, &["keygen".into(), "--out".into(), path(&prefix)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let public = text(&out.stdout);
    assert_eq!(
        public.trim().len(),
        40,
        "keygen prints the public key: {public}"
    );
    (
        path(&dir.join(format!("{name}.key"))),
        path(&dir.join(format!("{name}.pub"))),
    )
}

/// A clients file listing these public-key files.
fn clients(dir: &Path, name: &str, pubs: &[&str]) -> String {
    let body: String = pubs
        .iter()
        .map(|p| tapflow_integration_tests::read_text(Path::new(p)))
        .collect();
    let file = dir.join(name);
    std::fs::write(&file, body).expect("write the clients file");
    path(&file)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `tapflow-<role> ARGS` to completion with no `TAPFLOW_*` variable of the caller's.
fn run(role: &str, args: &[String]) -> Output {
    let mut cmd = Command::new(bin(&format!("tapflow-{role}")));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TAPFLOW_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.args(args).output();
    assert!(out.is_ok(), "tapflow-{role}: {out:?}");
    out.expect("run the binary")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Waits until `proc`'s stderr contains every one of `needles`.
fn wait_for_log(proc: &Proc, needles: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let err = proc.stderr();
        if needles.iter().all(|n| err.contains(n)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} never logged {needles:?}:\n{}", proc.name, proc.stderr());
}

/// The plain run the encrypted ones must equal.
fn plain_baseline(pcap: &Path, n: usize) -> PipelineRun {
    let run = run_pipeline(&[CollectorSpec::pcap(pcap, n)], n, TIMEOUT);
    assert!(
        run.all_exited(),
        "plain run did not finish: {:?}",
        run.aggregator
    );
    let report = run.report.clone().unwrap_or(Value::Null);
    assert_eq!(report["reconciled"], Value::Bool(true), "{report:#}");
    run
}

/// The sum of a counter over the report's processors.
fn processor_counter(report: &Value, name: &str) -> u64 {
    report["processors"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["counters"][name].as_u64()).sum())
        .unwrap_or(0)
}

#[test]
fn curve_on_both_hops_gives_what_plain_gives() {
    let Some(pcaps) = shared_pcaps() else { return };
    let pcap = pcaps.join(LEGIT);
    let plain = plain_baseline(&pcap, 2);

    let keys = tempfile::tempdir().expect("create the keys dir");
    let k = keys.path();
    let (coll_key, coll_pub) = keygen("collector", k, "collector");
    let (proc_key, proc_pub) = keygen("processor", k, "processor");
    let (agg_key, agg_pub) = keygen("aggregator", k, "aggregator");
    let collectors = clients(k, "collectors.clients", &[&coll_pub]);
    let processors = clients(k, "processors.clients", &[&proc_pub]);
    let mut spec = CollectorSpec::pcap(&pcap, 2);
    spec.extra = strings(&["--curve-key", &coll_key, "--curve-server-key", &proc_pub]);
    let processor_flags = [
        "--curve-key",
        &proc_key,
        "--curve-clients",
        &collectors,
        "--curve-server-key",
        &agg_pub,
    ];
    let aggregator_flags = ["--curve-key", &agg_key, "--curve-clients", &processors];
    let curve = start_pipeline_opts(&[spec], 2, &processor_flags, &aggregator_flags).wait(TIMEOUT);
    assert!(
        curve.all_exited(),
        "CURVE run did not finish:\n{}\n{:?}\n{}",
        curve.collectors[0].1,
        curve.processors,
        curve.aggregator.1
    );
    let report = curve.report.clone().unwrap_or(Value::Null);
    assert_eq!(report["reconciled"], Value::Bool(true), "{report:#}");
    let (lines, plain_lines) = (
        curve.conn_log.lines().count(),
        plain.conn_log.lines().count(),
    );
    println!(
        "{LEGIT}: plain {plain_lines} connections, CURVE {lines}; processors auth_accepted {}, auth_rejected {}; aggregator auth_rejected {}",
        processor_counter(&report, "auth_accepted"),
        processor_counter(&report, "auth_rejected"),
        report["auth_rejected"]
    );
    assert!(lines > 0);
    assert_eq!(
        curve.conn_log, plain.conn_log,
        "CURVE and plain conn logs differ"
    );
    assert!(
        processor_counter(&report, "auth_accepted") >= 2,
        "{report:#}"
    );
    assert_eq!(processor_counter(&report, "auth_rejected"), 0, "{report:#}");
    assert_eq!(report["auth_rejected"], Value::from(0), "{report:#}");
    for (_, err) in curve.processors.iter().chain([&curve.aggregator]) {
        assert!(
            !err.contains("CURVE client rejected") && !err.contains("failed the CURVE handshake"),
            "{err}"
        );
    }
}

/// A legitimate collector -> processor -> aggregator pipeline with CURVE, started in steps so
/// rogues can be set on it before the legitimate collector sends anything.
struct Secured {
    dir: tempfile::TempDir,
    keys: PathBuf,
    aggregator: Proc,
    processor: Proc,
    processor_port: u16,
    aggregator_port: u16,
    coll_key: String,
    proc_pub: String,
    agg_pub: String,
}

impl Secured {
    fn start() -> Secured {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).expect("create the keys dir");
        let (coll_key, coll_pub) = keygen("collector", &keys, "collector");
        let (proc_key, proc_pub) = keygen("processor", &keys, "processor");
        let (agg_key, agg_pub) = keygen("aggregator", &keys, "aggregator");
        let collectors = clients(&keys, "collectors.clients", &[&coll_pub]);
        let processors = clients(&keys, "processors.clients", &[&proc_pub]);
        let ports = free_ports(2);
        let d = dir.path();
        let aggregator = Proc::spawn(
            "aggregator",
            &bin("tapflow-aggregator"),
            &strings(&[
                "--listen",
                &endpoint(ports[0]),
                "--processors",
                "1",
                "--exit-on-eos",
                "--health-log",
                &path(&d.join("health.jsonl")),
                "--conn-log",
                &path(&d.join("conn.jsonl")),
                "--curve-key",
                &agg_key,
                "--curve-clients",
                &processors,
            ]),
            d,
        );
        let processor = Proc::spawn(
            "processor",
            &bin("tapflow-processor"),
            &strings(&[
                "--listen",
                &endpoint(ports[1]),
                "--aggregator",
                &endpoint(ports[0]),
                "--collectors",
                "1",
                "--exit-on-eos",
                "--name",
                "processor0",
                "--curve-key",
                &proc_key,
                "--curve-clients",
                &collectors,
                "--curve-server-key",
                &agg_pub,
            ]),
            d,
        );
        Secured {
            aggregator_port: ports[0],
            processor_port: ports[1],
            dir,
            keys,
            aggregator,
            processor,
            coll_key,
            proc_pub,
            agg_pub,
        }
    }

    /// A collector of `pcap` to `port`, with `security` flags.
    fn collector(&self, name: &str, pcap: &Path, port: u16, security: &[&str]) -> Proc {
        let mut args = strings(&[
            "--pcap",
            &path(pcap),
            "--name",
            name,
            "--processor",
            &endpoint(port),
            "--linger-ms",
            "2000",
        ]);
        args.extend(strings(security));
        Proc::spawn(name, &bin("tapflow-collector"), &args, self.dir.path())
    }

    /// Runs the legitimate collector over `pcap` and waits for the pipeline to finish: the
    /// report and the conn log.
    fn finish(mut self, pcap: &Path) -> (Value, String, String, String) {
        let coll_key = self.coll_key.clone();
        let proc_pub = self.proc_pub.clone();
        let mut legit = self.collector(
            "legit",
            pcap,
            self.processor_port,
            &["--curve-key", &coll_key, "--curve-server-key", &proc_pub],
        );
        let deadline = Instant::now() + TIMEOUT;
        let codes = [
            legit.wait_until(deadline),
            self.processor.wait_until(deadline),
            self.aggregator.wait_until(deadline),
        ];
        let (perr, aerr) = (self.processor.stderr(), self.aggregator.stderr());
        assert!(
            codes.iter().all(|c| c.is_some_and(|s| s.success())),
            "{codes:?}\ncollector: {}\nprocessor: {perr}\naggregator: {aerr}",
            legit.stderr()
        );
        let d = self.dir.path();
        let report = std::fs::read_to_string(d.join("health.jsonl"))
            .ok()
            .and_then(|s| s.lines().last().and_then(|l| serde_json::from_str(l).ok()))
            .unwrap_or(Value::Null);
        let conn = std::fs::read_to_string(d.join("conn.jsonl")).unwrap_or_default();
        (report, conn, perr, aerr)
    }
}

/// Only the legitimate collector is in the report, and it reconciles.
fn only_legit_collector(report: &Value) {
    assert_eq!(report["reconciled"], Value::Bool(true), "{report:#}");
    let senders: Vec<&str> = report["collectors"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["sender"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(senders, ["legit"], "{report:#}");
}

#[test]
fn collectors_without_an_authorized_key_cannot_inject() {
    let Some(pcaps) = shared_pcaps() else { return };
    let baseline = plain_baseline(&pcaps.join(LEGIT), 1);
    let s = Secured::start();
    // One rogue knows the processor's public key (it is public) but has its own key pair, not
    // in the processor's clients file; the other speaks no CURVE at all.
    let (rogue_key, _) = keygen("collector", &s.keys, "rogue");
    let proc_pub = s.proc_pub.clone();
    let rogues = [
        s.collector(
            "rogue-key",
            &pcaps.join(ROGUE),
            s.processor_port,
            &["--curve-key", &rogue_key, "--curve-server-key", &proc_pub],
        ),
        s.collector(
            "rogue-plain",
            &pcaps.join(ROGUE),
            s.processor_port,
            &["--plain"],
        ),
    ];
    wait_for_log(
        &s.processor,
        &["CURVE client rejected", "failed the CURVE handshake"],
        Duration::from_secs(20),
    );
    // The refused collector says so itself, not only the processor.
    wait_for_log(
        &rogues[0],
        &["the server refused our CURVE handshake"],
        Duration::from_secs(20),
    );
    let (report, conn, perr, _) = s.finish(&pcaps.join(LEGIT));
    drop(rogues);
    let rejected = processor_counter(&report, "auth_rejected");
    let handshake = processor_counter(&report, "auth_rejected_handshake");
    println!(
        "processor: auth_rejected {rejected} (unknown key {}, handshake {handshake}), auth_accepted {}; conn log {} lines (plain run without rogues: {})",
        rejected - handshake,
        processor_counter(&report, "auth_accepted"),
        conn.lines().count(),
        baseline.conn_log.lines().count()
    );
    let warnings: Vec<&str> = perr.lines().filter(|l| l.contains("WARN")).collect();
    println!("processor warnings:\n  {}", warnings.join("\n  "));
    assert!(
        rejected > handshake,
        "the rogue key was not counted: {report:#}"
    );
    assert!(handshake > 0, "the plain rogue was not counted: {report:#}");
    assert!(perr.contains("peer=127.0.0.1"), "{perr}");
    assert_eq!(
        conn, baseline.conn_log,
        "the conn log is not the legitimate capture's alone"
    );
    only_legit_collector(&report);
}

#[test]
fn processors_without_an_authorized_key_cannot_inject() {
    let Some(pcaps) = shared_pcaps() else { return };
    let baseline = plain_baseline(&pcaps.join(LEGIT), 1);
    let s = Secured::start();
    let d = s.dir.path().to_path_buf();
    // Rogue processor A: its own key pair (not in the aggregator's clients file), the
    // aggregator's public key, and a collector of its own. Rogue processor B: no CURVE.
    let (rp_key, rp_pub) = keygen("processor", &s.keys, "rogue-processor");
    let (rc_key, rc_pub) = keygen("collector", &s.keys, "rogue-collector");
    let rogue_clients = clients(&s.keys, "rogue.clients", &[&rc_pub]);
    let ports = free_ports(2);
    let agg = endpoint(s.aggregator_port);
    let agg_pub = s.agg_pub.clone();
    let rogue_processor = |name: &str, port: u16, security: &[&str]| {
        let mut args = strings(&[
            "--listen",
            &endpoint(port),
            "--aggregator",
            &agg,
            "--collectors",
            "1",
            "--name",
            name,
        ]);
        args.extend(strings(security));
        Proc::spawn(name, &bin("tapflow-processor"), &args, &d)
    };
    let rogues = [
        rogue_processor(
            "rogue-processor-key",
            ports[0],
            &[
                "--curve-key",
                &rp_key,
                "--curve-clients",
                &rogue_clients,
                "--curve-server-key",
                &agg_pub,
            ],
        ),
        rogue_processor("rogue-processor-plain", ports[1], &["--plain"]),
        s.collector(
            "rogue-collector-key",
            &pcaps.join(ROGUE),
            ports[0],
            &["--curve-key", &rc_key, "--curve-server-key", &rp_pub],
        ),
        s.collector(
            "rogue-collector-plain",
            &pcaps.join(ROGUE),
            ports[1],
            &["--plain"],
        ),
    ];
    wait_for_log(
        &s.aggregator,
        &["CURVE client rejected", "failed the CURVE handshake"],
        Duration::from_secs(20),
    );
    // The refused processor says so itself (it checks at its heartbeat, once a second).
    wait_for_log(
        &rogues[0],
        &["the server refused our CURVE handshake"],
        Duration::from_secs(20),
    );
    let (report, conn, _, aerr) = s.finish(&pcaps.join(LEGIT));
    drop(rogues);
    let rejected = report["auth_rejected"].as_u64().unwrap_or(0);
    println!(
        "aggregator: auth_rejected {rejected}; conn log {} lines (plain run without rogues: {})",
        conn.lines().count(),
        baseline.conn_log.lines().count()
    );
    let warnings: Vec<&str> = aerr.lines().filter(|l| l.contains("WARN")).collect();
    println!("aggregator warnings:\n  {}", warnings.join("\n  "));
    assert!(rejected >= 2, "{report:#}");
    assert_eq!(
        conn, baseline.conn_log,
        "the conn log is not the legitimate pipeline's alone"
    );
    only_legit_collector(&report);
    let processors: Vec<&str> = report["processors"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["processor"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(processors, ["processor0"], "{report:#}");
}

/// Runs `tapflow-<role> ARGS` expecting exit 2 with one problem line that contains `want`.
fn config_error(role: &str, args: &[&str], want: &str) {
    let out = run(role, &strings(args));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{role} {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let problems: Vec<&str> = err.lines().skip(1).collect();
    assert!(
        err.starts_with(&format!("tapflow-{role}: invalid configuration:\n")),
        "{err}"
    );
    assert_eq!(problems.len(), 1, "{role} {args:?}: {err}");
    assert!(
        problems[0].contains(want),
        "{role} {args:?}: want {want:?} in {err}"
    );
    println!("tapflow-{role}: exit 2: {}", problems[0].trim());
}

#[test]
fn configuration_mistakes_exit_2_with_one_line() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let d = dir.path();
    config_error(
        "processor",
        &[
            "--listen",
            "tcp://10.1.2.3:5601",
            "--aggregator",
            "tcp://127.0.0.1:5700",
            "--plain",
        ],
        "--plain is for loopback only, and tcp://10.1.2.3:5601 is not",
    );
    config_error(
        "collector",
        &[
            "--pcap",
            "x.pcap",
            "--processor",
            "tcp://192.0.2.1:5601",
            "--plain",
        ],
        "tcp://192.0.2.1:5601 is not",
    );
    config_error(
        "aggregator",
        &[
            "--listen",
            "tcp://0.0.0.0:5700",
            "--processors",
            "1",
            "--plain",
        ],
        "tcp://0.0.0.0:5700 is not",
    );
    config_error(
        "aggregator",
        &["--listen", "tcp://127.0.0.1:5700", "--processors", "1"],
        "links are encrypted: give --curve-key FILE and --curve-clients FILE",
    );
    config_error(
        "collector",
        &["--pcap", "x.pcap", "--processor", "tcp://127.0.0.1:5601"],
        "links are encrypted: give --curve-key FILE and --curve-server-key FILE",
    );
    let (key, public) = keygen("collector", d, "c");
    let missing = path(&d.join("missing.key"));
    config_error(
        "collector",
        &[
            "--pcap",
            "x.pcap",
            "--processor",
            "tcp://10.0.0.5:5601",
            "--curve-key",
            &missing,
            "--curve-server-key",
            &public,
        ],
        "missing.key",
    );
    let flags = [
        "--pcap",
        "x.pcap",
        "--processor",
        "tcp://10.0.0.5:5601",
        "--curve-key",
        &key,
        "--curve-server-key",
        &public,
    ];
    // Valid: --check-config shows the paths, never the secret.
    let mut args = strings(&flags);
    args.push("--check-config".into());
    let out = run("collector", &args);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("curve_key = \"{key}\"")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("curve_server_key = \"{public}\"")),
        "{stdout}"
    );
    let secret = std::fs::read_to_string(&key).unwrap_or_default();
    let secret = secret
        .lines()
        .find_map(|l| l.strip_prefix("secret = "))
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned();
    assert_eq!(secret.len(), 40);
    assert!(!stdout.contains(&secret) && !text(&out.stderr).contains(&secret));
    // A secret key others can read is refused, as ssh refuses such a private key.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))
        .expect("make the key world-readable");
    config_error("collector", &flags, "mode 0644");
    // keygen never overwrites.
    let out = run(
        "processor",
        &strings(&["keygen", "--out", &path(&d.join("c"))]),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("exists: not overwritten"),
        "{}",
        text(&out.stderr)
    );
    // Flags and a subcommand do not mix.
    let out = run("processor", &strings(&["--plain", "keygen", "--out", "x"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
