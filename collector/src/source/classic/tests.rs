//! The reader against libpcap: the same records (time, wire length, bytes) and the same end
//! (its message for damage) on every classic capture of `../shared` and on crafted damage.

use std::path::{Path, PathBuf};

use super::*;
use crate::source::offline;

/// Everything a reader gives: the records, then `None` at the end or the damage's message.
type Reading = (Vec<(u64, u32, Vec<u8>)>, Option<String>);

fn by_libpcap(path: &Path) -> Reading {
    let mut f = offline::open(path).expect("libpcap opens it");
    let mut out = Vec::new();
    loop {
        match f.capture.next_packet() {
            Ok(p) => {
                let ts = &p.header.ts;
                let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_usec as u64;
                out.push((ns, p.header.len, p.data.to_vec()));
            }
            Err(pcap::Error::NoMorePackets) => return (out, None),
            // The pcap crate's prefix; the message after it is libpcap's.
            Err(e) => {
                let msg = e.to_string();
                let msg = msg.strip_prefix("libpcap error: ").unwrap_or(&msg);
                return (out, Some(msg.to_owned()));
            }
        }
    }
}

fn by_classic(path: &Path) -> Option<Reading> {
    let file = File::open(path).expect("open");
    let mut r = Classic::open(file).expect("read the header")?;
    let mut out = Vec::new();
    loop {
        match r.next_header() {
            Ok(Some(h)) => out.push((h.ts_ns, h.wire_len, r.data(&h).to_vec())),
            Ok(None) => return Some((out, None)),
            Err(e) => return Some((out, Some(e))),
        }
    }
}

fn shared_captures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    let mut files = Vec::new();
    for dir in ["pcaps", "zeek-corpus/traces"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        files.extend(entries.flatten().map(|e| e.path()));
    }
    files.sort();
    files
}

#[test]
fn every_shared_classic_capture_reads_as_libpcap_reads_it() {
    let files = shared_captures();
    assert!(files.len() > 100, "../shared is beside the checkout");
    let mut taken = 0;
    for path in files {
        let Some(ours) = by_classic(&path) else {
            continue;
        };
        taken += 1;
        let theirs = by_libpcap(&path);
        assert_eq!(ours.1, theirs.1, "{}: the end", path.display());
        assert_eq!(ours.0.len(), theirs.0.len(), "{}", path.display());
        assert!(ours.0 == theirs.0, "{}: records differ", path.display());
    }
    assert!(taken >= 100, "only {taken} classic captures taken");
}

/// A classic capture of `records` (seconds, fraction, caplen, wire length, bytes).
fn craft(swapped: bool, nano: bool, snaplen: u32, records: &[(u32, u32, u32, u32)]) -> Vec<u8> {
    let w = |v: u32| {
        if swapped {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let h = |v: u16| {
        if swapped {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut b = Vec::new();
    b.extend(w(if nano { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
    b.extend(h(2));
    b.extend(h(4));
    for v in [0, 0, snaplen, 1] {
        b.extend(w(v));
    }
    for &(secs, frac, caplen, len) in records {
        for v in [secs, frac, caplen, len] {
            b.extend(w(v));
        }
        b.extend((0..caplen.min(70_000)).map(|i| i as u8));
    }
    b
}

fn both(bytes: &[u8]) -> (Reading, Reading) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("c.pcap");
    std::fs::write(&path, bytes).expect("write");
    let ours = by_classic(&path).expect("a classic capture");
    (ours, by_libpcap(&path))
}

#[test]
fn crafted_files_and_damage_read_as_libpcap_reads_them() {
    let recs = [(1, 999_999, 60, 60), (2, 5, 1514, 1514), (3, 0, 0, 0)];
    for swapped in [false, true] {
        for nano in [false, true] {
            let whole = craft(swapped, nano, 65535, &recs);
            let (ours, theirs) = both(&whole);
            assert_eq!(ours, theirs, "swapped {swapped} nano {nano}");
            assert_eq!(ours.0.len(), 3);
            // Cut in a record's bytes, in a header, and just after the file header.
            for cut in [whole.len() - 1, 24 + 16 + 60 + 7, 24 + 16 + 60, 24] {
                let (ours, theirs) = both(&whole[..cut]);
                assert_eq!(ours, theirs, "cut at {cut}");
            }
        }
    }
    // A caplen past the snapshot length (cut to it), past the maximum, and a 0 snapshot.
    for (snaplen, caplen) in [(100, 200), (100, 300_000), (0, 300_000), (0, 1000)] {
        let bytes = craft(
            false,
            false,
            snaplen,
            &[(1, 0, caplen, caplen), (2, 0, 10, 10)],
        );
        let (ours, theirs) = both(&bytes);
        assert_eq!(ours.1, theirs.1, "snaplen {snaplen} caplen {caplen}");
        assert!(ours.0 == theirs.0, "snaplen {snaplen} caplen {caplen}");
    }
}

#[test]
fn other_formats_are_left_to_libpcap() {
    let mut other_version = craft(false, false, 65535, &[]);
    other_version[6] = 3;
    let mut fcs_bits = craft(false, false, 65535, &[]);
    fcs_bits[23] = 0x10;
    let mut unknown_link = craft(false, false, 65535, &[]);
    unknown_link[20] = 147;
    for bytes in [other_version, fcs_bits, unknown_link, b"0123".to_vec()] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("o.pcap");
        std::fs::write(&path, &bytes).expect("write");
        assert!(by_classic(&path).is_none(), "{bytes:?}");
    }
}
