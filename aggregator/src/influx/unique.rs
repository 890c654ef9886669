//! Unique point times (sans-IO).
//!
//! InfluxDB identifies a point by measurement, tag set and time: a second point with the same
//! three silently replaces the first. A spoofed SYN flood starts thousands of sessions in the
//! same microsecond, so session points take their first packet's time plus an offset in
//! `0..1000` ns derived from the uid ([`uid_offset_ns`]: the capture's microsecond precision is
//! kept), and the [`Uniquifier`] then moves any point whose (series, time) was already used one
//! nanosecond later until it is free, counting each such point as a collision.
//!
//! Deterministic: the same points in the same order get the same times, so a replayed capture
//! (or a batch written twice after a lost reply) rewrites the same points instead of adding.
//!
//! Used times are kept per series as merged runs `[start, end)`, so a point finds the first
//! free time after its own in one lookup however many points already share that instant (a
//! flood of 100,000 sessions in one microsecond is one run, not 100,000 entries).
//!
//! Memory is bounded: only runs ending within `horizon_ns` of the newest time seen are
//! remembered, and at most `cap` runs (those ending first are forgotten first). A point older
//! than what was forgotten cannot be checked against it; such points are counted as `unchecked`
//! (a collision among them is still possible, but needs two points of one series within the
//! same few nanoseconds, both that far behind the newest).

use std::collections::{BTreeMap, BTreeSet};

use super::line::Point;

/// Default: remember the last 24 hours of event time (a long session's point is stamped at
/// its first packet, up to the processors' longest timeout before it is released).
pub const DEFAULT_HORIZON_NS: u64 = 24 * 3600 * 1_000_000_000;
/// Default: at most this many remembered runs (some 100 MiB at worst, when no two points of a
/// series are adjacent in time).
pub const DEFAULT_CAP: usize = 1 << 20;

/// Offset in `0..1000` ns from a uid: FNV-1a (64-bit) of its bytes, modulo 1000. Fixed, so the
/// same on every build and host.
pub fn uid_offset_ns(uid: &str) -> u64 {
    fnv1a(uid.as_bytes()) % 1000
}

/// Counters of the uniquifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UniqueStats {
    /// Points seen.
    pub points: u64,
    /// Points whose time was moved because their (series, time) was taken.
    pub collisions: u64,
    /// Nanoseconds added in all (a point can move more than once).
    pub bumps: u64,
    /// Points older than what had been forgotten: not checked against it.
    pub unchecked: u64,
    /// Runs forgotten early because `cap` were remembered.
    pub evicted_over_cap: u64,
}

/// A [`Uniquifier`]'s state: (series hash, start, end) of each run, and the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UniqueSnapshot {
    runs: Vec<(u64, u64, u64)>,
    forgotten_below: u64,
    newest: u64,
    stats: UniqueStats,
}

/// Makes (measurement, tag set, time) unique over a window of recent points.
pub struct Uniquifier {
    horizon_ns: u64,
    cap: usize,
    /// (series hash, start) -> end (exclusive) of the runs of used times.
    runs: BTreeMap<(u64, u64), u64>,
    /// (end, series hash, start) of the same runs, oldest end first, for forgetting.
    by_end: BTreeSet<(u64, u64, u64)>,
    /// Times below this may have been forgotten.
    forgotten_below: u64,
    newest: u64,
    key: Vec<u8>,
    stats: UniqueStats,
}

impl Default for Uniquifier {
    fn default() -> Self {
        Uniquifier::new(DEFAULT_HORIZON_NS, DEFAULT_CAP)
    }
}

impl Uniquifier {
    pub fn new(horizon_ns: u64, cap: usize) -> Uniquifier {
        Uniquifier {
            horizon_ns,
            cap: cap.max(1),
            runs: BTreeMap::new(),
            by_end: BTreeSet::new(),
            forgotten_below: 0,
            newest: 0,
            key: Vec::with_capacity(128),
            stats: UniqueStats::default(),
        }
    }

