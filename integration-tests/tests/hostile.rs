//! Garbage on the pipeline's sockets (DESIGN invariant 7): messages that are not tapflow's,
//! from another version, truncated, or malformed are counted by reason and dropped, and the
//! run around them is still complete and reconciles.

use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::{endpoint, free_port, is_root, start_pipeline, CollectorSpec};
use tapflow_proto::wire::{encode_batch, LinkHeader, FORMAT_VERSION};

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

#[test]
fn garbage_on_processor_and_aggregator_sockets_is_counted_and_dropped() {
    if !is_root() {
        return;
    }
    // A live collector on lo keeps the run open while we send garbage, then ends on SIGTERM.
    let port = free_port();
    // Loopback hands libpcap packets whose checksums the kernel never filled in (checksum
    // offload), as many NICs do: what Zeek's -C is for.
    let spec = CollectorSpec::loopback(port, 1, &["--ignore-checksums"]);
    let running = start_pipeline(&[spec], 1);
    std::thread::sleep(Duration::from_millis(1000));
    let ctx = zmq::Context::new();
    for target in [running.processor_ports[0], running.aggregator_port] {
        let push = ctx.socket(zmq::PUSH).expect("create a PUSH socket");
        push.set_linger(2000).expect("set the linger");
        push.connect(&endpoint(target))
            .expect("connect the PUSH socket");
        for g in garbage() {
            push.send(&g[..], 0).expect("send a garbage frame");
        }
    }
    // Real traffic after the garbage.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    for i in 0..50 {
        sock.send_to(
            format!("after the garbage {i}").as_bytes(),
            ("127.0.0.1", port),
        )
        .expect("send a datagram");
    }
    std::thread::sleep(Duration::from_millis(1000));
    running.signal_collector(0, "TERM");
    let run = running.wait(Duration::from_secs(60));
    assert!(run.all_exited(), "{}", run.aggregator.1);
    for (code, log) in run
        .processors
        .iter()
        .chain(std::iter::once(&run.aggregator))
    {
        assert_eq!(*code, Some(0), "{log}");
        assert!(!log.contains("panicked"), "{log}");
    }
    let report = run.accounting();
    let malformed = &report["processors"][0]["malformed"];
    let total: u64 = malformed
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    // Every garbage message is counted by reason.
    assert_eq!(total, garbage().len() as u64, "{malformed}");
    for reason in ["bad_magic", "truncated", "unknown_version", "malformed"] {
        assert!(
            malformed[reason].as_u64() > Some(0),
            "{reason} in {malformed}"
        );
    }
    assert_eq!(
        run.aggregator
            .1
            .matches("dropped an undecodable message")
            .count(),
        garbage().len(),
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
