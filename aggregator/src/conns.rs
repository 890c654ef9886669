//! Connection records from every processor, written in one deterministic order (sans-IO).
//!
//! Records are held until no processor can still send one that sorts before them, then
//! released in (last packet time, uid) order: a record whose last packet is at `t` is
//! released once every processor's watermark is past `t + settle` (the longest time a
//! connection can stay open after its last packet). The same input gives the same log, byte
//! for byte, with any number of processors. At end of stream everything left is released.
//!
//! Tunnel parents travel as outer flow keys; processors announce each tunnel outer connection
//! as it starts (key, first packet time), and the uid of the outer connection that was open
//! when the inner one started names it here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use tapflow_proto::conn::{split, uid, ConnRecord};
use tapflow_proto::key::ip_proto;
use tapflow_proto::upstream::ConnBatch;
use tapflow_proto::FlowKey;

/// Counters of the sorter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnStats {
    pub received: u64,
    pub interim: u64,
    pub released: u64,
    /// Released before the watermark allowed it, because `cap` records were pending.
    pub forced: u64,
    /// Tunnel parents whose outer connection was never announced (named by key only).
    pub parents_unresolved: u64,
    /// Tunnel outer announcements dropped because `outer_cap` keys were remembered.
    pub outers_over_cap: u64,
    /// Records a processor marked `continued` after a processor-set switch whose connection
    /// no processor closed at the switch (a new UDP or ICMP flow in a moved slot looks the
    /// same to the new owner): the mark is taken off.
    pub split_unpaired: u64,
    /// Connections closed at a switch not remembered for pairing because `cap` were.
    pub split_over_cap: u64,
}

pub struct ConnSorter {
    processors: usize,
    cap: usize,
    outer_cap: usize,
    watermarks: HashMap<String, (u64, u64)>,
    /// Boxed: a B-tree shifts its values within a node on every insert, and a record is a few
    /// hundred bytes (unboxed, those moves were 15% of the aggregator's cycles).
    pending: BTreeMap<(u64, String), Box<ConnRecord>>,
    outers: HashMap<FlowKey, Vec<u64>>,
    /// Keys of connections closed at a processor-set switch and not yet continued. A closed
    /// half always ends (is released) before its continuation, which ends after the switch.
    split_closed: HashSet<FlowKey>,
    interim: Vec<ConnRecord>,
    stats: ConnStats,
}

impl ConnSorter {
    pub fn new(processors: usize, cap: usize) -> ConnSorter {
        ConnSorter {
            processors,
            cap: cap.max(1),
            outer_cap: 1 << 20,
            watermarks: HashMap::new(),
            pending: BTreeMap::new(),
            outers: HashMap::new(),
            split_closed: HashSet::new(),
            interim: Vec::new(),
            stats: ConnStats::default(),
        }
    }

    pub fn push(&mut self, batch: ConnBatch) {
        let wm = self.watermarks.entry(batch.processor).or_insert((0, 0));
        *wm = (wm.0.max(batch.watermark_ns), batch.settle_ns);
        for (key, ts) in batch.tunnel_outers {
            if let Some(v) = self.outers.get_mut(&key) {
                v.push(ts);
            } else if self.outers.len() < self.outer_cap {
                self.outers.insert(key, vec![ts]);
            } else {
                self.stats.outers_over_cap += 1;
            }
        }
        for r in batch.records {
            self.stats.received += 1;
            if r.interim {
                self.stats.interim += 1;
                self.interim.push(r);
                continue;
            }
            let last = r.ts_ns.saturating_add(r.duration_ns.unwrap_or(0));
            self.pending.insert((last, r.uid.clone()), Box::new(r));
        }
    }

    /// A processor has ended: it holds nothing back any more.
    pub fn end(&mut self, processor: &str) {
        self.watermarks.insert(processor.to_owned(), (u64::MAX, 0));
    }

    /// Interim updates, in arrival order (they go to their own log).
    pub fn take_interim(&mut self) -> Vec<ConnRecord> {
        std::mem::take(&mut self.interim)
    }

    /// Final records that can be written now, in order, as JSON lines appended to `out`.
    pub fn release(&mut self, out: &mut String) {
        self.release_with(|r, parents| conn_json(r, parents, out));
    }

    /// End of everything: release all that is left.
    pub fn drain(&mut self, out: &mut String) {
        self.drain_with(|r, parents| conn_json(r, parents, out));
    }

    /// The processor set changed: `n` processors are expected from now on.
    pub fn set_processors(&mut self, n: usize) {
        self.processors = n;
    }

