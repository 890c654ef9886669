//! Bytes as a pcapng file, straight into the collector's own pcapng reader
//! (`tapflow_collector::source::pcapng::Reader`, no file, no libpcap): whatever the bytes, no
//! panic and no allocation past the reader's block cap; every packet fits its interface's
//! snapshot length and its wire length is what the block says; a file ends at its end or with
//! a typed error. Seeds: the shared pcapng captures (`fuzz/seed.sh`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tapflow_collector::decode::LinkType;
use tapflow_collector::source::pcapng::Reader;

/// Packets read from one input at most (a small file can hold many empty blocks).
const MAX_PACKETS: usize = 100_000;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = Reader::new(data) else {
        return;
    };
    assert!(reader.first_interface().is_some(), "opened without an interface");
    for _ in 0..MAX_PACKETS {
        match reader.next_packet() {
            Ok(Some((h, bytes))) => {
                assert!(
                    bytes.len() as u64 <= u64::from(h.interface.snaplen),
                    "a packet past its snapshot length"
                );
                assert_eq!(h.link, LinkType::from_dlt(i32::from(h.interface.dlt)));
            }
            Ok(None) | Err(_) => break,
        }
    }
});
