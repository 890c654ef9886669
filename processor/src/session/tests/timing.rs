//! Latency and jitter (issue 15): crafted packet sequences in, each record's timing rendered
//! on one line as `hs SYNACK/ACKDAT iat O R rtt O R [cross]`, each set as `n:min..max:sum`
//! (milliseconds; `-` when undefined or empty).

use tapflow_proto::conn::DurStats;

use super::*;

fn ms(ns: Option<u64>) -> String {
    ns.map_or_else(|| "-".to_owned(), |v| (v as f64 / MS as f64).to_string())
}

fn set(s: &DurStats) -> String {
    if s.n == 0 {
        return "-".to_owned();
    }
    format!(
        "{}:{}..{}:{}",
        s.n,
        ms(Some(s.min)),
        ms(Some(s.max)),
        ms(Some(s.sum))
    )
}

fn timing_line(r: &ConnRecord) -> String {
    let Some(t) = &r.timing else {
        return "none".to_owned();
    };
    format!(
        "hs {}/{} iat {} {} rtt {} {}{}",
        ms(t.tcp_synack_ns),
        ms(t.tcp_ackdat_ns),
        set(&t.orig_iat),
        set(&t.resp_iat),
        set(&t.orig_ack_rtt),
        set(&t.resp_ack_rtt),
        if t.rtt_cross_tap { " cross" } else { "" },
    )
}

/// Feeds `(tap, summary)` pairs, flushes, and compares every record's timing line.
fn run_cfg(cfg: SessionConfig, input: &[(u16, PacketSummary)]) -> Vec<ConnRecord> {
    let mut table = FlowTable::new(cfg);
    let mut out = Vec::new();
    for (tap, s) in input {
        table.on_summary_from(s, *tap, &mut out);
    }
    table.flush(&mut out);
    out
}

fn check_timing(input: &[PacketSummary], expected: &[&str]) -> Vec<ConnRecord> {
    let tapped: Vec<_> = input.iter().map(|s| (0, s.clone())).collect();
    check_tapped(&tapped, expected)
}

fn check_tapped(input: &[(u16, PacketSummary)], expected: &[&str]) -> Vec<ConnRecord> {
    let cfg = SessionConfig {
        max_flows: 64,
        ..SessionConfig::default()
    };
    let out = run_cfg(cfg, input);
    let got: Vec<String> = out.iter().map(timing_line).collect();
    assert_eq!(got, expected, "\n got: {got:#?}\nwant: {expected:#?}");
    out
}

/// A handshake from 0 ms: SYN (ISN 100), SYN/ACK at `sa` (ISN 300), ACK at `ad`.
fn handshake(sa: u64, ad: u64) -> Vec<PacketSummary> {
    vec![
        tcp(0, true, "S", 100, 0, 0),
        tcp(sa, false, "SA", 300, 101, 0),
        tcp(ad, true, "A", 101, 301, 0),
    ]
}

#[test]
fn handshake_is_split_at_the_syn_ack() {
    let r = check_timing(
        &normal_conversation(0),
        &["hs 1/1 iat 4:1..3:8 3:1..3:6 rtt 1:1..1:1 1:1..1:1"],
    );
    let t = r[0].timing.as_deref().expect("a timed record");
    assert_eq!(t.tcp_rtt_ns(), Some(2 * MS));
    check_timing(&handshake(7, 10), &["hs 7/3 iat 1:10..10:10 - rtt - -"]);
}

#[test]
fn the_last_matching_syn_is_the_one_answered() {
    // Retransmitted SYN (same ISN): measured from the last one.
    let mut v = vec![
        tcp(0, true, "S", 100, 0, 0),
        tcp(1000, true, "S", 100, 0, 0),
    ];
    v.extend([
        tcp(1010, false, "SA", 300, 101, 0),
        tcp(1030, true, "A", 101, 301, 0),
    ]);
    check_timing(&v, &["hs 10/20 iat 2:30..1000:1030 - rtt - -"]);
    // The last SYN has another ISN (for Zeek, a new connection): a SYN/ACK answering the
    // first does not validate.
    let v = [
        tcp(0, true, "S", 100, 0, 0),
        tcp(5, true, "S", 200, 0, 0),
        tcp(6, false, "SA", 300, 101, 0),
        tcp(7, true, "A", 101, 301, 0),
    ];
    check_timing(&v, &["none", "hs -/- iat 1:2..2:2 - rtt - -"]);
}

