//! Event-time merge of several collectors' summaries (sans-IO).
//!
//! Summaries are released in (timestamp, collector, sequence) order once every input that has
//! not ended has a watermark at or past them, so the flow table sees the same order whatever
//! the arrival order, the number of processors, or which collector saw which direction.
//! Nothing is released before `expected` inputs have been heard from (a collector that starts
//! late must not find its packets' predecessors already processed), unless the buffer cap
//! forces it or the caller declares the missing inputs dead.
//!
//! Memory is bounded by `cap` buffered summaries: past it, the oldest are released early and
//! counted as `forced`. A summary older than what was already released is processed at once
//! and counted as `late` (the table copes with mild disorder; the count says it happened).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use tapflow_proto::PacketSummary;

/// Counters of the merge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub released: u64,
    pub late: u64,
    pub forced: u64,
    pub buffered: u64,
}

pub struct Merger {
    expected: usize,
    cap: usize,
    inputs: Vec<Input>,
    index: HashMap<(String, u64), usize>,
    heap: BinaryHeap<Reverse<Entry>>,
    released_ts: u64,
    stats: MergeStats,
    waive_expected: bool,
}

struct Input {
    name: String,
    watermark_ns: u64,
    ended: bool,
    dead: bool,
}

struct Entry {
    ts: u64,
    /// Inputs ordered by name, then incarnation: stable across runs.
    rank: (String, u64),
    seq: u64,
    summary: PacketSummary,
}

impl Entry {
    fn key(&self) -> (u64, &str, u64, u64) {
        (self.ts, &self.rank.0, self.rank.1, self.seq)
    }
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.key() == o.key()
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.key().cmp(&o.key())
    }
}

impl Merger {
    pub fn new(expected: usize, cap: usize) -> Merger {
        Merger {
            expected,
            cap: cap.max(1),
            inputs: Vec::new(),
            index: HashMap::new(),
            heap: BinaryHeap::new(),
            released_ts: 0,
            stats: MergeStats::default(),
            waive_expected: false,
        }
    }

    fn input(&mut self, sender: &str, incarnation: u64) -> usize {
        let next = self.inputs.len();
        *self
            .index
            .entry((sender.to_owned(), incarnation))
            .or_insert_with(|| {
                self.inputs.push(Input {
                    name: sender.to_owned(),
                    watermark_ns: 0,
                    ended: false,
                    dead: false,
                });
                next
            })
    }

    /// Buffers a batch's summaries (the first has sequence number `seq`) and advances the
    /// input's watermark. Late summaries are handed straight to `out`.
    pub fn push(
        &mut self,
        sender: &str,
        incarnation: u64,
        seq: u64,
        watermark_ns: u64,
        summaries: &[PacketSummary],
        out: &mut Vec<PacketSummary>,
    ) {
        let i = self.input(sender, incarnation);
        self.inputs[i].watermark_ns = self.inputs[i].watermark_ns.max(watermark_ns);
        for (k, s) in summaries.iter().enumerate() {
            if s.ts_ns < self.released_ts {
                self.stats.late += 1;
                out.push(*s);
                continue;
            }
            self.heap.push(Reverse(Entry {
                ts: s.ts_ns,
                rank: (sender.to_owned(), incarnation),
                seq: seq + k as u64,
                summary: *s,
            }));
        }
        while self.heap.len() > self.cap {
            if let Some(Reverse(e)) = self.heap.pop() {
                self.stats.forced += 1;
                self.emit(e, out);
            }
        }
        self.stats.buffered = self.heap.len() as u64;
    }

    /// A heartbeat: the input's watermark moves on without data.
    pub fn advance(&mut self, sender: &str, incarnation: u64, watermark_ns: u64) {
        let i = self.input(sender, incarnation);
        self.inputs[i].watermark_ns = self.inputs[i].watermark_ns.max(watermark_ns);
    }

    /// End of stream from an input: it no longer holds the watermark back.
    pub fn end(&mut self, sender: &str, incarnation: u64) {
        let i = self.input(sender, incarnation);
        self.inputs[i].ended = true;
    }

    /// Declares an input dead (silent too long): it leaves the minimum.
    pub fn declare_dead(&mut self, sender: &str) {
        for input in self.inputs.iter_mut().filter(|i| i.name == sender) {
            input.dead = true;
        }
    }

