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

/// `tapflow_{component}_{metric}_total` (summed over labels) from /metrics on port 9600 in `ns`;
/// `None` while it is not served (or has no such counter).
fn try_counter(ns: &str, component: &str, metric: &str) -> Option<u64> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-sf",
            "http://127.0.0.1:9600/metrics",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let name = format!("tapflow_{component}_{metric}_total");
    let values: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

fn counter(ns: &str, component: &str, metric: &str) -> u64 {
    let value = try_counter(ns, component, metric);
    assert!(
        value.is_some(),
        "{ns} serves no tapflow_{component}_{metric}_total"
    );
    value.expect("a counter")
}

/// The tap node's capture interface, `eth1`, and `peer`, where its traffic comes from; without
/// IPv6, so that the datagrams sent are all it carries.
fn tap_interface(ns: &str) {
    for key in ["all", "default"] {
        let write = format!("echo 1 > /proc/sys/net/ipv6/conf/{key}/disable_ipv6");
        run_ok(
            Command::new("ip").args(["netns", "exec", ns, "sh", "-c", &write]),
            "turn IPv6 off in the tap node's namespace",
        );
    }
    ip(&[
        "-n", ns, "link", "add", "eth1", "type", "veth", "peer", "name", "peer",
    ]);
    for dev in ["eth1", "peer"] {
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
    ip(&["-n", ns, "addr", "add", "10.98.0.1/24", "dev", "peer"]);
    let neigh = [
        "neigh",
        "add",
        "10.98.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "peer",
    ];
    ip(&[&["-n", ns][..], &neigh[..]].concat());
}

/// `n` flows (one datagram each, from `n` source ports) out of `peer` in `ns`.
fn send_flows(ns: &str, n: usize) {
    let script = format!(
        "import socket, time\n\
         for i in range({n}):\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    \
         s.bind(('10.98.0.1', 41000 + i))\n    s.sendto(b'tapflow', ('10.98.0.2', 9999))\n    \
         s.close()\n    time.sleep(0.002)\n"
    );
    run_ok(
        Command::new("ip").args(["netns", "exec", ns, "python3", "-c", &script]),
        "send datagrams",
    );
}

/// The four pods, running.
struct Pods {
    /// Removed (and what runs in it killed) when the pods are dropped.
    _net: Net,
    namespaces: [String; 4],
    procs: [Proc; 4],
    /// The aggregator's /var, over which its volume's log and state directories lie.
    var: PathBuf,
}

const AGGREGATOR: usize = 0;
const COLLECTOR: usize = 3;

impl Pods {
    /// The aggregator, processors 0 and 1 and the collector on tap-node-1, in that order, each
    /// with /metrics on its own loopback (the only thing added to what the manifests give).
    fn start(docs: &[Value], secrets: &[Value], dir: &Path) -> Pods {
        let mut net = Net::new();
        let pods = [
            ("StatefulSet", "tapflow-aggregator", 0, 20),
            ("StatefulSet", "tapflow-processor", 0, 10),
            ("StatefulSet", "tapflow-processor", 1, 11),
            ("DaemonSet", "tapflow-collector", 0, 30),
        ];
        let namespaces =
            pods.map(|(_, name, i, host)| net.pod(&format!("{}{i}", &name[8..9]), host));
        tap_interface(&namespaces[COLLECTOR]);
        let mut var = PathBuf::new();
        let procs = std::array::from_fn(|k| {
            let (kind, name, ordinal, _) = pods[k];
            let mut extra = vec!["--metrics-listen", "127.0.0.1:9600"];
            if k == COLLECTOR {
                extra.push("--immediate");
            }
            let at = (kind, name, ordinal);
            let (proc, pod_var) = start_pod(docs, secrets, at, &namespaces[k], &extra, dir);
            if k == AGGREGATOR {
                var = pod_var;
            }
            proc
        });
        Pods {
            _net: net,
            namespaces,
            procs,
            var,
        }
    }

    fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|p| format!("--- {}:\n{}", p.name, p.stderr()))
            .collect()
    }

    fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn() -> bool) {
        let deadline = Instant::now() + timeout;
        while !done() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(done(), "{what}\n{}", self.logs());
    }

    /// SIGTERM to each, as the kubelet stops pods, in the order of the pipeline.
    fn stop(&self) {
        for k in [COLLECTOR, 1, 2, AGGREGATOR] {
            let pid = self.procs[k].child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[test]
fn manifests_run_as_pods_carry_tap_traffic_to_both_processors() {
    if !is_root() {
        return;
    }
    let docs = yaml_docs(&render_yaml());
    let dir = tempfile::tempdir().expect("create a temp dir");
    let (_, secret_docs) = secrets(dir.path(), "tap-node-1");
    let pods = Pods::start(&docs, &secret_docs, dir.path());
    let [agg, p0, p1, tap] = pods.namespaces.clone();
    let collector = &pods.procs[COLLECTOR];
    pods.wait_for("the capture did not open", Duration::from_secs(20), || {
        collector.stderr().contains("capture open")
    });
    send_flows(&tap, 64);
    let received = |ns: &str| try_counter(ns, "processor", "summaries_received").unwrap_or(0);
    pods.wait_for(
        "the processors did not get 64 summaries",
        Duration::from_secs(30),
        || received(&p0) + received(&p1) >= 64,
    );
    let (r0, r1) = (received(&p0), received(&p1));
    eprintln!("summaries received: processor 0 {r0}, processor 1 {r1}");
    assert_eq!(r0 + r1, 64, "{}", pods.logs());
    assert!(r0 > 0 && r1 > 0, "one processor got every flow: {r0} {r1}");
    // Every link authenticated (CURVE) and every name accepted (bound to its key).
    for ns in [&p0, &p1] {
        for refused in [
            "auth_rejected",
            "names_refused",
            "summaries_misrouted",
            "messages_misrouted",
        ] {
            assert_eq!(
                counter(ns, "processor", refused),
                0,
                "{ns}: {refused}\n{}",
                pods.logs()
            );
        }
        assert_eq!(
            counter(ns, "processor", "auth_accepted"),
            1,
            "{ns}\n{}",
            pods.logs()
        );
    }
    for refused in ["auth_rejected", "names_refused"] {
        assert_eq!(
            counter(&agg, "aggregator", refused),
            0,
            "{refused}\n{}",
            pods.logs()
        );
    }
    // The two processors' data links, and the control channel's three subscribers: both
    // processors and the collector (its key is in the aggregator's clients: keys.sh).
    assert_eq!(
        counter(&agg, "aggregator", "auth_accepted"),
        5,
        "{}",
        pods.logs()
    );
    // Stopped, the processors close their flows and the aggregator writes them to its volume.
    pods.stop();
    let conn_log = pods.var.join("log/tapflow/conn.jsonl");
    let lines = || {
        std::fs::read_to_string(&conn_log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    pods.wait_for(
        "conn.jsonl on the aggregator's volume",
        Duration::from_secs(30),
        || lines() >= 64,
    );
    assert_eq!(lines(), 64, "{}", pods.logs());
    let health =
        std::fs::read_to_string(pods.var.join("log/tapflow/health.jsonl")).unwrap_or_default();
    let report = health
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["kind"] == "accounting");
    assert!(
        report.is_some(),
        "no accounting report: {health}\n{}",
        pods.logs()
    );
    let report = report.expect("the accounting report");
    assert_eq!(report["reconciled"], true, "{report}");
    assert_eq!(report["collectors"][0]["sender"], "tap-node-1", "{report}");
}
