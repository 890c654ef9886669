//! deploy/k8s run as a cluster would run it, without a cluster: each pod (the aggregator, two
//! processors, the collector on a tap node) in its own network namespace on one bridge, its
//! ConfigMaps and Secrets (made by keys.sh) at the pods' paths, the StatefulSets' stable names
//! resolving to the pods (an /etc/hosts per pod), each process under its container's user,
//! capabilities and no_new_privs, started with the manifests' own command, args and env.
//! Packets sent to the tap reach both processors over CURVE, by the processor set, under the
//! names the keys are bound to.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::k8s::{
    etc_overlay, find, pod_argv, pod_env, pod_files, render_yaml, run_ok, secrets, spawn_in,
    yaml_docs,
};
use tapflow_integration_tests::{is_root, Proc};

fn ip(args: &[&str]) {
    run_ok(Command::new("ip").args(args), &format!("ip {args:?}"));
}

/// Network namespaces on a bridge, removed on drop: `{tag}n` holds the bridge; each pod has
/// `eth0` at its address.
struct Net {
    tag: String,
    pods: Vec<String>,
}

impl Net {
    fn new() -> Net {
        let tag = format!("tfc{}", std::process::id());
        let bridge = format!("{tag}n");
        ip(&["netns", "add", &bridge]);
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        Net {
            tag,
            pods: Vec::new(),
        }
    }

