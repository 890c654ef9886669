//! Zeek's session rules on the traces of Zeek's own test suite that show them
//! (`../shared/zeek-corpus`, issue 16), in process: each trace decoded as its test ran it and fed
//! to one `FlowTable`, every row of Zeek's conn.log found in the same direction with every
//! compared field equal.
//! - No flip towards the IPv4 broadcast address: a DHCP server's broadcast reply
//!   (scripts.base.protocols.dhcp.dhcp-all-msg-types).
//! - No payload sizes for IP protocols Zeek has no analyzer for: SCTP (core.unknown-ip-protocol).
//! - The flip of a connection first seen at its SYN-ACK from a likely server port, `^h...`
//!   (scripts.base.protocols.krb.krb-service-name, scripts.base.protocols.ssh.half-duplex-server).

use std::path::{Path, PathBuf};

use tapflow_collector::decode::{DecodeConfig, Decoder, LinkType};
use tapflow_integration_tests::zeek::{parse_zeek_log, Row, Tally, FIELDS};
use tapflow_processor::session::{ConnRecord, FlowTable, SessionConfig};
use tapflow_proto::PacketSummary;

const TESTS: &[&str] = &[
    "scripts.base.protocols.dhcp.dhcp-all-msg-types",
    "core.unknown-ip-protocol",
    "scripts.base.protocols.krb.krb-service-name",
    "scripts.base.protocols.ssh.half-duplex-server",
];

fn corpus_dir() -> Option<PathBuf> {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/zeek-corpus"
    ))
    .to_path_buf();
    if dir.join("MANIFEST.tsv").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: {} is absent (Zeek's test traces sit beside the clone in CI)",
            dir.display()
        );
        None
    }
}

/// Decodes a capture and runs it through one flow table.
fn sessions(pcap: &Path, verify_checksums: bool) -> Vec<ConnRecord> {
    let mut cap = pcap::Capture::from_file_with_precision(pcap, pcap::Precision::Nano)
        .expect("opening the trace");
    let link = LinkType::from_dlt(cap.get_datalink().0).expect("a supported link type");
    let mut decoder = Decoder::new(DecodeConfig {
        verify_checksums,
        ..DecodeConfig::default()
    });
    let mut table = FlowTable::new(SessionConfig {
        max_flows: 10_000,
        ..SessionConfig::default()
    });
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
    table.flush(&mut records);
    records
}

/// Our record as a Zeek row.
fn row(r: &ConnRecord) -> Row {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let history = if r.history.is_empty() {
        "-".to_owned()
    } else {
        r.history.clone()
    };
    let proto = match r.proto {
        6 => "tcp",
        17 => "udp",
        1 | 58 => "icmp",
        _ => "unknown_transport",
    };
    let values = [
        ("conn_state", r.conn_state.as_str().to_owned()),
        ("history", history),
        ("orig_pkts", r.orig_pkts.to_string()),
        ("resp_pkts", r.resp_pkts.to_string()),
        ("orig_ip_bytes", r.orig_ip_bytes.to_string()),
        ("resp_ip_bytes", r.resp_ip_bytes.to_string()),
        ("orig_bytes", opt(r.orig_bytes)),
        ("resp_bytes", opt(r.resp_bytes)),
        ("missed_bytes", r.missed_bytes.to_string()),
        ("id.orig_h", r.orig_h.to_string()),
        ("id.orig_p", r.orig_p.to_string()),
        ("id.resp_h", r.resp_h.to_string()),
        ("id.resp_p", r.resp_p.to_string()),
        ("proto", proto.to_owned()),
    ];
    values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[test]
fn zeek_session_rules_on_zeeks_own_traces() {
    let Some(dir) = corpus_dir() else { return };
    let manifest =
        std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect("reading the corpus manifest");
    let mut tally = Tally::default();
    for test in TESTS {
        let cols: Vec<&str> = manifest
            .lines()
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .find(|c| c.first() == Some(test))
            .expect("the test's row in MANIFEST.tsv");
        let (truth, trace, collector_flags) = (cols[1], cols[2], cols[5]);
        let truth = std::fs::read_to_string(dir.join(truth)).expect("reading Zeek's conn.log");
        let verify = !collector_flags.contains("--ignore-checksums");
        let ours = sessions(&dir.join(trace), verify);
        tally.add(
            test,
            &parse_zeek_log(&truth),
            ours.iter().map(row).collect(),
        );
    }
    println!("{}", tally.report);
    for c in &tally.captures {
        assert!(
            c.zeek_conns > 0,
            "{}: an empty truth\n{}",
            c.capture,
            tally.report
        );
        assert_eq!(
            (c.found, c.flipped, c.ours),
            (c.zeek_conns, 0, c.zeek_conns),
            "{}: connections found, flipped, ours\n{}",
            c.capture,
            tally.report
        );
        for field in FIELDS {
            let (agree, n) = c.field(field);
            assert_eq!(agree, n, "{}: {field}\n{}", c.capture, tally.report);
        }
    }
}
