//! The records a sorter holds, in release order: (last packet time, uid).
//!
//! Records are grouped by the span of 2^24 ns (16.8 ms) their last packet fell in and are not
//! sorted within it until the span's first record is asked for. A record costs a push onto its
//! span's list, and a span one sort when it comes up for release, where a B-tree of every
//! record cost an insertion with a cache miss per level (at the end of a capture, every record
//! is held at once).

use std::collections::BTreeMap;

use tapflow_proto::conn::ConnRecord;

use super::UidKey;

/// The release order: last packet time, then uid.
pub(super) type Key = (u64, UidKey);

/// Bits of the last packet time below a span.
const SPAN_SHIFT: u32 = 24;

#[derive(Default)]
pub(super) struct Pending {
    spans: BTreeMap<u64, Span>,
    len: usize,
}

#[derive(Default)]
struct Span {
    /// Once sorted: descending, so that the first record in release order is the last one.
    items: Vec<(Key, Box<ConnRecord>)>,
    sorted: bool,
}

impl Span {
    /// Sorts what came since the last sort. Of records with the same key only the one that
    /// came last is kept (what a map keyed by it would hold).
    fn sort(&mut self) -> usize {
        if self.sorted {
            return 0;
        }
        // Newest first, so that a stable sort keeps the newest of equal keys first, and
        // `dedup_by` keeps the first of a run.
        self.items.reverse();
        self.items.sort_by_key(|item| std::cmp::Reverse(item.0));
        let n = self.items.len();
        self.items.dedup_by(|a, b| a.0 == b.0);
        self.sorted = true;
        n - self.items.len()
    }
}

impl Pending {
    /// Holds `r` under `key`; a record held under the same key is replaced.
    pub fn insert(&mut self, key: Key, r: Box<ConnRecord>) {
        let span = self.spans.entry(key.0 >> SPAN_SHIFT).or_default();
        // Still sorted if it goes last (it sorts before everything in the span).
        span.sorted &= span.items.last().is_some_and(|(k, _)| key < *k);
        span.items.push((key, r));
        self.len += 1;
    }

    /// The key of the first record in release order.
    pub fn first_key(&mut self) -> Option<Key> {
        let mut first = self.spans.first_entry()?;
        self.len -= first.get_mut().sort();
        first.get().items.last().map(|(k, _)| *k)
    }

    /// Takes the first record in release order.
    pub fn pop_first(&mut self) -> Option<(Key, Box<ConnRecord>)> {
        let mut first = self.spans.first_entry()?;
        let span = first.get_mut();
        self.len -= span.sort();
        let item = span.items.pop();
        if span.items.is_empty() {
            first.remove();
        }
        self.len -= usize::from(item.is_some());
        item
    }

    /// Records held (replaced ones included until their span is sorted).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Every record held, in release order (for a snapshot).
    pub fn records(&self) -> Vec<&ConnRecord> {
        // Within a span, records of one key are in the order they came (a sorted span holds
        // one record a key).
        let mut all: Vec<(&Key, &ConnRecord)> = self
            .spans
            .values()
            .flat_map(|s| s.items.iter().map(|(k, r)| (k, &**r)))
            .collect();
        // Stable: of equal keys, the last to come is the one kept.
        all.sort_by(|a, b| a.0.cmp(b.0));
        let mut out: Vec<&ConnRecord> = Vec::with_capacity(all.len());
        let mut last: Option<&Key> = None;
        for (k, r) in all {
            if last == Some(k) {
                out.pop();
            }
            out.push(r);
            last = Some(k);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testutil::scan_and_sessions;

    /// Random inserts (equal keys among them, times within one span, a few and many), first
    /// keys and pops, against the map the sorter held before: the same records in the same
    /// order and the same snapshot; the length counts a replaced record until its span is
    /// sorted (exact with one span).
    #[test]
    fn pending_releases_as_a_map_keyed_by_release_order_would() {
        let records = scan_and_sessions(64);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..300 {
            let spread = [1u64 << 19, 1 << 22, 1 << 30][round % 3];
            let (mut p, mut model) = (Pending::default(), BTreeMap::new());
            for step in 0..400 {
                let op = next() % 8;
                if op < 5 {
                    let i = (next() % 64) as usize;
                    // 16 times: equal keys in every span.
                    let key = ((next() % 16) * spread, UidKey::of(&records[i].uid));
                    // The record's own uid tells which came last under an equal key.
                    let r = Box::new(records[(i + step) % 64].clone());
                    model.insert(key, r.uid.clone());
                    p.insert(key, r);
                } else if op == 5 {
                    assert_eq!(p.first_key(), model.keys().next().copied(), "round {round}");
                    assert!(p.len() >= model.len(), "round {round}");
                    if spread < 1 << SPAN_SHIFT >> 4 {
                        assert_eq!(p.len(), model.len(), "round {round}: one span, sorted");
                    }
                } else if op == 6 {
                    let got = p.pop_first().map(|(k, r)| (k, r.uid));
                    assert_eq!(got, model.pop_first(), "round {round}");
                } else {
                    let snap: Vec<_> = p.records().iter().map(|r| r.uid.clone()).collect();
                    let want: Vec<_> = model.values().cloned().collect();
                    assert_eq!(snap, want, "round {round}");
                }
            }
            while let Some((k, r)) = model.pop_first() {
                assert_eq!(p.pop_first().map(|(k, r)| (k, r.uid)), Some((k, r)));
            }
            assert!(p.pop_first().is_none());
            assert_eq!(p.len(), 0);
        }
    }
}