    /// A pod's namespace, `eth0` at 10.97.0.`host`; its name.
    fn pod(&mut self, pod: &str, host: u8) -> String {
        let (bridge, ns) = (format!("{}n", self.tag), format!("{}{pod}", self.tag));
        ip(&["netns", "add", &ns]);
        self.pods.push(ns.clone());
        let port = format!("v{host}");
        ip(&[
            "-n", &bridge, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ]);
        ip(&["-n", &bridge, "link", "set", &port, "master", "br0", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.97.0.{host}/24"),
            "dev",
            "eth0",
        ]);
        for dev in ["eth0", "lo"] {
            ip(&["-n", &ns, "link", "set", dev, "up"]);
        }
        ns
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.pods.iter().chain([&format!("{}n", self.tag)]) {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

const HOSTS: &str = "127.0.0.1 localhost\n\
    10.97.0.10 tapflow-processor-0.tapflow-processor.tapflow.svc.cluster.local\n\
    10.97.0.11 tapflow-processor-1.tapflow-processor.tapflow.svc.cluster.local\n\
    10.97.0.20 tapflow-aggregator-0.tapflow-aggregator.tapflow.svc.cluster.local\n";

/// Starts pod `ordinal` of workload `kind`/`name` in namespace `ns`, with `extra` args; the
/// directory its /var is laid over from (its volume's log and state directories).
fn start_pod(
    docs: &[Value],
    secrets: &[Value],
    (kind, name, ordinal): (&str, &str, u32),
    ns: &str,
    extra: &[&str],
    dir: &Path,
) -> (Proc, PathBuf) {
    let w = find(docs, kind, name, None);
    let pod = &w["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let files = pod_files(
        docs,
        secrets,
        pod,
        w["metadata"]["namespace"].as_str().unwrap_or_default(),
    );
    let at = dir.join(format!("{name}-{ordinal}"));
    let (upper, work) = etc_overlay(&at, &files, &[("hosts", HOSTS)]);
    let (var_upper, var_work) = (at.join("var-upper"), at.join("var-work"));
    for d in [
        var_upper.join("log/tapflow"),
        var_upper.join("lib/tapflow"),
        var_work.clone(),
    ] {
        std::fs::create_dir_all(&d).expect("create the pod's volume directories");
    }
    let mut argv = vec!["netns".to_owned(), "exec".to_owned(), ns.to_owned()];
    argv.extend(pod_argv(
        c,
        &[("/etc", &upper, &work), ("/var", &var_upper, &var_work)],
    ));
    argv.extend(extra.iter().map(|a| a.to_string()));
    let proc = spawn_in(
        &format!("{name}-{ordinal}"),
        &argv,
        &pod_env(w, c, ordinal),
        dir,
    );
    (proc, var_upper)
}

/// `tapflow_{component}_{metric}_total` (summed over labels) from /metrics on port 9600 in `ns`.
fn counter(ns: &str, component: &str, metric: &str) -> u64 {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-sf",
            "http://127.0.0.1:9600/metrics",
        ])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let name = format!("tapflow_{component}_{metric}_total");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn manifests_run_as_pods_carry_tap_traffic_to_both_processors() {
    if !is_root() {
        return;
    }
    let docs = yaml_docs(&render_yaml());
    let dir = tempfile::tempdir().expect("create a temp dir");
    let d = dir.path();
    let (_, secret_docs) = secrets(d, "tap-node-1");
    let mut net = Net::new();
    let (agg_ns, p0_ns, p1_ns, tap_ns) = (
        net.pod("a", 20),
        net.pod("p0", 10),
        net.pod("p1", 11),
        net.pod("t", 30),
    );
    // The tap node's capture interface, eth1, and where its traffic comes from; without IPv6,
    // so that the datagrams below are all it carries.
    for key in ["all", "default"] {
        let write = format!("echo 1 > /proc/sys/net/ipv6/conf/{key}/disable_ipv6");
        run_ok(
            Command::new("ip").args(["netns", "exec", &tap_ns, "sh", "-c", &write]),
            "turn IPv6 off in the tap node's namespace",
        );
    }
    ip(&[
        "-n", &tap_ns, "link", "add", "eth1", "type", "veth", "peer", "name", "peer",
    ]);
    for dev in ["eth1", "peer"] {
        ip(&["-n", &tap_ns, "link", "set", dev, "up"]);
    }
    ip(&["-n", &tap_ns, "addr", "add", "10.98.0.1/24", "dev", "peer"]);
    ip(&[
        "-n",
        &tap_ns,
        "neigh",
        "add",
        "10.98.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "peer",
    ]);
    // Only /metrics is added to what the manifests give, on each pod's own loopback.
    let metrics = ["--metrics-listen", "127.0.0.1:9600"];
    let (aggregator, var) = start_pod(
        &docs,
        &secret_docs,
        ("StatefulSet", "tapflow-aggregator", 0),
        &agg_ns,
        &metrics,
        d,
    );
    let (p0, _) = start_pod(
        &docs,
        &secret_docs,
        ("StatefulSet", "tapflow-processor", 0),
        &p0_ns,
        &metrics,
        d,
    );
    let (p1, _) = start_pod(
        &docs,
        &secret_docs,
        ("StatefulSet", "tapflow-processor", 1),
        &p1_ns,
        &metrics,
        d,
    );
    let collector_extra = ["--metrics-listen", "127.0.0.1:9600", "--immediate"];
    let (collector, _) = start_pod(
        &docs,
        &secret_docs,
        ("DaemonSet", "tapflow-collector", 0),
        &tap_ns,
        &collector_extra,
        d,
    );
    let all = [&aggregator, &p0, &p1, &collector];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !collector.stderr().contains("capture open") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = || {
        all.iter()
            .map(|p| format!("--- {}:\n{}", p.name, p.stderr()))
            .collect::<String>()
    };
    assert!(collector.stderr().contains("capture open"), "{}", logs());
    // 64 flows (one datagram each, from 64 source ports), so both processors get some.
    let script = "import socket, time\n\
        for i in range(64):\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    \
        s.bind(('10.98.0.1', 41000 + i))\n    s.sendto(b'tapflow', ('10.98.0.2', 9999))\n    \
        s.close()\n    time.sleep(0.002)\n";
    run_ok(
        Command::new("ip").args(["netns", "exec", &tap_ns, "python3", "-c", script]),
        "send datagrams",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let received = |ns: &str| counter(ns, "processor", "summaries_received");
    while received(&p0_ns) + received(&p1_ns) < 64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (r0, r1) = (received(&p0_ns), received(&p1_ns));
    eprintln!("summaries received: processor 0 {r0}, processor 1 {r1}");
    assert_eq!(r0 + r1, 64, "{}", logs());
    assert!(r0 > 0 && r1 > 0, "one processor got every flow: {r0} {r1}");
    for (ns, component) in [
        (&p0_ns, "processor"),
        (&p1_ns, "processor"),
        (&agg_ns, "aggregator"),
    ] {
        for refused in ["auth_rejected", "names_refused", "misrouted"] {
            assert_eq!(
                counter(ns, component, refused),
                0,
                "{component} {ns}: {refused}\n{}",
                logs()
            );
        }
    }
    assert_eq!(
        counter(&agg_ns, "aggregator", "auth_accepted"),
        2,
        "{}",
        logs()
    );
    for ns in [&p0_ns, &p1_ns] {
        assert_eq!(
            counter(ns, "processor", "auth_accepted"),
            1,
            "{ns}\n{}",
            logs()
        );
    }
    // Stopping the pods (SIGTERM, as the kubelet does) ends the streams: the processors close
    // their flows and the aggregator writes them to its volume.
    for p in [&collector, &p0, &p1, &aggregator] {
        let _ = Command::new("kill")
            .args(["-TERM", &p.child.id().to_string()])
            .status();
        // one at a time, in the order of the pipeline
        std::thread::sleep(Duration::from_millis(500));
    }
    let conn_log = var.join("log/tapflow/conn.jsonl");
    let lines = || {
        std::fs::read_to_string(&conn_log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines() < 64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        lines(),
        64,
        "conn.jsonl on the aggregator's volume\n{}",
        logs()
    );
    let health = std::fs::read_to_string(var.join("log/tapflow/health.jsonl")).unwrap_or_default();
    let report = health
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["kind"] == "accounting");
    assert!(
        report.is_some(),
        "no accounting report: {health}\n{}",
        logs()
    );
    let report = report.expect("the accounting report");
    assert_eq!(report["reconciled"], true, "{report}");
    assert_eq!(report["collectors"][0]["sender"], "tap-node-1", "{report}");
}
