//! Ethernet frames: IPv4/IPv6 carrying TCP, UDP, ICMP or ICMPv6, with every checksum correct.
//!
//! Each builder appends one frame to the caller's buffer, writing headers with zero lengths and
//! checksums, then the payload, then patching lengths and checksums in place. Frames shorter
//! than 60 bytes are zero-padded as they are on the wire, so decoders must read lengths from the
//! IP header, not from the frame.

/// IP protocol numbers.
pub(crate) const TCP: u8 = 6;
pub(crate) const UDP: u8 = 17;
pub(crate) const ICMP: u8 = 1;
pub(crate) const ICMPV6: u8 = 58;

/// TCP flag bits.
pub(crate) mod tcp_flag {
    pub(crate) const FIN: u8 = 0x01;
    pub(crate) const SYN: u8 = 0x02;
    pub(crate) const RST: u8 = 0x04;
    pub(crate) const PSH: u8 = 0x08;
    pub(crate) const ACK: u8 = 0x10;
}

const ETH_LEN: usize = 14;
const MIN_FRAME: usize = 60;
const MAC_CLIENT_SIDE: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const MAC_SERVER_SIDE: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

/// The IP layer of one packet. IPv4 addresses use the first 4 bytes of `src`/`dst`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ip {
    pub(crate) v6: bool,
    pub(crate) src: [u8; 16],
    pub(crate) dst: [u8; 16],
    pub(crate) ttl: u8,
    /// IPv4 identification.
    pub(crate) id: u16,
    /// IPv6 flow label (20 bits).
    pub(crate) flow_label: u32,
    /// Travels from the client side of the tap to the server side (picks the MAC pair).
    pub(crate) outbound: bool,
}

/// The TCP header fields the generator varies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tcp {
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) flags: u8,
    pub(crate) window: u16,
    /// Adds an MSS option (SYN and SYN-ACK).
    pub(crate) mss: Option<u16>,
}

