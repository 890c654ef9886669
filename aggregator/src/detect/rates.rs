//! Peak rates: packets and bytes to one victim per short interval (100 ms by default) of a
//! flood window, so a burst far shorter than the window is seen at its own rate (sans-IO).
//!
//! Computed from the ordered record stream, like every detector here, so the figures are the
//! same with any number of processors and collectors. A record's packets are placed where its
//! timing says they were: a direction with one packet at the record's first packet (the
//! originator's) or last packet (the responder's), a direction with several spread evenly over
//! the record's span. Floods are made of short records (a spoofed source sends one or two
//! packets), which this places exactly.

/// Packets and bytes per interval of one flood window, for one victim. Most keys (a spoofed
/// source answered once) touch one interval: held inline, the rest in a dense boxed range.
const F32_EXACT: f64 = (1u32 << 24) as f64;

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) enum Bins {
    #[default]
    Empty,
    /// Interval index within the window, packets, bytes.
    One(u32, f32, f32),
    /// Not boxed: one allocation (the intervals), not two.
    Many(Dense),
}

impl Bins {
    /// Adds `pkts` packets and `bytes` bytes to interval `i`.
    pub fn add(&mut self, i: u32, pkts: f64, bytes: f64) {
        match self {
            Bins::Empty if pkts < F32_EXACT && bytes < F32_EXACT => {
                *self = Bins::One(i, pkts as f32, bytes as f32)
            }
            Bins::Empty => *self = Bins::Many(Dense::from_one(i, pkts, bytes, 1)),
            // Whole counts are exact in f32 below 2^24: past it, or in another interval, the
            // key moves to f64.
            Bins::One(j, p, b)
                if *j == i
                    && f64::from(*p) + pkts < F32_EXACT
                    && f64::from(*b) + bytes < F32_EXACT =>
            {
                *p = (f64::from(*p) + pkts) as f32;
                *b = (f64::from(*b) + bytes) as f32;
            }
            Bins::One(j, p, b) => {
                let (j, p, b) = (*j, f64::from(*p), f64::from(*b));
                let mut d = Dense::from_one(j, p, b, j.abs_diff(i) as usize + 1);
                d.add(i, pkts, bytes);
                *self = Bins::Many(d);
            }
            Bins::Many(d) => d.add(i, pkts, bytes),
        }
    }

    /// The largest packets and the largest bytes any one interval holds.
    pub fn peak(&self) -> (f64, f64) {
        match self {
            Bins::Empty => (0.0, 0.0),
            Bins::One(_, p, b) => (f64::from(*p), f64::from(*b)),
            Bins::Many(d) => d.peak(),
        }
    }

