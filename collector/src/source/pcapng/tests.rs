//! The pcapng reader against libpcap as the oracle: every pcapng capture of `../shared` (skipped,
//! saying so, when absent) reads to the same records; files built here from real captures, in
//! either byte order, with every timestamp option, read the same as libpcap reads them, and a
//! file whose interfaces differ (which libpcap refuses) reads, interface by interface, as
//! libpcap reads each interface written alone. Damaged files give their error, never a panic.

use std::path::{Path, PathBuf};

use super::*;

pub(in crate::source) mod craft;
mod damaged;

use craft::Writer;

/// One record: link type (LINKTYPE_/DLT_ value), timestamp in ns, bytes, wire length.
type Rec = (i32, u64, Vec<u8>, u32);

/// An interface to write: LINKTYPE, snaplen, `if_tsresol`, `if_tsoffset`, its records.
type Iface<'a> = (u16, u32, Option<u8>, Option<i64>, &'a [Rec]);

/// `../shared/NAME` from the project root, or `None` (saying so) when absent.
fn shared(name: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared")
        .join(name);
    if dir.exists() {
        Some(dir)
    } else {
        println!("skipping: {} is absent", dir.display());
        None
    }
}

/// Every record libpcap reads from `path` (nanosecond precision), or its error.
fn libpcap_records(path: &Path) -> Result<Vec<Rec>, String> {
    let mut cap = pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano)
        .map_err(|e| e.to_string())?;
    let dlt = cap.get_datalink().0;
    let mut out = Vec::new();
    loop {
        match cap.next_packet() {
            Ok(p) => {
                let secs = u64::try_from(p.header.ts.tv_sec).expect("a timestamp after 1970");
                let frac = u64::try_from(p.header.ts.tv_usec).expect("a fraction of a second");
                out.push((
                    dlt,
                    secs * 1_000_000_000 + frac,
                    p.data.to_vec(),
                    p.header.len,
                ));
            }
            Err(pcap::Error::NoMorePackets) => return Ok(out),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Every record this reader gives for `bytes`, or its error; the link type as libpcap names
/// it (LINKTYPE_RAW as DLT_RAW) so it compares with [`libpcap_records`].
fn reader_records(bytes: &[u8]) -> Result<Vec<(u32, Rec)>, PcapngError> {
    let mut reader = Reader::new(bytes)?;
    let mut out = Vec::new();
    while let Some((h, data)) = reader.next_packet()? {
        let dlt = if h.interface.dlt == 101 {
            12
        } else {
            i32::from(h.interface.dlt)
        };
        out.push((h.interface_id, (dlt, h.ts_ns, data.to_vec(), h.wire_len)));
    }
    Ok(out)
}

/// Asserts `ours == theirs`, naming the first record that differs (not printing them all).
fn assert_same(ours: &[Rec], theirs: &[Rec], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: packet count");
    if let Some(i) = (0..ours.len()).find(|&i| ours[i] != theirs[i]) {
        let (a, b) = (&ours[i], &theirs[i]);
        panic!(
            "{what}: record {i} differs: ours (link {}, {} ns, {} bytes {:02x?}.., wire {}), libpcap (link {}, {} ns, {} bytes {:02x?}.., wire {})",
            a.0, a.1, a.2.len(), &a.2[..a.2.len().min(24)], a.3,
            b.0, b.1, b.2.len(), &b.2[..b.2.len().min(24)], b.3
        );
    }
}

fn without_interfaces(recs: Vec<(u32, Rec)>) -> Vec<Rec> {
    recs.into_iter().map(|(_, r)| r).collect()
}

/// Writes `bytes` to a temporary file and reads it with libpcap.
fn libpcap_on_bytes(bytes: &[u8]) -> Result<Vec<Rec>, String> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("t.pcapng");
    std::fs::write(&path, bytes).expect("writing a capture file");
    libpcap_records(&path)
}

#[test]
fn every_shared_pcapng_reads_as_libpcap_reads_it() {
    let mut compared = 0;
    for dir in ["pcaps", "zeek-corpus/traces"] {
        let Some(dir) = shared(dir) else { return };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("listing the captures")
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "pcapng"))
            .collect();
        files.sort();
        for path in files {
            let bytes = std::fs::read(&path).expect("reading a capture");
            let ours = reader_records(&bytes).map(without_interfaces);
            let theirs = libpcap_records(&path);
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => {
                    assert_same(a, b, &name);
                    println!("{name}: {} records, identical to libpcap's", a.len());
                    compared += 1;
                }
                (Err(a), Err(b)) => println!("{name}: refused by both: ours {a}; libpcap {b}"),
                _ => panic!(
                    "{name}: ours {:?} libpcap {:?}",
                    ours.as_ref().map(Vec::len),
                    theirs.as_ref().map(Vec::len)
                ),
            }
        }
    }
    // 6 in ../shared/pcaps (libpcap refuses 2 more there, and so does this reader), 8 in the
    // Zeek corpus.
    assert_eq!(compared, 14, "pcapng files libpcap reads");
}

