//! The sorter and the conn log line, with valid and with forged records.

use super::*;
use tapflow_proto::conn::{community_id, ConnState};
use tapflow_proto::{Addr, FiveTuple};

fn rec(ts: u64, dur: u64, sport: u16) -> ConnRecord {
    let t = FiveTuple {
        proto: 6,
        src: Addr::from_v4([10, 0, 0, 1]),
        dst: Addr::from_v4([10, 0, 0, 2]),
        sport,
        dport: 80,
    };
    let key = t.key(0).0;
    ConnRecord {
        ts_ns: ts,
        uid: uid(&key, ts),
        orig_h: t.src,
        orig_p: sport,
        resp_h: t.dst,
        resp_p: 80,
        proto: 6,
        duration_ns: Some(dur),
        orig_bytes: Some(1),
        resp_bytes: Some(2),
        conn_state: ConnState::SF,
        local_orig: None,
        local_resp: None,
        missed_bytes: 0,
        history: "ShADadFf".into(),
        orig_pkts: 5,
        orig_ip_bytes: 300,
        resp_pkts: 4,
        resp_ip_bytes: 250,
        tunnel_parents: vec![],
        community_id: community_id(6, t.src, sport, t.dst, 80),
        interim: false,
        evicted: false,
        key,
        orig_tcp_flags: 0x12,
        resp_tcp_flags: 0x12,
        split: 0,
        timing: None,
        service: None,
        server_name: None,
        service_incomplete: false,
    }
}