#[test]
fn a_repeated_syn_ack_restarts_ackdat() {
    // zeek-ssh's stream 18: the SYN/ACK is answered by a retransmitted SYN, so the server
    // repeats it; the ACK answers the last SYN/ACK (Argus's `ackdat`, tshark's initial RTT).
    let v = [
        tcp(0, true, "S", 100, 0, 0),
        tcp(1, false, "SA", 300, 101, 0),
        tcp(100, true, "S", 100, 0, 0),
        tcp(101, false, "SA", 300, 101, 0),
        tcp(102, true, "A", 101, 301, 0),
    ];
    check_timing(&v, &["hs 1/1 iat 2:2..100:102 1:100..100:100 rtt - -"]);
}

#[test]
fn handshakes_that_do_not_validate_have_no_split() {
    // The SYN/ACK acknowledges something else.
    check_timing(
        &[
            tcp(0, true, "S", 100, 0, 0),
            tcp(1, false, "SA", 300, 555, 0),
            tcp(2, true, "A", 101, 301, 0),
        ],
        &["hs -/- iat 1:2..2:2 - rtt - -"],
    );
    // The ACK after the SYN/ACK acknowledges something else: the SYN/ACK half only.
    let r = check_timing(
        &[
            tcp(0, true, "S", 100, 0, 0),
            tcp(1, false, "SA", 300, 101, 0),
            tcp(3, true, "A", 101, 999, 0),
            tcp(4, true, "A", 101, 301, 0),
        ],
        &["hs 1/- iat 2:1..3:4 - rtt - -"],
    );
    assert_eq!(r[0].timing.as_deref().and_then(|t| t.tcp_rtt_ns()), None);
    // A RST answers the SYN/ACK.
    check_timing(
        &[
            tcp(0, true, "S", 100, 0, 0),
            tcp(1, false, "SA", 300, 101, 0),
            tcp(3, true, "RA", 101, 301, 0),
        ],
        &["hs 1/- iat 1:3..3:3 - rtt - -"],
    );
    // Simultaneous open: Zeek's reuse rule ends the first connection at the responder's SYN
    // (another sequence number); the second starts with that SYN, and the client's SYN/ACK
    // answers it. Both sides sending a SYN within one connection is `timing`'s own test.
    check_timing(
        &[
            tcp(0, true, "S", 100, 0, 0),
            tcp(1, false, "S", 300, 0, 0),
            tcp(2, true, "SA", 100, 301, 0),
            tcp(3, false, "SA", 300, 101, 0),
            tcp(4, true, "A", 101, 301, 0),
        ],
        &["none", "hs 1/- iat 1:2..2:2 1:2..2:2 rtt - -"],
    );
}

#[test]
fn mid_stream_flows_have_gaps_and_round_trips_only() {
    check_timing(
        &[
            tcp(0, true, "PA", 1000, 5000, 100),
            tcp(1, false, "A", 5000, 1100, 0),
            tcp(2, true, "PA", 1100, 5000, 50),
            tcp(5, false, "A", 5000, 1150, 0),
            tcp(9, false, "A", 5000, 1150, 0),
        ],
        // The first packet is not timed: its box is made at the second.
        &["hs -/- iat 1:2..2:2 2:4..4:8 rtt 1:3..3:3 -"],
    );
    // A flow of one packet has no timing at all.
    check_timing(&[tcp(0, true, "S", 100, 0, 0)], &["none"]);
    check_timing(&[udp_on((33333, 53), 0, true, 30)], &["none"]);
}

#[test]
fn a_first_packet_not_counted_does_not_start_the_clock() {
    // A bad checksum: the flow starts, the packet is not counted; the clock starts at 3 ms.
    let u = |ms| udp_on((33333, 5000), ms, true, 10);
    check_timing(&[bad(u(0)), u(3), u(5)], &["hs -/- iat 1:2..2:2 - rtt - -"]);
}