    /// Adds `pkts` and `bytes` to each interval of [from, to).
    fn add_range(&mut self, from: u32, to: u32, pkts: f64, bytes: f64) {
        let mut d = match std::mem::take(self) {
            Bins::Many(d) => d,
            Bins::Empty => Dense::from_one(from, 0.0, 0.0, (to - from) as usize + 1),
            Bins::One(j, p, b) => {
                let n = (to.max(j) - from.min(j)) as usize + 1;
                Dense::from_one(j, f64::from(p), f64::from(b), n)
            }
        };
        d.add_range(from, to, pkts, bytes);
        *self = Bins::Many(d);
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Dense {
    /// Index of `bins[0]`.
    first: u32,
    /// Per interval from `first`: what was added to it alone, and the change, from the
    /// interval before, of what even spreads add (a difference array: a record spread over
    /// many intervals costs two entries, not one per interval).
    bins: Vec<Cell>,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Cell {
    pkts: f64,
    bytes: f64,
    dpkts: f64,
    dbytes: f64,
}

impl Dense {
    /// Interval `i` with `pkts` and `bytes`, room for `n` intervals.
    fn from_one(i: u32, pkts: f64, bytes: f64, n: usize) -> Dense {
        let mut bins = Vec::with_capacity(n);
        bins.push(Cell {
            pkts,
            bytes,
            ..Cell::default()
        });
        Dense { first: i, bins }
    }

    fn cell(&mut self, i: u32) -> &mut Cell {
        if i < self.first {
            let grow = (self.first - i) as usize;
            self.bins
                .splice(0..0, std::iter::repeat_n(Cell::default(), grow));
            self.first = i;
        }
        let k = (i - self.first) as usize;
        if k >= self.bins.len() {
            self.bins.resize(k + 1, Cell::default());
        }
        &mut self.bins[k]
    }

    fn add(&mut self, i: u32, pkts: f64, bytes: f64) {
        let c = self.cell(i);
        c.pkts += pkts;
        c.bytes += bytes;
    }

    /// Adds `pkts` and `bytes` to each interval of [from, to).
    fn add_range(&mut self, from: u32, to: u32, pkts: f64, bytes: f64) {
        let c = self.cell(from);
        c.dpkts += pkts;
        c.dbytes += bytes;
        let c = self.cell(to);
        c.dpkts -= pkts;
        c.dbytes -= bytes;
    }

    fn peak(&self) -> (f64, f64) {
        let (mut run_p, mut run_b, mut max_p, mut max_b) = (0.0, 0.0, 0.0f64, 0.0f64);
        for c in &self.bins {
            run_p += c.dpkts;
            run_b += c.dbytes;
            max_p = max_p.max(c.pkts + run_p);
            max_b = max_b.max(c.bytes + run_b);
        }
        (max_p, max_b)
    }
}

/// What one [`Span::place`] was given, kept to be placed later.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct Placed {
    first: u64,
    last: u64,
    at: u64,
    pkts: u64,
    bytes: u64,
}

/// Placements a key holds back before it places them (then every later one at once).
const HELD: usize = 32;

/// The peak-rate intervals of one victim in one flood window, placed only when needed.
///
/// Placements that spread over several intervals (or follow one held back) wait in a short
/// list, in order, and are placed in that same order, so into the same sums, when the list
/// is full (then every later one at once: the list stays bounded) or the peak is asked for.
/// The peak is asked for only where the window's total could make one, which most keys' never
/// does: their spread records cost a push, not interval sums.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Peaks {
    bins: Bins,
    held: Vec<Placed>,
    /// The list filled once: every placement from then on is made at once.
    at_once: bool,
}

impl Peaks {
    /// [`Span::place`], now or later: the same sums either way.
    pub fn place(&mut self, s: &Span, (first, last, at): (u64, u64, u64), pkts: u64, bytes: u64) {
        let one_interval = pkts == 1 || first == last;
        if self.at_once || (one_interval && self.held.is_empty()) {
            s.place(&mut self.bins, (first, last, at), pkts, bytes);
            return;
        }
        self.held.push(Placed {
            first,
            last,
            at,
            pkts,
            bytes,
        });
        if self.held.len() >= HELD {
            self.settle(s);
            self.at_once = true;
        }
    }

    /// The largest packets and bytes any one interval of `s` holds.
    pub fn peak(&mut self, s: &Span) -> (f64, f64) {
        self.settle(s);
        self.bins.peak()
    }

    /// Places what waits, in the order it came.
    fn settle(&mut self, s: &Span) {
        for p in std::mem::take(&mut self.held) {
            s.place(&mut self.bins, (p.first, p.last, p.at), p.pkts, p.bytes);
        }
    }
}

/// Where one direction's packets of a record fall inside one flood window.
pub(super) struct Span {
    /// The window: [start, start + len).
    pub start: u64,
    pub len: u64,
    /// The interval length.
    pub interval: u64,
}

impl Span {
    /// Adds `pkts` packets and `bytes` bytes to `bins`: all at `at` when `pkts` is 1 (if `at`
    /// falls in this window), else spread evenly over [first, last] clipped to the window.
    pub fn place(
        &self,
        bins: &mut Bins,
        (first, last, at): (u64, u64, u64),
        pkts: u64,
        bytes: u64,
    ) {
        let end = self.start + self.len;
        if pkts == 1 || first == last {
            if (self.start..end).contains(&at) {
                bins.add(self.index(at), pkts as f64, bytes as f64);
            }
            return;
        }
        let (lo, hi) = (first.max(self.start), last.min(end));
        if lo >= hi {
            return;
        }
        let span = (last - first) as f64;
        let (p, b) = (pkts as f64 / span, bytes as f64 / span);
        let (i_lo, i_hi) = (self.index(lo), self.index(hi - 1));
        let start_of = |i: u32| self.start + u64::from(i) * self.interval;
        if i_lo == i_hi {
            let d = (hi - lo) as f64;
            bins.add(i_lo, p * d, b * d);
            return;
        }
        let d = (start_of(i_lo + 1) - lo) as f64;
        bins.add(i_lo, p * d, b * d);
        let d = (hi - start_of(i_hi)) as f64;
        bins.add(i_hi, p * d, b * d);
        if i_hi > i_lo + 1 {
            let d = self.interval as f64;
            bins.add_range(i_lo + 1, i_hi, p * d, b * d);
        }
    }