fn batch(p: &str, wm: u64, records: Vec<ConnRecord>) -> ConnBatch {
    ConnBatch {
        processor: p.into(),
        incarnation: 1,
        watermark_ns: wm,
        settle_ns: 10,
        records,
        tunnel_outers: vec![],
        traffic: vec![],
        records_seq: 0,
    }
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| {
            l.split(",\"id.orig_h")
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[test]
fn released_in_order_behind_every_watermark() {
    let mut c = ConnSorter::new(2, 1000);
    let mut out = String::new();
    c.push(batch("p0", 100, vec![rec(50, 10, 1), rec(20, 5, 2)]));
    c.release(&mut out);
    assert!(out.is_empty(), "p1 not heard from");
    c.push(batch("p1", 40, vec![rec(10, 1, 3)]));
    c.release(&mut out);
    // limit = min(100, 40) - 10 = 30: records ending at 11 and 25 go, 60 waits.
    assert_eq!(lines(&out).len(), 2, "{out}");
    assert!(out.starts_with("{\"ts\":0.000000"), "{out}");
    out.clear();
    c.end("p1");
    c.release(&mut out);
    assert_eq!(lines(&out).len(), 1);
}

#[test]
fn order_is_independent_of_arrival() {
    let run = |flip: bool| {
        let mut c = ConnSorter::new(2, 1000);
        let mut out = String::new();
        let (a, b) = (
            batch("p0", 1000, vec![rec(5, 5, 1), rec(7, 1, 2)]),
            batch("p1", 1000, vec![rec(6, 2, 3), rec(1, 9, 4)]),
        );
        if flip {
            c.push(b);
            c.push(a);
        } else {
            c.push(a);
            c.push(b);
        }
        c.drain(&mut out);
        out
    };
    assert_eq!(run(false), run(true));
}

#[test]
fn zeek_json_fields() {
    let mut out = String::new();
    let mut r = rec(1_323_974_133_493_287_123, 1_500_000, 40000);
    r.duration_ns = None;
    r.orig_bytes = None;
    conn_json(&r, &["Cabc".into()], &mut out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(v["ts"].to_string(), "1323974133.493287");
    assert_eq!(v["id.orig_p"], 40000);
    assert_eq!(v["proto"], "tcp");
    assert!(v.get("duration").is_none() && v.get("orig_bytes").is_none());
    assert_eq!(v["resp_bytes"], 2);
    assert_eq!(v["tunnel_parents"][0], "Cabc");
    assert_eq!(v["history"], "ShADadFf");
}

#[test]
fn timing_fields_in_seconds_each_only_when_defined() {
    use tapflow_proto::conn::{DurStats, Timing};
    let stats = |v: &[u64]| {
        let mut s = DurStats::default();
        v.iter().for_each(|&x| s.add(x));
        s
    };
    let mut r = rec(1_323_974_133_493_287_123, 1_500_000_000, 40000);
    let json = |r: &tapflow_proto::conn::ConnRecord| {
        let mut out = String::new();
        conn_json(r, &[], &mut out);
        out
    };
    let plain = json(&r);
    r.timing = Some(Box::new(Timing {
        tcp_synack_ns: Some(1_234_567),
        tcp_ackdat_ns: Some(2_000_999),
        // Two gaps (three packets): 1 ms and 3 ms, mean 2 ms, sample deviation sqrt(2) ms.
        orig_iat: stats(&[1_000_000, 3_000_000]),
        // One gap: no deviation.
        resp_iat: stats(&[5_000_000_500]),
        orig_ack_rtt: stats(&[10_000, 20_001]),
        ..Timing::default()
    }));
    let out = json(&r);
    assert!(
        out.starts_with(plain.trim_end_matches("}\n")),
        "only keys added at the end"
    );
    let tail = &out[plain.len() - 2..];
    assert_eq!(
        tail,
        ",\"tcp_synack\":0.001234,\"tcp_ackdat\":0.002000,\"tcp_rtt\":0.003235,\
         \"orig_iat_min\":0.001000,\"orig_iat_mean\":0.002000,\"orig_iat_max\":0.003000,\
         \"orig_iat_stddev\":0.001414,\
         \"resp_iat_min\":5.000000,\"resp_iat_mean\":5.000000,\"resp_iat_max\":5.000000,\
         \"orig_ack_rtt_min\":0.000010,\"orig_ack_rtt_mean\":0.000015,\"orig_ack_rtt_n\":2}\n"
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("conn line is JSON");
    assert!(v.get("resp_ack_rtt_n").is_none() && v.get("rtt_cross_tap").is_none());
    // Half a handshake: no tcp_rtt; the cross-tap flag only when set.
    r.timing = Some(Box::new(Timing {
        tcp_synack_ns: Some(1_000),
        rtt_cross_tap: true,
        ..Timing::default()
    }));
    let out = json(&r);
    assert!(
        out.ends_with(",\"tcp_synack\":0.000001,\"rtt_cross_tap\":true}\n"),
        "{out}"
    );
}

#[test]
fn cap_forces_release_and_counts_it() {
    let mut c = ConnSorter::new(1, 2);
    let mut out = String::new();
    c.push(batch(
        "p0",
        0,
        vec![rec(1, 1, 1), rec(2, 1, 2), rec(3, 1, 3)],
    ));
    c.release(&mut out);
    assert_eq!((c.stats().forced, c.pending()), (1, 2));
}

#[test]
fn tunnel_parent_is_the_outer_open_at_the_inner_start() {
    let mut c = ConnSorter::new(1, 100);
    let outer = FiveTuple {
        proto: 17,
        src: Addr::from_v4([1, 1, 1, 1]),
        dst: Addr::from_v4([2, 2, 2, 2]),
        sport: 5000,
        dport: 4789,
    }
    .key(0)
    .0;
    let mut b = batch("p0", u64::MAX, vec![]);
    b.tunnel_outers = vec![(outer, 100), (outer, 900)];
    let mut inner = rec(950, 10, 9);
    inner.tunnel_parents = vec![outer];
    b.records.push(inner);
    c.push(b);
    let mut out = String::new();
    c.drain(&mut out);
    assert!(out.contains(uid(&outer, 900).as_str()), "{out}");
}

/// The uid of the issue: it closed the record early and wrote a well-formed one of its own.
const FORGED_UID: &str = "Cfake\",\"id.orig_h\":\"6.6.6.6\"}\n{\"ts\":1,\"uid\":\"INJECTED\",\
    \"id.orig_h\":\"6.6.6.6\",\"id.orig_p\":1,\"id.resp_h\":\"10.0.0.2\",\"id.resp_p\":80,\
    \"proto\":\"tcp\",\"conn_state\":\"SF\"}\n{\"ts\":1,\"uid\":\"C1";

/// Every line is one JSON object; returns them.
fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).expect("a conn log line that is JSON"))
        .collect()
}

/// One valid record and one with `forge` applied go through the sorter: only the valid one
/// is written, and the forged one is counted under `reason`.
fn check_rejected(forge: impl FnOnce(&mut ConnRecord), reason: InvalidRecord) {
    let mut forged = rec(2, 1, 2);
    forge(&mut forged);
    let mut c = ConnSorter::new(1, 100);
    c.push(batch("p0", u64::MAX, vec![rec(1, 1, 1), forged]));
    let mut out = String::new();
    c.drain(&mut out);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["id.orig_p"], 1, "{out}");
    assert!(!out.contains("6.6.6.6") && !out.contains('\u{1b}'), "{out}");
    let stats = c.stats();
    assert_eq!(stats.invalid.get(reason), 1, "{reason:?}: {stats:?}");
    assert_eq!(stats.invalid.total(), 1, "{stats:?}");
    assert_eq!(
        (
            stats.received,
            stats.released + stats.interim + stats.invalid.total()
        ),
        (2, 2),
        "{stats:?}"
    );
}

