//! Slot tables: which processor owns a flow while processors come and go.
//!
//! A flow maps to one of [`SLOTS`] fixed slots, `slot = jump(flow_hash(key), SLOTS)` (the
//! [`crate::shard`] functions with `n = SLOTS`), so both directions of a flow share a slot and
//! every host computes the same one. A versioned [`SlotTable`] then names the processor owning
//! each slot. Processor ids are `u16`s that stay stable for a processor's life; the table
//! carries its `epoch` and its member list. Plain jump hash can only add or remove the *last*
//! bucket without moving more than the minimum; the table lets any member leave while only its
//! own slots move (`docs/scaling.md` has the design and the measured fractions).
//!
//! Every operation is deterministic: the same inputs give the same table on every host, so
//! collectors that compute a change independently agree slot for slot.
//! - [`SlotTable::initial`]: members sorted by id, slot `s` owned by `members[s % n]`, so each
//!   member has `floor(S / n)` or `ceil(S / n)` slots.
//! - [`SlotTable::with_added`]: the new member takes `floor(S / (n + 1))` slots, the fewest that
//!   keep the table balanced, one at a time from the most loaded member (ties: lowest id); each
//!   donor gives its lowest-numbered slots. Nothing else moves.
//! - [`SlotTable::with_removed`]: only the leaving member's slots move, in ascending order, each
//!   to the least loaded remaining member at that moment (ties: lowest id).
//!
//! Starting from `initial`, any sequence of adds and removes keeps every member within one slot
//! of every other.
//!
//! # Serialised form (version 1, integers little-endian)
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0 | 4 | magic `b"TFST"` |
//! | 4 | 1 | format version, 1 |
//! | 5 | 4 | epoch (`u32`) |
//! | 9 | 2 | slot count (`u16`), must be [`SLOTS`] |
//! | 11 | 2 | member count `n` (`u16`), `1..=SLOTS` |
//! | 13 | `2 n` | member ids (`u16`), strictly ascending |
//! | `13 + 2 n` | `S w` | each slot's owner as an index into the member list; `w = 1` byte when `n <= 256`, else 2 |
//!
//! With up to 256 members a table is `13 + 2 n + 4096` bytes. [`SlotTable::from_bytes`] checks
//! everything (every slot owned by a listed member, every member owning a slot, no trailing
//! bytes) and returns a typed [`TableDecodeError`]; it never panics.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

use crate::key::FlowKey;
use crate::shard::{flow_hash, shard_of_hash};

/// Number of fixed slots flows hash onto: balance granularity 1/4096, an 8 KiB table in memory.
pub const SLOTS: usize = 4096;
/// Most members a table can have: every member owns at least one slot.
pub const MAX_MEMBERS: usize = SLOTS;
/// First four bytes of a serialised table.
pub const TABLE_MAGIC: [u8; 4] = *b"TFST";
/// Serialised format version this build writes and reads.
pub const TABLE_VERSION: u8 = 1;
/// Length of the fixed header before the member list.
pub const TABLE_HEADER_LEN: usize = 13;

/// The slot (in `0..SLOTS`) of a flow.
#[inline]
pub fn slot(key: &FlowKey) -> u16 {
    slot_of_hash(flow_hash(key))
}

/// The slot of an already computed [`flow_hash`].
#[inline]
pub fn slot_of_hash(hash: u64) -> u16 {
    shard_of_hash(hash, SLOTS as u16)
}

/// Why a table operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("a slot table needs at least one member")]
    NoMembers,
    #[error("{0} members: a slot table has at most {MAX_MEMBERS} (one slot each)")]
    TooManyMembers(usize),
    #[error("processor {0} is listed twice")]
    DuplicateMember(u16),
    #[error("processor {0} is already a member")]
    AlreadyMember(u16),
    #[error("processor {0} is not a member")]
    NotAMember(u16),
    #[error("processor {0} is the last member; a slot table cannot be empty")]
    LastMember(u16),
    #[error("epoch {proposed} does not follow the table's epoch {current}")]
    StaleEpoch { current: u32, proposed: u32 },
}

/// Why bytes are not a valid serialised [`SlotTable`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableDecodeError {
    #[error("slot table truncated: {needed} bytes needed, {got} present")]
    Truncated { needed: usize, got: usize },
    #[error("not a slot table (magic {0:02x?})")]
    BadMagic([u8; 4]),
    #[error("slot table format version {0}, this build reads version {TABLE_VERSION}")]
    UnsupportedVersion(u8),
    #[error("slot table has {0} slots, this build uses {SLOTS}")]
    WrongSlotCount(u16),
    #[error("slot table lists no members")]
    NoMembers,
    #[error("slot table lists {0} members, at most {MAX_MEMBERS}")]
    TooManyMembers(u16),
    #[error("slot table members not strictly ascending: {id} after {prev}")]
    MembersNotAscending { prev: u16, id: u16 },
    #[error("slot {slot} is owned by member #{index}, but only {count} are listed")]
    UnknownMember { slot: u16, index: u16, count: u16 },
    #[error("member {0} owns no slot")]
    IdleMember(u16),
    #[error("{0} bytes after the slot table")]
    TrailingBytes(usize),
}

