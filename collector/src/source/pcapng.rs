//! A pcapng reader for the capture files libpcap 1.10 refuses: libpcap reads one link type and
//! one snapshot length per file, so a valid capture whose interfaces differ in either (a
//! `tcpdump -i any`-plus-loopback merge, a `mergecap` of two links) ends as "an interface has
//! a type/snapshot length different from the first interface". This reader takes every
//! interface on its own terms and hands each packet out with its interface's link type.
//!
//! What it reads: Section Header Blocks (either byte order, any number of sections, each with
//! its own interfaces), Interface Description Blocks (link type, snapshot length, `if_tsresol`
//! in powers of 10 or of 2, `if_tsoffset`), Enhanced, Simple and obsolete Packet Blocks; every
//! other block is skipped. Where libpcap reads a file, this reader gives the same records
//! (`pcapng/tests.rs` checks it on every pcapng capture of `../shared`): the same timestamps
//! in nanoseconds, the same captured bytes (NFLOG's host-order TLV headers swapped as libpcap
//! does for a section of the other byte order), the same lengths, and the same refusals
//! (version, block lengths, options, a packet past its snapshot length or on an interface no
//! block described).
//!
//! Bounded: a block is read only up to [`MAX_BLOCK`] bytes (libpcap's own cap; one buffer,
//! reused), a section holds at most [`MAX_INTERFACES`]; every length is checked before use.

use std::io::Read;

use crate::decode::LinkType;

/// Largest block accepted: libpcap's `INITIAL_MAX_BLOCKSIZE` (16 MiB), well above an EPB
/// with a 256 KiB packet and 128 KiB of options.
pub const MAX_BLOCK: u32 = 16 * 1024 * 1024;
/// Largest Section Header Block accepted (libpcap's `BT_SHB_INSANE_MAX`).
pub const MAX_SHB: u32 = 1024 * 1024;
/// Interfaces one section may describe.
pub const MAX_INTERFACES: usize = 1 << 16;
/// libpcap's `MAXIMUM_SNAPLEN`: the snapshot length of an interface that gives 0 or more.
const MAX_SNAPLEN: u32 = 262_144;

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const OPB: u32 = 2;
const SPB: u32 = 3;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// libpcap's `DLT_NFLOG`, whose TLV headers are in the writer's byte order.
const DLT_NFLOG: u16 = 239;

/// Why a pcapng file cannot be read (further).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PcapngError {
    #[error("reading the file: {0}")]
    Io(String),
    #[error("not a pcapng file (no Section Header Block magic)")]
    NotPcapng,
    #[error("truncated pcapng file: a block at byte {at} needs {need} bytes, {got} remain")]
    Truncated { at: u64, need: u64, got: u64 },
    #[error("block at byte {at} has length {len}: {why}")]
    BadLength {
        at: u64,
        len: u32,
        why: &'static str,
    },
    #[error("block at byte {at}: total length {head} in its header, {tail} in its trailer")]
    LengthMismatch { at: u64, head: u32, tail: u32 },
    #[error("unsupported pcapng version {major}.{minor} (section at byte {at})")]
    Version { at: u64, major: u16, minor: u16 },
    #[error("bad byte-order magic in the section at byte {at}")]
    ByteOrder { at: u64 },
    #[error("the capture file has no Interface Description Block")]
    NoInterface,
    #[error("a packet block at byte {at} comes before any Interface Description Block")]
    PacketBeforeInterface { at: u64 },
    #[error("block of type {kind} at byte {at} is too short for {what}")]
    Short {
        at: u64,
        kind: u32,
        what: &'static str,
    },
    #[error("Interface Description Block at byte {at}: {why}")]
    BadOption { at: u64, why: String },
    #[error("more than {MAX_INTERFACES} interfaces in the section before byte {at}")]
    TooManyInterfaces { at: u64 },
    #[error("a packet at byte {at} is on interface {id}, which no Interface Description Block of its section describes")]
    UnknownInterface { at: u64, id: u32 },
    #[error("a packet at byte {at} has capture length {caplen}, more than its interface's snapshot length {snaplen}")]
    CaplenOverSnaplen { at: u64, caplen: u32, snaplen: u32 },
}

