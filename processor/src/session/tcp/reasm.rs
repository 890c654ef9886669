//! What Zeek's TCP reassembler decides that shows in conn.log, without keeping payload: content
//! gaps (`missed_bytes`, history `g`/`G`), end of data (EOF) and when a close takes effect.
//!
//! Zeek reassembles every TCP connection from its first packet (`dpd_reassemble_first_packets`),
//! starting at relative sequence number 1. Per endpoint this keeps the delivery point
//! (`last_reassem_seq`), how much delivered data is still unacknowledged (Zeek still buffers it)
//! and the ranges seen above a hole. When the peer acknowledges data above the delivery point,
//! the bytes never seen are gaps (`Undelivered`), reported when both endpoints are cleanly
//! established or closing.
//!
//! Out-of-order ranges live in the flow's side record, at most [`MAX_RANGES`] per endpoint
//! (past that the two highest merge, and the hole between them no longer counts as missed).

use super::{ep, EpState, TcpEp};
use crate::session::flow::{bits, Ctx, Flow};
use crate::session::history::{cased, scaled};

/// `tcp_max_initial_window`: with nothing acknowledged, delivered data past this is dropped.
const MAX_INITIAL_WINDOW: u64 = 16_384;
/// `tcp_max_above_hole_without_any_acks`.
const MAX_ABOVE_HOLE_WITHOUT_ACKS: u64 = 16_384;
/// `tcp_excessive_data_without_further_acks`.
const EXCESSIVE_DATA_WITHOUT_ACKS: u64 = 10 << 20;
/// Out-of-order ranges kept per endpoint.
pub(super) const MAX_RANGES: usize = 64;

type Ranges = Vec<(u64, u64)>;

impl TcpEp {
    /// The reassembler's trim point (data below it is old).
    fn trim_seq(&self) -> u64 {
        if self.has(ep::TRIM2) {
            2
        } else {
            self.reassem.get().saturating_sub(u64::from(self.unacked))
        }
    }

    /// Moves the delivery point to `to` (counting newly delivered bytes as unacknowledged when
    /// `buffered`), then through any out-of-order ranges that became contiguous.
    fn deliver_to(&mut self, to: u64, buffered: bool, ooo: &mut Ranges) {
        let at = self.reassem.get();
        if to > at {
            if buffered {
                self.unacked = self
                    .unacked
                    .saturating_add(u32::try_from(to - at).unwrap_or(u32::MAX));
            }
            self.reassem.set(to);
            if self.has(ep::TRIM2) && to >= 2 {
                self.bits &= !ep::TRIM2;
                self.unacked = u32::try_from(to - 2).unwrap_or(u32::MAX);
            }
        }
        while let Some(&(s, end)) = ooo.first() {
            if s > self.reassem.get() {
                break;
            }
            ooo.remove(0);
            if end > self.reassem.get() {
                self.deliver_to(end, true, ooo);
            }
        }
    }
}

/// Adds `[s, e)` to sorted, disjoint ranges.
fn insert(ooo: &mut Ranges, s: u64, e: u64) {
    let first = ooo.partition_point(|&(_, end)| end < s);
    let mut last = first;
    let (mut lo, mut hi) = (s, e);
    while last < ooo.len() && ooo[last].0 <= e {
        lo = lo.min(ooo[last].0);
        hi = hi.max(ooo[last].1);
        last += 1;
    }
    ooo.splice(first..last, [(lo, hi)]);
    if ooo.len() > MAX_RANGES {
        if let Some((_, end)) = ooo.pop() {
            if let Some(top) = ooo.last_mut() {
                top.1 = end;
            }
        }
    }
}

fn is_clean(e: &TcpEp) -> bool {
    e.state == EpState::Established
        || (e.state == EpState::Closed && e.prev_state == EpState::Established)
}

impl Flow {
    fn take_ranges(&mut self, a: usize) -> Ranges {
        self.extra
            .as_mut()
            .map(|x| std::mem::take(&mut x.ooo[a]))
            .unwrap_or_default()
    }

