//! `--capture-threads 2` in a network namespace the test creates: a crafted capture (TCP
//! sessions and fragmented UDP datagrams) replayed with tcpreplay into one end of a veth pair,
//! the whole pipeline inside the namespace capturing LIVE on the other end. The conn log of two
//! capture threads (one PACKET_FANOUT group) equals one thread's, timestamps aside, the
//! accounting reconciles with two senders, and each fragmented datagram ends whole in its
//! session.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tapflow_integration_tests::craft::{tcp_session, Ipv4, PcapWriter};
use tapflow_integration_tests::{bin, endpoint, free_ports, is_root, Proc};

/// TCP sessions in the capture.
const SESSIONS: u16 = 40;
/// Fragmented UDP datagrams (client to server) in the capture, and each one's payload.
const DATAGRAMS: usize = 6;
const DATAGRAM_BYTES: usize = 3000;

/// A namespace with a veth pair `va`/`vb` (up), deleted when dropped.
struct Netns(String);

impl Netns {
    /// The namespace `tag` of this test process.
    fn create(tag: &str) -> Netns {
        let ns = Netns(format!("tfct{tag}{}", std::process::id()));
        // A namespace left by a run that was killed.
        let _ = Command::new("ip")
            .args(["netns", "del", &ns.0])
            .stderr(std::process::Stdio::null())
            .status();
        ns.ip(&["netns", "add", &ns.0]);
        for args in [
            &["link", "set", "lo", "up"][..],
            &["link", "add", "va", "type", "veth", "peer", "name", "vb"],
            &["link", "set", "va", "up"],
            &["link", "set", "vb", "up"],
        ] {
            let mut full = vec!["-n", ns.0.as_str()];
            full.extend_from_slice(args);
            ns.ip(&full);
        }
        ns
    }

    fn ip(&self, args: &[&str]) {
        let status = Command::new("ip").args(args).status().expect("run ip");
        assert!(status.success(), "ip {args:?}: {status}");
    }

