//! Latency and jitter of one connection (issue 15), kept in a cold box beside the flow.
//!
//! - **Handshake** (TCP): `synack` is the SYN/ACK's time minus the time of the last SYN before
//!   it, when the SYN/ACK acknowledges that SYN's sequence number + 1 (Argus's `synack`);
//!   `ackdat` is the time of the first non-SYN ACK from the SYN's sender minus the SYN/ACK's,
//!   when it acknowledges the SYN/ACK's sequence number + 1 (Argus's `ackdat`). Only the last
//!   SYN is kept: a SYN/ACK answering an earlier SYN with another sequence number does not
//!   validate, and is ignored. A repeated SYN/ACK restarts `ackdat` (Argus measures it from the
//!   last SYN/ACK). Nothing is
//!   measured when the first packet counted is not a SYN (mid-stream), when both sides send a
//!   SYN without ACK (simultaneous open), or when the first ACK after the SYN/ACK (or a RST)
//!   does not acknowledge it.
//! - **Inter-arrival times**: the gaps between consecutive packets the flow counts, per
//!   counting slot (the orientation `orig_pkts`/`resp_pkts` use). Their count and sum are
//!   derived (the slot's packets minus one; the last time minus the first, telescoped), so a
//!   packet updates only the last time, min, max and sum of squares ([`Gaps`]).
//! - **Data round trips** (TCP), classic single-sample RTT estimation: per sending side at
//!   most one segment is timed at a time, a segment of new data (starting at or past the
//!   highest sequence number that side sent); the first acknowledgement from the other side
//!   at or past its end gives the sample. A retransmission overlapping the timed segment
//!   cancels it (Karn's rule), and a retransmission never starts one. SYN and RST segments are
//!   not timed; a flow's first packet is not either (its box does not exist yet).
//! - `cross_tap`: a round trip above was measured between packets from different collectors.
//!
//! The box is allocated at a flow's second counted packet (or at its first when that is not
//! the packet that created the flow): a flow of one packet costs nothing. The first packet is
//! recalled from the flow's own fields (`first_ts`, its counting slot, the TCP flags and
//! initial sequence number of its sender) and the collector index kept in `Flow::tap0`.
//! Every decision is by packet time and arrival order.

use tapflow_proto::conn::{DurStats, Timing};
use tapflow_proto::summary::tcp as tf;
use tapflow_proto::PacketSummary;

/// "Undefined" for a handshake time.
const NONE: u64 = u64::MAX;

/// Handshake progress, by physical side (0 = the key's `lo`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Hs {
    /// No packet seen yet.
    #[default]
    Start,
    /// The last SYN (without ACK) seen.
    Syn {
        side: u8,
        seq: u32,
        ts: u64,
        tap: u16,
    },
    /// The SYN/ACK that answered it.
    SynAck {
        side: u8,
        seq: u32,
        ts: u64,
        tap: u16,
    },
    /// Measured, or not measurable.
    Over,
}

/// One sending side's data-round-trip sampling (sequence numbers raw, compared modulo 2^32).
#[derive(Clone, Copy, Debug, Default)]
struct Sender {
    /// One past the highest sequence number of data sent, when `seen`.
    high: u32,
    start: u32,
    end: u32,
    ts: u64,
    tap: u16,
    seen: bool,
    timing: bool,
}

/// The gaps of one counting slot. Their count and sum are derived, not stored: `n` is the
/// slot's counted packets minus one (`Flow::pkts`, given to [`TimingState::record`]), and the
/// gaps telescope, so their sum is `last - base` (wrapping), `base` being the slot's first
/// packet time minus every backward step between consecutive packets (a packet older than the
/// one before it adds a gap of 0, as `saturating_sub`; see [`TimingState::gap`]). Exact while
/// the sum is below 2^64 ns.
#[derive(Clone, Copy, Debug)]
struct Gaps {
    base: u64,
    /// The last counted packet; `NONE` before the first.
    last: u64,
    /// `u64::MAX` before the first gap.
    min: u64,
    max: u64,
    sum_sq: u128,
}

impl Default for Gaps {
    fn default() -> Gaps {
        Gaps {
            base: 0,
            last: NONE,
            min: u64::MAX,
            max: 0,
            sum_sq: 0,
        }
    }
}

impl Gaps {
    /// The statistics of the slot's gaps, `pkts` being its counted packets.
    fn stats(&self, pkts: u64) -> DurStats {
        let n = pkts.saturating_sub(1);
        if n == 0 || self.last == NONE {
            return DurStats::default();
        }
        DurStats {
            n,
            sum: self.last.wrapping_sub(self.base),
            sum_sq: self.sum_sq,
            min: self.min,
            max: self.max,
        }
    }
}

