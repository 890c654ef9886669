use super::*;

fn check(argv: &[&str], want_errors: &[&str]) {
    let args = Args::try_parse_from(std::iter::once("p").chain(argv.iter().copied()))
        .expect("parse the arguments");
    match Config::merge(args, Options::default()) {
        Ok(_) => assert!(want_errors.is_empty(), "expected errors {want_errors:?}"),
        Err(ConfigError(got)) => {
            assert_eq!(got.len(), want_errors.len(), "{got:?}");
            for w in want_errors {
                assert!(
                    got.iter().any(|g| g.contains(w)),
                    "missing {w:?} in {got:?}"
                );
            }
        }
    }
}

/// [`Config::load`] with `argv` and a config file holding `toml`.
fn load(argv: &[&str], toml: &str) -> Config {
    static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "tapflow-processor-config-{}-{n}.toml",
        std::process::id()
    ));
    std::fs::write(&path, toml).expect("write the config file");
    let name = path.display().to_string();
    let args = ["p", "--config", &name]
        .into_iter()
        .chain(argv.iter().copied());
    let args = Args::try_parse_from(args).expect("parse the arguments");
    let config = Config::load(args);
    let _ = std::fs::remove_file(&path);
    config.expect("load the config")
}

#[test]
fn resolved_config_reads_back_the_same() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let (key, public, _) =
        tapflow_runtime::curve::keygen("test", &dir.path().join("k")).expect("generate a key pair");
    let (key, public) = (key.display().to_string(), public.display().to_string());
    let file = format!(
        "listen = 'tcp://0.0.0.0:5601'\naggregator = 'tcp://127.0.0.1:5700'\n\
         shard = '1/2/1'\nlocal_nets = ['10.0.0.0/8', 'fc00::/7']\n\
         curve_key = '{key}'\ncurve_clients = '{public}'\ncurve_server_key = '{public}'"
    );
    let file = file.as_str();
    let text = load(
        &[
            "--listen",
            "tcp://0.0.0.0:5602",
            "--name",
            "sensor:processor2",
        ],
        file,
    )
    .resolved();
    for want in [
        "listen = \"tcp://0.0.0.0:5602\"",
        "aggregator = \"tcp://127.0.0.1:5700\"",
        "name = \"sensor:processor2\"",
        "shard = \"1/2/1\"",
        "local_nets = [\"10.0.0.0/8\", \"fc00::/7\"]",
        "max_flows = 1000000",
        "# metrics_listen: off",
        "plain = false",
        &format!("curve_key = \"{key}\""),
        &format!("curve_clients = \"{public}\""),
        &format!("curve_server_key = \"{public}\""),
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in\n{text}"
        );
    }
    assert_eq!(load(&[], &text).resolved(), text);
}

#[test]
fn validates_all_fields_together() {
    check(
        &[
            "--listen",
            "tcp://127.0.0.1:1",
            "--aggregator",
            "tcp://127.0.0.1:2",
            "--plain",
        ],
        &[],
    );
    check(
        &[
            "--listen",
            "tcp://0.0.0.0:1",
            "--aggregator",
            "tcp://127.0.0.1:2",
            "--plain",
        ],
        &["--plain is for loopback only, and tcp://0.0.0.0:1 is not"],
    );
    check(
        &["--collectors", "0"],
        &[
            "--listen",
            "--aggregator",
            "collectors must",
            "links are encrypted: give --curve-key FILE and --curve-clients FILE and --curve-server-key FILE",
        ],
    );
    check(
        &[
            "--listen",
            "http://x",
            "--aggregator",
            "tcp://a:1",
            "--shard",
            "1/2/0",
        ],
        &["not a ZeroMQ endpoint", "links are encrypted"],
    );
    assert!(Args::try_parse_from(["p", "--shard", "1/2/2"]).is_err());
}

