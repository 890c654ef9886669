//! TCP as Zeek's TCP analyzer sees it: two endpoints with Zeek's states, sequence-number
//! bookkeeping (`TCP_Endpoint`), the per-packet procedure of `TCPSessionAdapter::Process` and
//! its state machine (`UpdateInactiveState` and friends). Content gaps, EOF and closing are in
//! [`reasm`]; the state machine, reuse and timers in [`machine`]; the endpoint itself and
//! `conn_state` in [`super::endpoint`].
//!
//! Endpoints are indexed physically (0 = the key's `lo` side, 1 = `hi`); which one is the
//! originator is the flow's `orig_is_lo` bit, so Zeek's role flip is one bit and every
//! per-endpoint counter follows its endpoint, as Zeek's do.

use tapflow_proto::summary::{flag, tcp as tf};
use tapflow_proto::PacketSummary;

use super::endpoint::{ep, EpState, TcpEp};
use super::flow::{bits, Ctx, Flow, L4};
use super::history::{bit, cased, scaled};

mod machine;
mod reasm;

/// Zeek's `TOO_LARGE_SEQ_DELTA`.
const TOO_LARGE_SEQ_DELTA: i32 = 1_048_576;

fn seq_delta(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// `get_relative_seq`: `cur` relative to the endpoint's start, with wraparounds, or the raw
/// (possibly negative, as Zeek casts it) delta when there were none.
fn relative_seq(e: &TcpEp, cur: u32, last: u32, wraps: u16, underflow: &mut bool) -> u64 {
    let mut wraps = u32::from(wraps);
    let delta = seq_delta(cur, last);
    if delta < 0 {
        if wraps > 0 && cur > last {
            wraps -= 1;
        }
    } else if delta > 0 && cur < last {
        wraps += 1;
    }
    if wraps == 0 {
        let d = seq_delta(cur, e.start_seq);
        if d < 0 {
            *underflow = true;
        }
        return i64::from(d) as u64;
    }
    e.relative(cur, wraps)
}

/// The sequence space a segment takes: its payload, plus one each for SYN and FIN; a RST's
/// payload takes none.
fn seg_len(len: u32, syn: bool, fin: bool, rst: bool) -> u32 {
    let mut seg_len = len
        .wrapping_add(u32::from(syn))
        .wrapping_add(u32::from(fin));
    if rst {
        seg_len = seg_len.wrapping_sub(len);
    }
    seg_len
}

/// An acknowledgement `ack` of peer `e`'s data: its number relative to `e`'s initial sequence
/// number (0 when it lies before it), and `e`'s highest acknowledged sequence moved on, unless
/// the packet is a RST. A peer not yet seen is numbered from the acknowledgement (relative 1).
fn acknowledged(e: &mut TcpEp, ack: u32, rst: bool) -> u64 {
    if e.state == EpState::Inactive {
        let x = ack.wrapping_sub(1);
        e.init_seqs(x, x);
        return 1;
    }
    let mut ack_underflow = false;
    let rel_ack = relative_seq(e, ack, e.ack_seq, e.ack_wraps, &mut ack_underflow);
    if ack_underflow {
        return 0;
    }
    if !rst {
        let d = seq_delta(ack, e.ack_seq);
        if !(ack == 0 && d > TOO_LARGE_SEQ_DELTA) && d > 0 {
            e.update_ack_seq(ack);
        }
    }
    rel_ack
}

/// `init_endpoint`.
fn init_endpoint(e: &mut TcpEp, syn: bool, seq: u32, last: u32) {
    match e.state {
        EpState::Inactive => {
            if syn {
                e.init_seqs(seq, last);
            } else {
                // A partial connection: number as though a SYN was seen, but do not mark the
                // first packet a duplicate.
                e.init_seqs(seq.wrapping_sub(1), seq);
            }
        }
        EpState::SynSent | EpState::SynAckSent => {
            if syn && seq != e.start_seq {
                e.init_seqs(seq, last);
            }
        }
        EpState::Established | EpState::Partial => {
            if syn {
                e.init_seqs(seq, last);
            }
        }
        EpState::Reset => {
            if syn && e.prev_state == EpState::Inactive {
                e.init_seqs(seq, last);
            }
        }
        EpState::Closed => {}
    }
}

impl Flow {
    /// One TCP packet from physical endpoint `a` (`TCPSessionAdapter::Process`).
    pub(super) fn tcp_packet(&mut self, s: &PacketSummary, a: usize, ctx: &Ctx) {
        let L4::Tcp(mut e) = self.l4 else {
            return;
        };
        let b = 1 - a;
        let t = s.ts_ns;
        let f = s.tcp_flags;
        let (syn, fin, rst, ack) = (
            f & tf::SYN != 0,
            f & tf::FIN != 0,
            f & tf::RST != 0,
            f & tf::ACK != 0,
        );
        let len = s.payload_len;
        let is_orig = self.is_orig(a);

        if s.flags & flag::BAD_CHECKSUM != 0 {
            if scaled(&mut self.extra_mut().tcp_bad_checksums[a]) {
                self.add_letter(cased(b'C', is_orig));
            }
            return;
        }
        self.set_partial_status(syn, ack, is_orig);

        let one_past = s.seq.wrapping_add(seg_len(len, syn, fin, rst));
        init_endpoint(&mut e[a], syn, s.seq, one_past);
        let mut underflow = false;
        let rel_seq = relative_seq(&e[a], s.seq, e[a].last_seq, e[a].seq_wraps, &mut underflow);

        self.tcp_history(&mut e[a], is_orig, (syn, fin, rst, ack), rel_seq, len);
        if s.window == 0
            && !rst
            && e[b].state != EpState::Closed
            && e[a].state != EpState::Reset
            && scaled(&mut e[a].win0)
        {
            self.add_letter(cased(b'W', is_orig));
        }
        if !(e[0].did_close() && e[1].did_close()) {
            self.last_ts = t;
        }
        if fin {
            e[a].bits |= ep::FIN_SEEN;
        }
        let rel_ack = if ack {
            acknowledged(&mut e[b], s.ack, rst)
        } else {
            0
        };
        self.update_last_seq(&mut e[a], one_past, (syn, fin, rst), len, is_orig);
        let close = self.state_machine(&mut e, a, s, is_orig, ctx);
        if ack {
            self.ack_received(&mut e, b, rel_ack, ctx);
        }
        // The ConnSize analyzer counts the packet with the role it had when it arrived, in the
        // orientation after any flip this packet caused (as Zeek does).
        let slot = if self.is_orig(a) == is_orig { a } else { b };
        self.count(slot, s.ip_len);
        self.bits |= if is_orig {
            bits::SEEN_ORIG
        } else {
            bits::SEEN_RESP
        };

        let rel_data_seq = if syn {
            rel_seq.wrapping_add(1)
        } else {
            rel_seq
        };
        if len > 0 && !rst && !underflow && s.flags & flag::TRUNCATED == 0 {
            self.data_sent(&mut e, a, rel_data_seq, len);
        }
        self.check_eof(&mut e, a, ctx);
        if close {
            self.connection_closed(&mut e, a, ctx);
        }
        self.l4 = L4::Tcp(e);
    }

    /// `SetPartialStatus`.
    fn set_partial_status(&mut self, syn: bool, ack: bool, is_orig: bool) {
        if is_orig {
            if self.bits & bits::SEEN_ORIG == 0 {
                self.set_bit(bits::PARTIAL, !syn || ack);
            }
        } else if self.bits & bits::SEEN_RESP == 0 && self.bits & bits::PARTIAL == 0 {
            self.set_bit(bits::PARTIAL, !syn);
        }
    }

    /// `update_history`.
    fn tcp_history(
        &mut self,
        e: &mut TcpEp,
        is_orig: bool,
        (syn, fin, rst, ack): (bool, bool, bool, bool),
        rel_seq: u64,
        len: u32,
    ) {
        let shift = if is_orig { 0 } else { bit::RESP };
        let n = u8::from(syn) + u8::from(fin) + u8::from(rst);
        if n > 1 {
            if fin && rst {
                self.check_history(bit::FIN_RST << shift, cased(b'I', is_orig));
            } else {
                self.check_history(bit::MULTI_FLAG << shift, cased(b'Q', is_orig));
            }
        } else if n == 1 {
            let (mask, code, at, slot) = if syn {
                (bit::SYN, if ack { b'H' } else { b'S' }, rel_seq, 0)
            } else if fin {
                (bit::FIN, b'F', rel_seq.wrapping_add(u64::from(len)), 1)
            } else {
                (bit::RST, b'R', rel_seq, 2)
            };
            let code = cased(code, is_orig);
            if self.check_history(mask << shift, code) && at as u16 != e.hist_last[slot] {
                self.add_letter(code);
            }
            e.hist_last[slot] = at as u16;
        } else if len > 0 {
            self.check_history(bit::DATA << shift, cased(b'D', is_orig));
        } else if ack {
            self.check_history(bit::ACK << shift, cased(b'A', is_orig));
        }
    }

    /// `update_last_seq`; a retransmission of payload is recorded (`T`).
    fn update_last_seq(
        &mut self,
        e: &mut TcpEp,
        last: u32,
        (syn, fin, rst): (bool, bool, bool),
        len: u32,
        is_orig: bool,
    ) {
        let delta = seq_delta(last, e.last_seq);
        if (syn || rst) && !(-TOO_LARGE_SEQ_DELTA..=TOO_LARGE_SEQ_DELTA).contains(&delta) {
            // Not trusted.
        } else if fin && e.last_seq == e.start_seq.wrapping_add(1) {
            e.update_last_seq(last);
        } else if e.state == EpState::Reset {
            // Nothing after a RST is trusted.
        } else if delta > 0 {
            e.update_last_seq(last);
        } else if len > 0 && scaled(&mut e.rxmt) {
            self.add_letter(cased(b'T', is_orig));
        }
    }
}
