use super::*;

#[test]
fn resolved_config_names_the_password_file_and_reads_back_the_same() {
    let dir = std::env::temp_dir().join(format!("tapflow-agg-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the config dir");
    let secret = dir.join("influx.password");
    std::fs::write(&secret, "s3cret-Pa55\n").expect("write the password file");
    let keys = tempfile::tempdir().expect("create a temp dir");
    let (key, public, _) = tapflow_runtime::curve::keygen("test", &keys.path().join("k"))
        .expect("generate a key pair");
    let file = format!(
        "listen = 'tcp://127.0.0.1:5700'\nprocessors = 2\nconn_log = '/var/log/tapflow/conn.jsonl'\n\
         influx_url = 'http://127.0.0.1:8086'\ninflux_db = 'tapflow'\ninflux_user = 'tapflow'\n\
         influx_password_file = '{}'\nallow = ['192.0.2.10/32']\n\
         curve_key = '{}'\ncurve_clients = '{}'\n\
         [[subnet]]\nnet = '10.0.53.0/24'\nreflection_sources = 100\n",
        secret.display(),
        key.display(),
        public.display()
    );
    let config = dir.join("aggregator.toml");
    std::fs::write(&config, file).expect("write the config file");
    let check = |config: &std::path::Path| {
        let args = Args::try_parse_from([
            "a",
            "--config",
            &config.display().to_string(),
            "--detect-window-s",
            "300",
        ])
        .expect("parse the arguments");
        Config::check(args).expect("check the config")
    };
    let text = check(&config);
    for want in [
        "listen = \"tcp://127.0.0.1:5700\"".to_owned(),
        "conn_log = \"/var/log/tapflow/conn.jsonl\"".to_owned(),
        "detect_window_s = 300".to_owned(),
        "influx_user = \"tapflow\"".to_owned(),
        format!("influx_password_file = \"{}\"", secret.display()),
        "allow = [\"192.0.2.10/32\"]".to_owned(),
        "reflection_sources = 100".to_owned(),
        "plain = false".to_owned(),
        format!("curve_key = \"{}\"", key.display()),
        format!("curve_clients = \"{}\"", public.display()),
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in\n{text}"
        );
    }
    assert!(!text.contains("s3cret"), "{text}");
    let secret_key = std::fs::read_to_string(&key).unwrap_or_default();
    let secret_key = secret_key
        .lines()
        .find_map(|l| l.strip_prefix("secret = "))
        .expect("the secret in the key file");
    assert!(!text.contains(secret_key.trim_matches('"')), "{text}");
    std::fs::write(&config, &text).expect("write the config file");
    assert_eq!(check(&config), text);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn secrets_never_reach_config_output_nor_errors() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let password = dir.path().join("influx.password");
    let token = dir.path().join("influx.token");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&password, "hunter2-Pa55\n").expect("write the password file");
    std::fs::write(&token, "s3cr3t-T0ken\n").expect("write the token file");
    // PEM framing is all that is checked here; rustls parses the DER at connect time.
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("write the CA file");
    let (password, token, ca) = (
        password.display().to_string(),
        token.display().to_string(),
        ca.display().to_string(),
    );
    let base = [
        "a",
        "--listen",
        "tcp://127.0.0.1:5700",
        "--processors",
        "1",
        "--plain",
    ];
    let v1 = [
        "--influx-db",
        "tapflow",
        "--influx-user",
        "tapflow",
        "--influx-password-file",
        &password,
    ];
    let v2 = [
        "--influx-org",
        "o",
        "--influx-bucket",
        "b",
        "--influx-token-file",
        &token,
    ];
    let parse = |extra: &[&str]| {
        Args::try_parse_from(base.iter().chain(extra)).expect("parse the arguments")
    };
    let secret_free = |text: &str| {
        for secret in ["hunter2", "s3cr3t", "T0ken"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    };
    let url = "https://influx.example:8086";
    for api in [&v1[..], &v2[..]] {
        let mut extra = vec!["--influx-url", url, "--influx-ca-file", &ca];
        extra.extend_from_slice(api);
        let config = Config::load(parse(&extra)).expect("load the config");
        secret_free(&format!("{config:?}"));
        secret_free(&config.resolved("", ""));
        let text = Config::check(parse(&extra)).expect("check the config");
        secret_free(&text);
        assert!(
            text.contains(&format!("influx_ca_file = \"{ca}\"")),
            "{text}"
        );
    }
    // Credentials in the URL are refused, and the error shows it redacted.
    for bad in [
        "https://admin:hunter2@influx.example:8086",
        "http://admin:hunter2@127.0.0.1:8086/",
        "http://127.0.0.1:8086/?u=admin&p=hunter2",
    ] {
        let mut extra = vec!["--influx-url", bad];
        extra.extend_from_slice(&v1);
        let Err(ConfigError(errors)) = Config::load(parse(&extra)) else {
            panic!("accepted {bad}")
        };
        let text = errors.join("\n");
        secret_free(&text);
        assert!(text.contains("<redacted>"), "{text}");
        let mut cfg = crate::influx::InfluxConfig::new(
            bad,
            crate::influx::InfluxApi::V1 {
                db: "tapflow".into(),
                rp: None,
                user: None,
                password: None,
            },
            dir.path(),
        );
        secret_free(&format!("{cfg:?}"));
        cfg.spool_dir = dir.path().join("spool");
        let Err(e) = crate::influx::InfluxWriter::start(cfg) else {
            panic!("the writer accepted {bad}")
        };
        secret_free(&format!("{e} {e:?}"));
    }
    // A CA file only goes with https.
    let mut extra = vec![
        "--influx-url",
        "http://127.0.0.1:8086",
        "--influx-ca-file",
        &ca,
    ];
    extra.extend_from_slice(&v1);
    let Err(ConfigError(errors)) = Config::load(parse(&extra)) else {
        panic!("accepted a CA file for http")
    };
    assert!(errors[0].contains("https"), "{errors:?}");
}