/// A flow's timing state (boxed; see the module docs), in five cache lines laid out by use: a
/// packet touches its counting slot's gaps (line 0 or 1) and, for TCP, line 2 (`send`, `hs`);
/// the handshake's results (line 0) and `cross_tap` (line 1) are written a few times per
/// flow, the round-trip statistics (lines 3 and 4) when a round trip ends. [`TimingState::touch`]
/// starts loading a packet's lines early.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
pub(super) struct TimingState {
    /// Gaps of counting slot 0 (as `Flow::pkts`).
    iat0: Gaps,
    synack: u64,
    ackdat: u64,
    /// Gaps of counting slot 1.
    iat1: Gaps,
    cross_tap: bool,
    /// Keeps `send` and `hs` on line 2.
    _pad: [u8; 15],
    send: [Sender; 2],
    hs: Hs,
    /// By physical side of the data's sender.
    ack_rtt: [DurStats; 2],
}

const _: () = assert!(
    std::mem::size_of::<Hs>() == 16
        && std::mem::size_of::<Sender>() == 24
        && std::mem::size_of::<Gaps>() == 48
        && std::mem::offset_of!(TimingState, iat1) == 64
        && std::mem::offset_of!(TimingState, send) == 128
        && std::mem::offset_of!(TimingState, ack_rtt) == 192
);

impl Default for TimingState {
    fn default() -> TimingState {
        TimingState {
            iat0: Gaps::default(),
            synack: NONE,
            ackdat: NONE,
            iat1: Gaps::default(),
            cross_tap: false,
            _pad: [0; 15],
            send: [Sender::default(); 2],
            hs: Hs::Start,
            ack_rtt: [DurStats::default(); 2],
        }
    }
}

fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl TimingState {
    /// The state of a flow whose one counted packet so far, at `ts` in counting slot `k` from
    /// collector `tap`, was a SYN without ACK from physical side `syn.0` with sequence number
    /// `syn.1`, or (`None`) something else.
    pub(super) fn seeded(ts: u64, k: usize, tap: u16, syn: Option<(usize, u32)>) -> TimingState {
        let mut st = TimingState::default();
        let g = st.gaps(k);
        (g.base, g.last) = (ts, ts);
        st.hs = match syn {
            Some((side, seq)) => Hs::Syn {
                side: side as u8,
                seq,
                ts,
                tap,
            },
            None => Hs::Over,
        };
        st
    }

    fn gaps(&mut self, k: usize) -> &mut Gaps {
        if k == 0 {
            &mut self.iat0
        } else {
            &mut self.iat1
        }
    }

    /// A counted packet in counting slot `k` at `t`.
    pub(super) fn gap(&mut self, k: usize, t: u64) {
        let g = self.gaps(k);
        if g.last == NONE {
            g.base = t;
        } else {
            let gap = match t.checked_sub(g.last) {
                Some(gap) => gap,
                None => {
                    // Backwards: a gap of 0, and the telescoped sum must not shrink.
                    g.base = g.base.wrapping_sub(g.last - t);
                    0
                }
            };
            g.min = g.min.min(gap);
            g.max = g.max.max(gap);
            g.sum_sq = g.sum_sq.saturating_add(u128::from(gap) * u128::from(gap));
        }
        g.last = t;
    }

    /// Reads a word of each line a packet from physical side `a` may touch (its counting
    /// slot's gaps, and for TCP the senders and handshake), for the caller to hand to
    /// `std::hint::black_box` before the flow's own update: the cache misses then overlap it.
    pub(super) fn touch(&self, a: usize, tcp: bool) -> u64 {
        let g = if a == 0 {
            self.iat0.last
        } else {
            self.iat1.last
        };
        if tcp {
            g ^ u64::from(self.send[0].high)
        } else {
            g
        }
    }

    /// A counted TCP packet from physical side `a` (flags, numbers and time from `s`).
    pub(super) fn tcp(&mut self, s: &PacketSummary, a: usize, tap: u16) {
        let f = s.tcp_flags;
        let (syn, ack, rst) = (f & tf::SYN != 0, f & tf::ACK != 0, f & tf::RST != 0);
        self.handshake(s, a as u8, tap, (syn, ack, rst));
        let t = s.ts_ns;
        let b = 1 - a;
        if ack && !rst {
            let p = &mut self.send[b];
            if p.timing && !seq_lt(s.ack, p.end) {
                p.timing = false;
                self.ack_rtt[b].add(t.saturating_sub(p.ts));
                if p.tap != tap {
                    // Written only then: `cross_tap` is on a line a packet does not touch.
                    self.cross_tap = true;
                }
            }
        }
        let len = s.payload_len;
        if len == 0 || syn || rst {
            return;
        }
        let (start, end) = (s.seq, s.seq.wrapping_add(len));
        let me = &mut self.send[a];
        if !me.seen || !seq_lt(start, me.high) {
            me.seen = true;
            me.high = end;
            if !me.timing {
                (me.timing, me.start, me.end, me.ts, me.tap) = (true, start, end, t, tap);
            }
        } else {
            // Retransmitted, wholly or in part: Karn's rule.
            if me.timing && seq_lt(start, me.end) && seq_lt(me.start, end) {
                me.timing = false;
            }
            if seq_lt(me.high, end) {
                me.high = end;
            }
        }
    }

    fn handshake(
        &mut self,
        s: &PacketSummary,
        a: u8,
        tap: u16,
        (syn, ack, rst): (bool, bool, bool),
    ) {
        let t = s.ts_ns;
        self.hs = match self.hs {
            Hs::Start | Hs::Syn { .. } if syn && !ack && !rst => match self.hs {
                Hs::Syn { side, .. } if side != a => Hs::Over,
                _ => Hs::Syn {
                    side: a,
                    seq: s.seq,
                    ts: t,
                    tap,
                },
            },
            Hs::Start => Hs::Over,
            Hs::Syn {
                side,
                seq,
                ts,
                tap: syn_tap,
            } if syn && ack && !rst && side != a && s.ack == seq.wrapping_add(1) => {
                self.synack = t.saturating_sub(ts);
                self.cross_tap |= syn_tap != tap;
                Hs::SynAck {
                    side: a,
                    seq: s.seq,
                    ts: t,
                    tap,
                }
            }
            // A repeated SYN/ACK (the SYN was retransmitted) restarts `ackdat`, as Argus
            // measures it from the SYN/ACK sender's last one.
            Hs::SynAck { side, seq, .. } if syn && ack && !rst && side == a && s.seq == seq => {
                Hs::SynAck {
                    side,
                    seq,
                    ts: t,
                    tap,
                }
            }
            Hs::SynAck {
                side,
                seq,
                ts,
                tap: sa_tap,
            } if !syn && side != a && (ack || rst) => {
                if !rst && s.ack == seq.wrapping_add(1) {
                    self.ackdat = t.saturating_sub(ts);
                    self.cross_tap |= sa_tap != tap;
                }
                Hs::Over
            }
            other => other,
        };
    }

    /// The record's timing, oriented: `o` is the originator's counting slot and physical side;
    /// `pkts`: the flow's counted packets per slot.
    pub(super) fn record(&self, o: usize, pkts: [u64; 2]) -> Option<Box<Timing>> {
        let r = 1 - o;
        let defined = |v: u64| (v != NONE).then_some(v);
        let iat = [self.iat0.stats(pkts[0]), self.iat1.stats(pkts[1])];
        let t = Timing {
            tcp_synack_ns: defined(self.synack),
            tcp_ackdat_ns: defined(self.ackdat),
            orig_iat: iat[o],
            resp_iat: iat[r],
            orig_ack_rtt: self.ack_rtt[o],
            resp_ack_rtt: self.ack_rtt[r],
            rtt_cross_tap: self.cross_tap,
        };
        (!t.is_empty()).then(|| Box::new(t))
    }
}

/// Bytes of the timing box a flow gets at its second counted packet.
pub(super) const BOX_BYTES: usize = std::mem::size_of::<TimingState>();

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(ms: u64, flags: u8, seq: u32, ack: u32) -> PacketSummary {
        PacketSummary {
            ts_ns: ms * 1_000_000,
            tcp_flags: flags,
            seq,
            ack,
            ..PacketSummary::default()
        }
    }

    #[test]
    fn a_syn_from_each_side_is_a_simultaneous_open() {
        let mut st = TimingState::default();
        st.tcp(&pkt(0, tf::SYN, 100, 0), 0, 0);
        st.tcp(&pkt(1, tf::SYN, 300, 0), 1, 0);
        st.tcp(&pkt(2, tf::SYN | tf::ACK, 100, 301), 0, 0);
        st.tcp(&pkt(3, tf::SYN | tf::ACK, 300, 101), 1, 0);
        st.tcp(&pkt(4, tf::ACK, 101, 301), 0, 0);
        assert_eq!((st.synack, st.ackdat, st.hs), (NONE, NONE, Hs::Over));
        // The same without the second SYN validates.
        let mut st = TimingState::default();
        st.tcp(&pkt(0, tf::SYN, 100, 0), 0, 0);
        st.tcp(&pkt(3, tf::SYN | tf::ACK, 300, 101), 1, 0);
        st.tcp(&pkt(4, tf::ACK, 101, 301), 0, 0);
        assert_eq!((st.synack, st.ackdat), (3_000_000, 1_000_000));
    }
}
