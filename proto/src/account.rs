//! Accounting shared by every hop (DESIGN invariant 5): what a collector read, summarised,
//! merged and dropped, by reason, in a form that travels on the wire and reconciles.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a packet (or a summary, for the queue and wire reasons) went no further.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// The link type of the capture is not one tapflow decodes, or a link-layer framing inside
    /// one that it does not (an 802.11 A-MSDU aggregate of several packets in one frame).
    UnsupportedLink,
    /// A frame too short for the header it claims (link, IP or transport).
    Truncated,
    /// Not IP (ARP, LLDP, STP, ...): nothing for a conn log.
    NonIp,
    /// IP header malformed: bad version, header length, total length, extension header chain.
    MalformedIp,
    /// IPv4 header checksum wrong (Zeek drops these too, unless `-C`).
    BadIpChecksum,
    /// Transport header malformed (e.g. TCP data offset < 5).
    MalformedTransport,
    /// A tunnel header (VXLAN, Geneve, GTP-U, GRE, IP-in-IP) malformed: too short for the
    /// bytes its outer packet holds, reserved bits set, an unknown extension chain. A tunnel
    /// header cut by the capture's snaplen is `Truncated`.
    MalformedTunnel,
    /// A fragment that timed out before its datagram was complete.
    FragmentTimeout,
    /// A fragment evicted because the reassembly table was full.
    FragmentTableFull,
    /// A fragment whose datagram was still incomplete at end of input.
    FragmentIncomplete,
    /// A fragment inconsistent with its datagram (overlap with different length, too large).
    FragmentInvalid,
    /// An encrypted link-layer payload (an 802.11 frame with the Protected bit): no IP to read.
    Encrypted,
    /// A summary dropped because a processor's queue was full (drop policy, live capture).
    QueueFull,
    /// An IP protocol Zeek analyses without a connection (IGMP, IPv6's no next header):
    /// nothing for a conn log.
    NoConnection,
}

impl DropReason {
    pub const ALL: [DropReason; 14] = [
        DropReason::UnsupportedLink,
        DropReason::Truncated,
        DropReason::NonIp,
        DropReason::MalformedIp,
        DropReason::BadIpChecksum,
        DropReason::MalformedTransport,
        DropReason::MalformedTunnel,
        DropReason::FragmentTimeout,
        DropReason::FragmentTableFull,
        DropReason::FragmentIncomplete,
        DropReason::FragmentInvalid,
        DropReason::Encrypted,
        DropReason::QueueFull,
        DropReason::NoConnection,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::UnsupportedLink => "unsupported_link",
            DropReason::Truncated => "truncated",
            DropReason::NonIp => "non_ip",
            DropReason::MalformedIp => "malformed_ip",
            DropReason::BadIpChecksum => "bad_ip_checksum",
            DropReason::MalformedTransport => "malformed_transport",
            DropReason::MalformedTunnel => "malformed_tunnel",
            DropReason::FragmentTimeout => "fragment_timeout",
            DropReason::FragmentTableFull => "fragment_table_full",
            DropReason::FragmentIncomplete => "fragment_incomplete",
            DropReason::FragmentInvalid => "fragment_invalid",
            DropReason::Encrypted => "encrypted",
            DropReason::QueueFull => "queue_full",
            DropReason::NoConnection => "no_connection",
        }
    }

    /// True for reasons that count summaries rather than packets.
    pub const fn counts_summaries(self) -> bool {
        matches!(self, DropReason::QueueFull)
    }

    /// True for drops caused by tapflow's own limits (a full queue or reassembly table), as
    /// against what was on the wire (non-IP frames, malformed or damaged packets): the drops a
    /// `drop_rate` self-alert is about, together with the kernel's.
    pub const fn is_loss(self) -> bool {
        matches!(self, DropReason::QueueFull | DropReason::FragmentTableFull)
    }

    /// The reason named by [`DropReason::as_str`].
    pub fn from_name(name: &str) -> Option<DropReason> {
        DropReason::ALL.into_iter().find(|r| r.as_str() == name)
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Per-reason drop counts as plain integers, for hot loops; converted to a map for the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts(pub [u64; DropReason::ALL.len()]);

impl DropCounts {
    pub fn add(&mut self, reason: DropReason, n: u64) {
        self.0[reason.index()] += n;
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// Packet drops (everything but the summary-level reasons).
    pub fn packet_drops(&self) -> u64 {
        DropReason::ALL
            .iter()
            .filter(|r| !r.counts_summaries())
            .map(|r| self.get(*r))
            .sum()
    }

    pub fn to_map(&self) -> BTreeMap<String, u64> {
        DropReason::ALL
            .iter()
            .filter(|r| self.get(**r) > 0)
            .map(|r| (r.as_str().to_owned(), self.get(*r)))
            .collect()
    }
}

/// What libpcap says of a live capture (`pcap_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStats {
    /// Packets the capture received (libpcap's `ps_recv`).
    pub received: u64,
    /// Dropped by the kernel for lack of buffer space (`ps_drop`).
    pub kernel_dropped: u64,
    /// Dropped by the interface or driver (`ps_ifdrop`).
    pub if_dropped: u64,
}

/// A collector's whole-process counters, sent in heartbeats and end-of-stream on every link.
///
/// Reconciliation (checked by [`CollectorCounters::reconcile`]):
/// `packets_read = packets_summarised + fragments_merged + Σ packet drops`, and
/// `summaries = Σ summaries sent per link + drops[queue_full]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectorCounters {
    /// Packets delivered by libpcap (file records or live packets).
    pub packets_read: u64,
    /// Packets that produced at least one summary.
    pub packets_summarised: u64,
    /// Fragments absorbed into a datagram that was summarised when complete.
    pub fragments_merged: u64,
    /// Summaries produced (a tunnelled packet gives two: the outer flow's and the inner's).
    pub summaries: u64,
    /// Summaries handed to each link, by shard index.
    pub summaries_sent: Vec<u64>,
    /// Drops by [`DropReason::as_str`].
    pub drops: BTreeMap<String, u64>,
    /// Live capture statistics; zero for files.
    pub capture: CaptureStats,
    /// Payload evidence shipped and not shipped (issue 17).
    #[serde(default)]
    pub evidence: EvidenceCounters,
}

