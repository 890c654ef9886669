//! The multi-host lab (`deploy/lab.sh`): namespaces for a client, a server and an attacker on a
//! mirrored switch, two tap hosts capturing LIVE with a collector each, two processor hosts and an
//! aggregator host with a real InfluxDB; traffic from curl, `nmap -sS` and a bounded hping3 SYN
//! flood. Checks what an operator would: curl's sessions whole (SF, packets both ways), the scan
//! and the flood as alert episodes, all of it queried back from InfluxDB, and live accounting
//! that reconciles what libpcap delivered, with the kernel's drops printed beside it.
//! Once with symmetric taps, once with requests and responses on different taps.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tapflow_integration_tests::{bin, is_root, repo_root};

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// The first value of the first series of an InfluxQL answer (0 when there is no series).
fn scalar(answer: &Value) -> u64 {
    answer["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or(0)
}

/// `name=value` from the collector's "collector finished" log line.
fn logged(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("collector finished"))
        .unwrap_or_else(|| panic!("no 'collector finished' line in:\n{log}"));
    let key = format!(" {name}=");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {line}"));
    line[at + key.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|e| panic!("{name} in {line}: {e}"))
}

fn run_lab(asymmetric: bool) {
    if !is_root() {
        return;
    }
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bin_dir = bin("tapflow-collector")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("no directory for the binaries"));
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("deploy/lab.sh"))
        .arg("--bin")
        .arg(&bin_dir)
        .arg("--out")
        .arg(out.path());
    if asymmetric {
        cmd.arg("--asymmetric");
    }
    let result = cmd
        .output()
        .unwrap_or_else(|e| panic!("deploy/lab.sh: {e}"));
    let stderr = String::from_utf8_lossy(&result.stderr);
    eprintln!("{stderr}");
    assert!(
        result.status.success(),
        "deploy/lab.sh failed: {:?}",
        result.status
    );
    let dir = out.path();

    // curl's sessions: whole, whichever tap saw which half.
    let requests: u64 = std::fs::read_to_string(dir.join("curl_requests"))
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(requests, 20, "curl did not get its 20 answers");
    let conns = lines(&dir.join("conn.jsonl"));
    let http: Vec<&Value> = conns
        .iter()
        .filter(|c| c["id.orig_h"] == "10.77.0.1" && c["id.resp_p"] == 8000)
        .collect();
    for c in &http {
        assert_eq!(c["conn_state"], "SF", "a curl session not whole: {c}");
        assert!(
            c["orig_pkts"].as_u64() >= Some(4) && c["resp_pkts"].as_u64() >= Some(4),
            "a curl session without packets both ways: {c}"
        );
        assert!(
            c["resp_bytes"].as_u64() > Some(0),
            "no HTTP answer bytes: {c}"
        );
    }
    assert_eq!(http.len() as u64, requests, "curl sessions in the conn log");

    // The scan and the flood, as episodes.
    let alerts = lines(&dir.join("alerts.jsonl"));
    let ended = |kind: &str, src: &str| {
        alerts.iter().any(|a| {
            a["event"] == "end" && a["kind"] == kind && a["src"] == src && a["dst"] == "10.77.0.2"
        })
    };
    assert!(
        ended("port_scan", "10.77.0.3"),
        "no port_scan episode: {alerts:?}"
    );
    assert!(ended("syn_flood", "*"), "no syn_flood episode: {alerts:?}");
    let self_alerts: Vec<_> = alerts
        .iter()
        .filter(|a| a["kind"] == "drop_rate" || a["kind"] == "collector_silent")
        .collect();
    assert!(
        self_alerts.is_empty(),
        "pipeline self-alerts in a healthy lab: {self_alerts:?}"
    );

    // The same, queried back from InfluxDB.
    let influx: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("influx.json")).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("influx.json: {e}"));
    assert_eq!(
        scalar(&influx["sessions"]),
        conns.len() as u64,
        "sessions in InfluxDB"
    );
    assert_eq!(
        scalar(&influx["http_sf"]),
        requests,
        "SF curl sessions in InfluxDB"
    );
    let kinds: Vec<(String, String)> = influx["alert_ends"]["results"][0]["series"][0]["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no alert points in InfluxDB: {influx}"))
        .iter()
        .map(|row| (row[1].to_string(), row[2].to_string()))
        .collect();
    for (kind, src) in [("port_scan", "10.77.0.3"), ("syn_flood", "*")] {
        assert!(
            kinds.contains(&(format!("\"{kind}\""), format!("\"{src}\""))),
            "{kind} from {src} not in InfluxDB: {kinds:?}"
        );
    }

    // Live accounting: what libpcap delivered, hop by hop, with the kernel's drops beside it.
    let health = lines(&dir.join("health.jsonl"));
    let report = health
        .iter()
        .rev()
        .find(|h| h["kind"] == "accounting")
        .unwrap_or_else(|| panic!("no accounting report"));
    assert_eq!(report["reconciled"], true, "{report}");
    assert_eq!(report["routing_consistent"], true, "{report}");
    let rows = report["collectors"]
        .as_array()
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(rows.len(), 2, "{report}");
    let mut read_total = 0;
    for row in rows {
        let name = row["sender"].as_str().unwrap_or("?");
        let log = std::fs::read_to_string(dir.join(format!("collector-{name}.log")))
            .unwrap_or_else(|e| panic!("{e}"));
        let read = row["packets_read"].as_u64().unwrap_or(0);
        let received = logged(&log, "pcap_received");
        let kernel = row["kernel_dropped"].as_u64().unwrap_or(0);
        eprintln!(
            "{name}: libpcap received {received}, read {read}, summarised {}, drops {}, kernel dropped {kernel}, interface dropped {}",
            row["packets_summarised"], row["drops"], row["if_dropped"]
        );
        assert_eq!(row["status"], "interrupted", "{row}");
        assert_eq!(row["packets_reconcile"], true, "{row}");
        assert_eq!(row["summaries_reconcile"], true, "{row}");
        assert!(
            read <= received,
            "{name} read more than libpcap received: {row}"
        );
        assert_eq!(
            logged(&log, "packets_read"),
            read,
            "{name}: log and report disagree"
        );
        read_total += read;
    }
    // 3,000 flood SYNs, ~400 scan packets and ~240 HTTP packets passed the taps.
    assert!(read_total >= 3600, "the taps saw only {read_total} packets");
}

#[test]
fn lab_symmetric_taps() {
    run_lab(false);
}

#[test]
fn lab_asymmetric_taps_requests_and_responses_on_different_taps() {
    run_lab(true);
}
