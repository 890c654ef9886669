//! The transport layer, on etherparse's slices: TCP, UDP, ICMP and ICMPv6 fill their summary
//! fields; any other protocol (SCTP, ESP, OSPF, GRE, IP-in-IP, ...) gives a summary with ports 0,
//! but for those Zeek makes no connection of (IGMP, IPv6's no next header): `NoConnection`.
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
    summary.ip_len = net.ip_len;
    if net.truncated {
        summary.flags |= flag::TRUNCATED;
    }
    let upper = Upper {
        net,
        proto,
        payload,
        payload_len,
        verify: verify && !net.truncated,
    };
    let mut tuple = FiveTuple {
        proto,
        src: net.src,
        dst: net.dst,
        sport: 0,
        dport: 0,
    };
    let inner = match proto {
        ip_proto::TCP => upper.tcp(summary, &mut tuple)?,
        ip_proto::UDP => upper.udp(summary, &mut tuple)?,
        ip_proto::ICMP | ip_proto::ICMPV6 => upper.icmp(summary, &mut tuple)?,
        // Zeek's IGMP analyzer logs to igmp.log, and an IPv6 packet with no next header
        // (a Teredo bubble, ...) has no upper layer: neither makes a connection.
        IGMP => return Err(DropReason::NoConnection),
        NO_NEXT_HEADER if net.v6 => return Err(DropReason::NoConnection),
        _ => {
            summary.payload_len = payload_len;
            payload
        }
    };
    Ok(Transport { tuple, inner })
}

/// One packet's upper layer as [`parse`] was given it; each protocol's reader fills the
/// summary and the tuple's ports, and returns the captured bytes after its header.
struct Upper<'n, 'a> {
    net: &'n Net,
    proto: u8,
    payload: &'a [u8],
    payload_len: u32,
    /// Verify checksums (asked for, and the packet not cut by snaplen).
    verify: bool,
}

impl<'a> Upper<'_, 'a> {
    /// A header that does not fit: cut by snaplen, or longer than the IP layer says it is.
    fn short(&self, required: usize) -> DropReason {
        let claimed = usize::try_from(self.payload_len).unwrap_or(usize::MAX);
        if required > claimed {
            DropReason::MalformedTransport
        } else {
            DropReason::Truncated
        }
    }

    fn checksum_ok(&self, pseudo: Sum) -> bool {
        pseudo.add(self.payload).is_valid()
    }

    fn tcp(
        &self,
        summary: &mut PacketSummary,
        tuple: &mut FiveTuple,
    ) -> Result<&'a [u8], DropReason> {
        use etherparse::err::tcp::HeaderSliceError;
        let (net, payload, payload_len) = (self.net, self.payload, self.payload_len);
        let tcp = TcpHeaderSlice::from_slice(payload).map_err(|e| match e {
            HeaderSliceError::Len(l) => self.short(l.required_len),
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
        let pseudo = pseudo_header(net.src_bytes(), net.dst_bytes(), self.proto, payload_len);
        if self.verify && !self.checksum_ok(pseudo) {
            summary.flags |= flag::BAD_CHECKSUM;
        }
        Ok(payload.get(hdr.len()..).unwrap_or_default())
    }

    fn udp(
        &self,
        summary: &mut PacketSummary,
        tuple: &mut FiveTuple,
    ) -> Result<&'a [u8], DropReason> {
        let (net, payload, payload_len) = (self.net, self.payload, self.payload_len);
        let udp = UdpHeaderSlice::from_slice(payload).map_err(|_| self.short(UDP_HDR))?;
        summary.payload_len = payload_len
            .checked_sub(UDP_HDR as u32)
            .ok_or(DropReason::MalformedTransport)?;
        (tuple.sport, tuple.dport) = (udp.source_port(), udp.destination_port());
        let data = payload.get(UDP_HDR..).unwrap_or_default();
        // IPv4 checksum 0 means none was computed; IPv6 requires one (Zeek agrees), but for
        // VXLAN, whose checksum is sent as zero.
        if self.verify && (udp.checksum() != 0 || (net.v6 && !vxlan_unsummed(tuple.dport, data))) {
            // The UDP length field, when sane, bounds what the checksum covers.
            let len = match u32::from(udp.length()) {
                l if (UDP_HDR as u32..=payload_len).contains(&l) => l,
                _ => payload_len,
            };
            let covered = payload.get(..len as usize).unwrap_or(payload);
            let pseudo = pseudo_header(net.src_bytes(), net.dst_bytes(), self.proto, len);
            if !pseudo.add(covered).is_valid() {
                summary.flags |= flag::BAD_CHECKSUM;
            }
        }
        if (tuple.sport == DNS_PORT || tuple.dport == DNS_PORT)
            && data.get(2).is_some_and(|b| b & 0x80 != 0)
        {
            summary.flags |= flag::DNS_RESPONSE;
        }
        Ok(data)
    }

    fn icmp(
        &self,
        summary: &mut PacketSummary,
        tuple: &mut FiveTuple,
    ) -> Result<&'a [u8], DropReason> {
        let (net, proto, payload) = (self.net, self.proto, self.payload);
        let (icmp_type, icmp_code) =
            icmp_type_code(proto, payload).ok_or_else(|| self.short(ICMP_HDR))?;
        summary.payload_len = self.payload_len.saturating_sub(ICMP_HDR as u32);
        summary.icmp_type = icmp_type;
        summary.icmp_code = icmp_code;
        *tuple = FiveTuple::icmp(proto, net.src, net.dst, icmp_type, icmp_code);
        if self.verify {
            let pseudo = if proto == ip_proto::ICMPV6 {
                pseudo_header(net.src_bytes(), net.dst_bytes(), proto, self.payload_len)
            } else {
                Sum::default()
            };
            if !self.checksum_ok(pseudo) {
                summary.flags |= flag::BAD_CHECKSUM;
            }
        }
        Ok(payload.get(ICMP_HDR..).unwrap_or_default())
    }
}

/// A datagram to the VXLAN port that looks like VXLAN (the I flag, room for its header and an
/// Ethernet header): Zeek accepts a zero checksum on it, over IPv6 too.
fn vxlan_unsummed(dport: u16, data: &[u8]) -> bool {
    const VXLAN_PORT: u16 = 4789;
    const VXLAN_I: u8 = 0x08;
    dport == VXLAN_PORT && data.len() > 8 + 14 && data.first().is_some_and(|b| b & VXLAN_I != 0)
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
const IGMP: u8 = 2;
const NO_NEXT_HEADER: u8 = 59;
/// The ICMP header including its 4-byte rest-of-header.
const ICMP_HDR: usize = 8;
const DNS_PORT: u16 = 53;

#[cfg(test)]
mod tests;
