//! deploy/k8s, checked offline: `kubectl kustomize` renders it and kubernetes-validate --strict
//! (bundled schemas) accepts what it renders and the Secrets deploy/k8s/keys.sh makes; the
//! shapes the design rests on hold (capabilities, Pod Security levels, the processor set naming
//! the StatefulSet's stable names, one image); each binary accepts its ConfigMap with
//! `--check-config` when it reads it, and its keys, at the pod's paths under the pod's user and
//! capabilities; and the collector, under exactly the capabilities its manifest grants, captures
//! in a network namespace.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::k8s::{
    etc_overlay, find, pod_argv, pod_env, pod_files, render_yaml, run_ok, s, secrets, spawn_in,
    toml_setting, venv, yaml_docs,
};
use tapflow_integration_tests::{is_root, repo_root, Proc};

/// kubernetes-validate --strict over `yaml`: (success, what it printed).
fn validate(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("rendered.yaml");
    std::fs::write(&path, yaml).expect("write the rendered YAML");
    let out = Command::new(venv().join("bin/kubernetes-validate"))
        .args(["--strict", "--quiet"])
        .arg(&path)
        .output()
        .expect("run kubernetes-validate (deploy/install-deps.sh --test installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn workloads(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter(|d| d["kind"] == "DaemonSet" || d["kind"] == "StatefulSet")
        .collect()
}

#[test]
fn renders_and_passes_strict_schema_validation() {
    let yaml = render_yaml();
    let (ok, text) = validate(&yaml);
    assert!(
        ok,
        "kubernetes-validate --strict refused the render:\n{text}"
    );
    let dir = tempfile::tempdir().expect("create a temp dir");
    let (secret_yaml, secret_docs) = secrets(dir.path(), "tap-node-1");
    assert_eq!(secret_docs.len(), 3, "{secret_yaml}");
    let (ok, text) = validate(&secret_yaml);
    assert!(
        ok,
        "kubernetes-validate --strict refused keys.sh's Secrets:\n{text}"
    );
    // --strict bites: a field the schema does not have is refused.
    let wrong = yaml.replacen(
        "hostNetwork: true",
        "hostNetwork: true\n      hostNetworking: true",
        1,
    );
    assert_ne!(wrong, yaml, "the render has no hostNetwork to alter");
    assert!(!validate(&wrong).0, "an unknown field passed --strict");
}

#[test]
fn manifests_grant_what_the_design_says() {
    let docs = yaml_docs(&render_yaml());
    let ds = find(&docs, "DaemonSet", "tapflow-collector", None);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["nodeSelector"]["tapflow.io/tap"], "true");
    let sc = &pod["containers"][0]["securityContext"];
    let added: BTreeSet<&str> = sc["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    assert_eq!(added, BTreeSet::from(["NET_ADMIN", "NET_RAW"]));
    // The collectors' namespace must admit NET_ADMIN and hostNetwork: only `privileged` does.
    let tap_ns = find(&docs, "Namespace", s(&ds["metadata"]["namespace"]), None);
    assert_eq!(
        tap_ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let version = env!("CARGO_PKG_VERSION");
    for w in workloads(&docs) {
        let pod = &w["spec"]["template"]["spec"];
        let name = s(&w["metadata"]["name"]);
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        for c in pod["containers"].as_array().into_iter().flatten() {
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{name}"
            );
            assert_eq!(
                s(&c["image"]),
                format!("tapflow:{version}"),
                "{name}: the Dockerfile's image"
            );
            if w["kind"] == "StatefulSet" {
                assert!(
                    sc["capabilities"].get("add").is_none(),
                    "{name} adds capabilities"
                );
                assert_ne!(pod["hostNetwork"], true, "{name}");
            }
        }
        if w["kind"] == "StatefulSet" {
            let ns = find(&docs, "Namespace", s(&w["metadata"]["namespace"]), None);
            assert_eq!(
                ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
                "baseline"
            );
        }
    }
    let agg = find(&docs, "StatefulSet", "tapflow-aggregator", None);
    assert_eq!(
        agg["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "data"
    );
}

/// The stable name of pod `ordinal` of StatefulSet `sts`, at its container port named zmq.
fn stable_endpoint(docs: &[Value], sts: &str, ordinal: u64) -> String {
    let set = find(docs, "StatefulSet", sts, None);
    let (ns, svc) = (
        s(&set["metadata"]["namespace"]),
        s(&set["spec"]["serviceName"]),
    );
    let service = find(docs, "Service", svc, Some(ns));
    assert_eq!(
        service["spec"]["clusterIP"], "None",
        "{svc} must be headless"
    );
    let labels = &set["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"]
        .as_object()
        .into_iter()
        .flatten()
    {
        assert_eq!(&labels[k], v, "{svc} does not select {sts}'s pods");
    }
    let port = set["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "zmq")
        .and_then(|p| p["containerPort"].as_u64())
        .expect("a container port named zmq");
    format!("tcp://{sts}-{ordinal}.{svc}.{ns}.svc.cluster.local:{port}")
}

#[test]
fn processor_set_names_the_statefulsets_stable_names() {
    let docs = yaml_docs(&render_yaml());
    let sets: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            d["kind"] == "ConfigMap"
                && s(&d["metadata"]["name"]).starts_with("tapflow-processor-set")
        })
        .collect();
    assert_eq!(sets.len(), 2, "one processor set per namespace");
    let text = s(&sets[0]["data"]["processor-set.toml"]);
    assert_eq!(sets[1]["data"], sets[0]["data"], "the two copies differ");
    let set =
        tapflow_proto::procset::ProcessorSet::parse(text, true).expect("parse the processor set");
    let replicas = find(&docs, "StatefulSet", "tapflow-processor", None)["spec"]["replicas"]
        .as_u64()
        .expect("the processors' replicas");
    let members: Vec<u64> = set
        .latest()
        .table
        .members()
        .iter()
        .copied()
        .map(u64::from)
        .collect();
    assert_eq!(
        members,
        (0..replicas).collect::<Vec<_>>(),
        "the set is not the StatefulSet's pods"
    );
    for id in set.all_members() {
        let want = stable_endpoint(&docs, "tapflow-processor", u64::from(id));
        assert_eq!(set.endpoint(id), Some(want.as_str()), "processor {id}");
    }
    let pcfg =
        s(&find(&docs, "ConfigMap", "tapflow-processor-config", None)["data"]["processor.toml"]);
    let agg = stable_endpoint(&docs, "tapflow-aggregator", 0);
    assert!(
        pcfg.contains(&format!("aggregator = \"{agg}\"")),
        "processor.toml must name {agg}"
    );
}

#[test]
fn configmaps_pass_check_config_at_the_pods_paths_and_users() {
    if !is_root() {
        return;
    }
    let docs = yaml_docs(&render_yaml());
    let dir = tempfile::tempdir().expect("create a temp dir");
    let (_, secret_docs) = secrets(dir.path(), "tap-node-1");
    for w in workloads(&docs) {
        let name = s(&w["metadata"]["name"]);
        let pod = &w["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let files = pod_files(&docs, &secret_docs, pod, s(&w["metadata"]["namespace"]));
        let at = dir.path().join(name);
        let (upper, work) = etc_overlay(&at, &files, &[]);
        let argv = pod_argv(c, &[("/etc", &upper, &work)]);
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .arg("--check-config")
            .envs(pod_env(w, c, 0))
            .output()
            .expect("run --check-config");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "{name}: --check-config {}:\n{stdout}\n{stderr}",
            out.status
        );
        assert!(
            stdout.contains("/etc/tapflow/set/processor-set.toml"),
            "{name}:\n{stdout}"
        );
        // Every setting of its config file is in force, with the file's value.
        let config = files
            .iter()
            .find(|f| f.path.starts_with("/etc/tapflow/config"))
            .expect("a config file in the pod");
        let resolved: Vec<&str> = stdout.lines().collect();
        let text = String::from_utf8_lossy(&config.bytes);
        let settings: Vec<String> = text.lines().filter_map(toml_setting).collect();
        for setting in &settings {
            assert!(
                resolved.contains(&setting.as_str()),
                "{name}: {setting:?} not in force:\n{stdout}"
            );
        }
        // And the name the pod's env gives it (the node's, the pod's), where it has one.
        for (_, value) in pod_env(w, c, 0).iter().filter(|(k, _)| k == "TAPFLOW_NAME") {
            let want = format!("name = \"{value}\"");
            assert!(
                resolved.contains(&want.as_str()),
                "{name}: {want:?} not in force:\n{stdout}"
            );
        }
        eprintln!(
            "{name}: --check-config passed, {} settings in force as written",
            settings.len()
        );
    }
}

/// A network namespace (the tap node's host network) with a veth pair: `eth1`, the tap the
/// collector's ConfigMap names, and `peer`, where packets are sent from; removed on drop.
struct TapNode {
    name: String,
}

fn ip(args: &[&str]) {
    run_ok(Command::new("ip").args(args), &format!("ip {args:?}"));
}

impl TapNode {
    fn new() -> TapNode {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("tfk8s{}-{n}", std::process::id());
        ip(&["netns", "add", &name]);
        let node = TapNode { name };
        let n = node.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"]);
        ip(&[
            "-n", n, "link", "add", "eth1", "type", "veth", "peer", "name", "peer",
        ]);
        for dev in ["eth1", "peer"] {
            ip(&["-n", n, "link", "set", dev, "up"]);
        }
        ip(&["-n", n, "addr", "add", "10.98.0.1/24", "dev", "peer"]);
        ip(&[
            "-n",
            n,
            "neigh",
            "add",
            "10.98.0.2",
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "peer",
        ]);
        node
    }

    /// `n` UDP datagrams out of `peer`, so they arrive on eth1.
    fn send_udp(&self, n: usize) {
        let script = format!(
            "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('10.98.0.1', 40000))\nfor i in range({n}):\n    \
             s.sendto(b'tapflow %d' % i, ('10.98.0.2', 9999))\n    time.sleep(0.002)\n"
        );
        run_ok(
            Command::new("ip").args(["netns", "exec", &self.name, "python3", "-c", &script]),
            "send datagrams in the namespace",
        );
    }

    /// The collector's counter `tapflow_collector_NAME_total` from its /metrics, or None.
    fn counter(&self, port: u16, name: &str) -> Option<u64> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "curl", "-sf"])
            .arg(format!("http://127.0.0.1:{port}/metrics"))
            .output()
            .ok()?;
        let metric = format!("tapflow_collector_{name}_total ");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(&metric).and_then(|v| v.trim().parse().ok()))
    }
}

