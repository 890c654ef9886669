//! Ordinary flows: TCP sessions, DNS exchanges, ICMP echo pairs and other UDP traffic.
//!
//! A [`Flow`] knows its five-tuple and how many packets it still has to send; each call to
//! [`Flow::emit`] appends its next packet. TCP sessions keep real sequence and acknowledgement
//! numbers (the tap sees every segment, in order), so session reassembly has to agree with them.

use super::frame::{self, tcp_flag, Ip, Tcp};
use super::rng::{mix64, perm24, Rng};

/// The kinds of ordinary flow, in the order the planner counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Tcp,
    Dns,
    Udp,
    Icmp,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [Kind::Tcp, Kind::Dns, Kind::Udp, Kind::Icmp];

    /// The fewest packets a flow of this kind can have: SYN, SYN-ACK, ACK, RST for TCP.
    pub(crate) fn min_packets(self) -> u64 {
        match self {
            Kind::Tcp => 4,
            Kind::Dns | Kind::Icmp => 2,
            Kind::Udp => 1,
        }
    }
}

/// What every flow needs while emitting: randomness, payload bytes and a scratch buffer.
pub(crate) struct Cx<'a> {
    pub(crate) rng: &'a mut Rng,
    /// A fixed byte pattern payloads are cut from (at least 2048 bytes).
    pub(crate) pattern: &'a [u8],
    pub(crate) scratch: &'a mut Vec<u8>,
}

/// One ordinary flow in progress.
pub(crate) struct Flow {
    conn: Conn,
    remaining: u32,
    sent: u32,
    body: Body,
}

impl Flow {
    /// The flow numbered `index` (its five-tuple is unique among all `index` values) with
    /// exactly `packets` packets. `key` scatters addresses; `rng` draws everything else.
    pub(crate) fn new(
        kind: Kind,
        index: u64,
        packets: u32,
        v6: bool,
        key: u64,
        rng: &mut Rng,
    ) -> Flow {
        let conn = Conn::new(kind, index, v6, key, rng);
        let body = match kind {
            Kind::Tcp => Body::Tcp(TcpState::new(packets, v6, rng)),
            Kind::Dns => Body::Dns {
                txid: rng.next_u16(),
                name: rng.next_u64(),
            },
            Kind::Icmp => Body::Icmp {
                ident: rng.next_u16(),
            },
            Kind::Udp => Body::Udp(App::pick(rng)),
        };
        let conn = match body {
            Body::Udp(app) => Conn {
                server: Side {
                    port: app.server_port(rng),
                    ..conn.server
                },
                ..conn
            },
            _ => conn,
        };
        Flow {
            conn,
            remaining: packets,
            sent: 0,
            body,
        }
    }

    /// The natural length of a flow of `kind` that is not TCP (TCP lengths are planned).
    pub(crate) fn natural_packets(kind: Kind, rng: &mut Rng) -> u64 {
        match kind {
            Kind::Tcp => Kind::Tcp.min_packets(),
            Kind::Dns => {
                if rng.chance(0.1) {
                    4
                } else {
                    2
                }
            }
            Kind::Icmp => 2 * rng.range(1, 8),
            Kind::Udp => match rng.below(10) {
                0..=2 => 2,                // NTP-like exchange
                3..=4 => rng.range(1, 8),  // syslog-like bursts
                5..=7 => rng.range(6, 60), // QUIC-like transfers
                _ => rng.range(20, 200),   // RTP-like media
            },
        }
    }

    pub(crate) fn remaining(&self) -> u32 {
        self.remaining
    }

