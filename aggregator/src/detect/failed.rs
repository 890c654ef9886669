//! Failed attempts in one scan window, by source: the distinct (proto << 16 | port) that
//! failed per (source, destination), for port scans, and the distinct destinations that failed
//! per (source, proto, port), for address scans.
//!
//! Both are held in one map keyed by source: in a spoofed flood nearly every source fails once,
//! and its one attempt is held inline in one entry, where two maps (one per kind of key) made
//! two entries. The sets, the keys and the cap hits are those of the two maps, each bounded by
//! `keys` keys of its own kind: [`Failed::add`] counts what either would have kept out.

use std::collections::hash_map::Entry;

use tapflow_proto::Addr;

use super::distinct::{Distinct, HashMap};

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Failed {
    by_src: HashMap<Addr, BySrc>,
    /// (source, destination) keys held.
    port_keys: usize,
    /// (source, proto, port) keys held.
    host_keys: usize,
}

/// What one source failed at.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum BySrc {
    /// One attempt (destination, proto, port): its port key and its host key both held, each
    /// set holding that attempt's value alone.
    One(Addr, u8, u16),
    Many(Box<Sets>),
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Sets {
    /// destination -> distinct (proto << 16 | port).
    ports: HashMap<Addr, Distinct<u32>>,
    /// (proto, port) -> distinct destinations.
    hosts: HashMap<(u8, u16), Distinct<Addr>>,
}

impl Failed {
    /// A failed attempt from `src` to `dst`'s `port`: its value added to both sets, each with
    /// up to `cap` values and `keys` keys of its kind. Returns how many of the two adds a cap
    /// kept out (0, 1 or 2).
    pub fn add(
        &mut self,
        src: Addr,
        dst: Addr,
        proto: u8,
        port: u16,
        cap: usize,
        keys: usize,
    ) -> u64 {
        let entry = match self.by_src.entry(src) {
            Entry::Occupied(e) => match e.into_mut() {
                BySrc::One(d, p, q) if (*d, *p, *q) == (dst, proto, port) => return 0,
                e => e,
            },
            Entry::Vacant(e) => {
                let (port_in, host_in) = (self.port_keys < keys, self.host_keys < keys);
                if port_in && host_in && cap >= 1 {
                    e.insert(BySrc::One(dst, proto, port));
                    self.port_keys += 1;
                    self.host_keys += 1;
                    return 0;
                }
                if !port_in && !host_in {
                    return 2;
                }
                e.insert(BySrc::Many(Box::default()))
            }
        };
        let sets = entry.sets();
        let v = u32::from(proto) << 16 | u32::from(port);
        add_counted(&mut sets.ports, dst, v, cap, keys, &mut self.port_keys)
            + add_counted(
                &mut sets.hosts,
                (proto, port),
                dst,
                cap,
                keys,
                &mut self.host_keys,
            )
    }

    /// Every (source, destination) key with the number of its distinct values.
    pub fn ports(&self) -> impl Iterator<Item = (Addr, Addr, usize)> + '_ {
        self.by_src.iter().flat_map(|(&src, e)| {
            let (one, many) = match e {
                BySrc::One(d, _, _) => (Some((src, *d, 1)), None),
                BySrc::Many(s) => (
                    None,
                    Some(s.ports.iter().map(move |(&d, v)| (src, d, v.len()))),
                ),
            };
            one.into_iter().chain(many.into_iter().flatten())
        })
    }

    /// Every (source, proto, port) key with the number of its distinct destinations.
    pub fn hosts(&self) -> impl Iterator<Item = (Addr, u8, u16, usize)> + '_ {
        self.by_src.iter().flat_map(|(&src, e)| {
            let (one, many) = match e {
                BySrc::One(_, p, q) => (Some((src, *p, *q, 1)), None),
                BySrc::Many(s) => (
                    None,
                    Some(s.hosts.iter().map(move |(&(p, q), v)| (src, p, q, v.len()))),
                ),
            };
            one.into_iter().chain(many.into_iter().flatten())
        })
    }
}

