use super::*;

/// A key pair and its public key in `dir`, as config-file lines (processors' key = ours:
/// any public key does for loading).
fn keys_toml(dir: &tempfile::TempDir) -> String {
    let (key, public, _) =
        tapflow_runtime::curve::keygen("test", &dir.path().join("k")).expect("generate a key pair");
    format!(
        "curve_key = '{}'\ncurve_server_key = '{}'\n",
        key.display(),
        public.display()
    )
}

fn check(argv: &[&str], file: &str, expected: Result<(), &[&str]>) {
    let args =
        Args::try_parse_from(std::iter::once("tapflow-collector").chain(argv.iter().copied()))
            .expect("parse the arguments");
    let file: Options = toml::from_str(file).expect("parsing the config file");
    match (Config::merge(args, file), expected) {
        (Ok(_), Ok(())) => {}
        (Err(ConfigError(got)), Err(want)) => {
            for w in want {
                assert!(
                    got.iter().any(|g| g.contains(w)),
                    "missing {w:?} in {got:?}"
                );
            }
            assert_eq!(got.len(), want.len(), "{got:?}");
        }
        (got, want) => panic!("got {got:?}, want {want:?}"),
    }
}

#[test]
fn valid_flags_and_file() {
    check(
        &[
            "--pcap",
            "x.pcap",
            "--processor",
            "tcp://127.0.0.1:1",
            "--plain",
        ],
        "",
        Ok(()),
    );
    let dir = tempfile::tempdir().expect("create a temp dir");
    check(
        &[],
        &format!(
            "pcap = 'x.pcap'\nprocessors = ['tcp://a:1', 'tcp://b:2']\nbatch_size = 10\n{}",
            keys_toml(&dir)
        ),
        Ok(()),
    );
    check(
        &[
            "--pcap",
            "x.pcap",
            "--processor",
            "tcp://10.0.0.5:1",
            "--plain",
        ],
        "",
        Err(&["--plain is for loopback only, and tcp://10.0.0.5:1 is not"]),
    );
    check(
        &["--pcap", "x.pcap", "--processor", "tcp://127.0.0.1:1"],
        "",
        Err(&["links are encrypted: give --curve-key FILE and --curve-server-key FILE"]),
    );
}

#[test]
fn every_error_reported_together() {
    check(
        &["--batch-size", "0", "--processor", "udp://x"],
        "",
        Err(&[
            "no packet source",
            "not a ZeroMQ endpoint",
            "batch_size 0",
            "links are encrypted",
        ]),
    );
    check(
        &["--interface", "eth0"],
        "pcap = 'x'",
        Err(&["not both", "no processor", "links are encrypted"]),
    );
}

/// `--check-config` prints what was resolved, and reading that back gives the same.
fn check_resolved(argv: &[&str], file: &str, want: &[&str]) {
    let parse = |argv: &[&str]| {
        Args::try_parse_from(std::iter::once("c").chain(argv.iter().copied()))
            .expect("parse the arguments")
    };
    let file: Options = toml::from_str(file).expect("parsing the config file");
    let text = Config::merge(parse(argv), file)
        .expect("merge the flags and the file")
        .resolved();
    for w in want {
        assert!(text.lines().any(|l| l == *w), "missing {w:?} in\n{text}");
    }
    let again: Options = toml::from_str(&text).expect("parsing the resolved configuration");
    let again = Config::merge(parse(&[]), again).expect("merge the resolved config");
    assert_eq!(again.resolved(), text);
}

#[test]
fn resolved_config_reads_back_the_same() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let keys = keys_toml(&dir);
    check_resolved(
        &["--interface", "eth1", "--name", "tap \"a\"\\b"],
        &format!("processors = ['tcp://10.0.0.5:5601', 'tcp://10.0.0.5:5602']\nbuffer_mb = 256\npromisc = false\n{keys}"),
        &[
            "interface = \"eth1\"",
            "processors = [\"tcp://10.0.0.5:5601\", \"tcp://10.0.0.5:5602\"]",
            "buffer_mb = 256",
            "promisc = false",
            "slow_policy = \"drop\"",
            "name = \"tap \\\"a\\\"\\\\b\"",
            "# metrics_listen: off",
            "plain = false",
            &format!("curve_key = \"{}\"", dir.path().join("k.key").display()),
            &format!("curve_server_key = \"{}\"", dir.path().join("k.pub").display()),
        ],
    );
    check_resolved(
        &[
            "--pcap",
            "x.pcap",
            "--processor",
            "tcp://127.0.0.1:1",
            "--ignore-checksums",
            "--plain",
        ],
        "filter = 'tcp'\nfrag_timeout_s = 5\nmetrics_listen = '127.0.0.1:9601'",
        &[
            "pcap = \"x.pcap\"",
            "filter = \"tcp\"",
            "ignore_checksums = true",
            "frag_timeout_s = 5",
            "slow_policy = \"block\"",
            "plain = true",
        ],
    );
}