/// Appends an Ethernet + IP + TCP frame carrying `payload`.
pub(crate) fn tcp(out: &mut Vec<u8>, ip: &Ip, tcp: &Tcp, payload: &[u8]) {
    let start = out.len();
    let l4 = begin(out, ip);
    let hdr_len: u8 = if tcp.mss.is_some() { 24 } else { 20 };
    out.extend_from_slice(&tcp.sport.to_be_bytes());
    out.extend_from_slice(&tcp.dport.to_be_bytes());
    out.extend_from_slice(&tcp.seq.to_be_bytes());
    out.extend_from_slice(&tcp.ack.to_be_bytes());
    out.push((hdr_len / 4) << 4);
    out.push(tcp.flags);
    out.extend_from_slice(&tcp.window.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    if let Some(mss) = tcp.mss {
        out.extend_from_slice(&[2, 4]);
        out.extend_from_slice(&mss.to_be_bytes());
    }
    out.extend_from_slice(payload);
    finish(out, start, l4, ip, TCP, 16);
}

/// Appends an Ethernet + IP + UDP frame carrying `payload`.
pub(crate) fn udp(out: &mut Vec<u8>, ip: &Ip, sport: u16, dport: u16, payload: &[u8]) {
    let start = out.len();
    let l4 = begin(out, ip);
    let len = (8 + payload.len()) as u16;
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    finish(out, start, l4, ip, UDP, 6);
}

/// Appends an ICMP (IPv4) or ICMPv6 echo request or reply.
pub(crate) fn icmp_echo(
    out: &mut Vec<u8>,
    ip: &Ip,
    reply: bool,
    ident: u16,
    seq: u16,
    data: &[u8],
) {
    let start = out.len();
    let l4 = begin(out, ip);
    let icmp_type = match (ip.v6, reply) {
        (false, false) => 8,
        (false, true) => 0,
        (true, false) => 128,
        (true, true) => 129,
    };
    out.extend_from_slice(&[icmp_type, 0, 0, 0]);
    out.extend_from_slice(&ident.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(data);
    let proto = if ip.v6 { ICMPV6 } else { ICMP };
    finish(out, start, l4, ip, proto, 2);
}

/// The Internet checksum's running sum of `data` (RFC 1071), big-endian 16-bit words, an odd
/// last byte padded with zero. Summing 32-bit words and folding later gives the same result.
pub(crate) fn sum(data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(4);
    let mut acc: u64 = chunks
        .by_ref()
        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .sum();
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc += u64::from(u32::from_be_bytes(tail));
    acc
}

/// Folds a running sum to 16 bits and complements it.
pub(crate) fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Writes the Ethernet header and an IP header with zero length and checksum; returns the
/// offset of the transport header.
fn begin(out: &mut Vec<u8>, ip: &Ip) -> usize {
    let (dst_mac, src_mac) = if ip.outbound {
        (MAC_SERVER_SIDE, MAC_CLIENT_SIDE)
    } else {
        (MAC_CLIENT_SIDE, MAC_SERVER_SIDE)
    };
    out.extend_from_slice(&dst_mac);
    out.extend_from_slice(&src_mac);
    if ip.v6 {
        out.extend_from_slice(&[0x86, 0xdd]);
        let vtf = (6u32 << 28) | (ip.flow_label & 0x000f_ffff);
        out.extend_from_slice(&vtf.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, ip.ttl]); // payload length, next header, hop limit
        out.extend_from_slice(&ip.src);
        out.extend_from_slice(&ip.dst);
    } else {
        out.extend_from_slice(&[0x08, 0x00]);
        out.extend_from_slice(&[0x45, 0, 0, 0]); // version/IHL, DSCP, total length
        out.extend_from_slice(&ip.id.to_be_bytes());
        out.extend_from_slice(&[0x40, 0, ip.ttl, 0, 0, 0]); // DF, TTL, protocol, checksum
        out.extend_from_slice(&ip.src[..4]);
        out.extend_from_slice(&ip.dst[..4]);
    }
    out.len()
}

/// Patches the IP lengths, protocol and checksums of the frame that starts at `start`, then
/// pads it to the Ethernet minimum. `csum_at` is the checksum's offset in the transport header.
fn finish(out: &mut Vec<u8>, start: usize, l4: usize, ip: &Ip, proto: u8, csum_at: usize) {
    let ip_start = start + ETH_LEN;
    let l4_len = out.len() - l4;
    let mut acc = if ip.v6 {
        out[ip_start + 4..ip_start + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        out[ip_start + 6] = proto;
        sum(&out[ip_start + 8..ip_start + 40]) + l4_len as u64 + u64::from(proto)
    } else {
        let total = (20 + l4_len) as u16;
        out[ip_start + 2..ip_start + 4].copy_from_slice(&total.to_be_bytes());
        out[ip_start + 9] = proto;
        let hdr_csum = fold(sum(&out[ip_start..ip_start + 20]));
        out[ip_start + 10..ip_start + 12].copy_from_slice(&hdr_csum.to_be_bytes());
        if proto == ICMP {
            0 // ICMPv4 has no pseudo-header
        } else {
            sum(&out[ip_start + 12..ip_start + 20]) + l4_len as u64 + u64::from(proto)
        }
    };
    acc += sum(&out[l4..]);
    let mut csum = fold(acc);
    if proto == UDP && csum == 0 {
        csum = 0xffff; // 0 means "no checksum" in UDP
    }
    out[l4 + csum_at..l4 + csum_at + 2].copy_from_slice(&csum.to_be_bytes());
    if out.len() - start < MIN_FRAME {
        out.resize(start + MIN_FRAME, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071's example: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    #[test]
    fn checksum_matches_rfc1071() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(!fold(sum(&data)), 0xddf2);
        assert_eq!(
            !fold(sum(&data[..7])),
            !fold(sum(&[0, 1, 0xf2, 3, 0xf4, 0xf5, 0xf6, 0]))
        );
    }

    #[test]
    fn short_frames_are_padded() {
        let ip = Ip {
            v6: false,
            src: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ttl: 64,
            id: 1,
            flow_label: 0,
            outbound: true,
        };
        let t = Tcp {
            sport: 1,
            dport: 2,
            seq: 3,
            ack: 4,
            flags: tcp_flag::ACK,
            window: 5,
            mss: None,
        };
        let mut out = Vec::new();
        tcp(&mut out, &ip, &t, &[]);
        assert_eq!(out.len(), 60);
        assert_eq!(&out[16..18], &40u16.to_be_bytes());
    }
}
