//! A peer's name is bound to its CURVE key (issue 21, item 2). A collector key bound to
//! `names = ["legit"]` that sends an end-of-stream as `some-other-tap`, and a processor key
//! bound to `processor0` that sends an end-of-stream account as `processor9`, are refused and
//! counted (`names_refused`): neither the processor nor the aggregator ends, and the real
//! tap's data then arrives, is processed and reconciles. Made-up names from a key without
//! `names` are capped (`--max-senders`, `senders_refused`) without crowding out the real tap.
//! Real binaries, real ZeroMQ, real CURVE: the forged messages are sent by this test over a
//! CURVE link authenticated with the peer's own key pair.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::{
    bin, endpoint, free_ports, run_pipeline, shared_pcaps, CollectorSpec, Proc,
};
use tapflow_proto::upstream::{ProcessorAccount, ProcessorHeartbeat, UpMessage};
use tapflow_proto::wire::{encode_eos, encode_heartbeat, LinkHeader};
use tapflow_proto::{CollectorCounters, EosStatus};

const TIMEOUT: Duration = Duration::from_secs(90);
const LEGIT: &str = "zeek-ssh.pcap";
/// Made-up names sent by the flooding keys.
const FLOOD: usize = 10_000;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `tapflow-<role> keygen --out DIR/NAME`: (NAME.key, NAME.pub).
fn keygen(role: &str, dir: &Path, name: &str) -> (String, String) {
    let out = Command::new(bin(&format!("tapflow-{role}")))
        .args(["keygen", "--out", &path(&dir.join(name))])
        .output()
        .expect("run keygen");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    (
        path(&dir.join(format!("{name}.key"))),
        path(&dir.join(format!("{name}.pub"))),
    )
}

/// The Z85 value of `field = "..."` in a key file.
fn key_field(file: &str, field: &str) -> String {
    let text = std::fs::read_to_string(file).expect("read a key file");
    let prefix = format!("{field} = ");
    let value = text.lines().find_map(|l| l.strip_prefix(&prefix));
    assert!(value.is_some(), "{field} in {file}: {text}");
    value.expect("the key's line").trim_matches('"').to_owned()
}

/// A clients file of `(public-key file, names)` lines (`None`: no `names`).
fn clients(dir: &Path, name: &str, entries: &[(&str, Option<&[&str]>)]) -> String {
    let body: String = entries
        .iter()
        .map(|(public, names)| {
            let names = names.map_or(String::new(), |n| {
                let quoted: Vec<String> = n.iter().map(|s| format!("\"{s}\"")).collect();
                format!(", names = [{}]", quoted.join(", "))
            });
            format!("public = \"{}\"{names}\n", key_field(public, "public"))
        })
        .collect();
    let file = dir.join(name);
    std::fs::write(&file, body).expect("write the clients file");
    path(&file)
}

/// A CURVE PUSH socket to `port` with the key pair in `key`, checking the server's `server`.
fn curve_push(ctx: &zmq::Context, key: &str, server: &str, port: u16) -> zmq::Socket {
    let z85 = |file: &str, field: &str| {
        zmq::z85_decode(&key_field(file, field)).expect("decode a Z85 key")
    };
    let push = ctx.socket(zmq::PUSH).expect("create a PUSH socket");
    push.set_linger(5000).expect("set the linger");
    push.set_curve_serverkey(&z85(server, "public"))
        .expect("set the server key");
    push.set_curve_publickey(&z85(key, "public"))
        .expect("set the public key");
    push.set_curve_secretkey(&z85(key, "secret"))
        .expect("set the secret key");
    push.connect(&endpoint(port))
        .expect("connect the PUSH socket");
    push
}

fn header(sender: &str) -> LinkHeader {
    LinkHeader {
        sender: sender.into(),
        incarnation: 1,
        epoch: 1,
        shard_count: 1,
        shard: 0,
        seq: 0,
        watermark_ns: 1,
    }
}

