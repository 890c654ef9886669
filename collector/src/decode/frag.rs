//! IP reassembly in a bounded table (IPv4 and IPv6 alike).
//!
//! A datagram is keyed by source, destination, identification, protocol, IP version and the
//! tunnel layer it was found in (depth and parent flow), and copies its fragments' data into
//! one buffer (buffers are recycled; allocation happens on this path only). Fragments may come
//! in any order; bytes already held win over later overlapping ones (exact duplicates are
//! harmless). A fragment that cannot belong to a valid datagram (beyond 65535 bytes, a middle
//! fragment not a multiple of 8 bytes, a last fragment that disagrees with the data or with
//! another last fragment) drops its whole datagram as `FragmentInvalid`.
//!
//! Bounds, by packet time: a datagram older than the timeout is dropped (`FragmentTimeout`),
//! checked cheaply at every packet against the oldest datagram; creating one more datagram
//! than the cap, or buffering more bytes than the cap, evicts the oldest (`FragmentTableFull`).
//! Every fragment held is counted once more when it leaves: merged into a completed datagram,
//! or dropped with the datagram's reason (see `Decoder`'s accounting).

use std::collections::{BTreeMap, HashMap};

use tapflow_proto::{Addr, DropReason, FlowKey};

use super::DecodeCounters;

/// Which datagram a fragment belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct FragKey {
    pub(super) src: Addr,
    pub(super) dst: Addr,
    pub(super) id: u32,
    pub(super) proto: u8,
    pub(super) v6: bool,
    /// Tunnel depth (0: the captured packet itself) and the immediate outer flow.
    pub(super) depth: u8,
    pub(super) parent: Option<FlowKey>,
}

/// One fragment's share of its datagram.
#[derive(Clone, Copy, Debug)]
pub(super) struct Piece<'a> {
    /// The captured data (shorter than `len` when cut by snaplen).
    pub(super) data: &'a [u8],
    /// The data length by the IP header.
    pub(super) len: u32,
    pub(super) offset: u32,
    pub(super) more: bool,
    /// Header bytes in front of the data once reassembled (from the first fragment).
    pub(super) hdr_len: u32,
}

/// A completed datagram: its fragmentable part, reassembled.
#[derive(Debug)]
pub(super) struct Datagram {
    pub(super) data: Vec<u8>,
    pub(super) hdr_len: u32,
    /// Some fragment was cut by snaplen: the missing bytes are zeros.
    pub(super) truncated: bool,
}

#[derive(Debug)]
pub(super) enum Insert {
    /// Stored, waiting for the rest.
    Held,
    /// This fragment completed the datagram; give its buffer back with [`Table::recycle`].
    Complete(Datagram),
    /// This fragment is dropped (its datagram's other fragments were accounted already).
    Dropped(DropReason),
}

/// The table's caps.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) max_datagrams: usize,
    pub(super) max_bytes: usize,
    pub(super) timeout_ns: u64,
}

/// The reassembly table.
#[derive(Debug)]
pub(super) struct Table {
    limits: Limits,
    slots: HashMap<FragKey, Slot>,
    /// Creation order: sequence number to key, oldest first.
    age: BTreeMap<u64, FragKey>,
    next_seq: u64,
    /// Bytes buffered over all datagrams.
    bytes: usize,
    spare: Vec<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Slot {
    seq: u64,
    created_ns: u64,
    data: Vec<u8>,
    /// Byte ranges received, sorted, disjoint and not adjacent.
    ranges: Vec<(u32, u32)>,
    total: Option<u32>,
    hdr_len: u32,
    /// Fragments stored (duplicates included).
    frags: u64,
    /// Whether its fragments count in the packet accounting (not inside a tunnel).
    counted: bool,
    truncated: bool,
}

impl Table {
    pub(super) fn new(limits: Limits) -> Table {
        Table {
            limits,
            slots: HashMap::new(),
            age: BTreeMap::new(),
            next_seq: 0,
            bytes: 0,
            spare: Vec::new(),
        }
    }

