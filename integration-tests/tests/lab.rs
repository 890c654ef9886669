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
use tapflow_integration_tests::{bin, is_root, read_text, repo_root};

fn lines(path: &Path) -> Vec<Value> {
    read_text(path)
        .lines()
        .map(|l| {
            let v = serde_json::from_str(l);
            assert!(v.is_ok(), "{l}: {v:?}");
            v.expect("parse a JSON line")
        })
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
    let line = log.lines().rev().find(|l| l.contains("collector finished"));
    assert!(line.is_some(), "no 'collector finished' line in:\n{log}");
    let line = line.expect("the 'collector finished' line");
    let key = format!(" {name}=");
    let at = line.find(&key);
    assert!(at.is_some(), "no {name} in {line}");
    let at = at.expect("the field in the line");
    let n = line[at + key.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse();
    assert!(n.is_ok(), "{name} in {line}: {n:?}");
    n.expect("parse the field's number")
}

fn run_lab(asymmetric: bool) {
    if !is_root() {
        return;
    }
    let out = tempfile::tempdir().expect("create the lab output dir");
    let bin_dir = bin("tapflow-collector")
        .parent()
        .map(Path::to_path_buf)
        .expect("the directory of the binaries");
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("deploy/lab.sh"))
        .arg("--bin")
        .arg(&bin_dir)
        .arg("--out")
        .arg(out.path());
    if asymmetric {
        cmd.arg("--asymmetric");
    }
    let result = cmd.output().expect("run deploy/lab.sh");
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
        .expect("read curl_requests")
        .trim()
        .parse()
        .expect("parse curl_requests");
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
        &std::fs::read_to_string(dir.join("influx.json")).expect("read influx.json"),
    )
    .expect("parse influx.json");
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
    let points = influx["alert_ends"]["results"][0]["series"][0]["values"].as_array();
    assert!(points.is_some(), "no alert points in InfluxDB: {influx}");
    let kinds: Vec<(String, String)> = points
        .expect("the alert points")
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
        .expect("the accounting report in the health log");
    assert_eq!(report["reconciled"], true, "{report}");
    assert_eq!(report["routing_consistent"], true, "{report}");
    let rows = report["collectors"]
        .as_array()
        .expect("the collectors in the report");
    assert_eq!(rows.len(), 2, "{report}");
    let mut read_total = 0;
    for row in rows {
        let name = row["sender"].as_str().unwrap_or("?");
        let log = std::fs::read_to_string(dir.join(format!("collector-{name}.log")))
            .expect("read the collector's log");
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
