//! Zeek's TCP state machine (`UpdateStateMachine` and the per-state updates it dispatches
//! to), role flips, connection reuse and the timers that end a connection.

use tapflow_proto::summary::tcp as tf;
use tapflow_proto::PacketSummary;

use super::{EpState, TcpEp};
use crate::session::flow::{bits, Ctx, Flow, L4};

impl Flow {
    /// `UpdateStateMachine` and the per-state updates it dispatches to. Returns whether the
    /// sender closed (Zeek's `do_close`).
    pub(super) fn state_machine(
        &mut self,
        e: &mut [TcpEp; 2],
        a: usize,
        s: &PacketSummary,
        is_orig: bool,
        ctx: &Ctx,
    ) -> bool {
        let b = 1 - a;
        let f = s.tcp_flags;
        let (syn, fin, rst, ack) = (
            f & tf::SYN != 0,
            f & tf::FIN != 0,
            f & tf::RST != 0,
            f & tf::ACK != 0,
        );
        let mut close = false;
        match e[a].state {
            EpState::Inactive => {
                if syn {
                    if is_orig {
                        e[a].set_state(if ack {
                            EpState::SynAckSent
                        } else {
                            EpState::SynSent
                        });
                        if ctx.cfg.tcp_attempt_delay_ns > 0
                            && (self.pending_at == 0 || self.has_bit(bits::PENDING_ATTEMPT))
                        {
                            self.pending_at = s.ts_ns.saturating_add(ctx.cfg.tcp_attempt_delay_ns);
                            self.bits |= bits::PENDING_ATTEMPT;
                        }
                    } else {
                        if !ack && e[b].state == EpState::SynAckSent && s.seq == e[a].start_seq {
                            // A SYN/SYN-ACK reversal: flip the roles and establish.
                            self.flip();
                            e[b].set_state(EpState::Established);
                            self.bits |= bits::SEEN_ORIG;
                        }
                        if e[b].state == EpState::SynSent {
                            e[b].set_state(EpState::Established);
                        }
                        e[a].set_state(EpState::Established);
                    }
                }
                if fin {
                    e[a].set_state(EpState::Closed);
                    close = true;
                }
                if rst {
                    e[a].set_state(EpState::Reset);
                    close = true;
                }
                if e[a].state == EpState::Inactive {
                    let orig = self.orig_index();
                    if !is_orig && s.payload_len == 0 && e[orig].state == EpState::SynSent {
                        // An ACK of a SYN ahead of the SYN-ACK: not a partial connection.
                    } else if ack && e[b].state == EpState::Established {
                        e[a].set_state(EpState::Established);
                        self.bits &= !bits::PARTIAL;
                        self.bits |= if is_orig {
                            bits::SEEN_ORIG
                        } else {
                            bits::SEEN_RESP
                        };
                    } else {
                        e[a].set_state(EpState::Partial);
                    }
                }
            }
            EpState::SynSent | EpState::SynAckSent => {
                if fin {
                    e[a].set_state(EpState::Closed);
                    close = true;
                }
                if rst {
                    e[a].set_state(EpState::Reset);
                    close = true;
                }
            }
            EpState::Established | EpState::Partial => {
                if syn && e[a].state == EpState::Partial && e[b].state == EpState::Inactive && !ack
                {
                    e[a].set_state(EpState::SynSent);
                }
                if fin && !rst {
                    e[a].set_state(EpState::Closed);
                    if e[b].state == EpState::Reset && e[b].prev_state == EpState::Closed {
                        // A FIN then a RST from the peer: normal termination after all.
                        e[b].set_state(EpState::Closed);
                    }
                    close = true;
                }
                if rst {
                    e[a].set_state(EpState::Reset);
                    close = true;
                }
            }
            EpState::Closed => {
                if rst && e[b].state != EpState::Closed {
                    e[a].set_state(EpState::Reset);
                    if !e[a].did_close() {
                        close = true;
                    }
                    let at = s.ts_ns.saturating_add(ctx.cfg.tcp_reset_delay_ns);
                    if self.pending_at == 0
                        || self.has_bit(bits::PENDING_ATTEMPT)
                        || at < self.pending_at
                    {
                        self.pending_at = at;
                        self.bits &= !bits::PENDING_ATTEMPT;
                    }
                }
            }
            EpState::Reset => {}
        }
        close
    }

    /// Zeek's `FlipRoles` for TCP: the endpoints keep their state, their roles swap; the
    /// "first packet seen" bits swap and the partial flag clears. History is not rewritten.
    fn flip(&mut self) {
        self.bits ^= bits::ORIG_IS_LO;
        let (o, r) = (
            self.bits & bits::SEEN_ORIG != 0,
            self.bits & bits::SEEN_RESP != 0,
        );
        self.set_bit(bits::SEEN_ORIG, r);
        self.set_bit(bits::SEEN_RESP, o);
        self.bits &= !bits::PARTIAL;
        self.add_letter(b'^');
    }

    /// Zeek's `IsReuse`: does this SYN start a new connection on the same key?
    pub(in crate::session) fn tcp_is_reuse(&self, s: &PacketSummary) -> bool {
        let L4::Tcp(e) = &self.l4 else {
            return false;
        };
        if s.tcp_flags & tf::SYN == 0 {
            return false;
        }
        let (o, r) = (self.orig_index(), 1 - self.orig_index());
        let mut conn_orig = o;
        let ack = s.tcp_flags & tf::ACK != 0;
        if ack {
            if e[o].state != EpState::Inactive {
                return false;
            }
            conn_orig = r;
        }
        if !(e[o].did_close() || e[r].did_close()) {
            if s.seq == e[conn_orig].start_seq {
                return false;
            }
            if !ack
                && e[conn_orig].state == EpState::SynAckSent
                && e[r].state == EpState::Inactive
                && s.seq == e[r].start_seq
            {
                return false;
            }
        }
        true
    }

    /// The earliest time at which one of Zeek's TCP timers ends this connection.
    pub(in crate::session) fn tcp_deadline(&self, e: &[TcpEp; 2], ctx: &Ctx) -> u64 {
        let cfg = &ctx.cfg;
        let idle = if e[0].state.in_handshake() && e[1].state.in_handshake() {
            cfg.tcp_handshake_inactivity_ns
        } else {
            cfg.tcp_inactivity_ns
        };
        let mut d = self.last_ts.saturating_add(idle);
        if self.pending_at != 0 {
            let (o, r) = (self.orig_index(), 1 - self.orig_index());
            let attempt_live = matches!(e[o].state, EpState::SynSent | EpState::SynAckSent)
                && e[r].state == EpState::Inactive;
            if !self.has_bit(bits::PENDING_ATTEMPT) || attempt_live {
                d = d.min(self.pending_at);
            }
        }
        // Zeek's ExpireTimer: idle past the linger time with both sides closed, a side reset,
        // or a side closed facing a silent peer (or nothing valid seen at all).
        let closed = (e[0].did_close(), e[1].did_close());
        let reset = e[0].state == EpState::Reset || e[1].state == EpState::Reset;
        let inactive = e[0].state == EpState::Inactive || e[1].state == EpState::Inactive;
        let both_inactive = e[0].state == EpState::Inactive && e[1].state == EpState::Inactive;
        if ((closed.0 || closed.1) && ((closed.0 && closed.1) || reset || inactive))
            || both_inactive
        {
            d = d.min(
                self.last_ts
                    .saturating_add(cfg.tcp_linger_ns)
                    .saturating_add(1),
            );
        }
        d
    }
}