impl Drop for TapNode {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// /proc/PID/status's `key` line (e.g. CapBnd). `ip netns exec`, unshare, sh and setpriv each
/// exec the next, so the spawned pid ends as the collector's.
fn status_of(pid: u32, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// The DaemonSet's collector, its container's securityContext passed through `security`, started
/// as its pod would be on a tap node (a network namespace with eth1), its key files owned by
/// `key_owner` (a Secret's are root's): the node, the collector, and the directory its files
/// are in.
fn start_collector(
    security: impl Fn(&mut Value),
    key_owner: u32,
    extra: &[&str],
) -> (TapNode, Proc, tempfile::TempDir) {
    let docs = yaml_docs(&render_yaml());
    let dir = tempfile::tempdir().expect("create a temp dir");
    let (_, secret_docs) = secrets(dir.path(), "tap-node-1");
    let ds = find(&docs, "DaemonSet", "tapflow-collector", None);
    let pod = &ds["spec"]["template"]["spec"];
    let mut c = pod["containers"][0].clone();
    security(&mut c["securityContext"]);
    let files = pod_files(&docs, &secret_docs, pod, s(&ds["metadata"]["namespace"]));
    // The processors' names resolve (to nothing listening): the collector queues and drops.
    let hosts = "127.0.0.1 localhost\n\
                 127.0.0.1 tapflow-processor-0.tapflow-processor.tapflow.svc.cluster.local\n\
                 127.0.0.1 tapflow-processor-1.tapflow-processor.tapflow.svc.cluster.local\n";
    let (upper, work) = etc_overlay(dir.path(), &files, &[("hosts", hosts)]);
    for f in files
        .iter()
        .filter(|f| f.path.starts_with("/etc/tapflow/keys"))
    {
        let at = upper.join(f.path.strip_prefix("/etc").expect("a path under /etc"));
        std::os::unix::fs::chown(&at, Some(key_owner), Some(key_owner)).expect("chown a key file");
    }
    let node = TapNode::new();
    let mut argv = vec!["netns".to_owned(), "exec".to_owned(), node.name.clone()];
    argv.extend(pod_argv(&c, &[("/etc", &upper, &work)]));
    // Only to read its counters (on the namespace's own loopback, which nothing else uses);
    // also the capture without kernel blocks, so none wait.
    argv.extend([
        "--metrics-listen".into(),
        format!("127.0.0.1:{METRICS}"),
        "--immediate".into(),
    ]);
    argv.extend(extra.iter().map(|a| a.to_string()));
    let collector = spawn_in("collector", &argv, &pod_env(ds, &c, 0), dir.path());
    (node, collector, dir)
}

const METRICS: u16 = 9601;

#[test]
fn collector_captures_with_only_the_capabilities_its_manifest_grants() {
    if !is_root() {
        return;
    }
    let (node, mut collector, _dir) = start_collector(|_| {}, 0, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !collector.stderr().contains("capture open") && Instant::now() < deadline {
        if let Ok(Some(status)) = collector.child.try_wait() {
            panic!("the collector exited ({status}): {}", collector.stderr());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        collector.stderr().contains("capture open"),
        "{}",
        collector.stderr()
    );
    let pid = collector.child.id();
    let (bnd, eff, nnp, uid) = (
        status_of(pid, "CapBnd"),
        status_of(pid, "CapEff"),
        status_of(pid, "NoNewPrivs"),
        status_of(pid, "Uid"),
    );
    eprintln!("collector: Uid {uid}, CapBnd {bnd}, CapEff {eff}, NoNewPrivs {nnp}");
    // CAP_NET_ADMIN (12) and CAP_NET_RAW (13), from the manifest, and nothing else, ever.
    assert_eq!(
        bnd, "0000000000003000",
        "the bounding set is not the manifest's grant"
    );
    assert_eq!(
        eff, "0000000000000000",
        "capabilities still effective after the open"
    );
    assert_eq!(nnp, "1");
    node.send_udp(40);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut read = None;
    while Instant::now() < deadline {
        read = node.counter(METRICS, "packets_read");
        if read.is_some_and(|n| n >= 40) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        read.is_some_and(|n| n >= 40),
        "captured {read:?} of 40: {}",
        collector.stderr()
    );
}

#[test]
fn documented_scale_up_extends_the_set_with_the_next_pods_name() {
    let readme = std::fs::read_to_string(repo_root().join("deploy/README.md"))
        .expect("read deploy/README.md");
    let scaling = readme
        .split("**Scaling the processors**")
        .nth(1)
        .expect("deploy/README.md: Scaling the processors");
    let snippet = scaling
        .split("```toml\n")
        .nth(1)
        .and_then(|t| t.split("```").next())
        .expect("the scaling section's TOML");
    let docs = yaml_docs(&render_yaml());
    let shipped = s(
        &find(&docs, "ConfigMap", "tapflow-processor-set", Some("tapflow"))["data"]
            ["processor-set.toml"],
    );
    let parse = |t: &str| {
        tapflow_proto::procset::ProcessorSet::parse(t, true).expect("parse a processor set")
    };
    let (before, after) = (parse(shipped), parse(&format!("{shipped}{snippet}")));
    assert!(
        after.extends(&before),
        "the documented change rewrites the set's history"
    );
    assert_eq!(after.latest().table.members(), [0, 1, 2]);
    let want = stable_endpoint(&docs, "tapflow-processor", 2);
    assert_eq!(after.endpoint(2), Some(want.as_str()));
}

#[test]
fn collector_as_non_root_under_the_same_grant_cannot_start() {
    if !is_root() {
        return;
    }
    // Why the DaemonSet runs the collector as uid 0. A non-root uid cannot read its Secret's key
    // files (root's, mode 0400; an fsGroup would make them group-readable, which tapflow
    // refuses) ...
    let non_root = |sc: &mut Value| {
        sc["runAsUser"] = 65532.into();
        sc["runAsGroup"] = 65532.into();
    };
    let (_node, mut collector, _dir) = start_collector(non_root, 0, &[]);
    let status = collector.wait_until(Instant::now() + Duration::from_secs(20));
    let log = collector.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    assert!(log.contains("collector.key: Permission denied"), "{log}");
    // ... and even with keys of its own it could not capture: a container runtime gives a
    // non-root process the added capabilities in its bounding set only (Kubernetes has no
    // ambient capabilities), so they are gone after exec, and no_new_privs ignores file
    // capabilities. (It would wait linger_ms for its end of stream to leave: not here.)
    let (_node, mut collector, _dir) = start_collector(non_root, 65532, &["--linger-ms", "200"]);
    let status = collector.wait_until(Instant::now() + Duration::from_secs(20));
    let log = collector.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(3), "{log}");
    assert!(log.contains("needs CAP_NET_RAW"), "{log}");
}
