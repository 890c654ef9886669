use super::*;
use tapflow_proto::{Addr, FiveTuple};

const ISN: u32 = 0xffff_fff0; // wraps within the first bytes
const RISN: u32 = 1000;

fn table(bytes: u32, flows: usize) -> EvidenceTable {
    EvidenceTable::new(EvidenceConfig { bytes, flows })
}

/// A TCP packet of flow `port` from the client (`fwd`) or the server.
fn tcp_pkt(port: u16, fwd: bool, flags: u8, seq: u32, len: usize, ts: u64) -> PacketSummary {
    let (c, s) = (Addr::from_v4([10, 0, 0, 1]), Addr::from_v4([10, 0, 0, 2]));
    let t = if fwd {
        FiveTuple {
            proto: ip_proto::TCP,
            src: c,
            dst: s,
            sport: port,
            dport: 443,
        }
    } else {
        FiveTuple {
            proto: ip_proto::TCP,
            src: s,
            dst: c,
            sport: 443,
            dport: port,
        }
    };
    let mut p = PacketSummary {
        ts_ns: ts,
        tcp_flags: flags,
        seq,
        payload_len: len as u32,
        ..PacketSummary::default()
    };
    p.set_tuple(&t, 0);
    p
}

/// Feeds a packet with payload `data`; returns what was shipped (offset, bytes) and whether
/// the packet was flagged cut.
fn feed(
    t: &mut EvidenceTable,
    mut p: PacketSummary,
    data: &[u8],
) -> (Option<(u32, Vec<u8>)>, bool) {
    p.payload_len = data.len() as u32;
    t.observe(&mut p, data);
    (
        p.payload.map(|b| (b.offset, b.bytes)),
        p.flags & flag::EVIDENCE_CUT != 0,
    )
}

fn handshake(t: &mut EvidenceTable, port: u16) {
    feed(t, tcp_pkt(port, true, tcp::SYN, ISN, 0, 1), b"");
    feed(
        t,
        tcp_pkt(port, false, tcp::SYN | tcp::ACK, RISN, 0, 2),
        b"",
    );
}

/// Printable bytes (a text protocol's stream, which the give-up check keeps), each offset
/// told from its neighbours.
fn stream(n: usize) -> Vec<u8> {
    (0..n).map(|i| b' ' + (i % 95) as u8).collect()
}

#[test]
fn tcp_bytes_go_by_offset_up_to_the_budget_and_the_rest_is_a_cut() {
    let mut t = table(100, 8);
    handshake(&mut t, 1);
    let data = stream(160);
    let seq = ISN.wrapping_add(1);
    let got = feed(&mut t, tcp_pkt(1, true, tcp::ACK, seq, 0, 3), &data[..60]);
    assert_eq!(got, (Some((0, data[..60].to_vec())), false));
    // Crosses the budget: the first 40 bytes go, the packet is flagged cut.
    let got = feed(
        &mut t,
        tcp_pkt(1, true, tcp::ACK, seq.wrapping_add(60), 0, 4),
        &data[60..],
    );
    assert_eq!(got, (Some((60, data[60..100].to_vec())), true));
    // The direction is done: nothing more, counted as past the budget.
    let got = feed(
        &mut t,
        tcp_pkt(1, true, tcp::ACK, seq.wrapping_add(160), 0, 5),
        b"more",
    );
    assert_eq!(got, (None, false));
    let c = t.counters();
    assert_eq!((c.bytes_shipped, c.pieces_shipped, c.budget), (100, 2, 1));
    // The other direction has a budget of its own.
    let got = feed(
        &mut t,
        tcp_pkt(1, false, tcp::ACK, RISN + 1, 0, 6),
        b"SSH-2.0-x\r\n",
    );
    assert_eq!(got, (Some((0, b"SSH-2.0-x\r\n".to_vec())), false));
}