    fn put_ranges(&mut self, a: usize, r: Ranges) {
        if r.capacity() > 0 {
            self.extra_mut().ooo[a] = r;
        }
    }

    fn has_ranges(&self, a: usize) -> bool {
        self.extra.as_ref().is_some_and(|x| !x.ooo[a].is_empty())
    }

    /// `TCP_Reassembler::DataSent` for endpoint `a`'s payload at relative `seq`.
    pub(super) fn data_sent(&mut self, e: &mut [TcpEp; 2], a: usize, seq: u64, len: u32) {
        let b = 1 - a;
        if e[a].has(ep::SKIP) {
            return;
        }
        let upper = seq.wrapping_add(u64::from(len));
        let trim = e[a].trim_seq();
        if upper <= trim || upper < seq {
            return;
        }
        let seq = seq.max(trim);
        let mut ooo = self.take_ranges(a);
        if seq <= e[a].reassem.get() {
            e[a].deliver_to(upper, true, &mut ooo);
        } else {
            insert(&mut ooo, seq, upper);
        }
        // BlockInserted: with nothing acknowledged and much sent, stop holding delivered data.
        if e[a].no_data_acked() && e[a].size(e[b].state) > MAX_INITIAL_WINDOW {
            e[a].unacked = 0;
        }
        let at = e[a].reassem.get();
        let above_hole = ooo.last().map_or(0, |&(_, end)| end - at);
        let buffered = u64::from(e[a].unacked) + ooo.iter().map(|&(s, end)| end - s).sum::<u64>();
        if (e[a].no_data_acked() && above_hole > MAX_ABOVE_HOLE_WITHOUT_ACKS)
            || buffered > EXCESSIVE_DATA_WITHOUT_ACKS
        {
            ooo.clear();
            e[a].unacked = 0;
            e[a].bits |= ep::SKIP;
        }
        self.put_ranges(a, ooo);
    }

    /// `TCP_Reassembler::AckReceived` for endpoint `a`, acknowledged up to relative `seq`.
    pub(super) fn ack_received(&mut self, e: &mut [TcpEp; 2], a: usize, seq: u64, ctx: &Ctx) {
        let mut seq = seq;
        if e[a].has(ep::FIN_SEEN) {
            let fin = e[a].fin_seq();
            if seq >= fin {
                seq = fin.wrapping_sub(1);
            }
        }
        if seq <= e[a].trim_seq() {
            return;
        }
        if seq > e[a].reassem.get() {
            self.undelivered(e, a, seq);
        }
        // Trim: everything below `seq` leaves the buffer.
        let at = e[a].reassem.get();
        if seq > at {
            // Only after the partial-connection early return in `undelivered`.
            e[a].bits |= ep::TRIM2;
            e[a].unacked = 0;
        } else {
            e[a].unacked = u32::try_from(at - seq).unwrap_or(u32::MAX);
        }
        self.check_eof(e, a, ctx);
    }

    /// `TCP_Reassembler::Undelivered`: the peer acknowledged up to `up_to`, beyond what was
    /// delivered; the bytes never seen are gaps.
    fn undelivered(&mut self, e: &mut [TcpEp; 2], a: usize, up_to: u64) {
        if up_to <= 2 && self.has_bit(bits::PARTIAL) {
            // The faked initial sequence number of a partial connection: ignored, and the
            // delivery point is not moved (Zeek's behaviour).
            return;
        }
        let mut ooo = self.take_ranges(a);
        if !e[a].has(ep::SKIP) {
            while let Some(&(s, end)) = ooo.first() {
                if s >= up_to {
                    break;
                }
                ooo.remove(0);
                let at = e[a].reassem.get();
                self.gap(e, a, s.saturating_sub(at));
                e[a].reassem.set(s.max(at));
                e[a].deliver_to(end, true, &mut ooo);
            }
            let at = e[a].reassem.get();
            if up_to > at {
                self.gap(e, a, up_to - at);
            }
        }
        e[a].deliver_to(up_to, false, &mut ooo);
        self.put_ranges(a, ooo);
    }

