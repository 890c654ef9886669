//! Bytes as a capture file, through the collector's capture-record path: the collector's own
//! readers take classic pcap 2.4 (`source/classic.rs`) and pcapng, libpcap any other pcap
//! variant (the first bytes pick), `Source` hands out the
//! records, and every record goes through the packet decoder, as `tapflow-collector --pcap`
//! does. Whatever the bytes: no panic, a typed error for a file that cannot be opened or is
//! damaged, records no longer than libpcap says, and an accounting that reconciles
//! (DESIGN invariants 5 and 7). Seeds: the shared captures (`fuzz/seed.sh`).

#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use tapflow_collector::config::SourceSpec;
use tapflow_collector::decode::{DecodeConfig, Decoder};
use tapflow_collector::source::{Next, Source, SourceError};
use tapflow_proto::PacketSummary;

/// Records read from one input at most: a tiny file can claim millions of empty records.
const MAX_RECORDS: usize = 100_000;

fuzz_target!(|data: &[u8]| {
    // libpcap reads files, so the input goes to one in memory-backed /dev/shm (per process:
    // libFuzzer's -fork/-jobs run several).
    let path = PathBuf::from(format!("/dev/shm/tapflow-fuzz-{}.cap", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let mut source = match Source::open(&SourceSpec::File(path.clone()), None) {
        Ok(s) => s,
        Err(SourceError::Open { .. } | SourceError::UnsupportedLink { .. }) => return,
        Err(e) => panic!("opening a file gave an unexpected error: {e}"),
    };
    let mut decoder = Decoder::new(DecodeConfig::default());
    let mut out: Vec<PacketSummary> = Vec::new();
    for _ in 0..MAX_RECORDS {
        match source.next_record() {
            Ok(Next::Packet(rec)) => {
                assert!(
                    rec.data.len() as u64 <= u64::from(rec.wire_len.max(rec.data.len() as u32)),
                    "record longer than its wire length"
                );
                out.clear();
                decoder.decode(rec.link, rec.ts_ns, rec.data, rec.wire_len, &mut out);
            }
            Ok(Next::End) => break,
            Ok(Next::Idle) => panic!("a file said Idle"),
            // A pcapng interface of a link type tapflow does not decode ends the file, named.
            Err(SourceError::Damaged { .. } | SourceError::UnsupportedLink { .. }) => break,
            Err(e) => panic!("reading a file gave an unexpected error: {e}"),
        }
    }
    decoder.finish();
    let c = decoder.counters();
    assert_eq!(
        c.packets,
        c.packets_summarised + c.fragments_merged + c.fragments_held + c.drops.packet_drops(),
        "accounting does not reconcile: {c:?}"
    );
    let _ = std::fs::remove_file(&path);
});
