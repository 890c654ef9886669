//! A capture interface that disappears under a live collector (a veth deleted in a namespace
//! this test makes): a clear error, no spinning while it is gone, heartbeats that keep the
//! collector alive for its processors, capture resumed when the interface is back, and one
//! accounting across both handles. With `--interface-retry-s`, the collector gives up after that
//! long, exits 1 and still ends its stream, so nothing downstream hangs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::{bin, is_root, Proc};

/// A network namespace with a veth pair `va0` (sends) <-> `vb0` (captured), removed on drop.
struct Netns {
    name: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("tfi{}-{tag}", std::process::id());
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        let ns = Netns { name };
        ns.add_veth();
        ns
    }

    fn add_veth(&self) {
        let n = &self.name;
        ip(&[
            "-n", n, "link", "add", "va0", "type", "veth", "peer", "name", "vb0",
        ]);
        ip(&["-n", n, "link", "set", "va0", "up"]);
        ip(&["-n", n, "link", "set", "vb0", "up"]);
        ip(&["-n", n, "addr", "add", "10.99.0.1/24", "dev", "va0"]);
        // Full checksums on the wire, as a NIC would put them (veths offload them otherwise).
        let out = Command::new("ip")
            .args(["netns", "exec", n, "ethtool", "-K", "va0", "tx", "off"])
            .output()
            .expect("run ethtool in the namespace");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A neighbour entry, so datagrams to .2 go out va0 without ARP.
        ip(&[
            "-n",
            n,
            "neigh",
            "add",
            "10.99.0.2",
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "va0",
        ]);
    }

    fn del_veth(&self) {
        ip(&["-n", &self.name, "link", "del", "va0"]);
    }

    /// Sends `n` UDP datagrams 10.99.0.1:40000 -> 10.99.0.2:9999 out of va0.
    fn send_udp(&self, n: usize) {
        let script = format!(
            "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('10.99.0.1', 40000))\nfor i in range({n}):\n    \
             s.sendto(b'tapflow %d' % i, ('10.99.0.2', 9999))\n    time.sleep(0.002)\n"
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "python3", "-c", &script])
            .output()
            .expect("run python3 in the namespace");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `program args` inside the namespace, as a [`Proc`].
    fn spawn(&self, name: &str, program: &Path, args: &[&str], dir: &Path) -> Proc {
        let mut all: Vec<String> = vec!["netns".into(), "exec".into(), self.name.clone()];
        all.push(program.display().to_string());
        all.extend(args.iter().map(|s| s.to_string()));
        Proc::spawn(name, Path::new("ip"), &all, dir)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// CPU seconds a process has used so far.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

fn wait_for(proc: &Proc, text: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if proc.stderr().contains(text) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

struct Lab {
    ns: Netns,
    dir: tempfile::TempDir,
    aggregator: Proc,
    processor: Proc,
    collector: Proc,
}

fn start(tag: &str, collector_extra: &[&str]) -> Lab {
    let ns = Netns::new(tag);
    let dir = tempfile::tempdir().expect("create a temp dir");
    let d = dir.path();
    let health = d.join("health.jsonl").display().to_string();
    let conn = d.join("conn.jsonl").display().to_string();
    let alerts = d.join("alerts.jsonl").display().to_string();
    let aggregator = ns.spawn(
        "aggregator",
        &bin("tapflow-aggregator"),
        &[
            "--plain",
            "--listen",
            "tcp://127.0.0.1:5700",
            "--processors",
            "1",
            "--exit-on-eos",
            "--health-log",
            &health,
            "--conn-log",
            &conn,
            "--alerts-log",
            &alerts,
        ],
        d,
    );
    // Declared dead after 2 s of silence: the outages below are longer, so heartbeats must go on.
    let processor = ns.spawn(
        "processor",
        &bin("tapflow-processor"),
        &[
            "--plain",
            "--listen",
            "tcp://127.0.0.1:5601",
            "--aggregator",
            "tcp://127.0.0.1:5700",
            "--collectors",
            "1",
            "--exit-on-eos",
            "--dead-after-ms",
            "2000",
            "--name",
            "p0",
        ],
        d,
    );
    let mut args = vec![
        "--plain",
        "--interface",
        "vb0",
        "--immediate",
        "--name",
        "tap",
        "--processor",
        "tcp://127.0.0.1:5601",
    ];
    args.extend_from_slice(collector_extra);
    let collector = ns.spawn("collector", &bin("tapflow-collector"), &args, d);
    assert!(
        wait_for(&collector, "capture open", Duration::from_secs(10)),
        "the collector did not open vb0: {}",
        collector.stderr()
    );
    Lab {
        ns,
        dir,
        aggregator,
        processor,
        collector,
    }
}

fn report(lab: &Lab) -> Value {
    let text = std::fs::read_to_string(lab.dir.path().join("health.jsonl")).unwrap_or_default();
    let report = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["kind"] == "accounting");
    assert!(
        report.is_some(),
        "no accounting report; aggregator: {}",
        lab.aggregator.stderr()
    );
    report.expect("the accounting report")
}

fn finish(lab: &mut Lab) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for p in [&mut lab.processor, &mut lab.aggregator] {
        let status = p.wait_until(deadline);
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not end: {}",
            p.name,
            p.stderr()
        );
    }
}

