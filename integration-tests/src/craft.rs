//! Hand-made captures for the tests: a classic pcap writer (microsecond timestamps, Ethernet)
//! and IPv4 frames with TCP, UDP or any other protocol, their IP and transport checksums
//! filled in, so that a collector verifying checksums (its default) takes them as a wire's.
//!
//! A frame can claim more bytes than it carries (`Ipv4::claim`): the pcap record's original
//! length and the IP total length say the claimed size while only the headers are captured,
//! as with a snaplen cut, so a test can play gigabits per second in a small file.

use std::io::Write as _;
use std::path::Path;

/// TCP flags.
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// A classic pcap file being written (little endian, microseconds, Ethernet, snaplen 65535).
pub struct PcapWriter {
    out: std::io::BufWriter<std::fs::File>,
    /// Records written so far.
    pub packets: usize,
}

impl PcapWriter {
    pub fn create(path: &Path) -> PcapWriter {
        let file = std::fs::File::create(path).expect("creating the capture file");
        let mut out = std::io::BufWriter::new(file);
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&[0; 8]);
        header.extend_from_slice(&65535u32.to_le_bytes());
        header.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        out.write_all(&header).expect("writing the pcap header");
        PcapWriter { out, packets: 0 }
    }

    /// One record at `ts_us` (Unix microseconds) of `frame`, which was `wire_len` bytes long
    /// on the wire (at least `frame.len()`).
    pub fn write(&mut self, ts_us: u64, frame: &[u8], wire_len: usize) {
        let mut rec = Vec::with_capacity(16 + frame.len());
        rec.extend_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
        rec.extend_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        rec.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        rec.extend_from_slice(&(wire_len.max(frame.len()) as u32).to_le_bytes());
        rec.extend_from_slice(frame);
        self.out.write_all(&rec).expect("writing a pcap record");
        self.packets += 1;
    }

    /// Writes a packet built by [`Ipv4::frame`].
    pub fn packet(&mut self, ts_us: u64, p: &Ipv4) {
        let (frame, wire) = p.frame();
        self.write(ts_us, &frame, wire);
    }

    pub fn finish(mut self) {
        self.out.flush().expect("flushing the capture file");
    }
}

/// An IPv4 packet in an Ethernet frame.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub proto: u8,
    /// The transport header and payload as captured.
    pub l4: Vec<u8>,
    /// The IP total length to claim when larger than what `l4` holds (bytes not captured).
    pub claim: Option<u16>,
}

impl Ipv4 {
    /// A TCP segment with `flags`, `seq`, `ack` and `payload` (checksum filled in).
    pub fn tcp(
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        flags: u8,
        seq: u32,
        ack: u32,
        payload: &[u8],
    ) -> Ipv4 {
        let mut l4 = Vec::with_capacity(20 + payload.len());
        l4.extend_from_slice(&src.1.to_be_bytes());
        l4.extend_from_slice(&dst.1.to_be_bytes());
        l4.extend_from_slice(&seq.to_be_bytes());
        l4.extend_from_slice(&ack.to_be_bytes());
        l4.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        l4.extend_from_slice(payload);
        let sum = transport_checksum(src.0, dst.0, 6, &l4);
        l4[16..18].copy_from_slice(&sum.to_be_bytes());
        Ipv4 {
            src: src.0,
            dst: dst.0,
            proto: 6,
            l4,
            claim: None,
        }
    }

    /// A UDP datagram (checksum filled in).
    pub fn udp(src: ([u8; 4], u16), dst: ([u8; 4], u16), payload: &[u8]) -> Ipv4 {
        let len = (8 + payload.len()) as u16;
        let mut l4 = Vec::with_capacity(usize::from(len));
        l4.extend_from_slice(&src.1.to_be_bytes());
        l4.extend_from_slice(&dst.1.to_be_bytes());
        l4.extend_from_slice(&len.to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
        l4.extend_from_slice(payload);
        let sum = match transport_checksum(src.0, dst.0, 17, &l4) {
            0 => 0xffff,
            s => s,
        };
        l4[6..8].copy_from_slice(&sum.to_be_bytes());
        Ipv4 {
            src: src.0,
            dst: dst.0,
            proto: 17,
            l4,
            claim: None,
        }
    }

    /// A packet of any other protocol (no ports): `l4` as is.
    pub fn other(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Ipv4 {
        Ipv4 {
            src,
            dst,
            proto,
            l4: l4.to_vec(),
            claim: None,
        }
    }

    /// The Ethernet frame as captured, and its length on the wire.
    pub fn frame(&self) -> (Vec<u8>, usize) {
        let captured = 20 + self.l4.len();
        let total = self
            .claim
            .map_or(captured, |c| usize::from(c).max(captured));
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            self.proto,
            0,
            0,
        ];
        ip.extend_from_slice(&self.src);
        ip.extend_from_slice(&self.dst);
        let sum = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&self.l4);
        let wire = f.len() + (total - captured);
        (f, wire)
    }
}

