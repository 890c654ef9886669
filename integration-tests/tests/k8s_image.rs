//! The Dockerfile deploy/k8s names, checked without building it: the build stage has the
//! toolchain's -dev packages, the image carries each binary the manifests run, and its runtime
//! stage installs (with what apt brings along) every shared library those binaries link.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use tapflow_integration_tests::k8s::{render_yaml, run_ok, s, yaml_docs};
use tapflow_integration_tests::{bin, repo_root};

fn workloads(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter(|d| d["kind"] == "DaemonSet" || d["kind"] == "StatefulSet")
        .collect()
}

/// The packages `apt-get install` lines of the Dockerfile's stage `FROM from ...` name.
fn dockerfile_installs(dockerfile: &str, from: &str) -> BTreeSet<String> {
    let stage = dockerfile.split("\nFROM ").find(|st| st.starts_with(from));
    assert!(stage.is_some(), "the Dockerfile has no stage FROM {from}");
    let stage = stage.expect("a Dockerfile stage");
    let joined = stage.replace("\\\n", " ");
    joined
        .split("apt-get install")
        .skip(1)
        .flat_map(|rest| {
            rest.split("&&")
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .filter(|w| !w.starts_with('-'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The Debian package that ships each of `libs` (as ldd names it, or by its canonical path: the
/// dpkg database lists /lib paths, usrmerge moved the files to /usr/lib), by ldd's name.
fn packages_of(libs: &[String]) -> std::collections::BTreeMap<String, String> {
    let canonical: Vec<(String, String)> = libs
        .iter()
        .map(|l| {
            let c =
                std::fs::canonicalize(l).map_or_else(|_| l.clone(), |c| c.display().to_string());
            (l.clone(), c)
        })
        .collect();
    let out = Command::new("dpkg")
        .arg("-S")
        .args(canonical.iter().flat_map(|(l, c)| [l, c]))
        .output()
        .expect("run dpkg -S");
    let text = String::from_utf8_lossy(&out.stdout);
    let owner = |path: &str| {
        text.lines()
            .find(|l| l.ends_with(&format!(": {path}")))
            .and_then(|l| l.split(':').next())
            .map(str::to_owned)
    };
    let owners: Vec<(String, Option<String>)> = canonical
        .iter()
        .map(|(l, c)| (l.clone(), owner(l).or_else(|| owner(c))))
        .collect();
    let unowned: Vec<&String> = owners
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(l, _)| l)
        .collect();
    assert!(unowned.is_empty(), "no package ships {unowned:?}");
    owners
        .into_iter()
        .map(|(l, p)| (l, p.expect("an owner")))
        .collect()
}

#[test]
fn dockerfile_runtime_stage_installs_what_the_binaries_link() {
    let dockerfile =
        std::fs::read_to_string(repo_root().join("Dockerfile")).expect("read the Dockerfile");
    assert!(dockerfile.starts_with("# ") && dockerfile.contains("\nFROM rust:1-bookworm AS build"));
    let runtime = dockerfile_installs(&dockerfile, "debian:bookworm-slim");
    let build = dockerfile_installs(&dockerfile, "rust:1-bookworm");
    for dev in ["pkg-config", "libpcap-dev", "libzmq3-dev"] {
        assert!(
            build.contains(dev),
            "the build stage lacks {dev}: {build:?}"
        );
    }
    // Every package apt-get brings in with the runtime stage's (dependencies, no recommends).
    let mut depends = Command::new("apt-cache");
    depends.args([
        "depends",
        "--recurse",
        "--no-recommends",
        "--no-suggests",
        "--no-conflicts",
    ]);
    depends
        .args(["--no-breaks", "--no-replaces", "--no-enhances"])
        .args(&runtime);
    let closure: BTreeSet<String> = run_ok(&mut depends, "apt-cache depends")
        .lines()
        .filter(|l| !l.starts_with(' '))
        .map(|l| l.trim().to_owned())
        .collect();
    let docs = yaml_docs(&render_yaml());
    for w in workloads(&docs) {
        let program = s(&w["spec"]["template"]["spec"]["containers"][0]["command"][0]);
        assert!(
            dockerfile.contains(&format!("target/release/{program}")),
            "the image lacks {program}"
        );
        let ldd = run_ok(Command::new("ldd").arg(bin(program)), "ldd");
        let libs: Vec<String> = ldd
            .lines()
            .filter_map(|l| l.split("=> ").nth(1)?.split(" (").next())
            .map(|l| l.trim().to_owned())
            .collect();
        assert!(
            libs.iter().any(|l| l.contains("libzmq")),
            "{program}: {ldd}"
        );
        for (lib, package) in packages_of(&libs) {
            assert!(
                closure.contains(&package),
                "{program} links {lib} from {package}, which the runtime stage does not install"
            );
        }
    }
}