    /// Datagrams held.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Stores one fragment at packet time `now`; `counted` says whether it is in the packet
    /// accounting. Fragments of other datagrams that leave the table are accounted here; the
    /// caller accounts for this one by the returned [`Insert`].
    pub(super) fn insert(
        &mut self,
        key: FragKey,
        now: u64,
        piece: Piece<'_>,
        counted: bool,
        counters: &mut DecodeCounters,
    ) -> Insert {
        let start = piece.offset;
        let end = start.saturating_add(piece.len);
        if self.invalid(&key, &piece, end) {
            self.remove(&key, Some(DropReason::FragmentInvalid), counters);
            return Insert::Dropped(DropReason::FragmentInvalid);
        }
        if !self.slots.contains_key(&key) {
            if self.limits.max_datagrams == 0 {
                return Insert::Dropped(DropReason::FragmentTableFull);
            }
            self.open(key, now, counted, counters);
        }
        // Make room for the bytes this fragment adds, oldest datagrams first.
        let held = self.slots.get(&key).map_or(0, |s| s.data.len());
        let grow = (end as usize).saturating_sub(held);
        if !self.make_room(&key, grow, counters) {
            self.remove(&key, Some(DropReason::FragmentTableFull), counters);
            return Insert::Dropped(DropReason::FragmentTableFull);
        }
        let Some(slot) = self.slots.get_mut(&key) else {
            return Insert::Dropped(DropReason::FragmentTableFull);
        };
        self.bytes = self.bytes.saturating_add(grow);
        slot.store(start, end, piece.data);
        slot.frags = slot.frags.saturating_add(1);
        if start == 0 {
            slot.hdr_len = piece.hdr_len;
        }
        if !piece.more {
            slot.total = Some(end);
        }
        slot.truncated |= piece.data.len() < piece.len as usize;
        let complete = slot
            .total
            .is_some_and(|t| slot.ranges.as_slice() == [(0, t)]);
        if !complete {
            return Insert::Held;
        }
        self.complete(&key, counters)
    }

    /// Drops every datagram created more than the timeout before `now`.
    #[inline]
    pub(super) fn expire(&mut self, now: u64, counters: &mut DecodeCounters) {
        if self.slots.is_empty() {
            return;
        }
        self.expire_slow(now, counters);
    }

    #[inline(never)]
    fn expire_slow(&mut self, now: u64, counters: &mut DecodeCounters) {
        while let Some((_, key)) = self.age.first_key_value() {
            let key = *key;
            let fresh = self
                .slots
                .get(&key)
                .is_some_and(|s| now.saturating_sub(s.created_ns) <= self.limits.timeout_ns);
            if fresh {
                break;
            }
            self.remove(&key, Some(DropReason::FragmentTimeout), counters);
        }
    }

    /// End of input: every datagram still held is incomplete.
    pub(super) fn finish(&mut self, counters: &mut DecodeCounters) {
        while let Some((_, key)) = self.age.first_key_value() {
            let key = *key;
            self.remove(&key, Some(DropReason::FragmentIncomplete), counters);
        }
    }

    /// Takes back a completed datagram's buffer for reuse.
    pub(super) fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Evicts the oldest datagram; false if there was none.
    fn evict_oldest(&mut self, counters: &mut DecodeCounters) -> bool {
        let Some((_, key)) = self.age.first_key_value() else {
            return false;
        };
        let key = *key;
        self.remove(&key, Some(DropReason::FragmentTableFull), counters);
        true
    }

    /// Removes a datagram, accounting its fragments as dropped for `reason`.
    fn remove(&mut self, key: &FragKey, reason: Option<DropReason>, counters: &mut DecodeCounters) {
        if let Some(slot) = self.take(key) {
            release(counters, slot.counted, slot.frags, reason);
            self.recycle(slot.data);
        }
    }

    /// Whether `piece`, ending at `end`, cannot belong to a valid datagram: beyond 65535
    /// bytes, a middle fragment not a multiple of 8 bytes, or a disagreement with the
    /// datagram's last fragment or the data held.
    fn invalid(&self, key: &FragKey, piece: &Piece<'_>, end: u32) -> bool {
        // IPv4's total length covers the header; IPv6's payload length does not.
        let max_end = if key.v6 { MAX_IP + 40 } else { MAX_IP }.saturating_sub(piece.hdr_len);
        end > max_end
            || (piece.more && piece.len & 7 != 0)
            || self.slots.get(key).is_some_and(|s| {
                let held_end = s.ranges.last().map_or(0, |r| r.1);
                if piece.more {
                    s.total.is_some_and(|t| end > t)
                } else {
                    s.total.is_some_and(|t| t != end) || held_end > end
                }
            })
    }

