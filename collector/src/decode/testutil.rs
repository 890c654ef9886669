//! Test frames, built by hand or with etherparse's `PacketBuilder` (whose checksums are an
//! independent check of ours), and a minimal pcap record reader for the real captures.

use std::path::PathBuf;

use etherparse::{IpNumber, PacketBuilder};

use super::checksum::Sum;

pub(super) const A6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub(super) const B6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

pub(super) fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 4] {
    [a, b, c, d]
}

/// An IPv4 header with a correct checksum. `offset` is in bytes (a multiple of 8).
#[allow(clippy::too_many_arguments)]
pub(super) fn ipv4_header(
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    payload_len: usize,
    id: u16,
    offset: u16,
    more: bool,
    options: &[u8],
) -> Vec<u8> {
    let hl = 20 + options.len();
    let total = (hl + payload_len) as u16;
    let frag = (offset / 8) | if more { 0x2000 } else { 0 };
    let mut h = vec![0x40 | (hl / 4) as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(options);
    let c = Sum::default().add(&h).checksum().to_be_bytes();
    h[10..12].copy_from_slice(&c);
    h
}

/// A whole IPv6 packet around `payload` (which starts with any extension headers).
pub(super) fn ipv6(next: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// An Ethernet II frame.
pub(super) fn eth(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ty.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn build(b: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    b(&mut v);
    v
}

/// IPv4 + UDP with correct checksums.
pub(super) fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    build(|v| {
        let r = PacketBuilder::ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(v, payload);
        assert!(r.is_ok(), "{r:?}");
    })
}

pub(super) fn udp6(
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    build(|v| {
        let r = PacketBuilder::ipv6(src, dst, 64)
            .udp(sport, dport)
            .write(v, payload);
        assert!(r.is_ok(), "{r:?}");
    })
}

/// IPv4 + TCP (SYN when `seq` is odd, else ACK) with correct checksums.
pub(super) fn tcp4(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    build(|v| {
        let b = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, seq, 1000);
        let b = if seq % 2 == 1 {
            b.syn()
        } else {
            b.ack(7).psh()
        };
        let r = b.write(v, payload);
        assert!(r.is_ok(), "{r:?}");
    })
}

pub(super) fn tcp6(
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    build(|v| {
        let r = PacketBuilder::ipv6(src, dst, 64)
            .tcp(sport, dport, seq, 1000)
            .syn()
            .write(v, payload);
        assert!(r.is_ok(), "{r:?}");
    })
}

/// IPv4 around any protocol's bytes, by PacketBuilder.
pub(super) fn ip4_raw(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    build(|v| {
        let r = PacketBuilder::ipv4(src, dst, 64).write(v, IpNumber(proto), payload);
        assert!(r.is_ok(), "{r:?}");
    })
}

pub(super) fn icmp4_echo(src: [u8; 4], dst: [u8; 4], request: bool) -> Vec<u8> {
    build(|v| {
        let b = PacketBuilder::ipv4(src, dst, 64);
        let b = if request {
            b.icmpv4_echo_request(1, 2)
        } else {
            b.icmpv4_echo_reply(1, 2)
        };
        let r = b.write(v, b"ping");
        assert!(r.is_ok(), "{r:?}");
    })
}

pub(super) fn icmp6_echo(src: [u8; 16], dst: [u8; 16], request: bool) -> Vec<u8> {
    build(|v| {
        let b = PacketBuilder::ipv6(src, dst, 64);
        let b = if request {
            b.icmpv6_echo_request(1, 2)
        } else {
            b.icmpv6_echo_reply(1, 2)
        };
        let r = b.write(v, b"ping");
        assert!(r.is_ok(), "{r:?}");
    })
}

/// Splits an IPv4 packet (20-byte header) into fragments of `chunk` data bytes (a multiple of
/// 8), with identification `id`.
pub(super) fn fragments4(packet: &[u8], chunk: usize, id: u16) -> Vec<Vec<u8>> {
    let (src, dst) = (
        v4(packet[12], packet[13], packet[14], packet[15]),
        v4(packet[16], packet[17], packet[18], packet[19]),
    );
    let data = &packet[20..];
    data.chunks(chunk)
        .enumerate()
        .map(|(i, piece)| {
            let offset = (i * chunk) as u16;
            let more = (i + 1) * chunk < data.len();
            [
                ipv4_header(packet[9], src, dst, piece.len(), id, offset, more, &[]),
                piece.to_vec(),
            ]
            .concat()
        })
        .collect()
}

/// Splits an IPv6 packet without extension headers into fragments of `chunk` data bytes.
pub(super) fn fragments6(packet: &[u8], chunk: usize, id: u32) -> Vec<Vec<u8>> {
    let (next, src, dst) = (
        packet[6],
        packet[8..24].try_into().unwrap_or([0; 16]),
        packet[24..40].try_into().unwrap_or([0; 16]),
    );
    let data = &packet[40..];
    data.chunks(chunk)
        .enumerate()
        .map(|(i, piece)| {
            let offset = (i * chunk) as u16;
            let more = u16::from((i + 1) * chunk < data.len());
            let mut fh = vec![next, 0];
            fh.extend_from_slice(&(offset | more).to_be_bytes());
            fh.extend_from_slice(&id.to_be_bytes());
            ipv6(44, src, dst, &[fh, piece.to_vec()].concat())
        })
        .collect()
}

/// The shared real captures, if present (tests skip, saying why, when they are not).
pub(super) fn pcaps_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipping: {} is absent", dir.display());
        None
    }
}

/// One pcap record: timestamp (ns), captured bytes, original length.
pub(super) type Record = (u64, Vec<u8>, u32);

/// Reads a classic pcap file (either byte order, micro- or nanosecond): link type and records.
/// Only for tests; the collector reads captures through libpcap.
pub(super) fn read_pcap(bytes: &[u8]) -> Option<(i32, Vec<Record>)> {
    let magic = bytes.get(..4)?;
    let (le, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
        _ => return None,
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let link = u32_at(20)? as i32 & 0x03ff_ffff;
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let (sec, frac, caplen, len) = (
            u32_at(at)?,
            u32_at(at + 4)?,
            u32_at(at + 8)?,
            u32_at(at + 12)?,
        );
        let data = bytes.get(at + 16..at + 16 + caplen as usize)?;
        let ns = u64::from(sec) * 1_000_000_000 + u64::from(frac) * if nanos { 1 } else { 1000 };
        records.push((ns, data.to_vec(), len));
        at += 16 + caplen as usize;
    }
    Some((link, records))
}
