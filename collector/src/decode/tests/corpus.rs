//! Tunnel traces of Zeek's own test suite (`../shared/zeek-corpus`, skipped, saying so, when
//! absent): the summaries of their real frames, and per flow the packets and IP bytes that
//! Zeek's conn.log for the same trace has.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tapflow_proto::{Addr, FiveTuple, FlowKey};

use super::*;

fn corpus() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/zeek-corpus");
    if dir.join("MANIFEST.tsv").is_file() {
        Some(dir)
    } else {
        println!("skipping: {} is absent", dir.display());
        None
    }
}

/// The records of a pcapng file's enhanced packet blocks (one interface, microseconds, little
/// endian: what the corpus holds) and its first interface's link type.
fn read_pcapng(bytes: &[u8]) -> Option<(i32, Vec<Record>)> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    if u32_at(0)? != 0x0a0d_0d0a || u32_at(8)? != 0x1a2b_3c4d {
        return None;
    }
    let (mut at, mut link, mut records) = (0usize, None, Vec::new());
    while at + 12 <= bytes.len() {
        let (ty, len) = (u32_at(at)?, u32_at(at + 4)? as usize);
        match ty {
            1 => {
                link = Some(i32::from(u16::from_le_bytes(
                    bytes.get(at + 8..at + 10)?.try_into().ok()?,
                )))
            }
            6 => {
                let ts = (u64::from(u32_at(at + 12)?) << 32) | u64::from(u32_at(at + 16)?);
                let (caplen, wire) = (u32_at(at + 20)? as usize, u32_at(at + 24)?);
                let data = bytes.get(at + 28..at + 28 + caplen)?;
                records.push((ts * 1000, data.to_vec(), wire));
            }
            _ => {}
        }
        at += len.max(12);
    }
    Some((link?, records))
}

struct Decoded {
    /// Each frame's summaries, shown.
    frames: Vec<Vec<String>>,
    summaries: Vec<PacketSummary>,
    counters: DecodeCounters,
}

/// Decodes a corpus trace (pcap or pcapng) with checksums verified or not.
fn decode_trace(name: &str, verify_checksums: bool) -> Option<Decoded> {
    let path = corpus()?.join("traces").join(name);
    let bytes = std::fs::read(&path).expect("reading a corpus trace");
    let (dlt, records) = read_pcap(&bytes)
        .or_else(|| read_pcapng(&bytes))
        .expect("a pcap or pcapng trace");
    let link = LinkType::from_dlt(dlt).expect("a link type tapflow decodes");
    let mut d = Decoder::new(DecodeConfig {
        verify_checksums,
        ..cfg()
    });
    let (mut frames, mut summaries, mut out) = (Vec::new(), Vec::new(), Vec::new());
    for (ts, data, wire) in &records {
        out.clear();
        d.decode(link, *ts, data, *wire, &mut out);
        assert_invariant(d.counters());
        frames.push(out.iter().map(show).collect());
        summaries.extend_from_slice(&out);
    }
    d.finish();
    assert_invariant(d.counters());
    Some(Decoded {
        frames,
        summaries,
        counters: d.counters().clone(),
    })
}

/// Zeek's conn.log for a test: per canonical key, (packets, IP bytes).
fn zeek_truth(test: &str) -> BTreeMap<FlowKey, (u64, u64)> {
    let path = corpus()
        .map(|d| d.join("truth").join(format!("{test}.conn.log")))
        .expect("the corpus is there");
    let log = std::fs::read_to_string(path).expect("reading Zeek's conn.log");
    let mut fields: Vec<&str> = Vec::new();
    let mut conns = BTreeMap::new();
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("#fields\t") {
            fields = rest.split('\t').collect();
        }
        if line.starts_with('#') {
            continue;
        }
        let row: BTreeMap<&str, &str> = fields.iter().copied().zip(line.split('\t')).collect();
        let get = |k: &str| row.get(k).copied().unwrap_or("-");
        let num = |k: &str| get(k).parse::<u64>().unwrap_or(0);
        let addr = |k: &str| Addr::from(get(k).parse::<std::net::IpAddr>().expect("an address"));
        let tuple = FiveTuple {
            proto: num("ip_proto") as u8,
            src: addr("id.orig_h"),
            dst: addr("id.resp_h"),
            sport: num("id.orig_p") as u16,
            dport: num("id.resp_p") as u16,
        };
        let e = conns.entry(tuple.key(0).0).or_insert((0, 0));
        e.0 += num("orig_pkts") + num("resp_pkts");
        e.1 += num("orig_ip_bytes") + num("resp_ip_bytes");
    }
    conns
}

