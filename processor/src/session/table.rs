//! The flow table: a slab of [`Flow`]s, an index from [`FlowKey`] to slab slot, and a heap of
//! deadlines for sweeps and eviction.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hashbrown::HashTable;
use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::flag;
use tapflow_proto::upstream::Expected;
use tapflow_proto::{FlowKey, PacketSummary};

use super::flow::{bits, Ctx, Flow};
use super::timed::Spare;
use super::{ConnRecord, SessionConfig, TableStats, SECOND};

const NO_SLOT: u32 = u32::MAX;
/// Index slots allocated up front; more as open flows grow (bounded by the cap).
const INITIAL_INDEX: usize = 1 << 16;
/// Control bytes hashbrown adds past the last bucket (one SSE2 group).
const INDEX_GROUP: usize = 16;

/// How a connection ended (for the counters).
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Packet,
    Reuse,
    Sweep,
    Evict,
}

/// Connections keyed by canonical flow key, with Zeek's conn.log semantics (see the module
/// docs of [`crate::session`]).
pub struct FlowTable {
    ctx: Ctx,
    slab: Vec<Flow>,
    free_head: u32,
    index: HashTable<u32>,
    /// `(deadline seconds << 32) | slot`, earliest first. A flow's live entry is the one whose
    /// seconds equal its `timer_at`; others are stale and skipped. Never grows past the
    /// capacity it is made with (see `push_timer`).
    heap: BinaryHeap<Reverse<u64>>,
    open: usize,
    /// Slots still to emit in the flush begun by `begin_flush`, last first.
    flushing: Vec<u32>,
    stats: TableStats,
    spare: Spare,
    /// Data connections announced by control connections, not yet taken ([`FlowTable::take_expects`]).
    expects: Vec<Expected>,
}

impl FlowTable {
    /// A table with room for `cfg.max_flows` connections, allocated up front.
    pub fn new(cfg: SessionConfig) -> FlowTable {
        let cap = cfg.max_flows.max(1);
        FlowTable {
            ctx: Ctx::new(cfg),
            slab: Vec::with_capacity(cap),
            free_head: NO_SLOT,
            // The index starts small and grows with the open flows (at most to about twice the
            // cap, where hashbrown rehashes in place instead of growing): a sparse index sized
            // for a million flows holding fifty thousand costs a cache miss per lookup
            // (measured: 2.9 M summaries/s instead of 5 M on the 5M/200k bench capture).
            index: HashTable::with_capacity((2 * cap).min(INITIAL_INDEX)),
            heap: BinaryHeap::with_capacity(cap + cap / 4 + 16),
            open: 0,
            flushing: Vec::new(),
            stats: TableStats::default(),
            spare: Spare::default(),
            expects: Vec::new(),
        }
    }

    /// One summary, in packet-time order. Appends to `out` the records this packet finishes
    /// (the previous connection on its key, when it had ended by this packet's time or this is
    /// a new SYN on a closed one; a connection evicted to make room) and interim updates.
    pub fn on_summary(&mut self, s: &PacketSummary, out: &mut Vec<ConnRecord>) {
        self.on_summary_from(s, 0, out);
    }

