//! The aggregator's logs under faults (issue 21): a full disk loses whole lines only, counts
//! them in the accounting report (which is always produced) and ends the run with exit 1;
//! a log path that is a symlink is refused; a rerun appends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::{bin, endpoint, free_ports, is_root, shared_pcaps, Proc};

const TIMEOUT: Duration = Duration::from_secs(120);

/// What one run left: exit codes (collector, processor, aggregator) and the aggregator's stderr.
struct Run {
    codes: [Option<i32>; 3],
    stderr: String,
}

/// One collector over `pcap`, one processor, and an aggregator writing its logs where `logs`
/// says (flag, path); every process's stderr goes to `dir`.
fn run(dir: &Path, pcap: &Path, logs: &[(&str, &Path)]) -> Run {
    let ports = free_ports(2);
    let (agg, proc_port) = (endpoint(ports[0]), endpoint(ports[1]));
    let mut args: Vec<String> = vec![
        "--plain".into(),
        "--listen".into(),
        agg.clone(),
        "--processors".into(),
        "1".into(),
        "--exit-on-eos".into(),
    ];
    for (flag, path) in logs {
        args.push(flag.to_string());
        args.push(path.display().to_string());
    }
    let mut aggregator = Proc::spawn("aggregator", &bin("tapflow-aggregator"), &args, dir);
    let processor_args: Vec<String> = [
        "--plain",
        "--listen",
        &proc_port,
        "--aggregator",
        &agg,
        "--collectors",
        "1",
        "--exit-on-eos",
        "--name",
        "processor0",
    ]
    .map(String::from)
    .to_vec();
    let mut processor = Proc::spawn("processor", &bin("tapflow-processor"), &processor_args, dir);
    let collector_args: Vec<String> = [
        "--plain",
        "--pcap",
        &pcap.display().to_string(),
        "--name",
        "collector0",
        "--processor",
        &proc_port,
    ]
    .map(String::from)
    .to_vec();
    let mut collector = Proc::spawn("collector", &bin("tapflow-collector"), &collector_args, dir);
    let deadline = Instant::now() + TIMEOUT;
    let code = |p: &mut Proc| p.wait_until(deadline).and_then(|s| s.code());
    let codes = [
        code(&mut collector),
        code(&mut processor),
        code(&mut aggregator),
    ];
    Run {
        codes,
        stderr: aggregator.stderr(),
    }
}

fn capture(name: &str) -> Option<PathBuf> {
    Some(shared_pcaps()?.join(name))
}

fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read a log");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a partial last line in {}",
        path.display()
    );
    text.lines()
        .map(|l| serde_json::from_str(l).expect("every line of the log is JSON"))
        .collect()
}

