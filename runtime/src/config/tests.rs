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