    /// [`FlowTable::on_summary`] for a summary from collector `tap` (any number naming it; a
    /// round trip between packets of different taps is flagged `rtt_cross_tap`).
    pub fn on_summary_from(&mut self, s: &PacketSummary, tap: u16, out: &mut Vec<ConnRecord>) {
        self.stats.summaries += 1;
        let datagram = matches!(
            s.key.proto,
            ip_proto::UDP | ip_proto::ICMP | ip_proto::ICMPV6
        );
        if s.flags & flag::BAD_CHECKSUM != 0 && (datagram || s.key.proto == ip_proto::TCP) {
            self.stats.bad_checksum += 1;
        } else if datagram && s.flags & flag::TRUNCATED != 0 {
            self.stats.truncated_uncounted += 1;
        }
        let ip_tunnel = matches!(s.key.proto, ip_proto::GRE | 4 | 41);
        if s.flags & flag::TUNNEL_OUTER != 0 && ip_tunnel && !self.ctx.cfg.log_ip_tunnel_outer {
            self.stats.tunnel_outer_skipped += 1;
            return;
        }
        let hash = key_hash(&s.key);
        if let Some(slot) = self.find(hash, &s.key) {
            let f = &self.slab[slot];
            f.touch_timing(s);
            if !self.before_deadline(f, s.ts_ns) {
                self.finish(slot, hash, End::Packet, out);
            } else if s.key.proto == ip_proto::TCP && f.tcp_is_reuse(s) {
                self.finish(slot, hash, End::Reuse, out);
            } else {
                if f.interim_due(s.ts_ns, &self.ctx) {
                    out.push(f.record(&self.ctx, true, false));
                    self.stats.interim_records += 1;
                }
                self.slab[slot].apply_timed(s, tap, &self.ctx, false, &mut self.spare);
                self.schedule(slot);
                if s.payload.is_some() && s.key.proto == ip_proto::TCP {
                    let settings = &self.ctx.cfg.classify;
                    self.slab[slot].new_expects(s.ts_ns, settings, &mut self.expects);
                }
                return;
            }
        }
        self.create(hash, s, tap, out);
    }

    /// Ends every connection whose deadline is at or before `watermark_ns`, the input-minimum
    /// watermark (no later summary is older). Records are appended in (ts, key) order.
    pub fn sweep(&mut self, watermark_ns: u64, out: &mut Vec<ConnRecord>) {
        let start = out.len();
        while let Some(&Reverse(top)) = self.heap.peek() {
            let (secs, slot) = split(top);
            if u64::from(secs) * SECOND > watermark_ns {
                break;
            }
            self.heap.pop();
            let f = &self.slab[slot];
            if f.has_bit(bits::FREE) || f.timer_at != secs {
                continue;
            }
            let deadline = f.deadline(&self.ctx);
            if deadline <= watermark_ns {
                let hash = key_hash(&f.key);
                self.finish(slot, hash, End::Sweep, out);
            } else {
                self.push_timer(slot, to_secs(deadline));
            }
        }
        out[start..].sort_unstable_by_key(|r| (r.ts_ns, r.key));
    }

    /// End of stream: every open connection becomes a final record, in (last packet time,
    /// ts, key) order.
    /// The same as [`FlowTable::begin_flush`] then [`FlowTable::flush_next`] until empty.
    pub fn flush(&mut self, out: &mut Vec<ConnRecord>) {
        self.begin_flush();
        self.flush_next(usize::MAX, out);
    }

    /// End of stream, in steps: orders the open connections by (last packet time, first
    /// packet time, key), the order [`FlowTable::flush`] emits them in, for
    /// [`FlowTable::flush_next`] to emit a few at a time. The last packet time first: it is
    /// the aggregator's release order, so each message of the flush can tell it that nothing
    /// ending before the next one's records is still to come ([`FlowTable::next_flush_end`]),
    /// and it writes records while the flush goes on instead of holding all of them to the
    /// end. A full table's records would take about twice the table's own memory at
    /// once (a [`ConnRecord`] and its strings are ~390 bytes); made a message's worth at a
    /// time they take almost none. No summary may be given to the table until the flush is
    /// drained.
    pub fn begin_flush(&mut self) {
        let slab = &self.slab;
        let mut order: Vec<(u64, u64, u32)> = (0..slab.len())
            .filter(|&i| !slab[i].has_bit(bits::FREE))
            .map(|i| (slab[i].end_ts(), slab[i].first_ts, i as u32))
            .collect();
        // Keys are unique among open flows: the order is total, the same as sorting records.
        order.sort_unstable_by(|a, b| {
            (a.0, a.1)
                .cmp(&(b.0, b.1))
                .then_with(|| slab[a.2 as usize].key.cmp(&slab[b.2 as usize].key))
        });
        self.flushing = order.into_iter().rev().map(|(_, _, slot)| slot).collect();
        if self.flushing.is_empty() {
            self.clear();
        }
    }

    /// The last packet time (a record's `ts` plus its duration) of the next record of the
    /// flush; every record still to come ends at or after it. `None` when the flush is out.
    pub fn next_flush_end(&self) -> Option<u64> {
        self.flushing
            .last()
            .map(|&slot| self.slab[slot as usize].end_ts())
    }

