//! Classic pcap files (version 2.4, microsecond or nanosecond magic, either byte order) read
//! without libpcap: one `read(2)` per 64 KiB into a buffer the records are handed out of in
//! place. libpcap's reader copies every record twice more (into stdio's buffer, then into its
//! own) through two `fread` calls, about a tenth of the collector's CPU on the bench mix (see
//! bench/RESULTS.md). Anything else (another magic or version, a link-type field with FCS
//! bits, a link type tapflow does not decode) is left to libpcap, and so are FIFOs and
//! standard input. Records and damage are told as libpcap 1.10 tells them: the same records
//! before a cut, the same messages, a caplen past the file's snapshot length cut to it.

use std::fs::File;
use std::io::Read;

use super::offline::BUFFER_BYTES;

/// libpcap's `MAXIMUM_SNAPLEN`, its `max_snaplen_for_dlt` for every link type tapflow decodes.
const MAX_SNAPLEN: u32 = 262_144;
/// A record's header: seconds, micro- or nanoseconds, captured length, wire length.
const HEADER: usize = 16;

/// One record: where its bytes are in the buffer, and what its header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub ts_ns: u64,
    pub wire_len: u32,
    at: usize,
    len: usize,
}

pub struct Classic {
    file: File,
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    swapped: bool,
    nano: bool,
    /// The file's snapshot length as libpcap takes it.
    snaplen: u32,
    /// The file's link type, as libpcap names it (a DLT_ value).
    dlt: i32,
}

impl Classic {
    /// A reader for `file` (at its start) if it is a classic pcap file this reader takes, with
    /// its 24-byte header read; `None` leaves the file to libpcap.
    pub fn open(mut file: File) -> std::io::Result<Option<Classic>> {
        let mut head = [0u8; 24];
        if file.read_exact(&mut head).is_err() {
            return Ok(None);
        }
        let word = |i: usize, swapped: bool| {
            let b = [head[i], head[i + 1], head[i + 2], head[i + 3]];
            if swapped {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let (swapped, nano) = match word(0, false) {
            0xa1b2_c3d4 => (false, false),
            0xa1b2_3c4d => (false, true),
            0xd4c3_b2a1 => (true, false),
            0x4d3c_b2a1 => (true, true),
            _ => return Ok(None),
        };
        let half = |i: usize| {
            let b = [head[i], head[i + 1]];
            if swapped {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        };
        let (snaplen, linktype) = (word(16, swapped), word(20, swapped));
        let Some(dlt) = dlt_of(linktype).filter(|_| (half(4), half(6)) == (2, 4)) else {
            return Ok(None);
        };
        // libpcap takes a snapshot length it cannot use (0, or negative as an int) as the
        // link type's maximum.
        let snaplen = if snaplen == 0 || snaplen > i32::MAX as u32 {
            MAX_SNAPLEN
        } else {
            snaplen
        };
        Ok(Some(Classic {
            file,
            buf: vec![0; BUFFER_BYTES],
            start: 0,
            end: 0,
            eof: false,
            swapped,
            nano,
            snaplen,
            dlt,
        }))
    }

    pub fn dlt(&self) -> i32 {
        self.dlt
    }

    /// The next record's header; `Ok(None)` at the file's end, `Err` (libpcap's message) for a
    /// record cut short or a length no capture has.
    pub fn next_header(&mut self) -> Result<Option<Header>, String> {
        let got = self.fill(HEADER)?;
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER {
            return Err(format!(
                "truncated dump file; tried to read {HEADER} header bytes, only got {got}"
            ));
        }
        let b = &self.buf[self.start..self.start + HEADER];
        let word = |i: usize| {
            let w = [b[i], b[i + 1], b[i + 2], b[i + 3]];
            if self.swapped {
                u32::from_be_bytes(w)
            } else {
                u32::from_le_bytes(w)
            }
        };
        let (secs, frac, caplen, wire_len) = (word(0), word(4), word(8), word(12));
        if caplen > MAX_SNAPLEN {
            return Err(if caplen > self.snaplen {
                format!(
                    "invalid packet capture length {caplen}, bigger than snaplen of {}",
                    self.snaplen
                )
            } else {
                format!(
                    "invalid packet capture length {caplen}, bigger than maximum of {MAX_SNAPLEN}"
                )
            });
        }
        let need = HEADER + caplen as usize;
        let got = self.fill(need)?;
        if got < need {
            return Err(format!(
                "truncated dump file; tried to read {caplen} captured bytes, only got {}",
                got - HEADER
            ));
        }
        let frac_ns = if self.nano {
            u64::from(frac)
        } else {
            u64::from(frac) * 1000
        };
        let h = Header {
            ts_ns: u64::from(secs) * 1_000_000_000 + frac_ns,
            wire_len,
            at: self.start + HEADER,
            // A record longer than the snapshot length is cut to it (libpcap skips the rest).
            len: caplen.min(self.snaplen) as usize,
        };
        self.start += need;
        Ok(Some(h))
    }

    /// The bytes of the record `h`, the last [`Classic::next_header`] gave.
    pub fn data(&self, h: &Header) -> &[u8] {
        &self.buf[h.at..h.at + h.len]
    }

    /// Makes `need` unread bytes contiguous in the buffer if the file has them; returns how
    /// many unread bytes there are (less than `need` only at the file's end).
    fn fill(&mut self, need: usize) -> Result<usize, String> {
        while self.end - self.start < need && !self.eof {
            if self.buf.len() - self.start < need {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buf.len() < need {
                    self.buf.resize(need, 0);
                }
            }
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("error reading dump file: {e}")),
            }
        }
        Ok(self.end - self.start)
    }
}

/// The DLT_ value libpcap gives a file's LINKTYPE_ field, for the link types tapflow decodes
/// whose field has no FCS or other upper bits; `None` leaves the file to libpcap.
fn dlt_of(linktype: u32) -> Option<i32> {
    match linktype {
        101 => Some(12),
        0 | 1 | 9 | 50 | 105 | 108 | 113 | 127 | 228 | 229 | 239 | 276 => Some(linktype as i32),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