#[test]
fn subnet_thresholds_come_from_the_file() {
    let args = Args::try_parse_from([
        "a",
        "--listen",
        "tcp://127.0.0.1:5700",
        "--processors",
        "1",
        "--plain",
    ])
    .expect("parse the arguments");
    let file: Options = toml::from_str(
        "[[subnet]]\nnet = '10.0.0.0/8'\nsyn_flood_per_min = 1000\n[[subnet]]\nnet = 'bogus'",
    )
    .expect("parse the TOML");
    let Err(ConfigError(errors)) = Config::merge(args, file) else {
        panic!("accepted a bad network")
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("bogus"));
}

#[test]
fn reports_every_missing_field() {
    let args = Args::try_parse_from(["a"]).expect("parse the arguments");
    let Err(ConfigError(errors)) = Config::merge(args, Options::default()) else {
        panic!("accepted an empty config")
    };
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[2]
            .starts_with("links are encrypted: give --curve-key FILE and --curve-clients FILE"),
        "{errors:?}"
    );
    let args = Args::try_parse_from(["a", "--listen", "tcp://127.0.0.1:5700", "--plain"])
        .expect("parse the arguments");
    let file: Options = toml::from_str("processors = 3").expect("parse the TOML");
    assert_eq!(
        Config::merge(args, file).map(|c| c.processors).ok(),
        Some(3)
    );
}

#[test]
fn a_processor_set_names_the_processors_expected() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let set = dir.path().join("set.toml");
    std::fs::write(
        &set,
        "initial = [0, 1]\n[[change]]\nadd = 4\nswitch_at = 1700000000\n\
         [[change]]\nremove = 0\nswitch_at = 1700000060\n",
    )
    .expect("write the processor-set file");
    let path = set.display().to_string();
    let load = |argv: &[&str]| {
        let args = Args::try_parse_from(
            ["a", "--listen", "tcp://127.0.0.1:5700", "--plain"]
                .into_iter()
                .chain(argv.iter().copied()),
        )
        .expect("parse the arguments");
        Config::merge(args, Options::default())
    };
    // Every member of any epoch: 0, 1 and 4 (processors need no endpoints here).
    let config = load(&["--processor-set", &path]).expect("load the config");
    assert_eq!(config.processors, 3);
    assert!(config.resolved("", "").contains("processor_set = "));
    let err = load(&[]).expect_err("neither");
    assert!(
        err.0.iter().any(|e| e.contains("--processor-set FILE")),
        "{err:?}"
    );
    std::fs::write(
        &set,
        "initial = [0]\n[[change]]\nremove = 0\nswitch_at = 5\n",
    )
    .expect("write the processor-set file");
    let err = load(&["--processor-set", &path]).expect_err("last member removed");
    assert!(err.0.iter().any(|e| e.contains("epoch 2")), "{err:?}");
}

