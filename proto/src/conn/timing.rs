//! Latency and jitter of one connection (issue 15): the handshake's round trip split as Argus
//! splits it (`synack`, `ackdat`), inter-arrival times per direction, and data round trips
//! (a data segment to the first acknowledgement covering it, Karn's rule). Everything is held
//! as exact integers in nanoseconds, so interim records, split records and any number of
//! processors give identical output; means and standard deviations are computed only when a
//! record is printed.

use serde::{Deserialize, Serialize};

/// Exact statistics of a set of durations in nanoseconds: count, sum, sum of squares, min,
/// max. Two sets merge exactly ([`DurStats::merge`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurStats {
    pub n: u64,
    pub sum: u64,
    pub sum_sq: u128,
    /// Meaningless when `n == 0`.
    pub min: u64,
    pub max: u64,
}

impl DurStats {
    /// Adds one duration.
    pub fn add(&mut self, ns: u64) {
        if self.n == 0 || ns < self.min {
            self.min = ns;
        }
        self.max = self.max.max(ns);
        self.n += 1;
        self.sum = self.sum.saturating_add(ns);
        self.sum_sq = self.sum_sq.saturating_add(u128::from(ns) * u128::from(ns));
    }

    /// Adds every duration of `other`.
    pub fn merge(&mut self, other: &DurStats) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 || other.min < self.min {
            self.min = other.min;
        }
        self.max = self.max.max(other.max);
        self.n += other.n;
        self.sum = self.sum.saturating_add(other.sum);
        self.sum_sq = self.sum_sq.saturating_add(other.sum_sq);
    }

    /// The mean in nanoseconds, `None` for an empty set.
    pub fn mean_ns(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum as f64 / self.n as f64)
    }

    /// The sample standard deviation in nanoseconds (n - 1 in the denominator), from 2 values.
    pub fn stddev_ns(&self) -> Option<f64> {
        if self.n < 2 {
            return None;
        }
        let n = self.n as f64;
        let mean = self.sum as f64 / n;
        let var = (self.sum_sq as f64 - n * mean * mean) / (n - 1.0);
        Some(var.max(0.0).sqrt())
    }
}

/// One connection's timing, carried on [`super::ConnRecord::timing`] when anything in it is
/// defined.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// SYN/ACK time minus the time of the SYN it answers (the last SYN before it whose
    /// sequence number + 1 equals the SYN/ACK's acknowledgement).
    pub tcp_synack_ns: Option<u64>,
    /// Time of the ACK completing the handshake (acknowledging the SYN/ACK's sequence + 1)
    /// minus the SYN/ACK's.
    pub tcp_ackdat_ns: Option<u64>,
    /// Gaps between consecutive packets of the originator (n - 1 gaps for n packets).
    pub orig_iat: DurStats,
    /// Gaps between consecutive packets of the responder.
    pub resp_iat: DurStats,
    /// The originator's data segments to the responder's first acknowledgement covering them.
    pub orig_ack_rtt: DurStats,
    /// The responder's data segments to the originator's first acknowledgement covering them.
    pub resp_ack_rtt: DurStats,
    /// A round trip above was measured between packets that came from different collectors
    /// (taps): clock skew between taps is in it.
    pub rtt_cross_tap: bool,
}

impl Timing {
    /// `tcp_synack + tcp_ackdat`, when both are defined.
    pub fn tcp_rtt_ns(&self) -> Option<u64> {
        Some(self.tcp_synack_ns?.saturating_add(self.tcp_ackdat_ns?))
    }

    /// Nothing defined: the record carries no timing.
    pub fn is_empty(&self) -> bool {
        self.tcp_synack_ns.is_none()
            && self.tcp_ackdat_ns.is_none()
            && self.orig_iat.n == 0
            && self.resp_iat.n == 0
            && self.orig_ack_rtt.n == 0
            && self.resp_ack_rtt.n == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_exact_and_merge_as_one_set() {
        let mut all = DurStats::default();
        let (mut a, mut b) = (DurStats::default(), DurStats::default());
        for (i, v) in [5u64, 1, 9, 3, 7].into_iter().enumerate() {
            all.add(v);
            if i < 2 {
                a.add(v)
            } else {
                b.add(v)
            }
        }
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(
            (all.n, all.sum, all.sum_sq, all.min, all.max),
            (5, 25, 165, 1, 9)
        );
        assert_eq!(all.mean_ns(), Some(5.0));
        // Sample variance of 1,3,5,7,9 is 10.
        assert_eq!(all.stddev_ns(), Some(10f64.sqrt()));
    }

    #[test]
    fn undefined_until_enough_values() {
        let mut s = DurStats::default();
        assert_eq!((s.mean_ns(), s.stddev_ns()), (None, None));
        s.add(4);
        assert_eq!((s.mean_ns(), s.stddev_ns()), (Some(4.0), None));
        let t = Timing {
            tcp_synack_ns: Some(3),
            ..Timing::default()
        };
        assert_eq!(t.tcp_rtt_ns(), None);
        assert!(!t.is_empty() && Timing::default().is_empty());
    }
}