    /// Open connections [`FlowTable::begin_flush`] ordered that are not emitted yet.
    pub fn flush_pending(&self) -> usize {
        self.flushing.len()
    }

    /// Appends the next (at most) `n` records of the flush begun by
    /// [`FlowTable::begin_flush`]; once the last is out, the table is empty.
    pub fn flush_next(&mut self, n: usize, out: &mut Vec<ConnRecord>) {
        if self.flushing.is_empty() {
            return;
        }
        for _ in 0..n {
            let Some(slot) = self.flushing.pop() else {
                break;
            };
            let f = &self.slab[slot as usize];
            out.push(f.record(&self.ctx, false, false));
            self.stats.records += 1;
            self.stats.ended_by_flush += 1;
            if f.has_bit(bits::HIST_TRUNCATED) {
                self.stats.history_truncated += 1;
            }
        }
        if self.flushing.is_empty() {
            self.clear();
        }
    }

    /// Empties the table (keeping its allocations) once a flush is out.
    fn clear(&mut self) {
        self.flushing = Vec::new();
        self.slab.clear();
        self.index.clear();
        self.heap.clear();
        self.free_head = NO_SLOT;
        self.open = 0;
    }

    /// A processor-set switch moved some flows away: every open connection whose key `moved`
    /// selects ends now, its record marked [`tapflow_proto::conn::split::CLOSED`], in (ts, key)
    /// order. Returns how many ended.
    pub fn close_moved(
        &mut self,
        moved: impl Fn(&FlowKey) -> bool,
        out: &mut Vec<ConnRecord>,
    ) -> u64 {
        let start = out.len();
        let slots: Vec<usize> = (0..self.slab.len())
            .filter(|&i| !self.slab[i].has_bit(bits::FREE) && moved(&self.slab[i].key))
            .collect();
        for &slot in &slots {
            let hash = key_hash(&self.slab[slot].key);
            self.slab[slot].set_bit(bits::SPLIT_CLOSED, true);
            self.finish(slot, hash, End::Sweep, out);
        }
        out[start..].sort_unstable_by_key(|r| (r.ts_ns, r.key));
        slots.len() as u64
    }

    /// Marks the open connection on `key` as continuing one another processor closed at a
    /// processor-set switch.
    pub fn mark_continued(&mut self, key: &FlowKey) {
        if let Some(slot) = self.find(key_hash(key), key) {
            self.slab[slot].set_bit(bits::SPLIT_CONTINUED, true);
        }
    }

    /// First packet time of the open connection on `key`, if there is one (its uid is
    /// `tapflow_proto::conn::uid(key, first_ts)`).
    pub fn first_ts(&self, key: &FlowKey) -> Option<u64> {
        self.find(key_hash(key), key)
            .map(|slot| self.slab[slot].first_ts)
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            open_flows: self.open as u64,
            ..self.stats
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.ctx.cfg
    }

    /// Bytes of one flow record in the slab.
    pub fn flow_entry_bytes() -> usize {
        std::mem::size_of::<Flow>()
    }

    /// Bytes of the timing box a flow gets at its second counted packet (not in
    /// [`FlowTable::memory_bytes`]; at most one per open flow).
    pub fn timing_box_bytes() -> usize {
        super::timing::BOX_BYTES
    }

    /// Bytes per connection at full table: [`FlowTable::memory_bytes`] over `max_flows`.
    pub fn bytes_per_flow(&self) -> usize {
        self.memory_bytes().div_ceil(self.ctx.cfg.max_flows.max(1))
    }

