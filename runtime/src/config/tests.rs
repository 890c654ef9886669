use super::*;

#[derive(Debug, Default, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Settings {
    size: Option<u32>,
}

#[test]
fn config_files_read_or_fail_clearly() {
    let none = read_config::<Settings>(None).expect("no file: the defaults");
    assert_eq!(none, Settings::default());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "size = 3").expect("writing good.toml");
    let read = read_config::<Settings>(Some(&good)).expect("reading good.toml");
    assert_eq!(read, Settings { size: Some(3) });
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "sise = 3").expect("writing bad.toml");
    let err = read_config::<Settings>(Some(&bad))
        .expect_err("an unknown key")
        .to_string();
    assert!(err.contains("bad.toml") && err.contains("sise"), "{err}");
    let missing = read_config::<Settings>(Some(&dir.path().join("missing.toml")))
        .expect_err("a missing file")
        .to_string();
    assert!(missing.starts_with("cannot read config file"), "{missing}");
}

crate::layered! {
    #[derive(Debug, Default, PartialEq)]
    struct Layers {
        value: Option<u32>,
        list: Vec<u32>,
        switch: bool,
    }
}

#[test]
fn a_layer_wins_where_it_sets_a_value() {
    let check = |upper: Layers, lower: Layers, want: Layers| assert_eq!(upper.over(lower), want);
    let l = |value, list: &[u32], switch| Layers {
        value,
        list: list.to_vec(),
        switch,
    };
    check(
        l(None, &[], false),
        l(Some(2), &[2], true),
        l(Some(2), &[2], true),
    );
    check(
        l(Some(1), &[1], false),
        l(Some(2), &[2], false),
        l(Some(1), &[1], false),
    );
    check(
        l(Some(1), &[], true),
        l(None, &[2], false),
        l(Some(1), &[2], true),
    );
}

#[test]
fn endpoints_are_checked_and_named() {
    let mut errors = Vec::new();
    check_required_endpoint("listen", "", &mut errors);
    check_required_endpoint("listen", "tcp://127.0.0.1:1", &mut errors);
    check_required_endpoint("aggregator", "udp://x", &mut errors);
    assert_eq!(
        errors,
        [
            "--listen ENDPOINT is required",
            "aggregator endpoint \"udp://x\" is not a ZeroMQ endpoint (tcp://HOST:PORT or ipc://PATH)"
        ]
    );
    assert_eq!(endpoint_problem("processor", "ipc:///x"), None);
}

#[test]
fn a_config_parse_error_shows_no_file_content() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let secret = dir.path().join("password");
    std::fs::write(&secret, "S3cretPassw0rd\n").expect("writing the password file");
    let err = read_config::<Settings>(Some(&secret))
        .expect_err("a password file is not TOML")
        .to_string();
    assert!(!err.contains("S3cretPassw0rd"), "{err}");
    assert!(
        err.contains("password") && err.contains("line 1, column 15"),
        "{err}"
    );
    let later = dir.path().join("later.toml");
    std::fs::write(&later, "size = 3\n  hunter2 hunter2\n").expect("writing later.toml");
    let err = read_config::<Settings>(Some(&later))
        .expect_err("a bare word on line 2")
        .to_string();
    assert!(!err.contains("hunter2") && err.contains("line 2,"), "{err}");
}

#[test]
fn metrics_off_loopback_need_metrics_public() {
    for (addr, public, ok) in [
        ("9603", false, true),
        ("127.0.0.1:9603", false, true),
        ("127.1.2.3:0", false, true),
        ("[::1]:9603", false, true),
        ("localhost:9603", false, true),
        ("0.0.0.0:9603", false, false),
        ("[::]:9603", false, false),
        ("192.0.2.1:9603", false, false),
        ("metrics.example:9603", false, false),
        ("0.0.0.0:9603", true, true),
        ("[::]:9603", true, true),
    ] {
        let mut errors = Vec::new();
        check_metrics_listen(Some(addr), public, &mut errors);
        assert_eq!(errors.is_empty(), ok, "{addr} public={public}: {errors:?}");
        if !ok {
            assert!(errors[0].contains("--metrics-public"), "{errors:?}");
        }
    }
    let mut errors = Vec::new();
    check_metrics_listen(None, false, &mut errors);
    assert!(errors.is_empty());
}