/// One complete TCP session from `client` to `server` starting at `start_us` (Unix
/// microseconds), its packets with their times (sort them with other sessions' before
/// writing): a handshake whose SYN/ACK comes `synack_us` after the SYN and whose ACK comes
/// `ackdat_us` after that, a 3-byte request answered (and acknowledged) by a 4-byte response
/// one round trip (`synack_us + ackdat_us`) later, its acknowledgement, then FINs both ways.
pub fn tcp_session(
    start_us: u64,
    client: ([u8; 4], u16),
    server: ([u8; 4], u16),
    synack_us: u64,
    ackdat_us: u64,
) -> Vec<(u64, Ipv4)> {
    use tcp::{ACK, FIN, PSH, SYN};
    let (c, s) = (1000u32, 5000u32);
    let rtt = synack_us + ackdat_us;
    let t1 = start_us + synack_us;
    let t2 = t1 + ackdat_us;
    let req = t2 + 100;
    let resp = req + rtt;
    let end = resp + ackdat_us + 1000;
    vec![
        (start_us, Ipv4::tcp(client, server, SYN, c, 0, &[])),
        (t1, Ipv4::tcp(server, client, SYN | ACK, s, c + 1, &[])),
        (t2, Ipv4::tcp(client, server, ACK, c + 1, s + 1, &[])),
        (
            req,
            Ipv4::tcp(client, server, PSH | ACK, c + 1, s + 1, b"req"),
        ),
        (
            resp,
            Ipv4::tcp(server, client, PSH | ACK, s + 1, c + 4, b"resp"),
        ),
        (
            resp + ackdat_us,
            Ipv4::tcp(client, server, ACK, c + 4, s + 5, &[]),
        ),
        (end, Ipv4::tcp(client, server, FIN | ACK, c + 4, s + 5, &[])),
        (
            end + rtt,
            Ipv4::tcp(server, client, FIN | ACK, s + 5, c + 5, &[]),
        ),
        (
            end + rtt + ackdat_us,
            Ipv4::tcp(client, server, ACK, c + 5, s + 6, &[]),
        ),
    ]
}

/// Writes a capture of `n` [`tcp_session`]s from distinct client ports of 10.0.0.1 to
/// `server`, one every `every_us` from `start_us`.
pub fn handshakes_capture(
    path: &Path,
    start_us: u64,
    server: ([u8; 4], u16),
    n: u64,
    every_us: u64,
    (synack_us, ackdat_us): (u64, u64),
) {
    let mut packets: Vec<(u64, Ipv4)> = (0..n)
        .flat_map(|i| {
            let client = ([10, 0, 0, 1], 20_000 + (i % 40_000) as u16);
            tcp_session(
                start_us + i * every_us,
                client,
                server,
                synack_us,
                ackdat_us,
            )
        })
        .collect();
    packets.sort_by_key(|(t, _)| *t);
    let mut pcap = PcapWriter::create(path);
    for (t, p) in &packets {
        pcap.packet(*t, p);
    }
    pcap.finish();
}

/// The first packet's time (Unix microseconds) of a classic pcap file (either byte order,
/// micro- or nanosecond timestamps); `None` for anything else.
pub fn first_packet_us(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let word = |at: usize, le: bool| -> Option<u64> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u64::from(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }))
    };
    let (le, nano) = match word(0, true)? {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        _ => return None,
    };
    let frac = word(28, le)?;
    Some(word(24, le)? * 1_000_000 + if nano { frac / 1000 } else { frac })
}

/// The Internet checksum over `parts` (one's complement of the one's complement sum).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn transport_checksum(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> u16 {
    let len = (l4.len() as u16).to_be_bytes();
    let pseudo = [
        src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3], 0, proto, len[0], len[1],
    ];
    checksum(&[&pseudo, l4])
}

/// Lines of a JSON-lines text, parsed (a line that does not parse is a test failure).
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("parsing a JSON line"))
        .collect()
}