    /// Bytes the table holds at full table, from the sizes it is made with (a process adds its
    /// fixed overheads and the records on their way out; README, "Bounded"): the slab of
    /// `max_flows` [`Flow`]s, the deadline heap, and the index at the largest it can grow to.
    /// hashbrown grows a full index (no room left, tombstones included) to twice its buckets
    /// while it holds more than 7/16 of them, else rehashes it in place: holding at most
    /// `max_flows`, it ends at the power of two above `max_flows * 16 / 7` buckets at most,
    /// each a 4-byte slot plus a control byte (plus one group of control bytes). While it
    /// grows, the half-size index is freed only after the move, so the peak is 1.5 times this.
    pub fn memory_bytes(&self) -> usize {
        let flows = self.ctx.cfg.max_flows.max(1);
        let grown = (flows + 1)
            .saturating_mul(16)
            .div_ceil(7)
            .next_power_of_two();
        let initial = ((2 * flows).min(INITIAL_INDEX) * 8)
            .div_ceil(7)
            .next_power_of_two();
        let buckets = grown.max(initial);
        let index = buckets * (std::mem::size_of::<u32>() + 1) + INDEX_GROUP;
        let heap = self.heap.capacity() * std::mem::size_of::<u64>();
        let slab = self.slab.capacity() * std::mem::size_of::<Flow>();
        slab + index + heap
    }

    /// Bytes the index holds now (at most its share of [`FlowTable::memory_bytes`]).
    pub fn index_bytes(&self) -> usize {
        self.index.allocation_size()
    }

    fn find(&self, hash: u64, key: &FlowKey) -> Option<usize> {
        let slab = &self.slab;
        self.index
            .find(hash, |&i| slab[i as usize].key == *key)
            .map(|&i| i as usize)
    }

    fn create(&mut self, hash: u64, s: &PacketSummary, tap: u16, out: &mut Vec<ConnRecord>) {
        if self.open >= self.ctx.cfg.max_flows.max(1) {
            self.evict(out);
        }
        let mut f = Flow::new(s, &self.ctx);
        f.apply_timed(s, tap, &self.ctx, true, &mut self.spare);
        let slot = if self.free_head != NO_SLOT {
            let slot = self.free_head as usize;
            self.free_head = self.slab[slot].timer_at;
            self.slab[slot] = f;
            slot
        } else {
            self.slab.push(f);
            self.slab.len() - 1
        };
        let slab = &self.slab;
        self.index
            .insert_unique(hash, slot as u32, |&i| key_hash(&slab[i as usize].key));
        let deadline = to_secs(self.slab[slot].deadline(&self.ctx));
        self.push_timer(slot, deadline);
        self.open += 1;
        self.stats.flows_created += 1;
        if s.payload.is_some() && s.key.proto == ip_proto::TCP {
            let settings = &self.ctx.cfg.classify;
            self.slab[slot].new_expects(s.ts_ns, settings, &mut self.expects);
        }
    }

    /// Takes the data connections announced since the last call (control connections'
    /// evidence parsed as it arrived), in packet order.
    pub fn take_expects(&mut self) -> Vec<Expected> {
        std::mem::take(&mut self.expects)
    }

    /// The payload evidence an open connection holds: its originator's and responder's
    /// stream prefixes (TCP; empty for UDP), `None` when it has none.
    pub fn evidence(&self, key: &FlowKey) -> Option<[Vec<u8>; 2]> {
        let slot = self.find(key_hash(key), key)?;
        self.slab[slot].evidence_streams()
    }

    /// Whether announced connections wait to be taken.
    pub fn has_expects(&self) -> bool {
        !self.expects.is_empty()
    }

    /// Whether `t` is before the flow's deadline. `timer_at` is never past the deadline
    /// rounded up to whole seconds (`schedule` lowers it after every packet; a sweep or an
    /// eviction raises it only to the deadline): a packet at least a second before it cannot
    /// have outlived the flow, and the deadline is computed only for the others.
    fn before_deadline(&self, f: &Flow, t: u64) -> bool {
        let surely_before = t < u64::from(f.timer_at).saturating_sub(1) * SECOND;
        debug_assert!(!surely_before || t < f.deadline(&self.ctx));
        surely_before || t < f.deadline(&self.ctx)
    }

    /// Whether every open flow's `timer_at` is at or before its deadline rounded up to
    /// seconds, and the shortcut of [`FlowTable::before_deadline`] agrees with the deadline
    /// itself for a packet at `t` (the fast path against the slow one).
    #[cfg(test)]
    pub(super) fn shortcut_agrees(&self, t: u64) -> bool {
        self.slab
            .iter()
            .filter(|f| !f.has_bit(bits::FREE))
            .all(|f| {
                f.timer_at <= to_secs(f.deadline(&self.ctx))
                    && self.before_deadline(f, t) == (t < f.deadline(&self.ctx))
            })
    }

