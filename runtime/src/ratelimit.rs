//! Rate-limited logging of events outside input can repeat per message (undecodable or
//! misrouted messages from a peer, sends that fail while a peer is slow): the first of each
//! kind is logged, then at most one line per interval ([`LOG_INTERVAL`]) and, if asked, one per
//! `every` occurrences, each carrying how many were suppressed since the line before and the
//! total; at exit, one summary line per kind that suppressed anything. The counters that count
//! every event stay where they are: this only decides which events are also logged.
//!
//! Sans-IO: the time is passed in. Keyed by a kind from a small fixed set (an enum, or a
//! `&'static str` reason such as `DecodeError::reason`), never by a string a peer chose, so
//! its memory is bounded by that set.

use std::time::{Duration, Instant};

/// At most one line per kind per this long, after the first.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// An occurrence the limiter lets through, with what to say about the ones it did not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Logged {
    /// Occurrences of this kind not logged since the last line.
    pub suppressed: u64,
    /// Occurrences of this kind so far, this one included.
    pub total: u64,
}

/// A kind that suppressed occurrences since its last line (for the summary at exit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suppressed<K> {
    pub kind: K,
    pub suppressed: u64,
    pub total: u64,
}

/// Decides which occurrences of each kind are logged. See the module documentation.
#[derive(Debug)]
pub struct RateLimit<K> {
    interval: Duration,
    every: Option<u64>,
    kinds: Vec<Entry<K>>,
}

#[derive(Debug)]
struct Entry<K> {
    kind: K,
    total: u64,
    suppressed: u64,
    last_logged: Instant,
}

impl<K> Default for RateLimit<K> {
    fn default() -> Self {
        RateLimit::new(LOG_INTERVAL)
    }
}

impl<K> RateLimit<K> {
    /// Logs the first of each kind, then at most one per `interval`.
    pub fn new(interval: Duration) -> RateLimit<K> {
        RateLimit {
            interval,
            every: None,
            kinds: Vec::new(),
        }
    }

    /// Also logs every `n`th occurrence of a kind (counted since its last line), however
    /// soon after the last line. `n` of 0 or 1 logs every occurrence.
    pub fn every(mut self, n: u64) -> RateLimit<K> {
        self.every = Some(n.max(1));
        self
    }
}

impl<K: Copy + Eq> RateLimit<K> {
    /// One occurrence of `kind` at `now`: `Some` when it is to be logged.
    pub fn hit(&mut self, kind: K, now: Instant) -> Option<Logged> {
        let (interval, every) = (self.interval, self.every);
        let Some(e) = self.kinds.iter_mut().find(|e| e.kind == kind) else {
            self.kinds.push(Entry {
                kind,
                total: 1,
                suppressed: 0,
                last_logged: now,
            });
            return Some(Logged {
                suppressed: 0,
                total: 1,
            });
        };
        e.total += 1;
        let due = now.saturating_duration_since(e.last_logged) >= interval
            || every.is_some_and(|n| e.suppressed + 1 >= n);
        if !due {
            e.suppressed += 1;
            return None;
        }
        let logged = Logged {
            suppressed: e.suppressed,
            total: e.total,
        };
        e.suppressed = 0;
        e.last_logged = now;
        Some(logged)
    }

    /// Occurrences of `kind` so far.
    pub fn total(&self, kind: K) -> u64 {
        self.kinds
            .iter()
            .find(|e| e.kind == kind)
            .map_or(0, |e| e.total)
    }

    /// The kinds that suppressed occurrences since their last line, in the order first seen;
    /// their suppressed counts start again from zero.
    pub fn take_suppressed(&mut self) -> Vec<Suppressed<K>> {
        let mut out = Vec::new();
        for e in self.kinds.iter_mut().filter(|e| e.suppressed > 0) {
            out.push(Suppressed {
                kind: e.kind,
                suppressed: e.suppressed,
                total: e.total,
            });
            e.suppressed = 0;
        }
        out
    }
}

impl<K: Copy + Eq + std::fmt::Debug> RateLimit<K> {
    /// The summary at exit: one WARN line per kind that suppressed anything, saying `what`
    /// the lines were about (`"undecodable messages from processors: not every one logged
    /// (rate limit), summary at exit kind=\"truncated\" suppressed=16666 total=16667"`).
    pub fn log_suppressed(&mut self, what: &str) {
        for s in self.take_suppressed() {
            tracing::warn!(kind = ?s.kind, suppressed = s.suppressed, total = s.total,
                "{what}: not every one logged (rate limit), summary at exit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// Feeds `hits` (seconds after the start, kind) and returns what was logged, as
    /// (hit index, suppressed, total).
    fn check(
        limit: &mut RateLimit<&'static str>,
        hits: &[(u64, &'static str)],
    ) -> Vec<(usize, u64, u64)> {
        let t0 = Instant::now();
        hits.iter()
            .enumerate()
            .filter_map(|(i, &(s, kind))| {
                limit
                    .hit(kind, t0 + SEC * s as u32)
                    .map(|l| (i, l.suppressed, l.total))
            })
            .collect()
    }

    #[test]
    fn the_first_is_logged_then_one_per_interval_with_the_suppressed_count() {
        let mut limit = RateLimit::new(10 * SEC);
        let mut hits = vec![(0, "bad"); 1000];
        hits.extend([(9, "bad"), (10, "bad"), (11, "bad"), (25, "bad")]);
        assert_eq!(
            check(&mut limit, &hits),
            vec![(0, 0, 1), (1001, 1000, 1002), (1003, 1, 1004)]
        );
        assert_eq!(limit.total("bad"), 1004);
        assert_eq!(limit.take_suppressed(), vec![]);
    }

    #[test]
    fn kinds_are_limited_apart_and_summarised_at_exit() {
        let mut limit = RateLimit::new(10 * SEC);
        let hits = [(0, "a"), (0, "b"), (1, "a"), (2, "a"), (3, "b"), (4, "c")];
        assert_eq!(
            check(&mut limit, &hits),
            vec![(0, 0, 1), (1, 0, 1), (5, 0, 1)]
        );
        let summary = limit.take_suppressed();
        assert_eq!(
            summary,
            vec![
                Suppressed {
                    kind: "a",
                    suppressed: 2,
                    total: 3
                },
                Suppressed {
                    kind: "b",
                    suppressed: 1,
                    total: 2
                },
            ]
        );
        // Taken: the next summary has nothing until more are suppressed.
        assert_eq!(limit.take_suppressed(), vec![]);
        assert_eq!(limit.total("c"), 1);
        assert_eq!(limit.total("d"), 0);
    }

    #[test]
    fn every_nth_is_logged_too() {
        let mut limit = RateLimit::new(10 * SEC).every(100);
        let hits = vec![(0, "x"); 250];
        assert_eq!(
            check(&mut limit, &hits),
            vec![(0, 0, 1), (100, 99, 101), (200, 99, 201)]
        );
        assert_eq!(
            limit.take_suppressed(),
            vec![Suppressed {
                kind: "x",
                suppressed: 49,
                total: 250
            }]
        );
    }

    #[test]
    fn time_going_backwards_is_not_an_interval() {
        let mut limit = RateLimit::new(10 * SEC);
        let t0 = Instant::now() + 100 * SEC;
        assert!(limit.hit(1u8, t0).is_some());
        assert!(limit.hit(1u8, t0 - 50 * SEC).is_none());
        assert_eq!(
            limit.hit(1u8, t0 + 10 * SEC),
            Some(Logged {
                suppressed: 1,
                total: 3
            })
        );
    }
}