#[test]
fn karn_retransmitted_data_is_never_timed() {
    let mut v = handshake(1, 2);
    v.extend([
        tcp(3, true, "PA", 101, 301, 100),
        // Retransmitted before the ACK came: the sample is dropped.
        tcp(10, true, "PA", 101, 301, 100),
        tcp(11, false, "A", 301, 201, 0),
        // New data: timed; a partial ACK does not end the sample, the full one does.
        tcp(20, true, "PA", 201, 301, 50),
        tcp(21, true, "PA", 251, 301, 50),
        tcp(22, false, "A", 301, 231, 0),
        tcp(24, false, "A", 301, 301, 0),
        // Partly retransmitted (281..301 sent before): not timed.
        tcp(30, true, "PA", 281, 301, 40),
        tcp(31, false, "A", 301, 321, 0),
        tcp(40, true, "PA", 321, 301, 10),
        tcp(41, false, "A", 301, 331, 0),
    ]);
    check_timing(&v, &["hs 1/1 iat 7:1..10:40 5:2..11:40 rtt 2:1..4:5 -"]);
}

#[test]
fn both_directions_time_their_own_data() {
    let mut v = handshake(1, 2);
    v.extend([
        tcp(3, true, "PA", 101, 301, 10),
        tcp(5, false, "PA", 301, 111, 20),
        tcp(9, true, "A", 111, 321, 0),
    ]);
    check_timing(&v, &["hs 1/1 iat 3:1..6:9 1:4..4:4 rtt 1:2..2:2 1:4..4:4"]);
}

#[test]
fn gaps_follow_the_counting_slots_of_a_flipped_flow() {
    // Started with a SYN/ACK from port 80: flipped, the client is the originator.
    check_timing(
        &[
            tcp(0, false, "SA", 300, 101, 0),
            tcp(1, true, "A", 101, 301, 0),
            tcp(2, true, "PA", 101, 301, 5),
            tcp(4, false, "PA", 301, 106, 7),
            tcp(7, true, "A", 106, 308, 0),
        ],
        &["hs -/- iat 2:1..5:6 1:4..4:4 rtt 1:2..2:2 1:3..3:3"],
    );
}

#[test]
fn round_trips_across_taps_are_flagged() {
    let conv = normal_conversation(0);
    let split: Vec<(u16, PacketSummary)> = conv
        .iter()
        .map(|s| {
            (
                u16::from(s.flags & tapflow_proto::summary::flag::REVERSE != 0),
                s.clone(),
            )
        })
        .collect();
    let one = check_timing(
        &conv,
        &["hs 1/1 iat 4:1..3:8 3:1..3:6 rtt 1:1..1:1 1:1..1:1"],
    );
    let two = check_tapped(
        &split,
        &["hs 1/1 iat 4:1..3:8 3:1..3:6 rtt 1:1..1:1 1:1..1:1 cross"],
    );
    // Nothing else in the record changes.
    let mut t = two[0].timing.clone().expect("timed");
    t.rtt_cross_tap = false;
    assert_eq!(Some(t), one[0].timing);
    // Gaps alone are not round trips: a one-way flow from two taps is not flagged.
    let udp: Vec<_> = (0..3u16)
        .map(|i| (i % 2, udp_on((33333, 5000), u64::from(i) * 10, true, 10)))
        .collect();
    check_tapped(&udp, &["hs -/- iat 2:10..10:20 - rtt - -"]);
}

#[test]
fn interim_records_are_cumulative() {
    let cfg = |active_timeout_ns| SessionConfig {
        max_flows: 64,
        active_timeout_ns,
        ..SessionConfig::default()
    };
    let conv: Vec<_> = normal_conversation(0).into_iter().map(|s| (0, s)).collect();
    let with = run_cfg(cfg(4 * MS), &conv);
    let without = run_cfg(cfg(0), &conv);
    let got: Vec<String> = with.iter().map(timing_line).collect();
    assert_eq!(
        got,
        [
            // Before the packet at 4 ms: SYN 0, SYN/ACK 1, ACK 2, data 3.
            "hs 1/1 iat 2:1..2:3 - rtt - -",
            // Before the packet at 8 ms.
            "hs 1/1 iat 3:1..3:6 3:1..3:6 rtt 1:1..1:1 1:1..1:1",
            "hs 1/1 iat 4:1..3:8 3:1..3:6 rtt 1:1..1:1 1:1..1:1",
        ]
    );
    assert!(with[0].interim && with[1].interim && !with[2].interim);
    assert_eq!(with[2].timing, without[0].timing);
}

#[test]
fn the_timing_box_is_bounded() {
    assert_eq!(FlowTable::timing_box_bytes(), 320);
}