#[test]
fn forged_uid_is_rejected_and_counted() {
    check_rejected(|r| r.uid = FORGED_UID.into(), InvalidRecord::Uid);
}

#[test]
fn uid_with_a_control_byte_is_rejected_and_counted() {
    // A bit flip seen in a real message: a uid holding byte 0x18.
    check_rejected(|r| r.uid.replace_range(3..4, "\u{18}"), InvalidRecord::Uid);
}

#[test]
fn history_with_a_terminal_escape_is_rejected_and_counted() {
    check_rejected(
        |r| r.history = "ShAD\u{1b}[2J\u{1b}[31mdaFf".into(),
        InvalidRecord::History,
    );
}

#[test]
fn community_id_not_base64_is_rejected_and_counted() {
    check_rejected(
        |r| r.community_id = "1:\"},{\"x\":\"".into(),
        InvalidRecord::CommunityId,
    );
}

#[test]
fn tunnel_parents_out_of_order_are_rejected_and_counted() {
    check_rejected(
        |r| r.tunnel_parents = vec![r.key, r.key],
        InvalidRecord::TunnelParents,
    );
}

#[test]
fn times_counts_and_split_out_of_bounds_are_rejected_and_counted() {
    check_rejected(|r| r.duration_ns = Some(u64::MAX - 1), InvalidRecord::Time);
    check_rejected(|r| r.orig_pkts = u64::MAX, InvalidRecord::Count);
    check_rejected(|r| r.split = 0x80, InvalidRecord::Split);
}

#[test]
fn invalid_interim_records_are_not_set_aside() {
    let mut forged = rec(2, 1, 2);
    forged.interim = true;
    forged.uid = FORGED_UID.into();
    let mut valid = rec(3, 1, 3);
    valid.interim = true;
    let mut c = ConnSorter::new(1, 100);
    c.push(batch("p0", u64::MAX, vec![forged, valid.clone()]));
    assert_eq!(c.take_interim(), vec![valid]);
    assert_eq!((c.stats().interim, c.stats().invalid.uid), (1, 1));
}

#[test]
fn strings_are_escaped_in_the_line() {
    // Records are validated before they are written; the line escapes what it is given
    // anyway (a tunnel parent named by its key, for one, is text the aggregator makes).
    let mut r = rec(1, 1, 1);
    r.uid = FORGED_UID.into();
    r.history = "S\u{1b}[31m".into();
    r.community_id = "1:\\\"".into();
    let parent = "10.0.0.1:1 <-> 10.0.0.2:2 \"proto\" 17";
    let mut out = String::new();
    conn_json(&r, &[parent.into()], &mut out);
    assert_eq!(out.matches('\n').count(), 1, "{out}");
    let lines = json_lines(&out);
    assert_eq!(lines[0]["uid"], FORGED_UID);
    assert_eq!(lines[0]["id.orig_h"], "10.0.0.1");
    assert_eq!(lines[0]["history"], "S\u{1b}[31m");
    assert_eq!(lines[0]["community_id"], "1:\\\"");
    assert_eq!(lines[0]["tunnel_parents"][0], parent);
    assert!(!out.contains('\u{1b}'), "{out:?}");
}

#[test]
fn invalid_counts_are_in_the_report_only_when_some_were() {
    let mut c = ConnSorter::new(1, 100);
    c.push(batch("p0", 0, vec![rec(1, 1, 1)]));
    let report = serde_json::to_value(c.stats()).expect("the stats as JSON");
    assert!(report.get("invalid").is_none(), "{report}");
    let mut forged = rec(2, 1, 2);
    forged.history = "\u{1b}".into();
    c.push(batch("p0", 0, vec![forged]));
    let report = serde_json::to_value(c.stats()).expect("the stats as JSON");
    assert_eq!(report["invalid"]["history"], 1, "{report}");
    assert_eq!(report["invalid"]["uid"], 0, "{report}");
}

