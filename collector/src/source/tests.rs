//! The sources through the trait the capture loop uses: a real capture file, a damaged one,
//! a missing one, and a source of another kind plugged in through [`Source::new`].

use std::path::PathBuf;

use super::*;

/// A capture file of `records` 60-byte Ethernet frames (classic pcap, microseconds).
fn pcap_bytes(records: u32) -> Vec<u8> {
    let mut b = Vec::new();
    // Magic, version 2.4 (two u16s), zone, sigfigs, snaplen, Ethernet.
    for word in [0xa1b2_c3d4_u32, 0x0004_0002, 0, 0, 65535, 1] {
        b.extend_from_slice(&word.to_le_bytes());
    }
    for i in 0..records {
        for word in [1_000 + i, 500, 60, 60] {
            b.extend_from_slice(&word.to_le_bytes());
        }
        b.extend_from_slice(&[0u8; 60]);
    }
    b
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("writing a capture file");
    path
}

/// Reads `source` to its end or first error; returns the records and how it ended.
fn read_all(source: &mut Source) -> (Vec<(u64, u32)>, Result<(), SourceError>) {
    let mut records = Vec::new();
    loop {
        match source.next_record() {
            Ok(Next::Packet(r)) => records.push((r.ts_ns, r.wire_len)),
            Ok(Next::Idle) => panic!("a file said Idle"),
            Ok(Next::End) => return (records, Ok(())),
            Err(e) => return (records, Err(e)),
        }
    }
}

/// Counts what a source asks of the loop while it recovers.
#[derive(Default)]
struct CountingPause {
    begun: u32,
    ticks: u32,
}

impl Pause for CountingPause {
    fn begin(&mut self) {
        self.begun += 1;
    }

    fn tick(&mut self) -> bool {
        self.ticks += 1;
        false
    }
}

#[test]
fn a_file_reads_every_record_in_nanoseconds_then_ends() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let bytes = pcap_bytes(3);
    let path = write(&dir, "three.pcap", &bytes);
    let mut source =
        Source::open(&SourceSpec::File(path.clone()), None).expect("opening a capture file");
    assert_eq!(source.link(), LinkType::Ethernet);
    assert_eq!(source.describe(), path.display().to_string());
    assert!(!source.is_live());
    assert_eq!(source.stats(), None);
    assert_eq!(source.size_bytes(), Some(bytes.len() as u64));
    let (records, end) = read_all(&mut source);
    assert!(end.is_ok(), "{end:?}");
    let expected: Vec<(u64, u32)> = (0..3)
        .map(|i| ((1_000 + i) * 1_000_000_000 + 500_000, 60))
        .collect();
    assert_eq!(records, expected);
}

#[test]
fn a_damaged_file_ends_with_an_error_no_recovery_can_undo() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut bytes = pcap_bytes(3);
    bytes.truncate(bytes.len() - 30);
    let path = write(&dir, "cut.pcap", &bytes);
    let mut source = Source::open(&SourceSpec::File(path), None).expect("opening a capture file");
    let (records, end) = read_all(&mut source);
    assert_eq!(records.len(), 2);
    let error = end.expect_err("a record cut in the middle");
    assert!(
        matches!(error, SourceError::Damaged { packets: 2, .. }),
        "{error}"
    );
    let mut pause = CountingPause::default();
    match source.recover(error, &mut pause) {
        Recovery::Failed(SourceError::Damaged { .. }) => {}
        Recovery::Failed(e) => panic!("another error: {e}"),
        Recovery::Resumed | Recovery::Stopped => panic!("a file recovered"),
    }
    assert_eq!((pause.begun, pause.ticks), (0, 0));
}

#[test]
fn a_file_that_cannot_be_opened_says_why() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let missing = dir.path().join("missing.pcap");
    let error = Source::open(&SourceSpec::File(missing.clone()), None)
        .err()
        .expect("a missing file");
    assert_eq!(
        error.to_string(),
        format!(
            "cannot open capture {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    let not_pcap = write(&dir, "text.pcap", b"not a capture file at all, just text");
    let error = Source::open(&SourceSpec::File(not_pcap), None)
        .err()
        .expect("a file that is not a capture");
    assert!(matches!(error, SourceError::Open { .. }), "{error}");
    let path = write(&dir, "one.pcap", &pcap_bytes(1));
    let error = Source::open(&SourceSpec::File(path), Some("tcp port"))
        .err()
        .expect("an invalid filter");
    assert!(matches!(error, SourceError::Filter { .. }), "{error}");
}

/// Packets from memory: another kind of source, through the same trait.
struct Memory {
    frames: Vec<Vec<u8>>,
    next: usize,
}

impl PacketSource for Memory {
    fn link(&self) -> LinkType {
        LinkType::Raw
    }

    fn describe(&self) -> &str {
        "memory"
    }

    fn next_record(&mut self) -> Result<Next<'_>, SourceError> {
        let Some(frame) = self.frames.get(self.next) else {
            return Ok(Next::End);
        };
        self.next += 1;
        Ok(Next::Packet(Record {
            link: LinkType::Raw,
            ts_ns: self.next as u64,
            data: frame,
            wire_len: frame.len() as u32,
        }))
    }
}

#[test]
fn another_kind_of_source_plugs_in_through_the_trait() {
    let mut source = Source::new(Memory {
        frames: vec![vec![0x45; 20], vec![0x60; 40]],
        next: 0,
    });
    assert_eq!(
        (source.describe(), source.link()),
        ("memory", LinkType::Raw)
    );
    assert_eq!(
        (source.is_live(), source.stats(), source.size_bytes()),
        (false, None, None)
    );
    let (records, end) = read_all(&mut source);
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(records, [(1, 20), (2, 40)]);
}

