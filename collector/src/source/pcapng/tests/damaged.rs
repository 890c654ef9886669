//! Damaged and hostile pcapng files: each gives its error (the packets before it first), and
//! no prefix of a good file panics.

use super::super::*;
use super::craft::Writer;

/// A little-endian file: one Ethernet interface (snaplen 100), two 60-byte packets.
fn good() -> Vec<u8> {
    let mut w = Writer::new(false);
    w.idb(1, 100, None, None);
    w.epb_ns(0, None, 1_000_000_000, &[0x11; 60], 60);
    w.epb_ns(0, None, 2_000_000_000, &[0x22; 60], 60);
    w.finish()
}

/// Reads `bytes` to the end or the first error: packets read, and the error.
fn read(bytes: &[u8]) -> (usize, Option<PcapngError>) {
    let mut reader = match Reader::new(bytes) {
        Ok(r) => r,
        Err(e) => return (0, Some(e)),
    };
    let mut n = 0;
    loop {
        match reader.next_packet() {
            Ok(Some(_)) => n += 1,
            Ok(None) => return (n, None),
            Err(e) => return (n, Some(e)),
        }
    }
}

/// Offset of the second EPB in [`good`]: SHB 28, IDB 24, EPB 92.
const SECOND_EPB: usize = 28 + 24 + 92;

fn set_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn the_good_file_reads() {
    assert_eq!(read(&good()), (2, None));
    assert_eq!(good().len(), SECOND_EPB + 92);
}

#[test]
fn a_file_that_is_not_pcapng_is_refused() {
    assert_eq!(
        read(b"not a capture file at all"),
        (0, Some(PcapngError::NotPcapng))
    );
    let mut bytes = good();
    set_u32(&mut bytes, 8, 0xDEAD_BEEF); // the byte-order magic
    assert_eq!(read(&bytes), (0, Some(PcapngError::NotPcapng)));
}

#[test]
fn a_cut_block_is_truncation_after_the_packets_before_it() {
    let bytes = good();
    let (n, e) = read(&bytes[..SECOND_EPB + 50]);
    assert_eq!(n, 1);
    let e = e.expect("a cut block");
    assert_eq!(
        e,
        PcapngError::Truncated {
            at: SECOND_EPB as u64,
            need: 92,
            got: 50
        }
    );
    assert_eq!(
        e.to_string(),
        "truncated pcapng file: a block at byte 144 needs 92 bytes, 50 remain"
    );
    // Every prefix: never a panic; the whole blocks before the cut are read.
    for cut in 0..bytes.len() {
        let (n, e) = read(&bytes[..cut]);
        let whole = if cut >= SECOND_EPB { 1 } else { 0 };
        assert_eq!(n, whole, "cut at {cut}");
        let clean_end = cut == 52 || cut == SECOND_EPB;
        assert_eq!(e.is_none(), clean_end, "cut at {cut}: {e:?}");
    }
}

#[test]
fn bad_block_lengths_are_refused_before_anything_is_read() {
    for (len, why) in [
        (8, "less than a block header and trailer (12 bytes)"),
        (94, "not a multiple of 4"),
        (0xFFFF_FFF0, "more than the 16 MiB a block may have"),
        (MAX_BLOCK + 4, "more than the 16 MiB a block may have"),
    ] {
        let mut bytes = good();
        set_u32(&mut bytes, SECOND_EPB + 4, len);
        let (n, e) = read(&bytes);
        assert_eq!(n, 1);
        assert_eq!(
            e,
            Some(PcapngError::BadLength {
                at: SECOND_EPB as u64,
                len,
                why
            })
        );
    }
    // A huge block the file does not hold: truncation, with memory only for what is there.
    let mut bytes = good();
    set_u32(&mut bytes, SECOND_EPB + 4, MAX_BLOCK);
    let (n, e) = read(&bytes);
    assert_eq!(n, 1);
    assert_eq!(
        e,
        Some(PcapngError::Truncated {
            at: SECOND_EPB as u64,
            need: u64::from(MAX_BLOCK),
            got: 92
        })
    );
    // Header and trailer that disagree.
    let mut bytes = good();
    set_u32(&mut bytes, SECOND_EPB + 88, 96);
    assert_eq!(
        read(&bytes).1,
        Some(PcapngError::LengthMismatch {
            at: SECOND_EPB as u64,
            head: 92,
            tail: 96
        })
    );
}

