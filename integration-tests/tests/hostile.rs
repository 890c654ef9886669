//! Garbage on the pipeline's sockets (DESIGN invariant 7): messages that are not tapflow's,
//! from another version, truncated, or malformed are counted by reason and dropped, and the
//! run around them is still complete and reconciles.

use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::{
    bin, endpoint, free_port, is_root, start_pipeline, CollectorSpec, PipelineRun, Proc,
};
use tapflow_proto::conn::{community_id, uid, ConnRecord, ConnState};
use tapflow_proto::upstream::{ConnBatch, ProcessorAccount, ProcessorCounters, UpMessage};
use tapflow_proto::wire::{encode_batch, LinkHeader, FORMAT_VERSION};
use tapflow_proto::{Addr, FiveTuple};

/// Messages a stranger might send.
fn garbage() -> Vec<Vec<u8>> {
    let header = LinkHeader {
        sender: "intruder".into(),
        incarnation: 1,
        epoch: 1,
        shard_count: 1,
        shard: 0,
        seq: 0,
        watermark_ns: 0,
    };
    let mut valid = Vec::new();
    encode_batch(&header, &[], &mut valid);
    let mut wrong_version = valid.clone();
    wrong_version[2] = 99;
    vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![],
        b"TF".to_vec(),
        wrong_version,
        valid[..valid.len() - 2].to_vec(),
        [
            &[b'T', b'F', FORMAT_VERSION, 1][..],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
        ]
        .concat(),
        vec![0xff; 100_000],
    ]
}

/// Starts a pipeline (a live collector on lo, one processor), sends `count` frames of `frames`
/// (in turn) to the processor's and then the aggregator's socket, then 50 datagrams of real
/// traffic, and ends the run with SIGTERM to the collector. `None` without root (no capture).
fn run_with_garbage(frames: &[Vec<u8>], count: usize) -> Option<PipelineRun> {
    if !is_root() {
        return None;
    }
    // A live collector on lo keeps the run open while we send garbage, then ends on SIGTERM.
    let port = free_port();
    // Loopback hands libpcap packets whose checksums the kernel never filled in (checksum
    // offload), as many NICs do: what Zeek's -C is for.
    let spec = CollectorSpec::loopback(port, 1, &["--ignore-checksums"]);
    let running = start_pipeline(&[spec], 1);
    std::thread::sleep(Duration::from_millis(1000));
    let ctx = zmq::Context::new();
    // The aggregator's first: it then drains its share while the processor's is sent (a
    // PULL socket reads its peers in turn, so a processor's end-of-stream can be read before
    // garbage still queued from another peer).
    for target in [running.aggregator_port, running.processor_ports[0]] {
        let push = ctx.socket(zmq::PUSH).expect("create a PUSH socket");
        // Until every frame is delivered (the receivers never drop: PUSH/PULL blocks at the
        // high-water mark), within a bound: a busy machine may take the receivers a while.
        push.set_linger(30_000).expect("set the linger");
        push.connect(&endpoint(target))
            .expect("connect the PUSH socket");
        for g in frames.iter().cycle().take(count) {
            push.send(&g[..], 0).expect("send a garbage frame");
        }
    }
    // Ending the context waits for the closed sockets to hand over every frame (their
    // linger): all the garbage is in before the run is ended.
    drop(ctx);
    // Real traffic after the garbage.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    for i in 0..50 {
        sock.send_to(
            format!("after the garbage {i}").as_bytes(),
            ("127.0.0.1", port),
        )
        .expect("send a datagram");
    }
    std::thread::sleep(Duration::from_millis(2000));
    running.signal_collector(0, "TERM");
    let run = running.wait(Duration::from_secs(120));
    assert!(run.all_exited(), "{}", run.aggregator.1);
    for (code, log) in run
        .processors
        .iter()
        .chain(std::iter::once(&run.aggregator))
    {
        assert_eq!(*code, Some(0), "{log}");
        assert!(!log.contains("panicked"), "{log}");
    }
    Some(run)
}

