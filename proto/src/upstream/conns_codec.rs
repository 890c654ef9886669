//! Connection-record messages ([`ConnBatch`]) written and read by hand: the bytes rmp_serde
//! writes for them (structs as arrays, integers in their smallest form, `u128` as a 16-byte
//! `bin`, unit variants by name), without serde's per-field dispatch. A conn record is the
//! aggregator's unit of work, and rmp_serde's generic decoding was a fifth of its CPU on a
//! flood (bench/RESULTS.md, issue 19).
//!
//! [`write_batch`] writes exactly rmp_serde's bytes (a test compares them). [`read_batch`]
//! reads those bytes, with any integer width rmp_serde also takes; anything else (a shorter
//! array from an older writer, other markers, invalid UTF-8, bytes left over) gives `None`,
//! and the caller decodes with rmp_serde, whose value or error stands. So a body is read as
//! rmp_serde reads it, whichever path reads it (a test compares them on mutated bodies).

use crate::conn::{CompactString, ConnRecord, ConnState, DurStats, Timing};
use crate::upstream::{ConnBatch, TrafficPartial};
use crate::{Addr, FlowKey};

/// Fields of [`ConnRecord`], [`ConnBatch`], [`FlowKey`], [`Timing`], [`DurStats`] and
/// [`TrafficPartial`] as serde writes them (declaration order).
const RECORD_FIELDS: u32 = 31;
const BATCH_FIELDS: u32 = 8;
const KEY_FIELDS: u32 = 6;
const TIMING_FIELDS: u32 = 7;
const STATS_FIELDS: u32 = 5;
const TRAFFIC_FIELDS: u32 = 8;

const NIL: u8 = 0xc0;
const FALSE: u8 = 0xc2;
const TRUE: u8 = 0xc3;

/// Appends the body of a [`ConnBatch`] message as rmp_serde writes it.
pub(crate) fn write_batch(b: &ConnBatch, out: &mut Vec<u8>) {
    array_len(out, BATCH_FIELDS);
    str(out, &b.processor);
    uint(out, b.incarnation);
    uint(out, b.watermark_ns);
    uint(out, b.settle_ns);
    array_len(out, b.records.len() as u32);
    for r in &b.records {
        write_record(r, out);
    }
    array_len(out, b.tunnel_outers.len() as u32);
    for (key, ts) in &b.tunnel_outers {
        array_len(out, 2);
        write_key(key, out);
        uint(out, *ts);
    }
    array_len(out, b.traffic.len() as u32);
    for t in &b.traffic {
        array_len(out, TRAFFIC_FIELDS);
        uint(out, t.window_start_ns);
        uint(out, u64::from(t.window_s));
        str(out, &t.collector);
        uint(out, u64::from(t.proto));
        uint(out, t.packets);
        uint(out, t.bytes);
        uint(out, t.flows);
        boolean(out, t.complete);
    }
    uint(out, b.records_seq);
}

fn write_record(r: &ConnRecord, out: &mut Vec<u8>) {
    array_len(out, RECORD_FIELDS);
    uint(out, r.ts_ns);
    str(out, &r.uid);
    bin(out, r.orig_h.as_bytes());
    uint(out, u64::from(r.orig_p));
    bin(out, r.resp_h.as_bytes());
    uint(out, u64::from(r.resp_p));
    uint(out, u64::from(r.proto));
    opt(out, r.duration_ns, uint);
    opt(out, r.orig_bytes, uint);
    opt(out, r.resp_bytes, uint);
    str(out, r.conn_state.as_str());
    opt(out, r.local_orig, boolean);
    opt(out, r.local_resp, boolean);
    uint(out, r.missed_bytes);
    str(out, &r.history);
    for v in [r.orig_pkts, r.orig_ip_bytes, r.resp_pkts, r.resp_ip_bytes] {
        uint(out, v);
    }
    array_len(out, r.tunnel_parents.len() as u32);
    for k in &r.tunnel_parents {
        write_key(k, out);
    }
    str(out, &r.community_id);
    boolean(out, r.interim);
    boolean(out, r.evicted);
    write_key(&r.key, out);
    for v in [r.orig_tcp_flags, r.resp_tcp_flags, r.split] {
        uint(out, u64::from(v));
    }
    opt(out, r.timing.as_deref(), |out, t| write_timing(t, out));
    opt(out, r.service.as_deref(), str);
    opt(out, r.server_name.as_deref(), str);
    boolean(out, r.service_incomplete);
}