#[test]
fn flags_win_over_file_and_policy_follows_source() {
    let args = Args::try_parse_from([
        "c",
        "--interface",
        "lo",
        "--processor",
        "tcp://127.0.0.1:1",
        "--plain",
        "--epoch",
        "7",
    ])
    .expect("parse the arguments");
    let file: Options = toml::from_str("epoch = 3\nbatch_size = 8").expect("parsing the file");
    let c = Config::merge(args, file).expect("merge the flags and the file");
    assert_eq!(
        (c.epoch, c.batch_size, c.slow_policy),
        (7, 8, SlowPolicy::Drop)
    );
}

#[test]
fn a_processor_set_gives_the_links_and_excludes_processor_flags() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let set = dir.path().join("set.toml");
    std::fs::write(
        &set,
        "initial = [0, 1]\n[processors]\n0 = 'tcp://127.0.0.1:5601'\n1 = 'tcp://127.0.0.1:5602'\n\
         2 = 'tcp://127.0.0.1:5603'\n[[change]]\nadd = 2\nswitch_at = 1700000000\n",
    )
    .expect("write the processor-set file");
    let path = set.display().to_string();
    let args = Args::try_parse_from([
        "tapflow-collector",
        "--pcap",
        "x.pcap",
        "--processor-set",
        &path,
        "--plain",
    ])
    .expect("parse the arguments");
    let config = Config::merge(args, Options::default()).expect("a valid processor set");
    // Links to every member of any epoch, in id order.
    assert_eq!(
        config.processors,
        [
            "tcp://127.0.0.1:5601",
            "tcp://127.0.0.1:5602",
            "tcp://127.0.0.1:5603"
        ]
    );
    let (_, loaded) = config
        .processor_set
        .as_ref()
        .expect("a processor set in the config");
    assert_eq!(loaded.epochs().len(), 2);
    assert!(config
        .resolved()
        .contains(&format!("processor_set = \"{path}\"")));
    // Not both; a set file that is missing, or names a member without an endpoint, is refused.
    assert!(Args::try_parse_from([
        "tapflow-collector",
        "--pcap",
        "x.pcap",
        "--processor-set",
        &path,
        "--processor",
        "tcp://127.0.0.1:1",
    ])
    .is_err());
    check(
        &["--pcap", "x.pcap", "--plain"],
        &format!("processor_set = '{path}'\nprocessors = ['tcp://127.0.0.1:1']"),
        Err(&["not both"]),
    );
    check(
        &["--pcap", "x.pcap", "--plain"],
        "processor_set = '/nonexistent/set.toml'",
        Err(&["cannot read processor set /nonexistent/set.toml"]),
    );
    std::fs::write(
        &set,
        "initial = [0, 1]\n[processors]\n0 = 'tcp://127.0.0.1:5601'\n",
    )
    .expect("write the processor-set file");
    check(
        &["--pcap", "x.pcap", "--plain"],
        &format!("processor_set = '{path}'"),
        Err(&["processor 1 is a member but has no endpoint"]),
    );
}

/// The live settings [`Config::merge`] gives for `argv` over `file`.
fn live(argv: &[&str], file: &str) -> LiveSpec {
    let base = [
        "c",
        "--interface",
        "lo",
        "--processor",
        "tcp://127.0.0.1:1",
        "--plain",
    ];
    let args = Args::try_parse_from(base.iter().chain(argv).copied()).expect("parsing the flags");
    let file: Options = toml::from_str(file).expect("parsing the file");
    match Config::merge(args, file)
        .expect("a valid configuration")
        .source
    {
        SourceSpec::Live(l) => l,
        SourceSpec::File(f) => panic!("a file source {f:?}"),
    }
}

#[test]
fn command_line_over_environment_over_file_over_default() {
    let retry = |l: LiveSpec| l.retry_for.map(|d| d.as_secs());
    // No other test of this binary sets or reads this variable.
    std::env::remove_var("TAPFLOW_INTERFACE_RETRY_S");
    assert_eq!(retry(live(&[], "")), None);
    assert_eq!(retry(live(&[], "interface_retry_s = 5")), Some(5));
    std::env::set_var("TAPFLOW_INTERFACE_RETRY_S", "7");
    assert_eq!(retry(live(&[], "interface_retry_s = 5")), Some(7));
    let flag = ["--interface-retry-s", "9"];
    assert_eq!(retry(live(&flag, "interface_retry_s = 5")), Some(9));
    std::env::remove_var("TAPFLOW_INTERFACE_RETRY_S");
    // `--no-promisc` is the flag of the file's `promisc`; switches are on from either layer.
    assert!(live(&[], "").promisc);
    assert!(!live(&[], "promisc = false").promisc);
    assert!(!live(&["--no-promisc"], "promisc = true").promisc);
    assert_eq!(
        (
            live(&[], "immediate = true").immediate,
            live(&["--immediate"], "").immediate
        ),
        (true, true)
    );
}