/// One interface of the current section, as its IDB describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interface {
    /// The IDB's LINKTYPE_ value.
    pub dlt: u16,
    /// The snapshot length libpcap would use: 0 or more than 256 KiB gives 256 KiB.
    pub snaplen: u32,
    /// Timestamp units per second (`if_tsresol`, default 10^6).
    tsresol: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    tsoffset: i64,
}

/// One packet's header: its interface (with the link type, `None` when tapflow does not decode
/// it), the timestamp in nanoseconds as libpcap gives it, and the wire length. Its bytes are
/// [`Reader::data`] until the next read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The interface's index in its section.
    pub interface_id: u32,
    pub interface: Interface,
    pub link: Option<LinkType>,
    pub ts_ns: u64,
    pub wire_len: u32,
    start: usize,
    caplen: u32,
}

/// A pcapng file being read block by block.
pub struct Reader<R> {
    input: R,
    /// The current section's byte order.
    big_endian: bool,
    interfaces: Vec<Interface>,
    /// The current block (after its 8-byte header), reused from block to block.
    block: Vec<u8>,
    /// Offset of the next block in the file.
    offset: u64,
}

/// Where a packet's bytes sit in the block buffer, with its header fields.
struct Found {
    kind: u32,
    interface: u32,
    ts: u64,
    start: usize,
    caplen: u32,
    wire_len: u32,
}

impl<R: Read> Reader<R> {
    /// Reads the first section's header and the blocks up to its first interface, as libpcap
    /// does on opening; that interface is [`Reader::first_interface`].
    pub fn new(input: R) -> Result<Reader<R>, PcapngError> {
        let mut r = Reader {
            input,
            big_endian: false,
            interfaces: Vec::new(),
            block: Vec::new(),
            offset: 0,
        };
        match r.read_header()? {
            Some((SHB, len)) => r.section(len, true)?,
            _ => return Err(PcapngError::NotPcapng),
        }
        loop {
            let at = r.offset;
            match r.read_block()? {
                None => return Err(PcapngError::NoInterface),
                Some(IDB) => {
                    r.interface(at)?;
                    return Ok(r);
                }
                Some(EPB | SPB | OPB) => return Err(PcapngError::PacketBeforeInterface { at }),
                Some(_) => {}
            }
        }
    }

    /// The current section's first interface: right after opening, the file's (whose link type
    /// libpcap reports as the file's).
    pub fn first_interface(&self) -> Option<Interface> {
        self.interfaces.first().copied()
    }

    /// The next packet with its bytes, `None` at the end of the file.
    pub fn next_packet(&mut self) -> Result<Option<(Header, &[u8])>, PcapngError> {
        match self.next_header()? {
            Some(h) => Ok(Some((h, self.data(&h)))),
            None => Ok(None),
        }
    }

    /// The captured bytes of `header`, the packet last read.
    pub fn data(&self, header: &Header) -> &[u8] {
        let start = header.start;
        let end = start.saturating_add(header.caplen as usize);
        self.block.get(start..end).unwrap_or_default()
    }

    /// The next packet's header in file order, `None` at the end of the file.
    pub fn next_header(&mut self) -> Result<Option<Header>, PcapngError> {
        loop {
            let at = self.offset;
            let found = match self.read_block()? {
                None => return Ok(None),
                Some(EPB) => self.epb(at)?,
                Some(OPB) => self.opb(at)?,
                Some(SPB) => self.spb(at)?,
                Some(IDB) => {
                    self.interface(at)?;
                    continue;
                }
                Some(_) => continue,
            };
            return self.packet(at, found).map(Some);
        }
    }

