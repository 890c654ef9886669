//! Data-driven tests of the flow table: summaries in, records out, each record rendered on one
//! line as `STATE HISTORY pkts O/R bytes O/R missed M orig PORT` (`-` where Zeek prints it).

use std::net::IpAddr;

use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::{flag, tcp as tf};
use tapflow_proto::{Addr, FiveTuple, FlowKey, PacketSummary};

use super::{ConnRecord, FlowTable, SessionConfig, SECOND};

mod lifecycle;
mod timing;

const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000 * SECOND;

fn addr(s: &str) -> Addr {
    Addr::from(s.parse::<IpAddr>().unwrap_or(IpAddr::from([0u8; 4])))
}

/// Client 10.0.0.1:40000, server 10.0.0.2:80 (a likely server port).
fn ends(from_client: bool, sport: u16, dport: u16) -> (Addr, u16, Addr, u16) {
    let (c, s) = (addr("10.0.0.1"), addr("10.0.0.2"));
    if from_client {
        (c, sport, s, dport)
    } else {
        (s, dport, c, sport)
    }
}

fn summary(ms: u64, t: FiveTuple, ip_len: u32, payload: u32) -> PacketSummary {
    let mut s = PacketSummary {
        ts_ns: T0 + ms * MS,
        ip_len,
        payload_len: payload,
        ..PacketSummary::default()
    };
    s.set_tuple(&t, 0);
    s
}

/// A TCP packet between ports `ports` (client, server); `flags` from `SAFRP`.
fn tcp_on(
    ports: (u16, u16),
    ms: u64,
    from_client: bool,
    flags: &str,
    seq: u32,
    ack: u32,
    len: u32,
) -> PacketSummary {
    let (src, sport, dst, dport) = ends(from_client, ports.0, ports.1);
    let t = FiveTuple {
        proto: ip_proto::TCP,
        src,
        dst,
        sport,
        dport,
    };
    let mut s = summary(ms, t, 40 + len, len);
    for c in flags.chars() {
        s.tcp_flags |= match c {
            'S' => tf::SYN,
            'A' => tf::ACK,
            'F' => tf::FIN,
            'R' => tf::RST,
            'P' => tf::PSH,
            _ => 0,
        };
    }
    (s.seq, s.ack, s.window) = (seq, if flags.contains('A') { ack } else { 0 }, 1024);
    s
}

fn tcp(ms: u64, from_client: bool, flags: &str, seq: u32, ack: u32, len: u32) -> PacketSummary {
    tcp_on((40000, 80), ms, from_client, flags, seq, ack, len)
}

fn udp_on(ports: (u16, u16), ms: u64, from_client: bool, len: u32) -> PacketSummary {
    let (src, sport, dst, dport) = ends(from_client, ports.0, ports.1);
    summary(
        ms,
        FiveTuple {
            proto: ip_proto::UDP,
            src,
            dst,
            sport,
            dport,
        },
        28 + len,
        len,
    )
}

fn icmp(ms: u64, from_client: bool, icmp_type: u8, len: u32) -> PacketSummary {
    let (src, _, dst, _) = ends(from_client, 0, 0);
    let mut s = summary(
        ms,
        FiveTuple::icmp(ip_proto::ICMP, src, dst, icmp_type, 0),
        28 + len,
        len,
    );
    s.icmp_type = icmp_type;
    s
}