    /// Creates the datagram `key` at packet time `now`, evicting the oldest at the cap.
    fn open(&mut self, key: FragKey, now: u64, counted: bool, counters: &mut DecodeCounters) {
        while self.slots.len() >= self.limits.max_datagrams && self.evict_oldest(counters) {}
        let slot = Slot {
            seq: self.next_seq,
            created_ns: now,
            data: self.spare.pop().unwrap_or_default(),
            counted,
            ..Slot::default()
        };
        self.age.insert(self.next_seq, key);
        self.next_seq = self.next_seq.wrapping_add(1);
        self.slots.insert(key, slot);
    }

    /// Evicts older datagrams than `key` until `grow` more bytes fit; false if they do not
    /// fit even then.
    fn make_room(&mut self, key: &FragKey, grow: usize, counters: &mut DecodeCounters) -> bool {
        while self.bytes.saturating_add(grow) > self.limits.max_bytes
            && self.age.first_key_value().is_some_and(|(_, k)| k != key)
        {
            self.evict_oldest(counters);
        }
        self.bytes.saturating_add(grow) <= self.limits.max_bytes
    }

    /// Hands out the datagram `key`, just completed by the caller's fragment.
    fn complete(&mut self, key: &FragKey, counters: &mut DecodeCounters) -> Insert {
        match self.take(key) {
            Some(slot) => {
                // This fragment is the caller's; the others were held and are now merged.
                release(counters, slot.counted, slot.frags.saturating_sub(1), None);
                Insert::Complete(Datagram {
                    data: slot.data,
                    hdr_len: slot.hdr_len,
                    truncated: slot.truncated,
                })
            }
            None => Insert::Dropped(DropReason::FragmentInvalid),
        }
    }

    fn take(&mut self, key: &FragKey) -> Option<Slot> {
        let slot = self.slots.remove(key)?;
        self.age.remove(&slot.seq);
        self.bytes = self.bytes.saturating_sub(slot.data.len());
        Some(slot)
    }
}

impl Slot {
    /// Copies `data` (the captured part of `[start, end)`) where nothing is held yet, and
    /// records the range.
    fn store(&mut self, start: u32, end: u32, data: &[u8]) {
        if self.data.len() < end as usize {
            self.data.resize(end as usize, 0);
        }
        let mut copy = |from: u32, to: u32| {
            let (a, b) = (
                from.saturating_sub(start) as usize,
                to.saturating_sub(start) as usize,
            );
            let src = data.get(a..b.min(data.len())).unwrap_or_default();
            let at = from as usize;
            if let Some(dst) = self.data.get_mut(at..at.saturating_add(src.len())) {
                dst.copy_from_slice(src);
            }
        };
        let mut cur = start;
        for &(s, e) in &self.ranges {
            if e <= cur {
                continue;
            }
            if s >= end {
                break;
            }
            if s > cur {
                copy(cur, s);
            }
            cur = cur.max(e);
        }
        if cur < end {
            copy(cur, end);
        }
        if start < end {
            merge(&mut self.ranges, start, end);
        }
    }
}

/// Adds `[start, end)` to sorted disjoint ranges, coalescing overlaps and neighbours.
fn merge(ranges: &mut Vec<(u32, u32)>, start: u32, end: u32) {
    let first = ranges.partition_point(|r| r.1 < start);
    let last = ranges.partition_point(|r| r.0 <= end);
    let (mut s, mut e) = (start, end);
    if let Some(overlapped) = ranges.get(first..last) {
        if let (Some(a), Some(b)) = (overlapped.first(), overlapped.last()) {
            s = s.min(a.0);
            e = e.max(b.1);
        }
    }
    if first <= last && last <= ranges.len() {
        ranges.splice(first..last, [(s, e)]);
    }
}

/// Accounts `n` held fragments leaving the table: merged (`reason` None) or dropped.
fn release(counters: &mut DecodeCounters, counted: bool, n: u64, reason: Option<DropReason>) {
    if counted {
        counters.fragments_held = counters.fragments_held.saturating_sub(n);
        match reason {
            Some(r) => counters.drops.add(r, n),
            None => counters.fragments_merged = counters.fragments_merged.saturating_add(n),
        }
    } else if let Some(r) = reason {
        // Inner fragments are not in the packet accounting (their packet was summarised by its
        // outer layer); one that never reaches a summary is an undecodable inner packet.
        counters.inner_undecodable = counters.inner_undecodable.saturating_add(n);
        counters.inner_drops.add(r, n);
    }
}

const MAX_IP: u32 = 65_535;
const SPARE_BUFFERS: usize = 64;

#[cfg(test)]
mod tests;
