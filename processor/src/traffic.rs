//! Per-window traffic partials (sans-IO): packets, IP bytes and flows started per 60 s window of
//! packet time, per collector input and protocol, handed to the aggregator once the merge's
//! watermark has passed the window; and the packet-time gaps in which a collector was dead or
//! restarting, which make the windows they overlap incomplete.

use std::collections::{BTreeMap, VecDeque};

use tapflow_proto::upstream::TrafficPartial;

/// Traffic keys (window, collector, protocol) held at most; past it packets are counted as
/// `traffic_keys_over_cap`, not kept.
const KEYS_CAP: usize = 100_000;
/// Gaps remembered at most; past it the oldest go.
const GAPS_CAP: usize = 1024;
const WINDOW_NS: u64 = 60_000_000_000;

#[derive(Default)]
pub struct Traffic {
    /// (window start, merge input, IP protocol) -> packets, bytes, flows started.
    windows: BTreeMap<(u64, u32, u8), [u64; 3]>,
    /// Windows below this were handed over; a packet for one is late.
    done_to: u64,
    pub late: u64,
    pub over_cap: u64,
    /// (sender, from, to): packet time in which the sender's data is missing; `to` is
    /// u64::MAX while it stays away.
    gaps: VecDeque<(String, u64, u64)>,
}

impl Traffic {
    pub fn new() -> Traffic {
        Traffic::default()
    }

    /// Counts one packet of `input` (a merge input id); `started` when it created a flow.
    pub fn count(&mut self, ts_ns: u64, input: u32, proto: u8, ip_len: u32, started: bool) {
        let window = ts_ns / WINDOW_NS * WINDOW_NS;
        if window < self.done_to {
            self.late += 1;
            return;
        }
        let key = (window, input, proto);
        if self.windows.len() >= KEYS_CAP && !self.windows.contains_key(&key) {
            self.over_cap += 1;
            return;
        }
        let e = self.windows.entry(key).or_default();
        e[0] += 1;
        e[1] += u64::from(ip_len);
        e[2] += u64::from(started);
    }

    /// Notes that `sender`'s data is missing from `from` on.
    pub fn open_gap(&mut self, sender: &str, from: u64) {
        if self.gaps.len() >= GAPS_CAP {
            self.gaps.pop_front();
        }
        self.gaps.push_back((sender.to_owned(), from, u64::MAX));
    }

    /// `sender` is back: its open gaps end at `to`.
    pub fn close_gaps(&mut self, sender: &str, to: u64) {
        for g in self.gaps.iter_mut() {
            if g.0 == sender && g.2 == u64::MAX {
                g.2 = to.max(g.1);
            }
        }
    }

    /// Partials of the windows that end at or before `upto` (every window with u64::MAX),
    /// named by `name` (merge input -> collector), each marked incomplete if a gap overlaps it.
    pub fn finished(&mut self, upto: u64, name: impl Fn(u32) -> String) -> Vec<TrafficPartial> {
        let done: Vec<(u64, u32, u8)> = if upto == u64::MAX {
            self.windows.keys().copied().collect()
        } else {
            self.windows
                .range(..(upto / WINDOW_NS * WINDOW_NS, 0, 0))
                .map(|(k, _)| *k)
                .collect()
        };
        let mut out = Vec::with_capacity(done.len());
        for key in done {
            let Some([packets, bytes, flows]) = self.windows.remove(&key) else {
                continue;
            };
            let (start, end) = (key.0, key.0.saturating_add(WINDOW_NS));
            // A zero-length gap (a quick restart) marks the window it falls in.
            let complete = !self
                .gaps
                .iter()
                .any(|&(_, from, to)| from < end && (to > start || to == from && to >= start));
            out.push(TrafficPartial {
                window_start_ns: start,
                window_s: (WINDOW_NS / 1_000_000_000) as u32,
                collector: name(key.1),
                proto: key.2,
                packets,
                bytes,
                flows,
                complete,
            });
            self.done_to = self.done_to.max(end);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn name(i: u32) -> String {
        format!("tap{i}")
    }

    #[test]
    fn windows_close_behind_the_watermark_and_late_packets_are_counted() {
        let mut t = Traffic::new();
        t.count(10 * S, 0, 6, 100, true);
        t.count(70 * S, 0, 6, 100, false);
        assert!(t.finished(59 * S, name).is_empty());
        let first = t.finished(61 * S, name);
        assert_eq!(first.len(), 1);
        assert_eq!(
            (first[0].packets, first[0].bytes, first[0].flows),
            (1, 100, 1)
        );
        assert!(first[0].complete);
        t.count(20 * S, 0, 6, 100, false);
        assert_eq!(t.late, 1);
        assert_eq!(t.finished(u64::MAX, name).len(), 1);
    }

    #[test]
    fn windows_a_gap_overlaps_are_incomplete() {
        let mut t = Traffic::new();
        for w in 0..4 {
            t.count(w * 60 * S + S, 0, 17, 50, false);
        }
        t.open_gap("tap1", 70 * S);
        t.close_gaps("tap1", 130 * S);
        // A restart with no time lost still marks its window.
        t.open_gap("tap1", 200 * S);
        t.close_gaps("tap1", 200 * S);
        let complete: Vec<bool> = t
            .finished(u64::MAX, name)
            .iter()
            .map(|p| p.complete)
            .collect();
        assert_eq!(complete, [true, false, false, false]);
    }

    #[test]
    fn keys_over_the_cap_are_counted_not_kept() {
        let mut t = Traffic::new();
        for i in 0..(KEYS_CAP as u32 + 10) {
            t.count(S, i, 6, 40, false);
        }
        assert_eq!(t.over_cap, 10);
    }
}