fn write_key(k: &FlowKey, out: &mut Vec<u8>) {
    array_len(out, KEY_FIELDS);
    uint(out, u64::from(k.proto));
    bin(out, k.lo.as_bytes());
    bin(out, k.hi.as_bytes());
    for v in [k.lo_port, k.hi_port, k.vlan] {
        uint(out, u64::from(v));
    }
}

fn write_timing(t: &Timing, out: &mut Vec<u8>) {
    array_len(out, TIMING_FIELDS);
    opt(out, t.tcp_synack_ns, uint);
    opt(out, t.tcp_ackdat_ns, uint);
    for s in [&t.orig_iat, &t.resp_iat, &t.orig_ack_rtt, &t.resp_ack_rtt] {
        array_len(out, STATS_FIELDS);
        uint(out, s.n);
        uint(out, s.sum);
        bin(out, &s.sum_sq.to_be_bytes());
        uint(out, s.min);
        uint(out, s.max);
    }
    boolean(out, t.rtt_cross_tap);
}

/// rmp's `write_uint`: the smallest form that holds `v`.
fn uint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else if v <= 0xff {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= 0xffff {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// `nil`, or `v` as `f` writes it.
fn opt<T>(out: &mut Vec<u8>, v: Option<T>, f: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        Some(v) => f(out, v),
        None => out.push(NIL),
    }
}

fn boolean(out: &mut Vec<u8>, v: bool) {
    out.push(if v { TRUE } else { FALSE });
}

fn array_len(out: &mut Vec<u8>, n: u32) {
    if n <= 15 {
        out.push(0x90 | n as u8);
    } else if n <= 0xffff {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n <= 31 {
        out.push(0xa0 | n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn bin(out: &mut Vec<u8>, b: &[u8]) {
    if b.len() <= 0xff {
        out.extend_from_slice(&[0xc4, b.len() as u8]);
    } else if b.len() <= 0xffff {
        out.push(0xc5);
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

/// Reads the body of a [`ConnBatch`] message written as [`write_batch`] writes it; `None`
/// for anything else (the caller reads it with rmp_serde).
pub(crate) fn read_batch(body: &[u8]) -> Option<ConnBatch> {
    let mut r = Reader { buf: body };
    r.expect_array(BATCH_FIELDS)?;
    let processor = r.string()?;
    let incarnation = r.uint()?;
    let watermark_ns = r.uint()?;
    let settle_ns = r.uint()?;
    let n = r.array()?;
    // Every element takes at least a byte: no claimed length reserves more than the body.
    let mut records = Vec::with_capacity(n.min(r.buf.len()));
    for _ in 0..n {
        records.push(r.record()?);
    }
    let n = r.array()?;
    let mut tunnel_outers = Vec::with_capacity(n.min(r.buf.len()));
    for _ in 0..n {
        r.expect_array(2)?;
        tunnel_outers.push((r.key()?, r.uint()?));
    }
    let n = r.array()?;
    let mut traffic = Vec::with_capacity(n.min(r.buf.len()));
    for _ in 0..n {
        traffic.push(r.traffic()?);
    }
    let records_seq = r.uint()?;
    r.buf.is_empty().then_some(ConnBatch {
        processor,
        incarnation,
        watermark_ns,
        settle_ns,
        records,
        tunnel_outers,
        traffic,
        records_seq,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.buf.split_at_checked(n)?;
        self.buf = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(self.take(n)?.iter().fold(0, |v, &b| v << 8 | u64::from(b)))
    }

    /// An unsigned integer in any of its forms.
    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0..=0x7f => Some(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }

    fn small<T: TryFrom<u64>>(&mut self) -> Option<T> {
        T::try_from(self.uint()?).ok()
    }

    /// `nil` (consumed), or what `f` reads.
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if let Some(rest) = self.buf.strip_prefix(&[NIL]) {
            self.buf = rest;
            return Some(None);
        }
        f(self).map(Some)
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.byte()? {
            FALSE => Some(false),
            TRUE => Some(true),
            _ => None,
        }
    }

    fn array(&mut self) -> Option<usize> {
        let n = match self.byte()? {
            m @ 0x90..=0x9f => u64::from(m & 0x0f),
            0xdc => self.be(2)?,
            0xdd => self.be(4)?,
            _ => return None,
        };
        usize::try_from(n).ok()
    }

    fn expect_array(&mut self, n: u32) -> Option<()> {
        (self.array()? == n as usize).then_some(())
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        std::str::from_utf8(self.take(usize::try_from(n).ok()?)?).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.str().map(str::to_owned)
    }

    /// A string held inline when it is short (a uid, a history): no allocation.
    fn compact(&mut self) -> Option<CompactString> {
        self.str().map(CompactString::new)
    }

    fn bin(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            0xc4 => self.be(1)?,
            0xc5 => self.be(2)?,
            0xc6 => self.be(4)?,
            _ => return None,
        };
        self.take(usize::try_from(n).ok()?)
    }

    fn addr(&mut self) -> Option<Addr> {
        Addr::from_slice(self.bin()?)
    }

    fn key(&mut self) -> Option<FlowKey> {
        self.expect_array(KEY_FIELDS)?;
        Some(FlowKey {
            proto: self.small()?,
            lo: self.addr()?,
            hi: self.addr()?,
            lo_port: self.small()?,
            hi_port: self.small()?,
            vlan: self.small()?,
        })
    }

    fn conn_state(&mut self) -> Option<ConnState> {
        let s = self.str()?;
        ConnState::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn record(&mut self) -> Option<ConnRecord> {
        self.expect_array(RECORD_FIELDS)?;
        Some(ConnRecord {
            ts_ns: self.uint()?,
            uid: self.compact()?,
            orig_h: self.addr()?,
            orig_p: self.small()?,
            resp_h: self.addr()?,
            resp_p: self.small()?,
            proto: self.small()?,
            duration_ns: self.opt(Self::uint)?,
            orig_bytes: self.opt(Self::uint)?,
            resp_bytes: self.opt(Self::uint)?,
            conn_state: self.conn_state()?,
            local_orig: self.opt(Self::boolean)?,
            local_resp: self.opt(Self::boolean)?,
            missed_bytes: self.uint()?,
            history: self.compact()?,
            orig_pkts: self.uint()?,
            orig_ip_bytes: self.uint()?,
            resp_pkts: self.uint()?,
            resp_ip_bytes: self.uint()?,
            tunnel_parents: self.keys()?,
            community_id: self.str()?.into(),
            interim: self.boolean()?,
            evicted: self.boolean()?,
            key: self.key()?,
            orig_tcp_flags: self.small()?,
            resp_tcp_flags: self.small()?,
            split: self.small()?,
            timing: self.opt(Self::timing)?.map(Box::new),
            service: self.opt(Self::string)?,
            server_name: self.opt(Self::string)?,
            service_incomplete: self.boolean()?,
        })
    }

    fn keys(&mut self) -> Option<Vec<FlowKey>> {
        let n = self.array()?;
        let mut keys = Vec::with_capacity(n.min(self.buf.len()));
        for _ in 0..n {
            keys.push(self.key()?);
        }
        Some(keys)
    }

    fn timing(&mut self) -> Option<Timing> {
        self.expect_array(TIMING_FIELDS)?;
        Some(Timing {
            tcp_synack_ns: self.opt(Self::uint)?,
            tcp_ackdat_ns: self.opt(Self::uint)?,
            orig_iat: self.stats()?,
            resp_iat: self.stats()?,
            orig_ack_rtt: self.stats()?,
            resp_ack_rtt: self.stats()?,
            rtt_cross_tap: self.boolean()?,
        })
    }

    fn stats(&mut self) -> Option<DurStats> {
        self.expect_array(STATS_FIELDS)?;
        Some(DurStats {
            n: self.uint()?,
            sum: self.uint()?,
            sum_sq: u128::from_be_bytes(self.bin()?.try_into().ok()?),
            min: self.uint()?,
            max: self.uint()?,
        })
    }

    fn traffic(&mut self) -> Option<TrafficPartial> {
        self.expect_array(TRAFFIC_FIELDS)?;
        Some(TrafficPartial {
            window_start_ns: self.uint()?,
            window_s: self.small()?,
            collector: self.string()?,
            proto: self.small()?,
            packets: self.uint()?,
            bytes: self.uint()?,
            flows: self.uint()?,
            complete: self.boolean()?,
        })
    }
}

#[cfg(test)]
mod tests;