#[test]
fn a_processor_set_needs_a_member_id() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let set = dir.path().join("set.toml");
    std::fs::write(
        &set,
        "initial = [0, 1]\n[[change]]\nadd = 2\nswitch_at = 1700000000\n",
    )
    .expect("write the processor-set file");
    let path = set.display().to_string();
    let base = [
        "p",
        "--listen",
        "tcp://127.0.0.1:1",
        "--aggregator",
        "tcp://127.0.0.1:2",
        "--plain",
    ];
    let load = |extra: &[&str]| {
        let args =
            Args::try_parse_from(base.iter().chain(extra).copied()).expect("parse the arguments");
        Config::merge(args, Options::default())
    };
    // id 2 joins at the change: a member of some epoch, so it may start before its switch.
    let config = load(&["--processor-set", &path, "--id", "2"]).expect("load the config");
    let (_, loaded, id) = config
        .processor_set
        .as_ref()
        .expect("a processor set in the config");
    assert_eq!((loaded.epochs().len(), *id), (2, 2));
    assert!(config.resolved().contains("id = 2"));
    let err = load(&["--processor-set", &path, "--id", "3"]).expect_err("not a member");
    assert!(
        err.0.iter().any(|e| e.contains("id 3 is not a member")),
        "{err:?}"
    );
    // --control: the aggregator's decisions, resolved as given; it needs a set.
    let control = ["--processor-set", &path, "--id", "0", "--control"];
    let config = load(&[&control[..], &["tcp://127.0.0.1:3"]].concat()).expect("load");
    assert_eq!(config.control.as_deref(), Some("tcp://127.0.0.1:3"));
    assert!(config
        .resolved()
        .contains("control = \"tcp://127.0.0.1:3\""));
    let err = load(&[&control[..], &["tcp://10.0.0.1:3"]].concat()).expect_err("off loopback");
    assert!(err.0.iter().any(|e| e.contains("10.0.0.1")), "{err:?}");
    assert!(Args::try_parse_from(
        base.iter()
            .chain(&["--control", "tcp://127.0.0.1:3"])
            .copied()
    )
    .is_err());
    // --id is required with a set, and a set excludes --shard.
    assert!(Args::try_parse_from(
        base.iter()
            .chain(&["--processor-set", path.as_str()])
            .copied()
    )
    .is_err());
    assert!(Args::try_parse_from(
        base.iter()
            .chain(&[
                "--processor-set",
                path.as_str(),
                "--id",
                "0",
                "--shard",
                "1/2/0"
            ])
            .copied()
    )
    .is_err());
}

#[test]
fn metrics_off_loopback_need_metrics_public() {
    let base = [
        "--listen",
        "tcp://127.0.0.1:5601",
        "--aggregator",
        "tcp://127.0.0.1:5700",
        "--plain",
        "--metrics-listen",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().chain(extra).copied().collect()
    };
    check(&with(&["127.0.0.1:9602"]), &[]);
    check(&with(&["[::1]:9602"]), &[]);
    check(&with(&["0.0.0.0:9602"]), &["--metrics-public"]);
    check(&with(&["0.0.0.0:9602", "--metrics-public"]), &[]);
    let config = load(&with(&["0.0.0.0:9602"]), "metrics_public = true");
    let text = config.resolved();
    assert!(text.lines().any(|l| l == "metrics_public = true"), "{text}");
}

#[test]
fn max_senders_is_at_least_collectors() {
    let plain = [
        "--listen",
        "tcp://127.0.0.1:1",
        "--aggregator",
        "tcp://127.0.0.1:2",
        "--plain",
    ];
    fn with(plain: &[&'static str], extra: &[&'static str]) -> Vec<&'static str> {
        plain.iter().chain(extra).copied().collect()
    }
    check(
        &with(&plain, &["--collectors", "3", "--max-senders", "3"]),
        &[],
    );
    check(
        &with(&plain, &["--collectors", "3", "--max-senders", "2"]),
        &["max_senders (2) must be at least collectors (3)"],
    );
    let args =
        Args::try_parse_from(std::iter::once("p").chain(with(&plain, &["--collectors", "2000"])))
            .expect("parse the arguments");
    let config = Config::merge(args, Options::default()).expect("a valid configuration");
    assert_eq!(config.max_senders, 2000);
}