/// The processor's undecodable messages, by reason, from the accounting report.
fn processor_malformed(report: &Value) -> u64 {
    report["processors"][0]["malformed"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// The aggregator's undecodable messages: the sum of the counts by reason on its summary line
/// at exit (`malformed={"bad_magic": 2, "truncated": 3}`).
fn aggregator_malformed(log: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("undecodable messages from processors malformed={"))
        .unwrap_or_default();
    line.split("\": ")
        .skip(1)
        .filter_map(|s| {
            let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn garbage_on_processor_and_aggregator_sockets_is_counted_and_dropped() {
    let Some(run) = run_with_garbage(&garbage(), garbage().len()) else {
        return;
    };
    let report = run.accounting();
    let malformed = &report["processors"][0]["malformed"];
    // Every garbage message is counted by reason.
    assert_eq!(
        processor_malformed(report),
        garbage().len() as u64,
        "{malformed}"
    );
    for reason in ["bad_magic", "truncated", "unknown_version", "malformed"] {
        assert!(
            malformed[reason].as_u64() > Some(0),
            "{reason} in {malformed}"
        );
    }
    // The aggregator counted them all too (and logged them, rate-limited).
    assert_eq!(
        aggregator_malformed(&run.aggregator.1),
        garbage().len() as u64,
        "{}",
        run.aggregator.1
    );
    assert!(
        run.aggregator.1.contains("dropped an undecodable message"),
        "{}",
        run.aggregator.1
    );
    assert_eq!(report["reconciled"], Value::Bool(true), "{report:#}");
    // The real collector's run is whole.
    let c = report["collectors"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["sender"] == "collector0"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(c["packets_summarised"].as_u64(), Some(50), "{c:#}");
    assert!(
        c["packets_reconcile"].as_bool() == Some(true)
            && c["summaries_reconcile"].as_bool() == Some(true),
        "{c:#}"
    );
    let conn: Value =
        serde_json::from_str(run.conn_log.lines().next().unwrap_or_default()).unwrap_or_default();
    assert_eq!(
        (run.conn_log.lines().count(), conn["orig_pkts"].as_u64()),
        (1, Some(50)),
        "{}",
        run.conn_log
    );
}

/// A flood of garbage (issue 21, item 7): every frame is counted, but the logs stay small
/// (one WARN per message used to write tens of megabytes).
#[test]
fn a_garbage_flood_is_counted_whole_and_logged_rate_limited() {
    const FLOOD: usize = 50_000;
    // The small frames only: 50k of the 100 kB one would be 5 GB.
    let frames: Vec<Vec<u8>> = garbage().into_iter().filter(|g| g.len() < 1000).collect();
    let Some(run) = run_with_garbage(&frames, FLOOD) else {
        return;
    };
    let report = run.accounting();
    assert_eq!(processor_malformed(report), FLOOD as u64, "{report:#}");
    assert_eq!(
        aggregator_malformed(&run.aggregator.1),
        FLOOD as u64,
        "{}",
        run.aggregator.1
    );
    assert_eq!(report["reconciled"], Value::Bool(true), "{report:#}");
    for (who, log) in [
        ("processor", &run.processors[0].1),
        ("aggregator", &run.aggregator.1),
    ] {
        let head: String = log.chars().take(3000).collect();
        assert!(
            log.lines().count() < 100 && log.len() < 50_000,
            "{who}: {} lines, {} bytes of stderr; it begins:\n{head}",
            log.lines().count(),
            log.len()
        );
        // What was suppressed is said, with the count.
        assert!(log.contains("suppressed"), "{who}: {log}");
    }
}

/// A valid final record of a TCP connection from 10.0.0.1:`sport` to 10.0.0.2:80.
fn record(sport: u16) -> ConnRecord {
    let t = FiveTuple {
        proto: 6,
        src: Addr::from_v4([10, 0, 0, 1]),
        dst: Addr::from_v4([10, 0, 0, 2]),
        sport,
        dport: 80,
    };
    let key = t.key(0).0;
    let ts = 1_700_000_000_000_000_000 + u64::from(sport);
    ConnRecord {
        ts_ns: ts,
        uid: uid(&key, ts),
        orig_h: t.src,
        orig_p: t.sport,
        resp_h: t.dst,
        resp_p: t.dport,
        proto: 6,
        duration_ns: Some(1_000_000),
        orig_bytes: Some(10),
        resp_bytes: Some(20),
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
        community_id: community_id(6, t.src, t.sport, t.dst, t.dport),
        interim: false,
        evicted: false,
        key,
        orig_tcp_flags: 0x1b,
        resp_tcp_flags: 0x1b,
        split: 0,
        timing: None,
        service: None,
        server_name: None,
        service_incomplete: false,
    }
}

/// One valid record, then records whose strings were forged to write a record of their own
/// into the conn log (or to break its lines, or a terminal reading it), or damaged by a bit
/// flip.
fn valid_and_forged() -> Vec<ConnRecord> {
    let mut forged_uid = record(2);
    forged_uid.uid = "Cfake\",\"id.orig_h\":\"6.6.6.6\"}\n{\"ts\":1,\"uid\":\"INJECTED\",\
        \"id.orig_h\":\"6.6.6.6\",\"id.orig_p\":1,\"id.resp_h\":\"10.0.0.2\",\"id.resp_p\":80,\
        \"proto\":\"tcp\",\"conn_state\":\"SF\"}\n{\"ts\":1,\"uid\":\"C1"
        .into();
    let mut ansi_history = record(3);
    ansi_history.history = "ShAD\u{1b}[2J\u{1b}[31mdaFf".into();
    let mut flipped_uid = record(4);
    flipped_uid.uid.replace_range(3..4, "\u{18}");
    let mut bad_community_id = record(5);
    bad_community_id.community_id = "1:\"},{\"x\":\"".into();
    let mut twice_the_parent = record(6);
    twice_the_parent.tunnel_parents = vec![twice_the_parent.key, twice_the_parent.key];
    vec![
        record(1),
        forged_uid,
        ansi_history,
        flipped_uid,
        bad_community_id,
        twice_the_parent,
    ]
}

#[test]
fn forged_connection_records_are_rejected_counted_and_never_written() {
    let dir = tempfile::tempdir().expect("create the run's directory");
    let port = free_port();
    let conn_log = dir.path().join("conn.jsonl");
    let health = dir.path().join("health.jsonl");
    let args: Vec<String> = [
        "--listen",
        &endpoint(port),
        "--processors",
        "1",
        "--exit-on-eos",
        "--plain",
        "--conn-log",
        &conn_log.display().to_string(),
        "--health-log",
        &health.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut aggregator = Proc::spawn("aggregator", &bin("tapflow-aggregator"), &args, dir.path());
    let records = valid_and_forged();
    let sent = records.len() as u64;
    let valid_uid = records[0].uid.clone();
    let batch = UpMessage::Conns(ConnBatch {
        processor: "intruder".into(),
        incarnation: 1,
        watermark_ns: u64::MAX,
        settle_ns: 0,
        records,
        tunnel_outers: vec![],
        traffic: vec![],
        records_seq: 0,
    });
    let eos = UpMessage::Eos(Box::new(ProcessorAccount {
        processor: "intruder".into(),
        incarnation: 1,
        counters: ProcessorCounters {
            records_sent: sent,
            ..ProcessorCounters::default()
        },
        ..ProcessorAccount::default()
    }));
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).expect("create a PUSH socket");
    push.set_linger(5000).expect("set the linger");
    push.connect(&endpoint(port))
        .expect("connect the PUSH socket");
    for m in [batch, eos] {
        let mut bytes = Vec::new();
        m.encode(&mut bytes);
        push.send(&bytes[..], 0).expect("send a processor message");
    }
    let status = aggregator.wait_until(Instant::now() + Duration::from_secs(60));
    let stderr = aggregator.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Only the valid record is written, and every line is one JSON object.
    let text = std::fs::read_to_string(&conn_log).expect("read the conn log");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a conn log line that is JSON"))
        .collect();
    assert!(lines.iter().all(|l| l["id.orig_h"] == "10.0.0.1"), "{text}");
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(
        lines[0]["uid"],
        Value::String(valid_uid.to_string()),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "{text:?}");

    // The report counts each rejection by reason, and still reconciles.
    let health_text = std::fs::read_to_string(&health).expect("read the health log");
    let report: Value = serde_json::from_str(health_text.lines().last().unwrap_or_default())
        .expect("the accounting report, the health log's last line");
    let invalid = &report["conns"]["invalid"];
    for (reason, n) in [
        ("uid", 2),
        ("history", 1),
        ("community_id", 1),
        ("tunnel_parents", 1),
    ] {
        assert_eq!(invalid[reason].as_u64(), Some(n), "{reason}: {report:#}");
    }
    assert_eq!(
        report["conns"]["received"].as_u64(),
        Some(sent),
        "{report:#}"
    );
    assert_eq!(report["conns"]["released"].as_u64(), Some(1), "{report:#}");
    assert_eq!(report["reconciled"], Value::Bool(true), "{report:#}");
    assert_eq!(
        stderr
            .matches("dropped an invalid connection record")
            .count(),
        1,
        "the 1st, 10th, 100th, ... are logged, not the others: {stderr}"
    );
}
