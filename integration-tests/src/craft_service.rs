//! Crafted sessions whose payload names their application (issue 17): HTTP requests with a
//! `Host` answered by a response, for tests that need sessions with a `service` and a
//! `server_name` at a time of their choosing (e.g. beside a real capture's minutes).

use std::path::Path;

use crate::craft::{tcp, Ipv4, PcapWriter};

/// One TCP session from `client` to `server` at `start_us` (Unix microseconds): handshake,
/// `request`, `response` 1 ms later, its acknowledgement and FINs both ways.
pub fn tcp_exchange(
    start_us: u64,
    client: ([u8; 4], u16),
    server: ([u8; 4], u16),
    request: &[u8],
    response: &[u8],
) -> Vec<(u64, Ipv4)> {
    use tcp::{ACK, FIN, PSH, SYN};
    let (c, s) = (1000u32, 5000u32);
    let (q, r) = (request.len() as u32, response.len() as u32);
    let t = |ms: u64| start_us + ms * 1000;
    vec![
        (t(0), Ipv4::tcp(client, server, SYN, c, 0, &[])),
        (t(1), Ipv4::tcp(server, client, SYN | ACK, s, c + 1, &[])),
        (t(2), Ipv4::tcp(client, server, ACK, c + 1, s + 1, &[])),
        (
            t(3),
            Ipv4::tcp(client, server, PSH | ACK, c + 1, s + 1, request),
        ),
        (
            t(4),
            Ipv4::tcp(server, client, PSH | ACK, s + 1, c + 1 + q, response),
        ),
        (
            t(5),
            Ipv4::tcp(client, server, ACK, c + 1 + q, s + 1 + r, &[]),
        ),
        (
            t(6),
            Ipv4::tcp(client, server, FIN | ACK, c + 1 + q, s + 1 + r, &[]),
        ),
        (
            t(7),
            Ipv4::tcp(server, client, FIN | ACK, s + 1 + r, c + 2 + q, &[]),
        ),
        (
            t(8),
            Ipv4::tcp(client, server, ACK, c + 2 + q, s + 2 + r, &[]),
        ),
    ]
}

/// Writes a capture of `n` HTTP sessions from 10.0.0.3 to `server` port 80, one every
/// `every_us` from `start_us`, each asking for `host`.
pub fn http_capture(
    path: &Path,
    start_us: u64,
    server: [u8; 4],
    n: u64,
    every_us: u64,
    host: &str,
) {
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tapflow-test\r\n\r\n");
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
    let mut packets: Vec<(u64, Ipv4)> = (0..n)
        .flat_map(|i| {
            let client = ([10, 0, 0, 3], 30_000 + (i % 30_000) as u16);
            tcp_exchange(
                start_us + i * every_us,
                client,
                (server, 80),
                request.as_bytes(),
                response,
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
