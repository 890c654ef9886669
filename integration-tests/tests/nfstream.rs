//! Sessions against nfstream's flows (`truth/*.nfstream.csv`, idle 120 s, active 1800 s):
//! five-tuples found by both, by one only, and packets per five-tuple. nfstream and Zeek cut
//! flows differently (timeouts, TCP close, fragments, tunnels), so sessions are summed per
//! five-tuple before comparing; the README explains the remaining differences.
//!
//! Held exactly: each capture's counts equal its row of `golden/nfstream.tsv` (refreshed with
//! `UPDATE_GOLDEN=1`, reviewed in the diff), every capture that differs at all is one the README
//! explains, and the totals are the README's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::zeek::assert_golden;
use tapflow_integration_tests::{run_pipeline, shared_pcaps, CollectorSpec};

/// The README's figures: 45 captures with an nfstream truth; 46,620 five-tuples found by both,
/// packets equal on 46,615; 16 only in nfstream, 9 only in tapflow.
const README_CAPTURES: usize = 45;
const README_BOTH: usize = 46_620;
const README_PACKETS_EQUAL: usize = 46_615;
const README_ONLY_NFSTREAM: usize = 16;
const README_ONLY_TAPFLOW: usize = 9;

/// Captures where tapflow and nfstream may differ, each with the README's reason.
const EXPLAINED: &[(&str, &str)] = &[
    (
        "stopddos-amp-dns-rrsig-fragmented.pcap",
        "IP fragments: tapflow reassembles",
    ),
    (
        "zeek-gtp-outer-ip-frag.pcap",
        "IP fragments: tapflow reassembles",
    ),
    (
        "zeek-ipv4-fragmented-3.pcap",
        "IP fragments: datagrams that never complete are dropped",
    ),
    (
        "suricata-ipv4-truncated.pcap",
        "truncated IP dropped as `truncated`",
    ),
    (
        "zeek-tcp-reassembly.pcap",
        "truncated IP dropped as `truncated`",
    ),
    (
        "zeek-tunnels-vxlan.pcap",
        "tunnels: nfstream reports only the outer VXLAN flow",
    ),
    (
        "zeek-tunnels-gre-sample.pcap",
        "tunnels: nfstream reports only the outer GRE flow; tapflow only the inner",
    ),
];

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/nfstream.tsv")
}

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

/// One capture compared: a row of the golden table.
#[derive(Default)]
struct Compared {
    capture: String,
    nfstream: usize,
    ours: usize,
    both: usize,
    only_nfstream: usize,
    only_ours: usize,
    packets_equal: usize,
}

impl Compared {
    const HEADER: &'static str =
        "# capture\tnfstream\ttapflow\tboth\tonly_nfstream\tonly_tapflow\tpackets_equal";

    fn row(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.capture,
            self.nfstream,
            self.ours,
            self.both,
            self.only_nfstream,
            self.only_ours,
            self.packets_equal
        )
    }

    fn differs(&self) -> bool {
        self.only_nfstream + self.only_ours > 0 || self.packets_equal != self.both
    }
}

/// nfstream's flows of one capture, packets summed per five-tuple.
fn nfstream_flows(csv: &str, text: &str) -> BTreeMap<Tuple, u64> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("{csv}: no {name} in {header:?}"))
            .expect("finding nfstream's columns")
    };
    let (si, sp, di, dp, pr, bp) = (
        col("src_ip"),
        col("src_port"),
        col("dst_ip"),
        col("dst_port"),
        col("protocol"),
        col("bidirectional_packets"),
    );
    let mut nf: BTreeMap<Tuple, u64> = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < header.len() {
            continue;
        }
        *nf.entry(tuple(f[pr], f[si], f[sp], f[di], f[dp]))
            .or_default() += f[bp].parse::<u64>().unwrap_or(0);
    }
    nf
}

