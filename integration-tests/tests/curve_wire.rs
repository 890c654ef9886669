//! CURVE links carry no plaintext: the loopback traffic of a pipeline encrypted on both hops,
//! captured with tcpdump on the links' ports, holds none of the addresses, ports and uids of
//! the sessions it reported (taken from its conn log); the same check on a `--plain` run finds
//! every one of them (the control: the search works, so the test can fail).
//!
//! Needles: each session's flow key as the packed summaries carry it from collector to
//! processor (both addresses as 4 bytes, then both ports, little-endian: 12 bytes, in either
//! endpoint order), each address alone (4 bytes), and each uid (18 characters, in the
//! connection records from processor to aggregator).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::craft::{json_lines, tcp, Ipv4, PcapWriter};
use tapflow_integration_tests::faults::signal;
use tapflow_integration_tests::{bin, endpoint, free_ports, is_root, Proc};

const SESSIONS: u8 = 8;

/// `SESSIONS` complete TCP sessions between 10.77.0.x and 10.88.0.x, distinct ports.
fn sessions(path: &Path) {
    let mut w = PcapWriter::create(path);
    let mut t = 1_700_000_000_000_000u64;
    for i in 0..SESSIONS {
        let c = ([10, 77, 0, 10 + i], 40_001 + u16::from(i) * 7);
        let s = ([10, 88, 0, 20 + i], 31_337 + u16::from(i));
        let (mut cs, mut ss) = (7_000u32, 90_000u32);
        let mut put = |w: &mut PcapWriter, from_client: bool, flags: u8, data: &[u8]| {
            t += 1_000;
            let p = if from_client {
                Ipv4::tcp(c, s, flags, cs, ss, data)
            } else {
                Ipv4::tcp(s, c, flags, ss, cs, data)
            };
            let advance = data.len() as u32 + u32::from(flags & (tcp::SYN | tcp::FIN) != 0);
            if from_client {
                cs += advance;
            } else {
                ss += advance;
            }
            w.packet(t, &p);
        };
        put(&mut w, true, tcp::SYN, &[]);
        put(&mut w, false, tcp::SYN | tcp::ACK, &[]);
        put(&mut w, true, tcp::ACK, &[]);
        put(&mut w, true, tcp::PSH | tcp::ACK, b"GET / HTTP/1.0\r\n\r\n");
        put(
            &mut w,
            false,
            tcp::PSH | tcp::ACK,
            b"HTTP/1.0 200 OK\r\n\r\n",
        );
        put(&mut w, true, tcp::FIN | tcp::ACK, &[]);
        put(&mut w, false, tcp::FIN | tcp::ACK, &[]);
        put(&mut w, true, tcp::ACK, &[]);
    }
    w.finish();
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `tapflow-<role> keygen --out DIR/NAME`: (NAME.key, NAME.pub).
fn keygen(role: &str, dir: &Path, name: &str) -> (String, String) {
    let prefix = dir.join(name);
    let out = Command::new(bin(&format!("tapflow-{role}")))
        .args(["keygen", "--out", &prefix.display().to_string()])
        .output()
        .expect("running keygen");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let file = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
    (file("key"), file("pub"))
}

/// The flags that put CURVE on every link: (collector, processor, aggregator).
fn curve_flags(dir: &Path) -> [Vec<String>; 3] {
    let (ck, cp) = keygen("collector", dir, "collector");
    let (pk, pp) = keygen("processor", dir, "processor");
    let (ak, ap) = keygen("aggregator", dir, "aggregator");
    let copy = |from: &str, to: &str| {
        let to = dir.join(to);
        std::fs::copy(from, &to).expect("writing a clients file");
        to.display().to_string()
    };
    let (collectors, processors) = (
        copy(&cp, "collectors.clients"),
        copy(&pp, "processors.clients"),
    );
    [
        strings(&["--curve-key", &ck, "--curve-server-key", &pp]),
        strings(&[
            "--curve-key",
            &pk,
            "--curve-clients",
            &collectors,
            "--curve-server-key",
            &ap,
        ]),
        strings(&["--curve-key", &ak, "--curve-clients", &processors]),
    ]
}

/// Runs collector -> 2 processors -> aggregator over `pcap` while tcpdump records the links;
/// returns the conn log and every TCP payload byte captured on the links' ports.
fn run_recorded(pcap: &Path, curve: bool) -> (Vec<Value>, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let d = dir.path();
    let [coll, procs, agg] = if curve {
        curve_flags(d)
    } else {
        [
            vec!["--plain".into()],
            vec!["--plain".into()],
            vec!["--plain".into()],
        ]
    };
    let ports = free_ports(3);
    let wire = d.join("wire.pcap");
    let filter = format!(
        "tcp and (port {} or port {} or port {})",
        ports[0], ports[1], ports[2]
    );
    let mut tcpdump = Proc::spawn(
        "tcpdump",
        &PathBuf::from("tcpdump"),
        &strings(&[
            "--immediate-mode",
            "-Z",
            "root",
            "-i",
            "lo",
            "-U",
            // A larger kernel buffer (KiB): on a busy machine the default 2 MiB can overflow
            // before tcpdump is scheduled, and a dropped packet looks like a key not sent.
            "-B",
            "32768",
            "-s",
            "0",
            "-w",
            &wire.display().to_string(),
            &filter,
        ]),
        d,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tcpdump.stderr().contains("listening on") {
        assert!(Instant::now() < deadline, "tcpdump: {}", tcpdump.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let conn = d.join("conn.jsonl");
    let mut args = strings(&[
        "--listen",
        &endpoint(ports[0]),
        "--processors",
        "2",
        "--exit-on-eos",
        "--conn-log",
        &conn.display().to_string(),
    ]);
    args.extend(agg);
    let mut procs_running = vec![Proc::spawn(
        "aggregator",
        &bin("tapflow-aggregator"),
        &args,
        d,
    )];
    for (i, port) in ports[1..].iter().enumerate() {
        let mut args = strings(&[
            "--listen",
            &endpoint(*port),
            "--aggregator",
            &endpoint(ports[0]),
            "--collectors",
            "1",
            "--exit-on-eos",
            "--name",
            &format!("processor{i}"),
        ]);
        args.extend(procs.iter().cloned());
        procs_running.push(Proc::spawn(
            &format!("processor{i}"),
            &bin("tapflow-processor"),
            &args,
            d,
        ));
    }
    let mut args = strings(&[
        "--pcap",
        &pcap.display().to_string(),
        "--processor",
        &endpoint(ports[1]),
        "--processor",
        &endpoint(ports[2]),
    ]);
    args.extend(coll);
    procs_running.push(Proc::spawn(
        "collector",
        &bin("tapflow-collector"),
        &args,
        d,
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    for p in procs_running.iter_mut().rev() {
        let status = p.wait_until(deadline);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "{}: {}",
            p.name,
            p.stderr()
        );
    }
    // Immediate mode hands every packet over as it comes, but tcpdump may not have been
    // scheduled yet on a busy machine, and what is still in the kernel's buffer when it
    // stops is lost: wait until the file has stopped growing for a second.
    wait_until_still(
        &wire,
        Duration::from_secs(1),
        Instant::now() + Duration::from_secs(20),
    );
    signal(tcpdump.child.id(), "INT");
    tcpdump
        .wait_until(Instant::now() + Duration::from_secs(10))
        .expect("tcpdump ends on SIGINT");
    let conns = json_lines(&std::fs::read_to_string(&conn).expect("reading the conn log"));
    (conns, tcp_payloads(&wire))
}

/// Waits (at most until `deadline`) until `path`'s size has not changed for `still`.
fn wait_until_still(path: &Path, still: Duration, deadline: Instant) {
    let size = || std::fs::metadata(path).map_or(0, |m| m.len());
    let (mut last, mut since) = (size(), Instant::now());
    while Instant::now() < deadline && since.elapsed() < still {
        std::thread::sleep(Duration::from_millis(50));
        let now = size();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

/// The TCP payloads of a tcpdump capture on `lo` (Ethernet-framed), concatenated per direction
/// of each connection (source and destination port), in capture order: a message the kernel
/// split into two segments, with another connection's segment between them in the capture, is
/// still found whole.
fn tcp_payloads(path: &Path) -> Vec<Vec<u8>> {
    let pcap = tapflow_integration_tests::fifo::read_pcap(path);
    let mut streams: std::collections::BTreeMap<[u8; 4], Vec<u8>> = Default::default();
    for (_, rec) in &pcap.records {
        let frame = &rec[16..];
        let Some(ip) = frame.get(14..) else { continue };
        let ihl = usize::from(ip.first().map_or(0, |b| b & 0x0f)) * 4;
        let Some(tcp) = ip.get(ihl..) else { continue };
        let doff = usize::from(tcp.get(12).map_or(0, |b| b >> 4)) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let (Some(ports), Some(payload)) = (
            tcp.get(..4),
            tcp.get(doff..total.saturating_sub(ihl).max(doff)),
        ) else {
            continue;
        };
        let mut key = [0u8; 4];
        key.copy_from_slice(ports);
        streams.entry(key).or_default().extend_from_slice(payload);
    }
    streams.into_values().collect()
}

fn ipv4(v: &Value) -> [u8; 4] {
    let s = v.as_str().expect("an address");
    let p: Vec<u8> = s
        .split('.')
        .map(|o| o.parse().expect("an IPv4 octet"))
        .collect();
    [p[0], p[1], p[2], p[3]]
}

fn port(v: &Value) -> [u8; 2] {
    (v.as_u64().expect("a port") as u16).to_le_bytes()
}

/// Every needle of the sessions (name, accepted byte strings) and whether `wire` holds it.
fn found(conns: &[Value], wire: &[Vec<u8>]) -> Vec<(String, bool)> {
    let has = |n: &[u8]| wire.iter().any(|s| s.windows(n.len()).any(|w| w == n));
    let mut out = Vec::new();
    for c in conns {
        let (oh, rh) = (ipv4(&c["id.orig_h"]), ipv4(&c["id.resp_h"]));
        let (op, rp) = (port(&c["id.orig_p"]), port(&c["id.resp_p"]));
        let key_a = [&oh[..], &rh, &op, &rp].concat();
        let key_b = [&rh[..], &oh, &rp, &op].concat();
        let uid = c["uid"].as_str().expect("a uid");
        out.push((
            format!("key {} {:?}", c["id.orig_h"], c["id.orig_p"]),
            has(&key_a) || has(&key_b),
        ));
        out.push((format!("orig_h {}", c["id.orig_h"]), has(&oh)));
        out.push((format!("resp_h {}", c["id.resp_h"]), has(&rh)));
        out.push((format!("uid {uid}"), has(uid.as_bytes())));
    }
    out
}

#[test]
fn curve_links_carry_no_address_port_or_uid_in_the_clear_and_plain_links_do() {
    if !is_root() {
        return;
    }
    if Command::new("tcpdump").arg("--version").output().is_err() {
        eprintln!("SKIP: tcpdump not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let pcap = dir.path().join("sessions.pcap");
    sessions(&pcap);

    let (conns, plain_wire) = run_recorded(&pcap, false);
    assert_eq!(conns.len(), usize::from(SESSIONS), "{conns:?}");
    let plain = found(&conns, &plain_wire);
    let missing: Vec<&String> = plain.iter().filter(|(_, f)| !f).map(|(n, _)| n).collect();
    assert!(
        missing.is_empty(),
        "the control: a plain run carries them all in the clear ({} bytes), missing {missing:?}",
        plain_wire.iter().map(Vec::len).sum::<usize>()
    );

    let (conns, wire) = run_recorded(&pcap, true);
    assert_eq!(conns.len(), usize::from(SESSIONS), "{conns:?}");
    let bytes: usize = wire.iter().map(Vec::len).sum();
    assert!(bytes > 1000, "the CURVE links carried data: {bytes} bytes");
    let curve = found(&conns, &wire);
    let leaked: Vec<&String> = curve.iter().filter(|(_, f)| *f).map(|(n, _)| n).collect();
    assert!(
        leaked.is_empty(),
        "in the clear on CURVE links ({bytes} bytes): {leaked:?}"
    );
    println!(
        "{} needles: all in {} bytes of plain links, none in {} bytes of CURVE links",
        plain.len(),
        plain_wire.iter().map(Vec::len).sum::<usize>(),
        bytes
    );
}