/// A pcapng file of two interfaces that differ in link type and snapshot length (libpcap 1.10
/// refuses it): Ethernet (snaplen 128, microseconds) and raw IPv4 (LINKTYPE_RAW, nanoseconds),
/// each with a TCP and a UDP packet, in this order: eth TCP, raw UDP, eth UDP, raw TCP.
fn two_link_pcapng() -> Vec<u8> {
    let mut ipv4 = vec![0u8; 40];
    ipv4[0] = 0x45;
    ipv4[3] = 40;
    ipv4[8] = 64;
    let (mut tcp, mut udp) = (ipv4.clone(), ipv4);
    tcp[9] = 6;
    udp[9] = 17;
    let eth = |ip: &[u8]| {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(ip);
        f
    };
    let mut w = pcapng::tests::craft::Writer::new(false);
    w.idb(1, 128, None, None);
    w.idb(101, 1500, Some(9), None);
    w.epb_ns(0, None, 1_000_000_000, &eth(&tcp), 54);
    w.epb_ns(1, Some(9), 1_000_000_007, &udp, 40);
    w.epb_ns(0, None, 2_000_000_000, &eth(&udp), 54);
    w.epb_ns(1, Some(9), 2_000_000_009, &tcp, 40);
    w.finish()
}

/// Reads `source` to its end: (link, timestamp, wire length) of each record.
fn links_and_times(source: &mut Source) -> Vec<(LinkType, u64, u32)> {
    let mut out = Vec::new();
    loop {
        match source.next_record().expect("reading a pcapng file") {
            Next::Packet(r) => out.push((r.link, r.ts_ns, r.wire_len)),
            Next::Idle => panic!("a file said Idle"),
            Next::End => return out,
        }
    }
}

#[test]
fn a_pcapng_file_whose_interfaces_differ_gives_each_record_its_link_type() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = write(&dir, "two-links.pcapng", &two_link_pcapng());
    let mut pcap = pcap::Capture::from_file(&path).expect("libpcap opens the file");
    let mut refused = None;
    while refused.is_none() {
        match pcap.next_packet() {
            Ok(_) => {}
            Err(e) => refused = Some(e.to_string()),
        }
    }
    let refused = refused.unwrap_or_default();
    assert!(
        refused
            .contains("an interface has a type 101 different from the type of the first interface"),
        "{refused}"
    );
    let spec = SourceSpec::File(path);
    let mut source = Source::open(&spec, None).expect("opening the pcapng file");
    assert_eq!(source.link(), LinkType::Ethernet);
    let all = links_and_times(&mut source);
    assert_eq!(
        all,
        [
            (LinkType::Ethernet, 1_000_000_000, 54),
            (LinkType::Raw, 1_000_000_007, 40),
            (LinkType::Ethernet, 2_000_000_000, 54),
            (LinkType::Raw, 2_000_000_009, 40),
        ]
    );
    // The filter is compiled for each interface's link type: "tcp" keeps one of each.
    let mut source = Source::open(&spec, Some("tcp")).expect("opening with a filter");
    let tcp = links_and_times(&mut source);
    assert_eq!(
        tcp,
        [
            (LinkType::Ethernet, 1_000_000_000, 54),
            (LinkType::Raw, 2_000_000_009, 40),
        ]
    );
    let error = Source::open(&spec, Some("tcp port"))
        .err()
        .expect("an invalid filter");
    assert!(matches!(error, SourceError::Filter { .. }), "{error}");
}

#[test]
fn a_pcapng_link_type_tapflow_does_not_decode_is_named() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // First interface USER0 (147): refused on opening.
    let mut w = pcapng::tests::craft::Writer::new(false);
    w.idb(147, 0, None, None);
    w.epb_ns(0, None, 0, &[0; 24], 24);
    let path = write(&dir, "wlan.pcapng", &w.finish());
    let error = Source::open(&SourceSpec::File(path.clone()), None)
        .err()
        .expect("an unsupported first interface");
    assert_eq!(
        error.to_string(),
        format!(
            "capture {} has link type 147, which tapflow does not decode",
            path.display()
        )
    );
    // A second interface of link type 147: its first packet ends the file, naming it.
    let mut w = pcapng::tests::craft::Writer::new(false);
    w.idb(1, 0, None, None);
    w.idb(147, 0, None, None);
    w.epb_ns(0, None, 0, &[0; 60], 60);
    w.epb_ns(1, None, 0, &[0; 24], 24);
    let path = write(&dir, "mixed.pcapng", &w.finish());
    let mut source = Source::open(&SourceSpec::File(path), None).expect("opening the mixed file");
    let (records, end) = read_all(&mut source);
    assert_eq!(records.len(), 1);
    let error = end.expect_err("a packet of link type 147");
    assert!(
        matches!(error, SourceError::UnsupportedLink { dlt: 147, .. }),
        "{error}"
    );
}

#[test]
fn a_damaged_pcapng_file_ends_with_the_packets_before_the_damage() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut bytes = two_link_pcapng();
    bytes.truncate(bytes.len() - 10);
    let path = write(&dir, "cut.pcapng", &bytes);
    let mut source = Source::open(&SourceSpec::File(path), None).expect("opening a pcapng file");
    let (records, end) = read_all(&mut source);
    assert_eq!(records.len(), 3);
    let error = end.expect_err("a block cut in the middle");
    assert!(
        matches!(error, SourceError::Damaged { packets: 3, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("truncated pcapng file"),
        "{error}"
    );
    // Not pcapng past its magic: refused on opening, saying why.
    let path = write(&dir, "magic.pcapng", b"\x0a\x0d\x0d\x0a but then text");
    let error = Source::open(&SourceSpec::File(path), None)
        .err()
        .expect("a file with only the magic");
    assert!(matches!(error, SourceError::Open { .. }), "{error}");
}
