//! [`PacketSummary`]: everything session reassembly and detection need from one packet, and
//! nothing else, but for the first payload bytes of young flows ([`Payload`], issue 17).

use serde::{Deserialize, Serialize};

use crate::key::{Direction, FiveTuple, FlowKey};

/// Bits of [`PacketSummary::flags`].
pub mod flag {
    /// The packet travels from `key.hi` to `key.lo`.
    pub const REVERSE: u8 = 1 << 0;
    /// The transport checksum (TCP, UDP, ICMP) was verified and is wrong. Zeek records such a
    /// packet in `history` (`C`/`c`) but does not count it; the IP header checksum is checked
    /// in the collector, which drops the packet (`bad_ip_checksum`).
    pub const BAD_CHECKSUM: u8 = 1 << 1;
    /// The packet is an IP datagram reassembled from fragments.
    pub const REASSEMBLED: u8 = 1 << 2;
    /// The packet carries a tunnel (VXLAN, GRE, GTP-U, Geneve, IP-in-IP, Teredo, AYIYA) whose
    /// inner packet was summarised too; a GRE or IP-in-IP packet always, whatever its payload
    /// (Zeek makes no connection of IP tunnels).
    pub const TUNNEL_OUTER: u8 = 1 << 3;
    /// The packet was found inside a tunnel; `tunnel_parent` names the outer flow.
    pub const TUNNEL_INNER: u8 = 1 << 4;
    /// A DNS message with the QR bit set (a response), seen on port 53.
    pub const DNS_RESPONSE: u8 = 1 << 5;
    /// The capture holds fewer bytes than the packet had (snaplen); payload checks were skipped.
    pub const TRUNCATED: u8 = 1 << 6;
    /// Payload evidence of this packet's direction was cut here: the collector had no room
    /// for the flow (table full) or the direction's budget ran out before the identifying
    /// part was complete. The connection's `service` may be missing (`service_incomplete`).
    pub const EVIDENCE_CUT: u8 = 1 << 7;
}

/// [`PacketSummary::tunnel_kind`]: which tunnel an outer packet carries (Zeek names the outer
/// connection's `service` after it); 0 = none or one Zeek gives no service (GRE, IP-in-IP).
pub mod tunnel_kind {
    pub const VXLAN: u8 = 1;
    pub const GENEVE: u8 = 2;
    pub const GTPV1: u8 = 3;
    pub const TEREDO: u8 = 4;
    pub const AYIYA: u8 = 5;

    /// Zeek's service name of a tunnel kind.
    pub fn service(kind: u8) -> Option<&'static str> {
        Some(match kind {
            VXLAN => "vxlan",
            GENEVE => "geneve",
            GTPV1 => "gtpv1",
            TEREDO => "teredo",
            AYIYA => "ayiya",
            _ => return None,
        })
    }
}

/// Payload bytes a summary carries as evidence: a piece of its direction's first bytes.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Payload {
    /// TCP: the offset of `bytes[0]` in the direction's stream (0 = the byte after the SYN,
    /// or the first byte seen of a flow that started before the capture). UDP: the index of
    /// the datagram among the direction's shipped ones.
    pub offset: u32,
    /// At most [`MAX_PAYLOAD`] bytes.
    pub bytes: Vec<u8>,
}

/// `ranges` (sorted, disjoint `[start, end)` stream ranges) with `[from, to)` added, neighbours
/// and overlaps merged; `None` when the result would hold more than `max` ranges. The
/// collector (what it shipped) and the processor (what it holds) keep a direction's evidence
/// this way.
pub fn merge_range(
    ranges: &[(u32, u32)],
    from: u32,
    to: u32,
    max: usize,
) -> Option<Vec<(u32, u32)>> {
    let mut out = vec![(0, 0); max.min(ranges.len() + 1)];
    let n = merge_range_into(ranges, from, to, &mut out)?;
    out.truncate(n);
    Some(out)
}

/// [`merge_range`] into `out`, whose length is the bound: the count of ranges written, `None`
/// past it (`out` then holds a partial result). Allocates nothing: the collector runs it for
/// every TCP piece it ships.
pub fn merge_range_into(
    ranges: &[(u32, u32)],
    from: u32,
    to: u32,
    out: &mut [(u32, u32)],
) -> Option<usize> {
    let new = (from, to);
    let at = ranges.partition_point(|&r| r < new);
    let mut n: usize = 0;
    for &(a, b) in ranges[..at].iter().chain([&new]).chain(&ranges[at..]) {
        match n.checked_sub(1).map(|i| &mut out[i]) {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => {
                *out.get_mut(n)? = (a, b);
                n += 1;
            }
        }
    }
    Some(n)
}