#[test]
fn retransmissions_and_reordering_do_not_spend_the_budget_twice() {
    let mut t = table(64, 8);
    handshake(&mut t, 2);
    let data = stream(64);
    let seq = ISN.wrapping_add(1);
    let at = |off: u32| seq.wrapping_add(off);
    // The second segment first (reordered), then the first, then both again.
    let second = feed(
        &mut t,
        tcp_pkt(2, true, tcp::ACK, at(32), 0, 3),
        &data[32..],
    );
    assert_eq!(second.0, Some((32, data[32..].to_vec())));
    let first = feed(&mut t, tcp_pkt(2, true, tcp::ACK, at(0), 0, 4), &data[..32]);
    assert_eq!(first.0, Some((0, data[..32].to_vec())));
    // A retransmission overlapping both ships nothing.
    let again = feed(
        &mut t,
        tcp_pkt(2, true, tcp::ACK, at(10), 0, 5),
        &data[10..50],
    );
    assert_eq!(again, (None, false));
    assert_eq!(t.counters().bytes_shipped, 64);
    // A partial overlap ships only the new part.
    let mut t = table(64, 8);
    handshake(&mut t, 3);
    feed(&mut t, tcp_pkt(3, true, tcp::ACK, at(0), 0, 3), &data[..20]);
    let part = feed(
        &mut t,
        tcp_pkt(3, true, tcp::ACK, at(10), 0, 4),
        &data[10..30],
    );
    assert_eq!(part.0, Some((20, data[20..30].to_vec())));
    assert_eq!(t.counters().bytes_shipped, 30);
}

#[test]
fn a_flow_seen_midstream_counts_from_its_first_sequence_number() {
    let mut t = table(16, 8);
    let got = feed(
        &mut t,
        tcp_pkt(4, false, tcp::ACK, 5000, 0, 1),
        b"220 ftp ready\r\n",
    );
    assert_eq!(got.0, Some((0, b"220 ftp ready\r\n".to_vec())));
    // Bytes before the first seen are out of the stream's window.
    let got = feed(
        &mut t,
        tcp_pkt(4, false, tcp::ACK, 4990, 0, 2),
        b"0123456789",
    );
    assert_eq!(got.0, None);
}

#[test]
fn tls_stops_at_the_end_of_its_first_record_and_http_at_the_end_of_headers() {
    let mut t = table(1024, 8);
    handshake(&mut t, 5);
    let seq = ISN.wrapping_add(1);
    // A handshake record of 20 bytes after its 5-byte header, then application data.
    let mut hello = vec![22, 3, 1, 0, 20];
    hello.extend(stream(20));
    hello.extend(b"after the record");
    let got = feed(&mut t, tcp_pkt(5, true, tcp::ACK, seq, 0, 3), &hello);
    assert_eq!(got, (Some((0, hello[..25].to_vec())), false));
    let after = feed(
        &mut t,
        tcp_pkt(5, true, tcp::ACK, seq.wrapping_add(41), 0, 4),
        b"x",
    );
    assert_eq!(after, (None, false));
    assert_eq!(t.counters().complete, 1);

    let req = b"GET / HTTP/1.1\r\nHost: a.example\r\n";
    let got = feed(
        &mut t,
        tcp_pkt(5, false, tcp::ACK, RISN + 1, 0, 5),
        b"HTTP/1.1 200 OK\r\n",
    );
    assert!(got.0.is_some());
    let mut t = table(1024, 8);
    handshake(&mut t, 6);
    feed(&mut t, tcp_pkt(6, true, tcp::ACK, seq, 0, 3), req);
    let rest = b"Accept: */*\r\n\r\nbody bytes";
    let got = feed(
        &mut t,
        tcp_pkt(6, true, tcp::ACK, seq.wrapping_add(req.len() as u32), 0, 4),
        rest,
    );
    assert_eq!(
        got.0,
        Some((req.len() as u32, b"Accept: */*\r\n\r\n".to_vec()))
    );
    // A TLS record longer than the budget is a cut.
    let mut t = table(16, 8);
    handshake(&mut t, 7);
    let big = [&[22u8, 3, 3, 1, 0][..], &stream(40)].concat();
    let got = feed(&mut t, tcp_pkt(7, true, tcp::ACK, seq, 0, 3), &big);
    assert_eq!(got, (Some((0, big[..16].to_vec())), true));
}

