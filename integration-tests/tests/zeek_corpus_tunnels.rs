//! Tunnels against Zeek's own test suite, in process: the tunnel tests of `../shared/zeek-corpus`
//! (`core.tunnels.*` and `core.unknown-ip-protocol` of Zeek's regression suite) are decoded, fed
//! to one `FlowTable` and compared with the conn.log Zeek wrote for each, field by field. Every
//! connection of Zeek's must be found, no other made, and every field agree but for the
//! differences that are not the decoder's, listed in [`NOT_THE_DECODERS`].

use std::path::{Path, PathBuf};

use tapflow_collector::decode::{DecodeConfig, Decoder, LinkType};
use tapflow_integration_tests::zeek::{parse_zeek_log, Row, Tally, FIELDS};
use tapflow_processor::session::{ConnRecord, FlowTable, SessionConfig};
use tapflow_proto::PacketSummary;

/// (test, field) that may disagree, for reasons outside tunnel decoding: Zeek counts a
/// connection's gain and loss of a tunnel as tunnel changes ('X' once past the limit), the
/// session engine only changes between tunnels; Zeek gives an unknown transport's payload no
/// size.
const NOT_THE_DECODERS: &[(&str, &str)] = &[
    ("core.tunnels.count-default-tunnel-changes", "history"),
    ("core.unknown-ip-protocol", "orig_bytes"),
    ("core.unknown-ip-protocol", "resp_bytes"),
];

fn corpus_dir() -> Option<PathBuf> {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/zeek-corpus"
    ));
    if dir.join("MANIFEST.tsv").is_file() {
        Some(dir.to_path_buf())
    } else {
        eprintln!("SKIP: {} is absent", dir.display());
        None
    }
}

fn sessions(pcap: &Path, verify_checksums: bool) -> Vec<ConnRecord> {
    let mut cap = pcap::Capture::from_file_with_precision(pcap, pcap::Precision::Nano)
        .expect("opening the capture");
    let link = LinkType::from_dlt(cap.get_datalink().0).expect("a link type tapflow decodes");
    let mut decoder = Decoder::new(DecodeConfig {
        verify_checksums,
        ..DecodeConfig::default()
    });
    let mut table = FlowTable::new(SessionConfig::default());
    let (mut summaries, mut records) = (Vec::<PacketSummary>::new(), Vec::new());
    while let Ok(p) = cap.next_packet() {
        let ts = u64::try_from(p.header.ts.tv_sec).unwrap_or(0) * 1_000_000_000
            + u64::try_from(p.header.ts.tv_usec).unwrap_or(0);
        summaries.clear();
        decoder.decode(link, ts, p.data, p.header.len, &mut summaries);
        for s in &summaries {
            table.on_summary(s, &mut records);
        }
    }
    decoder.finish();
    table.flush(&mut records);
    records
}

fn row(r: &ConnRecord) -> Row {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let mut row = Row::new();
    for f in FIELDS {
        let v = match *f {
            "conn_state" => r.conn_state.as_str().to_owned(),
            "history" if r.history.is_empty() => "-".to_owned(),
            "history" => r.history.clone(),
            "orig_pkts" => r.orig_pkts.to_string(),
            "resp_pkts" => r.resp_pkts.to_string(),
            "orig_ip_bytes" => r.orig_ip_bytes.to_string(),
            "resp_ip_bytes" => r.resp_ip_bytes.to_string(),
            "orig_bytes" => opt(r.orig_bytes),
            "resp_bytes" => opt(r.resp_bytes),
            "missed_bytes" => r.missed_bytes.to_string(),
            _ => continue,
        };
        row.insert((*f).to_owned(), v);
    }
    row.insert("id.orig_h".into(), r.orig_h.to_string());
    row.insert("id.orig_p".into(), r.orig_p.to_string());
    row.insert("id.resp_h".into(), r.resp_h.to_string());
    row.insert("id.resp_p".into(), r.resp_p.to_string());
    let proto = match r.proto {
        6 => "tcp",
        17 => "udp",
        1 | 58 => "icmp",
        _ => "unknown_transport",
    };
    row.insert("proto".into(), proto.to_owned());
    row
}

#[test]
fn tunnel_traces_agree_with_zeek() {
    let Some(dir) = corpus_dir() else { return };
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect("reading MANIFEST");
    let mut tally = Tally::default();
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (Some(test), Some(truth), Some(trace), Some(flags)) =
            (cols.first(), cols.get(1), cols.get(2), cols.get(3))
        else {
            continue;
        };
        if !(test.starts_with("core.tunnels.") || *test == "core.unknown-ip-protocol") {
            continue;
        }
        let verify = !flags.split(' ').any(|f| f == "-C");
        let zeek = parse_zeek_log(&std::fs::read_to_string(dir.join(truth)).expect("truth"));
        let ours = sessions(&dir.join(trace), verify);
        tally.add(test, &zeek, ours.iter().map(row).collect());
    }
    println!("{}", tally.report);
    println!("{}", tally.table());
    assert!(tally.captures.len() >= 13, "{} tests", tally.captures.len());
    for c in &tally.captures {
        let name = c.capture.as_str();
        assert_eq!(
            (c.found, c.ours, c.flipped),
            (c.zeek_conns, c.zeek_conns, 0),
            "{name}: Zeek's connections found, ours, flipped\n{}",
            tally.report
        );
        for (field, (agree, n)) in &c.fields {
            assert!(
                agree == n || NOT_THE_DECODERS.contains(&(name, *field)),
                "{name}: {field} agrees on {agree}/{n}\n{}",
                tally.report
            );
        }
    }
}