/// Every connection of Zeek's conn.log has the packets and IP bytes of our summaries on its key
/// (none of these traces has a summary that Zeek would not count), and no other key has any.
fn assert_flows_match(test: &str, summaries: &[PacketSummary]) {
    let mut ours: BTreeMap<FlowKey, (u64, u64)> = BTreeMap::new();
    for s in summaries {
        let e = ours.entry(s.key).or_insert((0, 0));
        e.0 += 1;
        e.1 += u64::from(s.ip_len);
    }
    assert_eq!(
        ours,
        zeek_truth(test),
        "{test}: (packets, IP bytes) per flow"
    );
}

#[test]
fn ayiya_with_a_large_identity() {
    let Some(d) = decode_trace("tunnels__ayiya-large-identity.pcap", true) else {
        return;
    };
    let outer = "17 10.0.0.1:12345 > 10.0.0.2:5072 ip=364 pl=336";
    let inner = "17 fd00::1:40000 > fd00::2:40001 ip=52 pl=4 inner";
    let parent = "in[10.0.0.1:12345 <-> 10.0.0.2:5072 proto 17]";
    assert_eq!(
        d.frames,
        [[format!("{outer} outer ayiya"), format!("{inner} {parent}")]]
    );
    assert_eq!(d.counters.inner_undecodable, 0);
    assert_flows_match("core.tunnels.ayiya-large-identity", &d.summaries);
}

#[test]
fn gre_in_udp_names_the_gre_tunnel_as_parent() {
    let Some(d) = decode_trace("tunnels__gre-over-udp-4754.pcap", true) else {
        return;
    };
    let gre = "in[192.168.0.107:0 <-> 192.168.5.1:0 proto 47]";
    assert_eq!(
        d.frames.first().map(Vec::as_slice),
        Some(
            &[
                "17 192.168.0.107:50343 > 192.168.5.1:4754 ip=86 pl=58 outer".to_string(),
                format!("17 172.17.0.2:51714 > 1.1.1.1:53 ip=54 pl=26 inner {gre}"),
            ][..]
        )
    );
    // Every packet is GRE in UDP, each outer UDP flow of its own, one GRE tunnel parent.
    assert!(d.frames.iter().all(|f| f.len() == 2 && f[1].ends_with(gre)));
    assert_eq!((d.frames.len(), d.counters.inner_undecodable), (14, 0));
    assert_flows_match("core.tunnels.gre-over-udp", &d.summaries);
}

/// A snaplen cut behind the tunnel header: the outer datagram is whole by its IP header (44
/// bytes of a 156-byte frame), the Geneve header and options fill it, and no inner Ethernet
/// frame is left. Zeek counts the outer packet and its 44 bytes; there is no inner flow.
#[test]
fn geneve_cut_after_its_options() {
    let Some(d) = decode_trace("tunnels__geneve-truncated.pcapng", false) else {
        return;
    };
    assert_eq!(
        d.frames,
        [["17 20.0.0.1:50901 > 20.0.0.2:6081 ip=44 pl=16"]]
    );
    assert_eq!(
        (
            d.counters.inner_undecodable,
            d.counters.drops.packet_drops()
        ),
        (1, 0)
    );
    assert_flows_match("core.tunnels.geneve-truncated", &d.summaries);
}

/// VXLAN datagrams with wrong UDP checksums: Zeek records the checksum ('C') and stops, so
/// the IGMP inside is never seen. Without checksum checks the IGMP is found, and makes no
/// connection either (Zeek's IGMP analyzer takes it).
#[test]
fn vxlan_behind_a_bad_checksum_is_not_opened() {
    let Some(d) = decode_trace("tunnels__vxlan-encapsulated-igmp-v2.pcap", true) else {
        return;
    };
    assert_eq!(d.frames.len(), 3);
    for f in &d.frames {
        assert!(f.len() == 1 && f[0].ends_with("ip=82 pl=54 bad"), "{f:?}");
    }
    assert_eq!(d.counters.inner_undecodable, 0);
    let Some(d) = decode_trace("tunnels__vxlan-encapsulated-igmp-v2.pcap", false) else {
        return;
    };
    assert!(d.frames.iter().all(|f| f.len() == 1));
    assert_eq!(
        (
            d.counters.inner_undecodable,
            d.counters.inner_drops.get(DropReason::NoConnection)
        ),
        (3, 3)
    );
}
