//! The IP layer, on etherparse's zero-copy header slices: IPv4 (options included in the
//! header length) and IPv6 with its extension header chain (hop-by-hop, routing, destination
//! options, mobility, HIP, shim6, AH, fragment).
//!
//! Lengths come from the headers, never from the capture: Ethernet padding past the total
//! length is cut off, and a capture shorter than the total length is either a snaplen cut
//! (`missing` bytes were not captured: the packet is marked truncated and its checksums are not
//! verified) or a malformed packet (`Truncated`). A total length of 0 (IPv4 written by TCP
//! segmentation offload, IPv6 jumbograms behind a hop-by-hop header) means "the rest of the
//! capture" for the payload, while the IP length counted into a connection's IP bytes stays
//! what the header says, as Zeek's ConnSize counts it (IPv4: 0, and such a packet is dropped
//! when checksums are verified). Any other IPv6 packet with payload length 0 is just its
//! 40-byte header, as in Zeek.

use etherparse::{
    IpAuthHeaderSlice, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6HeaderSlice,
    Ipv6RawExtHeaderSlice,
};
use tapflow_proto::{Addr, DropReason};

use super::checksum::Sum;

/// The network-layer facts a summary needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Net {
    pub(super) src: Addr,
    pub(super) dst: Addr,
    pub(super) v6: bool,
    /// IP total length (IPv6: payload length + 40) as the header gives it, even when it is 0
    /// (what Zeek adds to a connection's IP bytes).
    pub(super) ip_len: u32,
    /// The capture ends before the IP total length (snaplen): checksums cannot be verified.
    pub(super) truncated: bool,
}

impl Net {
    /// Source address as it appears in the header (4 or 16 bytes), for pseudo-headers.
    pub(super) fn src_bytes(&self) -> &[u8] {
        raw(&self.src, self.v6)
    }

    pub(super) fn dst_bytes(&self) -> &[u8] {
        raw(&self.dst, self.v6)
    }
}

/// A fragment: the datagram it belongs to and where its data goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Frag {
    pub(super) id: u32,
    /// Byte offset of this fragment's data in the datagram's fragmentable part.
    pub(super) offset: u32,
    pub(super) more: bool,
    /// Bytes in front of the fragmentable part once reassembled: the IPv4 header, or the IPv6
    /// header and its unfragmentable extension headers.
    pub(super) hdr_len: u32,
}

/// One IP packet, seen down to its upper-layer protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Packet<'a> {
    pub(super) net: Net,
    /// The upper-layer protocol (for a fragment: of the whole datagram).
    pub(super) proto: u8,
    /// The upper-layer bytes that were captured (for a fragment: its share of the data).
    pub(super) payload: &'a [u8],
    /// The upper-layer length by the IP header lengths.
    pub(super) payload_len: u32,
    pub(super) frag: Option<Frag>,
}

/// Parses the IP packet at the start of `bytes`, of either version. `missing` is how many bytes
/// of the frame the capture did not keep (wire length minus captured length). The IPv4 header
/// checksum is verified when `verify` (the header is always whole once parsed).
pub(super) fn parse(bytes: &[u8], missing: u32, verify: bool) -> Result<Packet<'_>, DropReason> {
    match bytes.first().map(|b| b >> 4) {
        Some(4) => v4(bytes, missing, verify),
        Some(6) => v6(bytes, missing),
        Some(_) => Err(DropReason::MalformedIp),
        None => Err(DropReason::Truncated),
    }
}

fn v4(bytes: &[u8], missing: u32, verify: bool) -> Result<Packet<'_>, DropReason> {
    use etherparse::err::ipv4::HeaderSliceError;
    let h = Ipv4HeaderSlice::from_slice(bytes).map_err(|e| match e {
        HeaderSliceError::Len(_) => DropReason::Truncated,
        HeaderSliceError::Content(_) => DropReason::MalformedIp,
    })?;
    let hdr_len = h.slice().len();
    // Total length 0: written by TCP segmentation offload, and Zeek's `ip_hdr_len_zero`. Like
    // Zeek, dropped when checksums are verified (the offloaded checksums are wrong too); when
    // not, the packet is the rest of the capture, but its IP length is the header's 0.
    let (total, ip_len) = match h.total_len() {
        0 if verify => return Err(DropReason::MalformedIp),
        0 => (bytes.len(), 0),
        n => (usize::from(n), u32::from(n)),
    };
    if total < hdr_len {
        return Err(DropReason::MalformedIp);
    }
    let (end, truncated) = captured_end(bytes.len(), total, missing)?;
    if verify && !Sum::default().add(h.slice()).is_valid() {
        return Err(DropReason::BadIpChecksum);
    }
    let offset = h.fragments_offset().byte_offset();
    let frag = (h.more_fragments() || offset != 0).then(|| Frag {
        id: u32::from(h.identification()),
        offset: u32::from(offset),
        more: h.more_fragments(),
        hdr_len: len32(hdr_len),
    });
    Ok(Packet {
        net: Net {
            src: Addr::from_v4(h.source()),
            dst: Addr::from_v4(h.destination()),
            v6: false,
            ip_len,
            truncated,
        },
        proto: h.protocol().0,
        payload: bytes.get(hdr_len..end).unwrap_or_default(),
        payload_len: len32(total - hdr_len),
        frag,
    })
}