/// Our sessions of one capture through the pipeline, packets summed per five-tuple.
fn our_flows(pcap: &Path) -> BTreeMap<Tuple, u64> {
    // nfstream does not verify checksums: neither do we here.
    let spec = CollectorSpec {
        extra: vec!["--ignore-checksums".into()],
        ..CollectorSpec::pcap(pcap, 2)
    };
    let run = run_pipeline(&[spec], 2, Duration::from_secs(120));
    assert!(
        run.all_exited(),
        "{}: {}\n{}",
        pcap.display(),
        run.exit_codes(),
        run.aggregator.1
    );
    let mut ours: BTreeMap<Tuple, u64> = BTreeMap::new();
    for l in run.conn_log.lines() {
        let v: Value = serde_json::from_str(l).expect("parsing a conn log line");
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
    ours
}

fn compare(capture: &str, nf: &BTreeMap<Tuple, u64>, ours: &BTreeMap<Tuple, u64>) -> Compared {
    let nf_keys: BTreeSet<&Tuple> = nf.keys().collect();
    let our_keys: BTreeSet<&Tuple> = ours.keys().collect();
    let common: Vec<&&Tuple> = nf_keys.intersection(&our_keys).collect();
    Compared {
        capture: capture.to_owned(),
        nfstream: nf.len(),
        ours: ours.len(),
        both: common.len(),
        only_nfstream: nf_keys.difference(&our_keys).count(),
        only_ours: our_keys.difference(&nf_keys).count(),
        packets_equal: common.iter().filter(|t| nf[**t] == ours[**t]).count(),
    }
}

#[test]
fn sessions_compared_with_nfstream_flows() {
    let Some(pcaps) = shared_pcaps() else { return };
    let mut files: Vec<String> = std::fs::read_dir(pcaps.join("truth"))
        .expect("listing the truth folder")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".nfstream.csv"))
        .collect();
    files.sort();
    let mut rows = Vec::new();
    for csv in &files {
        let pcap = csv.trim_end_matches(".nfstream.csv");
        let text = std::fs::read_to_string(pcaps.join("truth").join(csv))
            .expect("reading nfstream's flows");
        let nf = nfstream_flows(csv, &text);
        let ours = our_flows(&pcaps.join(pcap));
        rows.push(compare(pcap, &nf, &ours));
    }
    let mut table = String::from(
        "# tapflow's sessions against nfstream's flows (../shared/pcaps/truth/*.nfstream.csv), one\n\
         # row per capture, packets summed per five-tuple: five-tuples in each, in both, in one\n\
         # only, and those in both with equal packets. Checked exactly by tests/nfstream.rs; refresh\n\
         # with UPDATE_GOLDEN=1 and review the diff.\n",
    );
    table += Compared::HEADER;
    table.push('\n');
    for r in &rows {
        table += &r.row();
        table.push('\n');
    }
    let all = rows.iter().fold(
        Compared {
            capture: "ALL".into(),
            ..Compared::default()
        },
        |mut a, r| {
            a.nfstream += r.nfstream;
            a.ours += r.ours;
            a.both += r.both;
            a.only_nfstream += r.only_nfstream;
            a.only_ours += r.only_ours;
            a.packets_equal += r.packets_equal;
            a
        },
    );
    println!("{table}{}", all.row());
    assert_golden(&golden_path(), &table);
    let unexplained: Vec<String> = rows
        .iter()
        .filter(|r| r.differs() && !EXPLAINED.iter().any(|(c, _)| *c == r.capture))
        .map(Compared::row)
        .collect();
    let stale: Vec<&str> = EXPLAINED
        .iter()
        .filter(|(c, _)| rows.iter().any(|r| r.capture == *c && !r.differs()))
        .map(|(c, _)| *c)
        .collect();
    assert!(
        stale.is_empty(),
        "the README explains a difference these captures no longer show: {stale:?}"
    );
    assert!(
        unexplained.is_empty(),
        "captures that differ from nfstream for no reason the README gives:\n{}",
        unexplained.join("\n")
    );
    assert_eq!(
        (
            rows.len(),
            all.both,
            all.packets_equal,
            all.only_nfstream,
            all.only_ours
        ),
        (
            README_CAPTURES,
            README_BOTH,
            README_PACKETS_EQUAL,
            README_ONLY_NFSTREAM,
            README_ONLY_TAPFLOW
        ),
        "(captures, both, packets equal, only nfstream, only tapflow) against the README"
    );
}