/// Waits until `proc`'s stderr contains `needle`.
fn wait_for_log(proc: &Proc, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !proc.stderr().contains(needle) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        proc.stderr().contains(needle),
        "{} never logged {needle:?}:\n{}",
        proc.name,
        proc.stderr()
    );
}

/// Key pairs and clients files: the collector key `tap` is bound to `legit`, the processor
/// key to `processor0`; `flood` keys (one per hop) have no `names`.
struct Keys {
    tap: (String, String),
    flood_collector: (String, String),
    processor: (String, String),
    flood_processor: (String, String),
    aggregator: (String, String),
    collectors: String,
    processors: String,
}

impl Keys {
    fn new(dir: &Path) -> Keys {
        let tap = keygen("collector", dir, "tap");
        let flood_collector = keygen("collector", dir, "flood-collector");
        let processor = keygen("processor", dir, "processor");
        let flood_processor = keygen("processor", dir, "flood-processor");
        let aggregator = keygen("aggregator", dir, "aggregator");
        let collectors = clients(
            dir,
            "collectors.clients",
            &[(&tap.1, Some(&["legit"])), (&flood_collector.1, None)],
        );
        let processors = clients(
            dir,
            "processors.clients",
            &[
                (&processor.1, Some(&["processor0"])),
                (&flood_processor.1, None),
            ],
        );
        Keys {
            tap,
            flood_collector,
            processor,
            flood_processor,
            aggregator,
            collectors,
            processors,
        }
    }
}

/// An aggregator and one processor (`--collectors 1 --exit-on-eos` both), CURVE with names.
struct Pipeline {
    dir: tempfile::TempDir,
    keys: Keys,
    aggregator: Proc,
    processor: Proc,
    processor_port: u16,
    aggregator_port: u16,
    /// The `/metrics` ports of the processor and the aggregator.
    metrics: [u16; 2],
}

impl Pipeline {
    fn start(max_senders: &str) -> Pipeline {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let d = dir.path();
        let keys = Keys::new(d);
        let ports = free_ports(4);
        let metrics = |port: u16| format!("127.0.0.1:{port}");
        let aggregator = Proc::spawn(
            "aggregator",
            &bin("tapflow-aggregator"),
            &strings(&[
                "--listen",
                &endpoint(ports[0]),
                "--processors",
                "1",
                "--exit-on-eos",
                "--max-senders",
                max_senders,
                "--metrics-listen",
                &metrics(ports[2]),
                "--health-log",
                &path(&d.join("health.jsonl")),
                "--conn-log",
                &path(&d.join("conn.jsonl")),
                "--curve-key",
                &keys.aggregator.0,
                "--curve-clients",
                &keys.processors,
            ]),
            d,
        );
        let processor = Proc::spawn(
            "processor",
            &bin("tapflow-processor"),
            &strings(&[
                "--listen",
                &endpoint(ports[1]),
                "--aggregator",
                &endpoint(ports[0]),
                "--collectors",
                "1",
                "--exit-on-eos",
                "--max-senders",
                max_senders,
                "--name",
                "processor0",
                "--metrics-listen",
                &metrics(ports[3]),
                "--curve-key",
                &keys.processor.0,
                "--curve-clients",
                &keys.collectors,
                "--curve-server-key",
                &keys.aggregator.1,
            ]),
            d,
        );
        Pipeline {
            dir,
            keys,
            aggregator,
            processor,
            aggregator_port: ports[0],
            processor_port: ports[1],
            metrics: [ports[3], ports[2]],
        }
    }

    /// Neither the processor nor the aggregator has exited.
    fn still_running(&mut self) {
        std::thread::sleep(Duration::from_millis(1500));
        for p in [&mut self.processor, &mut self.aggregator] {
            let status = p.child.try_wait().expect("poll the process");
            assert!(
                status.is_none(),
                "{} exited: {status:?}\n{}",
                p.name,
                p.stderr()
            );
        }
    }