fn v6(bytes: &[u8], missing: u32) -> Result<Packet<'_>, DropReason> {
    use etherparse::err::ipv6::HeaderSliceError;
    let h = Ipv6HeaderSlice::from_slice(bytes).map_err(|e| match e {
        HeaderSliceError::Len(_) => DropReason::Truncated,
        HeaderSliceError::Content(_) => DropReason::MalformedIp,
    })?;
    const FIXED: usize = 40;
    // Payload length 0 is an empty payload (Zeek counts such a packet as 40 bytes), unless a
    // hop-by-hop header follows, which is where a jumbogram's real length is.
    let claimed = match h.payload_length() {
        0 if h.next_header().0 == HOP_BY_HOP => bytes.len().saturating_sub(FIXED),
        n => usize::from(n),
    };
    let total = FIXED.saturating_add(claimed);
    let (end, truncated) = captured_end(bytes.len(), total, missing)?;
    let data = bytes.get(FIXED..end).unwrap_or_default();
    let chain = ext_chain(h.next_header().0, data, claimed)?;
    let frag = chain.frag.map(|(id, offset, more)| Frag {
        id,
        offset,
        more,
        hdr_len: len32(FIXED.saturating_add(chain.unfragmentable)),
    });
    Ok(Packet {
        net: Net {
            src: Addr::from_v6(h.source()),
            dst: Addr::from_v6(h.destination()),
            v6: true,
            ip_len: len32(total),
            truncated,
        },
        proto: chain.proto,
        payload: data.get(chain.len..).unwrap_or_default(),
        payload_len: len32(claimed.saturating_sub(chain.len)),
        frag,
    })
}

/// Where an IPv6 extension header chain ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Chain {
    /// The upper-layer protocol.
    pub(super) proto: u8,
    /// Bytes of extension headers walked (fragment header included).
    pub(super) len: usize,
    /// Bytes in front of a fragment header, if one was found.
    pub(super) unfragmentable: usize,
    /// A (non-atomic) fragment header: identification, byte offset, more fragments.
    pub(super) frag: Option<(u32, u32, bool)>,
}

/// Walks IPv6 extension headers starting with `next` over `data` (the captured part of
/// `claimed` bytes), stopping at the first header that is not an extension header or at a
/// fragment header that starts a real fragment (an atomic fragment, offset 0 and no more
/// fragments, is skipped over like any other extension header).
pub(super) fn ext_chain(mut next: u8, data: &[u8], claimed: usize) -> Result<Chain, DropReason> {
    use etherparse::err::ip_auth::HeaderSliceError;
    let mut off = 0usize;
    // Whether the walk ran out of captured bytes or out of the packet itself.
    let short = |required: usize, off: usize| {
        if off.saturating_add(required) > claimed {
            DropReason::MalformedIp
        } else {
            DropReason::Truncated
        }
    };
    loop {
        let rest = data.get(off..).unwrap_or_default();
        let len = match next {
            HOP_BY_HOP | ROUTING | DEST_OPTS | MOBILITY | HIP | SHIM6 => {
                let e = Ipv6RawExtHeaderSlice::from_slice(rest)
                    .map_err(|e| short(e.required_len, off))?;
                next = e.next_header().0;
                e.slice().len()
            }
            AUTH => {
                let e = IpAuthHeaderSlice::from_slice(rest).map_err(|e| match e {
                    HeaderSliceError::Len(l) => short(l.required_len, off),
                    HeaderSliceError::Content(_) => DropReason::MalformedIp,
                })?;
                next = e.next_header().0;
                e.slice().len()
            }
            FRAGMENT => {
                let f = Ipv6FragmentHeaderSlice::from_slice(rest)
                    .map_err(|e| short(e.required_len, off))?;
                let offset = f.fragment_offset().byte_offset();
                if f.more_fragments() || offset != 0 {
                    return Ok(Chain {
                        proto: f.next_header().0,
                        len: off.saturating_add(8),
                        unfragmentable: off,
                        frag: Some((f.identification(), u32::from(offset), f.more_fragments())),
                    });
                }
                next = f.next_header().0;
                8
            }
            _ => {
                return Ok(Chain {
                    proto: next,
                    len: off,
                    unfragmentable: off,
                    frag: None,
                })
            }
        };
        off = off.saturating_add(len);
    }
}

/// How much of a packet of `total` bytes is in a capture of `captured` bytes, and whether it
/// is cut short; `Truncated` when the missing part is more than the capture left out.
fn captured_end(captured: usize, total: usize, missing: u32) -> Result<(usize, bool), DropReason> {
    if total <= captured {
        return Ok((total, false));
    }
    let lacking = total - captured;
    if u64::try_from(lacking).unwrap_or(u64::MAX) > u64::from(missing) {
        return Err(DropReason::Truncated);
    }
    Ok((captured, true))
}

/// Lengths here are bounded by 16-bit header fields plus a header, or by a capture; saturate.
#[inline]
pub(super) fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn raw(a: &Addr, v6: bool) -> &[u8] {
    if v6 {
        &a.0
    } else {
        a.0.get(12..).unwrap_or(&a.0)
    }
}

const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTH: u8 = 51;
const DEST_OPTS: u8 = 60;
const MOBILITY: u8 = 135;
const HIP: u8 = 139;
const SHIM6: u8 = 140;

#[cfg(test)]
mod tests;