/// The most payload bytes one summary carries (a budget per direction is at most this).
pub const MAX_PAYLOAD: usize = 0xffff;

/// Bits of [`PacketSummary::tcp_flags`], as in the TCP header.
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// One packet, summarised. On the wire in a batch's packed records ([`crate::packed`]).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PacketSummary {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Canonical key; `flags & REVERSE` gives the direction.
    pub key: FlowKey,
    /// [`flag`] bits.
    pub flags: u8,
    /// IP total length (IPv6: payload length + 40), of the reassembled datagram if reassembled.
    pub ip_len: u32,
    /// Transport payload length in bytes (from the IP header, not the capture length).
    pub payload_len: u32,
    /// TCP flags ([`tcp`]); 0 for other protocols.
    pub tcp_flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// ICMP/ICMPv6 type and code; 0 for other protocols.
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// The outer flow of a tunnelled packet.
    pub tunnel_parent: Option<FlowKey>,
    /// [`tunnel_kind`] of a tunnel outer packet (0 otherwise).
    pub tunnel_kind: u8,
    /// Evidence: payload bytes of a young flow ([`Payload`]); boxed, so a packet without
    /// them costs one pointer.
    pub payload: Option<Box<Payload>>,
}

impl PacketSummary {
    pub fn direction(&self) -> Direction {
        if self.flags & flag::REVERSE != 0 {
            Direction::Reverse
        } else {
            Direction::Forward
        }
    }

    /// The packet's own source-to-destination view.
    pub fn tuple(&self) -> FiveTuple {
        self.key.tuple(self.direction())
    }

    /// Sets `key` and the direction bit from a packet's five-tuple.
    pub fn set_tuple(&mut self, tuple: &FiveTuple, vlan: u16) {
        let (key, dir) = tuple.key(vlan);
        self.key = key;
        match dir {
            Direction::Forward => self.flags &= !flag::REVERSE,
            Direction::Reverse => self.flags |= flag::REVERSE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::merge_range;

    /// The merge walk against sorting everything and merging, over random sequences of adds
    /// (small offsets, so ranges touch, overlap, nest and are empty), within and past the bound.
    #[test]
    fn merging_in_order_agrees_with_sorting_everything() {
        let reference = |ranges: &[(u32, u32)], from, to, max: usize| {
            let mut v = ranges.to_vec();
            v.push((from, to));
            v.sort_unstable();
            let mut merged: Vec<(u32, u32)> = Vec::new();
            for (a, b) in v {
                match merged.last_mut() {
                    Some(last) if a <= last.1 => last.1 = last.1.max(b),
                    _ => merged.push((a, b)),
                }
            }
            (merged.len() <= max).then_some(merged)
        };
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % m) as u32
        };
        let (mut refused, mut adds) = (0, 0);
        for _ in 0..20_000 {
            let max = 1 + next(5) as usize;
            let mut held = Vec::new();
            for _ in 0..next(8) {
                let from = next(40);
                let to = from + next(12);
                let want = reference(&held, from, to, max);
                assert_eq!(
                    merge_range(&held, from, to, max),
                    want,
                    "{held:?} + [{from}, {to})"
                );
                adds += 1;
                match want {
                    Some(w) => held = w,
                    None => refused += 1,
                }
            }
        }
        assert!(
            refused > 1000 && adds - refused > 10_000,
            "{refused} of {adds}"
        );
    }

    #[test]
    fn ranges_merge_with_overlapping_and_touching_neighbours_within_the_bound() {
        let r = merge_range(&[(0, 10), (20, 30)], 10, 20, 8).expect("within the bound");
        assert_eq!(r, [(0, 30)]);
        let r = merge_range(&[(0, 10), (20, 30)], 5, 12, 8).expect("within the bound");
        assert_eq!(r, [(0, 12), (20, 30)]);
        let r = merge_range(&[(20, 30)], 40, 50, 8).expect("within the bound");
        assert_eq!(r, [(20, 30), (40, 50)]);
        assert_eq!(merge_range(&[(0, 10), (20, 30)], 40, 50, 2), None);
        assert_eq!(
            merge_range(&[(0, 10), (20, 30)], 25, 28, 2),
            Some(vec![(0, 10), (20, 30)])
        );
    }
}