    /// Moves `p.ts_ns` forward to the first time at or after it that its series has not used
    /// (so by one ns per point already there), then remembers it. Returns how many ns it moved.
    pub fn place(&mut self, p: &mut Point) -> u64 {
        self.stats.points += 1;
        p.series_key(&mut self.key);
        // A 64-bit hash stands for the series: two series sharing a hash can only cause a
        // needless move, never a lost point.
        let series = fnv1a(&self.key);
        if p.ts_ns < self.forgotten_below {
            self.stats.unchecked += 1;
        }
        let t0 = p.ts_ns;
        // The run at or before t0, if it is this series'.
        let before = self
            .runs
            .range(..=(series, t0))
            .next_back()
            .filter(|((s, _), _)| *s == series)
            .map(|(&(_, start), &end)| (start, end));
        let t = match before {
            Some((_, end)) if end > t0 => end,
            _ => t0,
        };
        let moved = t - t0;
        if moved > 0 {
            self.stats.collisions += 1;
            self.stats.bumps += moved;
        }
        p.ts_ns = t;
        // Record [t, t+1), merged with the run ending at t and the one starting at t+1.
        let mut start = t;
        let mut end = t.saturating_add(1);
        if let Some((s, e)) = before.filter(|&(_, e)| e == t) {
            self.remove(series, s, e);
            start = s;
        }
        if let Some(&e) = self.runs.get(&(series, end)) {
            self.remove(series, end, e);
            end = e;
        }
        self.runs.insert((series, start), end);
        self.by_end.insert((end, series, start));
        self.newest = self.newest.max(t);
        self.forget();
        moved
    }

    pub fn stats(&self) -> UniqueStats {
        self.stats
    }

    /// What a checkpoint keeps: the times used (the runs remembered) and the counters. A
    /// uniquifier restored from it gives the next points the times this one would.
    pub fn snapshot(&self) -> UniqueSnapshot {
        UniqueSnapshot {
            runs: self
                .runs
                .iter()
                .map(|(&(s, start), &end)| (s, start, end))
                .collect(),
            forgotten_below: self.forgotten_below,
            newest: self.newest,
            stats: self.stats,
        }
    }

    /// Takes the state of `s` (its horizon and cap stay this one's).
    pub fn restore(&mut self, s: UniqueSnapshot) {
        self.runs = s
            .runs
            .iter()
            .map(|&(s, start, end)| ((s, start), end))
            .collect();
        self.by_end = s
            .runs
            .iter()
            .map(|&(s, start, end)| (end, s, start))
            .collect();
        self.forgotten_below = s.forgotten_below;
        self.newest = s.newest;
        self.stats = s.stats;
        self.forget();
    }