impl BySrc {
    /// The sets, made from the one attempt if that is what is held.
    fn sets(&mut self) -> &mut Sets {
        if let BySrc::One(d, p, q) = *self {
            let mut s = Sets::default();
            s.ports
                .insert(d, Distinct::One(u32::from(p) << 16 | u32::from(q)));
            s.hosts.insert((p, q), Distinct::One(d));
            *self = BySrc::Many(Box::new(s));
        }
        match self {
            BySrc::Many(s) => s,
            BySrc::One(..) => unreachable!("made Many above"),
        }
    }
}

/// Adds `v` to the set under `key`, a key of a kind of which `held` are held in all; returns
/// 1 if a cap kept it out (`keys` keys held and this one not among them, or `cap` values).
fn add_counted<K: std::hash::Hash + Eq, T: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Distinct<T>>,
    key: K,
    v: T,
    cap: usize,
    keys: usize,
    held: &mut usize,
) -> u64 {
    let set = match map.entry(key) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(_) if *held >= keys => return 1,
        Entry::Vacant(e) => {
            *held += 1;
            e.insert(Distinct::Empty)
        }
    };
    u64::from(!set.add(v, cap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::window::add_to;

    /// The two maps [`Failed`] stands for, as detection held them before.
    #[derive(Default)]
    struct TwoMaps {
        ports: HashMap<(Addr, Addr), Distinct<u32>>,
        hosts: HashMap<(Addr, u8, u16), Distinct<Addr>>,
    }

    impl TwoMaps {
        /// An attempt (source, destination, proto, port) as `add_scans` added it to both maps.
        fn add(
            &mut self,
            (src, dst, proto, port): (Addr, Addr, u8, u16),
            cap: usize,
            keys: usize,
        ) -> u64 {
            let v = u32::from(proto) << 16 | u32::from(port);
            add_to(&mut self.ports, (src, dst), v, cap, keys)
                + add_to(&mut self.hosts, (src, proto, port), dst, cap, keys)
        }
    }

    fn addr(n: u8) -> Addr {
        Addr::from_v4([10, 0, 0, n])
    }

    /// Random sequences of attempts (xorshift, fixed seed), with small address and port spaces
    /// so that sources fail again and both caps are hit: the same cap hits after each attempt,
    /// and the same keys with the same set sizes at the end.
    #[test]
    fn one_map_agrees_with_two() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..5_000 {
            let (cap, keys) = (next(4) as usize, next(8) as usize);
            let (mut one, mut two) = (Failed::default(), TwoMaps::default());
            for _ in 0..next(60) {
                let (s, d) = (addr(next(6) as u8), addr(next(5) as u8));
                let (proto, port) = ([6, 17][next(2) as usize], next(4) as u16);
                let got = one.add(s, d, proto, port, cap, keys);
                assert_eq!(got, two.add((s, d, proto, port), cap, keys));
            }
            let mut ports: Vec<_> = one.ports().collect();
            let mut want: Vec<_> = two
                .ports
                .iter()
                .map(|(&(s, d), v)| (s, d, v.len()))
                .collect();
            ports.sort();
            want.sort();
            assert_eq!(ports, want);
            let mut hosts: Vec<_> = one.hosts().collect();
            let mut want: Vec<_> = two
                .hosts
                .iter()
                .map(|(&(s, p, q), v)| (s, p, q, v.len()))
                .collect();
            hosts.sort();
            want.sort();
            assert_eq!(hosts, want);
            assert_eq!(
                (one.port_keys, one.host_keys),
                (two.ports.len(), two.hosts.len())
            );
        }
    }

    #[test]
    fn a_source_that_fails_once_is_one_entry() {
        let mut f = Failed::default();
        assert_eq!(f.add(addr(1), addr(9), 6, 80, 10, 10), 0);
        assert_eq!(f.add(addr(1), addr(9), 6, 80, 10, 10), 0);
        assert!(matches!(f.by_src.get(&addr(1)), Some(BySrc::One(..))));
        assert_eq!(f.add(addr(1), addr(9), 6, 81, 10, 10), 0);
        assert!(matches!(f.by_src.get(&addr(1)), Some(BySrc::Many(_))));
        assert_eq!(f.ports().collect::<Vec<_>>(), vec![(addr(1), addr(9), 2)]);
    }
}
