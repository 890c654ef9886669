//! Sessions against nfstream's flows (`truth/*.nfstream.csv`, idle 120 s, active 1800 s):
//! five-tuples found by both, by one only, and packets per five-tuple. nfstream and Zeek cut
//! flows differently (timeouts, TCP close, fragments, tunnels), so sessions are summed per
//! five-tuple before comparing; the README explains the remaining differences.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::{run_pipeline, shared_pcaps, CollectorSpec};

/// (proto, lower endpoint, higher endpoint); ICMP without ports, as nfstream keys it.
type Tuple = (String, String, String);

fn tuple(proto: &str, a: &str, ap: &str, b: &str, bp: &str) -> Tuple {
    let icmp = matches!(proto, "1" | "58" | "icmp");
    let (ap, bp) = if icmp { ("0", "0") } else { (ap, bp) };
    let x = format!("{a}:{ap}");
    let y = format!("{b}:{bp}");
    let p = match proto {
        "tcp" => "6",
        "udp" => "17",
        "icmp" => "1",
        "58" => "1",
        other => other,
    }
    .to_owned();
    if x <= y {
        (p, x, y)
    } else {
        (p, y, x)
    }
}

#[test]
fn sessions_compared_with_nfstream_flows() {
    let Some(pcaps) = shared_pcaps() else { return };
    let mut files: Vec<String> = std::fs::read_dir(pcaps.join("truth"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    files.retain(|n| n.ends_with(".nfstream.csv"));
    files.sort();
    let (mut both, mut only_nf, mut only_ours, mut pkts_agree) = (0usize, 0usize, 0usize, 0usize);
    let mut report = String::new();
    for csv in &files {
        let pcap = csv.trim_end_matches(".nfstream.csv");
        let text = std::fs::read_to_string(pcaps.join("truth").join(csv)).unwrap_or_default();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (Some(si), Some(sp), Some(di), Some(dp), Some(pr), Some(bp)) = (
            col("src_ip"),
            col("src_port"),
            col("dst_ip"),
            col("dst_port"),
            col("protocol"),
            col("bidirectional_packets"),
        ) else {
            panic!("{csv}: unexpected header {header:?}")
        };
        let mut nf: BTreeMap<Tuple, u64> = BTreeMap::new();
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() < header.len() {
                continue;
            }
            *nf.entry(tuple(f[pr], f[si], f[sp], f[di], f[dp]))
                .or_default() += f[bp].parse::<u64>().unwrap_or(0);
        }
        // nfstream does not verify checksums: neither do we here.
        let spec = CollectorSpec {
            extra: vec!["--ignore-checksums".into()],
            ..CollectorSpec::pcap(&pcaps.join(pcap), 2)
        };
        let run = run_pipeline(&[spec], 2, Duration::from_secs(120));
        assert!(run.all_exited(), "{pcap}: {}", run.aggregator.1);
        let mut ours: BTreeMap<Tuple, u64> = BTreeMap::new();
        for l in run.conn_log.lines() {
            let v: Value = serde_json::from_str(l).unwrap_or_default();
            let s = |k: &str| match &v[k] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let t = tuple(
                &v["ip_proto"].to_string(),
                &s("id.orig_h"),
                &s("id.orig_p"),
                &s("id.resp_h"),
                &s("id.resp_p"),
            );
            *ours.entry(t).or_default() +=
                v["orig_pkts"].as_u64().unwrap_or(0) + v["resp_pkts"].as_u64().unwrap_or(0);
        }
        let nf_keys: BTreeSet<&Tuple> = nf.keys().collect();
        let our_keys: BTreeSet<&Tuple> = ours.keys().collect();
        let common: Vec<&&Tuple> = nf_keys.intersection(&our_keys).collect();
        let agree = common.iter().filter(|t| nf[**t] == ours[**t]).count();
        let (a, b) = (
            nf_keys.difference(&our_keys).count(),
            our_keys.difference(&nf_keys).count(),
        );
        report += &format!("{pcap:<44} nfstream {:>5}  ours {:>5}  both {:>5}  only-nfstream {a:>4}  only-ours {b:>4}  packets agree {agree:>5}/{}\n", nf.len(), ours.len(), common.len(), common.len());
        both += common.len();
        only_nf += a;
        only_ours += b;
        pkts_agree += agree;
    }
    report += &format!("ALL: both {both}, only nfstream {only_nf}, only ours {only_ours}, packets agree on {pkts_agree}/{both}\n");
    println!("{report}");
    let found = both as f64 / (both + only_nf).max(1) as f64;
    let agree = pkts_agree as f64 / both.max(1) as f64;
    assert!(files.len() >= 40, "{files:?}");
    assert!(
        found >= 0.97,
        "only {:.1}% of nfstream's five-tuples found\n{report}",
        found * 100.0
    );
    assert!(
        agree >= 0.90,
        "packets agree on only {:.1}%\n{report}",
        agree * 100.0
    );
}
