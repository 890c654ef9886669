//! The packed form of a batch's summaries: one MessagePack `bin` holding the records back to back,
//! each a layout byte followed by only the fields that layout says are there (little-endian).
//! Generic MessagePack spent ~18% of a collector's and ~30% of a processor's cycles on summaries
//! (a type tag per field, a visitor call per value); this is a fixed, bounds-checked layout.
//!
//! | field | bytes | present |
//! |---|---|---|
//! | layout | 1 | always: the bits of [`layout`] |
//! | `ts_ns` | 8 | always |
//! | `flags`, `key.proto` | 1 + 1 | always |
//! | `key.lo`, `key.hi` | 4 + 4, or 16 + 16 with `V6` | always |
//! | `key.lo_port`, `key.hi_port` | 2 + 2 | always |
//! | `key.vlan` | 2 | `VLAN` |
//! | `ip_len`, `payload_len` | 2 + 2, or 4 + 4 with `LEN32` | always |
//! | `tcp_flags`, `seq`, `ack`, `window` | 1 + 4 + 4 + 2 | `TCP` |
//! | `icmp_type`, `icmp_code` | 1 + 1 | `ICMP` |
//! | tunnel parent: layout (`V6`, `VLAN`), proto, addresses, ports, vlan | as above | `TUNNEL` |
//! | `tunnel_kind` | 1 | `TUNNEL_KIND` |
//! | payload: `offset`, length, bytes | 4 + 2 + length | `PAYLOAD` |
//!
//! An IPv4 TCP summary is 38 bytes (and as many without payload as before payload existed). Every [`PacketSummary`] round-trips exactly (addresses
//! are written short only when both are IPv4-mapped; optional groups when any field in them is
//! non-zero).

use crate::key::{Addr, FlowKey};
use crate::summary::{PacketSummary, Payload, MAX_PAYLOAD};

/// Bits of a record's layout byte.
pub mod layout {
    /// Both addresses are 16 bytes (else 4: IPv4-mapped).
    pub const V6: u8 = 1;
    /// A tunnel parent key follows the record.
    pub const TUNNEL: u8 = 2;
    /// A VLAN id is in the key.
    pub const VLAN: u8 = 4;
    /// TCP fields are present.
    pub const TCP: u8 = 8;
    /// ICMP type and code are present.
    pub const ICMP: u8 = 16;
    /// Lengths are 32-bit (else 16-bit).
    pub const LEN32: u8 = 32;
    /// A tunnel kind byte follows.
    pub const TUNNEL_KIND: u8 = 64;
    /// Payload evidence follows.
    pub const PAYLOAD: u8 = 128;
    pub const ALL: u8 = V6 | TUNNEL | VLAN | TCP | ICMP | LEN32 | TUNNEL_KIND | PAYLOAD;
}

/// The shortest record: layout, ts, flags, proto, two IPv4 addresses, ports, 16-bit lengths.
pub const MIN_RECORD_LEN: usize = 1 + 8 + 2 + 8 + 4 + 4;

fn key_layout(key: &FlowKey) -> u8 {
    let mut l = 0;
    if !(key.lo.is_v4() && key.hi.is_v4()) {
        l |= layout::V6;
    }
    if key.vlan != 0 {
        l |= layout::VLAN;
    }
    l
}

fn put_key(out: &mut Vec<u8>, key: &FlowKey, l: u8) {
    if l & layout::V6 != 0 {
        out.extend_from_slice(&key.lo.0);
        out.extend_from_slice(&key.hi.0);
    } else {
        out.extend_from_slice(&key.lo.0[12..]);
        out.extend_from_slice(&key.hi.0[12..]);
    }
    out.extend_from_slice(&key.lo_port.to_le_bytes());
    out.extend_from_slice(&key.hi_port.to_le_bytes());
    if l & layout::VLAN != 0 {
        out.extend_from_slice(&key.vlan.to_le_bytes());
    }
}

