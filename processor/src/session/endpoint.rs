//! One TCP endpoint as Zeek's TCP analyzer keeps it (`TCP_Endpoint`): its state, sequence
//! bookkeeping and content counters, and the connection's `conn_state` derived from the two
//! endpoints' states. Plain data and pure functions: the per-packet procedure that moves them
//! is in [`super::tcp`], which, like [`super::flow`], builds on this module.

use super::history::looks_like_rstos0;
use super::ConnState;

/// Zeek's `EndpointState`, in its order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(super) enum EpState {
    #[default]
    Inactive,
    SynSent,
    SynAckSent,
    Partial,
    Established,
    Closed,
    Reset,
}

impl EpState {
    pub(super) fn in_handshake(self) -> bool {
        matches!(
            self,
            EpState::Inactive | EpState::SynSent | EpState::SynAckSent
        )
    }
}

/// [`TcpEp::bits`].
pub(super) mod ep {
    pub const FIN_SEEN: u8 = 1 << 0;
    pub const DID_CLOSE: u8 = 1 << 1;
    pub const DID_EOF: u8 = 1 << 2;
    /// The reassembler gave up (`skip_deliveries`).
    pub const SKIP: u8 = 1 << 3;
    /// The reassembler's trim point is 2 while its delivery point is 1 (see `ack_received`).
    pub const TRIM2: u8 = 1 << 4;
}

/// A 48-bit unsigned number in three `u16`s, to keep the endpoint record 4-byte aligned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct U48([u16; 3]);

impl U48 {
    pub fn get(self) -> u64 {
        u64::from(self.0[0]) | u64::from(self.0[1]) << 16 | u64::from(self.0[2]) << 32
    }

    pub fn set(&mut self, v: u64) {
        let v = v.min((1 << 48) - 1);
        self.0 = [v as u16, (v >> 16) as u16, (v >> 32) as u16];
    }
}

/// One TCP endpoint: Zeek's `TCP_Endpoint` fields that shape conn.log, plus a compact model of
/// its reassembler (relative sequence numbers, as Zeek's reassembler uses).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TcpEp {
    pub state: EpState,
    pub prev_state: EpState,
    pub bits: u8,
    pub start_seq: u32,
    pub last_seq: u32,
    pub ack_seq: u32,
    pub seq_wraps: u16,
    pub ack_wraps: u16,
    /// Low 16 bits of the relative sequence number of the last SYN, FIN and RST (history: a
    /// repeated one gets a letter only at a new sequence number).
    pub hist_last: [u16; 3],
    /// Scaled-history counts: retransmissions (`T`), zero windows (`W`), gaps (`G`).
    pub rxmt: u16,
    pub win0: u16,
    pub gaps: u16,
    /// Reassembler: bytes delivered but not yet acknowledged (still buffered in Zeek).
    pub unacked: u32,
    /// Reassembler: next relative sequence number to deliver (`last_reassem_seq`). Data seen
    /// above it (out of order) is kept as ranges in the flow's side record.
    pub reassem: U48,
}

impl TcpEp {
    pub fn new() -> TcpEp {
        let mut e = TcpEp::default();
        e.reassem.set(1);
        e
    }

    pub fn has(&self, b: u8) -> bool {
        self.bits & b != 0
    }

    pub fn did_close(&self) -> bool {
        self.has(ep::DID_CLOSE)
    }

    pub(super) fn set_state(&mut self, s: EpState) {
        if s != self.state {
            self.prev_state = self.state;
            self.state = s;
        }
    }

    pub(super) fn init_seqs(&mut self, start: u32, last: u32) {
        self.start_seq = start;
        self.ack_seq = start;
        self.last_seq = last;
    }

    pub(super) fn update_last_seq(&mut self, seq: u32) {
        if seq < self.last_seq {
            self.seq_wraps = self.seq_wraps.wrapping_add(1);
        }
        self.last_seq = seq;
    }

    pub(super) fn update_ack_seq(&mut self, seq: u32) {
        if seq < self.ack_seq {
            self.ack_wraps = self.ack_wraps.wrapping_add(1);
        }
        self.ack_seq = seq;
    }

    /// `FIN_seq`, the relative sequence number just past the FIN. Zeek stores it per FIN;
    /// tapflow takes the endpoint's highest sequence number, which is the same unless a FIN
    /// arrives below data already seen.
    pub(super) fn fin_seq(&self) -> u64 {
        self.relative(self.last_seq, u32::from(self.seq_wraps))
    }

    pub(super) fn full(seq: u32, wraps: u16) -> u64 {
        (u64::from(wraps) << 32) + u64::from(seq)
    }

    /// `ToRelativeSeqSpace`.
    pub(super) fn relative(&self, seq: u32, wraps: u32) -> u64 {
        ((u64::from(wraps) << 32) + u64::from(seq)).wrapping_sub(u64::from(self.start_seq))
    }

    /// `NoDataAcked`: nothing past a SYN octet acknowledged.
    pub(super) fn no_data_acked(&self) -> bool {
        let ack = Self::full(self.ack_seq, self.ack_wraps);
        let start = u64::from(self.start_seq);
        ack == start || ack == start + 1
    }

    /// `TCP_Endpoint::Size`: payload bytes from sequence numbers (the highest of what was sent
    /// and what the peer acknowledged), less the SYN and FIN octets.
    pub fn size(&self, peer_state: EpState) -> u64 {
        if self.prev_state == EpState::SynSent
            && self.state == EpState::Reset
            && peer_state == EpState::Inactive
            && !self.no_data_acked()
        {
            return 0;
        }
        let last = Self::full(self.last_seq, self.seq_wraps);
        let ack = Self::full(self.ack_seq, self.ack_wraps);
        // Less the SYN octet (faked for partial connections), and the FIN octet once seen.
        let size = last
            .max(ack)
            .wrapping_sub(u64::from(self.start_seq))
            .saturating_sub(1);
        if self.has(ep::FIN_SEEN) {
            size.saturating_sub(1)
        } else {
            size
        }
    }
}

/// `conn_state` for TCP, as `base/protocols/conn/main.zeek` derives it.
pub(super) fn conn_state(os: EpState, rs: EpState, sizes: [u64; 2], history: &str) -> ConnState {
    use EpState::*;
    let o_inactive = matches!(os, Inactive | Partial);
    let r_inactive = matches!(rs, Inactive | Partial);
    if rs == Reset {
        if matches!(os, SynSent | SynAckSent) || (os == Reset && sizes == [0, 0]) {
            ConnState::REJ
        } else if o_inactive {
            ConnState::RSTRH
        } else {
            ConnState::RSTR
        }
    } else if os == Reset {
        if !r_inactive {
            ConnState::RSTO
        } else if looks_like_rstos0(history) {
            ConnState::RSTOS0
        } else {
            ConnState::OTH
        }
    } else if rs == Closed && os == Closed {
        ConnState::SF
    } else if os == Closed {
        if r_inactive {
            ConnState::SH
        } else {
            ConnState::S2
        }
    } else if rs == Closed {
        if o_inactive {
            ConnState::SHR
        } else {
            ConnState::S3
        }
    } else if os == SynSent && rs == Inactive {
        ConnState::S0
    } else if os == Established && rs == Established {
        ConnState::S1
    } else {
        ConnState::OTH
    }
}