    /// Appends the flow's next packet to `out`. Call only while `remaining() > 0`.
    pub(crate) fn emit(&mut self, cx: &mut Cx<'_>, out: &mut Vec<u8>) {
        let step = self.sent;
        match &mut self.body {
            Body::Tcp(t) => t.emit(step, &mut self.conn, cx, out),
            Body::Dns { txid, name } => {
                let from_client = step.is_multiple_of(2);
                let n = u64::from(step / 2);
                let id = txid.wrapping_add(n as u16);
                dns_message(cx.scratch, id, name.wrapping_add(n), !from_client);
                let (ip, sport, dport) = self.conn.ip(from_client);
                frame::udp(out, &ip, sport, dport, cx.scratch);
            }
            Body::Icmp { ident } => {
                let reply = step % 2 == 1;
                let seq = (step / 2 + 1) as u16;
                cx.scratch.clear();
                cx.scratch.extend_from_slice(&u64::from(seq).to_be_bytes());
                cx.scratch.extend_from_slice(&cx.pattern[..48]);
                let (ip, _, _) = self.conn.ip(!reply);
                frame::icmp_echo(out, &ip, reply, *ident, seq, cx.scratch);
            }
            Body::Udp(app) => {
                let (from_client, len) = app.next(step, cx.rng);
                let (ip, sport, dport) = self.conn.ip(from_client);
                let off = (self.conn.flow_label & 0x1ff) as usize;
                frame::udp(out, &ip, sport, dport, &cx.pattern[off..off + len]);
            }
        }
        self.sent += 1;
        self.remaining -= 1;
    }
}

enum Body {
    Tcp(TcpState),
    Dns { txid: u16, name: u64 },
    Icmp { ident: u16 },
    Udp(App),
}

/// One end of a flow as the packets show it.
#[derive(Clone, Copy)]
struct Side {
    addr: [u8; 16],
    port: u16,
    ip_id: u16,
    ttl: u8,
}

/// The two ends of a flow. The client is on the tap's "inside" (10.0.0.0/8, 2001:db8:c::/48),
/// servers are in the benchmarking range 198.18.0.0/15 (2001:db8:5::/48).
struct Conn {
    v6: bool,
    flow_label: u32,
    client: Side,
    server: Side,
}

impl Conn {
    /// Client host = a bijective scramble of `index / 16`; its 16 flows get disjoint port ranges
    /// (and, for ICMP, which has no ports, distinct targets), so five-tuples never repeat.
    fn new(kind: Kind, index: u64, v6: bool, key: u64, rng: &mut Rng) -> Conn {
        let host = index >> 4;
        let slot = (index & 15) as u16;
        let mut client = [0u8; 16];
        let mut server = [0u8; 16];
        let popular = rng.below(4096) + 1;
        let server_id = rng.below(popular) as u16; // a few servers are popular
        if v6 {
            client[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0c]);
            client[8..].copy_from_slice(&mix64(host ^ key).to_be_bytes());
            server[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0x00, 0x05]);
            let low = match kind {
                Kind::Dns => 0x53_00 | (slot & 1),
                Kind::Icmp => 0xff00 | slot,
                Kind::Tcp | Kind::Udp => 0x1000 + server_id,
            };
            server[14..].copy_from_slice(&low.to_be_bytes());
        } else {
            let h = perm24(host as u32, key).to_be_bytes();
            client[..4].copy_from_slice(&[10, h[1], h[2], h[3]]);
            server[..4].copy_from_slice(&match kind {
                Kind::Dns => [198, 18, 0, 53 + (slot & 1) as u8],
                Kind::Icmp => [198, 18, 250, 1 + slot as u8],
                Kind::Tcp | Kind::Udp => [
                    198,
                    18,
                    1 + (server_id / 250) as u8,
                    1 + (server_id % 250) as u8,
                ],
            });
        }
        let port = 20000 + slot * 2800 + rng.below(2800) as u16;
        let server_port = match kind {
            Kind::Dns => 53,
            Kind::Icmp | Kind::Udp => 0, // ICMP has none; UDP apps choose theirs
            Kind::Tcp => match rng.below(100) {
                0..=59 => 443,
                60..=79 => 80,
                80..=84 => 8080,
                85..=87 => 22,
                88..=89 => 25,
                90..=94 => 993,
                _ => 5432,
            },
        };
        Conn {
            v6,
            flow_label: rng.next_u32() & 0x000f_ffff,
            client: Side {
                addr: client,
                port,
                ip_id: rng.next_u16(),
                ttl: if rng.chance(0.7) { 64 } else { 128 },
            },
            server: Side {
                addr: server,
                port: server_port,
                ip_id: rng.next_u16(),
                ttl: rng.range(44, 64) as u8,
            },
        }
    }

    /// The IP layer and ports of the next packet in one direction.
    fn ip(&mut self, from_client: bool) -> (Ip, u16, u16) {
        let (src, dst) = if from_client {
            (&mut self.client, &self.server)
        } else {
            (&mut self.server, &self.client)
        };
        src.ip_id = src.ip_id.wrapping_add(1);
        let ip = Ip {
            v6: self.v6,
            src: src.addr,
            dst: dst.addr,
            ttl: src.ttl,
            id: src.ip_id,
            flow_label: self.flow_label,
            outbound: from_client,
        };
        (ip, src.port, dst.port)
    }
}