/// The records of a real classic capture, as libpcap reads it (the material for crafted files).
fn real(name: &str) -> Option<Vec<Rec>> {
    let path = shared("pcaps")?.join(name);
    Some(libpcap_records(&path).expect("libpcap reads the capture"))
}

#[test]
fn crafted_single_interface_files_read_as_libpcap_reads_them() {
    let Some(eth) = real("zeek-ssh.pcap") else {
        return;
    };
    let Some(nflog) = real("zeek-nflog-http.pcap") else {
        return;
    };
    let cases: [Iface; 5] = [
        (1, 0, None, None, &eth[..]),
        (1, 65535, Some(9), Some(-3), &eth[..]),
        (1, 262_144, Some(0x80 | 30), None, &eth[..]),
        (1, 1_000_000, Some(3), Some(1_000), &eth[..]),
        (239, 65535, Some(9), None, &nflog[..]),
    ];
    for big_endian in [false, true] {
        for (n, (linktype, snaplen, resol, offset, recs)) in cases.iter().enumerate() {
            let mut w = Writer::new(big_endian);
            w.idb(*linktype, *snaplen, *resol, *offset);
            for (_, ts, data, len) in recs.iter() {
                w.epb_ns(0, *resol, *ts, data, *len);
            }
            let bytes = w.finish();
            let theirs = libpcap_on_bytes(&bytes).expect("libpcap reads a single-interface file");
            let ours = without_interfaces(reader_records(&bytes).expect("our reader reads it"));
            let what = format!("case {n}, big-endian {big_endian}");
            assert_eq!(ours.len(), recs.len(), "{what}");
            assert_same(&ours, &theirs, &what);
            if n == 0 || n == 4 {
                // Microseconds (the default) and nanoseconds keep the original's bytes and times
                // (to the microsecond for the former); NFLOG's TLV headers come back in host order.
                let original: Vec<Rec> = recs
                    .iter()
                    .map(|(d, ts, data, len)| (*d, ts / 1000 * 1000, data.clone(), *len))
                    .collect();
                let ours_us: Vec<Rec> = ours
                    .iter()
                    .map(|(d, ts, data, len)| (*d, ts / 1000 * 1000, data.clone(), *len))
                    .collect();
                assert_same(
                    &ours_us,
                    &original,
                    &format!("{what}, against the original"),
                );
            }
        }
    }
}

/// Two sections (the second in the other byte order) whose interfaces differ in link type,
/// snapshot length and timestamp resolution: libpcap refuses the file; this reader gives each
/// interface's packets as libpcap reads that interface written alone, in file order.
#[test]
fn interfaces_that_differ_read_as_each_alone() {
    let Some(eth) = real("zeek-ssh.pcap") else {
        return;
    };
    let Some(raw) = real("zeek-rotation-rawip.pcap") else {
        return;
    };
    let Some(sll2) = real("suricata-decode-sll2-01.pcap") else {
        return;
    };
    let ifaces: [Iface; 3] = [
        (1, 65535, None, None, &eth[..40]),
        (101, 1500, Some(9), Some(5), &raw[..]),
        (276, 0, Some(0x80 | 20), None, &sll2[..]),
    ];
    let mut merged = Writer::new(false);
    let mut alone: Vec<Writer> = Vec::new();
    for (linktype, snaplen, resol, offset, _) in ifaces {
        merged.idb(linktype, snaplen, resol, offset);
        let mut w = Writer::new(false);
        w.idb(linktype, snaplen, resol, offset);
        alone.push(w);
    }
    // Round-robin over the interfaces; half-way, a new section in the other byte order
    // describing the same interfaces again.
    let longest = ifaces.iter().map(|i| i.4.len()).max().unwrap_or(0);
    for k in 0..longest {
        if k == longest / 2 {
            merged.section(true);
            for (linktype, snaplen, resol, offset, _) in ifaces {
                merged.idb(linktype, snaplen, resol, offset);
            }
        }
        for (i, (_, snaplen, resol, _, recs)) in ifaces.iter().enumerate() {
            let Some((_, ts, data, len)) = recs.get(k) else {
                continue;
            };
            let cut = if *snaplen == 0 {
                data.len()
            } else {
                data.len().min(*snaplen as usize)
            };
            let data = &data[..cut];
            let id = u32::try_from(i).expect("interface id");
            merged.epb_ns(id, *resol, *ts, data, *len);
            alone[i].epb_ns(0, *resol, *ts, data, *len);
        }
    }
    let bytes = merged.finish();
    let refused =
        libpcap_on_bytes(&bytes).expect_err("libpcap 1.10 refuses interfaces that differ");
    assert!(refused.contains("different from the"), "{refused}");
    let ours = reader_records(&bytes).expect("our reader reads the merged file");
    let mut total = 0;
    for (i, w) in alone.into_iter().enumerate() {
        let theirs = libpcap_on_bytes(&w.finish()).expect("libpcap reads one interface alone");
        let mine: Vec<Rec> = ours
            .iter()
            .filter(|(id, _)| *id as usize == i)
            .map(|(_, r)| r.clone())
            .collect();
        assert_eq!(mine.len(), ifaces[i].4.len(), "interface {i}: packet count");
        assert_same(&mine, &theirs, &format!("interface {i}"));
        total += mine.len();
    }
    assert_eq!(ours.len(), total);
    // File order: interface ids go round-robin as written.
    let order: Vec<u32> = ours.iter().take(3).map(|(id, _)| *id).collect();
    assert_eq!(order, [0, 1, 2]);
}

