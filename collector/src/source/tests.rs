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
