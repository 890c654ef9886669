//! The `tapflow-gen` binary: same arguments, byte-identical files; bad arguments, a clear error.

use std::path::Path;
use std::process::{Command, Output};

fn gen(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tapflow-gen"))
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("tapflow-gen runs")
}

#[test]
fn same_seed_gives_byte_identical_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = (dir.path().join("a/x.pcap"), dir.path().join("b.pcap"));
    let args = ["--packets", "30000", "--flows", "2000", "--seed", "9"];
    for path in [&a, &b] {
        let out = gen(&args, path);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(line.contains("30000 packets, 2000 flows"), "{line}");
    }
    let (a, b) = (std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
    assert!(a == b, "two runs with the same seed differ");
    // Classic pcap, microseconds, version 2.4, snaplen 65535, Ethernet.
    assert_eq!(&a[..8], &[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]);
    assert_eq!(&a[16..24], &[0xff, 0xff, 0, 0, 1, 0, 0, 0]);
}

#[test]
fn impossible_plan_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = gen(
        &["--packets", "10", "--flows", "100"],
        &dir.path().join("x.pcap"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot carry 100 flows"), "{err}");
}

#[test]
fn mixes_are_named_on_the_command_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (mix, flows) in [("session-heavy", "10000"), ("flood-heavy", "16224")] {
        let out = gen(
            &["--packets", "60000", "--mix", mix],
            &dir.path().join("m.pcap"),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(
            line.contains(&format!("60000 packets, {flows} flows, {mix} mix")),
            "{line}"
        );
    }
    let out = gen(&["--mix", "nope"], &dir.path().join("x.pcap"));
    assert!(!out.status.success());
    let out = gen(
        &["--mix", "flood-heavy", "--syn-flood"],
        &dir.path().join("x.pcap"),
    );
    assert!(!out.status.success(), "--mix and --syn-flood together");
}