/// The inline key orders uids as their strings do, a prefix before what extends it, over the
/// lengths a valid uid can have.
#[test]
fn uid_keys_order_as_the_uid_strings() {
    let uids = [
        "C1",
        "C10",
        "C1A",
        "C2",
        "CA",
        "Ca",
        "Cz",
        "CZZZZZZZZZZZZZZZZ",
        "Czzzzzzzzzzzzzzzz",
        "Czzzzzzzzzzzzzzz",
        "C0",
        "C00000000000000000",
    ];
    for a in uids {
        for b in uids {
            assert_eq!(
                UidKey::of(a).cmp(&UidKey::of(b)),
                a.cmp(b),
                "{a} against {b}"
            );
        }
    }
    for i in 0..2_000u64 {
        let r = rec(1_000 + i, 5, (i % 60_000) as u16);
        let s = rec(1_000 + i / 2, 7, (i * 7 % 60_000) as u16);
        assert_eq!(
            UidKey::of(&r.uid).cmp(&UidKey::of(&s.uid)),
            r.uid.cmp(&s.uid)
        );
    }
}

#[test]
fn powers_of_ten() {
    let logged: Vec<u64> = (0..=1000).filter(|&n| is_power_of_ten(n)).collect();
    assert_eq!(logged, vec![1, 10, 100, 1000]);
}

#[test]
fn service_follows_proto_and_extras_are_escaped() {
    let mut r = rec(1_000_000_000, 1, 40000);
    let mut out = String::new();
    conn_json(&r, &[], &mut out);
    assert!(
        !out.contains("service") && !out.contains("server_name"),
        "unset, left out: {out}"
    );
    r.service = Some("ftp,ssl".into());
    r.server_name = Some("a\"b\u{1b}[31m.example".into());
    r.service_incomplete = true;
    out.clear();
    conn_json(&r, &[], &mut out);
    assert!(
        out.contains(",\"proto\":\"tcp\",\"service\":\"ftp,ssl\",\"duration\":"),
        "Zeek's order: {out}"
    );
    let v = &json_lines(&out)[0];
    assert_eq!(v["server_name"], "a\"b\u{1b}[31m.example");
    assert_eq!(v["service_incomplete"], true);
    assert!(!out.contains('\u{1b}'), "{out:?}");
    r.service_incomplete = false;
    out.clear();
    conn_json(&r, &[], &mut out);
    assert!(!out.contains("service_incomplete"), "only when true: {out}");
}

/// An expectation for the data connection `rec(ts, _, sport)` opens (10.0.0.1 -> 10.0.0.2:80).
fn expect(ts: u64, orig: Option<[u8; 4]>, service: &'static str) -> Expectation {
    Expectation {
        ts_ns: ts,
        orig: orig.map(Addr::from_v4),
        resp: Addr::from_v4([10, 0, 0, 2]),
        resp_p: 80,
        service,
    }
}

fn services(out: &str) -> Vec<String> {
    json_lines(out)
        .iter()
        .map(|v| v["service"].as_str().unwrap_or("-").to_owned())
        .collect()
}

#[test]
fn an_expectation_labels_connections_that_start_within_its_timeout() {
    let mut c = ConnSorter::new(1, 100);
    let s = 1_000_000_000;
    c.expects_mut()
        .insert(expect(10 * s, Some([10, 0, 0, 1]), "ftp-data"));
    c.expects_mut()
        .insert(expect(10 * s, Some([10, 0, 0, 9]), "irc-dcc-data"));
    let mut labelled = rec(11 * s, s, 1);
    let mut udp = rec(12 * s, s, 2);
    udp.proto = 17;
    let before = rec(9 * s, s, 3);
    let late = rec(10 * s + expect::TIMEOUT_NS + 1, s, 4);
    let mut has_one = rec(13 * s, s, 5);
    has_one.service = Some("http".into());
    let mut out = String::new();
    c.push(batch(
        "p0",
        u64::MAX,
        vec![labelled.clone(), udp, before, late, has_one],
    ));
    c.drain(&mut out);
    assert_eq!(services(&out), ["-", "ftp-data", "-", "http", "-"]);
    assert_eq!(c.stats().expects.labelled, 1);
    assert_eq!(c.stats().expects.received, 2);
    // Another originator matches only an expectation for any originator.
    labelled.orig_h = Addr::from_v4([10, 0, 0, 7]);
    assert_eq!(c.expects.lookup(&labelled), None);
    c.expects_mut().insert(expect(10 * s, None, "irc-dcc-data"));
    assert_eq!(c.expects.lookup(&labelled), Some("irc-dcc-data"));
}

