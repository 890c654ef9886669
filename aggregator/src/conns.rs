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

use std::collections::{HashMap, HashSet};

use tapflow_proto::conn::{split, uid, ConnRecord, InvalidRecord};
use tapflow_proto::upstream::ConnBatch;
use tapflow_proto::FlowKey;
use tracing::warn;

mod expect;
mod line;
mod pending;
mod snapshot;

pub use expect::{ExpectStats, ExpectTable, Expectation};
pub use line::conn_json;
pub use snapshot::SorterSnapshot;

/// Expected data connections held at most (FTP and IRC announcements; see [`expect`]).
pub const EXPECT_CAP: usize = 65_536;

/// Counters of the sorter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Records rejected by [`ConnRecord::validate`], by reason: not written, not given to
    /// detection or InfluxDB. Counted in `received` (so `received = released + interim +
    /// invalid` at the end). In the report only when some were (new in issue 21).
    #[serde(default, skip_serializing_if = "InvalidCounts::is_zero")]
    pub invalid: InvalidCounts,
    /// Announced data connections (FTP, IRC DCC) and the records they labelled. In the report
    /// only when some came (new in issue 17).
    #[serde(default, skip_serializing_if = "ExpectStats::is_zero")]
    pub expects: ExpectStats,
}

/// Records rejected as invalid, by [`InvalidRecord`] (each field named as its `as_str`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InvalidCounts {
    pub uid: u64,
    pub history: u64,
    pub community_id: u64,
    pub tunnel_parents: u64,
    pub time: u64,
    pub count: u64,
    pub split: u64,
    pub service: u64,
    pub server_name: u64,
}

impl InvalidCounts {
    pub fn is_zero(&self) -> bool {
        self.total() == 0
    }

    pub fn total(&self) -> u64 {
        InvalidRecord::ALL.iter().map(|&r| self.get(r)).sum()
    }

    /// The count of one reason.
    pub fn get(&self, reason: InvalidRecord) -> u64 {
        *self.by(reason)
    }

    fn add(&mut self, reason: InvalidRecord) {
        *self.by_mut(reason) += 1;
    }

    fn by(&self, reason: InvalidRecord) -> &u64 {
        match reason {
            InvalidRecord::Uid => &self.uid,
            InvalidRecord::History => &self.history,
            InvalidRecord::CommunityId => &self.community_id,
            InvalidRecord::TunnelParents => &self.tunnel_parents,
            InvalidRecord::Time => &self.time,
            InvalidRecord::Count => &self.count,
            InvalidRecord::Split => &self.split,
            InvalidRecord::Service => &self.service,
            InvalidRecord::ServerName => &self.server_name,
        }
    }

    fn by_mut(&mut self, reason: InvalidRecord) -> &mut u64 {
        match reason {
            InvalidRecord::Uid => &mut self.uid,
            InvalidRecord::History => &mut self.history,
            InvalidRecord::CommunityId => &mut self.community_id,
            InvalidRecord::TunnelParents => &mut self.tunnel_parents,
            InvalidRecord::Time => &mut self.time,
            InvalidRecord::Count => &mut self.count,
            InvalidRecord::Split => &mut self.split,
            InvalidRecord::Service => &mut self.service,
            InvalidRecord::ServerName => &mut self.server_name,
        }
    }
}

pub struct ConnSorter {
    processors: usize,
    cap: usize,
    outer_cap: usize,
    watermarks: HashMap<String, (u64, u64)>,
    /// Keyed by (last packet time, uid) with the uid inline ([`UidKey`]): no copy of it on the
    /// heap per record. Boxed: records are moved about as they are sorted, and a record is a
    /// few hundred bytes.
    pending: pending::Pending,
    outers: HashMap<FlowKey, Vec<u64>>,
    /// Keys of connections closed at a processor-set switch and not yet continued. A closed
    /// half always ends (is released) before its continuation, which ends after the switch.
    split_closed: HashSet<FlowKey>,
    interim: Vec<ConnRecord>,
    expects: ExpectTable,
    stats: ConnStats,
}

