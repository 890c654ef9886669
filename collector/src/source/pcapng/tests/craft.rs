//! A pcapng writer for the tests, written from the specification (draft-ietf-opsawg-pcapng):
//! sections in either byte order, IDBs with `if_tsresol`/`if_tsoffset`, EPB, SPB, the obsolete
//! Packet Block, and blocks of any type.

/// Builds a pcapng file in memory; starts with a section in the given byte order.
pub struct Writer {
    bytes: Vec<u8>,
    big_endian: bool,
    /// The LINKTYPE_ of each interface of the current section.
    links: Vec<u16>,
}

impl Writer {
    pub fn new(big_endian: bool) -> Writer {
        let mut w = Writer {
            bytes: Vec::new(),
            big_endian,
            links: Vec::new(),
        };
        w.section(big_endian);
        w
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }

    fn u16(&self, v: u16) -> [u8; 2] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn u32(&self, v: u32) -> [u8; 4] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    /// A block of `kind` with `body` (padded to 4 bytes), header and trailer.
    pub fn block(&mut self, kind: u32, body: &[u8]) {
        let padded = body.len().div_ceil(4) * 4;
        let len = u32::try_from(12 + padded).expect("a block under 4 GiB");
        let (k, l) = (self.u32(kind), self.u32(len));
        self.bytes.extend_from_slice(&k);
        self.bytes.extend_from_slice(&l);
        self.bytes.extend_from_slice(body);
        self.bytes.resize(self.bytes.len() + padded - body.len(), 0);
        self.bytes.extend_from_slice(&l);
    }

    /// A new Section Header Block (version 1.0, section length unknown).
    pub fn section(&mut self, big_endian: bool) {
        self.big_endian = big_endian;
        self.links.clear();
        let mut body = Vec::new();
        body.extend_from_slice(&self.u32(0x1A2B_3C4D));
        body.extend_from_slice(&self.u16(1));
        body.extend_from_slice(&self.u16(0));
        body.extend_from_slice(&[0xFF; 8]);
        self.block(0x0A0D_0D0A, &body);
    }

    /// An Interface Description Block with the options given, then `opt_endofopt`.
    pub fn idb(&mut self, linktype: u16, snaplen: u32, tsresol: Option<u8>, tsoffset: Option<i64>) {
        self.links.push(linktype);
        let mut body = Vec::new();
        body.extend_from_slice(&self.u16(linktype));
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&self.u32(snaplen));
        if let Some(r) = tsresol {
            body.extend_from_slice(&self.u16(9));
            body.extend_from_slice(&self.u16(1));
            body.extend_from_slice(&[r, 0, 0, 0]);
        }
        if let Some(o) = tsoffset {
            body.extend_from_slice(&self.u16(14));
            body.extend_from_slice(&self.u16(8));
            let b = if self.big_endian {
                o.to_be_bytes()
            } else {
                o.to_le_bytes()
            };
            body.extend_from_slice(&b);
        }
        body.extend_from_slice(&[0, 0, 0, 0]);
        self.block(1, &body);
    }

    /// An Enhanced Packet Block on interface `id` at `ts_ns` nanoseconds, written in the units
    /// `tsresol` gives (rounded down where they are coarser).
    pub fn epb_ns(&mut self, id: u32, tsresol: Option<u8>, ts_ns: u64, data: &[u8], wire_len: u32) {
        let units = units(tsresol, ts_ns);
        let data = self.in_order(id, data);
        let mut body = Vec::new();
        for w in [id, (units >> 32) as u32, units as u32] {
            body.extend_from_slice(&self.u32(w));
        }
        body.extend_from_slice(&self.u32(u32::try_from(data.len()).expect("a short packet")));
        body.extend_from_slice(&self.u32(wire_len));
        body.extend_from_slice(&data);
        body.resize(body.len().div_ceil(4) * 4, 0);
        self.block(6, &body);
    }

    /// A Simple Packet Block (interface 0, the whole packet).
    pub fn spb(&mut self, data: &[u8]) {
        let mut body = self
            .u32(u32::try_from(data.len()).expect("a short packet"))
            .to_vec();
        body.extend_from_slice(data);
        self.block(3, &body);
    }

    /// An obsolete Packet Block (type 2) with a timestamp in interface units.
    pub fn opb(&mut self, id: u16, units: u64, data: &[u8], wire_len: u32) {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u16(id));
        body.extend_from_slice(&self.u16(0));
        for w in [(units >> 32) as u32, units as u32] {
            body.extend_from_slice(&self.u32(w));
        }
        body.extend_from_slice(&self.u32(u32::try_from(data.len()).expect("a short packet")));
        body.extend_from_slice(&self.u32(wire_len));
        body.extend_from_slice(data);
        self.block(2, &body);
    }

    /// `data` as the writer's host would have stored it: NFLOG's TLV type and length fields are
    /// in the writer's byte order (the records given are in this machine's, little-endian).
    fn in_order(&self, id: u32, data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        if !self.big_endian || self.links.get(id as usize) != Some(&239) || out.len() < 4 {
            return out;
        }
        let mut at = 4;
        while at + 4 <= out.len() {
            // { u16 length, u16 type }, here little-endian.
            let len = usize::from(u16::from_le_bytes([out[at], out[at + 1]]));
            out[at..at + 2].reverse();
            out[at + 2..at + 4].reverse();
            let step = len.div_ceil(4) * 4;
            if step < 4 {
                break;
            }
            at += step;
        }
        out
    }
}

/// `ts_ns` in units of 10^-n s, or 2^-n s when the top bit of `tsresol` is set (10^-6 when
/// absent).
fn units(tsresol: Option<u8>, ts_ns: u64) -> u64 {
    let (secs, frac) = (ts_ns / 1_000_000_000, ts_ns % 1_000_000_000);
    let per_sec: u128 = match tsresol.unwrap_or(6) {
        r if r & 0x80 != 0 => 1u128 << (r & 0x7F),
        r => 10u128.pow(u32::from(r)),
    };
    let units = u128::from(secs) * per_sec + u128::from(frac) * per_sec / 1_000_000_000;
    u64::try_from(units).expect("a timestamp that fits the units")
}