#[test]
fn a_full_table_is_counted_and_flagged_and_finished_flows_give_way() {
    let mut t = table(8, 2);
    let seq = ISN.wrapping_add(1);
    for port in [10, 11] {
        handshake(&mut t, port);
    }
    // Handshakes take no place in the table: they wait in the compact set.
    assert_eq!((t.len(), t.slim_len()), (0, 2));
    for port in [10, 11] {
        let got = feed(&mut t, tcp_pkt(port, true, tcp::ACK, seq, 0, 3), b"abcd");
        assert_eq!(got, (Some((0, b"abcd".to_vec())), false));
    }
    handshake(&mut t, 12);
    assert_eq!((t.len(), t.slim_len()), (2, 1));
    // A third flow collecting has no room: its payload is flagged cut and counted.
    let got = feed(&mut t, tcp_pkt(12, true, tcp::ACK, seq, 0, 3), b"hello");
    assert_eq!(got, (None, true));
    assert_eq!(t.counters().table_full, 1);
    // Flow 10 completes both directions (budget 8 exactly filled): it leaves the table.
    feed(
        &mut t,
        tcp_pkt(10, true, tcp::ACK, seq.wrapping_add(4), 0, 4),
        b"5678",
    );
    feed(
        &mut t,
        tcp_pkt(10, false, tcp::ACK, RISN + 1, 0, 5),
        b"abcdefgh",
    );
    assert_eq!((t.len(), t.slim_len()), (1, 2));
    let got = feed(&mut t, tcp_pkt(12, true, tcp::ACK, seq, 0, 6), b"hello");
    assert_eq!(got, (Some((0, b"hello".to_vec())), false));
    assert_eq!((t.len(), t.slim_len()), (2, 1));
    // Flow 10's later payload is counted complete, not taken for a new flow.
    let got = feed(
        &mut t,
        tcp_pkt(10, true, tcp::ACK, seq.wrapping_add(8), 0, 7),
        b"more",
    );
    assert_eq!(got, (None, false));
    assert_eq!(t.counters().complete, 1);
    assert_eq!(t.counters().flows, 3);
}

#[test]
fn a_full_compact_set_lets_the_flow_that_came_first_give_way() {
    let mut t = table(8, 2);
    for port in [30, 31, 32] {
        handshake(&mut t, port);
    }
    assert_eq!(t.slim_len(), 2);
    // Flow 30 gave way: its payload is taken for a flow seen midstream (offsets from there).
    let got = feed(
        &mut t,
        tcp_pkt(30, true, tcp::ACK, ISN.wrapping_add(101), 0, 3),
        b"abcd",
    );
    assert_eq!(got.0, Some((0, b"abcd".to_vec())));
    // Flow 31 kept its base: the same bytes go at their offset in the stream.
    let got = feed(
        &mut t,
        tcp_pkt(31, true, tcp::ACK, ISN.wrapping_add(3), 0, 3),
        b"abcd",
    );
    assert_eq!(got.0, Some((2, b"abcd".to_vec())));
}

#[test]
fn entries_end_at_rst_second_fin_and_idle() {
    let mut t = table(8, 4);
    let seq = ISN.wrapping_add(1);
    for port in [20, 21, 22, 24] {
        handshake(&mut t, port);
    }
    // Flow 24 collects: its entry is in the table.
    feed(&mut t, tcp_pkt(24, true, tcp::ACK, seq, 0, 3), b"ab");
    assert_eq!((t.len(), t.slim_len()), (1, 3));
    feed(&mut t, tcp_pkt(20, true, tcp::RST, seq, 0, 3), b"");
    assert_eq!(t.slim_len(), 2);
    feed(
        &mut t,
        tcp_pkt(21, true, tcp::FIN | tcp::ACK, seq, 0, 3),
        b"",
    );
    assert_eq!(t.slim_len(), 2);
    feed(
        &mut t,
        tcp_pkt(21, false, tcp::FIN | tcp::ACK, RISN + 1, 0, 3),
        b"",
    );
    assert_eq!(t.slim_len(), 1);
    feed(&mut t, tcp_pkt(24, false, tcp::RST, RISN + 1, 0, 4), b"");
    assert_eq!(t.len(), 0);
    // Flow 22, idle past IDLE_NS, is gone: its payload is taken for a flow seen midstream.
    let late = IDLE_NS + 10_000_000_000;
    let got = feed(
        &mut t,
        tcp_pkt(22, true, tcp::ACK, seq.wrapping_add(100), 0, late),
        b"ab",
    );
    assert_eq!(got.0, Some((0, b"ab".to_vec())));
    // Within IDLE_NS, a flow keeps its base.
    handshake(&mut t, 25);
    let got = feed(
        &mut t,
        tcp_pkt(25, true, tcp::ACK, seq.wrapping_add(2), 0, IDLE_NS),
        b"ab",
    );
    assert_eq!(got.0, Some((2, b"ab".to_vec())));
}