/// A versioned assignment of the [`SLOTS`] slots to processor ids.
///
/// Invariants (kept by every constructor): `members` is strictly ascending and non-empty,
/// `owners` has `SLOTS` entries, each a member, and every member owns at least one slot.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotTable {
    epoch: u32,
    members: Vec<u16>,
    owners: Vec<u16>,
}

impl SlotTable {
    /// The balanced table of `members` (any order; sorted by id): slot `s` goes to the
    /// `s % n`-th smallest id.
    pub fn initial(epoch: u32, members: &[u16]) -> Result<SlotTable, TableError> {
        let mut sorted = members.to_vec();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(TableError::DuplicateMember(w[0]));
        }
        match sorted.len() {
            0 => return Err(TableError::NoMembers),
            n if n > MAX_MEMBERS => return Err(TableError::TooManyMembers(n)),
            _ => {}
        }
        let owners = (0..SLOTS).map(|s| sorted[s % sorted.len()]).collect();
        Ok(SlotTable {
            epoch,
            members: sorted,
            owners,
        })
    }

    /// This table with `id` added at `epoch`: `id` takes `floor(SLOTS / (n + 1))` slots, one at a
    /// time from the most loaded member (ties: lowest id), each donor giving its lowest slots.
    pub fn with_added(&self, epoch: u32, id: u16) -> Result<SlotTable, TableError> {
        self.check_epoch(epoch)?;
        let pos = match self.members.binary_search(&id) {
            Ok(_) => return Err(TableError::AlreadyMember(id)),
            Err(pos) => pos,
        };
        let n = self.members.len();
        if n + 1 > MAX_MEMBERS {
            return Err(TableError::TooManyMembers(n + 1));
        }
        // Max-heap on (load, lowest index): the most loaded member gives next.
        let mut heap: BinaryHeap<(usize, Reverse<usize>)> = self
            .member_loads()
            .into_iter()
            .enumerate()
            .map(|(i, load)| (load, Reverse(i)))
            .collect();
        let mut give = vec![0usize; n];
        for _ in 0..SLOTS / (n + 1) {
            if let Some((load, Reverse(i))) = heap.pop() {
                give[i] += 1;
                heap.push((load - 1, Reverse(i)));
            }
        }
        let mut owners = self.owners.clone();
        for owner in &mut owners {
            let i = self.index_of(*owner);
            if give[i] > 0 {
                give[i] -= 1;
                *owner = id;
            }
        }
        let mut members = self.members.clone();
        members.insert(pos, id);
        Ok(SlotTable {
            epoch,
            members,
            owners,
        })
    }

    /// This table without `id` at `epoch`: its slots, in ascending order, each go to the least
    /// loaded remaining member (ties: lowest id). No other slot moves.
    pub fn with_removed(&self, epoch: u32, id: u16) -> Result<SlotTable, TableError> {
        self.check_epoch(epoch)?;
        let gone = self
            .members
            .binary_search(&id)
            .map_err(|_| TableError::NotAMember(id))?;
        if self.members.len() == 1 {
            return Err(TableError::LastMember(id));
        }
        // Min-heap on (load, index): the least loaded member receives next.
        let mut heap: BinaryHeap<Reverse<(usize, usize)>> = self
            .member_loads()
            .into_iter()
            .enumerate()
            .filter(|&(i, _)| i != gone)
            .map(|(i, load)| Reverse((load, i)))
            .collect();
        let mut owners = self.owners.clone();
        for owner in owners.iter_mut().filter(|o| **o == id) {
            if let Some(Reverse((load, i))) = heap.pop() {
                *owner = self.members[i];
                heap.push(Reverse((load + 1, i)));
            }
        }
        let mut members = self.members.clone();
        members.remove(gone);
        Ok(SlotTable {
            epoch,
            members,
            owners,
        })
    }

    /// The processor owning `key`'s flow.
    #[inline]
    pub fn owner(&self, key: &FlowKey) -> u16 {
        self.owner_of_hash(flow_hash(key))
    }

    /// The processor owning the flow whose [`flow_hash`] is `hash`.
    #[inline]
    pub fn owner_of_hash(&self, hash: u64) -> u16 {
        self.owners[usize::from(slot_of_hash(hash))]
    }

    /// The processor owning `slot`, or `None` past the last slot.
    pub fn owner_of_slot(&self, slot: u16) -> Option<u16> {
        self.owners.get(usize::from(slot)).copied()
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Member ids, ascending.
    pub fn members(&self) -> &[u16] {
        &self.members
    }

    /// Each slot's owner, indexed by slot.
    pub fn owners(&self) -> &[u16] {
        &self.owners
    }

    pub fn contains(&self, id: u16) -> bool {
        self.members.binary_search(&id).is_ok()
    }

    /// How many slots `id` owns (0 for a non-member).
    pub fn load(&self, id: u16) -> usize {
        self.owners.iter().filter(|&&o| o == id).count()
    }

    /// `(id, slots owned)` for every member, ascending by id.
    pub fn loads(&self) -> Vec<(u16, usize)> {
        self.members
            .iter()
            .copied()
            .zip(self.member_loads())
            .collect()
    }

    /// The slots whose owner differs between `self` and `other`, ascending.
    pub fn moved(&self, other: &SlotTable) -> Vec<u16> {
        (0..SLOTS as u16)
            .zip(self.owners.iter().zip(&other.owners))
            .filter(|(_, (a, b))| a != b)
            .map(|(s, _)| s)
            .collect()
    }

    /// The fraction of slots (hence, for well-spread keys, of flows) that change owner.
    pub fn moved_fraction(&self, other: &SlotTable) -> f64 {
        let moved = self
            .owners
            .iter()
            .zip(&other.owners)
            .filter(|(a, b)| a != b)
            .count();
        moved as f64 / SLOTS as f64
    }

    /// Length of [`SlotTable::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        TABLE_HEADER_LEN + 2 * self.members.len() + SLOTS * index_width(self.members.len())
    }

    /// Appends the serialised table (see the module docs) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&TABLE_MAGIC);
        out.push(TABLE_VERSION);
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&(SLOTS as u16).to_le_bytes());
        // At most MAX_MEMBERS = 4096 members, so the count fits a u16.
        out.extend_from_slice(&(self.members.len() as u16).to_le_bytes());
        for id in &self.members {
            out.extend_from_slice(&id.to_le_bytes());
        }
        let wide = index_width(self.members.len()) == 2;
        for &owner in &self.owners {
            let index = self.index_of(owner) as u16;
            if wide {
                out.extend_from_slice(&index.to_le_bytes());
            } else {
                out.push(index as u8);
            }
        }
    }

    /// The serialised table as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// Parses and validates a serialised table.
    pub fn from_bytes(bytes: &[u8]) -> Result<SlotTable, TableDecodeError> {
        let header = need(bytes, 0, TABLE_HEADER_LEN)?;
        let magic = [header[0], header[1], header[2], header[3]];
        if magic != TABLE_MAGIC {
            return Err(TableDecodeError::BadMagic(magic));
        }
        if header[4] != TABLE_VERSION {
            return Err(TableDecodeError::UnsupportedVersion(header[4]));
        }
        let epoch = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
        let slots = u16::from_le_bytes([header[9], header[10]]);
        if usize::from(slots) != SLOTS {
            return Err(TableDecodeError::WrongSlotCount(slots));
        }
        let count = u16::from_le_bytes([header[11], header[12]]);
        let n = usize::from(count);
        if n == 0 {
            return Err(TableDecodeError::NoMembers);
        }
        if n > MAX_MEMBERS {
            return Err(TableDecodeError::TooManyMembers(count));
        }
        let ids = need(bytes, TABLE_HEADER_LEN, 2 * n)?;
        let members: Vec<u16> = ids
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        if let Some(w) = members.windows(2).find(|w| w[0] >= w[1]) {
            return Err(TableDecodeError::MembersNotAscending {
                prev: w[0],
                id: w[1],
            });
        }
        let width = index_width(n);
        let start = TABLE_HEADER_LEN + 2 * n;
        let body = need(bytes, start, SLOTS * width)?;
        let end = start + SLOTS * width;
        if bytes.len() > end {
            return Err(TableDecodeError::TrailingBytes(bytes.len() - end));
        }
        let mut owned = vec![false; n];
        let mut owners = Vec::with_capacity(SLOTS);
        for (slot, chunk) in (0..SLOTS as u16).zip(body.chunks_exact(width)) {
            let index = match *chunk {
                [lo, hi] => u16::from_le_bytes([lo, hi]),
                [b] => u16::from(b),
                _ => 0,
            };
            let Some(&id) = members.get(usize::from(index)) else {
                return Err(TableDecodeError::UnknownMember { slot, index, count });
            };
            owned[usize::from(index)] = true;
            owners.push(id);
        }
        if let Some(i) = owned.iter().position(|&o| !o) {
            return Err(TableDecodeError::IdleMember(members[i]));
        }
        Ok(SlotTable {
            epoch,
            members,
            owners,
        })
    }

    fn check_epoch(&self, proposed: u32) -> Result<(), TableError> {
        if proposed > self.epoch {
            Ok(())
        } else {
            Err(TableError::StaleEpoch {
                current: self.epoch,
                proposed,
            })
        }
    }

    /// Index of a member id in `members`. Only called with owners, which are members.
    fn index_of(&self, id: u16) -> usize {
        self.members.binary_search(&id).unwrap_or_default()
    }

    /// Slots owned by each member, parallel to `members`.
    fn member_loads(&self) -> Vec<usize> {
        let mut loads = vec![0usize; self.members.len()];
        for &owner in &self.owners {
            loads[self.index_of(owner)] += 1;
        }
        loads
    }
}