    /// Like [`ConnSorter::release`], handing each record (and its parents' uids) to `f`.
    pub fn release_with(&mut self, mut f: impl FnMut(&ConnRecord, &[String])) {
        self.release_owned(|r, parents| f(&r, &parents));
    }

    /// Like [`ConnSorter::release_with`], handing each record over (to go to another thread).
    pub fn release_owned(&mut self, mut f: impl FnMut(Box<ConnRecord>, Vec<String>)) {
        let limit = if self.watermarks.len() < self.processors {
            0
        } else {
            self.watermarks
                .values()
                .map(|&(wm, settle)| wm.saturating_sub(settle))
                .min()
                .unwrap_or(0)
        };
        loop {
            let forced = self.pending.len() > self.cap;
            let Some(entry) = self.pending.first_entry() else {
                break;
            };
            let due = entry.key().0 < limit || limit == u64::MAX;
            if !due && !forced {
                break;
            }
            if !due {
                self.stats.forced += 1;
            }
            let r = entry.remove();
            self.emit(r, &mut f);
        }
    }

    /// Like [`ConnSorter::drain`], handing each record to `f`.
    pub fn drain_with(&mut self, mut f: impl FnMut(&ConnRecord, &[String])) {
        self.drain_owned(|r, parents| f(&r, &parents));
    }

