//! `deploy/` kept honest: the example configs load in the real binaries (`--check-config`), the
//! systemd units start those binaries with flags they accept (and pass `systemd-analyze verify`
//! where it exists), and every query of the Grafana dashboard returns data from a real influxd
//! filled by a pipeline run over a real capture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tapflow_aggregator::points::service_tag;
use tapflow_integration_tests::craft::{first_packet_us, handshakes_capture};
use tapflow_integration_tests::craft_service::http_capture;
use tapflow_integration_tests::influxd::Influxd;
use tapflow_integration_tests::{
    bin, read_text, repo_root, shared_pcaps, start_pipeline_opts, CollectorSpec,
};
use tapflow_proto::DropReason;

const ROLES: [&str; 3] = ["collector", "processor", "aggregator"];
const DB: &str = "tapflow";

/// The example configs as deployed: copies whose key paths (`/etc/tapflow/keys/...`) name key
/// files made for this run by the binaries' own `keygen`, under the names the examples use.
struct Examples {
    dir: tempfile::TempDir,
}

impl Examples {
    fn new() -> Examples {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).expect("create the keys dir");
        for role in ROLES {
            let out = Command::new(bin(&format!("tapflow-{role}")))
                .args(["keygen", "--out"])
                .arg(keys.join(role))
                .output()
                .expect("run keygen");
            assert!(out.status.success(), "{role} keygen: {}", text(&out.stderr));
        }
        for (clients, role) in [("collectors", "collector"), ("processors", "processor")] {
            std::fs::copy(
                keys.join(format!("{role}.pub")),
                keys.join(format!("{clients}.clients")),
            )
            .expect("copy the public key into the clients file");
        }
        Examples { dir }
    }

    /// `deploy/config/<role>.toml` with its key paths in this run's key directory.
    fn path(&self, role: &str) -> PathBuf {
        let original = repo_root().join(format!("deploy/config/{role}.toml"));
        let body = read_text(&original);
        let keys = format!("{}/", self.dir.path().join("keys").display());
        assert!(
            body.contains("\ncurve_key = \"/etc/tapflow/keys/"),
            "{}: no curve_key",
            original.display()
        );
        let copy = self.dir.path().join(format!("{role}.toml"));
        let set = repo_root().join("deploy/config/processor-set.toml");
        let body = body.replace("/etc/tapflow/keys/", &keys).replace(
            "/etc/tapflow/processor-set.toml",
            &set.display().to_string(),
        );
        std::fs::write(&copy, body).expect("write the example copy");
        copy
    }
}