    /// Runs the real tap (`legit`, key `tap`) over `pcap` and waits for every process to exit
    /// 0: the report and the conn log.
    fn finish(mut self, pcap: &Path) -> (Value, String) {
        let mut legit = Proc::spawn(
            "legit",
            &bin("tapflow-collector"),
            &strings(&[
                "--pcap",
                &path(pcap),
                "--name",
                "legit",
                "--processor",
                &endpoint(self.processor_port),
                "--linger-ms",
                "2000",
                "--curve-key",
                &self.keys.tap.0,
                "--curve-server-key",
                &self.keys.processor.1,
            ]),
            self.dir.path(),
        );
        let deadline = Instant::now() + TIMEOUT;
        let codes = [
            legit.wait_until(deadline),
            self.processor.wait_until(deadline),
            self.aggregator.wait_until(deadline),
        ];
        assert!(
            codes.iter().all(|c| c.is_some_and(|s| s.success())),
            "{codes:?}\ncollector: {}\nprocessor: {}\naggregator: {}",
            legit.stderr(),
            self.processor.stderr(),
            self.aggregator.stderr()
        );
        let d = self.dir.path();
        let report = std::fs::read_to_string(d.join("health.jsonl"))
            .ok()
            .and_then(|s| s.lines().last().and_then(|l| serde_json::from_str(l).ok()))
            .unwrap_or(Value::Null);
        let conn = std::fs::read_to_string(d.join("conn.jsonl")).unwrap_or_default();
        (report, conn)
    }
}