fn bad(mut s: PacketSummary) -> PacketSummary {
    s.flags |= flag::BAD_CHECKSUM;
    s
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn line(r: &ConnRecord) -> String {
    let h = if r.history.is_empty() {
        "-"
    } else {
        r.history.as_str()
    };
    format!(
        "{} {} pkts {}/{} bytes {}/{} missed {} orig {}{}{}",
        r.conn_state.as_str(),
        h,
        r.orig_pkts,
        r.resp_pkts,
        opt(r.orig_bytes),
        opt(r.resp_bytes),
        r.missed_bytes,
        r.orig_p,
        if r.interim { " interim" } else { "" },
        if r.evicted { " evicted" } else { "" },
    )
}

/// Feeds `input` in order, flushes, and compares every record (in emission order).
fn check_cfg(cfg: SessionConfig, input: &[PacketSummary], expected: &[&str]) -> Vec<ConnRecord> {
    let mut table = FlowTable::new(cfg);
    let mut out = Vec::new();
    for s in input {
        table.on_summary(s, &mut out);
    }
    table.flush(&mut out);
    let got: Vec<String> = out.iter().map(line).collect();
    assert_eq!(got, expected, "\n got: {got:#?}\nwant: {expected:#?}");
    assert_eq!(table.stats().open_flows, 0);
    out
}

fn check(input: &[PacketSummary], expected: &[&str]) -> Vec<ConnRecord> {
    check_cfg(
        SessionConfig {
            max_flows: 64,
            ..SessionConfig::default()
        },
        input,
        expected,
    )
}

/// Handshake, data both ways, FIN both ways: client ISN 100, server ISN 300.
fn normal_conversation(start: u64) -> Vec<PacketSummary> {
    vec![
        tcp(start, true, "S", 100, 0, 0),
        tcp(start + 1, false, "SA", 300, 101, 0),
        tcp(start + 2, true, "A", 101, 301, 0),
        tcp(start + 3, true, "PA", 101, 301, 10),
        tcp(start + 4, false, "A", 301, 111, 0),
        tcp(start + 5, false, "PA", 301, 111, 20),
        tcp(start + 6, true, "FA", 111, 321, 0),
        tcp(start + 7, false, "FA", 321, 112, 0),
        tcp(start + 8, true, "A", 112, 322, 0),
    ]
}

#[test]
fn handshake_data_and_fin_both_ways() {
    let r = check(
        &normal_conversation(0),
        &["SF ShADadFf pkts 5/4 bytes 10/20 missed 0 orig 40000"],
    );
    assert_eq!(r[0].orig_ip_bytes, 5 * 40 + 10);
    assert_eq!(r[0].resp_ip_bytes, 4 * 40 + 20);
    assert_eq!(
        r[0].duration_ns,
        Some(7 * MS),
        "the last ACK after both FINs is not in the duration"
    );
    assert_eq!(r[0].local_orig, None);
}

#[test]
fn attempts_and_rejects() {
    check(
        &[tcp(0, true, "S", 100, 0, 0)],
        &["S0 S pkts 1/0 bytes -/- missed 0 orig 40000"],
    );
    check(
        &[tcp(0, true, "S", 100, 0, 0), tcp(1, false, "RA", 0, 101, 0)],
        &["REJ Sr pkts 1/1 bytes 0/0 missed 0 orig 40000"],
    );
    check(
        &[tcp(0, true, "S", 100, 0, 0), tcp(1, true, "F", 101, 0, 0)],
        &["SH SF pkts 2/0 bytes 0/0 missed 0 orig 40000"],
    );
    check(
        &[tcp(0, true, "S", 100, 0, 0), tcp(1, true, "R", 101, 0, 0)],
        &["RSTOS0 SR pkts 2/0 bytes 0/0 missed 0 orig 40000"],
    );
}

/// Zeek's own baseline `scripts.base.protocols.conn.conn_state-RST-behavior`.
#[test]
fn zeek_rst_baselines() {
    let syn = || tcp(0, true, "S", 100, 0, 0);
    check(
        &[tcp(0, true, "R", 100, 0, 0)],
        &["OTH R pkts 1/0 bytes -/- missed 0 orig 40000"],
    );
    check(
        &[syn(), tcp(1, true, "R", 101, 0, 0)],
        &["RSTOS0 SR pkts 2/0 bytes 0/0 missed 0 orig 40000"],
    );
    check(
        &[
            syn(),
            tcp(1, false, "A", 300, 101, 0),
            tcp(2, true, "R", 101, 0, 0),
        ],
        &["RSTOS0 SaR pkts 2/1 bytes 0/0 missed 0 orig 40000"],
    );
    check(
        &[
            syn(),
            tcp(1, false, "A", 300, 101, 0),
            tcp(2, true, "FA", 101, 300, 0),
            tcp(3, true, "R", 102, 0, 0),
        ],
        &["OTH SaFR pkts 3/1 bytes 0/0 missed 0 orig 40000"],
    );
}

#[test]
fn resets_after_establishment() {
    let hs = |from_client: bool| {
        let mut v = normal_conversation(0)[..3].to_vec();
        let (seq, ack) = if from_client { (101, 301) } else { (301, 101) };
        v.push(tcp(3, from_client, "R", seq, ack, 0));
        v
    };
    check(
        &hs(true),
        &["RSTO ShAR pkts 3/1 bytes 0/0 missed 0 orig 40000"],
    );
    check(
        &hs(false),
        &["RSTR ShAr pkts 2/2 bytes 0/0 missed 0 orig 40000"],
    );
}

#[test]
fn syn_ack_first_flips_by_port() {
    // From port 80 (a likely server port): flipped, as in zeek-tcp-missing-syn.
    check(
        &[
            tcp(0, false, "SA", 300, 101, 0),
            tcp(1, true, "A", 101, 301, 0),
            tcp(2, true, "PA", 101, 301, 5),
            tcp(3, false, "PA", 301, 106, 7),
            tcp(4, true, "FA", 106, 308, 0),
            tcp(5, false, "FA", 308, 107, 0),
        ],
        &["SF ^hADdFf pkts 3/3 bytes 5/7 missed 0 orig 40000"],
    );
    // SYN-ACK then RST from the server, no SYN seen: RSTRH; SYN-ACK then FIN: SHR.
    check(
        &[
            tcp(0, false, "SA", 300, 101, 0),
            tcp(1, false, "R", 301, 0, 0),
        ],
        &["RSTRH ^hr pkts 0/2 bytes 0/0 missed 0 orig 40000"],
    );
    check(
        &[
            tcp(0, false, "SA", 300, 101, 0),
            tcp(1, false, "F", 301, 0, 0),
        ],
        &["SHR ^hf pkts 0/2 bytes 0/0 missed 0 orig 40000"],
    );
    // Between two unregistered ports the SYN-ACK sender stays the originator.
    check(
        &[
            tcp_on((50000, 40001), 0, false, "SA", 300, 101, 0),
            tcp_on((50000, 40001), 1, true, "A", 101, 301, 0),
        ],
        &["OTH Ha pkts 1/1 bytes 0/0 missed 0 orig 40001"],
    );
}

#[test]
fn mid_stream_is_oth() {
    check(
        &[
            tcp(0, true, "PA", 1000, 5000, 100),
            tcp(1, false, "A", 5000, 1100, 0),
            tcp(2, true, "PA", 1100, 5000, 50),
        ],
        &["OTH Da pkts 2/1 bytes 150/0 missed 0 orig 40000"],
    );
}

#[test]
fn retransmissions_are_not_counted_twice() {
    let mut v = normal_conversation(0)[..3].to_vec();
    v.extend([
        tcp(3, true, "PA", 101, 301, 100),
        tcp(4, true, "PA", 101, 301, 100),
        tcp(5, false, "A", 301, 201, 0),
        tcp(6, true, "FA", 201, 301, 0),
        tcp(7, false, "FA", 301, 202, 0),
        tcp(8, true, "A", 202, 302, 0),
    ]);
    check(
        &v,
        &["SF ShADTaFf pkts 6/3 bytes 100/0 missed 0 orig 40000"],
    );
}

#[test]
fn acked_data_never_seen_is_a_gap() {
    let mut v = normal_conversation(0)[..3].to_vec();
    v.extend([
        tcp(3, true, "PA", 101, 301, 100),
        // 100 bytes (201..301) lost before the capture, then 50 more seen.
        tcp(4, true, "PA", 301, 301, 50),
        tcp(5, false, "A", 301, 351, 0),
        tcp(6, true, "FA", 351, 301, 0),
        tcp(7, false, "FA", 301, 352, 0),
    ]);
    check(
        &v,
        &["SF ShADaGFf pkts 5/3 bytes 250/0 missed 100 orig 40000"],
    );
}

#[test]
fn udp_directions_and_flip() {
    check(
        &[
            udp_on((33333, 53), 0, true, 30),
            udp_on((33333, 53), 10, false, 90),
        ],
        &["SF Dd pkts 1/1 bytes 30/90 missed 0 orig 33333"],
    );
    check(
        &[udp_on((33333, 5000), 0, true, 30)],
        &["S0 D pkts 1/0 bytes -/- missed 0 orig 33333"],
    );
    // First packet from port 53 to an unregistered port: flipped, the sender is the responder.
    check(
        &[udp_on((33333, 53), 0, false, 90)],
        &["SHR ^d pkts 0/1 bytes -/- missed 0 orig 33333"],
    );
    // Both ports registered: no flip.
    check(
        &[udp_on((123, 123), 0, false, 48)],
        &["S0 D pkts 1/0 bytes -/- missed 0 orig 123"],
    );
}

#[test]
fn bad_checksums_are_history_only() {
    check(
        &[
            bad(udp_on((34357, 53), 0, true, 40)),
            bad(udp_on((34357, 53), 30, false, 60)),
        ],
        &["OTH Cc pkts 0/0 bytes -/- missed 0 orig 34357"],
    );
    check(
        &[bad(tcp(0, true, "S", 100, 0, 0))],
        &["OTH C pkts 0/0 bytes -/- missed 0 orig 40000"],
    );
}

#[test]
fn icmp_echo_pairs() {
    let r = check(
        &[
            icmp(0, true, 8, 56),
            icmp(1, false, 0, 56),
            icmp(1000, true, 8, 56),
            icmp(1001, false, 0, 56),
        ],
        &["OTH - pkts 2/2 bytes 112/112 missed 0 orig 8"],
    );
    assert_eq!((r[0].orig_p, r[0].resp_p, r[0].orig_ip_bytes), (8, 0, 168));
}