impl ConnSorter {
    pub fn new(processors: usize, cap: usize) -> ConnSorter {
        ConnSorter {
            processors,
            cap: cap.max(1),
            outer_cap: 1 << 20,
            watermarks: HashMap::new(),
            pending: pending::Pending::default(),
            outers: HashMap::new(),
            split_closed: HashSet::new(),
            interim: Vec::new(),
            expects: ExpectTable::new(EXPECT_CAP),
            stats: ConnStats::default(),
        }
    }

    /// A processor's batch: its records are validated (an invalid one is counted and
    /// dropped), then held for ordering (interim ones set aside for their own log).
    pub fn push(&mut self, batch: ConnBatch) {
        for r in batch.records {
            self.stats.received += 1;
            if let Err(reason) = r.validate() {
                self.reject(&batch.processor, &r, reason);
                continue;
            }
            if r.interim {
                self.stats.interim += 1;
                self.interim.push(r);
                continue;
            }
            let last = r.ts_ns.saturating_add(r.duration_ns.unwrap_or(0));
            self.pending.insert((last, UidKey::of(&r.uid)), Box::new(r));
        }
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
    }

    /// A processor has ended: it holds nothing back any more.
    pub fn end(&mut self, processor: &str) {
        self.watermarks.insert(processor.to_owned(), (u64::MAX, 0));
    }

    /// A processor ended (or given up) is a member again from packet time `from_ns` (added
    /// back at a switch): records are held for it again, none of its from before then.
    pub fn revive(&mut self, processor: &str, from_ns: u64) {
        self.watermarks.insert(processor.to_owned(), (from_ns, 0));
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
        while let Some((last, _)) = self.pending.first_key() {
            let forced = self.pending.len() > self.cap;
            let due = last < limit || limit == u64::MAX;
            if !due && !forced {
                break;
            }
            if !due {
                self.stats.forced += 1;
            }
            if let Some((_, r)) = self.pending.pop_first() {
                self.emit(r, &mut f);
            }
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
        ConnStats {
            expects: self.expects.stats(),
            ..self.stats
        }
    }

    /// The expected data connections, to which a processor's announcements go.
    pub fn expects_mut(&mut self) -> &mut ExpectTable {
        &mut self.expects
    }

    /// Counts an invalid record; the 1st, 10th, 100th, ... are logged (rate-limited without
    /// a clock). What came from the wire is logged escaped (`Debug`) and cut short.
    #[cold]
    fn reject(&mut self, processor: &str, r: &ConnRecord, reason: InvalidRecord) {
        self.stats.invalid.add(reason);
        let n = self.stats.invalid.total();
        if is_power_of_ten(n) {
            let uid: String = r.uid.chars().take(40).collect();
            let processor: String = processor.chars().take(40).collect();
            warn!(?processor, ?uid, %reason, invalid = n, "dropped an invalid connection record (the 1st, 10th, 100th, ... are logged; conns.invalid in the accounting report counts them by reason)");
        }
    }

    fn emit(&mut self, mut r: Box<ConnRecord>, f: &mut impl FnMut(Box<ConnRecord>, Vec<String>)) {
        self.stats.released += 1;
        if r.split != 0 {
            self.pair_split(&mut r);
        }
        // In release order: the same labels with any number of processors (see `expect`).
        self.expects.label(&mut r);
        self.expects
            .released(r.ts_ns.saturating_add(r.duration_ns.unwrap_or(0)));
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
            Some(first) => uid(key, first).into(),
            None => {
                self.stats.parents_unresolved += 1;
                format!("{key}")
            }
        }
    }
}

/// A validated uid (`C` + at most 17 alphanumeric digits, [`ConnRecord::validate`]) inline,
/// padded with zeros: ordered exactly as the uid strings are (a uid has no zero byte, and a
/// shorter uid that is a prefix of a longer one sorts first either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct UidKey([u8; UID_KEY_LEN]);

/// `C` and the 17 digits a valid uid has at most.
const UID_KEY_LEN: usize = 18;

impl UidKey {
    /// The key of a uid; only validated uids reach here (a longer one would be cut, which
    /// could only merge the order of two records that differ past the 18th byte).
    fn of(uid: &str) -> UidKey {
        let mut k = [0u8; UID_KEY_LEN];
        let n = uid.len().min(UID_KEY_LEN);
        k[..n].copy_from_slice(&uid.as_bytes()[..n]);
        UidKey(k)
    }
}

/// 1, 10, 100, ...
fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

#[cfg(test)]
mod tests;
