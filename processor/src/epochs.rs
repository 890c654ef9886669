//! Processor-set switches as one processor sees them (sans-IO; docs/scaling.md).
//!
//! Collectors route each packet by the epoch in force at its time, so at a switch some slots
//! leave this processor and others arrive. Flows are closed and continued, not handed over:
//! - when the merged packet time reaches a switch, every open connection in a slot that moved
//!   away ends at once, its record marked `split: closed` (`flows_moved_out`);
//! - a connection this processor creates afterwards in a slot that moved in, within the
//!   protocol's inactivity timeout of the switch, may continue one the old owner closed: its
//!   record is marked `split: continued` (`flows_continued` counts these candidates). The new
//!   owner cannot tell a continuation from a new flow on its own (a UDP flow has no opening
//!   packet; a SYN may retransmit an attempt), so the aggregator keeps the mark only where a
//!   processor closed the same connection at the switch (`conns.split_unpaired` counts the
//!   rest).
//!
//! [`continues`] is the rule a restarted processor uses for the flows it may have split.

use tapflow_proto::key::ip_proto;
use tapflow_proto::procset::ProcessorSet;
use tapflow_proto::slots::{slot, SLOTS};
use tapflow_proto::PacketSummary;
use tracing::info;

use crate::session::{ConnRecord, FlowTable, SessionConfig};

pub struct Epochs {
    set: ProcessorSet,
    id: u16,
    /// The latest epoch whose switch this processor's flow table reflects.
    applied: u32,
    /// Per slot, the packet time of the switch that moved it here (0: never).
    moved_in_at: Vec<u64>,
    pub flows_moved_out: u64,
    pub flows_continued: u64,
}

impl Epochs {
    pub fn new(set: ProcessorSet, id: u16) -> Epochs {
        Epochs {
            set,
            id,
            applied: 1,
            moved_in_at: vec![0; SLOTS],
            flows_moved_out: 0,
            flows_continued: 0,
        }
    }

    /// A reloaded set (the caller checked that it extends this one).
    pub fn update(&mut self, set: ProcessorSet) {
        self.set = set;
    }

    pub fn set(&self) -> &ProcessorSet {
        &self.set
    }

    /// Whether the latest epoch announced leaves this processor out.
    pub fn leaving(&self) -> bool {
        !self.set.latest().table.contains(self.id)
    }

    /// Packet time of the next switch to apply (`u64::MAX`: none announced).
    pub fn next_switch_ns(&self) -> u64 {
        self.set
            .epoch(self.applied + 1)
            .map_or(u64::MAX, |e| e.starts_ns)
    }

    /// Applies every switch at or before packet time `t`: open connections in slots that moved
    /// away end now (records appended to `out`).
    pub fn apply(&mut self, t: u64, table: &mut FlowTable, out: &mut Vec<ConnRecord>) {
        while let Some(next) = self.set.epoch(self.applied + 1) {
            if next.starts_ns > t {
                break;
            }
            let Some(old) = self.set.epoch(self.applied) else {
                break;
            };
            let mut away = vec![false; SLOTS];
            let (mut out_slots, mut in_slots) = (0, 0);
            let owners = old.table.owners().iter().zip(next.table.owners());
            for ((away, moved_in_at), (&was, &is)) in
                away.iter_mut().zip(self.moved_in_at.iter_mut()).zip(owners)
            {
                if was == self.id && is != self.id {
                    *away = true;
                    out_slots += 1;
                } else if was != self.id && is == self.id {
                    *moved_in_at = next.starts_ns;
                    in_slots += 1;
                }
            }
            let open = table.stats().open_flows;
            let closed = if out_slots > 0 {
                table.close_moved(|k| away[usize::from(slot(k))], out)
            } else {
                0
            };
            self.flows_moved_out += closed;
            info!(
                epoch = next.table.epoch(),
                change = ?next.change,
                switch_at_ns = next.starts_ns,
                slots_out = out_slots,
                slots_in = in_slots,
                flows_open = open,
                flows_closed = closed,
                member = next.table.contains(self.id),
                "processor set: switched epoch"
            );
            self.applied += 1;
        }
    }

    /// A connection was just created from `s`: marks it when it continues one another
    /// processor closed at a switch.
    pub fn on_created(&mut self, s: &PacketSummary, table: &mut FlowTable) {
        let at = self.moved_in_at[usize::from(slot(&s.key))];
        if at != 0 && within_timeout(table.config(), s, at) {
            table.mark_continued(&s.key);
            self.flows_continued += 1;
        }
    }
}

/// Whether a connection created from `s` may continue one that was open at packet time `since`
/// somewhere else: within the protocol's inactivity timeout of it (an older connection would
/// have timed out anyway), and not a TCP connection opening with a SYN.
pub fn continues(c: &SessionConfig, s: &PacketSummary, since: u64) -> bool {
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    let opens = s.key.proto == ip_proto::TCP && s.tcp_flags & (SYN | ACK) == SYN;
    !opens && within_timeout(c, s, since)
}

/// Whether `s` comes within its protocol's inactivity timeout of packet time `since`.
fn within_timeout(c: &SessionConfig, s: &PacketSummary, since: u64) -> bool {
    let timeout = match s.key.proto {
        ip_proto::TCP => c.tcp_inactivity_ns,
        ip_proto::UDP => c.udp_inactivity_ns,
        ip_proto::ICMP | ip_proto::ICMPV6 => c.icmp_inactivity_ns,
        _ => c.other_inactivity_ns,
    };
    s.ts_ns < since.saturating_add(timeout)
}

#[cfg(test)]
mod tests;