    /// `ip netns exec NS program args...`, as a [`Proc`] (ip execs the program: same pid).
    fn spawn(&self, name: &str, program: &Path, args: &[String], dir: &Path) -> Proc {
        let mut full = vec![
            "netns".to_owned(),
            "exec".to_owned(),
            self.0.clone(),
            program.display().to_string(),
        ];
        full.extend_from_slice(args);
        Proc::spawn(name, Path::new("/usr/sbin/ip"), &full, dir)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The IPv4 fragments of an Ethernet `frame` (14-byte header, 20-byte IP header), each
/// carrying at most `chunk` bytes (a multiple of 8) of the IP payload, with IP id `id`.
fn fragments(frame: &[u8], id: u16, chunk: usize) -> Vec<Vec<u8>> {
    let (eth, ip, payload) = (&frame[..14], &frame[14..34], &frame[34..]);
    let mut out = Vec::new();
    for (i, part) in payload.chunks(chunk).enumerate() {
        let offset = i * chunk;
        let more = offset + part.len() < payload.len();
        let mut h = ip.to_vec();
        let total = (20 + part.len()) as u16;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&id.to_be_bytes());
        let flags_off = ((offset / 8) as u16) | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&flags_off.to_be_bytes());
        h[10..12].copy_from_slice(&[0, 0]);
        let sum = ip_checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut f = eth.to_vec();
        f.extend_from_slice(&h);
        f.extend_from_slice(part);
        out.push(f);
    }
    out
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The capture replayed: TCP sessions from distinct ports, and a UDP exchange whose requests
/// are fragmented (three fragments each) and whose replies are not.
fn write_capture(path: &Path) -> usize {
    let mut packets: Vec<(u64, Vec<u8>)> = Vec::new();
    let start = 1_700_000_000_000_000u64;
    for i in 0..SESSIONS {
        let client = ([10, 9, 1, 1 + (i % 7) as u8], 40000 + i);
        let server = ([10, 9, 2, 2], 80 + (i % 3));
        for (t, p) in tcp_session(start + u64::from(i) * 3000, client, server, 400, 200) {
            packets.push((t, p.frame().0));
        }
    }
    let (c, s) = (([10, 9, 3, 3], 5353u16), ([10, 9, 4, 4], 6000u16));
    for d in 0..DATAGRAMS {
        let t = start + 500 + d as u64 * 20_000;
        let payload = vec![b'a' + d as u8; DATAGRAM_BYTES];
        let (frame, _) = Ipv4::udp(c, s, &payload).frame();
        for (k, f) in fragments(&frame, 0x4000 + d as u16, 1200)
            .into_iter()
            .enumerate()
        {
            packets.push((t + k as u64 * 10, f));
        }
        packets.push((t + 5000, Ipv4::udp(s, c, b"ok").frame().0));
    }
    packets.sort_by_key(|(t, _)| *t);
    let mut w = PcapWriter::create(path);
    for (t, f) in &packets {
        w.write(*t, f, f.len());
    }
    w.finish();
    packets.len()
}

/// What one run left: the conn log's records and the accounting report.
struct Outcome {
    conn: Vec<Value>,
    report: Value,
    collector_log: String,
}

/// How a run ends.
#[derive(Clone, Copy, PartialEq)]
enum End {
    /// SIGTERM to the collector (exit 0).
    Signal,
    /// The interface disappears under `--interface-retry-s 0` (exit 1).
    InterfaceGone,
}

/// The pipeline in `ns` (aggregator, two processors expecting `threads` senders), a collector
/// with `--capture-threads threads` on `vb`, the capture replayed into `va`, then the `end`.
fn run(ns: &Netns, capture: &Path, threads: u16, end: End) -> Outcome {
    let dir = tempfile::tempdir().expect("create the run's directory");
    let d = dir.path();
    let ports = free_ports(3);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let conn = d.join("conn.jsonl");
    let health = d.join("health.jsonl");
    let mut agg = ns.spawn(
        "aggregator",
        &bin("tapflow-aggregator"),
        &s(&[
            "--listen",
            &endpoint(ports[0]),
            "--processors",
            "2",
            "--exit-on-eos",
            "--plain",
            "--conn-log",
            &conn.display().to_string(),
            "--health-log",
            &health.display().to_string(),
        ]),
        d,
    );
    let mut procs: Vec<Proc> = (0..2)
        .map(|i| {
            ns.spawn(
                &format!("processor{i}"),
                &bin("tapflow-processor"),
                &s(&[
                    "--listen",
                    &endpoint(ports[1 + i]),
                    "--aggregator",
                    &endpoint(ports[0]),
                    "--collectors",
                    &threads.to_string(),
                    "--exit-on-eos",
                    "--plain",
                    "--name",
                    &format!("processor{i}"),
                ]),
                d,
            )
        })
        .collect();
    let mut collector = ns.spawn(
        "collector",
        &bin("tapflow-collector"),
        &s(&[
            "--interface",
            "vb",
            "--capture-threads",
            &threads.to_string(),
            "--filter",
            "ip and net 10.9.0.0/16",
            "--name",
            "tap",
            "--heartbeat-ms",
            "200",
            "--interface-retry-s",
            "0",
            "--plain",
            "--processor",
            &endpoint(ports[1]),
            "--processor",
            &endpoint(ports[2]),
        ]),
        d,
    );
    std::thread::sleep(Duration::from_millis(1500));
    let replay = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "tcpreplay",
            "-q",
            "--pps",
            "2000",
            "-i",
            "va",
        ])
        .arg(capture)
        .output()
        .expect("run tcpreplay");
    assert!(replay.status.success(), "tcpreplay: {replay:?}");
    std::thread::sleep(Duration::from_millis(1000));
    let expected = match end {
        End::Signal => {
            let pid = collector.child.id().to_string();
            let killed = Command::new("kill").args(["-TERM", &pid]).status();
            assert!(killed.is_ok_and(|s| s.success()), "signal the collector");
            0
        }
        End::InterfaceGone => {
            ns.ip(&["-n", &ns.0, "link", "del", "va"]);
            1
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let code = collector.wait_until(deadline).and_then(|s| s.code());
    let collector_log = collector.stderr();
    assert_eq!(code, Some(expected), "collector: {collector_log}");
    for p in &mut procs {
        let code = p.wait_until(deadline).and_then(|s| s.code());
        assert_eq!(code, Some(0), "{}: {}", p.name, p.stderr());
    }
    let code = agg.wait_until(deadline).and_then(|s| s.code());
    assert_eq!(code, Some(0), "aggregator: {}", agg.stderr());
    let report = std::fs::read_to_string(&health)
        .ok()
        .and_then(|t| t.lines().last().map(str::to_owned))
        .and_then(|l| serde_json::from_str(&l).ok())
        .expect("the aggregator's accounting report");
    let conn = std::fs::read_to_string(&conn)
        .expect("read the conn log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a conn record is JSON"))
        .collect();
    Outcome {
        conn,
        report,
        collector_log,
    }
}