#[test]
fn every_subnet_threshold_is_also_global() {
    let args = Args::try_parse_from([
        "a",
        "--listen",
        "tcp://127.0.0.1:5700",
        "--processors",
        "1",
        "--plain",
        "--stealth-scan-ports",
        "7",
    ])
    .expect("parsing the flags");
    let file: Options = toml::from_str(
        "stealth_scan_ports = 9\nreflection_sources = 50\n\
         [[subnet]]\nnet = '10.0.0.0/8'\nstealth_scan_ports = 3\nreflection_sources = 4",
    )
    .expect("parsing the file");
    let config = Config::merge(args, file).expect("a valid configuration");
    assert_eq!(
        (
            config.detect.stealth_scan_ports,
            config.detect.reflection_sources
        ),
        (7, 50)
    );
    let text = config.resolved("", "");
    for want in ["stealth_scan_ports = 7", "reflection_sources = 50"] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in\n{text}"
        );
    }
    let again: Options = toml::from_str(&text).expect("parsing the resolved configuration");
    let args = Args::try_parse_from(["a"]).expect("parsing no flag");
    let again = Config::merge(args, again).expect("the resolved configuration is valid");
    assert_eq!(again.resolved("", ""), text);
}

#[test]
fn metrics_off_loopback_need_metrics_public() {
    let load = |extra: &[&str]| {
        let argv = [
            "a",
            "--listen",
            "tcp://127.0.0.1:5700",
            "--processors",
            "1",
            "--plain",
        ];
        let args =
            Args::try_parse_from(argv.iter().chain(extra).copied()).expect("parse the arguments");
        Config::check(args)
    };
    load(&["--metrics-listen", "127.0.0.1:9603"]).expect("loopback is allowed");
    let ConfigError(errors) = load(&["--metrics-listen", "0.0.0.0:9603"])
        .expect_err("0.0.0.0 refused without --metrics-public");
    assert!(
        errors.len() == 1 && errors[0].contains("--metrics-public"),
        "{errors:?}"
    );
    let text = load(&["--metrics-listen", "0.0.0.0:9603", "--metrics-public"])
        .expect("allowed with --metrics-public");
    assert!(text.lines().any(|l| l == "metrics_public = true"), "{text}");
}

#[test]
fn latency_thresholds_are_global_and_per_subnet_and_checked() {
    let args = Args::try_parse_from([
        "a",
        "--listen",
        "tcp://127.0.0.1:5700",
        "--processors",
        "1",
        "--plain",
        "--latency-factor-pct",
        "250",
    ])
    .expect("parsing the flags");
    let file: Options = toml::from_str(
        "latency_min_sessions = 50\nlatency_samples = 64\n\
         [[subnet]]\nnet = '10.0.0.0/8'\nlatency_factor_pct = 800\nlatency_min_sessions = 5",
    )
    .expect("parsing the file");
    let config = Config::merge(args, file).expect("a valid configuration");
    let d = &config.detect;
    assert_eq!(
        (
            d.latency_factor_pct,
            d.latency_min_sessions,
            d.latency_caps.samples
        ),
        (250, 50, 64)
    );
    let t = d
        .subnet(tapflow_proto::Addr::from_v4([10, 1, 2, 3]))
        .expect("the subnet's thresholds");
    assert_eq!(
        (t.latency_factor_pct, t.latency_min_sessions),
        (Some(800), Some(5))
    );
    let text = config.resolved("", "");
    for want in [
        "latency_factor_pct = 250",
        "latency_min_sessions = 5",
        "latency_samples = 64",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in\n{text}"
        );
    }
    let again: Options = toml::from_str(&text).expect("parsing the resolved configuration");
    let again = Config::merge(Args::try_parse_from(["a"]).expect("no flag"), again)
        .expect("the resolved configuration is valid");
    assert_eq!(again.resolved("", ""), text);

    let bad: Options = toml::from_str(
        "listen = 'tcp://127.0.0.1:5700'\nprocessors = 1\nplain = true\n\
         latency_factor_pct = 100\nlatency_warmup = 11",
    )
    .expect("parsing the file");
    let ConfigError(errors) =
        Config::from_options(bad).expect_err("a factor of 1 and a warm-up past the history");
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn membership_durations_take_a_unit_and_zero_is_refused() {
    use std::time::Duration;
    for (text, want) in [
        ("10s", Some(Duration::from_secs(10))),
        ("500ms", Some(Duration::from_millis(500))),
        ("2m", Some(Duration::from_secs(120))),
        ("3", Some(Duration::from_secs(3))),
        ("x", None),
        ("-1s", None),
        ("", None),
    ] {
        assert_eq!(parse_duration(text), want, "{text:?}");
    }
    let o = Options {
        processor_dead_after: Some("0s".into()),
        processor_hold_down: Some("soon".into()),
        ..Options::default()
    };
    let mut errors = Vec::new();
    let p = membership(&o, &mut errors);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(p, crate::control::Policy::default());
}