    fn gap(&mut self, e: &mut [TcpEp; 2], a: usize, len: u64) {
        if len == 0 || !(is_clean(&e[a]) && is_clean(&e[1 - a])) {
            return;
        }
        if scaled(&mut e[a].gaps) {
            self.add_letter(cased(b'G', self.is_orig(a)));
        }
        let x = self.extra_mut();
        x.missed_bytes = x.missed_bytes.saturating_add(len);
    }

    /// `TCP_Reassembler::DataPending` for endpoint `a`.
    fn data_pending(&self, e: &[TcpEp; 2], a: usize) -> bool {
        if e[a].has(ep::SKIP) {
            return false;
        }
        let delivered = u64::from(e[a].start_seq) + e[a].reassem.get();
        let last = TcpEp::full(e[a].last_seq, e[a].seq_wraps);
        if last < delivered {
            return false;
        }
        if delivered + 1 != last && delivered != last {
            return true;
        }
        // The peer's reassembler still buffers something (`HasUndeliveredData`).
        let b = 1 - a;
        e[a].state != EpState::Reset && (e[b].unacked > 0 || self.has_ranges(b))
    }

    /// `TCP_Reassembler::CheckEOF`: once a closing endpoint has delivered everything, a close
    /// that waited for it takes effect.
    pub(super) fn check_eof(&mut self, e: &mut [TcpEp; 2], a: usize, ctx: &Ctx) {
        if e[a].has(ep::DID_EOF)
            || !(e[a].has(ep::FIN_SEEN) || matches!(e[a].state, EpState::Closed | EpState::Reset))
            || self.data_pending(e, a)
        {
            return;
        }
        e[a].bits |= ep::DID_EOF;
        if self.has_bit(bits::CLOSE_DEFERRED) {
            self.connection_closed(e, a, ctx);
            self.bits &= !bits::CLOSE_DEFERRED;
        }
    }

    /// `ConnectionClosed`: endpoint `a` closed (FIN or RST). A complete close (this side reset,
    /// both sides closed, or the peer silent) removes the connection `tcp_close_delay` after
    /// its last packet.
    pub(super) fn connection_closed(&mut self, e: &mut [TcpEp; 2], a: usize, ctx: &Ctx) {
        let b = 1 - a;
        if self.data_pending(e, a) {
            self.bits |= bits::CLOSE_DEFERRED;
            return;
        }
        self.bits &= !bits::CLOSE_DEFERRED;
        if e[a].did_close() {
            return;
        }
        e[a].bits |= ep::DID_CLOSE;
        let complete =
            e[a].state == EpState::Reset || e[b].did_close() || e[b].state == EpState::Inactive;
        if complete {
            self.pending_at = self
                .last_ts
                .saturating_add(ctx.cfg.tcp_close_delay_ns)
                .max(1);
            self.bits &= !bits::PENDING_ATTEMPT;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(inserts: &[(u64, u64)], want: &[(u64, u64)]) {
        let mut r = Vec::new();
        for &(s, e) in inserts {
            insert(&mut r, s, e);
        }
        assert_eq!(r, want, "{inserts:?}");
    }

    #[test]
    fn ranges_merge_on_overlap_and_adjacency() {
        check(&[(10, 20), (30, 40)], &[(10, 20), (30, 40)]);
        check(&[(30, 40), (10, 20)], &[(10, 20), (30, 40)]);
        check(&[(10, 20), (20, 30)], &[(10, 30)]);
        check(&[(10, 20), (30, 40), (15, 35)], &[(10, 40)]);
        check(&[(10, 20), (30, 40), (50, 60), (5, 55)], &[(5, 60)]);
        check(&[(10, 20), (12, 18)], &[(10, 20)]);
        let many: Vec<(u64, u64)> = (0..MAX_RANGES as u64 + 1)
            .map(|i| (i * 10, i * 10 + 5))
            .collect();
        let mut r = Vec::new();
        for &(s, e) in &many {
            insert(&mut r, s, e);
        }
        assert_eq!(r.len(), MAX_RANGES);
        assert_eq!(
            r.last().copied(),
            Some(((MAX_RANGES as u64 - 1) * 10, MAX_RANGES as u64 * 10 + 5))
        );
    }
}
