//! Event-time merge of several collectors' summaries (sans-IO).
//!
//! Each input (one collector incarnation) is a FIFO in the order the collector read its
//! packets, and is never reordered: the merge only interleaves inputs, taking the head with the
//! smallest (timestamp, collector name) next. A head is released once no other input can still
//! send something earlier: every other live input either has a queued head at or after it, or a
//! watermark at or past it. So the flow table sees the same sequence whatever the arrival order,
//! batch boundaries or number of processors; with one input it is a plain pass-through.
//!
//! Nothing is released before `expected` inputs have been heard from (a collector that starts
//! late must not find its packets' successors already processed), unless the buffer cap forces
//! it or the caller waives the wait. Memory is bounded by `cap` buffered summaries: past it the
//! smallest head is released early and counted as `forced`. A summary released with a time
//! below the previous release's is counted as `late` (out-of-order capture, or an input behind
//! the others); it is still processed, in its input's order, and counted against its input.
//!
//! Clock skew: each input's watermark is compared, whenever that input sends summaries, with
//! the most advanced watermark among the live inputs. The difference (how far this input's clock
//! trails the leader's, plus whatever its own reporting lags) is kept per input as the current
//! value and the maximum seen; see [`Merger::inputs`].

use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;

use siphasher::sip::SipHasher13;
use tapflow_proto::PacketSummary;

/// A queue emptied with room for more than this many summaries gives its memory back.
const TRIM_ABOVE: usize = 1 << 16;

/// Counters of the merge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub released: u64,
    pub late: u64,
    pub forced: u64,
    pub buffered: u64,
}

/// What the merge knows of one input: its clock skew and its late summaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputView<'a> {
    pub sender: &'a str,
    pub incarnation: u64,
    /// How far its watermark was behind the most advanced live input's when it last sent
    /// summaries (0 once it has ended or been declared dead).
    pub skew_ns: u64,
    /// The largest such value seen.
    pub skew_max_ns: u64,
    /// Its summaries released below an earlier release's time.
    pub late: u64,
}

pub struct Merger {
    expected: usize,
    cap: usize,
    inputs: Vec<Input>,
    index: HashMap<(String, u64), usize>,
    buffered: usize,
    released_ts: u64,
    stats: MergeStats,
    waive_expected: bool,
    origins: Vec<u32>,
}

struct Input {
    name: String,
    incarnation: u64,
    /// The same for every incarnation of one collector, distinct between collectors.
    tap: u16,
    /// Orders inputs whose heads carry the same timestamp: a fixed hash of the name, so the
    /// order is the same in every run (incarnations are not).
    rank: u64,
    queue: VecDeque<PacketSummary>,
    watermark_ns: u64,
    ended: bool,
    dead: bool,
    skew_ns: u64,
    skew_max_ns: u64,
    late: u64,
}

impl Input {
    fn live(&self) -> bool {
        !self.ended && !self.dead
    }
}

impl Merger {
    pub fn new(expected: usize, cap: usize) -> Merger {
        Merger {
            expected,
            cap: cap.max(1),
            inputs: Vec::new(),
            index: HashMap::new(),
            buffered: 0,
            released_ts: 0,
            stats: MergeStats::default(),
            waive_expected: false,
            origins: Vec::new(),
        }
    }

    fn input(&mut self, sender: &str, incarnation: u64) -> usize {
        if let Some(&i) = self.index.get(&(sender.to_owned(), incarnation)) {
            return i;
        }
        let mut h = SipHasher13::new_with_keys(0, 0);
        h.write(sender.as_bytes());
        let tap = self.inputs.iter().find(|i| i.name == sender).map_or_else(
            || {
                let mut names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                u16::try_from(names.len()).unwrap_or(u16::MAX)
            },
            |i| i.tap,
        );
        self.inputs.push(Input {
            name: sender.to_owned(),
            incarnation,
            tap,
            rank: h.finish(),
            queue: VecDeque::new(),
            watermark_ns: 0,
            ended: false,
            dead: false,
            skew_ns: 0,
            skew_max_ns: 0,
            late: 0,
        });
        self.index
            .insert((sender.to_owned(), incarnation), self.inputs.len() - 1);
        self.inputs.len() - 1
    }