#[test]
fn interface_deleted_and_recreated_capture_resumes() {
    if !is_root() {
        return;
    }
    let mut lab = start("back", &[]);
    lab.ns.send_udp(100);
    std::thread::sleep(Duration::from_millis(500));
    lab.ns.del_veth();
    assert!(
        wait_for(
            &lab.collector,
            "The interface disappeared",
            Duration::from_secs(5)
        ),
        "{}",
        lab.collector.stderr()
    );
    // Gone for 4 s (twice the processor's --dead-after-ms): the collector waits without
    // spinning and its heartbeats keep it alive downstream.
    let pid = lab.collector.child.id();
    let before = cpu_s(pid);
    std::thread::sleep(Duration::from_secs(4));
    let spent = cpu_s(pid) - before;
    eprintln!("collector CPU while the interface was gone: {spent:.2} s in 4 s");
    assert!(
        spent < 0.5,
        "the collector spins while the interface is gone: {spent} s"
    );
    assert!(
        lab.collector.child.try_wait().ok().flatten().is_none(),
        "the collector exited"
    );
    lab.ns.add_veth();
    assert!(
        wait_for(&lab.collector, "capture reopened", Duration::from_secs(40)),
        "{}",
        lab.collector.stderr()
    );
    lab.ns.send_udp(100);
    std::thread::sleep(Duration::from_millis(500));
    ip(&[
        "netns",
        "exec",
        &lab.ns.name,
        "kill",
        "-TERM",
        &pid.to_string(),
    ]);
    let status = lab
        .collector
        .wait_until(Instant::now() + Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        lab.collector.stderr()
    );
    finish(&mut lab);

    let log = lab.collector.stderr();
    eprintln!("{log}");
    let report = report(&lab);
    let c = &report["collectors"][0];
    eprintln!("collector row: {c}");
    assert_eq!(report["reconciled"], true, "{report}");
    assert_eq!(c["status"], "interrupted", "{c}");
    // The datagram flow, one session across the outage: 200 packets.
    let conns = std::fs::read_to_string(lab.dir.path().join("conn.jsonl")).unwrap_or_default();
    let udp: Vec<Value> = conns
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["id.resp_h"] == "10.99.0.2" && r["id.resp_p"] == 9999)
        .collect();
    eprintln!("sessions to 10.99.0.2:9999: {udp:?}");
    assert_eq!(udp.len(), 1, "the flow split across the outage: {udp:?}");
    assert_eq!(udp[0]["orig_pkts"], 200, "{udp:?}");
    assert!(c["packets_read"].as_u64() >= Some(200), "{c}");
    let alerts = std::fs::read_to_string(lab.dir.path().join("alerts.jsonl")).unwrap_or_default();
    assert!(
        !alerts.contains("collector_silent"),
        "declared dead while waiting for its interface: {alerts}"
    );
}

#[test]
fn interface_gone_for_good_collector_gives_up_and_ends_its_stream() {
    if !is_root() {
        return;
    }
    let mut lab = start("gone", &["--interface-retry-s", "2"]);
    lab.ns.send_udp(20);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    lab.ns.del_veth();
    let status = lab
        .collector
        .wait_until(Instant::now() + Duration::from_secs(30));
    let took = t0.elapsed();
    let log = lab.collector.stderr();
    eprintln!("{log}\ncollector exited {status:?} {took:?} after the interface went");
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(log.contains("gave up reopening after"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    finish(&mut lab);
    let report = report(&lab);
    let c = &report["collectors"][0];
    eprintln!("collector row: {c}");
    assert_eq!(report["reconciled"], true, "{report}");
    assert!(
        c["status"].as_str().is_some_and(|s| s.contains("gave up")),
        "{c}"
    );
    assert!(c["packets_read"].as_u64() >= Some(20), "{c}");
}