/// Runs `tapflow-<role> ARGS --check-config` with no `TAPFLOW_*` variable from the caller's
/// environment, so only the flags and the file count.
fn check_config(role: &str, args: &[String]) -> Output {
    let mut cmd = Command::new(bin(&format!("tapflow-{role}")));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TAPFLOW_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.args(args).arg("--check-config").output();
    assert!(out.is_ok(), "tapflow-{role}: {out:?}");
    out.expect("run the binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A TOML line without its comment, spaces around `=` and at the ends normalised.
fn setting(line: &str) -> Option<String> {
    let mut in_string = false;
    let mut escaped = false;
    let mut end = line.len();
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
    if line.is_empty() {
        return None;
    }
    Some(match line.split_once('=') {
        Some((k, v)) => format!("{} = {}", k.trim(), v.trim()),
        None => line.to_owned(),
    })
}

#[test]
fn example_configs_load() {
    let examples = Examples::new();
    for role in ROLES {
        let path = examples.path(role);
        let file = read_text(&path);
        let out = check_config(role, &["--config".into(), path.display().to_string()]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{role}: {} rejected:\n{stderr}",
            path.display()
        );
        // Every setting of the example is in the resolved configuration, with the file's value.
        let resolved: Vec<&str> = stdout.lines().collect();
        let mut settings = 0;
        for s in file.lines().filter_map(setting) {
            assert!(
                resolved.contains(&s.as_str()),
                "{role}: {s:?} from {} is not in the resolved configuration:\n{stdout}",
                path.display()
            );
            settings += 1;
        }
        println!(
            "{role}: {settings} settings of {} resolved as written",
            path.display()
        );
        let key_line = match role {
            "collector" => "interface = \"eth1\"",
            "processor" => "aggregator = \"tcp://127.0.0.1:5700\"",
            _ => "influx_url = \"http://127.0.0.1:8086\"",
        };
        assert!(resolved.contains(&key_line), "{role}: {stdout}");

        // A misspelled key and a bad value: exit 2, the problem named, no panic.
        let dir = tempfile::tempdir().expect("create a temp dir");
        let first_key = file
            .lines()
            .filter_map(setting)
            .find_map(|s| s.split_once(" = ").map(|(k, _)| k.to_owned()));
        assert!(first_key.is_some(), "{role}: no setting in the example");
        let first_key = first_key.expect("a setting in the example");
        let typo = format!("{first_key}x");
        let misspelled = file.replacen(&format!("\n{first_key} = "), &format!("\n{typo} = "), 1);
        assert_ne!(misspelled, file, "{role}: {first_key} not at a line start");
        let (bad_key, bad_line, message) = match role {
            "collector" => (
                "snaplen",
                "snaplen = 10",
                "snaplen 10 is outside 64..=262144",
            ),
            "processor" => (
                "collectors",
                "collectors = 0",
                "collectors must be at least 1",
            ),
            _ => (
                "detect_window_s",
                "detect_window_s = 0",
                "detect_window_s must be at least 1",
            ),
        };
        let bad_value: String = file
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{bad_key} =")) {
                    bad_line.to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(
            bad_value.trim_end(),
            file.trim_end(),
            "{role}: no {bad_key}"
        );
        for (name, contents, want) in [
            ("misspelled", misspelled, format!("unknown field `{typo}`")),
            ("bad-value", bad_value, message.to_owned()),
        ] {
            let copy = dir.path().join(format!("{role}-{name}.toml"));
            std::fs::write(&copy, contents).expect("write the edited example");
            let out = check_config(role, &["--config".into(), copy.display().to_string()]);
            let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
            assert_eq!(out.status.code(), Some(2), "{role} {name}: {stderr}");
            assert!(stdout.is_empty(), "{role} {name} printed {stdout}");
            assert!(!stderr.contains("panicked"), "{role} {name}: {stderr}");
            assert!(
                stderr.starts_with(&format!("tapflow-{role}: invalid configuration:\n")),
                "{role} {name}: {stderr}"
            );
            assert!(stderr.contains(&want), "{role} {name}: {stderr}");
            if name == "misspelled" {
                // TOML errors name the file and the line.
                assert!(
                    stderr.contains(&copy.display().to_string()) && stderr.contains("line "),
                    "{role} {name}: {stderr}"
                );
            } else {
                // One line per problem.
                assert_eq!(stderr.lines().count(), 2, "{role} {name}: {stderr}");
            }
            println!(
                "{role} {name}: exit 2: {}",
                stderr.lines().skip(1).collect::<Vec<_>>().join(" / ")
            );
        }
    }
}

/// A unit file's `[Service]` settings, in order (a key may repeat), continuation lines joined.
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for line in unit.lines() {
        let line = line.trim();
        if pending.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        let full = format!("{pending}{line}");
        pending.clear();
        if full.starts_with('[') {
            section = full;
        } else if let Some((k, v)) = full.split_once('=') {
            if section == "[Service]" {
                out.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    out
}

fn get<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// systemd's specifiers in `s` for `instance` on host `host`; any other fails the test.
fn specifiers(s: &str, instance: &str, host: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('i' | 'I') => out.push_str(instance),
            Some('H') => out.push_str(host),
            Some('%') => out.push('%'),
            other => panic!("specifier %{other:?} in {s:?} is not handled by this test"),
        }
    }
    out
}

#[test]
fn systemd_units_match_the_binaries() {
    let examples = Examples::new();
    let dir = repo_root().join("deploy/systemd");
    let mut units: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("list deploy/systemd")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    let mut roles_seen = Vec::new();
    let mut verify_targets = Vec::new();
    for unit in &units {
        let file_name = unit
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let body = std::fs::read_to_string(unit).expect("read the unit file");
        let settings = service_settings(&body);
        let exec = get(&settings, "ExecStart");
        assert_eq!(exec.len(), 1, "{file_name}: one ExecStart");
        assert!(
            !exec[0].contains('"') && !exec[0].contains('\''),
            "{file_name}: quoting in ExecStart is not handled by this test"
        );
        let argv: Vec<&str> = exec[0].split_whitespace().collect();
        let binary = argv[0].rsplit('/').next().unwrap_or_default();
        let role = binary.strip_prefix("tapflow-").unwrap_or_default();
        assert!(
            ROLES.contains(&role),
            "{file_name}: ExecStart runs {binary}, not a tapflow binary"
        );
        assert_eq!(
            argv[0],
            format!("/usr/local/bin/tapflow-{role}"),
            "{file_name}: deploy/README.md installs the binaries in /usr/local/bin"
        );
        let template = file_name == format!("tapflow-{role}@.service");
        assert!(
            template || file_name == format!("tapflow-{role}.service"),
            "{file_name} runs tapflow-{role}"
        );
        roles_seen.push(role.to_owned());
        let instance = match role {
            "collector" => "tap0",
            _ => "2",
        };
        if template {
            verify_targets.push(file_name.replace("@.", &format!("@{instance}.")));
        } else {
            verify_targets.push(file_name.clone());
        }
        assert_eq!(get(&settings, "User"), ["tapflow"], "{file_name}");
        assert_eq!(get(&settings, "Restart"), ["on-failure"], "{file_name}");
        assert_eq!(get(&settings, "NoNewPrivileges"), ["yes"], "{file_name}");
        assert_eq!(get(&settings, "ProtectSystem"), ["strict"], "{file_name}");
        assert!(!get(&settings, "RestartSec").is_empty(), "{file_name}");

        // The flags, with the instance and host filled in and the example config in place of
        // /etc/tapflow's, are accepted and win over the file.
        let config = format!("/etc/tapflow/{role}.toml");
        let mut args: Vec<String> = Vec::new();
        let mut config_given = false;
        for a in &argv[1..] {
            let a = specifiers(a, instance, "sensor1");
            if a == config {
                config_given = true;
                args.push(examples.path(role).display().to_string());
            } else {
                args.push(a);
            }
        }
        assert!(
            config_given,
            "{file_name}: ExecStart lacks --config {config}"
        );
        let out = check_config(role, &args);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file_name}: tapflow-{role} {args:?} --check-config:\n{stderr}"
        );
        for pair in args.windows(2) {
            let Some(flag) = pair[0].strip_prefix("--") else {
                continue;
            };
            if flag == "config" || pair[1].starts_with("--") {
                continue;
            }
            let key = flag.replace('-', "_");
            let (quoted, bare) = (
                format!("{key} = \"{}\"", pair[1]),
                format!("{key} = {}", pair[1]),
            );
            assert!(
                stdout.lines().any(|l| l == quoted || l == bare),
                "{file_name}: --{flag} {} is not in the resolved configuration:\n{stdout}",
                pair[1]
            );
        }
        println!(
            "{file_name}: tapflow-{role} {} --check-config: exit 0",
            args.join(" ")
        );

        match role {
            "collector" => {
                for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
                    let caps = get(&settings, key).join(" ");
                    let mut caps: Vec<&str> = caps.split_whitespace().collect();
                    caps.sort_unstable();
                    assert_eq!(caps, ["CAP_NET_ADMIN", "CAP_NET_RAW"], "{file_name}: {key}");
                }
            }
            "aggregator" => {
                assert_eq!(
                    get(&settings, "ExecReload"),
                    ["/bin/kill -HUP $MAINPID"],
                    "{file_name}: SIGHUP reopens the logs"
                );
                // ProtectSystem=strict leaves only these writable: every path the aggregator
                // writes must be under them.
                let logs = format!("/var/log/{}/", get(&settings, "LogsDirectory").join(""));
                let state = format!("/var/lib/{}/", get(&settings, "StateDirectory").join(""));
                for line in stdout.lines() {
                    let Some((key, value)) = line.split_once(" = ") else {
                        continue;
                    };
                    let value = value.trim_matches('"');
                    let under = if key.ends_with("_log") {
                        &logs
                    } else if key == "influx_spool_dir" || key == "state_dir" {
                        &state
                    } else {
                        continue;
                    };
                    assert!(
                        format!("{value}/").starts_with(under.as_str()),
                        "{file_name}: {key} = {value} is outside {under}, read-only under ProtectSystem=strict"
                    );
                }
            }
            _ => {}
        }
    }
    roles_seen.sort_unstable();
    assert_eq!(roles_seen, ["aggregator", "collector", "processor"]);
    systemd_analyze_verify(&units, &verify_targets);
}