    /// Like [`ConnSorter::drain_with`], handing each record over.
    pub fn drain_owned(&mut self, mut f: impl FnMut(Box<ConnRecord>, Vec<String>)) {
        while let Some((_, r)) = self.pending.pop_first() {
            self.emit(r, &mut f);
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn stats(&self) -> ConnStats {
        self.stats
    }

    fn emit(&mut self, mut r: Box<ConnRecord>, f: &mut impl FnMut(Box<ConnRecord>, Vec<String>)) {
        self.stats.released += 1;
        if r.split != 0 {
            self.pair_split(&mut r);
        }
        let parents: Vec<String> = r
            .tunnel_parents
            .iter()
            .map(|k| self.parent_uid(k, r.ts_ns))
            .collect();
        f(r, parents);
    }

    /// Pairs the halves of connections split by a processor-set switch: a `continued` mark
    /// stays only when a processor closed the same connection at a switch.
    fn pair_split(&mut self, r: &mut ConnRecord) {
        if r.split & split::CONTINUED != 0 && !self.split_closed.remove(&r.key) {
            r.split &= !split::CONTINUED;
            self.stats.split_unpaired += 1;
        }
        if r.split & split::CLOSED != 0 {
            if self.split_closed.len() < self.cap {
                self.split_closed.insert(r.key);
            } else {
                self.stats.split_over_cap += 1;
            }
        }
    }

    /// The uid of the outer connection on `key` that was open when `ts` came.
    fn parent_uid(&mut self, key: &FlowKey, ts: u64) -> String {
        let first = self.outers.get(key).and_then(|starts| {
            starts
                .iter()
                .filter(|&&s| s <= ts)
                .max()
                .or(starts.iter().min())
                .copied()
        });
        match first {
            Some(first) => uid(key, first),
            None => {
                self.stats.parents_unresolved += 1;
                format!("{key}")
            }
        }
    }
}

/// One conn.log line as Zeek writes JSON: field names and units as Zeek's, unset fields left
/// out; `ts` and `duration` in seconds with 6 decimals.
pub fn conn_json(r: &ConnRecord, parents: &[String], out: &mut String) {
    // Hand-written (itoa for integers): `write!` spent more cycles in the formatting machinery
    // than on the record itself, at 200k records at the end of a capture.
    let mut n = itoa::Buffer::new();
    push_endpoints(r, &mut n, out);
    push_state(r, &mut n, out);
    push_counts(r, parents, &mut n, out);
    out.push_str("}\n");
}

/// `ts` to `proto`.
#[inline]
fn push_endpoints(r: &ConnRecord, n: &mut itoa::Buffer, out: &mut String) {
    let proto = match r.proto {
        ip_proto::TCP => "tcp",
        ip_proto::UDP => "udp",
        ip_proto::ICMP | ip_proto::ICMPV6 => "icmp",
        _ => "unknown_transport",
    };
    out.push_str("{\"ts\":");
    secs(r.ts_ns, out);
    out.push_str(",\"uid\":\"");
    out.push_str(&r.uid);
    out.push_str("\",\"id.orig_h\":\"");
    push_addr(&r.orig_h, out);
    out.push_str("\",\"id.orig_p\":");
    out.push_str(n.format(r.orig_p));
    out.push_str(",\"id.resp_h\":\"");
    push_addr(&r.resp_h, out);
    out.push_str("\",\"id.resp_p\":");
    out.push_str(n.format(r.resp_p));
    out.push_str(",\"proto\":\"");
    out.push_str(proto);
    out.push('"');
}

/// `duration` to `history`.
#[inline]
fn push_state(r: &ConnRecord, n: &mut itoa::Buffer, out: &mut String) {
    if let Some(d) = r.duration_ns {
        out.push_str(",\"duration\":");
        secs(d, out);
    }
    if let Some(b) = r.orig_bytes {
        out.push_str(",\"orig_bytes\":");
        out.push_str(n.format(b));
    }
    if let Some(b) = r.resp_bytes {
        out.push_str(",\"resp_bytes\":");
        out.push_str(n.format(b));
    }
    out.push_str(",\"conn_state\":\"");
    out.push_str(r.conn_state.as_str());
    out.push('"');
    if let Some(l) = r.local_orig {
        out.push_str(if l {
            ",\"local_orig\":true"
        } else {
            ",\"local_orig\":false"
        });
    }
    if let Some(l) = r.local_resp {
        out.push_str(if l {
            ",\"local_resp\":true"
        } else {
            ",\"local_resp\":false"
        });
    }
    out.push_str(",\"missed_bytes\":");
    out.push_str(n.format(r.missed_bytes));
    if !r.history.is_empty() {
        // History letters are ASCII; nothing to escape.
        out.push_str(",\"history\":\"");
        out.push_str(&r.history);
        out.push('"');
    }
}

/// Packet and byte counts, tunnel parents and tapflow's extras.
#[inline]
fn push_counts(r: &ConnRecord, parents: &[String], n: &mut itoa::Buffer, out: &mut String) {
    for (name, v) in [
        (",\"orig_pkts\":", r.orig_pkts),
        (",\"orig_ip_bytes\":", r.orig_ip_bytes),
        (",\"resp_pkts\":", r.resp_pkts),
        (",\"resp_ip_bytes\":", r.resp_ip_bytes),
    ] {
        out.push_str(name);
        out.push_str(n.format(v));
    }
    if !parents.is_empty() {
        out.push_str(",\"tunnel_parents\":[");
        for (i, p) in parents.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(p);
            out.push('"');
        }
        out.push(']');
    }
    out.push_str(",\"ip_proto\":");
    out.push_str(n.format(r.proto));
    out.push_str(",\"community_id\":\"");
    out.push_str(&r.community_id);
    out.push('"');
    if r.key.vlan != 0 {
        out.push_str(",\"vlan\":");
        out.push_str(n.format(r.key.vlan));
    }
    if r.evicted {
        out.push_str(",\"evicted\":true");
    }
    if let Some(split) = tapflow_proto::conn::split::name(r.split) {
        out.push_str(",\"tapflow_split\":\"");
        out.push_str(split);
        out.push('"');
    }
}

/// An address as text: IPv4 by hand (most records), IPv6 by `Display` (its `::` rules).
fn push_addr(a: &tapflow_proto::Addr, out: &mut String) {
    if a.is_v4() {
        let mut n = itoa::Buffer::new();
        for (i, octet) in a.0[12..].iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            out.push_str(n.format(*octet));
        }
    } else {
        let _ = write!(out, "{a}");
    }
}

