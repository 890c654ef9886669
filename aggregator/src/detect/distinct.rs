//! A set bounded by a cap that counts what it leaves out, and the hash maps detection uses.

use std::hash::Hash;

use tapflow_proto::Addr;

/// Keys here are addresses anyone can forge: seeded per process (unlike FxHash) and several
/// times faster than the standard SipHash on them.
pub(super) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(super) type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// A set that keeps at most `cap` distinct values and counts what it had to leave out. Empty
/// and one-value sets are held inline: in a spoofed flood nearly every key (a source) has one
/// value, and a hash set per key (an allocation of ~100 bytes) was most of the aggregator's
/// memory at a million sources.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "T: serde::Serialize",
    deserialize = "T: serde::Deserialize<'de> + Eq + Hash"
))]
pub(super) enum Distinct<T> {
    #[default]
    Empty,
    One(T),
    /// Boxed so the enum, held in every map entry, is the size of a pointer or a value, not of
    /// a hash set (48 bytes): most entries are `One`.
    #[allow(clippy::box_collection)]
    Many(Box<HashSet<T>>),
}

impl<T: Hash + Eq> Distinct<T> {
    pub fn new() -> Self {
        Distinct::Empty
    }

    /// Adds `v`; false if the cap kept it out.
    pub fn add(&mut self, v: T, cap: usize) -> bool {
        match self {
            Distinct::Empty if cap >= 1 => *self = Distinct::One(v),
            Distinct::One(x) if *x == v => {}
            Distinct::Many(set) if set.len() < cap || set.contains(&v) => {
                set.insert(v);
            }
            Distinct::One(_) if cap >= 2 => {
                if let Distinct::One(x) = std::mem::replace(self, Distinct::Empty) {
                    *self = Distinct::Many(Box::new(HashSet::from_iter([x, v])));
                }
            }
            _ => return false,
        }
        true
    }

    /// Adds `v` if there is room for a new value; a no-op otherwise. The same set as
    /// [`Distinct::add`] leaves, without the lookup that only tells a value already in from
    /// one kept out (what callers that count no cap hit never ask).
    pub fn offer(&mut self, v: T, cap: usize) {
        if self.len() < cap {
            self.add(v, cap);
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Distinct::Empty => 0,
            Distinct::One(_) => 1,
            Distinct::Many(set) => set.len(),
        }
    }

    pub fn only(&self) -> Option<&T> {
        match self {
            Distinct::One(x) => Some(x),
            Distinct::Many(set) if set.len() == 1 => set.iter().next(),
            _ => None,
        }
    }

    /// Adds every value of `other`; false if the cap kept one out.
    pub fn merge(&mut self, other: &Distinct<T>, cap: usize) -> bool
    where
        T: Clone,
    {
        let mut all = true;
        match other {
            Distinct::Empty => {}
            Distinct::One(x) => all &= self.add(x.clone(), cap),
            Distinct::Many(set) => {
                for x in set.iter() {
                    all &= self.add(x.clone(), cap);
                }
            }
        }
        all
    }
}

/// New-flow sources held unlooked-up per victim before they are added to its set.
const PENDING: usize = 256;

/// The distinct sources of what came to one victim in one flood window: those of new flows up
/// to a cap (evidence), and two at most of other packets (enough to tell one source from many).
///
/// The same set as offering every source, in order, to one [`Distinct`] (new flows with the
/// cap, others with 2), except that once the set holds two, new-flow sources wait in a short
/// list, in order, until it is full or the set is asked for ([`Sources::settle`]): the set is
/// needed only by a victim judged for a flood of new flows, so most victims' lists are never
/// looked up value by value, and a source costs a push, not a hash-set insert.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Sources {
    set: Distinct<Addr>,
    /// Offered after `set` held two (so only while it does), not yet added.
    pending: Vec<Addr>,
}

impl Sources {
    /// The source of a new flow: kept up to `cap` distinct.
    pub fn add_new(&mut self, v: Addr, cap: usize) {
        let n = self.set.len();
        if n < 2 || cap <= 2 {
            self.set.offer(v, cap);
        } else if n < cap {
            // Past `cap` the set takes nothing more: what waits is offered in order.
            self.pending.push(v);
            if self.pending.len() >= PENDING {
                self.settle(cap);
            }
        }
    }

    /// The source of other packets: two are enough to tell one source from many (with two in
    /// the set, a no-op, whatever waits).
    pub fn add_other(&mut self, v: Addr) {
        self.set.offer(v, 2);
    }

    /// Adds what waits, in the order it came.
    pub fn settle(&mut self, cap: usize) {
        for v in self.pending.drain(..) {
            self.set.offer(v, cap);
        }
    }

    /// The one source, if only one came (what waits is never needed: it waits only while the
    /// set holds two).
    pub fn only(&self) -> Option<&Addr> {
        self.set.only()
    }

    /// The set, once settled.
    pub fn settled(&self) -> &Distinct<Addr> {
        debug_assert!(self.pending.is_empty(), "Sources::settle first");
        &self.set
    }
}

#[cfg(test)]
mod tests {
    use super::Distinct;

    #[test]
    fn distinct_counts_values_once_and_keeps_to_its_cap() {
        let mut d = Distinct::new();
        assert_eq!((d.len(), d.only()), (0, None));
        assert!(d.add(7u16, 3) && d.add(7, 3));
        assert_eq!((d.len(), d.only()), (1, Some(&7)));
        assert!(d.add(8, 3) && d.add(9, 3) && d.add(8, 3));
        assert_eq!((d.len(), d.only()), (3, None));
        assert!(!d.add(10, 3), "a fourth value past cap 3");
        assert!(d.add(9, 3), "a value already in is no cap hit");
        let mut one = Distinct::new();
        assert!(one.add(1u32, 1) && !one.add(2, 1) && one.add(1, 1));
        assert_eq!(one.len(), 1);
        let mut none = Distinct::new();
        assert!(!none.add(1u32, 0));
        assert_eq!(none.len(), 0);
    }
}

#[cfg(test)]
mod sources_tests {
    use tapflow_proto::Addr;

    use super::{Distinct, Sources, PENDING};

    /// `Sources` leaves the set one `Distinct` would, offered the same sources in order (new
    /// flows with the cap, others with 2): the same size, the same only source, the same
    /// members (seen by merging into a set that holds them all), at every cap and length.
    #[test]
    fn sources_hold_the_set_a_distinct_would() {
        let mut x: u64 = 12345;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        for cap in [0, 1, 2, 3, 5, 40, PENDING - 1, PENDING + 7, 1000] {
            for (len, range) in [(0, 1), (1, 1), (3, 2), (50, 8), (700, 300), (3000, 5000)] {
                let mut s = Sources::default();
                let mut d = Distinct::new();
                for _ in 0..len {
                    let r = next();
                    let n = u32::try_from(1000 + r % range).expect("a small value");
                    let v = Addr::from_v4(n.to_be_bytes());
                    if r % 7 == 0 {
                        s.add_other(v);
                        d.add(v, 2);
                    } else {
                        s.add_new(v, cap);
                        d.add(v, cap);
                    }
                }
                assert_eq!(s.only(), d.only(), "cap {cap}, {len} sources");
                s.settle(cap);
                let got = s.settled();
                assert_eq!(
                    (got.len(), got.only()),
                    (d.len(), d.only()),
                    "cap {cap}, {len}"
                );
                let mut union = Distinct::new();
                union.merge(&d, usize::MAX);
                union.merge(got, usize::MAX);
                assert_eq!(union.len(), d.len(), "the same members: cap {cap}, {len}");
            }
        }
    }
}