/// `systemd-analyze verify` on copies of the units whose ExecStart names the built binaries
/// (it checks that they exist); any complaint about a tapflow unit fails.
fn systemd_analyze_verify(units: &[PathBuf], targets: &[String]) {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIP: systemd-analyze not installed; units not verified by systemd");
        return;
    }
    let dir = tempfile::tempdir().expect("create a temp dir");
    let bin_dir = bin("tapflow-collector")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for unit in units {
        let body = std::fs::read_to_string(unit).expect("read the unit file");
        let body = body.replace("/usr/local/bin/", &format!("{}/", bin_dir.display()));
        let name = unit.file_name().unwrap_or_default();
        std::fs::write(dir.path().join(name), body).expect("write the unit file");
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(targets.iter().map(|t| dir.path().join(t)))
        .output()
        .expect("run systemd-analyze");
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let complaints: Vec<&str> = said.lines().filter(|l| l.contains("tapflow")).collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify {targets:?}: {}\n{said}",
        out.status
    );
    println!("systemd-analyze verify {}: clean", targets.join(" "));
}

/// One InfluxQL query of the dashboard and where it comes from.
struct Query {
    title: String,
    query: String,
}

/// Every query of the dashboard: panels' targets (in rows too), annotations, variables.
fn dashboard_queries(dash: &Value) -> (Vec<Query>, Vec<(String, String)>) {
    fn panels(list: &Value, out: &mut Vec<Query>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            for t in p["targets"].as_array().into_iter().flatten() {
                assert_eq!(
                    t["rawQuery"].as_bool(),
                    Some(true),
                    "{title}: target {} is not a raw InfluxQL query",
                    t["refId"]
                );
                assert_eq!(t["datasource"]["type"], "influxdb", "{title}");
                let query = t["query"].as_str().unwrap_or_default().to_owned();
                assert!(!query.is_empty(), "{title}: empty query");
                out.push(Query {
                    title: format!("{title} [{}]", t["refId"].as_str().unwrap_or("?")),
                    query,
                });
            }
            panels(&p["panels"], out);
        }
    }
    let mut queries = Vec::new();
    panels(&dash["panels"], &mut queries);
    for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
        if a["datasource"]["type"] == "influxdb" {
            queries.push(Query {
                title: format!("annotation {}", a["name"].as_str().unwrap_or_default()),
                query: a["query"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    let mut variables = Vec::new();
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        match v["type"].as_str() {
            Some("query") => {
                let q = v["query"]
                    .as_str()
                    .or(v["query"]["query"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                variables.push((name, q));
            }
            Some("datasource") => assert_eq!(v["query"], "influxdb", "variable {name}"),
            other => panic!("variable {name}: type {other:?} is not handled by this test"),
        }
    }
    (queries, variables)
}

/// Rows in an InfluxDB answer and the columns that are empty (null in every row), or its
/// error.
fn rows(answer: &Value) -> Result<(usize, Vec<String>), String> {
    let result = &answer["results"][0];
    if let Some(e) = result["error"].as_str().or(answer["error"].as_str()) {
        return Err(e.to_owned());
    }
    let mut n = 0;
    let mut filled: BTreeMap<String, bool> = BTreeMap::new();
    for series in result["series"].as_array().into_iter().flatten() {
        let columns: Vec<&str> = series["columns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c.as_str().unwrap_or_default())
            .collect();
        for row in series["values"].as_array().into_iter().flatten() {
            n += 1;
            for (i, c) in columns.iter().enumerate() {
                *filled.entry((*c).to_owned()).or_default() |= !row[i].is_null();
            }
        }
    }
    let empty = filled
        .into_iter()
        .filter(|(_, f)| !f)
        .map(|(c, _)| c)
        .collect();
    Ok((n, empty))
}

/// Grafana's regex formatting of a multi-value variable for InfluxQL: `(a|b)`, escaped.
fn regex_values(values: &[String]) -> String {
    let escaped: Vec<String> = values
        .iter()
        .map(|v| {
            v.chars()
                .flat_map(|c| {
                    let special = "\\/.^$|?*+()[]{}".contains(c);
                    special.then_some('\\').into_iter().chain([c])
                })
                .collect()
        })
        .collect();
    format!("({})", escaped.join("|"))
}

fn unix_ms(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i128)
}

#[test]
fn grafana_dashboard_queries_return_data() {
    let path = repo_root().join("deploy/grafana/tapflow-dashboard.json");
    let dash: Value = serde_json::from_str(&read_text(&path)).expect("parse the Grafana dashboard");
    assert!(dash["schemaVersion"].as_u64() >= Some(36), "schemaVersion");
    let (queries, variables) = dashboard_queries(&dash);
    assert!(queries.len() >= 8, "only {} queries", queries.len());
    // Every drop reason a collector counts has its column.
    let drop_reasons: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    for reason in &drop_reasons {
        assert!(
            queries
                .iter()
                .any(|q| q.query.contains(&format!("last(\"{reason}\")"))),
            "no panel shows the collector drop reason {reason}"
        );
    }

    let Some(pcaps) = shared_pcaps() else { return };
    let Some(influx) = Influxd::start() else {
        return;
    };
    // A FIN scan: a port scan and a stealth scan, so alerts as well as sessions and traffic.
    let pcap = pcaps.join("evilfingers-nmap-fin-scan.pcap");
    let started = SystemTime::now();
    let spool = tempfile::tempdir().expect("create the spool dir");
    let (url, spool_dir) = (influx.url(), spool.path().display().to_string());
    let agg = [
        "--influx-url",
        &url,
        "--influx-db",
        DB,
        "--influx-spool-dir",
        &spool_dir,
        "--influx-finish-s",
        "30",
    ];
    // Sessions with handshakes to one server over the same minutes, from a second tap: data
    // for the latency panels (the scan has none).
    let made = tempfile::tempdir().expect("create a dir for the generated capture");
    let handshakes = made.path().join("handshakes.pcap");
    let scan_start = first_packet_us(&pcap).expect("the scan capture's first packet time");
    handshakes_capture(
        &handshakes,
        scan_start,
        ([192, 0, 2, 10], 443),
        40,
        1_000_000,
        (2_000, 500),
    );
    // HTTP sessions over the same minutes, from a third tap: sessions with a service for the
    // traffic-by-service panels (once the classifier names them).
    let http = made.path().join("http.pcap");
    http_capture(
        &http,
        scan_start,
        [192, 0, 2, 20],
        30,
        2_000_000,
        "www.example.com",
    );
    let collectors = [
        CollectorSpec::pcap(&pcap, 2),
        CollectorSpec::pcap(&handshakes, 2),
        CollectorSpec::pcap(&http, 2),
    ];
    let run = start_pipeline_opts(&collectors, 2, &[], &agg).wait(Duration::from_secs(50));
    assert!(run.all_exited(), "{}", run.aggregator.1);
    let report = run.accounting();
    assert_eq!(
        report["influx"]["points_in_spool"].as_u64(),
        Some(0),
        "{report:#}"
    );
    assert!(
        !run.alerts_log.is_empty(),
        "the capture raised no alert: nothing to show in the alert panels"
    );

    // The capture's span, from the conn log, padded: Grafana's time range over the replay.
    let (mut first, mut last) = (f64::MAX, f64::MIN);
    for line in run.conn_log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_default();
        assert!(v["ts"].is_f64(), "no ts: {line}");
        let ts = v["ts"].as_f64().expect("the record's ts");
        first = first.min(ts);
        last = last.max(ts + v["duration"].as_f64().unwrap_or(0.0));
    }
    assert!(first <= last, "empty conn log");
    let pad_ms = 5 * 60 * 1000;
    let capture_range = (
        (first * 1000.0) as i128 - pad_ms,
        (last * 1000.0) as i128 + pad_ms,
    );
    // tapflow_health is stamped with the wall clock at the end of the run: the range an
    // operator looks at after the replay ("last 15 minutes").
    let wall_range = (
        unix_ms(started) - 60_000,
        unix_ms(SystemTime::now()) + 60_000,
    );

    let mut failures = Vec::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for (name, q) in &variables {
        let answer = influx.query(DB, q);
        let found: Vec<String> = answer["results"][0]["series"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["values"].as_array().into_iter().flatten())
            .filter_map(|row| row[1].as_str().map(str::to_owned))
            .collect();
        println!("variable ${name}: {} values {found:?}: {q}", found.len());
        if found.is_empty() {
            failures.push(format!("variable ${name}: no values: {q}\n{answer}"));
        }
        values.insert(name.clone(), regex_values(&found));
    }
    for Query { title, query } in &queries {
        let (from, to) = if query.contains("tapflow_health") {
            wall_range
        } else {
            capture_range
        };
        let mut q = query
            .replace(
                "$timeFilter",
                &format!("time >= {from}ms and time <= {to}ms"),
            )
            .replace("$__interval_ms", "60000")
            .replace("$__interval", "1m");
        for (name, value) in &values {
            q = q
                .replace(&format!("${{{name}}}"), value)
                .replace(&format!("${name}"), value);
        }
        // `$` followed by a name is a macro or variable nothing replaced (`$/` ends a regex).
        let left = q.match_indices('$').any(|(i, _)| {
            q[i + 1..].starts_with(|c: char| c.is_alphabetic() || c == '_' || c == '{')
        });
        if left {
            failures.push(format!("{title}: unknown macro or variable left in {q}"));
            continue;
        }
        match rows(&influx.query(DB, &q)) {
            Ok((n, empty)) => {
                println!("{title}: {n} rows: {q}");
                if n == 0 {
                    failures.push(format!("{title}: no rows: {q}"));
                }
                // An empty column is a field or tag the schema does not have (renamed,
                // misspelled), except drop reasons, written only when not zero.
                let empty: Vec<&String> = empty
                    .iter()
                    .filter(|c| !drop_reasons.contains(&c.as_str()))
                    .collect();
                if !empty.is_empty() {
                    failures.push(format!(
                        "{title}: columns {empty:?} empty in every row: {q}"
                    ));
                }
            }
            Err(e) => failures.push(format!("{title}: error {e}: {q}")),
        }
    }
    failures.extend(service_panel_failures(&influx, &run.conn_log));
    assert!(
        failures.is_empty(),
        "dashboard queries that show nothing:\n{}",
        failures.join("\n")
    );
}

/// Traffic by service (`tapflow_service`): every session of the conn log in exactly one window,
/// under its service's tag, with its packets.
fn service_panel_failures(influx: &Influxd, conn_log: &str) -> Vec<String> {
    let mut want: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in conn_log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_default();
        let tag = service_tag(v["service"].as_str());
        let e = want.entry(tag.to_owned()).or_default();
        e.0 += 1;
        e.1 += v["orig_pkts"].as_u64().unwrap_or(0) + v["resp_pkts"].as_u64().unwrap_or(0);
    }
    let answer = influx.query(
        DB,
        "SELECT sum(\"sessions\"), sum(\"packets\") FROM \"tapflow_service\" GROUP BY \"service\"",
    );
    let got: BTreeMap<String, (u64, u64)> = answer["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let row = &s["values"][0];
            (
                s["tags"]["service"].as_str().unwrap_or("?").to_owned(),
                (row[1].as_u64().unwrap_or(0), row[2].as_u64().unwrap_or(0)),
            )
        })
        .collect();
    println!("sessions and packets by service: {got:?}");
    if got == want {
        Vec::new()
    } else {
        vec![format!(
            "tapflow_service (sessions, packets) by service {got:?}, the conn log's {want:?}"
        )]
    }
}
