//! The flows of the evidence table that no direction is collecting for: those with no payload
//! yet (a SYN seen: the stream bases are known) and those whose evidence is complete both ways.
//! They are kept apart from the young-flow table in a compact set: a slot of 32 bytes (a 56-bit
//! hash of the flow key, the packet time of its last packet in seconds, the two directions'
//! stream bases and states), so that the look-up most packets make — a handshake, a flow
//! already given up, cut or complete — touches one cache line of a table a few MiB large, not
//! the young-flow table's three of a ten-MiB one, and a SYN flood fills no young-flow entries.
//!
//! A flow is matched by its hash, not its key: two live flows whose 56-bit hashes agree (odds
//! of about one in 10^12 per packet at the default cap) would share one slot, so one of them
//! could have its evidence not shipped; nothing else depends on it.
//!
//! Open addressing over power-of-two slots with linear probing, at most half full, deletion by
//! shifting the probe run back (no tombstones). Bounded by `cap` flows: past it, the flow that
//! came in first gives way. A flow idle for [`super::IDLE_NS`] is gone, as it would be from
//! the young-flow table.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use tapflow_proto::FlowKey;

/// Slots of the first allocation.
const MIN_SLOTS: usize = 1024;
/// The low byte of a slot's tag holds the two directions' [`Slim`] states, a nibble each.
const META: u64 = 0xFF;

/// Where a direction stands: no payload yet, or shipping nothing more and why (what its
/// later payload packets are counted as).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Open,
    GaveUp,
    Budget,
    Complete,
}

/// One direction of a flow in the set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slim {
    pub state: State,
    /// TCP: the stream's base; `flag` says, for an open direction, that the base is known,
    /// and for a done one, that bytes were shipped (a SYN with another base, or any SYN of a
    /// direction that shipped nothing, starts the direction afresh).
    pub base: u32,
    pub flag: bool,
    pub fin: bool,
}

impl Slim {
    pub(super) const OPEN: Slim = Slim {
        state: State::Open,
        base: 0,
        flag: false,
        fin: false,
    };

    fn nibble(self) -> u64 {
        let state = match self.state {
            State::Open => 0,
            State::GaveUp => 1,
            State::Budget => 2,
            State::Complete => 3,
        };
        state | u64::from(self.flag) << 2 | u64::from(self.fin) << 3
    }

    fn from_nibble(n: u64, base: u32) -> Slim {
        let state = match n & 3 {
            0 => State::Open,
            1 => State::GaveUp,
            2 => State::Budget,
            _ => State::Complete,
        };
        Slim {
            state,
            base,
            flag: n & 4 != 0,
            fin: n & 8 != 0,
        }
    }
}

/// 32-byte aligned (24 bytes used), so that no slot spans two cache lines.
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct Slot {
    /// 0: empty; else the flow's hash (bit 8 set, so never 0) with its [`Slim`] states in the low byte.
    tag: u64,
    last_s: u32,
    /// When it came in (a count of insertions), to tell its place in `order` from places
    /// of the same flow's earlier stays.
    ord: u32,
    bases: [u32; 2],
}

