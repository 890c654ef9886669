//! The second signal: a collector whose flush waits on an unresponsive processor keeps waiting
//! after the first SIGINT or SIGTERM (a graceful stop), and exits at once with 130 on the
//! second (README, exit codes).

use std::path::Path;
use std::time::{Duration, Instant};

use tapflow_integration_tests::craft::{Ipv4, PcapWriter};
use tapflow_integration_tests::faults::signal;
use tapflow_integration_tests::{bin, endpoint, Proc};

/// A few UDP datagrams: something to flush.
fn small_capture(path: &Path) {
    let mut w = PcapWriter::create(path);
    for i in 0..20u16 {
        let p = Ipv4::udp(([10, 0, 0, 1], 5000 + i), ([10, 0, 0, 2], 53), b"query");
        w.packet(1_700_000_000_000_000 + u64::from(i) * 1000, &p);
    }
    w.finish();
}

fn second_signal_exits_130(first: &str, second: &str) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let pcap = dir.path().join("small.pcap");
    small_capture(&pcap);
    // A port held by this test that accepts no ZMTP greeting: the flush at exit waits for it
    // (linger 30 s by default). Held, so that no other process can take it meanwhile.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let nobody = endpoint(silent.local_addr().expect("its address").port());
    let args: Vec<String> = [
        "--plain",
        "--pcap",
        &pcap.display().to_string(),
        "--processor",
        &nobody,
        "--name",
        "tap",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut c = Proc::spawn("collector", &bin("tapflow-collector"), &args, dir.path());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.stderr().contains("sent to processors") {
        assert!(Instant::now() < deadline, "collector: {}", c.stderr());
        assert!(
            c.child.try_wait().expect("polling the collector").is_none(),
            "collector ended before its flush: {}",
            c.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(c.child.id(), first);
    std::thread::sleep(Duration::from_millis(1500));
    let early = c.child.try_wait().expect("polling the collector");
    assert!(
        early.is_none(),
        "the first {first} is a graceful stop: still flushing to the unreachable processor; \
         it exited {early:?}:\n{}",
        c.stderr()
    );
    let sent = Instant::now();
    signal(c.child.id(), second);
    let status = c
        .wait_until(Instant::now() + Duration::from_secs(5))
        .expect("the collector exits on the second signal");
    assert_eq!(
        status.code(),
        Some(130),
        "{first} then {second}: {status:?}\n{}",
        c.stderr()
    );
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "at once: {:?}",
        sent.elapsed()
    );
}

#[test]
fn a_second_sigint_during_the_flush_exits_130() {
    second_signal_exits_130("INT", "INT");
}

#[test]
fn sigterm_then_sigint_during_the_flush_exits_130() {
    second_signal_exits_130("TERM", "INT");
}

#[test]
fn a_second_sigterm_during_the_flush_exits_130() {
    second_signal_exits_130("TERM", "TERM");
}