/// The collector's payload evidence: what it shipped, and the payload packets of tracked (or
/// untrackable) young flows whose bytes it did not ship, by reason. Not packet drops: every
/// such packet's summary went on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceCounters {
    /// Flows given an entry in the evidence table.
    pub flows: u64,
    /// Summaries that carried payload, and their payload bytes.
    pub pieces_shipped: u64,
    pub bytes_shipped: u64,
    /// Payload packets of flows the full table had no room for (`table_full`).
    pub table_full: u64,
    /// Payload packets past a direction's budget before the identifying part was complete
    /// (`budget`).
    pub budget: u64,
    /// Payload packets past an early stop or the datagram count: nothing more needed.
    pub complete: u64,
    /// Payload packets whose bytes were all shipped before (retransmissions).
    pub repeated: u64,
    /// Pieces not shipped because the direction had too many gaps (deep reordering).
    pub reordered: u64,
    /// Payload packets of a direction whose first bytes no detector can use (the classifier's
    /// give-up check, `tapflow_classify::may_match`): nothing of it is shipped (`gave_up`).
    #[serde(default)]
    pub gave_up: u64,
}

impl EvidenceCounters {
    /// Every count as (name, value), for metrics and reports.
    pub fn named(&self) -> [(&'static str, u64); 9] {
        [
            ("flows", self.flows),
            ("pieces_shipped", self.pieces_shipped),
            ("bytes_shipped", self.bytes_shipped),
            ("table_full", self.table_full),
            ("budget", self.budget),
            ("complete", self.complete),
            ("repeated", self.repeated),
            ("reordered", self.reordered),
            ("gave_up", self.gave_up),
        ]
    }
}

/// The two sums of [`CollectorCounters`], side by side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconciliation {
    pub packets_read: u64,
    pub packets_accounted: u64,
    pub summaries: u64,
    pub summaries_accounted: u64,
}

impl Reconciliation {
    pub fn holds(&self) -> bool {
        self.packets_read == self.packets_accounted && self.summaries == self.summaries_accounted
    }
}

impl CollectorCounters {
    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.as_str()).copied().unwrap_or(0)
    }

    pub fn reconcile(&self) -> Reconciliation {
        let packet_drops: u64 = self
            .drops
            .iter()
            .filter(|(name, _)| *name != DropReason::QueueFull.as_str())
            .map(|(_, n)| *n)
            .sum();
        Reconciliation {
            packets_read: self.packets_read,
            packets_accounted: self.packets_summarised + self.fragments_merged + packet_drops,
            summaries: self.summaries,
            summaries_accounted: self.summaries_sent.iter().sum::<u64>()
                + self.drop_count(DropReason::QueueFull),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_packets_and_summaries() {
        let mut drops = DropCounts::default();
        drops.add(DropReason::NonIp, 3);
        drops.add(DropReason::QueueFull, 2);
        let c = CollectorCounters {
            packets_read: 20,
            packets_summarised: 15,
            fragments_merged: 2,
            summaries: 17,
            summaries_sent: vec![10, 5],
            drops: drops.to_map(),
            capture: CaptureStats::default(),
            evidence: EvidenceCounters::default(),
        };
        assert!(c.reconcile().holds(), "{:?}", c.reconcile());
        let broken = CollectorCounters {
            packets_read: 21,
            ..c
        };
        assert!(!broken.reconcile().holds());
    }

    #[test]
    fn reason_names_are_unique() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