fn dgram(port: u16, fwd: bool, ts: u64) -> PacketSummary {
    let mut p = tcp_pkt(port, fwd, 0, 0, 0, ts);
    p.key.proto = ip_proto::UDP;
    p
}

#[test]
fn udp_ships_the_first_datagrams_whole_up_to_a_cap_or_cut_at_the_budget() {
    let mut t = table(10, 4);
    assert_eq!(
        feed(&mut t, dgram(53, true, 1), b"abcd").0,
        Some((0, b"abcd".to_vec()))
    );
    // Starts within the budget: whole up to UDP_WHOLE, then cut.
    let big = stream(UDP_WHOLE as usize + 20);
    assert_eq!(
        feed(&mut t, dgram(53, true, 2), &big),
        (Some((1, big[..UDP_WHOLE as usize].to_vec())), true)
    );
    assert_eq!(feed(&mut t, dgram(53, true, 3), b"mnop"), (None, false));
    assert_eq!(t.counters().budget, 1);
    // A QUIC Initial (1252 bytes) goes whole under a 1024-byte budget; the budget is spent.
    let mut t = table(1024, 4);
    let initial = [&[0xc3u8, 0, 0, 0, 1, 8][..], &stream(1246)].concat();
    assert_eq!(
        feed(&mut t, dgram(50000, true, 1), &initial),
        (Some((0, initial.clone())), false)
    );
    assert_eq!(
        feed(&mut t, dgram(50000, true, 2), b"abcdefgh"),
        (None, true)
    );
}

/// Payload no detector can use is not shipped (counted `gave_up`), in either direction
/// alone, without a cut; a flow given up both ways gives way in a full table.
#[test]
fn payload_no_detector_can_use_is_given_up() {
    let mut t = table(64, 2);
    handshake(&mut t, 40);
    let seq = ISN.wrapping_add(1);
    let noise: Vec<u8> = (0..100u32).map(|i| (i * 37 + 0x90) as u8).collect();
    assert!(!tapflow_classify::may_match(
        ip_proto::TCP,
        [40, 443],
        &noise
    ));
    let got = feed(&mut t, tcp_pkt(40, true, tcp::ACK, seq, 0, 3), &noise);
    assert_eq!(got, (None, false));
    let got = feed(
        &mut t,
        tcp_pkt(40, true, tcp::ACK, seq.wrapping_add(100), 0, 4),
        &noise,
    );
    assert_eq!(got, (None, false));
    // The other direction speaks a protocol: it is shipped.
    let reply = b"HTTP/1.1 200 OK\r\n\r\n";
    let got = feed(&mut t, tcp_pkt(40, false, tcp::ACK, RISN + 1, 0, 5), reply);
    assert_eq!(got, (Some((0, reply.to_vec())), false));
    assert_eq!(t.counters().gave_up, 2);
    // UDP: a first datagram of noise gives the direction up, later ones too.
    assert_eq!(feed(&mut t, dgram(41, true, 6), &noise), (None, false));
    assert_eq!(
        feed(&mut t, dgram(41, true, 7), b"INVITE sip"),
        (None, false)
    );
    assert_eq!(feed(&mut t, dgram(41, false, 8), &noise), (None, false));
    assert_eq!(t.counters().gave_up, 5);
    // The table is full (flows 40 and 41); 41 is given up both ways and gives way.
    let got = feed(&mut t, dgram(42, true, 9), b"INVITE sip");
    assert_eq!(got, (Some((0, b"INVITE sip".to_vec())), false));
    assert_eq!(t.counters().table_full, 0);
}