pub(super) struct SlimSet {
    slots: Vec<Slot>,
    len: usize,
    cap: usize,
    /// Hashes and insertion counts in the order their flows came in (may name flows since
    /// gone or come in again: checked when used).
    order: VecDeque<(u64, u32)>,
    inserted: u32,
    hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for SlimSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlimSet")
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

/// A flow key's hash as the set keys it (low byte clear, bit 8 set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Hash(u64);

impl SlimSet {
    pub(super) fn new(cap: usize) -> SlimSet {
        SlimSet {
            slots: Vec::new(),
            len: 0,
            cap,
            order: VecDeque::new(),
            inserted: 0,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn hash(&self, key: &FlowKey) -> Hash {
        Hash(self.hasher.hash_one(key) & !META | 0x100)
    }

    /// The flow's two directions, if it is here and not idle at `now_s`; its last packet time
    /// becomes `now_s`. One idle too long is removed.
    pub(super) fn touch(&mut self, h: Hash, now_s: u32) -> Option<[Slim; 2]> {
        let i = self.find(h)?;
        let s = &mut self.slots[i];
        if now_s.saturating_sub(s.last_s) > super::IDLE_S {
            self.remove_at(i);
            return None;
        }
        if s.last_s != now_s {
            // Only when it changes: a line read is cheaper than a line written back.
            s.last_s = now_s;
        }
        let meta = s.tag & META;
        Some([
            Slim::from_nibble(meta & 0xF, s.bases[0]),
            Slim::from_nibble(meta >> 4, s.bases[1]),
        ])
    }

    /// Notes direction `dir`'s FIN; whether the flow is to go (its other direction's FIN came
    /// before).
    pub(super) fn fin(&mut self, h: Hash, dir: usize) -> bool {
        let Some(i) = self.find(h) else {
            return false;
        };
        let s = &mut self.slots[i];
        s.tag |= 8 << (4 * dir);
        s.tag & 0x88 == 0x88
    }

    /// Adds a flow (not here); the flow that came in first gives way when the set is full.
    pub(super) fn insert(&mut self, h: Hash, dirs: [Slim; 2], now_s: u32) {
        if self.len >= self.cap {
            self.evict_oldest();
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let tag = h.0 | dirs[0].nibble() | dirs[1].nibble() << 4;
        self.inserted = self.inserted.wrapping_add(1);
        self.place(Slot {
            tag,
            last_s: now_s,
            ord: self.inserted,
            bases: [dirs[0].base, dirs[1].base],
        });
        self.len += 1;
        self.order.push_back((h.0, self.inserted));
        if self.order.len() > self.len.saturating_mul(2).max(MIN_SLOTS) {
            self.compact_order();
        }
    }

    /// Replaces the flow's directions (it is here).
    pub(super) fn set(&mut self, h: Hash, dirs: [Slim; 2]) {
        if let Some(i) = self.find(h) {
            let s = &mut self.slots[i];
            s.tag = h.0 | dirs[0].nibble() | dirs[1].nibble() << 4;
            s.bases = [dirs[0].base, dirs[1].base];
        }
    }

    pub(super) fn remove(&mut self, h: Hash) -> bool {
        match self.find(h) {
            Some(i) => {
                self.remove_at(i);
                true
            }
            None => false,
        }
    }

    fn evict_oldest(&mut self) {
        while let Some(place) = self.order.pop_front() {
            if let Some(i) = self.holding(place) {
                self.remove_at(i);
                return;
            }
        }
    }

    /// The slot of the flow `order` names at this place, if it is still there from then.
    fn holding(&self, (h, ord): (u64, u32)) -> Option<usize> {
        self.find(Hash(h)).filter(|&i| self.slots[i].ord == ord)
    }

    /// Drops from the order the places of flows no longer there: one place per flow is left.
    fn compact_order(&mut self) {
        let mut order = std::mem::take(&mut self.order);
        order.retain(|&place| self.holding(place).is_some());
        self.order = order;
    }

    fn home(&self, tag: u64) -> usize {
        // The high bits: foldhash's low bits are the weaker ones for short keys.
        (tag >> 32) as usize & (self.slots.len() - 1)
    }

    fn find(&self, h: Hash) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(h.0);
        loop {
            let tag = self.slots[i].tag;
            if tag == 0 {
                return None;
            }
            if tag & !META == h.0 {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Puts a slot in the first empty place of its probe run (there is one: at most half full).
    fn place(&mut self, slot: Slot) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(slot.tag);
        while self.slots[i].tag != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
    }

    /// Empties slot `i` and shifts back the entries of its probe run that may move.
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.slots.len() - 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let tag = self.slots[j].tag;
            if tag == 0 {
                break;
            }
            let home = self.home(tag);
            // The entry at j may fill the hole at i unless its home lies in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.slots[i] = self.slots[j];
                i = j;
            }
        }
        self.slots[i] = Slot::default();
        self.len -= 1;
    }

    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); n]);
        for s in old.into_iter().filter(|s| s.tag != 0) {
            self.place(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn slim(state: State, base: u32, fin: bool) -> Slim {
        Slim {
            state,
            base,
            flag: base.is_multiple_of(2),
            fin,
        }
    }

    /// A reference model: the same operations on a `HashMap`, in a mix of inserts, removals,
    /// look-ups, FINs and idling, with the set's cap far above the count (no eviction).
    #[test]
    fn behaves_as_a_map_over_a_long_mix_of_operations() {
        let mut set = SlimSet::new(1 << 20);
        let mut model: HashMap<u64, ([Slim; 2], u32)> = HashMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let states = [State::Open, State::GaveUp, State::Budget, State::Complete];
        for step in 0..60_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct hashes that share homes, so probe runs form and wrap.
            let h = Hash(((x % 3000) << 40 | (x % 7) << 20) & !META | 0x100);
            let now = step / 100;
            match x >> 60 {
                0..=5 => {
                    if let std::collections::hash_map::Entry::Vacant(v) = model.entry(h.0) {
                        let dirs = [
                            slim(states[(x % 4) as usize], (x >> 8) as u32, x & 16 != 0),
                            slim(states[(x >> 3) as usize % 4], (x >> 40) as u32, false),
                        ];
                        v.insert((dirs, now));
                        set.insert(h, dirs, now);
                    }
                }
                6..=8 => assert_eq!(set.remove(h), model.remove(&h.0).is_some()),
                9 => {
                    let dir = (x & 1) as usize;
                    let both = model.get_mut(&h.0).map(|(d, _)| {
                        d[dir].fin = true;
                        d[0].fin && d[1].fin
                    });
                    assert_eq!(set.fin(h, dir), both.unwrap_or(false));
                }
                _ => {
                    let want = match model.get_mut(&h.0) {
                        Some((_, last)) if now.saturating_sub(*last) > super::super::IDLE_S => {
                            model.remove(&h.0);
                            None
                        }
                        Some((d, last)) => {
                            *last = now;
                            Some(*d)
                        }
                        None => None,
                    };
                    assert_eq!(set.touch(h, now), want, "step {step}");
                }
            }
            assert_eq!(set.len(), model.len());
        }
    }

    #[test]
    fn past_the_cap_the_flow_that_came_first_gives_way() {
        let mut set = SlimSet::new(2);
        let d = [slim(State::GaveUp, 1, false); 2];
        let hs: Vec<Hash> = (1..=3u64).map(|k| Hash(k << 33 | 0x100)).collect();
        for &h in &hs {
            set.insert(h, d, 0);
        }
        assert_eq!(set.len(), 2);
        assert!(set.touch(hs[0], 0).is_none());
        assert!(set.touch(hs[1], 0).is_some());
        assert!(set.touch(hs[2], 0).is_some());
    }
}
