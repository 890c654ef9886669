//! Reading deploy/k8s as a cluster would: `kubectl kustomize` renders it, the venv's Python
//! (deploy/install-deps.sh --test) turns the YAML into JSON, and a pod's volumes are laid out
//! at their mount paths under /etc by an overlay in a private mount namespace, so a binary reads
//! its ConfigMap and Secret files at the very paths the manifests give, and the host's /etc is
//! left as it was.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::{bin, repo_root, Proc};

/// The kubectl to render with: `TAPFLOW_KUBECTL`, else the one on PATH.
pub fn kubectl() -> PathBuf {
    std::env::var_os("TAPFLOW_KUBECTL").map_or_else(|| PathBuf::from("kubectl"), PathBuf::from)
}

/// The venv deploy/install-deps.sh --test makes for kubernetes-validate.
pub fn venv() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"),
        PathBuf::from,
    );
    cache.join("tapflow/k8s-venv")
}

/// Runs `cmd`, asserting it succeeds; its stdout.
pub fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output();
    assert!(
        out.is_ok(),
        "{what}: {out:?} (deploy/install-deps.sh --test installs the Kubernetes tools)"
    );
    let out = out.expect("run a tool");
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl kustomize deploy/k8s`, as YAML.
pub fn render_yaml() -> String {
    let dir = repo_root().join("deploy/k8s");
    run_ok(
        Command::new(kubectl()).arg("kustomize").arg(&dir),
        "kubectl kustomize deploy/k8s",
    )
}

/// The documents of a YAML stream, read by PyYAML in the venv.
pub fn yaml_docs(yaml: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("in.yaml");
    std::fs::write(&path, yaml).expect("write the YAML");
    let script = "import json, sys, yaml\n\
                  print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";
    let json = run_ok(
        Command::new(venv().join("bin/python"))
            .args(["-c", script])
            .arg(&path),
        "read YAML with the venv's PyYAML",
    );
    let docs: Value = serde_json::from_str(&json).expect("parse PyYAML's JSON");
    docs.as_array().cloned().unwrap_or_default()
}

/// The object of `kind` named `name` (in `namespace`, if given).
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str, namespace: Option<&str>) -> &'a Value {
    let found = docs.iter().find(|d| {
        d["kind"] == kind
            && d["metadata"]["name"] == name
            && namespace.is_none_or(|ns| d["metadata"]["namespace"] == ns)
    });
    assert!(
        found.is_some(),
        "no {kind} {name} ({namespace:?}) in the rendered manifests"
    );
    found.expect("a rendered object")
}

/// `s` as a str, or "".
pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// The Secrets of a fresh set of keys, made in `dir`/keys by deploy/k8s/keys.sh with the built
/// binaries, the collectors' key bound to `tap_node`: the YAML and its documents.
pub fn secrets(dir: &Path, tap_node: &str) -> (String, Vec<Value>) {
    let bin_dir = bin("tapflow-collector")
        .parent()
        .expect("the binaries' directory")
        .to_path_buf();
    let yaml = run_ok(
        Command::new(repo_root().join("deploy/k8s/keys.sh"))
            .arg(dir.join("keys"))
            .arg(tap_node)
            .env("TAPFLOW_BIN", bin_dir),
        "deploy/k8s/keys.sh",
    );
    let docs = yaml_docs(&yaml);
    (yaml, docs)
}

/// Standard base64 (a Secret's `data`), or `None` if it is not.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = ABC.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// One file a volume puts in a pod: where, what, and its mode.
pub struct PodFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

/// The files the ConfigMap and Secret volumes of `pod` (a pod template's spec, in `namespace`)
/// put under /etc, from the rendered objects `docs` and the Secrets `secrets`.
pub fn pod_files(docs: &[Value], secrets: &[Value], pod: &Value, namespace: &str) -> Vec<PodFile> {
    let mut files = Vec::new();
    let container = &pod["containers"][0];
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == m["name"]);
        let Some(volume) = volume else { continue };
        let at = Path::new(s(&m["mountPath"]));
        let (object, mode, encoded) = if let Some(cm) = volume.get("configMap") {
            let mode = cm["defaultMode"].as_u64().unwrap_or(0o644);
            (
                find(docs, "ConfigMap", s(&cm["name"]), Some(namespace)),
                mode,
                false,
            )
        } else if let Some(sec) = volume.get("secret") {
            let mode = sec["defaultMode"].as_u64().unwrap_or(0o644);
            let name = s(&sec["secretName"]);
            (find(secrets, "Secret", name, Some(namespace)), mode, true)
        } else {
            continue;
        };
        for (key, value) in object["data"].as_object().into_iter().flatten() {
            let bytes = if encoded {
                base64_decode(s(value)).expect("a Secret's data is base64")
            } else {
                s(value).as_bytes().to_vec()
            };
            files.push(PodFile {
                path: at.join(key),
                bytes,
                mode: mode as u32,
            });
        }
    }
    files
}

/// An /etc overlay's upper and work directories, holding `files` (paths under /etc) and `extra`
/// (relative to /etc, e.g. "hosts").
pub fn etc_overlay(dir: &Path, files: &[PodFile], extra: &[(&str, &str)]) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let (upper, work) = (dir.join("etc-upper"), dir.join("etc-work"));
    std::fs::create_dir_all(&work).expect("create the overlay's work dir");
    let mut all: Vec<(PathBuf, &[u8], u32)> = files
        .iter()
        .map(|f| {
            assert!(
                f.path.starts_with("/etc"),
                "{}: only mounts under /etc are laid out",
                f.path.display()
            );
            let rel = f.path.strip_prefix("/etc").expect("a path under /etc");
            (upper.join(rel), f.bytes.as_slice(), f.mode)
        })
        .collect();
    all.extend(
        extra
            .iter()
            .map(|(rel, text)| (upper.join(rel), text.as_bytes(), 0o644)),
    );
    for (path, bytes, mode) in all {
        let parent = path.parent().expect("a file has a parent");
        std::fs::create_dir_all(parent).expect("create a mount's directory");
        std::fs::write(&path, bytes).expect("write a pod file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .expect("set a pod file's mode");
    }
    (upper, work)
}

/// The argv prefix that runs a program in a private mount namespace where each `(root, upper,
/// work)` lays the directory `upper` over `root` (e.g. /etc): the host's files stay as they are.
pub fn with_overlays(overlays: &[(&str, &Path, &Path)]) -> Vec<String> {
    let mounts: Vec<String> = overlays
        .iter()
        .map(|(root, upper, work)| {
            format!(
                "mount -t overlay overlay -o lowerdir={root},upperdir={},workdir={} {root} && ",
                upper.display(),
                work.display()
            )
        })
        .collect();
    let script = format!("{}exec \"$@\"", mounts.concat());
    ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
        .iter()
        .map(|a| a.to_string())
        .chain([script, "pod".to_owned()])
        .collect()
}

/// A container's environment as the kubelet would give it in pod `ordinal` of workload `w`, on
/// node tap-node-1.
pub fn pod_env(w: &Value, c: &Value, ordinal: u32) -> Vec<(String, String)> {
    let pod_name = format!("{}-{ordinal}", s(&w["metadata"]["name"]));
    let mut env = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let path = s(&e["valueFrom"]["fieldRef"]["fieldPath"]);
        let value = match path {
            "" => s(&e["value"]).to_owned(),
            "metadata.name" => pod_name.clone(),
            "metadata.labels['apps.kubernetes.io/pod-index']" => ordinal.to_string(),
            "spec.nodeName" => "tap-node-1".to_owned(),
            _ => String::new(),
        };
        assert!(!value.is_empty(), "no value for env {}", e);
        env.push((s(&e["name"]).to_owned(), value));
    }
    env
}