    /// Stops waiting for inputs that never appeared.
    pub fn waive_expected(&mut self) {
        self.waive_expected = true;
    }

    /// The input-minimum watermark: `None` while it cannot be known yet (too few inputs);
    /// `u64::MAX` when every input has ended.
    pub fn watermark_ns(&self) -> Option<u64> {
        if self.inputs.len() < self.expected && !self.waive_expected {
            return None;
        }
        Some(
            self.inputs
                .iter()
                .filter(|i| !i.ended && !i.dead)
                .map(|i| i.watermark_ns)
                .min()
                .unwrap_or(u64::MAX),
        )
    }

    /// Releases, in order, every summary at or behind the watermark.
    pub fn release(&mut self, out: &mut Vec<PacketSummary>) {
        let Some(wm) = self.watermark_ns() else {
            return;
        };
        while self.heap.peek().is_some_and(|Reverse(e)| e.ts <= wm) {
            if let Some(Reverse(e)) = self.heap.pop() {
                self.emit(e, out);
            }
        }
        self.stats.buffered = self.heap.len() as u64;
    }

    /// Releases everything (end of stream of the whole processor).
    pub fn drain(&mut self, out: &mut Vec<PacketSummary>) {
        while let Some(Reverse(e)) = self.heap.pop() {
            self.emit(e, out);
        }
        self.stats.buffered = 0;
    }

    fn emit(&mut self, e: Entry, out: &mut Vec<PacketSummary>) {
        self.released_ts = self.released_ts.max(e.ts);
        self.stats.released += 1;
        out.push(e.summary);
    }

    pub fn stats(&self) -> MergeStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ts: u64) -> PacketSummary {
        PacketSummary {
            ts_ns: ts,
            ..PacketSummary::default()
        }
    }

    fn ts(v: &[PacketSummary]) -> Vec<u64> {
        v.iter().map(|s| s.ts_ns).collect()
    }

    #[test]
    fn merges_two_inputs_in_time_order_behind_the_watermark() {
        let mut m = Merger::new(2, 1000);
        let mut out = Vec::new();
        m.push("a", 1, 0, 30, &[s(10), s(20), s(30)], &mut out);
        m.release(&mut out);
        assert!(out.is_empty(), "b not heard from yet");
        m.push("b", 1, 0, 25, &[s(15), s(25)], &mut out);
        m.release(&mut out);
        assert_eq!(ts(&out), [10, 15, 20, 25]);
        out.clear();
        m.end("b", 1);
        m.release(&mut out);
        assert_eq!(ts(&out), [30]);
    }

    #[test]
    fn arrival_order_does_not_change_release_order() {
        let run = |a_first: bool| {
            let mut m = Merger::new(2, 1000);
            let mut out = Vec::new();
            let (a, b) = ([s(1), s(4), s(4)], [s(2), s(4), s(5)]);
            if a_first {
                m.push("a", 1, 0, 4, &a, &mut out);
                m.push("b", 1, 0, 5, &b, &mut out);
            } else {
                m.push("b", 1, 0, 5, &b, &mut out);
                m.push("a", 1, 0, 4, &a, &mut out);
            }
            m.end("a", 1);
            m.end("b", 1);
            m.release(&mut out);
            ts(&out)
        };
        assert_eq!(run(true), run(false));
        assert_eq!(run(true), [1, 2, 4, 4, 4, 5]);
    }

    #[test]
    fn cap_forces_release_and_late_data_is_counted() {
        let mut m = Merger::new(2, 2);
        let mut out = Vec::new();
        m.push("a", 1, 0, 50, &[s(10), s(20), s(30)], &mut out);
        assert_eq!((ts(&out), m.stats().forced), (vec![10], 1));
        m.push("b", 1, 0, 5, &[s(5)], &mut out);
        assert_eq!(m.stats().late, 1);
        assert_eq!(ts(&out), [10, 5]);
    }

    #[test]
    fn dead_inputs_leave_the_minimum() {
        let mut m = Merger::new(2, 100);
        let mut out = Vec::new();
        m.push("a", 1, 0, 100, &[s(100)], &mut out);
        m.advance("b", 1, 10);
        assert_eq!(m.watermark_ns(), Some(10));
        m.declare_dead("b");
        assert_eq!(m.watermark_ns(), Some(100));
        m.release(&mut out);
        assert_eq!(ts(&out), [100]);
    }
}