    /// Queues a batch's summaries (moved out of `summaries`, which is left empty: a clone
    /// would copy every payload box) and advances the input's watermark.
    pub fn push(
        &mut self,
        sender: &str,
        incarnation: u64,
        watermark_ns: u64,
        summaries: &mut Vec<PacketSummary>,
        out: &mut Vec<PacketSummary>,
    ) {
        let i = self.input(sender, incarnation);
        let input = &mut self.inputs[i];
        input.watermark_ns = input.watermark_ns.max(watermark_ns);
        let n = summaries.len();
        if self.inputs.len() == 1
            && self.inputs[0].queue.is_empty()
            && self.buffered + n <= self.cap
            && !self.waiting_for_inputs()
        {
            // One input, nothing queued: `release` would pass the batch on as it is, in its
            // own order; it skips the queue (a copy of every summary).
            self.measure_skew(i);
            self.pass_through(summaries, out);
            return;
        }
        self.inputs[i].queue.extend(summaries.drain(..));
        if n > 0 {
            self.measure_skew(i);
        }
        self.buffered += n;
        while self.buffered > self.cap {
            match self.smallest_head() {
                Some(j) => {
                    self.stats.forced += 1;
                    self.pop(j, out);
                }
                None => break,
            }
        }
        self.stats.buffered = self.buffered as u64;
    }

    /// A heartbeat: the input's watermark moves on without data.
    pub fn advance(&mut self, sender: &str, incarnation: u64, watermark_ns: u64) {
        let i = self.input(sender, incarnation);
        self.inputs[i].watermark_ns = self.inputs[i].watermark_ns.max(watermark_ns);
    }

    /// Input `i` just sent summaries: how far is its watermark behind the most advanced live
    /// input's? Measured when the input itself sends data, so its own value is fresh: a quiet
    /// input is not charged for the time since its last message, nor for the slack a live
    /// collector's heartbeats leave (their watermark is the clock minus 1 s). Inputs that have
    /// not read a packet yet (watermark 0) neither count nor are counted.
    fn measure_skew(&mut self, i: usize) {
        let own = self.inputs[i].watermark_ns;
        if own == 0 || !self.inputs[i].live() {
            return;
        }
        let lead = self
            .inputs
            .iter()
            .filter(|x| x.live())
            .map(|x| x.watermark_ns)
            .max()
            .unwrap_or(own);
        let input = &mut self.inputs[i];
        input.skew_ns = lead.saturating_sub(own);
        input.skew_max_ns = input.skew_max_ns.max(input.skew_ns);
    }

    /// End of stream from an input: it no longer holds the others back.
    pub fn end(&mut self, sender: &str, incarnation: u64) {
        let i = self.input(sender, incarnation);
        self.inputs[i].ended = true;
        self.inputs[i].skew_ns = 0;
    }

    /// Declares an input (one incarnation of a collector) dead: silent too long, or
    /// superseded by a new incarnation. It no longer holds the others back; what it queued is
    /// still released in order. Another incarnation of the same collector stays live.
    pub fn declare_dead(&mut self, sender: &str, incarnation: u64) {
        if let Some(&i) = self.index.get(&(sender.to_owned(), incarnation)) {
            self.inputs[i].dead = true;
            self.inputs[i].skew_ns = 0;
        }
    }

    /// The index [`Merger::take_origins`] gives for an input, once it has been heard from.
    pub fn input_id(&self, sender: &str, incarnation: u64) -> Option<u32> {
        self.index
            .get(&(sender.to_owned(), incarnation))
            .map(|&i| i as u32)
    }

    /// An input declared dead spoke again: it holds the others back again.
    pub fn revive(&mut self, sender: &str, incarnation: u64) {
        let i = self.input(sender, incarnation);
        self.inputs[i].dead = false;
    }

    /// Stops waiting for inputs that never appeared.
    pub fn waive_expected(&mut self) {
        self.waive_expected = true;
    }

    fn waiting_for_inputs(&self) -> bool {
        self.inputs.len() < self.expected && !self.waive_expected
    }

    /// The input-minimum watermark: `None` while too few inputs have been heard from;
    /// `u64::MAX` when every input has ended.
    pub fn watermark_ns(&self) -> Option<u64> {
        if self.waiting_for_inputs() {
            return None;
        }
        Some(
            self.inputs
                .iter()
                .filter(|i| i.live())
                .map(|i| i.watermark_ns)
                .min()
                .unwrap_or(u64::MAX),
        )
    }