#[test]
fn help_shows_the_defaults_the_resolution_uses() {
    use clap::CommandFactory;
    let help = Args::command().render_help().to_string();
    for want in [
        format!("Summaries per batch [default: {DEFAULT_BATCH_SIZE}]"),
        format!("Live capture snapshot length in bytes [default: {DEFAULT_SNAPLEN}]"),
    ] {
        assert!(help.contains(&want), "missing {want:?} in\n{help}");
    }
    let c = Config::merge(
        Args::try_parse_from([
            "c",
            "--pcap",
            "x",
            "--processor",
            "tcp://127.0.0.1:1",
            "--plain",
        ])
        .expect("parsing the flags"),
        Options::default(),
    )
    .expect("a valid configuration");
    assert_eq!(c.batch_size, DEFAULT_BATCH_SIZE);
}

#[test]
fn metrics_off_loopback_need_metrics_public() {
    let base = [
        "--pcap",
        "x.pcap",
        "--processor",
        "tcp://127.0.0.1:1",
        "--plain",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().chain(extra).copied().collect()
    };
    check(&with(&["--metrics-listen", "127.0.0.1:9601"]), "", Ok(()));
    check(&with(&["--metrics-listen", "9601"]), "", Ok(()));
    check(
        &with(&["--metrics-listen", "0.0.0.0:9601"]),
        "",
        Err(&["--metrics-public"]),
    );
    check(
        &with(&[]),
        "metrics_listen = '[::]:9601'",
        Err(&["not a loopback address"]),
    );
    check(
        &with(&["--metrics-listen", "0.0.0.0:9601", "--metrics-public"]),
        "",
        Ok(()),
    );
    check(
        &with(&["--metrics-listen", "0.0.0.0:9601"]),
        "metrics_public = true",
        Ok(()),
    );
    check_resolved(
        &with(&["--metrics-listen", "0.0.0.0:9601", "--metrics-public"]),
        "",
        &["metrics_listen = \"0.0.0.0:9601\"", "metrics_public = true"],
    );
}

#[test]
fn capture_threads_are_for_live_capture_only() {
    let lo = [
        "--interface",
        "lo",
        "--processor",
        "tcp://127.0.0.1:1",
        "--plain",
    ];
    let with =
        |extra: &[&'static str]| -> Vec<&'static str> { lo.iter().chain(extra).copied().collect() };
    check(&with(&["--capture-threads", "4"]), "", Ok(()));
    assert_eq!(live(&[], "").threads, 1, "one thread by default");
    assert_eq!(live(&[], "capture_threads = 3").threads, 3, "from the file");
    assert_eq!(
        live(&["--capture-threads", "2"], "capture_threads = 3").threads,
        2,
        "the flag over the file"
    );
    check(
        &with(&["--capture-threads", "0"]),
        "",
        Err(&["capture_threads must be 1 to 64, not 0"]),
    );
    check(
        &[
            "--pcap",
            "x.pcap",
            "--processor",
            "tcp://127.0.0.1:1",
            "--plain",
            "--capture-threads",
            "2",
        ],
        "",
        Err(&["capture_threads > 1 needs a live interface"]),
    );
    check(
        &with(&[
            "--capture-threads",
            "2",
            "--metrics-listen",
            "127.0.0.1:9601",
        ]),
        "",
        Err(&["capture_threads > 1 does not serve metrics yet"]),
    );
    check_resolved(
        &with(&["--capture-threads", "2"]),
        "",
        &["capture_threads = 2"],
    );
}

#[test]
fn control_needs_the_aggregators_key_with_curve_and_loopback_when_plain() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let set = dir.path().join("set.toml");
    std::fs::write(
        &set,
        "initial = [0]\n[processors]\n0 = 'tcp://127.0.0.1:5601'\n",
    )
    .expect("write the processor-set file");
    let set = set.display().to_string();
    let base = ["--pcap", "x.pcap", "--processor-set", &set];
    fn args<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    check(
        &args(&base, &["--plain", "--control", "tcp://127.0.0.1:5800"]),
        "",
        Ok(()),
    );
    check(
        &args(&base, &["--plain", "--control", "tcp://10.0.0.9:5800"]),
        "",
        Err(&["10.0.0.9:5800 is not"]),
    );
    check(
        &args(&base, &["--plain", "--control", "5800"]),
        "",
        Err(&["not a ZeroMQ endpoint"]),
    );
    let keys = keys_toml(&dir);
    check(
        &args(&base, &["--control", "tcp://10.0.0.9:5800"]),
        &keys,
        Err(&["--control with CURVE needs --control-server-key"]),
    );
    let public = dir.path().join("k.pub").display().to_string();
    let parsed = Args::try_parse_from(std::iter::once("tapflow-collector").chain(args(
        &base,
        &[
            "--control",
            "tcp://10.0.0.9:5800",
            "--control-server-key",
            &public,
        ],
    )))
    .expect("parse the arguments");
    let file: Options = toml::from_str(&keys).expect("the keys file");
    let config = Config::merge(parsed, file).expect("valid");
    let control = config.control.expect("a control subscription");
    assert_eq!(control.endpoint, "tcp://10.0.0.9:5800");
    assert!(!control.security.is_plain());
    // --control without a processor set: nothing to apply the history to.
    check(
        &[
            "--pcap",
            "x.pcap",
            "--processor",
            "tcp://127.0.0.1:5601",
            "--plain",
            "--control",
            "tcp://127.0.0.1:5800",
        ],
        "",
        Err(&["--control needs --processor-set"]),
    );
}