/// `--check-config` shows the state directory, the write-ahead log's bounds and the membership
/// policy, as given and by default, and the text reads back as the same configuration.
#[test]
fn check_config_shows_the_state_and_membership_options() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let set = dir.path().join("set.toml");
    std::fs::write(&set, "initial = [0, 1]\n").expect("write the processor-set file");
    let load = |argv: &[&str]| {
        let args = Args::try_parse_from(
            ["a", "--listen", "tcp://127.0.0.1:5700", "--plain"]
                .into_iter()
                .chain(argv.iter().copied()),
        )
        .expect("parse the arguments");
        Config::merge(args, Options::default()).expect("a valid configuration")
    };
    let path = set.display().to_string();
    let given = load(&[
        "--processor-set",
        &path,
        "--state-dir",
        "/var/lib/tapflow",
        "--ack-listen",
        "tcp://127.0.0.1:5701",
        "--wal-max-bytes",
        "1048576",
        "--wal-commit-messages",
        "8",
        "--wal-commit-ms",
        "5",
        "--control-listen",
        "tcp://127.0.0.1:5702",
        "--processor-dead-after",
        "2s",
        "--processor-hold-down",
        "1500ms",
        "--processor-switch-margin-ms",
        "700",
        "--processor-set-pinned",
    ]);
    let text = given.resolved("", "");
    for want in [
        "state_dir = \"/var/lib/tapflow\"",
        "ack_listen = \"tcp://127.0.0.1:5701\"",
        "wal_max_bytes = 1048576",
        "wal_commit_messages = 8",
        "wal_commit_ms = 5",
        "control_listen = \"tcp://127.0.0.1:5702\"",
        "processor_dead_after = \"2s\"",
        "processor_hold_down = \"1500ms\"",
        "processor_switch_margin_ms = 700",
        "processor_set_pinned = true",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in\n{text}"
        );
    }
    let again: Options = toml::from_str(&text).expect("parsing the resolved configuration");
    let args = Args::try_parse_from(["a"]).expect("parsing no flag");
    let again = Config::merge(args, again).expect("the resolved configuration is valid");
    assert_eq!(again.resolved("", ""), text);

    let defaults = load(&["--processors", "2"]).resolved("", "");
    for want in [
        "# state_dir: none, a restart loses what was held",
        "# ack_listen: nothing acknowledged",
        &format!("wal_max_bytes = {DEFAULT_WAL_MAX_BYTES}"),
        &format!("wal_commit_messages = {DEFAULT_WAL_COMMIT_MESSAGES}"),
        &format!("wal_commit_ms = {DEFAULT_WAL_COMMIT_MS}"),
        &format!("wal_checkpoint_bytes = {DEFAULT_WAL_CHECKPOINT_BYTES}"),
        &format!("wal_checkpoint_s = {DEFAULT_WAL_CHECKPOINT_S}"),
        "# control_listen: processor-set changes not announced",
        "processor_dead_after = \"10s\"",
        "processor_hold_down = \"30s\"",
        "processor_set_pinned = false",
    ] {
        assert!(
            defaults.lines().any(|l| l == want),
            "missing {want:?} in\n{defaults}"
        );
    }
}