/// A conn record without what depends on when its packets were captured (the time, the uid
/// drawn from it, durations, inter-arrival times, round trips: tcpreplay's pacing varies
/// between runs), as a sortable string.
fn timeless(record: &Value) -> String {
    let mut r = record.clone();
    if let Some(m) = r.as_object_mut() {
        m.retain(|k, _| {
            !["ts", "uid", "duration"].contains(&k.as_str())
                && !["iat", "rtt", "synack", "ackdat"]
                    .iter()
                    .any(|t| k.contains(t))
        });
    }
    r.to_string()
}

#[test]
fn two_capture_threads_log_what_one_does_and_reconcile() {
    if !is_root() {
        return;
    }
    let ns = Netns::create("a");
    let dir = tempfile::tempdir().expect("create the capture's directory");
    let capture = dir.path().join("threads.pcap");
    let packets = write_capture(&capture);
    let one = run(&ns, &capture, 1, End::Signal);
    let two = run(&ns, &capture, 2, End::Signal);
    for (n, o) in [(1, &one), (2, &two)] {
        assert_eq!(
            o.report["reconciled"],
            Value::Bool(true),
            "{n} thread(s): {:#}",
            o.report
        );
        let senders = o.report["collectors"].as_array().map_or(0, Vec::len);
        assert_eq!(senders, n, "one sender per thread: {:#}", o.report);
        println!(
            "{n} thread(s): {} records, collectors {}",
            o.conn.len(),
            o.report["collectors"]
        );
    }
    assert!(
        two.collector_log.contains("PACKET_FANOUT"),
        "{}",
        two.collector_log
    );
    // Both threads read packets: the fanout did spread the flows.
    let read: Vec<u64> = two.report["collectors"]
        .as_array()
        .expect("the collectors")
        .iter()
        .map(|c| c["packets_read"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        read.iter().all(|&r| r > 0),
        "a thread read nothing: {read:?}"
    );
    let mut a: Vec<String> = one.conn.iter().map(timeless).collect();
    let mut b: Vec<String> = two.conn.iter().map(timeless).collect();
    a.sort();
    b.sort();
    assert_eq!(a.len(), usize::from(SESSIONS) + 1, "{a:#?}");
    assert_eq!(a, b, "the conn logs differ ({packets} packets replayed)");
    // The fragmented exchange: one session, every datagram's payload in it whole.
    let udp: Vec<&Value> = two
        .conn
        .iter()
        .filter(|r| r["proto"] == Value::String("udp".into()))
        .collect();
    assert_eq!(udp.len(), 1, "{udp:#?}");
    // (Which side is the originator is the port heuristic's call: 5353 is a service port.)
    let field = |k: &str| udp[0][k].as_u64().unwrap_or(0);
    assert_eq!(
        (
            field("orig_bytes") + field("resp_bytes"),
            field("orig_pkts") + field("resp_pkts")
        ),
        (
            (DATAGRAMS * (DATAGRAM_BYTES + 2)) as u64,
            2 * DATAGRAMS as u64
        ),
        "every datagram whole, one packet each: {:#}",
        udp[0]
    );
    assert_eq!(
        field("orig_bytes").max(field("resp_bytes")),
        (DATAGRAMS * DATAGRAM_BYTES) as u64,
        "{:#}",
        udp[0]
    );
}

/// The capture failing under the threads (the interface deleted, no reopening) ends the
/// collector with exit 1 and the error, every thread's end-of-stream saying so: no thread
/// captures on alone.
#[test]
fn a_failed_capture_thread_takes_the_collector_down() {
    if !is_root() {
        return;
    }
    let ns = Netns::create("b");
    let dir = tempfile::tempdir().expect("create the capture's directory");
    let capture = dir.path().join("threads.pcap");
    write_capture(&capture);
    let o = run(&ns, &capture, 2, End::InterfaceGone);
    assert!(
        o.collector_log.contains("live capture on vb failed"),
        "{}",
        o.collector_log
    );
    assert!(
        o.collector_log.contains("collector finished"),
        "{}",
        o.collector_log
    );
    let collectors = o.report["collectors"].as_array().expect("the collectors");
    assert_eq!(collectors.len(), 2, "{:#}", o.report);
    // A thread whose handle failed says so; one stopped by its sibling's failure first may
    // end interrupted: none goes on.
    let statuses: Vec<&str> = collectors
        .iter()
        .map(|c| c["status"].as_str().unwrap_or(""))
        .collect();
    assert!(
        statuses
            .iter()
            .all(|s| s.starts_with("failed: live capture on vb failed") || *s == "interrupted"),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|s| s.starts_with("failed")),
        "{statuses:?}"
    );
    assert_eq!(o.report["reconciled"], Value::Bool(true), "{:#}", o.report);
    assert_eq!(o.conn.len(), usize::from(SESSIONS) + 1);
}