    fn index(&self, ns: u64) -> u32 {
        u32::try_from((ns - self.start) / self.interval).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::{Bins, Peaks, Span, HELD};

    const MS: u64 = 1_000_000;

    #[test]
    fn one_packet_lands_where_it_was_sent_and_spans_spread_evenly() {
        let s = Span {
            start: 1000 * MS,
            len: 5000 * MS,
            interval: 100 * MS,
        };
        let mut b = Bins::default();
        assert_eq!(b.peak(), (0.0, 0.0));
        // 30 one-packet records inside one 100 ms interval.
        for k in 0..30 {
            let at = 1250 * MS + k * MS;
            s.place(&mut b, (at, at, at), 1, 100);
        }
        assert_eq!(b.peak(), (30.0, 3000.0));
        // A 10-packet record over 1 s adds one packet to each of 10 intervals.
        s.place(&mut b, (2000 * MS, 3000 * MS, 2000 * MS), 10, 1000);
        assert!(matches!(b, Bins::Many(_)));
        let (p, bytes) = b.peak();
        assert_eq!((p, bytes), (30.0, 3000.0));
        // An earlier interval grows the range downwards.
        for _ in 0..31 {
            s.place(&mut b, (1000 * MS, 1000 * MS, 1000 * MS), 1, 10);
        }
        assert_eq!(b.peak(), (31.0, 3000.0));
        // A record over [2.05 s, 3.05 s): half a packet in its first and last intervals, one
        // in each between (a difference array), whatever else is there.
        let mut c = Bins::default();
        s.place(&mut c, (2050 * MS, 3050 * MS, 2050 * MS), 10, 1000);
        assert_eq!(c.peak(), (1.0, 100.0));
        s.place(&mut c, (2960 * MS, 2960 * MS, 2960 * MS), 1, 50);
        assert_eq!(c.peak(), (2.0, 150.0));
        // A packet outside the window is not here.
        s.place(&mut b, (7000 * MS, 7000 * MS, 7000 * MS), 1, 10);
        assert_eq!(b.peak(), (31.0, 3000.0));
    }

    #[test]
    fn peaks_held_back_are_the_sums_placed_at_once_in_any_mix_and_count() {
        let s = Span {
            start: 1000 * MS,
            len: 5000 * MS,
            interval: 100 * MS,
        };
        // Spread and one-packet placements interleaved, below, at and past the list's length,
        // the peak asked for at each count (bit-equal f64 sums: the same adds, the same order).
        for n in [1, 2, HELD - 1, HELD, HELD + 1, 3 * HELD + 5] {
            let (mut at_once, mut held) = (Bins::default(), Peaks::default());
            let mut x = 7u64;
            for k in 0..n as u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let first = 900 * MS + (x >> 33) % (5200 * MS);
                let (last, pkts) = if k % 3 == 0 {
                    (first, 1)
                } else {
                    (first + (x >> 20) % (900 * MS), 2 + (x >> 50) % 40)
                };
                let bytes = pkts * (60 + (x >> 40) % 1400);
                s.place(&mut at_once, (first, last, first), pkts, bytes);
                held.place(&s, (first, last, first), pkts, bytes);
            }
            assert!(held.held.len() < HELD, "n {n}: the list is bounded");
            let (p, b) = at_once.peak();
            assert!(p > 0.0, "n {n}: nothing placed");
            let (hp, hb) = held.peak(&s);
            assert_eq!(
                (hp.to_bits(), hb.to_bits()),
                (p.to_bits(), b.to_bits()),
                "n {n}"
            );
        }
    }
}