impl fmt::Debug for SlotTable {
    /// The epoch and each member's load, not the 4096 owners.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotTable")
            .field("epoch", &self.epoch)
            .field("loads", &self.loads())
            .finish()
    }
}

/// Bytes per serialised owner index for `n` members.
fn index_width(n: usize) -> usize {
    if n <= 256 {
        1
    } else {
        2
    }
}

/// `bytes[at..at + len]`, or `Truncated` naming the total length needed.
fn need(bytes: &[u8], at: usize, len: usize) -> Result<&[u8], TableDecodeError> {
    bytes.get(at..at + len).ok_or(TableDecodeError::Truncated {
        needed: at + len,
        got: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `table`'s loads and its first owners are `loads` and `first`.
    fn check(table: &SlotTable, loads: &[(u16, usize)], first: &[u16]) {
        assert_eq!(table.loads(), loads, "{table:?}");
        assert_eq!(&table.owners()[..first.len()], first, "{table:?}");
        assert_eq!(SlotTable::from_bytes(&table.to_bytes()).as_ref(), Ok(table));
    }

    #[test]
    fn initial_interleaves_by_id() {
        let t = SlotTable::initial(1, &[7, 3]).expect("table");
        check(&t, &[(3, 2048), (7, 2048)], &[3, 7, 3, 7]);
        let t = SlotTable::initial(1, &[9, 2, 5]).expect("table");
        check(&t, &[(2, 1366), (5, 1365), (9, 1365)], &[2, 5, 9, 2, 5, 9]);
    }

    #[test]
    fn add_then_remove_by_hand() {
        let t = SlotTable::initial(1, &[7, 3]).expect("table");
        // 4096 / 3 = 1365 slots for 5: 3 and 7 tie at 2048, so 3 gives first, then 7, ...
        // 3 gives 683 (even slots 0..=1364), 7 gives 682 (odd slots 1..=1363), each its lowest.
        let t = t.with_added(2, 5).expect("add");
        check(&t, &[(3, 1365), (5, 1365), (7, 1366)], &[5, 5, 5, 5]);
        assert_eq!(t.owners()[1363..1369], [5, 5, 7, 3, 7, 3]);
        // 7's 1366 slots go alternately to 3 and 5 (tied, 3 first): 683 each.
        let t = t.with_removed(3, 7).expect("remove");
        check(&t, &[(3, 2048), (5, 2048)], &[5, 5, 5, 5]);
    }

    #[test]
    fn refusals_are_typed() {
        let t = SlotTable::initial(4, &[1]).expect("table");
        assert_eq!(SlotTable::initial(1, &[]), Err(TableError::NoMembers));
        assert_eq!(
            SlotTable::initial(1, &[4, 2, 4]),
            Err(TableError::DuplicateMember(4))
        );
        let many: Vec<u16> = (0..=SLOTS as u16).collect();
        assert_eq!(
            SlotTable::initial(1, &many),
            Err(TableError::TooManyMembers(SLOTS + 1))
        );
        assert_eq!(t.with_added(5, 1), Err(TableError::AlreadyMember(1)));
        assert_eq!(t.with_removed(5, 2), Err(TableError::NotAMember(2)));
        assert_eq!(t.with_removed(5, 1), Err(TableError::LastMember(1)));
        assert_eq!(
            t.with_added(4, 2),
            Err(TableError::StaleEpoch {
                current: 4,
                proposed: 4
            })
        );
        let full = SlotTable::initial(1, &many[..SLOTS]).expect("table");
        assert_eq!(
            full.with_added(2, u16::MAX),
            Err(TableError::TooManyMembers(SLOTS + 1))
        );
    }

    #[test]
    fn wide_indices_past_256_members() {
        let ids: Vec<u16> = (0..300u16).map(|i| i * 200).collect();
        let t = SlotTable::initial(9, &ids).expect("table");
        assert_eq!(t.to_bytes().len(), TABLE_HEADER_LEN + 600 + 2 * SLOTS);
        assert_eq!(SlotTable::from_bytes(&t.to_bytes()), Ok(t));
    }
}