/// Simple and obsolete Packet Blocks, an unknown block and a second IDB option order: values
/// worked out by hand from the pcapng specification.
#[test]
fn simple_and_obsolete_packet_blocks() {
    for big_endian in [false, true] {
        let mut w = Writer::new(big_endian);
        w.idb(1, 64, Some(0x80 | 10), Some(100));
        w.block(0x0000_0BAD, &[1, 2, 3, 4]);
        w.spb(&[0xAB; 100]);
        w.opb(0, 3 * 1024 + 512, &[0xCD; 20], 60);
        let bytes = w.finish();
        let recs = reader_records(&bytes).expect("reading SPB and OPB");
        assert_eq!(recs.len(), 2);
        // SPB: no timestamp (0 units: second 0 + offset 100), wire 100 cut to the snaplen 64.
        assert_eq!(recs[0].1, (1, 100_000_000_000, vec![0xAB; 64], 100));
        // OPB: 3.5 units of 2^-10 s: 3 s + 512/1024 s, plus the offset.
        assert_eq!(recs[1].1, (1, 103_500_000_000, vec![0xCD; 20], 60));
        assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 0]);
    }
}

/// Through `Source`, with a BPF filter: on every shared pcapng capture libpcap reads, the same
/// records as libpcap with the same filter (here compiled per interface link type).
#[test]
fn a_filter_keeps_what_libpcap_keeps() {
    use crate::config::SourceSpec;
    use crate::source::{Next, Source};
    let filter = "tcp[tcpflags] & tcp-syn != 0 or (udp and port 53) or greater 1000";
    let (mut compared, mut kept, mut all) = (0, 0, 0);
    for dir in ["pcaps", "zeek-corpus/traces"] {
        let Some(dir) = shared(dir) else { return };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("listing the captures")
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "pcapng"))
            .collect();
        files.sort();
        for path in files {
            if let Ok(recs) = libpcap_records(&path) {
                all += recs.len();
            }
            let Ok(mut cap) = pcap::Capture::from_file_with_precision(&path, pcap::Precision::Nano)
            else {
                continue;
            };
            cap.filter(filter, true)
                .expect("libpcap compiles the filter");
            let mut theirs = Vec::new();
            while let Ok(p) = cap.next_packet() {
                let ts = &p.header.ts;
                let ns = u64::try_from(ts.tv_sec).expect("seconds") * 1_000_000_000
                    + u64::try_from(ts.tv_usec).expect("fraction");
                theirs.push((ns, p.data.to_vec(), p.header.len));
            }
            let mut source = Source::open(&SourceSpec::File(path.clone()), Some(filter))
                .expect("opening with the filter");
            let mut ours = Vec::new();
            while let Next::Packet(r) = source.next_record().expect("reading") {
                ours.push((r.ts_ns, r.data.to_vec(), r.wire_len));
            }
            assert_eq!(ours.len(), theirs.len(), "{}", path.display());
            assert!(ours == theirs, "{}: records differ", path.display());
            compared += 1;
            kept += ours.len();
        }
    }
    println!("{compared} captures: the filter kept {kept} of {all} packets, as libpcap did");
    assert_eq!(compared, 14);
    assert!(kept > 0 && kept < all, "the filter kept {kept} of {all}");
}
