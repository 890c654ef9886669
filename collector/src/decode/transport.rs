//! The transport layer, on etherparse's slices: TCP, UDP, ICMP and ICMPv6 fill their summary
//! fields; any other protocol (SCTP, ESP, OSPF, GRE, IP-in-IP, ...) gives a summary with ports 0.
//!
//! Lengths follow the IP header, never the capture. Checksums (pseudo-header where the protocol
//! has one) are verified unless the packet is cut by snaplen; a wrong one still gives a summary,
//! flagged `BAD_CHECKSUM`, as Zeek records such packets in `history` without counting them.

use etherparse::{Icmpv4Slice, Icmpv6Slice, TcpHeaderSlice, UdpHeaderSlice};
use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::flag;
use tapflow_proto::{DropReason, FiveTuple, PacketSummary};

use super::checksum::{pseudo_header, Sum};
use super::ip::Net;

/// One packet's transport view (the rest went into its summary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Transport<'a> {
    /// What the packet says, for its key.
    pub(super) tuple: FiveTuple,
    /// The captured bytes after the transport header (UDP payload, GRE packet, ...), where a
    /// tunnel's inner packet is looked for.
    pub(super) inner: &'a [u8],
}

/// Summarises the upper layer `proto` of `net` into `summary` (every field but `ts_ns`, the
/// key and `tunnel_parent`; flags are added to): `payload` is what was captured of it,
/// `payload_len` its length by the IP header. The summary is written in place so that no
/// copy of it is made per packet.
#[inline]
pub(super) fn parse<'a>(
    net: &Net,
    proto: u8,
    payload: &'a [u8],
    payload_len: u32,
    verify: bool,
    summary: &mut PacketSummary,
) -> Result<Transport<'a>, DropReason> {
    let verify = verify && !net.truncated;
    summary.ip_len = net.ip_len;
    if net.truncated {
        summary.flags |= flag::TRUNCATED;
    }
    let mut tuple = FiveTuple {
        proto,
        src: net.src,
        dst: net.dst,
        sport: 0,
        dport: 0,
    };
    let claimed = usize::try_from(payload_len).unwrap_or(usize::MAX);
    // A header that does not fit: cut by snaplen, or longer than the IP layer says it is.
    let short = |required: usize| {
        if required > claimed {
            DropReason::MalformedTransport
        } else {
            DropReason::Truncated
        }
    };
    let checksum_ok = |pseudo: Sum| pseudo.add(payload).is_valid();
    let inner = match proto {
        ip_proto::TCP => {
            use etherparse::err::tcp::HeaderSliceError;
            let tcp = TcpHeaderSlice::from_slice(payload).map_err(|e| match e {
                HeaderSliceError::Len(l) => short(l.required_len),
                HeaderSliceError::Content(_) => DropReason::MalformedTransport,
            })?;
            let hdr = tcp.slice();
            summary.payload_len = payload_len
                .checked_sub(super::ip::len32(hdr.len()))
                .ok_or(DropReason::MalformedTransport)?;
            summary.tcp_flags = hdr.get(13).copied().unwrap_or(0);
            summary.seq = tcp.sequence_number();
            summary.ack = tcp.acknowledgment_number();
            summary.window = tcp.window_size();
            (tuple.sport, tuple.dport) = (tcp.source_port(), tcp.destination_port());
            let pseudo = pseudo_header(net.src_bytes(), net.dst_bytes(), proto, payload_len);
            if verify && !checksum_ok(pseudo) {
                summary.flags |= flag::BAD_CHECKSUM;
            }
            payload.get(hdr.len()..).unwrap_or_default()
        }
        ip_proto::UDP => {
            let udp = UdpHeaderSlice::from_slice(payload).map_err(|_| short(UDP_HDR))?;
            summary.payload_len = payload_len
                .checked_sub(UDP_HDR as u32)
                .ok_or(DropReason::MalformedTransport)?;
            (tuple.sport, tuple.dport) = (udp.source_port(), udp.destination_port());
            let data = payload.get(UDP_HDR..).unwrap_or_default();
            // IPv4 checksum 0 means none was computed; IPv6 requires one (Zeek agrees).
            if verify && (udp.checksum() != 0 || net.v6) {
                // The UDP length field, when sane, bounds what the checksum covers.
                let len = match u32::from(udp.length()) {
                    l if (UDP_HDR as u32..=payload_len).contains(&l) => l,
                    _ => payload_len,
                };
                let covered = payload.get(..len as usize).unwrap_or(payload);
                let pseudo = pseudo_header(net.src_bytes(), net.dst_bytes(), proto, len);
                if !pseudo.add(covered).is_valid() {
                    summary.flags |= flag::BAD_CHECKSUM;
                }
            }
            if (tuple.sport == DNS_PORT || tuple.dport == DNS_PORT)
                && data.get(2).is_some_and(|b| b & 0x80 != 0)
            {
                summary.flags |= flag::DNS_RESPONSE;
            }
            data
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            let (icmp_type, icmp_code) =
                icmp_type_code(proto, payload).ok_or_else(|| short(ICMP_HDR))?;
            summary.payload_len = payload_len.saturating_sub(ICMP_HDR as u32);
            summary.icmp_type = icmp_type;
            summary.icmp_code = icmp_code;
            tuple = FiveTuple::icmp(proto, net.src, net.dst, icmp_type, icmp_code);
            if verify {
                let pseudo = if proto == ip_proto::ICMPV6 {
                    pseudo_header(net.src_bytes(), net.dst_bytes(), proto, payload_len)
                } else {
                    Sum::default()
                };
                if !checksum_ok(pseudo) {
                    summary.flags |= flag::BAD_CHECKSUM;
                }
            }
            payload.get(ICMP_HDR..).unwrap_or_default()
        }
        _ => {
            summary.payload_len = payload_len;
            payload
        }
    };
    Ok(Transport { tuple, inner })
}

/// ICMP type and code through etherparse's slices. `Icmpv4Slice` insists that timestamp
/// messages are exactly 20 bytes; any other ICMP message of 8 bytes or more still has a type
/// and a code, so those are read from the fixed header.
fn icmp_type_code(proto: u8, payload: &[u8]) -> Option<(u8, u8)> {
    if proto == ip_proto::ICMPV6 {
        return Icmpv6Slice::from_slice(payload)
            .ok()
            .map(|s| (s.type_u8(), s.code_u8()));
    }
    match Icmpv4Slice::from_slice(payload) {
        Ok(s) => Some((s.type_u8(), s.code_u8())),
        Err(_) if payload.len() >= ICMP_HDR => Some((*payload.first()?, *payload.get(1)?)),
        Err(_) => None,
    }
}

const UDP_HDR: usize = 8;
/// The ICMP header including its 4-byte rest-of-header.
const ICMP_HDR: usize = 8;
const DNS_PORT: u16 = 53;

#[cfg(test)]
mod tests;
