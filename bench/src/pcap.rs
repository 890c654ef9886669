//! Classic pcap output: magic `a1b2c3d4` (microsecond timestamps), version 2.4, snaplen 65535,
//! LINKTYPE_ETHERNET, written little-endian whatever the host.

use std::io::{self, Write};

use crate::gen::attack::SynFlood;
use crate::gen::{Generator, Packet};

/// A source of frames in time order: [`Generator`] or [`SynFlood`].
pub trait Frames {
    /// Clears `frame` and writes the next frame into it; `None` once all are out.
    fn next_frame(&mut self, frame: &mut Vec<u8>) -> Option<Packet>;
}

impl Frames for Generator {
    fn next_frame(&mut self, frame: &mut Vec<u8>) -> Option<Packet> {
        self.next_packet(frame)
    }
}

impl Frames for SynFlood {
    fn next_frame(&mut self, frame: &mut Vec<u8>) -> Option<Packet> {
        self.next_packet(frame)
    }
}

/// Length of the file header.
pub const FILE_HEADER_LEN: u64 = 24;
/// Length of each record header.
pub const RECORD_HEADER_LEN: u64 = 16;
pub const SNAPLEN: u32 = 65535;
pub const LINKTYPE_ETHERNET: u32 = 1;

/// Writes a classic pcap stream to `W` (wrap files in a `BufWriter`).
pub struct PcapWriter<W: Write> {
    out: W,
    bytes: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W) -> io::Result<PcapWriter<W>> {
        let mut h = [0u8; FILE_HEADER_LEN as usize];
        h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay 0
        h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter {
            out,
            bytes: FILE_HEADER_LEN,
        })
    }

    /// Writes one record; the timestamp is truncated to microseconds. Frames longer than the
    /// snaplen are refused, since this writer never truncates.
    pub fn write(&mut self, ts_ns: u64, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&l| l <= SNAPLEN)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "frame exceeds the snaplen")
            })?;
        let secs = u32::try_from(ts_ns / 1_000_000_000)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "timestamp after 2106"))?;
        let usecs = ((ts_ns % 1_000_000_000) / 1000) as u32;
        let mut h = [0u8; RECORD_HEADER_LEN as usize];
        h[0..4].copy_from_slice(&secs.to_le_bytes());
        h[4..8].copy_from_slice(&usecs.to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(frame)?;
        self.bytes += RECORD_HEADER_LEN + u64::from(len);
        Ok(())
    }

    /// Bytes written so far, headers included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What [`write_capture`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureSummary {
    pub packets: u64,
    /// File size in bytes.
    pub bytes: u64,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
}

/// Writes every packet of `gen` to `out` as a pcap stream; returns the writer and a summary.
pub fn write_capture<W: Write>(gen: &mut impl Frames, out: W) -> io::Result<(W, CaptureSummary)> {
    let mut w = PcapWriter::new(out)?;
    let mut frame = Vec::with_capacity(2048);
    let mut s = CaptureSummary {
        packets: 0,
        bytes: 0,
        first_ts_ns: 0,
        last_ts_ns: 0,
    };
    while let Some(p) = gen.next_frame(&mut frame) {
        if s.packets == 0 {
            s.first_ts_ns = p.ts_ns;
        }
        s.last_ts_ns = p.ts_ns;
        s.packets += 1;
        w.write(p.ts_ns, &frame)?;
    }
    s.bytes = w.bytes();
    Ok((w.finish()?, s))
}