/// `dns_session_timeout_ms`: Zeek's 10 s by default, from a flag or the file, 0 to turn off;
/// the resolved file says it.
#[test]
fn dns_session_timeout_defaults_to_zeeks() {
    let plain = [
        "--listen",
        "tcp://127.0.0.1:1",
        "--aggregator",
        "tcp://127.0.0.1:2",
        "--plain",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        plain.iter().chain(extra).copied().collect()
    };
    for (argv, file, want) in [
        (with(&[]), "", 10_000),
        (with(&[]), "dns_session_timeout_ms = 2500", 2500),
        (
            with(&["--dns-session-timeout-ms", "0"]),
            "dns_session_timeout_ms = 2500",
            0,
        ),
    ] {
        let config = load(&argv, file);
        assert_eq!(
            config.dns_session_timeout,
            Duration::from_millis(want),
            "{argv:?} over {file:?}"
        );
        let text = config.resolved();
        let line = format!("dns_session_timeout_ms = {want}");
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

/// `--check-config` shows acknowledged delivery and its bounds (or that it is off), and the
/// text reads back as the same configuration.
#[test]
fn check_config_shows_acknowledged_delivery() {
    let base =
        "listen = 'tcp://127.0.0.1:5601'\naggregator = 'tcp://127.0.0.1:5700'\nplain = true\n";
    let off = load(&[], base).resolved();
    assert!(
        off.lines()
            .any(|l| l == "# aggregator_acks: off, nothing kept for a restarted aggregator"),
        "{off}"
    );
    let text = load(
        &[
            "--aggregator-acks",
            "tcp://127.0.0.1:5701",
            "--unacked-max-bytes",
            "1048576",
            "--resend-after-ms",
            "250",
            "--ack-wait-s",
            "7",
        ],
        base,
    )
    .resolved();
    for want in [
        "aggregator_acks = \"tcp://127.0.0.1:5701\"",
        "unacked_max_bytes = 1048576",
        "resend_after_ms = 250",
        "ack_wait_s = 7",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in\n{text}"
        );
    }
    assert_eq!(load(&[], &text).resolved(), text);
    let defaults = load(&["--aggregator-acks", "tcp://127.0.0.1:5701"], base).resolved();
    for want in [
        format!("unacked_max_bytes = {DEFAULT_UNACKED_MAX_BYTES}"),
        format!("resend_after_ms = {DEFAULT_RESEND_AFTER_MS}"),
        format!("ack_wait_s = {DEFAULT_ACK_WAIT_S}"),
    ] {
        assert!(
            defaults.lines().any(|l| l == want),
            "missing {want:?} in\n{defaults}"
        );
    }
}

/// `--disable-services` and `--dns-max-queries`: from flags or the file, checked (an unknown
/// service refused with the valid names), shown by `--check-config` and read back alike.
#[test]
fn services_disabled_and_dns_max_queries() {
    let plain = [
        "--listen",
        "tcp://127.0.0.1:1",
        "--aggregator",
        "tcp://127.0.0.1:2",
        "--plain",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        plain.iter().chain(extra).copied().collect()
    };
    let defaults = load(&with(&[]), "");
    assert_eq!(defaults.classify, tapflow_classify::Settings::default());
    let text = defaults.resolved();
    for want in ["disable_services = []", "dns_max_queries = 25"] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in\n{text}"
        );
    }
    let flags = load(
        &with(&["--disable-services", "http,redis", "--dns-max-queries", "3"]),
        "disable_services = ['dns']\ndns_max_queries = 7",
    );
    assert_eq!(flags.classify.disabled, vec!["http", "redis"]);
    assert_eq!(flags.classify.dns_max_queries, 3);
    let text = flags.resolved();
    for want in [
        "disable_services = [\"http\", \"redis\"]",
        "dns_max_queries = 3",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in\n{text}"
        );
    }
    assert_eq!(load(&[], &text).resolved(), text);
    let file = load(&with(&[]), "disable_services = ['geneve', 'ssl']");
    assert_eq!(file.classify.disabled, vec!["geneve", "ssl"]);
    check(
        &with(&["--disable-services", "http,gopher"]),
        &["disable_services: unknown service \"gopher\"; valid: dce_rpc,"],
    );
}

/// `--spool-dir` and `--spool-max-bytes`: shown by `--check-config` (or that there is no
/// spool), read back the same; a spool without acknowledged delivery, an empty maximum or a
/// file as the directory is refused at start, every problem together.
#[test]
fn check_config_shows_the_spool_and_refuses_bad_ones() {
    let base =
        "listen = 'tcp://127.0.0.1:5601'\naggregator = 'tcp://127.0.0.1:5700'\nplain = true\n";
    let acks = ["--aggregator-acks", "tcp://127.0.0.1:5701"];
    let off = load(&acks, base).resolved();
    assert!(
        off.lines().any(|l| l.starts_with("# spool_dir: none")),
        "{off}"
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let spool = dir.path().join("spool").display().to_string();
    let mut argv = acks.to_vec();
    argv.extend(["--spool-dir", &spool]);
    let text = load(&argv, base).resolved();
    for want in [
        format!("spool_dir = \"{spool}\""),
        format!("spool_max_bytes = {DEFAULT_SPOOL_MAX_BYTES}"),
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in\n{text}"
        );
    }
    argv.extend(["--spool-max-bytes", "65536"]);
    let text = load(&argv, base).resolved();
    assert!(
        text.lines().any(|l| l == "spool_max_bytes = 65536"),
        "{text}"
    );
    assert_eq!(load(&[], &text).resolved(), text);
    let a = load(&argv, base).acks.expect("acknowledged delivery");
    let s = a.spool.expect("a spool");
    assert_eq!(
        (s.dir.display().to_string(), s.max_bytes),
        (spool.clone(), 65536)
    );
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("a file");
    let file = file.display().to_string();
    for (argv, wants) in [
        (
            vec!["--spool-dir", spool.as_str(), "--spool-max-bytes", "0"],
            vec![
                "spool_dir and spool_max_bytes need aggregator_acks",
                "spool_max_bytes must be at least 1",
            ],
        ),
        (
            vec![acks[0], acks[1], "--spool-max-bytes", "10"],
            vec!["spool_max_bytes needs spool_dir"],
        ),
        (
            vec![
                acks[0],
                acks[1],
                "--spool-dir",
                file.as_str(),
                "--spool-max-bytes",
                "0",
            ],
            vec!["is a file", "spool_max_bytes must be at least 1"],
        ),
    ] {
        let endpoints = [
            "p",
            "--listen",
            "tcp://127.0.0.1:5601",
            "--aggregator",
            "tcp://127.0.0.1:5700",
            "--plain",
        ];
        let args = Args::try_parse_from(endpoints.into_iter().chain(argv.iter().copied()))
            .expect("parse the arguments");
        let err = Config::load(args).expect_err("refused").to_string();
        for want in wants {
            assert!(err.contains(want), "{argv:?}: {want:?} not in {err}");
        }
    }
}
