//! The attacks mixed into the ordinary traffic: a spoofed-source SYN flood and a SYN port scan.

use std::collections::VecDeque;

use super::frame::{self, tcp_flag, Ip, Tcp};
use super::rng::{mix64, perm24, Rng};

/// The SYN flood's victim: 198.18.0.80, port 80.
pub const FLOOD_VICTIM: ([u8; 4], u16) = ([198, 18, 0, 80], 80);
/// The port scan's source and target.
pub const SCANNER: [u8; 4] = [203, 0, 113, 66];
pub const SCAN_TARGET: [u8; 4] = [198, 18, 0, 10];
/// Ports the scan target answers with SYN-ACK (the scanner then resets them).
const OPEN_PORTS: [u16; 4] = [22, 80, 443, 8080];

/// Spoofed SYNs to one victim:port. Packet `k` comes from spoofed tuple `k % tuples`, so every
/// tuple is used and each one retransmits its SYN (same sequence number) a few times.
pub(crate) struct Flood {
    tuples: u64,
    sent: u64,
    key: u64,
}

impl Flood {
    pub(crate) fn new(tuples: u64, key: u64) -> Flood {
        Flood {
            tuples,
            sent: 0,
            key,
        }
    }

    pub(crate) fn emit(&mut self, rng: &mut Rng, out: &mut Vec<u8>) {
        let j = self.sent % self.tuples.max(1);
        let h = mix64(j ^ self.key);
        // Distinct low 24 bits per tuple; first octets avoid 10/8 and 198.18/15.
        const FIRST: [u8; 8] = [23, 31, 45, 62, 77, 89, 91, 95];
        let low = perm24(j as u32, self.key).to_be_bytes();
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[FIRST[(h % 8) as usize], low[1], low[2], low[3]]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&FLOOD_VICTIM.0);
        let ip = Ip {
            v6: false,
            src,
            dst,
            ttl: 40 + (h >> 8) as u8 % 80,
            id: rng.next_u16(),
            flow_label: 0,
            outbound: false,
        };
        let tcp = Tcp {
            sport: 1024 + ((h >> 16) % 64000) as u16,
            dport: FLOOD_VICTIM.1,
            seq: (h >> 32) as u32,
            ack: 0,
            flags: tcp_flag::SYN,
            window: 512,
            mss: None,
        };
        frame::tcp(out, &ip, &tcp, &[]);
        self.sent += 1;
    }
}

/// Only a spoofed SYN flood: `packets` SYNs to [`FLOOD_VICTIM`], each from its own spoofed
/// five-tuple (distinct up to 2^24), evenly `1e9 / rate_pps` ns apart. Every one starts a
/// connection that nothing answers: the worst case for a flow table (`bench/flood_rss.sh`).
pub struct SynFlood {
    flood: Flood,
    rng: Rng,
    left: u64,
    clock_ns: u64,
    gap_ns: u64,
}

impl SynFlood {
    /// At most 2^24 packets (the spoofed sources are distinct below that), `rate_pps` >= 1.
    pub fn new(packets: u64, rate_pps: u64, seed: u64, start_ns: u64) -> SynFlood {
        let mut rng = Rng::new(seed);
        let key = rng.next_u64();
        SynFlood {
            flood: Flood::new(packets, key),
            rng,
            left: packets,
            clock_ns: start_ns,
            gap_ns: (1_000_000_000 / rate_pps.max(1)).max(1),
        }
    }

    /// Clears `frame` and writes the next SYN into it; `None` once all are out.
    pub fn next_packet(&mut self, frame: &mut Vec<u8>) -> Option<super::Packet> {
        if self.left == 0 {
            return None;
        }
        frame.clear();
        self.flood.emit(&mut self.rng, frame);
        self.left -= 1;
        let ts_ns = self.clock_ns;
        self.clock_ns += self.gap_ns;
        Some(super::Packet { ts_ns })
    }
}

/// A SYN scan of one host from one source port: closed ports answer RST-ACK, open ones
/// SYN-ACK, which the scanner resets. At most a handful of probes are outstanding.
pub(crate) struct Scan {
    ports: u32,
    next_probe: u32,
    sport: u16,
    seq: u32,
    outstanding: VecDeque<Pending>,
}

#[derive(Clone, Copy)]
enum Pending {
    /// The target's answer to the probe of this port.
    Answer(u16),
    /// The scanner's RST after an open port's SYN-ACK.
    Reset(u16),
}

impl Scan {
    pub(crate) fn new(ports: u32, rng: &mut Rng) -> Scan {
        Scan {
            ports,
            next_probe: 0,
            sport: rng.range(40000, 60000) as u16,
            seq: rng.next_u32(),
            outstanding: VecDeque::with_capacity(16),
        }
    }

    /// The `k`-th scanned port: a stride through 1..=65535 (7919 is coprime to 65535).
    pub(crate) fn port(k: u32) -> u16 {
        ((u64::from(k) * 7919 + 21) % 65535 + 1) as u16
    }

    /// Packets a scan of `ports` ports sends in all.
    pub(crate) fn packets(ports: u32) -> u64 {
        let open = (0..ports)
            .filter(|&k| OPEN_PORTS.contains(&Scan::port(k)))
            .count();
        2 * u64::from(ports) + open as u64
    }

    pub(crate) fn emit(&mut self, rng: &mut Rng, out: &mut Vec<u8>) {
        use tcp_flag::{ACK, RST, SYN};
        let probe = self.next_probe < self.ports
            && (self.outstanding.is_empty() || (self.outstanding.len() < 16 && rng.chance(0.5)));
        let (from_scanner, port, flags, seq, ack, mss) = if probe {
            let port = Scan::port(self.next_probe);
            self.next_probe += 1;
            self.outstanding.push_back(Pending::Answer(port));
            (true, port, SYN, self.seq, 0, Some(1460))
        } else {
            match self.outstanding.pop_front() {
                Some(Pending::Answer(port)) if OPEN_PORTS.contains(&port) => {
                    self.outstanding.push_back(Pending::Reset(port));
                    let isn = mix64(u64::from(port) ^ u64::from(self.seq)) as u32;
                    (
                        false,
                        port,
                        SYN | ACK,
                        isn,
                        self.seq.wrapping_add(1),
                        Some(1460),
                    )
                }
                Some(Pending::Answer(port)) => {
                    (false, port, RST | ACK, 0, self.seq.wrapping_add(1), None)
                }
                Some(Pending::Reset(port)) => (true, port, RST, self.seq.wrapping_add(1), 0, None),
                None => return, // the planner never asks for more packets than the scan has
            }
        };
        let (mut scanner, mut target) = ([0u8; 16], [0u8; 16]);
        scanner[..4].copy_from_slice(&SCANNER);
        target[..4].copy_from_slice(&SCAN_TARGET);
        let (src, dst, sport, dport) = if from_scanner {
            (scanner, target, self.sport, port)
        } else {
            (target, scanner, port, self.sport)
        };
        let ip = Ip {
            v6: false,
            src,
            dst,
            ttl: if from_scanner { 52 } else { 64 },
            id: rng.next_u16(),
            flow_label: 0,
            outbound: !from_scanner,
        };
        let tcp = Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
            window: match (from_scanner, flags & SYN != 0) {
                (true, _) => 1024,
                (false, true) => 29200,
                (false, false) => 0,
            },
            mss,
        };
        frame::tcp(out, &ip, &tcp, &[]);
    }
}