/// Nanoseconds as seconds with 6 decimals (Zeek's precision), as a JSON number.
fn secs(ns: u64, out: &mut String) {
    let mut n = itoa::Buffer::new();
    out.push_str(n.format(ns / 1_000_000_000));
    out.push('.');
    let micros = n.format((ns % 1_000_000_000) / 1000);
    for _ in micros.len()..6 {
        out.push('0');
    }
    out.push_str(micros);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapflow_proto::conn::ConnState;
    use tapflow_proto::{Addr, FiveTuple};

    fn rec(ts: u64, dur: u64, sport: u16) -> ConnRecord {
        let t = FiveTuple {
            proto: 6,
            src: Addr::from_v4([10, 0, 0, 1]),
            dst: Addr::from_v4([10, 0, 0, 2]),
            sport,
            dport: 80,
        };
        let key = t.key(0).0;
        ConnRecord {
            ts_ns: ts,
            uid: uid(&key, ts),
            orig_h: t.src,
            orig_p: sport,
            resp_h: t.dst,
            resp_p: 80,
            proto: 6,
            duration_ns: Some(dur),
            orig_bytes: Some(1),
            resp_bytes: Some(2),
            conn_state: ConnState::SF,
            local_orig: None,
            local_resp: None,
            missed_bytes: 0,
            history: "ShADadFf".into(),
            orig_pkts: 5,
            orig_ip_bytes: 300,
            resp_pkts: 4,
            resp_ip_bytes: 250,
            tunnel_parents: vec![],
            community_id: "1:x".into(),
            interim: false,
            evicted: false,
            key,
            orig_tcp_flags: 0x12,
            resp_tcp_flags: 0x12,
            split: 0,
        }
    }

    fn batch(p: &str, wm: u64, records: Vec<ConnRecord>) -> ConnBatch {
        ConnBatch {
            processor: p.into(),
            incarnation: 1,
            watermark_ns: wm,
            settle_ns: 10,
            records,
            tunnel_outers: vec![],
            traffic: vec![],
            records_seq: 0,
        }
    }

    fn lines(s: &str) -> Vec<String> {
        s.lines()
            .map(|l| {
                l.split(",\"id.orig_h")
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn released_in_order_behind_every_watermark() {
        let mut c = ConnSorter::new(2, 1000);
        let mut out = String::new();
        c.push(batch("p0", 100, vec![rec(50, 10, 1), rec(20, 5, 2)]));
        c.release(&mut out);
        assert!(out.is_empty(), "p1 not heard from");
        c.push(batch("p1", 40, vec![rec(10, 1, 3)]));
        c.release(&mut out);
        // limit = min(100, 40) - 10 = 30: records ending at 11 and 25 go, 60 waits.
        assert_eq!(lines(&out).len(), 2, "{out}");
        assert!(out.starts_with("{\"ts\":0.000000"), "{out}");
        out.clear();
        c.end("p1");
        c.release(&mut out);
        assert_eq!(lines(&out).len(), 1);
    }

    #[test]
    fn order_is_independent_of_arrival() {
        let run = |flip: bool| {
            let mut c = ConnSorter::new(2, 1000);
            let mut out = String::new();
            let (a, b) = (
                batch("p0", 1000, vec![rec(5, 5, 1), rec(7, 1, 2)]),
                batch("p1", 1000, vec![rec(6, 2, 3), rec(1, 9, 4)]),
            );
            if flip {
                c.push(b);
                c.push(a);
            } else {
                c.push(a);
                c.push(b);
            }
            c.drain(&mut out);
            out
        };
        assert_eq!(run(false), run(true));
    }

    #[test]
    fn zeek_json_fields() {
        let mut out = String::new();
        let mut r = rec(1_323_974_133_493_287_123, 1_500_000, 40000);
        r.duration_ns = None;
        r.orig_bytes = None;
        conn_json(&r, &["Cabc".into()], &mut out);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(v["ts"].to_string(), "1323974133.493287");
        assert_eq!(v["id.orig_p"], 40000);
        assert_eq!(v["proto"], "tcp");
        assert!(v.get("duration").is_none() && v.get("orig_bytes").is_none());
        assert_eq!(v["resp_bytes"], 2);
        assert_eq!(v["tunnel_parents"][0], "Cabc");
        assert_eq!(v["history"], "ShADadFf");
    }

    #[test]
    fn cap_forces_release_and_counts_it() {
        let mut c = ConnSorter::new(1, 2);
        let mut out = String::new();
        c.push(batch(
            "p0",
            0,
            vec![rec(1, 1, 1), rec(2, 1, 2), rec(3, 1, 3)],
        ));
        c.release(&mut out);
        assert_eq!((c.stats().forced, c.pending()), (1, 2));
    }

    #[test]
    fn tunnel_parent_is_the_outer_open_at_the_inner_start() {
        let mut c = ConnSorter::new(1, 100);
        let outer = FiveTuple {
            proto: 17,
            src: Addr::from_v4([1, 1, 1, 1]),
            dst: Addr::from_v4([2, 2, 2, 2]),
            sport: 5000,
            dport: 4789,
        }
        .key(0)
        .0;
        let mut b = batch("p0", u64::MAX, vec![]);
        b.tunnel_outers = vec![(outer, 100), (outer, 900)];
        let mut inner = rec(950, 10, 9);
        inner.tunnel_parents = vec![outer];
        b.records.push(inner);
        c.push(b);
        let mut out = String::new();
        c.drain(&mut out);
        assert!(out.contains(&uid(&outer, 900)), "{out}");
    }
}
