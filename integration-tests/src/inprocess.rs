//! The session engine in process, for comparisons with Zeek's conn.log that need no sockets:
//! a capture decoded by the collector's decoder with a checksum setting, fed summary by summary
//! to one processor `FlowTable`, flushed; and a record as a Zeek row.

use std::collections::HashSet;
use std::path::Path;

use tapflow_collector::decode::{DecodeConfig, Decoder, LinkType};
use tapflow_collector::evidence::EvidenceConfig;
use tapflow_processor::session::{ConnRecord, FlowTable, SessionConfig};
use tapflow_proto::account::EvidenceCounters;
use tapflow_proto::{FlowKey, PacketSummary};

use crate::zeek::{Row, FIELDS};

/// Decodes a capture (through libpcap) and runs it through one flow table; an error names
/// what failed. No cap may be reached: an eviction is an error too. Payload evidence is on,
/// at the collector's default budget, as a collector ships it.
pub fn sessions(pcap: &Path, verify_checksums: bool) -> Result<Vec<ConnRecord>, String> {
    let Run {
        mut table,
        mut records,
        ..
    } = run(pcap, verify_checksums, EvidenceConfig::default())?;
    table.flush(&mut records);
    match table.stats().evicted {
        0 => Ok(records),
        n => Err(format!("{n} connections evicted: no cap may be reached")),
    }
}

/// A capture run through the decoder (with payload evidence at `evidence`) and one flow
/// table, before the table's flush: what [`sessions`] finishes.
pub struct Run {
    /// The table, its connections still open.
    pub table: FlowTable,
    /// The records made so far (connections ended by a later packet).
    pub records: Vec<ConnRecord>,
    /// The flows whose summaries carried payload, in the order first seen.
    pub with_payload: Vec<FlowKey>,
    /// The decoder's payload evidence counters.
    pub evidence: EvidenceCounters,
}

/// Decodes `pcap` and applies every summary to one flow table (see [`Run`]).
pub fn run(pcap: &Path, verify_checksums: bool, evidence: EvidenceConfig) -> Result<Run, String> {
    let mut cap = pcap::Capture::from_file_with_precision(pcap, pcap::Precision::Nano)
        .map_err(|e| e.to_string())?;
    let dlt = cap.get_datalink().0;
    let link = LinkType::from_dlt(dlt).ok_or_else(|| format!("unsupported link type {dlt}"))?;
    let mut decoder = Decoder::new(DecodeConfig {
        verify_checksums,
        evidence,
        ..DecodeConfig::default()
    });
    let mut table = FlowTable::new(SessionConfig {
        max_flows: 100_000,
        ..SessionConfig::default()
    });
    let (mut summaries, mut records) = (Vec::<PacketSummary>::new(), Vec::new());
    let (mut with_payload, mut seen) = (Vec::new(), HashSet::new());
    loop {
        match cap.next_packet() {
            Ok(p) => {
                let ts = u64::try_from(p.header.ts.tv_sec).unwrap_or(0) * 1_000_000_000
                    + u64::try_from(p.header.ts.tv_usec).unwrap_or(0);
                summaries.clear();
                decoder.decode(link, ts, p.data, p.header.len, &mut summaries);
                for s in &summaries {
                    if s.payload.is_some() && seen.insert(s.key) {
                        with_payload.push(s.key);
                    }
                    table.on_summary(s, &mut records);
                }
            }
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    decoder.finish();
    Ok(Run {
        table,
        records,
        with_payload,
        evidence: *decoder.evidence(),
    })
}

/// Our record's value for a conn.log column, printed as Zeek prints it.
pub fn value(r: &ConnRecord, field: &str) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    match field {
        "conn_state" => r.conn_state.as_str().to_owned(),
        "history" if r.history.is_empty() => "-".to_owned(),
        "history" => r.history.to_string(),
        "orig_pkts" => r.orig_pkts.to_string(),
        "resp_pkts" => r.resp_pkts.to_string(),
        "orig_ip_bytes" => r.orig_ip_bytes.to_string(),
        "resp_ip_bytes" => r.resp_ip_bytes.to_string(),
        "orig_bytes" => opt(r.orig_bytes),
        "resp_bytes" => opt(r.resp_bytes),
        "missed_bytes" => r.missed_bytes.to_string(),
        _ => String::new(),
    }
}

/// Zeek's `proto` column for an IP protocol number.
pub fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        1 | 58 => "icmp",
        _ => "unknown_transport",
    }
}

/// Our record as a Zeek row: the compared fields, the id columns, `proto` and `ip_proto`.
pub fn row(r: &ConnRecord) -> Row {
    let mut row: Row = FIELDS
        .iter()
        .map(|f| ((*f).to_owned(), value(r, f)))
        .collect();
    row.insert("id.orig_h".into(), r.orig_h.to_string());
    row.insert("id.orig_p".into(), r.orig_p.to_string());
    row.insert("id.resp_h".into(), r.resp_h.to_string());
    row.insert("id.resp_p".into(), r.resp_p.to_string());
    row.insert("proto".into(), proto_name(r.proto).to_owned());
    row.insert("ip_proto".into(), r.proto.to_string());
    row
}
