//! Helpers for the processor-set tests (`tests/scaling.rs`): a generated capture, the set file,
//! the processes of a cluster routed by it, and the conn log read by five-tuple.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{bin, endpoint, free_ports, plain_unless_curve, Proc};

/// Packet time of `tapflow-gen`'s first packet (its fixed start), in seconds.
pub const T0: f64 = 1_704_067_200.0;
/// Packets per second of capture time in the generated captures.
pub const RATE: u32 = 6_000;

pub fn generate(dir: &Path, packets: u32, flows: u32) -> PathBuf {
    let out = dir.join("scaling.pcap");
    let ok = Command::new(bin("tapflow-gen"))
        .args([
            "--packets",
            &packets.to_string(),
            "--flows",
            &flows.to_string(),
            "--seed",
            "8",
        ])
        .args(["--rate", &RATE.to_string(), "--out"])
        .arg(&out)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "tapflow-gen failed");
    out
}

/// The processor-set file: `initial` members at first, then the changes given.
pub fn write_set(path: &Path, initial: &str, ports: &[u16], changes: &[(&str, u16, f64)]) {
    let mut text = format!("initial = {initial}\n[processors]\n");
    for (id, port) in ports.iter().enumerate() {
        text.push_str(&format!("{id} = \"{}\"\n", endpoint(*port)));
    }
    for (what, id, at) in changes {
        text.push_str(&format!(
            "[[change]]\n{what} = {id}\nswitch_at = {:.3}\n",
            T0 + at
        ));
    }
    std::fs::write(path, text).expect("write the processor-set file");
}

/// Three processor endpoints, an aggregator's, and the set file, in a test's directory.
pub struct Cluster {
    pub dir: PathBuf,
    pub set: PathBuf,
    pub proc_ports: Vec<u16>,
    pub agg_port: u16,
    /// Collectors (taps) each processor waits for.
    pub collectors: usize,
}

impl Cluster {
    pub fn new(dir: &Path, collectors: usize) -> Cluster {
        let ports = free_ports(4);
        Cluster {
            dir: dir.to_path_buf(),
            set: dir.join("processors.toml"),
            proc_ports: ports[..3].to_vec(),
            agg_port: ports[3],
            collectors,
        }
    }

    pub fn log(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    pub fn aggregator(&self) -> Proc {
        let args = vec![
            "--listen".into(),
            endpoint(self.agg_port),
            "--processor-set".into(),
            self.set.display().to_string(),
            "--exit-on-eos".into(),
            "--health-log".into(),
            self.log("health.jsonl"),
            "--conn-log".into(),
            self.log("conn.jsonl"),
            "--alerts-log".into(),
            self.log("alerts.jsonl"),
        ];
        spawn("aggregator", "tapflow-aggregator", args, &self.dir)
    }

    pub fn processor(&self, id: usize) -> Proc {
        let args = vec![
            "--listen".into(),
            endpoint(self.proc_ports[id]),
            "--aggregator".into(),
            endpoint(self.agg_port),
            "--collectors".into(),
            self.collectors.to_string(),
            "--exit-on-eos".into(),
            "--name".into(),
            format!("processor{id}"),
            "--processor-set".into(),
            self.set.display().to_string(),
            "--id".into(),
            id.to_string(),
            "--heartbeat-ms".into(),
            "200".into(),
        ];
        spawn(
            &format!("processor{id}"),
            "tapflow-processor",
            args,
            &self.dir,
        )
    }

    pub fn collector(&self, fifo: &Path, name: &str, extra: &[&str]) -> Proc {
        let mut args: Vec<String> = vec![
            "--pcap".into(),
            fifo.display().to_string(),
            "--processor-set".into(),
            self.set.display().to_string(),
            "--name".into(),
            name.into(),
            "--heartbeat-ms".into(),
            "200".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        spawn(name, "tapflow-collector", args, &self.dir)
    }
}

pub fn spawn(name: &str, program: &str, mut args: Vec<String>, dir: &Path) -> Proc {
    plain_unless_curve(&mut args);
    Proc::spawn(name, &bin(program), &args, dir)
}

pub fn hup(p: &Proc) {
    let ok = Command::new("kill")
        .args(["-HUP", &p.child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -HUP {} failed", p.name);
}

pub fn wait_for(p: &Proc, text: &str, deadline: Instant) {
    while !p.stderr().contains(text) {
        assert!(
            Instant::now() < deadline,
            "{}: no {text:?}: {}",
            p.name,
            p.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `name=value` of the first log line containing `message`.
pub fn log_field(log: &str, message: &str, name: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains(message))?;
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

pub fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub fn packets(conns: &[Value]) -> u64 {
    conns
        .iter()
        .map(|c| c["orig_pkts"].as_u64().unwrap_or(0) + c["resp_pkts"].as_u64().unwrap_or(0))
        .sum()
}

#[derive(Debug, Default)]
pub struct Tuple {
    pub records: u64,
    pub packets: u64,
    pub continued: u64,
    /// Records with any `tapflow_split` mark.
    pub marked: u64,
}

/// Records by five-tuple, endpoints in either order (a continued half may name the other
/// side as the originator).
pub fn by_tuple(conns: &[Value]) -> BTreeMap<String, Tuple> {
    let mut out: BTreeMap<String, Tuple> = BTreeMap::new();
    for c in conns {
        let a = format!("{}:{}", c["id.orig_h"], c["id.orig_p"]);
        let b = format!("{}:{}", c["id.resp_h"], c["id.resp_p"]);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let t = out.entry(format!("{} {lo} {hi}", c["proto"])).or_default();
        t.records += 1;
        t.packets += packets(std::slice::from_ref(c));
        t.marked += u64::from(c.get("tapflow_split").is_some());
        t.continued += u64::from(
            c["tapflow_split"]
                .as_str()
                .is_some_and(|s| s.contains("continued")),
        );
    }
    out
}

/// `syn_flood` episodes (start events) by victim.
pub fn floods(alerts: &[Value]) -> Vec<String> {
    alerts
        .iter()
        .filter(|a| a["kind"] == "syn_flood" && a["event"] == "end")
        .map(|a| a["dst"].to_string())
        .collect()
}

/// Waits for every process (until `deadline`): each must exit 0 without a panic.
pub fn wait_all_ok(procs: &mut [Proc], deadline: Instant) {
    for p in procs {
        let status = p.wait_until(deadline);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "{} did not exit 0: {}",
            p.name,
            p.stderr()
        );
        assert!(
            !p.stderr().contains("panicked"),
            "{}: {}",
            p.name,
            p.stderr()
        );
    }
}

/// The aggregator's last accounting report in `dir/health.jsonl`.
pub fn accounting_report(dir: &Path) -> Value {
    let health = std::fs::read_to_string(dir.join("health.jsonl")).unwrap_or_default();
    let report = lines(&health)
        .into_iter()
        .rev()
        .find(|v| v["kind"] == "accounting");
    assert!(report.is_some(), "no accounting report in:\n{health}");
    report.expect("the accounting report in the health log")
}
