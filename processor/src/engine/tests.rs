//! The end of stream's records are made a message at a time, not all at once, and still sent
//! whole and in order.

use clap::Parser;
use tapflow_proto::conn::ConnRecord;
use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::tcp;
use tapflow_proto::upstream::{ConnBatch, UpMessage};
use tapflow_proto::{Addr, FiveTuple, LinkHeader, PacketSummary};

use super::{Engine, RECORDS_PER_MESSAGE};
use crate::config::{Args, Config, Options};

const FLOWS: u32 = 5 * RECORDS_PER_MESSAGE as u32 + 7;

fn config() -> Config {
    let args = Args::try_parse_from([
        "p",
        "--plain",
        "--listen",
        "tcp://127.0.0.1:1",
        "--aggregator",
        "tcp://127.0.0.1:2",
        "--max-flows",
        "100000",
    ])
    .expect("parse the arguments");
    Config::merge(args, Options::default()).expect("a valid config")
}

/// A SYN from its own spoofed source; timestamps repeat so that the key breaks ties.
fn syn(i: u32) -> PacketSummary {
    let [a, b, c, d] = i.to_be_bytes();
    let tuple = FiveTuple {
        proto: ip_proto::TCP,
        src: Addr::from_v4([10 + a, b, c, d]),
        dst: Addr::from_v4([192, 0, 2, 80]),
        sport: 1024 + (i % 5000) as u16,
        dport: 80,
    };
    let mut s = PacketSummary {
        ts_ns: 1_700_000_000_000_000_000 + u64::from(FLOWS - i) / 3 * 1000,
        ip_len: 40,
        tcp_flags: tcp::SYN,
        seq: i,
        window: 1024,
        ..PacketSummary::default()
    };
    s.set_tuple(&tuple, 0);
    s
}

fn receive_batch(pull: &zmq::Socket) -> ConnBatch {
    loop {
        let msg = pull.recv_bytes(0).expect("receive a message");
        if let UpMessage::Conns(batch) = UpMessage::decode(&msg).expect("decode a message") {
            return batch;
        }
    }
}

/// The flush's messages: the last carries the watermark "everything"; each before it says
/// through its settle when the records still to come end (the next message's first record's
/// end), with a watermark that says "every packet", so the first of them carries every traffic
/// partial left, and none follows.
fn check_flush_marks(messages: &[ConnBatch]) {
    let end = |r: &ConnRecord| r.ts_ns + r.duration_ns.unwrap_or(0);
    assert_eq!(messages.last().map(|m| m.watermark_ns), Some(u64::MAX));
    assert!(!messages[0].traffic.is_empty(), "the traffic partials left");
    for (i, pair) in messages.windows(2).enumerate() {
        assert_eq!(
            pair[0].watermark_ns,
            u64::MAX - 1,
            "message {i}'s watermark"
        );
        let claim = pair[0].watermark_ns - pair[0].settle_ns;
        assert_eq!(
            Some(claim),
            pair[1].records.first().map(end),
            "message {i}'s claim"
        );
        let later = messages[i + 1..].iter().flat_map(|m| &m.records);
        assert!(later.map(end).all(|e| e >= claim), "message {i}");
        assert!(pair[1].traffic.is_empty(), "message {}'s traffic", i + 1);
    }
}

#[test]
fn the_final_flush_is_made_a_message_at_a_time_and_sent_whole_in_order() {
    let mut engine = Engine::new(&config(), 1);
    // Every third flow has a second SYN 5 ms later: the flush's order (by last packet) is
    // not the first packets' order.
    let again = (0..FLOWS).step_by(3).map(|i| {
        let mut s = syn(i);
        s.ts_ns += 5_000_000;
        s
    });
    let mut summaries: Vec<PacketSummary> = (0..FLOWS).map(syn).chain(again).collect();
    summaries.sort_by_key(|s| s.ts_ns);
    let newest = summaries.last().map_or(0, |s| s.ts_ns);
    // The collector's watermark halfway through: the processor reports it before the end.
    let header = LinkHeader {
        sender: "c".to_owned(),
        incarnation: 1,
        epoch: 0,
        shard_count: 1,
        shard: 0,
        seq: 0,
        watermark_ns: summaries[summaries.len() / 2].ts_ns,
    };
    engine.accept(&header, &mut summaries);
    engine.step();
    assert_eq!(engine.table.stats().open_flows, u64::from(FLOWS));

    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL).expect("create the PULL socket");
    pull.bind("inproc://conns").expect("bind the PULL socket");
    let mut push = ctx.socket(zmq::PUSH).expect("create the PUSH socket");
    push.connect("inproc://conns")
        .expect("connect the PUSH socket");
    let mut buf = Vec::new();
    engine.send_conns(&mut push, &mut buf, 0);
    let before = receive_batch(&pull);
    assert!(before.records.is_empty());
    let reported = before.watermark_ns;
    assert!(reported > 0 && reported < newest, "{reported}");

    engine.finish();
    // Before, the whole table became records here: ~390 bytes each next to the table's ~250.
    assert!(
        engine.records.len() <= RECORDS_PER_MESSAGE,
        "{} records made at once",
        engine.records.len()
    );
    engine.send_conns(&mut push, &mut buf, 0);
    let (mut messages, mut received) = (Vec::new(), 0);
    while received < FLOWS as usize {
        let batch = receive_batch(&pull);
        assert!(batch.records.len() <= RECORDS_PER_MESSAGE);
        received += batch.records.len();
        messages.push(batch);
    }
    assert_eq!(messages.len(), FLOWS as usize / RECORDS_PER_MESSAGE + 1);
    check_flush_marks(&messages);
    let end = |r: &ConnRecord| r.ts_ns + r.duration_ns.unwrap_or(0);
    let records: Vec<ConnRecord> = messages.into_iter().flat_map(|m| m.records).collect();
    assert_eq!(records.len(), FLOWS as usize);
    assert!(
        records
            .windows(2)
            .all(|w| (end(&w[0]), w[0].ts_ns, w[0].key) < (end(&w[1]), w[1].ts_ns, w[1].key)),
        "records out of (end, ts, key) order"
    );
    let stats = engine.table.stats();
    assert_eq!(
        (stats.records, stats.ended_by_flush, stats.open_flows),
        (u64::from(FLOWS), u64::from(FLOWS), 0)
    );
    assert_eq!(engine.counters().records_sent, u64::from(FLOWS));
}