/// Appends the packed records of `summaries` to `out`.
pub fn encode(summaries: &[PacketSummary], out: &mut Vec<u8>) {
    out.reserve(summaries.len() * 40);
    for s in summaries {
        let mut l = key_layout(&s.key);
        if s.tunnel_parent.is_some() {
            l |= layout::TUNNEL;
        }
        if s.tcp_flags != 0 || s.seq != 0 || s.ack != 0 || s.window != 0 {
            l |= layout::TCP;
        }
        if s.icmp_type != 0 || s.icmp_code != 0 {
            l |= layout::ICMP;
        }
        if s.ip_len > 0xffff || s.payload_len > 0xffff {
            l |= layout::LEN32;
        }
        if s.tunnel_kind != 0 {
            l |= layout::TUNNEL_KIND;
        }
        if s.payload.is_some() {
            l |= layout::PAYLOAD;
        }
        out.push(l);
        out.extend_from_slice(&s.ts_ns.to_le_bytes());
        out.push(s.flags);
        out.push(s.key.proto);
        put_key(out, &s.key, l);
        if l & layout::LEN32 != 0 {
            out.extend_from_slice(&s.ip_len.to_le_bytes());
            out.extend_from_slice(&s.payload_len.to_le_bytes());
        } else {
            // Both fit: checked above.
            out.extend_from_slice(&(s.ip_len as u16).to_le_bytes());
            out.extend_from_slice(&(s.payload_len as u16).to_le_bytes());
        }
        if l & layout::TCP != 0 {
            out.push(s.tcp_flags);
            out.extend_from_slice(&s.seq.to_le_bytes());
            out.extend_from_slice(&s.ack.to_le_bytes());
            out.extend_from_slice(&s.window.to_le_bytes());
        }
        if l & layout::ICMP != 0 {
            out.push(s.icmp_type);
            out.push(s.icmp_code);
        }
        if let Some(parent) = &s.tunnel_parent {
            let pl = key_layout(parent);
            out.push(pl);
            out.push(parent.proto);
            put_key(out, parent, pl);
        }
        if l & layout::TUNNEL_KIND != 0 {
            out.push(s.tunnel_kind);
        }
        if let Some(p) = &s.payload {
            // Longer payloads are cut (the collector never ships them).
            let bytes = &p.bytes[..p.bytes.len().min(MAX_PAYLOAD)];
            out.extend_from_slice(&p.offset.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

/// A bounds-checked reader over the packed bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.at.checked_add(N)?;
        let b: [u8; N] = self.bytes.get(self.at..end)?.try_into().ok()?;
        self.at = end;
        Some(b)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    #[inline]
    fn key(&mut self, proto: u8, l: u8) -> Option<FlowKey> {
        let (lo, hi) = if l & layout::V6 != 0 {
            (Addr(self.take()?), Addr(self.take()?))
        } else {
            (Addr::from_v4(self.take()?), Addr::from_v4(self.take()?))
        };
        let lo_port = self.u16()?;
        let hi_port = self.u16()?;
        let vlan = if l & layout::VLAN != 0 {
            self.u16()?
        } else {
            0
        };
        Some(FlowKey {
            proto,
            lo,
            hi,
            lo_port,
            hi_port,
            vlan,
        })
    }
    fn summary(&mut self) -> Result<PacketSummary, &'static str> {
        // Every bit of the layout byte has a meaning (`layout::ALL` is all of them).
        let l = self.u8().ok_or("truncated")?;
        let truncated = "truncated";
        let ts_ns = self.u64().ok_or(truncated)?;
        let flags = self.u8().ok_or(truncated)?;
        let proto = self.u8().ok_or(truncated)?;
        let key = self.key(proto, l).ok_or(truncated)?;
        let (ip_len, payload_len) = if l & layout::LEN32 != 0 {
            (self.u32().ok_or(truncated)?, self.u32().ok_or(truncated)?)
        } else {
            (
                u32::from(self.u16().ok_or(truncated)?),
                u32::from(self.u16().ok_or(truncated)?),
            )
        };
        let mut s = PacketSummary {
            ts_ns,
            key,
            flags,
            ip_len,
            payload_len,
            ..PacketSummary::default()
        };
        if l & layout::TCP != 0 {
            s.tcp_flags = self.u8().ok_or(truncated)?;
            s.seq = self.u32().ok_or(truncated)?;
            s.ack = self.u32().ok_or(truncated)?;
            s.window = self.u16().ok_or(truncated)?;
        }
        if l & layout::ICMP != 0 {
            s.icmp_type = self.u8().ok_or(truncated)?;
            s.icmp_code = self.u8().ok_or(truncated)?;
        }
        if l & layout::TUNNEL != 0 {
            let pl = self.u8().ok_or(truncated)?;
            if pl & !(layout::V6 | layout::VLAN) != 0 {
                return Err("unknown tunnel layout bits");
            }
            let pproto = self.u8().ok_or(truncated)?;
            s.tunnel_parent = Some(self.key(pproto, pl).ok_or(truncated)?);
        }
        if l & layout::TUNNEL_KIND != 0 {
            s.tunnel_kind = self.u8().ok_or(truncated)?;
        }
        if l & layout::PAYLOAD != 0 {
            let offset = self.u32().ok_or(truncated)?;
            let len = usize::from(self.u16().ok_or(truncated)?);
            let end = self.at.checked_add(len).ok_or(truncated)?;
            let bytes = self.bytes.get(self.at..end).ok_or(truncated)?.to_vec();
            self.at = end;
            s.payload = Some(Box::new(Payload { offset, bytes }));
        }
        Ok(s)
    }
}

/// Decodes exactly `count` records that must fill `bytes`. Allocates no more than the bytes
/// could hold, whatever `count` claims.
pub fn decode(bytes: &[u8], count: usize) -> Result<Vec<PacketSummary>, String> {
    if count > bytes.len() / MIN_RECORD_LEN {
        return Err(format!(
            "{count} summaries claimed in {} bytes",
            bytes.len()
        ));
    }
    let mut r = Reader { bytes, at: 0 };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let s = r
            .summary()
            .map_err(|e| format!("summary {i} at byte {}: {e}", r.at))?;
        out.push(s);
    }
    if r.at != bytes.len() {
        return Err(format!(
            "{} bytes after the last of {count} summaries",
            bytes.len() - r.at
        ));
    }
    Ok(out)
}