    /// Releases, in merge order, every summary no input can still precede.
    pub fn release(&mut self, out: &mut Vec<PacketSummary>) {
        if self.waiting_for_inputs() {
            return;
        }
        if self.inputs.len() == 1 {
            // One input: its own order is the order.
            let n = self.inputs[0].queue.len();
            for _ in 0..n {
                self.pop(0, out);
            }
        } else {
            while let Some(j) = self.smallest_head() {
                let ts = self.inputs[j].queue.front().map_or(0, |s| s.ts_ns);
                let rank = self.inputs[j].rank;
                // An empty live input may still send something at its watermark: it blocks a
                // head after that, or at it when it would sort first.
                let blocked = self.inputs.iter().enumerate().any(|(k, input)| {
                    k != j
                        && input.live()
                        && input.queue.is_empty()
                        && (input.watermark_ns < ts
                            || (input.watermark_ns == ts && input.rank < rank))
                });
                if blocked {
                    break;
                }
                self.pop(j, out);
            }
        }
        self.stats.buffered = self.buffered as u64;
        self.trim();
    }

    /// Queues that held a burst (a skewed input's backlog: up to `cap` summaries of 128 bytes)
    /// and are empty again give their memory back instead of keeping it for good.
    fn trim(&mut self) {
        for input in &mut self.inputs {
            if input.queue.is_empty() && input.queue.capacity() > TRIM_ABOVE {
                input.queue = VecDeque::new();
            }
        }
    }

    /// Summaries the input queues have room for (their memory, in summaries).
    pub fn queue_capacity(&self) -> usize {
        self.inputs.iter().map(|i| i.queue.capacity()).sum()
    }

    /// Releases everything (end of stream of the whole processor).
    pub fn drain(&mut self, out: &mut Vec<PacketSummary>) {
        while let Some(j) = self.smallest_head() {
            self.pop(j, out);
        }
        self.stats.buffered = 0;
    }

    fn smallest_head(&self) -> Option<usize> {
        self.inputs
            .iter()
            .enumerate()
            .filter_map(|(k, input)| input.queue.front().map(|s| ((s.ts_ns, input.rank, k), k)))
            .min()
            .map(|(_, k)| k)
    }

    /// What [`Merger::release`] does to the only input's queue holding `summaries`, without
    /// the queue: the late counted, the summaries appended to `out` (`summaries` left empty).
    fn pass_through(&mut self, summaries: &mut Vec<PacketSummary>, out: &mut Vec<PacketSummary>) {
        let mut late = 0;
        for s in summaries.iter() {
            late += u64::from(s.ts_ns < self.released_ts);
            self.released_ts = self.released_ts.max(s.ts_ns);
        }
        let n = summaries.len();
        self.stats.late += late;
        self.inputs[0].late += late;
        self.stats.released += n as u64;
        self.stats.buffered = self.buffered as u64;
        if out.is_empty() {
            std::mem::swap(out, summaries);
        } else {
            out.append(summaries);
        }
        self.origins.resize(self.origins.len() + n, 0);
    }

    fn pop(&mut self, j: usize, out: &mut Vec<PacketSummary>) {
        if let Some(s) = self.inputs[j].queue.pop_front() {
            self.buffered -= 1;
            if s.ts_ns < self.released_ts {
                self.stats.late += 1;
                self.inputs[j].late += 1;
            }
            self.released_ts = self.released_ts.max(s.ts_ns);
            self.stats.released += 1;
            out.push(s);
            self.origins.push(j as u32);
        }
    }

