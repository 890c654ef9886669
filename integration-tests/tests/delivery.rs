//! A collector knows whether its end-of-stream reached each processor (issue 21): with nothing
//! listening on a processor's port, or a processor that refuses the collector's CURVE key, it
//! names the link in an ERROR line and in its final line's `undelivered`, and exits 5 once the
//! linger is over; with a processor that takes it, it exits 0 and says nothing of the kind.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tapflow_integration_tests::craft::{Ipv4, PcapWriter};
use tapflow_integration_tests::{bin, endpoint, free_ports, Proc};

/// The collector's exit code when an end-of-stream was not delivered (README, exit codes).
const UNDELIVERED: i32 = 5;
/// The collectors' `--linger-ms` here: how long they wait for delivery.
const LINGER_MS: u64 = 1000;

/// A few UDP datagrams: something to deliver.
fn small_capture(path: &Path) {
    let mut w = PcapWriter::create(path);
    for i in 0..20u16 {
        let p = Ipv4::udp(([10, 0, 0, 1], 5000 + i), ([10, 0, 0, 2], 53), b"query");
        w.packet(1_700_000_000_000_000 + u64::from(i) * 1000, &p);
    }
    w.finish();
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A collector of a small capture to `processor` with `security` flags, run to its end: its
/// exit code, its log, and how long it took.
fn collector(dir: &Path, processor: &str, security: &[&str]) -> (Option<i32>, String, Duration) {
    let pcap = dir.join("small.pcap");
    small_capture(&pcap);
    let linger = LINGER_MS.to_string();
    let mut args = strings(&[
        "--pcap",
        &path(&pcap),
        "--processor",
        processor,
        "--name",
        "tap",
        "--linger-ms",
        &linger,
    ]);
    args.extend(strings(security));
    let started = Instant::now();
    let mut c = Proc::spawn("collector", &bin("tapflow-collector"), &args, dir);
    let status = c.wait_until(started + Duration::from_secs(30));
    (status.and_then(|s| s.code()), c.stderr(), started.elapsed())
}

/// A processor listening on `port` (its aggregator is not running: it need not be).
fn processor(dir: &Path, port: u16, aggregator: u16, security: &[&str]) -> Proc {
    let mut args = strings(&[
        "--listen",
        &endpoint(port),
        "--aggregator",
        &endpoint(aggregator),
        "--collectors",
        "1",
        "--name",
        "processor0",
    ]);
    args.extend(strings(security));
    Proc::spawn("processor", &bin("tapflow-processor"), &args, dir)
}

/// Waits until `p` logs `text`.
fn wait_for(p: &Proc, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !p.stderr().contains(text) {
        assert!(Instant::now() < deadline, "{}: {}", p.name, p.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tapflow-<role> keygen --out DIR/NAME`: (NAME.key, NAME.pub).
fn keygen(role: &str, dir: &Path, name: &str) -> (String, String) {
    let out = Command::new(bin(&format!("tapflow-{role}")))
        .args(["keygen", "--out", &path(&dir.join(name))])
        .output()
        .expect("run keygen");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    (
        path(&dir.join(format!("{name}.key"))),
        path(&dir.join(format!("{name}.pub"))),
    )
}

/// The collector said it did not deliver to `to`, why, and exited 5 by the linger and a margin.
fn undelivered(code: Option<i32>, log: &str, took: Duration, to: &str, why: &str) {
    assert_eq!(code, Some(UNDELIVERED), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("end-of-stream not delivered to"))
        .expect("an ERROR line about the end-of-stream");
    assert!(line.contains(to) && line.contains(why), "{line}");
    let last = log
        .lines()
        .find(|l| l.contains("collector finished"))
        .expect("the final line");
    assert!(last.contains(&format!("undelivered=[\"{to}\"]")), "{last}");
    assert!(
        took < Duration::from_secs(10),
        "bounded by the linger: {took:?}"
    );
}

#[test]
fn nothing_listening_on_the_processor_port_exits_5_and_names_it() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let nobody = endpoint(free_ports(1)[0]);
    let (code, log, took) = collector(dir.path(), &nobody, &["--plain"]);
    // Nothing to deliver to: the collector waits out the linger.
    assert!(took >= Duration::from_millis(LINGER_MS), "{took:?}");
    undelivered(
        code,
        &log,
        took,
        &nobody,
        "no processor completed a handshake",
    );
}

#[test]
fn a_processor_refusing_our_curve_key_exits_5_and_says_so() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let d = dir.path();
    let (proc_key, proc_pub) = keygen("processor", d, "processor");
    let (coll_key, _) = keygen("collector", d, "collector");
    let (_, other_pub) = keygen("collector", d, "other");
    let (_, agg_pub) = keygen("aggregator", d, "aggregator");
    // The processor lists another collector's key, not this one's.
    let ports = free_ports(2);
    let p = processor(
        d,
        ports[0],
        ports[1],
        &[
            "--curve-key",
            &proc_key,
            "--curve-clients",
            &other_pub,
            "--curve-server-key",
            &agg_pub,
        ],
    );
    wait_for(&p, "processor started");
    let to = endpoint(ports[0]);
    let (code, log, took) = collector(
        d,
        &to,
        &["--curve-key", &coll_key, "--curve-server-key", &proc_pub],
    );
    undelivered(code, &log, took, &to, "refused our CURVE key");
    assert!(
        p.stderr().contains("CURVE client rejected"),
        "{}",
        p.stderr()
    );
}

#[test]
fn a_processor_that_takes_the_end_of_stream_gives_exit_0() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let ports = free_ports(2);
    let p = processor(
        dir.path(),
        ports[0],
        ports[1],
        &["--plain", "--exit-on-eos"],
    );
    wait_for(&p, "processor started");
    let (code, log, took) = collector(dir.path(), &endpoint(ports[0]), &["--plain"]);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        !log.contains("not delivered") && !log.contains("undelivered"),
        "{log}"
    );
    assert!(took < Duration::from_millis(LINGER_MS), "no wait: {took:?}");
    // The processor has the end-of-stream: it finishes, having received every summary.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.stderr().contains("processor finished") {
        assert!(Instant::now() < deadline, "{}", p.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(p.stderr().contains("received=20 gaps=0"), "{}", p.stderr());
}