/// The last accounting report in the health log.
fn report(health: &Path) -> Value {
    json_lines(health)
        .into_iter()
        .rev()
        .find(|v| v["kind"] == "accounting")
        .expect("an accounting report in the health log")
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// A tmpfs of `size` at `dir`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).expect("create the mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs at {}", dir.display());
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_conn_log_keeps_whole_lines_and_the_report_counts_what_it_lost() {
    let Some(pcap) = capture("stopddos-pkt-tcp-synflood-spoofed.pcap") else {
        return;
    };
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // About 37,600 records (over 10 MB of conn log) for a 1 MB filesystem.
    let small = Tmpfs::mount(dir.path().join("small"), "1m");
    let conn = small.0.join("conn.jsonl");
    let (health, alerts) = (
        dir.path().join("health.jsonl"),
        dir.path().join("alerts.jsonl"),
    );
    let r = run(
        dir.path(),
        &pcap,
        &[
            ("--conn-log", &conn),
            ("--health-log", &health),
            ("--alerts-log", &alerts),
        ],
    );
    assert_eq!(r.codes, [Some(0), Some(0), Some(1)], "{}", r.stderr);
    assert!(
        r.stderr.contains("output lost: conn_log: ") && r.stderr.contains("No space left"),
        "{}",
        r.stderr
    );
    let written = json_lines(&conn).len() as u64;
    let report = report(&health);
    let released = n(&report["conns"]["released"]);
    let unwritten = n(&report["records_unwritten"]["conn_log"]);
    assert!(
        written > 1000 && unwritten > 10_000,
        "{written} {unwritten}"
    );
    assert_eq!(written + unwritten, released, "{report:#}");
    assert_eq!(report["complete"], Value::Bool(false));
    assert_eq!(report["reconciled"], Value::Bool(true));
    let alerts = json_lines(&alerts);
    assert!(
        alerts.iter().any(|a| a["kind"] == "syn_flood"),
        "detection went on: {alerts:?}"
    );
}

#[test]
fn an_alerts_log_on_dev_full_loses_its_alerts_only_and_says_how_many() {
    let Some(pcap) = capture("esnet-masscan-tcp-0-1000.pcap") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (health, conn) = (
        dir.path().join("health.jsonl"),
        dir.path().join("conn.jsonl"),
    );
    let r = run(
        dir.path(),
        &pcap,
        &[
            ("--conn-log", &conn),
            ("--health-log", &health),
            ("--alerts-log", Path::new("/dev/full")),
        ],
    );
    assert_eq!(r.codes, [Some(0), Some(0), Some(1)], "{}", r.stderr);
    let report = report(&health);
    assert_eq!(
        json_lines(&conn).len() as u64,
        n(&report["conns"]["released"])
    );
    // Every alert event is logged as `alert` on stderr: each is one line not written.
    let events = r
        .stderr
        .lines()
        .filter(|l| l.contains(" alert ") || l.contains("\"alert\""))
        .count() as u64;
    assert!(events > 0, "{}", r.stderr);
    assert_eq!(
        n(&report["records_unwritten"]["alerts_log"]),
        events,
        "{report:#}"
    );
    assert!(report["records_unwritten"]["conn_log"].is_null());
    assert_eq!(report["complete"], Value::Bool(false));
    assert!(
        r.stderr.contains("output lost: alerts_log: "),
        "{}",
        r.stderr
    );
}

#[test]
fn a_health_log_on_dev_full_puts_the_report_on_stderr() {
    let Some(pcap) = capture("zeek-tls12.pcap") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let conn = dir.path().join("conn.jsonl");
    let r = run(
        dir.path(),
        &pcap,
        &[
            ("--conn-log", &conn),
            ("--health-log", Path::new("/dev/full")),
        ],
    );
    assert_eq!(r.codes, [Some(0), Some(0), Some(1)], "{}", r.stderr);
    assert!(
        r.stderr
            .contains("the accounting report could not be written to /dev/full; here it is: {\"kind\":\"accounting\""),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("output lost: health_log: 1 lines"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_conn_log_path_that_is_a_symlink_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious\n").expect("write the victim");
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(&victim, &link).expect("make the symlink");
    let ports = free_ports(1);
    let args: Vec<String> = vec![
        "--plain".into(),
        "--listen".into(),
        endpoint(ports[0]),
        "--processors".into(),
        "1".into(),
        "--exit-on-eos".into(),
        "--conn-log".into(),
        link.display().to_string(),
    ];
    let mut aggregator = Proc::spawn("aggregator", &bin("tapflow-aggregator"), &args, dir.path());
    let status = aggregator.wait_until(Instant::now() + Duration::from_secs(20));
    let stderr = aggregator.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot write {}: it is a symbolic link",
            link.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("read the victim"),
        "precious\n"
    );
}

#[test]
fn a_rerun_with_the_same_logs_appends() {
    let Some(pcap) = capture("zeek-tls12.pcap") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (health, conn) = (
        dir.path().join("health.jsonl"),
        dir.path().join("conn.jsonl"),
    );
    let logs = [
        ("--conn-log", conn.as_path()),
        ("--health-log", health.as_path()),
    ];
    let first = run(dir.path(), &pcap, &logs);
    assert_eq!(first.codes, [Some(0), Some(0), Some(0)], "{}", first.stderr);
    let once = std::fs::read_to_string(&conn).expect("read the conn log");
    assert!(!once.is_empty());
    let again = run(dir.path(), &pcap, &logs);
    assert_eq!(again.codes, [Some(0), Some(0), Some(0)], "{}", again.stderr);
    let twice = std::fs::read_to_string(&conn).expect("read the conn log");
    assert_eq!(twice, format!("{once}{once}"));
    let reports = json_lines(&health);
    assert_eq!(reports.len(), 2, "one report per run: {reports:?}");
}