    /// Runs remembered now.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    fn remove(&mut self, series: u64, start: u64, end: u64) {
        self.runs.remove(&(series, start));
        self.by_end.remove(&(end, series, start));
    }

    fn forget(&mut self) {
        let limit = self.newest.saturating_sub(self.horizon_ns);
        while let Some(&(end, series, start)) = self.by_end.first() {
            let over_cap = self.runs.len() > self.cap;
            if end > limit && !over_cap {
                break;
            }
            if end > limit {
                self.stats.evicted_over_cap += 1;
            }
            self.remove(series, start, end);
            self.forgotten_below = self.forgotten_below.max(end);
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::line::Field;
    use super::*;

    fn point(proto: &str, ts: u64) -> Point {
        Point::new("tapflow_conn", ts)
            .tag("proto", proto)
            .field("n", Field::Int(1))
    }

    /// Times given to `points` (proto, base time, uid) in order.
    fn run(u: &mut Uniquifier, points: &[(&str, u64, String)]) -> Vec<u64> {
        points
            .iter()
            .map(|(proto, ts, uid)| {
                let mut p = point(proto, ts + uid_offset_ns(uid));
                u.place(&mut p);
                p.ts_ns
            })
            .collect()
    }

    #[test]
    fn offsets_are_fixed_and_spread() {
        assert_eq!(uid_offset_ns(""), 0xcbf2_9ce4_8422_2325 % 1000);
        let offsets: HashSet<u64> = (0..5000).map(|i| uid_offset_ns(&format!("C{i}"))).collect();
        assert!(offsets.iter().all(|&o| o < 1000));
        assert!(offsets.len() > 900, "{}", offsets.len());
    }

    #[test]
    fn thousands_in_one_microsecond_get_distinct_times() {
        let t0 = 1_700_000_000_123_456_000;
        let pts: Vec<(&str, u64, String)> = (0..5000)
            .map(|i| ("tcp", t0, format!("Cuid{i}")))
            .chain((0..500).map(|i| ("udp", t0, format!("Cuid{i}"))))
            .collect();
        let mut u = Uniquifier::default();
        let times = run(&mut u, &pts);
        let distinct: HashSet<(&str, u64)> =
            pts.iter().zip(&times).map(|(p, &t)| (p.0, t)).collect();
        assert_eq!(distinct.len(), pts.len());
        let s = u.stats();
        assert_eq!(s.points, 5500);
        assert!(s.collisions >= 5000 - 1000, "{s:?}");
        // Same points in the same order: same times.
        assert_eq!(run(&mut Uniquifier::default(), &pts), times);
        // udp points share uids (so offsets) with tcp ones, but another series: no collision
        // among the first 500 udp ones beyond what their own offsets cause.
        let udp: Vec<u64> = times[5000..].to_vec();
        let mut alone = Uniquifier::default();
        assert_eq!(run(&mut alone, &pts[5000..]), udp);
    }

    /// A uniquifier restored from a snapshot gives the next points the times the one it was
    /// taken from gives them (a restart from a checkpoint rewrites the same points).
    #[test]
    fn a_restored_uniquifier_gives_the_times_the_original_gives() {
        let t0 = 1_700_000_000_123_456_000;
        let pts: Vec<(&str, u64, String)> = (0..3000)
            .map(|i| {
                (
                    ["tcp", "udp"][i % 2],
                    t0 + (i as u64 / 700) * 1000,
                    format!("C{i}"),
                )
            })
            .collect();
        let mut through = Uniquifier::new(5_000, 64);
        let want = run(&mut through, &pts);
        for split in [0, 1, 999, 2100, 3000] {
            let mut a = Uniquifier::new(5_000, 64);
            let mut got = run(&mut a, &pts[..split]);
            let bytes = rmp_serde::to_vec(&a.snapshot()).expect("encode");
            let mut b = Uniquifier::new(5_000, 64);
            b.restore(rmp_serde::from_slice(&bytes).expect("decode"));
            got.extend(run(&mut b, &pts[split..]));
            assert_eq!(got, want, "split at {split}");
            assert_eq!(b.stats(), through.stats());
            assert_eq!(b.len(), through.len());
        }
        let s = through.stats();
        assert!(s.collisions > 100 && s.evicted_over_cap > 0, "{s:?}");
    }

    #[test]
    fn same_time_other_series_is_no_collision() {
        let mut u = Uniquifier::default();
        let mut a = point("tcp", 10);
        let mut b = point("udp", 10);
        let mut c = point("tcp", 10);
        assert_eq!(
            (u.place(&mut a), u.place(&mut b), u.place(&mut c)),
            (0, 0, 1)
        );
        assert_eq!((a.ts_ns, b.ts_ns, c.ts_ns), (10, 10, 11));
        assert_eq!(u.stats().collisions, 1);
    }

    #[test]
    fn runs_merge_and_a_flood_is_one_run() {
        let mut u = Uniquifier::default();
        let placed: Vec<u64> = [5, 7, 6, 5, 5, 9, 3]
            .into_iter()
            .map(|t| {
                let mut p = point("tcp", t);
                u.place(&mut p);
                p.ts_ns
            })
            .collect();
        assert_eq!(placed, [5, 7, 6, 8, 9, 10, 3]);
        assert_eq!(u.len(), 2, "[3,4) and [5,11)");
        let s = u.stats();
        assert_eq!((s.collisions, s.bumps), (3, 3 + 4 + 1));

        let mut u = Uniquifier::default();
        for _ in 0..100_000 {
            u.place(&mut point("tcp", 1_000));
        }
        assert_eq!(u.len(), 1);
        let mut p = point("tcp", 1_000);
        assert_eq!(u.place(&mut p), 100_000);
    }

    #[test]
    fn horizon_and_cap_bound_memory() {
        let mut u = Uniquifier::new(100, 1000);
        for t in 0..50 {
            u.place(&mut point("tcp", t * 10));
        }
        // Newest 490: only runs ending after 390 are kept (390, 400, ..., 490).
        assert_eq!(u.len(), 11);
        let mut late = point("tcp", 0);
        assert_eq!(u.place(&mut late), 0, "forgotten: not a collision");
        assert_eq!(u.stats().unchecked, 1);

        let mut u = Uniquifier::new(u64::MAX, 8);
        for t in 0..20 {
            u.place(&mut point("tcp", t * 2));
        }
        assert_eq!(u.len(), 8);
        assert_eq!(u.stats().evicted_over_cap, 12);
    }
}