/// The value of counter `metric` on the `/metrics` endpoint at `port` (0 when absent).
fn metric(port: u16, metric: &str) -> u64 {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let mut text = String::new();
    let _ = conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let _ = conn.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{metric} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until counter `name` at `port` reads `want`.
fn wait_for_metric(port: u16, name: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && metric(port, name) != want {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(metric(port, name), want, "{name} on port {port}");
}

/// The conn log of a plain run of `pcap` alone.
fn baseline(pcap: &Path) -> String {
    let run = run_pipeline(&[CollectorSpec::pcap(pcap, 1)], 1, TIMEOUT);
    assert!(run.all_exited(), "plain run: {:?}", run.aggregator);
    run.conn_log
}

fn processor_counter(report: &Value, name: &str) -> Option<u64> {
    report["processors"][0]["counters"][name].as_u64()
}

#[test]
fn a_key_cannot_end_the_stream_of_a_name_it_is_not_bound_to() {
    let Some(pcaps) = shared_pcaps() else { return };
    let pcap = pcaps.join(LEGIT);
    let plain = baseline(&pcap);
    let mut p = Pipeline::start("1024");
    let ctx = zmq::Context::new();
    // The tap's own key, speaking for another tap: a heartbeat, then its end-of-stream.
    let forger = curve_push(&ctx, &p.keys.tap.0, &p.keys.processor.1, p.processor_port);
    let mut buf = Vec::new();
    encode_heartbeat(
        &header("some-other-tap"),
        &CollectorCounters::default(),
        &mut buf,
    );
    forger.send(&buf[..], 0).expect("send the forged heartbeat");
    encode_eos(
        &header("some-other-tap"),
        &EosStatus::Complete,
        &CollectorCounters::default(),
        &mut buf,
    );
    forger
        .send(&buf[..], 0)
        .expect("send the forged end-of-stream");
    // The processor's own key, ending the stream of another processor.
    let up = curve_push(
        &ctx,
        &p.keys.processor.0,
        &p.keys.aggregator.1,
        p.aggregator_port,
    );
    UpMessage::Eos(Box::new(ProcessorAccount {
        processor: "processor9".into(),
        incarnation: 1,
        ..ProcessorAccount::default()
    }))
    .encode(&mut buf);
    up.send(&buf[..], 0).expect("send the forged account");
    // Before names were bound, both ended here, exit 0, with nothing processed.
    p.still_running();
    wait_for_log(&p.processor, "REFUSED: this collector key may not speak");
    wait_for_log(&p.aggregator, "REFUSED: this processor key may not speak");
    let (report, conn) = p.finish(&pcap);
    drop((forger, up));
    println!(
        "processor names_refused {:?}, aggregator names_refused {}; conn log {} lines (plain: {})",
        processor_counter(&report, "names_refused"),
        report["names_refused"],
        conn.lines().count(),
        plain.lines().count()
    );
    assert_eq!(
        processor_counter(&report, "names_refused"),
        Some(2),
        "{report:#}"
    );
    assert_eq!(report["names_refused"], Value::from(1), "{report:#}");
    assert_eq!(report["reconciled"], Value::Bool(true), "{report:#}");
    assert_eq!(report["complete"], Value::Bool(true), "{report:#}");
    let senders: Vec<&str> = report["collectors"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["sender"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(senders, ["legit"], "{report:#}");
    assert!(conn.lines().count() > 0);
    assert_eq!(
        conn, plain,
        "the real tap's conn log differs from a plain run's"
    );
}

#[test]
fn made_up_names_are_capped_and_the_real_tap_goes_on() {
    let Some(pcaps) = shared_pcaps() else { return };
    let pcap = pcaps.join(LEGIT);
    let plain = baseline(&pcap);
    let cap = 64;
    let p = Pipeline::start(&cap.to_string());
    let ctx = zmq::Context::new();
    // Keys without `names` may use any name: heartbeats from FLOOD made-up collectors, and
    // from FLOOD made-up processors.
    let collectors = curve_push(
        &ctx,
        &p.keys.flood_collector.0,
        &p.keys.processor.1,
        p.processor_port,
    );
    let processors = curve_push(
        &ctx,
        &p.keys.flood_processor.0,
        &p.keys.aggregator.1,
        p.aggregator_port,
    );
    let mut buf = Vec::new();
    for i in 0..FLOOD {
        encode_heartbeat(
            &header(&format!("made-up-{i}")),
            &CollectorCounters::default(),
            &mut buf,
        );
        collectors.send(&buf[..], 0).expect("send a heartbeat");
        UpMessage::Heartbeat(ProcessorHeartbeat {
            processor: format!("made-up-{i}"),
            incarnation: 1,
            ..ProcessorHeartbeat::default()
        })
        .encode(&mut buf);
        processors.send(&buf[..], 0).expect("send a heartbeat");
    }
    wait_for_log(
        &p.processor,
        "REFUSED: a new collector link past max_senders",
    );
    wait_for_log(
        &p.aggregator,
        "REFUSED: a processor incarnation past max_senders",
    );
    // Every heartbeat has arrived and was counted (on /metrics) before the real tap starts.
    let refused = (FLOOD - cap) as u64;
    wait_for_metric(
        p.metrics[0],
        "tapflow_processor_senders_refused_total",
        refused,
    );
    wait_for_metric(
        p.metrics[1],
        "tapflow_aggregator_senders_refused_total",
        refused,
    );
    // The real tap is bound to its name: the made-up ones cannot crowd it out.
    let (report, conn) = p.finish(&pcap);
    drop((collectors, processors));
    let collector_rows = report["collectors"].as_array().map_or(0, Vec::len);
    let dead = report["dead_processors"].as_array().map_or(0, Vec::len);
    println!(
        "processor senders_refused {:?}, collectors in the report {collector_rows}; aggregator senders_refused {}, dead processors {dead}",
        processor_counter(&report, "senders_refused"),
        report["senders_refused"]
    );
    assert_eq!(
        processor_counter(&report, "senders_refused"),
        Some(refused),
        "{report:#}"
    );
    assert!(collector_rows <= cap + 1, "{collector_rows} collectors");
    assert!(dead <= cap, "{dead} dead processors");
    assert_eq!(
        report["senders_refused"].as_u64(),
        Some(refused),
        "{report:#}"
    );
    let legit = report["collectors"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["sender"] == "legit"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(legit["summaries_reconcile"], Value::Bool(true), "{legit:#}");
    assert_eq!(
        conn, plain,
        "the real tap's conn log differs from a plain run's"
    );
}