    /// The input each released summary came from, in release order (the caller takes them in
    /// step with the summaries); see [`Merger::input_name`].
    pub fn take_origins(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.origins)
    }

    /// Hands back the emptied vector from [`Merger::take_origins`] for reuse.
    pub fn give_back_origins(&mut self, mut v: Vec<u32>) {
        v.clear();
        v.shrink_to(TRIM_ABOVE);
        self.origins = v;
    }

    /// A number naming the collector of input `i` (equal for equal names, distinct for
    /// distinct ones, up to 65,535 collectors), for the flow table's `rtt_cross_tap`.
    pub fn input_tap(&self, i: u32) -> u16 {
        self.inputs.get(i as usize).map_or(0, |input| input.tap)
    }

    /// The collector name of input `i`.
    pub fn input_name(&self, i: u32) -> &str {
        self.inputs
            .get(i as usize)
            .map_or("", |input| input.name.as_str())
    }

    pub fn stats(&self) -> MergeStats {
        self.stats
    }

    /// Every input heard from (one per collector incarnation, as the processor's link
    /// accounts are), with its skew and late counts: three integers per input.
    pub fn inputs(&self) -> impl Iterator<Item = InputView<'_>> {
        self.inputs.iter().map(|i| InputView {
            sender: &i.name,
            incarnation: i.incarnation,
            skew_ns: i.skew_ns,
            skew_max_ns: i.skew_max_ns,
            late: i.late,
        })
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
    fn queues_give_back_a_burst_once_released() {
        let mut m = Merger::new(2, 1_000_000);
        let mut out = Vec::new();
        m.push("b", 1, 0, &mut Vec::new(), &mut out);
        // `a` runs 200k summaries ahead while `b` holds the watermark back.
        let mut burst: Vec<PacketSummary> = (1..=200_000).map(s).collect();
        m.push("a", 1, 200_000, &mut burst, &mut out);
        m.release(&mut out);
        assert!(out.is_empty());
        assert!(m.queue_capacity() >= 200_000);
        assert_eq!(
            std::mem::size_of::<PacketSummary>(),
            128,
            "the size the docs give"
        );
        m.advance("b", 1, 300_000);
        m.release(&mut out);
        assert_eq!(out.len(), 200_000);
        assert!(m.queue_capacity() <= TRIM_ABOVE, "{}", m.queue_capacity());
        // Small queues keep their room (no churn of allocations per batch).
        m.push("a", 1, 300_010, &mut vec![s(300_001), s(300_002)], &mut out);
        m.release(&mut out);
        assert!(m.queue_capacity() > 0);
    }

    #[test]
    fn merges_two_inputs_in_time_order_behind_the_watermark() {
        let mut m = Merger::new(2, 1000);
        let mut out = Vec::new();
        m.push("a", 1, 30, &mut vec![s(10), s(20), s(30)], &mut out);
        m.release(&mut out);
        assert!(out.is_empty(), "b not heard from yet");
        m.push("b", 1, 25, &mut vec![s(15), s(25)], &mut out);
        m.release(&mut out);
        assert_eq!(ts(&out), [10, 15, 20, 25]);
        out.clear();
        m.end("b", 1);
        m.release(&mut out);
        assert_eq!(ts(&out), [30]);
    }

    #[test]
    fn arrival_order_and_batching_do_not_change_release_order() {
        let run = |a_first: bool, split: bool| {
            let mut m = Merger::new(2, 1000);
            let mut out = Vec::new();
            // In-order inputs (an out-of-order one is `late` by definition: see below).
            let (a, b) = ([s(1), s(3), s(4), s(4)], [s(2), s(4), s(5)]);
            let feed = |m: &mut Merger,
                        out: &mut Vec<PacketSummary>,
                        name: &str,
                        v: &[PacketSummary],
                        wm: u64| {
                if split {
                    for x in v {
                        m.push(name, 1, x.ts_ns, &mut vec![x.clone()], out);
                        m.release(out);
                    }
                } else {
                    m.push(name, 1, wm, &mut v.to_vec(), out);
                }
            };
            if a_first {
                feed(&mut m, &mut out, "a", &a, 4);
                feed(&mut m, &mut out, "b", &b, 5);
            } else {
                feed(&mut m, &mut out, "b", &b, 5);
                feed(&mut m, &mut out, "a", &a, 4);
            }
            m.end("a", 1);
            m.end("b", 1);
            m.release(&mut out);
            ts(&out)
        };
        let want = run(true, false);
        assert_eq!(run(false, false), want);
        assert_eq!(run(true, true), want);
        assert_eq!(run(false, true), want);
        assert_eq!(want.len(), 7);
    }

    #[test]
    fn one_input_passes_through_in_its_own_order() {
        let mut m = Merger::new(1, 1000);
        let mut out = Vec::new();
        m.push("a", 1, 0, &mut vec![s(10), s(5), s(20)], &mut out);
        m.release(&mut out);
        assert_eq!(ts(&out), [10, 5, 20]);
        assert_eq!(m.stats().late, 1);
    }

    /// The one-input shortcut past the queue releases what the queue would: the same
    /// summaries in the same order, the same late count, origins and statistics (the queue's
    /// path taken by a second input that has ended).
    #[test]
    fn one_input_shortcut_matches_the_queue() {
        let run = |shortcut: bool| {
            let mut m = Merger::new(if shortcut { 1 } else { 2 }, 1000);
            let (mut out, mut origins) = (Vec::new(), Vec::new());
            if !shortcut {
                m.push("a", 1, 0, &mut Vec::new(), &mut out);
                m.push("z", 1, 0, &mut Vec::new(), &mut out);
                m.end("z", 1);
            }
            let mut x = 7u64;
            for batch in 0..50u64 {
                let mut v: Vec<PacketSummary> = (0..batch % 7)
                    .map(|_| {
                        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        s(batch * 10 + (x >> 60))
                    })
                    .collect();
                m.push("a", 1, batch * 10, &mut v, &mut out);
                assert!(v.is_empty());
                m.release(&mut out);
                origins.extend(m.take_origins());
            }
            (ts(&out), origins, m.stats().late, m.stats().released)
        };
        let (fast, slow) = (run(true), run(false));
        assert_eq!(fast, slow);
        assert!(fast.2 > 0, "some late: {}", fast.2);
    }

    #[test]
    fn cap_forces_release() {
        let mut m = Merger::new(2, 2);
        let mut out = Vec::new();
        m.push("a", 1, 50, &mut vec![s(10), s(20), s(30)], &mut out);
        assert_eq!((ts(&out), m.stats().forced), (vec![10], 1));
    }

    #[test]
    fn dead_inputs_leave_the_minimum() {
        let mut m = Merger::new(2, 100);
        let mut out = Vec::new();
        m.push("a", 1, 100, &mut vec![s(100)], &mut out);
        m.advance("b", 1, 10);
        assert_eq!(m.watermark_ns(), Some(10));
        m.release(&mut out);
        assert!(out.is_empty());
        m.declare_dead("b", 1);
        assert_eq!(m.watermark_ns(), Some(100));
        m.release(&mut out);
        assert_eq!(ts(&out), [100]);
    }

    fn skews(m: &Merger) -> Vec<(String, u64, u64, u64)> {
        m.inputs()
            .map(|i| (i.sender.to_owned(), i.skew_ns, i.skew_max_ns, i.late))
            .collect()
    }

    #[test]
    fn skew_is_how_far_an_input_trails_the_leader_when_it_sends() {
        let mut m = Merger::new(2, 1000);
        let mut out = Vec::new();
        // b has not read a packet yet: neither counted nor counting.
        m.advance("b", 1, 0);
        m.push("a", 1, 5_000, &mut vec![s(5_000)], &mut out);
        assert_eq!(skews(&m), [("b".into(), 0, 0, 0), ("a".into(), 0, 0, 0)]);
        // b sends 4 units behind a; a heartbeat moves a on without measuring anything.
        m.push("b", 1, 1_000, &mut vec![s(1_000)], &mut out);
        m.advance("b", 1, 2_000);
        m.advance("a", 1, 6_000);
        m.push("b", 1, 5_500, &mut vec![s(5_500)], &mut out);
        assert_eq!(
            skews(&m),
            [("b".into(), 500, 4_000, 0), ("a".into(), 0, 0, 0)]
        );
        // Ending resets the gauge, not the maximum; an ended input no longer leads.
        m.end("a", 1);
        m.push("b", 1, 5_600, &mut vec![s(5_600)], &mut out);
        assert_eq!(skews(&m)[0], ("b".into(), 0, 4_000, 0));
    }

    #[test]
    fn late_summaries_are_counted_against_their_input() {
        // A cap of 1 forces a's summary at 100 out before b's earlier one arrives.
        let mut m = Merger::new(2, 1);
        let mut out = Vec::new();
        m.push("a", 1, 100, &mut vec![s(100), s(101)], &mut out);
        m.push("b", 1, 50, &mut vec![s(50)], &mut out);
        m.drain(&mut out);
        assert_eq!(ts(&out), [100, 50, 101]);
        let late: Vec<u64> = m.inputs().map(|i| i.late).collect();
        assert_eq!((late, m.stats().late), (vec![0, 1], 1));
    }
}
