//! The real captures in `../shared/pcaps` (skipped, saying so, when absent): every file decodes
//! with the accounting reconciled, and where Zeek's own conn.log is there, every connection's
//! five-tuple, packet count, IP bytes and tunnel parentage match what the summaries say.

use std::collections::BTreeMap;
use std::path::Path;

use tapflow_proto::{Addr, FiveTuple, FlowKey};

use super::*;

/// Decodes a whole capture file; `None` if it is not a classic pcap.
fn decode_file(path: &Path, cfg: DecodeConfig) -> Option<(Vec<PacketSummary>, DecodeCounters)> {
    let bytes = std::fs::read(path).ok()?;
    let (dlt, records) = read_pcap(&bytes)?;
    let link = LinkType::from_dlt(dlt);
    let mut d = Decoder::new(cfg);
    let mut out = Vec::new();
    for (ts, data, wire) in &records {
        match link {
            Some(link) => d.decode(link, *ts, data, *wire, &mut out),
            None => d.unsupported_link(),
        };
        assert_invariant(d.counters());
    }
    d.finish();
    let c = d.counters().clone();
    assert_invariant(&c);
    assert_eq!(c.fragments_held, 0);
    assert_eq!(c.packets, records.len() as u64, "{}", path.display());
    assert_eq!(c.summaries, out.len() as u64);
    Some((out, c))
}

#[test]
fn every_capture_decodes_and_reconciles() {
    let Some(dir) = pcaps_dir() else { return };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut decoded = 0;
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
    {
        let Some((out, c)) = decode_file(path, cfg()) else {
            println!("{}: not a classic pcap, skipped", path.display());
            continue;
        };
        decoded += 1;
        println!(
            "{}: {} packets, {} summarised, {} merged, {} summaries, {} inner undecodable {:?}, drops {:?}",
            path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
            c.packets,
            c.packets_summarised,
            c.fragments_merged,
            out.len(),
            c.inner_undecodable,
            c.inner_drops.to_map(),
            c.drops.to_map()
        );
    }
    assert!(decoded >= 40, "only {decoded} captures decoded");
}

/// Link types other than Ethernet decode with nothing dropped.
#[test]
fn other_link_types_decode_cleanly() {
    let Some(dir) = pcaps_dir() else { return };
    for (name, min_summaries) in [
        ("suricata-decode-sll2-01.pcap", 1),
        ("zeek-nflog-http.pcap", 10),
        ("zeek-rotation-rawip.pcap", 10),
        ("tcpdump-tcp-handshake-nano.pcap", 3),
    ] {
        let Some((out, c)) = decode_file(&dir.join(name), cfg()) else {
            panic!("{name} did not read");
        };
        assert_eq!(c.drops.packet_drops(), 0, "{name}: {:?}", c.drops.to_map());
        assert!(
            out.len() >= min_summaries,
            "{name}: {} summaries",
            out.len()
        );
    }
}

/// Zeek's conn.log for a capture: per canonical key, (packets, IP bytes, has tunnel parents).
fn zeek_conns(log: &str) -> BTreeMap<FlowKey, (u64, u64, bool)> {
    let mut fields: Vec<&str> = Vec::new();
    let mut conns = BTreeMap::new();
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("#fields\t") {
            fields = rest.split('\t').collect();
            continue;
        }
        if line.starts_with('#') || fields.is_empty() {
            continue;
        }
        let row: BTreeMap<&str, &str> = fields.iter().copied().zip(line.split('\t')).collect();
        let get = |k: &str| row.get(k).copied().unwrap_or("-");
        let num = |k: &str| get(k).parse::<u64>().unwrap_or(0);
        let addr = |k: &str| {
            let ip = get(k).parse::<std::net::IpAddr>();
            assert!(ip.is_ok(), "{k} in Zeek's conn.log: {ip:?}");
            Addr::from(ip.expect("parse an address of Zeek's conn.log"))
        };
        let proto = match get("proto") {
            "tcp" => 6,
            "udp" => 17,
            "icmp" if get("id.orig_h").contains(':') => 58,
            "icmp" => 1,
            other => panic!("proto {other}"),
        };
        let tuple = FiveTuple {
            proto,
            src: addr("id.orig_h"),
            dst: addr("id.resp_h"),
            sport: num("id.orig_p") as u16,
            dport: num("id.resp_p") as u16,
        };
        let e = conns.entry(tuple.key(0).0).or_insert((0, 0, false));
        e.0 += num("orig_pkts") + num("resp_pkts");
        e.1 += num("orig_ip_bytes") + num("resp_ip_bytes");
        e.2 |= get("tunnel_parents") != "-";
    }
    conns
}

#[test]
fn flows_match_zeek_conn_logs() {
    let Some(dir) = pcaps_dir() else { return };
    let ignore = DecodeConfig {
        verify_checksums: false,
        ..cfg()
    };
    // The capture and whether Zeek's truth was made with -C.
    let cases = [
        ("zeek-ssh.pcap", false),
        ("zeek-ftp-bigtransfer.pcap", false),
        ("zeek-tcp-missing-syn.pcap", true),
        ("zeek-gtp-outer-ip-frag.pcap", true),
        ("zeek-q-in-q.pcap", false),
        ("zeek-tunnels-vxlan.pcap", false),
        ("zeek-tunnels-gre-sample.pcap", false),
    ];
    for (name, dash_c) in cases {
        let log = std::fs::read_to_string(dir.join("truth").join(format!("{name}.zeek-conn.log")));
        let Ok(log) = log else {
            panic!("{name}: no truth");
        };
        let Some((out, _)) = decode_file(&dir.join(name), if dash_c { ignore } else { cfg() })
        else {
            panic!("{name} did not read");
        };
        let mut ours: BTreeMap<FlowKey, (u64, u64, bool)> = BTreeMap::new();
        for s in &out {
            let e = ours.entry(s.key).or_insert((0, 0, false));
            e.0 += 1;
            e.1 += u64::from(s.ip_len);
            e.2 |= s.tunnel_parent.is_some();
        }
        for (key, want) in zeek_conns(&log) {
            assert_eq!(
                ours.get(&key),
                Some(&want),
                "{name}: {key} (packets, ip bytes, tunnelled)"
            );
        }
    }
}
