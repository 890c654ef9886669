//! The sorter's state as a checkpoint of the write-ahead log keeps it ([`crate::durable`]):
//! the records held for ordering, every processor's watermark, the tunnel outers and split
//! connections remembered, and the counters. Restored into a new sorter, it releases the same
//! records in the same order as the sorter it was taken from.

use serde::{Deserialize, Serialize};
use tapflow_proto::conn::ConnRecord;
use tapflow_proto::FlowKey;

use super::expect::ExpectSnapshot;
use super::pending::Pending;
use super::{ConnSorter, ConnStats, UidKey};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SorterSnapshot {
    /// Not serialized with the rest: [`SorterSnapshot::take_records`] hands them over to be
    /// encoded as the wire encodes them (compact, a third of the size).
    #[serde(skip)]
    pending: Vec<ConnRecord>,
    /// (processor, watermark, settle), ns.
    watermarks: Vec<(String, u64, u64)>,
    outers: Vec<(FlowKey, Vec<u64>)>,
    split_closed: Vec<FlowKey>,
    stats: ConnStats,
    /// Announced data connections (FTP, IRC DCC) held.
    #[serde(default)]
    expects: ExpectSnapshot,
}

impl SorterSnapshot {
    /// The records held, taken out (to be encoded on their own).
    pub fn take_records(&mut self) -> Vec<ConnRecord> {
        std::mem::take(&mut self.pending)
    }

    /// The records held, put back (decoded on their own).
    pub fn put_records(&mut self, records: Vec<ConnRecord>) {
        self.pending = records;
    }
}

impl ConnSorter {
    /// What [`ConnSorter::restore`] needs to go on as this sorter would (between messages:
    /// interim records have been taken), announced data connections included.
    pub fn snapshot(&self) -> SorterSnapshot {
        SorterSnapshot {
            pending: self.pending.records().into_iter().cloned().collect(),
            watermarks: self
                .watermarks
                .iter()
                .map(|(p, &(wm, settle))| (p.clone(), wm, settle))
                .collect(),
            outers: self.outers.iter().map(|(k, v)| (*k, v.clone())).collect(),
            split_closed: self.split_closed.iter().copied().collect(),
            stats: self.stats,
            expects: self.expects.snapshot(),
        }
    }

    /// Takes the state of `s` (a new sorter, before any batch).
    pub fn restore(&mut self, s: SorterSnapshot) {
        self.pending = Pending::default();
        for r in s.pending {
            let last = r.ts_ns.saturating_add(r.duration_ns.unwrap_or(0));
            self.pending.insert((last, UidKey::of(&r.uid)), Box::new(r));
        }
        self.watermarks = s
            .watermarks
            .into_iter()
            .map(|(p, wm, settle)| (p, (wm, settle)))
            .collect();
        self.outers = s.outers.into_iter().collect();
        self.split_closed = s.split_closed.into_iter().collect();
        self.stats = s.stats;
        self.expects.restore(s.expects);
    }
}
