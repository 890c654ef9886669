//! The README's first command, `deploy/quickstart.sh`, run as a new user would (no arguments,
//! stdin not a terminal) on this build's binaries: it must exit 0 and its report must show the
//! generated demo capture's sessions, its port scan and SYN flood, an accounting that reconciles,
//! and the same sessions counted back from the throwaway InfluxDB it started.

use std::process::{Command, Stdio};

use tapflow_integration_tests::{bin, repo_root};

/// The number at the start of the line containing `marker`, or after it when `after` is set.
fn number(report: &str, marker: &str, after: bool) -> u64 {
    let line = report.lines().find(|l| l.contains(marker));
    assert!(
        line.is_some(),
        "no line with {marker:?} in the report:\n{report}"
    );
    let line = line.expect("the line with the marker");
    let text = if after {
        &line[line.find(marker).map_or(0, |i| i + marker.len())..]
    } else {
        line
    };
    let n = text.split_whitespace().find_map(|w| w.parse().ok());
    assert!(n.is_some(), "no number in {line:?}");
    n.expect("a number in the line")
}

#[test]
fn quickstart_runs_the_demo_and_reports_sessions_alerts_and_accounting() {
    let bin_dir = bin("tapflow-gen")
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let out = Command::new("bash")
        .arg(repo_root().join("deploy/quickstart.sh"))
        .env("TAPFLOW_BIN_DIR", &bin_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run deploy/quickstart.sh");
    let report = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{report}");
    assert!(
        out.status.success(),
        "quickstart failed ({:?}):\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let sessions = number(&report, "sessions in the conn log", false);
    assert_eq!(sessions, 20_000, "the demo capture has 20,000 flows");
    assert_eq!(number(&report, "(tapflow_conn points):", true), sessions);
    assert_eq!(number(&report, "(sum of tapflow_traffic):", true), 200_000);
    assert_eq!(number(&report, "alert episodes", false), 2);
    assert!(
        report.contains("port_scan      203.0.113.66 -> 198.18.0.10"),
        "{report}"
    );
    assert!(
        report.contains("syn_flood      * -> 198.18.0.80"),
        "{report}"
    );
    assert!(
        report.contains("reconciled: true  complete: true  routing consistent: true"),
        "{report}"
    );
    assert!(
        report.contains("SELECT * FROM tapflow_alert"),
        "no InfluxQL to try:\n{report}"
    );
    assert!(
        report.contains("Dashboard: http://127.0.0.1:"),
        "no dashboard URL:\n{report}"
    );
}