/// argv for container `c` after the `overlays`: setpriv per its securityContext, then its
/// command and args, with the binaries built here.
pub fn pod_argv(c: &Value, overlays: &[(&str, &Path, &Path)]) -> Vec<String> {
    let mut argv = with_overlays(overlays);
    argv.push("setpriv".to_owned());
    argv.extend(setpriv_args(&c["securityContext"]));
    let command = c["command"].as_array();
    assert!(command.is_some(), "a container without its command: {c}");
    let program = bin(s(&command.expect("a command")[0]));
    argv.push(program.display().to_string());
    argv.extend(
        c["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| s(a).to_owned()),
    );
    argv
}

/// `ip ARGV` (e.g. `netns exec NS ...`) with `env`, as a [`Proc`] whose stderr is kept in `dir`.
pub fn spawn_in(name: &str, argv: &[String], env: &[(String, String)], dir: &Path) -> Proc {
    let stderr_path = dir.join(format!("{name}.stderr"));
    let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
    let child = Command::new("ip")
        .args(argv)
        .envs(env.iter().cloned())
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start a pod's process");
    Proc {
        name: name.to_owned(),
        child,
        stderr_path,
    }
}

/// A capability name as the manifests write it (`NET_RAW`) to setpriv's (`net_raw`).
pub fn setpriv_cap(cap: &str) -> String {
    cap.trim_start_matches("CAP_").to_ascii_lowercase()
}

/// setpriv's arguments for a container's securityContext as a container runtime applies it:
/// its uid and gid, no supplementary groups, the bounding set = the added capabilities (after
/// `drop: [ALL]`), nothing inheritable nor ambient (Kubernetes has no ambient capabilities), and
/// no_new_privs unless privilege escalation is allowed.
pub fn setpriv_args(sc: &Value) -> Vec<String> {
    let drops: Vec<&str> = sc["capabilities"]["drop"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    assert_eq!(drops, ["ALL"], "a container must drop every capability");
    let adds: Vec<String> = sc["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!(",+{}", setpriv_cap(s(c))))
        .collect();
    let mut args = vec![
        format!(
            "--reuid={}",
            sc["runAsUser"].as_u64().expect("runAsUser is set")
        ),
        format!(
            "--regid={}",
            sc["runAsGroup"].as_u64().expect("runAsGroup is set")
        ),
        "--clear-groups".to_owned(),
        "--inh-caps=-all".to_owned(),
        "--ambient-caps=-all".to_owned(),
        format!("--bounding-set=-all{}", adds.concat()),
    ];
    if sc["allowPrivilegeEscalation"] == false {
        args.push("--no-new-privs".to_owned());
    }
    args
}

/// A TOML line without its comment, spaces around `=` and at the ends normalised, as
/// `--check-config` prints a setting; `None` for a blank or comment line.
pub fn toml_setting(line: &str) -> Option<String> {
    let (mut in_string, mut escaped, mut end) = (false, false, line.len());
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '#' if !in_string => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let line = line[..end].trim();
    (!line.is_empty()).then(|| match line.split_once('=') {
        Some((k, v)) => format!("{} = {}", k.trim(), v.trim()),
        None => line.to_owned(),
    })
}