/// An FTP control direction past its budget still ships its announcement lines, at their
/// offsets, up to FTP_LATE_LINES; other flows and other lines ship nothing past it.
#[test]
fn ftp_announcements_past_the_budget_are_shipped() {
    let mut t = table(16, 4);
    let (client, server) = (Addr::from_v4([10, 0, 0, 1]), Addr::from_v4([10, 0, 0, 2]));
    let pkt = |flags: u8, seq: u32, ts: u64| {
        let mut p = PacketSummary {
            ts_ns: ts,
            tcp_flags: flags,
            seq,
            ..PacketSummary::default()
        };
        let tuple = FiveTuple {
            proto: ip_proto::TCP,
            src: server,
            dst: client,
            sport: 21,
            dport: 40000,
        };
        p.set_tuple(&tuple, 0);
        p
    };
    feed(&mut t, pkt(tcp::SYN | tcp::ACK, RISN, 1), b"");
    let login = b"230-Welcome to a server with a long login message\r\n";
    assert!(feed(&mut t, pkt(tcp::ACK, RISN + 1, 2), login).1);
    let off = 1 + login.len() as u32;
    let pasv = b"227 Entering Passive Mode (10,0,0,2,221,90).\r\n";
    let got = feed(&mut t, pkt(tcp::ACK, RISN + off, 3), pasv);
    assert_eq!(got, (Some((off - 1, pasv.to_vec())), false));
    let two = [&b"150 ok\r\n"[..], pasv].concat();
    let got = feed(&mut t, pkt(tcp::ACK, RISN + 500, 4), &two);
    assert_eq!(got, (Some((499 + 8, pasv.to_vec())), false));
    assert_eq!(
        feed(&mut t, pkt(tcp::ACK, RISN + 600, 5), b"226 done\r\n").0,
        None
    );
    for i in 0..u32::from(FTP_LATE_LINES) {
        feed(&mut t, pkt(tcp::ACK, RISN + 1000 + i * 100, 6), pasv);
    }
    assert_eq!(feed(&mut t, pkt(tcp::ACK, RISN + 9000, 7), pasv).0, None);
    // The same bytes on another port are not FTP: nothing past the budget.
    handshake(&mut t, 50);
    feed(
        &mut t,
        tcp_pkt(50, true, tcp::ACK, ISN.wrapping_add(1), 0, 8),
        login,
    );
    let got = feed(
        &mut t,
        tcp_pkt(50, true, tcp::ACK, ISN.wrapping_add(off), 0, 9),
        pasv,
    );
    assert_eq!(got.0, None);
}

#[test]
fn off_and_other_protocols_ship_nothing() {
    let mut t = table(0, 4);
    handshake(&mut t, 30);
    let got = feed(
        &mut t,
        tcp_pkt(30, true, tcp::ACK, ISN.wrapping_add(1), 0, 3),
        b"x",
    );
    assert_eq!(got, (None, false));
    assert!(t.is_empty());
    let mut t = table(8, 4);
    let mut p = tcp_pkt(31, true, 0, 0, 0, 1);
    p.key.proto = ip_proto::ICMP;
    assert_eq!(feed(&mut t, p, b"ping").0, None);
}

#[test]
fn a_fin_seen_before_a_flow_leaves_the_table_still_counts_there() {
    let mut t = table(8, 4);
    handshake(&mut t, 26);
    let seq = ISN.wrapping_add(1);
    let fin = tcp::FIN | tcp::ACK;
    // Done one way, nothing yet the other: no direction collects, so the flow waits in the
    // compact set, its FIN noted.
    feed(&mut t, tcp_pkt(26, true, fin, seq, 0, 3), b"12345678");
    assert_eq!((t.len(), t.slim_len()), (0, 1));
    feed(
        &mut t,
        tcp_pkt(26, false, tcp::ACK, RISN + 1, 0, 4),
        b"abcdefgh",
    );
    assert_eq!((t.len(), t.slim_len()), (0, 1));
    // The other direction's FIN ends the flow.
    feed(&mut t, tcp_pkt(26, false, fin, RISN + 9, 0, 5), b"");
    assert_eq!((t.len(), t.slim_len()), (0, 0));
}

/// `add_range` (in place) agrees with `merge_range` (what the processor keeps its evidence
/// with) and leaves the ranges as they were when it refuses, over random held ranges, empty ones included (a direction back
/// from the compact set holds `(0, 0)`), and random added ones, within and past the bound.
#[test]
fn add_range_agrees_with_merge_range() {
    use tapflow_proto::summary::merge_range;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % m) as u32
    };
    for _ in 0..50_000 {
        let mut d = Dir::default();
        // Held ranges as add_range itself builds them, from a few adds (small offsets, so
        // they touch, overlap and nest).
        for _ in 0..next(6) {
            let from = next(40);
            let to = from + next(12);
            let before = d;
            let want = merge_range(
                &before.ranges[..usize::from(before.n)],
                from,
                to,
                MAX_RANGES,
            );
            let got = add_range(&mut d, from, to);
            assert_eq!(got, want.is_some(), "{before:?} + [{from}, {to})");
            match want {
                Some(w) => assert_eq!(&d.ranges[..usize::from(d.n)], w.as_slice()),
                None => assert_eq!(d.ranges, before.ranges, "unchanged when refused"),
            }
        }
    }
}