/// How a TCP session ends.
#[derive(Clone, Copy)]
enum Close {
    /// FIN, ACK, FIN, ACK.
    Fin4,
    /// FIN, FIN-ACK, ACK.
    Fin3,
    /// One RST.
    Rst,
}

impl Close {
    fn packets(self) -> u32 {
        match self {
            Close::Fin4 => 4,
            Close::Fin3 => 3,
            Close::Rst => 1,
        }
    }
}

struct TcpState {
    /// Next sequence number each side sends.
    c_nxt: u32,
    s_nxt: u32,
    c_win: u16,
    s_win: u16,
    mss: u16,
    data: u32,
    close: Close,
    /// Who closes (sends the first FIN or the RST).
    client_closes: bool,
    /// Who sends the bulk of the data (a download: the server).
    bulk_from_client: bool,
}

impl TcpState {
    fn new(packets: u32, v6: bool, rng: &mut Rng) -> TcpState {
        let close = if packets >= 7 && rng.chance(0.85) {
            if rng.chance(0.6) {
                Close::Fin4
            } else {
                Close::Fin3
            }
        } else if packets >= 6 && rng.chance(0.5) {
            Close::Fin3
        } else {
            Close::Rst
        };
        TcpState {
            c_nxt: rng.next_u32(),
            s_nxt: rng.next_u32(),
            c_win: rng.range(502, 65535) as u16,
            s_win: rng.range(502, 65535) as u16,
            mss: if v6 { 1440 } else { 1460 },
            data: packets - 3 - close.packets(),
            close,
            client_closes: rng.chance(0.6),
            bulk_from_client: rng.chance(0.25),
        }
    }

    fn emit(&mut self, step: u32, conn: &mut Conn, cx: &mut Cx<'_>, out: &mut Vec<u8>) {
        use tcp_flag::{ACK, FIN, PSH, RST, SYN};
        let (from_client, flags, len, mss) = match step {
            0 => (true, SYN, 0, Some(self.mss)),
            1 => (false, SYN | ACK, 0, Some(self.mss)),
            2 => (true, ACK, 0, None),
            s if s < 3 + self.data => {
                if s == 3 {
                    (true, PSH | ACK, cx.rng.range(80, 600) as usize, None) // the request
                } else if cx.rng.chance(0.56) {
                    let mss = usize::from(self.mss);
                    let len = if cx.rng.chance(0.85) {
                        mss
                    } else {
                        cx.rng.range(1, mss as u64) as usize
                    };
                    let flags = if len < mss { PSH | ACK } else { ACK };
                    (self.bulk_from_client, flags, len, None)
                } else if cx.rng.chance(0.8) {
                    (!self.bulk_from_client, ACK, 0, None)
                } else {
                    (
                        !self.bulk_from_client,
                        PSH | ACK,
                        cx.rng.range(1, 400) as usize,
                        None,
                    )
                }
            }
            s => {
                let closer = self.client_closes;
                match (self.close, s - 3 - self.data) {
                    (Close::Rst, _) => (closer, RST | ACK, 0, None),
                    (Close::Fin4, 0) | (Close::Fin3, 0) => (closer, FIN | ACK, 0, None),
                    (Close::Fin4, 1) => (!closer, ACK, 0, None),
                    (Close::Fin4, 2) | (Close::Fin3, 1) => (!closer, FIN | ACK, 0, None),
                    _ => (closer, ACK, 0, None),
                }
            }
        };
        let (ip, sport, dport) = conn.ip(from_client);
        let (seq, ack, window) = if from_client {
            (self.c_nxt, self.s_nxt, self.c_win)
        } else {
            (self.s_nxt, self.c_nxt, self.s_win)
        };
        let hdr = Tcp {
            sport,
            dport,
            seq,
            ack: if step == 0 { 0 } else { ack },
            flags,
            window,
            mss,
        };
        let off = (conn.flow_label & 0x1ff) as usize;
        frame::tcp(out, &ip, &hdr, &cx.pattern[off..off + len]);
        let advance = len as u32 + u32::from(flags & (SYN | FIN) != 0);
        if from_client {
            self.c_nxt = self.c_nxt.wrapping_add(advance);
        } else {
            self.s_nxt = self.s_nxt.wrapping_add(advance);
        }
    }
}