#[test]
fn labels_are_the_same_whichever_processor_announces_first() {
    let s = 1_000_000_000;
    let data = || rec(20 * s, s, 7);
    let run = |expect_first: bool| {
        let mut c = ConnSorter::new(2, 100);
        let mut out = String::new();
        if expect_first {
            c.expects_mut()
                .insert(expect(19 * s, Some([10, 0, 0, 1]), "ftp-data"));
        }
        // The data connection's processor is ahead; the control connection's is not yet past it.
        c.push(batch("p1", 100 * s, vec![data()]));
        c.push(batch("p0", 15 * s, vec![]));
        c.release(&mut out);
        assert!(out.is_empty(), "held until p0 is past it");
        if !expect_first {
            c.expects_mut()
                .insert(expect(19 * s, Some([10, 0, 0, 1]), "ftp-data"));
        }
        c.push(batch("p0", 100 * s, vec![]));
        c.release(&mut out);
        out
    };
    assert_eq!(services(&run(false)), ["ftp-data"]);
    assert_eq!(run(true), run(false));
}

#[test]
fn expectations_are_bounded_and_forgotten_after_their_expiry() {
    let s = 1_000_000_000;
    let mut t = ExpectTable::new(2);
    for ts in [1, 2, 3] {
        t.insert(expect(ts * s, None, "ftp-data"));
    }
    t.insert(Expectation {
        resp_p: 0,
        ..expect(s, None, "ftp-data")
    });
    t.reject();
    let st = t.stats();
    assert_eq!(
        (st.received, st.over_cap, st.invalid, t.len()),
        (5, 1, 2, 2)
    );
    t.released(expect::TIMEOUT_NS + expect::RETAIN_NS + s);
    assert_eq!(t.len(), 2, "not yet past the first's expiry");
    t.released(expect::TIMEOUT_NS + expect::RETAIN_NS + 3 * s);
    assert_eq!((t.len(), t.stats().expired), (0, 2));
    assert_eq!(ExpectTable::service("ftp-data"), Some("ftp-data"));
    assert_eq!(ExpectTable::service("http"), None);
}

#[test]
fn announcements_become_zeeks_expectations() {
    use tapflow_proto::upstream::Expected;
    let (client, server, other) = (
        Addr::from_v4([10, 0, 0, 1]),
        Addr::from_v4([10, 0, 0, 2]),
        Addr::from_v4([10, 0, 0, 3]),
    );
    let pasv = Expected {
        uid: "CAbc123".into(),
        ts_ns: 5,
        orig_h: client,
        resp_h: server,
        addr: None,
        port: 2121,
        by_resp: true,
        service: "ftp-data".into(),
    };
    let x = Expectation::from_wire(&pasv).expect("a valid PASV reply");
    assert_eq!((x.orig, x.resp, x.resp_p), (Some(client), server, 2121));
    // PORT from the client: the server connects to the address given.
    let port = Expected {
        addr: Some(other),
        by_resp: false,
        ..pasv.clone()
    };
    let x = Expectation::from_wire(&port).expect("a valid PORT command");
    assert_eq!((x.orig, x.resp), (Some(server), other));
    let dcc = Expected {
        addr: Some(other),
        service: "irc-dcc-data".into(),
        ..pasv.clone()
    };
    let x = Expectation::from_wire(&dcc).expect("a valid DCC SEND");
    assert_eq!((x.orig, x.resp, x.service), (None, other, "irc-dcc-data"));
    let mut t = ExpectTable::new(10);
    let http = Expected {
        service: "http".into(),
        ..pasv.clone()
    };
    let forged = Expected {
        uid: "no".into(),
        ..pasv
    };
    t.push(&[http, forged, port]);
    let st = t.stats();
    assert_eq!((st.received, st.invalid, t.len()), (3, 2, 1));
}
