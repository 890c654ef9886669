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

/// Connections by canonical key and whether the originator goes forward along it: (orig, resp).
type Conns = BTreeMap<(FlowKey, bool), (Side, Side)>;

/// Zeek's conn.log, per connection. A baseline cut down to a few columns without the ids
/// (`zeek-cut` output: a comment line, a header line, the rows) gives only its number of rows,
/// as the error.
fn zeek_conns(log: &str) -> Result<Conns, usize> {
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
fn our_conns(name: &str, cfg: DecodeConfig) -> Option<Conns> {
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
    let mut conns = Conns::new();
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

/// Frame 0 of `radiotap.pcap` without its radiotap header: a QoS data frame to the AP.
fn qos_data() -> Option<(Vec<u8>, Frame)> {
    let f = frames("radiotap.pcap", &[0])?.remove(0);
    let rt = usize::from(u16::from_le_bytes([f.bytes[2], f.bytes[3]]));
    let wifi = f.bytes[rt..].to_vec();
    assert_eq!((wifi[0], wifi[1] & 0x43), (0x88, 0x01), "QoS data, to DS");
    Some((wifi, f))
}

fn wifi(bytes: Vec<u8>) -> Frame {
    frame(LinkType::Ieee80211, bytes)
}

/// The same DNS query behind every shape of 802.11 MAC header, and the frames that carry none.
#[test]
fn ieee80211_headers() {
    let Some((qos, radiotap)) = qos_data() else {
        return;
    };
    let (header, body) = qos.split_at(26);
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = qos.clone();
        f(&mut b);
        wifi(b)
    };
    // Plain data: no QoS Control field.
    let plain = [&[0x08, 0x01], &header[2..24], body].concat();
    // Both DS bits: the fourth address.
    let four = [
        &[0x88, 0x03],
        &header[2..24],
        &[2, 0, 0, 0, 0, 9],
        &header[24..],
        body,
    ]
    .concat();
    // The Order bit of a QoS frame: an HT Control field after QoS Control.
    let htc = [&[0x88, 0x81], &header[2..], &[0, 0, 0, 0], body].concat();
    let frames = [
        radiotap.clone(),
        wifi(qos.clone()),
        wifi(plain),
        wifi(four),
        wifi(htc),
        edit(&|b| b[1] |= 0x40),
        edit(&|b| b[0] = 0x80),
        edit(&|b| b[0] = 0xd4),
        edit(&|b| b[0] = 0xc8),
        edit(&|b| b[24] |= 0x80),
        edit(&|b| b[31] = 0xf8),
        edit(&|b| b[28] = 0x01),
        wifi(qos[..30].to_vec()),
        wifi(qos[..25].to_vec()),
        wifi(vec![0x88]),
        frame(LinkType::Radiotap, radiotap.bytes[..20].to_vec()),
        frame(LinkType::Radiotap, vec![0, 0, 8]),
    ];
    let counters = check(
        cfg(),
        &frames,
        &[
            (Summarised, &[DNS_QUERY]),
            (Summarised, &[DNS_QUERY]),
            (Summarised, &[DNS_QUERY]),
            (Summarised, &[DNS_QUERY]),
            (Summarised, &[DNS_QUERY]),
            // Protected: ciphertext.
            (Dropped(DropReason::Encrypted), &[]),
            // A beacon (management), an ACK (control), a QoS Null (no body).
            (Dropped(DropReason::NonIp), &[]),
            (Dropped(DropReason::NonIp), &[]),
            (Dropped(DropReason::NonIp), &[]),
            // An A-MSDU aggregate.
            (Dropped(DropReason::UnsupportedLink), &[]),
            // SNAP with another OUI; an LLC header that is not SNAP.
            (Dropped(DropReason::NonIp), &[]),
            (Dropped(DropReason::NonIp), &[]),
            // Cut in the SNAP header, in the QoS field, in frame control.
            (Dropped(DropReason::Truncated), &[]),
            (Dropped(DropReason::Truncated), &[]),
            (Dropped(DropReason::Truncated), &[]),
            // Radiotap: cut in its header, and a header longer than the frame.
            (Dropped(DropReason::Truncated), &[]),
            (Dropped(DropReason::Truncated), &[]),
        ],
    );
    assert_eq!(counters.drops.get(DropReason::Encrypted), 1);
}

const FABRIC_UDP: &str = "17 1.1.1.6:57005 > 2.2.2.2:48879 ip=28 pl=0";

/// FabricPath frames as captured, and the same packet behind 802.1ah PBB and VN-Tag.
#[test]
fn fabricpath_pbb_and_vntag() {
    let Some(fp) = frames("cisco-fabric-path.pcap", &[0, 1]) else {
        return;
    };
    let plain = &fp[0].bytes;
    let macs = &plain[..12];
    let pbb = [macs, &[0x88, 0xe7, 0, 0x01, 0x02, 0x03], plain].concat();
    let vntag = [macs, &[0x89, 0x26, 0x80, 1, 0, 2], &plain[12..]].concat();
    let vntag_vlan = [
        macs,
        &[0x89, 0x26, 0x80, 1, 0, 2, 0x81, 0x00, 0, 42],
        &plain[12..],
    ]
    .concat();
    let pbb_fp = [macs, &[0x88, 0xe7, 0, 0, 0, 1], &fp[1].bytes].concat();
    let ether = |b: Vec<u8>| frame(LinkType::Ethernet, b);
    let vlan_key = DecodeConfig {
        vlan_in_key: true,
        ..cfg()
    };
    check(
        vlan_key,
        &[
            fp[0].clone(),
            fp[1].clone(),
            ether(pbb.clone()),
            ether(vntag),
            ether(vntag_vlan),
            ether(pbb_fp),
            ether(fp[1].bytes[..29].to_vec()),
            ether(pbb[..31].to_vec()),
            ether(macs.iter().copied().chain([0x89, 0x26, 0, 0, 0]).collect()),
        ],
        &[
            (Summarised, &[FABRIC_UDP]),
            (Summarised, &[FABRIC_UDP]),
            (Summarised, &[FABRIC_UDP]),
            (Summarised, &[FABRIC_UDP]),
            (Summarised, &[&format!("{FABRIC_UDP} vlan=42")]),
            (Summarised, &[FABRIC_UDP]),
            (Dropped(DropReason::Truncated), &[]),
            (Dropped(DropReason::Truncated), &[]),
            (Dropped(DropReason::Truncated), &[]),
        ],
    );
}

/// PPP frames as captured (no HDLC bytes), and the same packets in every PPP framing.
#[test]
fn ppp_framings() {
    let Some(ppp) = frames("quic__interop__quic-go_quic-go__handshake.pcap", &[0, 4]) else {
        return;
    };
    let v4 = &ppp[1].bytes[2..];
    let udp = "17 193.167.0.100:40084 > 193.167.100.100:443 ip=1280 pl=1252";
    let with = |link, head: &[u8]| frame(link, [head, v4].concat());
    check(
        cfg(),
        &[
            ppp[0].clone(),
            ppp[1].clone(),
            with(LinkType::Ppp, &[0xff, 0x03, 0x00, 0x21]),
            with(LinkType::Ppp, &[0x02, 0x81, 0, 0, 0x11, 64]),
            with(LinkType::PppSerial, &[0xff, 0x03, 0x00, 0x21]),
            with(LinkType::PppSerial, &[0x0f, 0x00, 0x08, 0x00]),
            with(LinkType::Ppp, &[0xc0, 0x21]),
            with(LinkType::PppSerial, &[0x8f, 0x00, 0x80, 0x35]),
            frame(LinkType::Ppp, vec![0xff, 0x03, 0x00]),
            frame(LinkType::PppSerial, vec![0x0f]),
            frame(LinkType::PppSerial, vec![]),
        ],
        &[
            (
                Summarised,
                &["58 :::135 > ff02::1:ff00:4:136 ip=72 pl=24 icmp=135/0"],
            ),
            (Summarised, &[udp]),
            (Summarised, &[udp]),
            (Summarised, &[udp]),
            (Summarised, &[udp]),
            (Summarised, &[udp]),
            // LCP; Cisco HDLC carrying RARP.
            (Dropped(DropReason::NonIp), &[]),
            (Dropped(DropReason::NonIp), &[]),
            (Dropped(DropReason::Truncated), &[]),
            (Dropped(DropReason::Truncated), &[]),
            (Dropped(DropReason::Truncated), &[]),
        ],
    );
}

/// Every prefix of the real frames, on every link type, and the same bytes with each one
/// flipped: nothing panics and every packet is counted.
#[test]
fn prefixes_and_bit_flips_are_counted() {
    let Some(mut samples) = frames("radiotap.pcap", &[0, 1, 2]) else {
        return;
    };
    for (name, n) in [
        ("wlanmon.pcap", 0),
        ("cisco-fabric-path.pcap", 1),
        ("quic__interop__quic-go_quic-go__handshake.pcap", 4),
    ] {
        samples.extend(frames(name, &[n]).into_iter().flatten());
    }
    let mut d = Decoder::new(cfg());
    let mut out = Vec::new();
    let mut n = 0u64;
    for s in &samples {
        for link in LinkType::ALL {
            for len in 0..=s.bytes.len().min(80) {
                d.decode(link, 0, &s.bytes[..len], s.wire, &mut out);
                n += 1;
            }
            for at in 0..s.bytes.len().min(64) {
                let mut b = s.bytes.clone();
                b[at] ^= 0xff;
                d.decode(link, 0, &b, s.wire, &mut out);
                n += 1;
            }
        }
    }
    assert_eq!(d.counters().packets, n);
    assert_eq!(d.counters().summaries, out.len() as u64);
    assert_invariant(d.counters());
}

/// Every link type a pcap may name that tapflow decodes maps back to itself by name.
#[test]
fn link_type_names_and_numbers() {
    let named: Vec<(i32, &str)> = [9, 50, 105, 127]
        .into_iter()
        .filter_map(|dlt| LinkType::from_dlt(dlt).map(|l| (dlt, l.name())))
        .collect();
    assert_eq!(
        named,
        [
            (9, "PPP"),
            (50, "PPP_SERIAL"),
            (105, "IEEE802_11"),
            (127, "IEEE802_11_RADIO")
        ]
    );
    for link in LinkType::ALL {
        let again = (0..300).find(|&d| LinkType::from_dlt(d) == Some(link));
        assert!(again.is_some(), "{link:?} has no DLT");
    }
}