/// Other UDP traffic, by the shape of its exchange.
#[derive(Clone, Copy)]
enum App {
    Ntp,
    Syslog,
    Quic,
    Rtp,
}

impl App {
    fn pick(rng: &mut Rng) -> App {
        match rng.below(10) {
            0..=2 => App::Ntp,
            3..=4 => App::Syslog,
            5..=7 => App::Quic,
            _ => App::Rtp,
        }
    }

    fn server_port(self, rng: &mut Rng) -> u16 {
        match self {
            App::Ntp => 123,
            App::Syslog => 514,
            App::Quic => 443,
            App::Rtp => 2 * rng.range(5000, 10000) as u16,
        }
    }

    /// Direction and payload length of packet number `step`.
    fn next(self, step: u32, rng: &mut Rng) -> (bool, usize) {
        match self {
            App::Ntp => (step.is_multiple_of(2), 48),
            App::Syslog => (true, rng.range(60, 300) as usize),
            App::Quic if step == 0 => (true, 1252),
            App::Quic if rng.chance(0.65) => (false, rng.range(1200, 1350) as usize),
            App::Quic => (true, rng.range(30, 80) as usize),
            App::Rtp => (rng.chance(0.5), 172),
        }
    }
}

/// Writes a DNS query or its response (one A or AAAA question) into `out` (cleared first).
fn dns_message(out: &mut Vec<u8>, id: u16, name: u64, response: bool) {
    out.clear();
    let aaaa = name & 0x100 != 0;
    let nxdomain = response && name.is_multiple_of(20);
    let flags: u16 = match (response, nxdomain) {
        (false, _) => 0x0100,    // RD
        (true, false) => 0x8180, // QR RD RA, NOERROR
        (true, true) => 0x8183,  // NXDOMAIN
    };
    let answers = u16::from(response && !nxdomain);
    for v in [id, flags, 1, answers, 0, 0] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    let mut s = mix64(name);
    let len = 3 + (s % 10) as u8;
    out.push(len);
    for _ in 0..len {
        s = s.rotate_right(5);
        out.push(b'a' + (s % 26) as u8);
    }
    let domain: &[u8] = [
        b"\x07example\x03com\x00".as_slice(),
        b"\x07example\x03net\x00",
        b"\x04test\x00",
    ][(name % 3) as usize];
    out.extend_from_slice(domain);
    let qtype: u16 = if aaaa { 28 } else { 1 };
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    if answers == 1 {
        out.extend_from_slice(&[0xc0, 0x0c]); // pointer to the question's name
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&300u32.to_be_bytes());
        let rdata = mix64(name ^ 0xa5a5).to_be_bytes();
        if aaaa {
            out.extend_from_slice(&16u16.to_be_bytes());
            out.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            out.extend_from_slice(&rdata[..8]);
            out.extend_from_slice(&rdata[..4]);
        } else {
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&[198, 18, rdata[0], rdata[1]]);
        }
    }
}
