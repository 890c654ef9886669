//! A set bounded by a cap that counts what it leaves out, and the hash maps detection uses.

use std::hash::Hash;

/// Keys here are addresses anyone can forge: seeded per process (unlike FxHash) and several
/// times faster than the standard SipHash on them.
pub(super) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(super) type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// A set that keeps at most `cap` distinct values and counts what it had to leave out. Empty
/// and one-value sets are held inline: in a spoofed flood nearly every key (a source) has one
/// value, and a hash set per key (an allocation of ~100 bytes) was most of the aggregator's
/// memory at a million sources.
#[derive(Debug, Default)]
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
