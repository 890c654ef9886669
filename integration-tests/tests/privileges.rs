//! The collector without root: an unprivileged user (nobody) running a copy of the binary with
//! file capabilities `cap_net_raw,cap_net_admin=ep` captures live on `lo`, and once the capture
//! is open it holds no effective capability at all, keeping only those two in its permitted set
//! (to reopen a failed interface). Without the file capabilities it is refused with exit 3 and
//! a message that says what it needs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::{bin, endpoint, free_ports, is_root, Proc};

/// A copy of the collector that `nobody` can execute, in a directory it can enter.
fn copy_collector(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let copy = dir.join("tapflow-collector");
    std::fs::copy(bin("tapflow-collector"), &copy).expect("copy the collector binary");
    for (p, mode) in [(dir, 0o755), (copy.as_path(), 0o755)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .expect("set the mode of the collector copy or its directory");
    }
    copy
}

/// `collector args` as nobody:nogroup with no inheritable capabilities.
fn as_nobody(name: &str, collector: &Path, args: &[&str], dir: &Path) -> Proc {
    let mut all: Vec<String> = [
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--inh-caps=-all",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.push(collector.display().to_string());
    all.extend(args.iter().map(|s| s.to_string()));
    Proc::spawn(name, Path::new("setpriv"), &all, dir)
}

/// A line of /proc/PID/status, e.g. "CapEff".
fn status(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .map(|l| l[key.len() + 1..].trim().to_owned())
        .unwrap_or_default()
}

fn wait_for(p: &Proc, text: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if p.stderr().contains(text) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn collector_as_nobody_with_file_capabilities_captures_and_keeps_none_effective() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("create a temp dir");
    let d = dir.path();
    let collector = copy_collector(d);
    let setcap = Command::new("setcap")
        .args(["cap_net_raw,cap_net_admin=ep"])
        .arg(&collector)
        .output()
        .expect("run setcap");
    assert!(
        setcap.status.success(),
        "{}",
        String::from_utf8_lossy(&setcap.stderr)
    );

    let ports = free_ports(3);
    let (agg, proc_port, udp) = (ports[0], ports[1], ports[2]);
    let health = d.join("health.jsonl");
    let agg_args: Vec<String> = [
        "--listen".into(),
        endpoint(agg),
        "--processors".into(),
        "1".into(),
        "--exit-on-eos".into(),
        "--plain".into(),
        "--health-log".into(),
        health.display().to_string(),
    ]
    .to_vec();
    let mut aggregator = Proc::spawn("aggregator", &bin("tapflow-aggregator"), &agg_args, d);
    let proc_args: Vec<String> = [
        "--listen".into(),
        endpoint(proc_port),
        "--aggregator".into(),
        endpoint(agg),
        "--collectors".into(),
        "1".into(),
        "--exit-on-eos".into(),
        "--plain".into(),
    ]
    .to_vec();
    let mut processor = Proc::spawn("processor", &bin("tapflow-processor"), &proc_args, d);
    let filter = format!("udp and port {udp}");
    let target = endpoint(proc_port);
    let mut c = as_nobody(
        "collector",
        &collector,
        &[
            "--interface",
            "lo",
            "--plain",
            "--ignore-checksums",
            "--immediate",
            "--filter",
            &filter,
            "--processor",
            &target,
            "--name",
            "unprivileged",
        ],
        d,
    );
    assert!(wait_for(&c, "capture open"), "{}", c.stderr());
    let pid = c.child.id();
    let (uid, eff, prm, amb) = (
        status(pid, "Uid"),
        status(pid, "CapEff"),
        status(pid, "CapPrm"),
        status(pid, "CapAmb"),
    );
    eprintln!("collector as nobody: Uid {uid}, CapEff {eff}, CapPrm {prm}, CapAmb {amb}");
    assert!(uid.starts_with("65534"), "not running as nobody: {uid}");
    assert_eq!(
        eff, "0000000000000000",
        "capabilities still effective after the open"
    );
    // CAP_NET_ADMIN (12) and CAP_NET_RAW (13), for reopening a failed interface; nothing else.
    assert_eq!(prm, "0000000000003000");
    assert_eq!(amb, "0000000000000000");

    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    for i in 0..50u32 {
        sock.send_to(&i.to_be_bytes(), ("127.0.0.1", udp))
            .expect("send a datagram");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status_c = c.wait_until(deadline);
    assert!(status_c.is_some_and(|s| s.success()), "{}", c.stderr());
    for p in [&mut processor, &mut aggregator] {
        let s = p.wait_until(deadline);
        assert!(s.is_some_and(|s| s.success()), "{}: {}", p.name, p.stderr());
    }
    let report = std::fs::read_to_string(&health)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["kind"] == "accounting");
    assert!(report.is_some(), "no report: {}", aggregator.stderr());
    let report: Value = report.expect("the accounting report");
    let row = &report["collectors"][0];
    eprintln!("unprivileged collector: {row}");
    assert_eq!(report["reconciled"], true, "{report}");
    assert_eq!(row["packets_read"], 50, "{row}");
}

#[test]
fn collector_as_nobody_without_capabilities_is_refused_with_what_it_needs() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("create a temp dir");
    let collector = copy_collector(dir.path());
    let ports = free_ports(1);
    let target = endpoint(ports[0]);
    let mut c = as_nobody(
        "collector",
        &collector,
        &[
            "--interface",
            "lo",
            "--plain",
            "--processor",
            &target,
            "--linger-ms",
            "200",
        ],
        dir.path(),
    );
    let status = c.wait_until(Instant::now() + Duration::from_secs(20));
    let log = c.stderr();
    eprintln!("{log}");
    assert_eq!(status.and_then(|s| s.code()), Some(3), "{log}");
    assert!(log.contains("needs CAP_NET_RAW"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