#[test]
fn packets_that_do_not_fit_their_interface_are_refused() {
    let at = SECOND_EPB as u64;
    // Interface 1 was never described.
    let mut bytes = good();
    set_u32(&mut bytes, SECOND_EPB + 8, 1);
    assert_eq!(
        read(&bytes),
        (1, Some(PcapngError::UnknownInterface { at, id: 1 }))
    );
    // A capture length past the snapshot length (100).
    let mut w = Writer::new(false);
    w.idb(1, 100, None, None);
    w.epb_ns(0, None, 0, &[0; 120], 120);
    assert_eq!(
        read(&w.finish()),
        (
            0,
            Some(PcapngError::CaplenOverSnaplen {
                at: 52,
                caplen: 120,
                snaplen: 100
            })
        )
    );
    // A capture length past the block.
    let mut bytes = good();
    set_u32(&mut bytes, SECOND_EPB + 20, 80);
    assert_eq!(
        read(&bytes),
        (
            1,
            Some(PcapngError::Short {
                at,
                kind: 6,
                what: "its packet data"
            })
        )
    );
    // A block too short for an EPB's fixed fields.
    let mut w = Writer::new(false);
    w.idb(1, 0, None, None);
    w.block(6, &[0; 8]);
    assert_eq!(
        read(&w.finish()),
        (
            0,
            Some(PcapngError::Short {
                at: 52,
                kind: 6,
                what: "its fixed fields"
            })
        )
    );
}

#[test]
fn sections_and_interfaces_that_cannot_be_read_are_refused() {
    // No IDB at all; a packet before the first IDB.
    assert_eq!(
        read(&Writer::new(true).finish()),
        (0, Some(PcapngError::NoInterface))
    );
    let mut w = Writer::new(false);
    w.spb(&[0; 4]);
    w.idb(1, 0, None, None);
    assert_eq!(
        read(&w.finish()).1,
        Some(PcapngError::PacketBeforeInterface { at: 28 })
    );
    // Version 2.0 of the format.
    let mut bytes = good();
    bytes[12] = 2;
    assert_eq!(
        read(&bytes).1,
        Some(PcapngError::Version {
            at: 0,
            major: 2,
            minor: 0
        })
    );
    // Timestamp options libpcap refuses: too fine (10^-20 s, 2^-64 s), twice, wrong length.
    for (resol, why) in [
        (20u8, "if_tsresol 0x14 is too fine"),
        (0x80 | 64, "if_tsresol 0xc0 is too fine"),
    ] {
        let mut w = Writer::new(false);
        w.idb(1, 0, Some(resol), None);
        assert_eq!(
            read(&w.finish()).1,
            Some(PcapngError::BadOption {
                at: 28,
                why: why.into()
            })
        );
    }
    let mut w = Writer::new(false);
    w.idb(1, 0, Some(6), None);
    let mut bytes = w.finish();
    // Turn the end-of-options into a second if_tsresol... whose value runs past the block.
    set_u32(&mut bytes, 28 + 16 + 8, 0x0001_0009);
    let e = read(&bytes).1.expect("an option past its block");
    assert_eq!(
        e,
        PcapngError::Short {
            at: 28,
            kind: 1,
            what: "an option value"
        }
    );
}

/// Interfaces past the cap are refused, whatever the file's size.
#[test]
fn the_interface_count_is_capped() {
    let mut w = Writer::new(false);
    for _ in 0..=MAX_INTERFACES {
        w.idb(1, 0, None, None);
    }
    let e = read(&w.finish()).1.expect("too many interfaces");
    assert!(matches!(e, PcapngError::TooManyInterfaces { .. }), "{e}");
}
