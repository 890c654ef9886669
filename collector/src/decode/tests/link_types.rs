//! The link types and Ethernet encapsulations Zeek's own test suite uses: real frames from
//! `../shared/zeek-corpus` (skipped, saying so, when absent) decoded to their summaries, the
//! same frames rewrapped by hand for the cases the traces lack, and each trace's flows against
//! Zeek's conn.log, packet for packet and byte for byte.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tapflow_proto::{Addr, Direction, FiveTuple, FlowKey};

use super::*;

/// Zeek's test traces and their conn.logs, if present.
fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/zeek-corpus");
    if dir.join("MANIFEST.tsv").is_file() {
        Some(dir)
    } else {
        println!("skipping: {} is absent", dir.display());
        None
    }
}

/// A trace's link type (as decoded) and records.
fn trace(name: &str) -> Option<(LinkType, Vec<Record>)> {
    let path = corpus_dir()?.join("traces").join(name);
    let bytes = std::fs::read(&path).expect("read a corpus trace");
    let (dlt, records) = read_pcap(&bytes).expect("parse a corpus trace as a classic pcap");
    let link = LinkType::from_dlt(dlt);
    assert!(link.is_some(), "{name}: link type {dlt} refused");
    Some((link.expect("a decoded link type"), records))
}

/// The frames `numbers` (0-based) of a trace, each as captured.
fn frames(name: &str, numbers: &[usize]) -> Option<Vec<Frame>> {
    let (link, records) = trace(name)?;
    Some(
        numbers
            .iter()
            .map(|&i| {
                let (ts, bytes, wire) = records.get(i).cloned().expect("a frame of the trace");
                Frame {
                    link,
                    ts,
                    bytes,
                    wire,
                }
            })
            .collect(),
    )
}

const DNS_QUERY: &str = "17 172.17.156.76:61738 > 208.67.220.220:53 ip=63 pl=35";
const DNS_REPLY: &str = "17 208.67.220.220:53 > 172.17.156.76:61738 ip=156 pl=128 dns";
const MDNS: &str = "17 fe80::a667:6ff:fef7:ec54:5353 > ff02::fb:5353 ip=328 pl=280";

#[test]
fn radiotap_and_bare_802_11_frames() {
    for name in ["radiotap.pcap", "wlanmon.pcap"] {
        let Some(frames) = frames(name, &[0, 1, 2]) else {
            return;
        };
        check(
            cfg(),
            &frames,
            &[
                (Summarised, &[DNS_QUERY]),
                (Summarised, &[DNS_REPLY]),
                (Summarised, &[MDNS]),
            ],
        );
    }
}

/// One direction of a connection: packets and IP bytes.
type Side = (u64, u64);

/// Zeek's conn.log, per connection: (orig side, resp side), keyed by the canonical key and
/// whether the originator goes forward along it. `None` when the log has no id columns (some baselines are
/// cut down to a few columns): then only the number of rows is known, given in the error.
fn zeek_conns(log: &str) -> Result<BTreeMap<(FlowKey, bool), (Side, Side)>, usize> {
    let mut fields: Vec<&str> = Vec::new();
    let mut rows = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("#fields\t") {
            fields = rest.split('\t').collect();
        } else if !line.starts_with('#') && !fields.is_empty() {
            let row: BTreeMap<&str, &str> = fields.iter().copied().zip(line.split('\t')).collect();
            rows.push(row);
        }
    }
    if !fields.contains(&"id.orig_h") {
        let header = log.lines().find(|l| l.starts_with("ts\t"));
        return Err(log.lines().count() - 1 - usize::from(header.is_some()));
    }
    let mut conns = BTreeMap::new();
    for row in rows {
        let get = |k: &str| row.get(k).copied().unwrap_or("-");
        let num = |k: &str| get(k).parse::<u64>().unwrap_or(0);
        let addr = |k: &str| {
            let ip = get(k).parse::<std::net::IpAddr>();
            assert!(ip.is_ok(), "{k} in Zeek's conn.log: {ip:?}");
            Addr::from(ip.expect("parse an address of Zeek's conn.log"))
        };
        let tuple = FiveTuple {
            proto: num("ip_proto") as u8,
            src: addr("id.orig_h"),
            dst: addr("id.resp_h"),
            sport: num("id.orig_p") as u16,
            dport: num("id.resp_p") as u16,
        };
        let orig = (num("orig_pkts"), num("orig_ip_bytes"));
        let resp = (num("resp_pkts"), num("resp_ip_bytes"));
        assert!(
            conns.insert(forward(tuple.key(0)), (orig, resp)).is_none(),
            "{tuple:?} twice"
        );
    }
    Ok(conns)
}

fn forward((key, dir): (FlowKey, Direction)) -> (FlowKey, bool) {
    (key, dir == Direction::Forward)
}

/// A whole trace decoded, summaries grouped by flow: the first packet's direction is the
/// originator's (what Zeek also does on these traces), then both sides' packets and IP bytes.
fn our_conns(name: &str, cfg: DecodeConfig) -> Option<BTreeMap<(FlowKey, bool), (Side, Side)>> {
    let (link, records) = trace(name)?;
    let mut d = Decoder::new(cfg);
    let mut out = Vec::new();
    for (ts, bytes, wire) in &records {
        d.decode(link, *ts, bytes, *wire, &mut out);
    }
    d.finish();
    assert_invariant(d.counters());
    println!("{name}: {:?}", d.counters());
    let mut first: BTreeMap<FlowKey, bool> = BTreeMap::new();
    let mut conns: BTreeMap<(FlowKey, bool), (Side, Side)> = BTreeMap::new();
    for s in &out {
        let here = s.direction() == Direction::Forward;
        let orig = *first.entry(s.key).or_insert(here);
        let e = conns.entry((s.key, orig)).or_default();
        let side = if here == orig { &mut e.0 } else { &mut e.1 };
        side.0 += 1;
        side.1 += u64::from(s.ip_len);
    }
    Some(conns)
}

/// Each trace this file is about, with its truth and whether Zeek ran with `-C`.
const TRACES: [(&str, &str, bool); 5] = [
    ("cisco-fabric-path.pcap", "core.cisco-fabric-path", false),
    ("radiotap.pcap", "core.radiotap", true),
    ("wlanmon.pcap", "core.wlanmon", true),
    (
        "quic__interop__quic-go_quic-go__handshake.pcap",
        "scripts.base.protocols.quic.interop.quic-go_quic-go.handshake__conn.log.cut",
        false,
    ),
    (
        "quic__interop__quic-go_quic-go__retry.pcap",
        "scripts.base.protocols.quic.interop.quic-go_quic-go.retry__conn.log.cut",
        false,
    ),
];

#[test]
fn flows_match_zeek_on_its_own_traces() {
    let Some(dir) = corpus_dir() else { return };
    for (name, test, dash_c) in TRACES {
        let log = std::fs::read_to_string(dir.join("truth").join(format!("{test}.conn.log")))
            .expect("read Zeek's conn.log");
        let cfg = DecodeConfig {
            verify_checksums: !dash_c,
            ..cfg()
        };
        let ours = our_conns(name, cfg).expect("decode the trace");
        match zeek_conns(&log) {
            Ok(zeek) => {
                for (key, want) in &zeek {
                    assert_eq!(ours.get(key), Some(want), "{name}: {key:?} (orig, resp)");
                }
                assert_eq!(ours.len(), zeek.len(), "{name}: connections");
            }
            Err(rows) => assert_eq!(ours.len(), rows, "{name}: connections"),
        }
        println!("{name}: {} connections agree", ours.len());
    }
}