    /// Checks a packet's interface and lengths and converts its timestamp.
    fn packet(&mut self, at: u64, f: Found) -> Result<Header, PcapngError> {
        let Some(iface) = self.interfaces.get(f.interface as usize).copied() else {
            return Err(PcapngError::UnknownInterface {
                at,
                id: f.interface,
            });
        };
        if f.caplen > iface.snaplen {
            return Err(PcapngError::CaplenOverSnaplen {
                at,
                caplen: f.caplen,
                snaplen: iface.snaplen,
            });
        }
        let end = f.start.checked_add(f.caplen as usize);
        let data = match end.and_then(|end| self.block.get_mut(f.start..end)) {
            Some(d) => d,
            None => {
                return Err(PcapngError::Short {
                    at,
                    kind: f.kind,
                    what: "its packet data",
                })
            }
        };
        if iface.dlt == DLT_NFLOG && self.big_endian != cfg!(target_endian = "big") {
            swap_nflog(data, f.wire_len);
        }
        Ok(Header {
            interface_id: f.interface,
            interface: iface,
            link: LinkType::from_dlt(i32::from(iface.dlt)),
            ts_ns: timestamp(f.ts, &iface),
            wire_len: f.wire_len,
            start: f.start,
            caplen: f.caplen,
        })
    }

    fn epb(&self, at: u64) -> Result<Found, PcapngError> {
        let [id, hi, lo, caplen, len] = self.words::<5>(at, EPB)?;
        Ok(Found {
            kind: EPB,
            interface: id,
            ts: (u64::from(hi) << 32) | u64::from(lo),
            start: 20,
            caplen,
            wire_len: len,
        })
    }

    fn opb(&self, at: u64) -> Result<Found, PcapngError> {
        let [first, hi, lo, caplen, len] = self.words::<5>(at, OPB)?;
        // The interface id is the first u16 of the first word, in the section's order.
        let id = if self.big_endian {
            first >> 16
        } else {
            first & 0xFFFF
        };
        Ok(Found {
            kind: OPB,
            interface: id,
            ts: (u64::from(hi) << 32) | u64::from(lo),
            start: 20,
            caplen,
            wire_len: len,
        })
    }

    /// A Simple Packet Block: interface 0, no timestamp, the captured length being the wire
    /// length cut to the snapshot length.
    fn spb(&self, at: u64) -> Result<Found, PcapngError> {
        let [len] = self.words::<1>(at, SPB)?;
        let Some(iface) = self.interfaces.first() else {
            return Err(PcapngError::UnknownInterface { at, id: 0 });
        };
        Ok(Found {
            kind: SPB,
            interface: 0,
            ts: 0,
            start: 4,
            caplen: len.min(iface.snaplen),
            wire_len: len,
        })
    }

    /// The first `N` 32-bit words of the current block's body.
    fn words<const N: usize>(&self, at: u64, kind: u32) -> Result<[u32; N], PcapngError> {
        let mut out = [0u32; N];
        for (i, w) in out.iter_mut().enumerate() {
            *w = self.u32_at(i * 4).ok_or(PcapngError::Short {
                at,
                kind,
                what: "its fixed fields",
            })?;
        }
        Ok(out)
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.block.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn u16_at(&self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.block.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }
}

mod blocks;

/// A timestamp in `iface`'s units as libpcap gives it in nanoseconds: whole seconds plus
/// `if_tsoffset` (wrapping, as libpcap's unsigned sum does; a time before 1970 is 0), then
/// the fraction scaled to nanoseconds (rounded down).
fn timestamp(t: u64, iface: &Interface) -> u64 {
    let secs = (t / iface.tsresol).wrapping_add(iface.tsoffset as u64) as i64;
    let frac = t % iface.tsresol;
    let nanos = (u128::from(frac) * 1_000_000_000 / u128::from(iface.tsresol)) as u64;
    u64::try_from(secs)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(nanos)
}

/// Swaps the length and type of each TLV after NFLOG's 4-byte header, which the writer put in
/// its own byte order (libpcap's `swap_nflog_header`; byte 1 is the NFLOG version, 0).
fn swap_nflog(data: &mut [u8], wire_len: u32) {
    if data.len() < 4 || wire_len < 4 || data[1] != 0 {
        return;
    }
    let mut length = wire_len as usize - 4;
    let mut at = 4;
    while data.len() - at >= 4 {
        data.swap(at, at + 1);
        data.swap(at + 2, at + 3);
        // `nflog_tlv_t` is { length, type }, both u16.
        let tlv_len = usize::from(u16::from_ne_bytes([data[at], data[at + 1]]));
        let size = tlv_len.div_ceil(4) * 4;
        if size < 4 || data.len() - at < size || length < size {
            return;
        }
        length -= size;
        at += size;
    }
}

#[cfg(test)]
pub(super) mod tests;