    /// Makes the flow's heap entry no later than its current deadline.
    fn schedule(&mut self, slot: usize) {
        let secs = to_secs(self.slab[slot].deadline(&self.ctx));
        if secs < self.slab[slot].timer_at {
            self.push_timer(slot, secs);
        }
    }

    fn push_timer(&mut self, slot: usize, secs: u32) {
        self.slab[slot].timer_at = secs;
        if self.heap.len() == self.heap.capacity() {
            // Stale entries (of ended flows, or superseded by an earlier deadline) would grow
            // the heap with the connection rate; drop them instead of growing. At most one
            // entry per open flow is live, and the capacity exceeds `max_flows`, so this frees
            // room and runs at most once per `capacity - open` pushes.
            let slab = &self.slab;
            self.heap.retain(|&Reverse(e)| {
                let (secs, slot) = split(e);
                !slab[slot].has_bit(bits::FREE) && slab[slot].timer_at == secs
            });
        }
        self.heap.push(Reverse(u64::from(secs) << 32 | slot as u64));
    }

    /// Evicts the open connection with the earliest deadline.
    fn evict(&mut self, out: &mut Vec<ConnRecord>) {
        while let Some(Reverse(top)) = self.heap.pop() {
            let (secs, slot) = split(top);
            let f = &self.slab[slot];
            if f.has_bit(bits::FREE) || f.timer_at != secs {
                continue;
            }
            let now = to_secs(f.deadline(&self.ctx));
            if now > secs {
                self.push_timer(slot, now);
                continue;
            }
            let hash = key_hash(&f.key);
            self.finish(slot, hash, End::Evict, out);
            return;
        }
        // Unreachable while every open flow has a heap entry; stay correct regardless.
        if let Some(slot) = self.slab.iter().position(|f| !f.has_bit(bits::FREE)) {
            let hash = key_hash(&self.slab[slot].key);
            self.finish(slot, hash, End::Evict, out);
        }
    }

    /// Emits the final record of the flow in `slot` and frees the slot.
    fn finish(&mut self, slot: usize, hash: u64, how: End, out: &mut Vec<ConnRecord>) {
        let f = &self.slab[slot];
        out.push(f.record(&self.ctx, false, how == End::Evict));
        if f.has_bit(bits::HIST_TRUNCATED) {
            self.stats.history_truncated += 1;
        }
        self.stats.records += 1;
        match how {
            End::Packet => self.stats.ended_by_packet += 1,
            End::Reuse => self.stats.ended_by_reuse += 1,
            End::Sweep => self.stats.ended_by_sweep += 1,
            End::Evict => self.stats.evicted += 1,
        }
        if let Ok(entry) = self.index.find_entry(hash, |&i| i as usize == slot) {
            entry.remove();
        }
        let f = &mut self.slab[slot];
        f.bits = bits::FREE;
        f.extra = None;
        self.spare.give(f.timing.take());
        f.timer_at = self.free_head;
        self.free_head = slot as u32;
        self.open -= 1;
    }
}

fn split(entry: u64) -> (u32, usize) {
    ((entry >> 32) as u32, (entry & 0xffff_ffff) as usize)
}

/// Nanoseconds to whole seconds, rounded up (a heap entry never fires before its deadline).
fn to_secs(ns: u64) -> u32 {
    u32::try_from(ns.div_ceil(SECOND)).unwrap_or(u32::MAX)
}

/// A fast, fixed hash of the canonical key for the index (not the shard hash: it never leaves
/// this process).
fn key_hash(k: &FlowKey) -> u64 {
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    let tail = u64::from(k.proto)
        | u64::from(k.lo_port) << 8
        | u64::from(k.hi_port) << 24
        | u64::from(k.vlan) << 40;
    let words = [
        word(&k.lo.0[..8]),
        word(&k.lo.0[8..]),
        word(&k.hi.0[..8]),
        word(&k.hi.0[8..]),
        tail,
    ];
    let mut h = 0x243f_6a88_85a3_08d3u64;
    for w in words {
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31);
    }
    // murmur3's finaliser: every input bit reaches the top bits hashbrown tags with.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}
