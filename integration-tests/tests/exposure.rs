//! What tapflow exposes by mistake (issue 21, items 5, 9, 10), checked on the real binaries:
//! metrics off loopback need `--metrics-public`; a config file that is not TOML, an InfluxDB
//! URL with a password where the port goes, and an InfluxDB (or proxy) echoing the
//! `Authorization` header never put a secret on stderr; a spool file another user left is
//! never replayed to InfluxDB, and a spool directory others may write is refused.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tapflow_integration_tests::craft::{tcp, Ipv4, PcapWriter};
use tapflow_integration_tests::{bin, is_root, start_pipeline_opts, CollectorSpec, PipelineRun};

const PASSWORD: &str = "S3cretPassw0rd";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `tapflow-<role> ARGS --check-config`, without the caller's `TAPFLOW_*` variables.
fn check_config(role: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin(&format!("tapflow-{role}")));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TAPFLOW_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .arg("--check-config")
        .output()
        .expect("run --check-config")
}

#[test]
fn check_config_refuses_metrics_off_loopback_without_metrics_public() {
    let roles: [(&str, &[&str]); 3] = [
        (
            "collector",
            &[
                "--pcap",
                "x.pcap",
                "--processor",
                "tcp://127.0.0.1:1",
                "--plain",
            ],
        ),
        (
            "processor",
            &[
                "--listen",
                "tcp://127.0.0.1:1",
                "--aggregator",
                "tcp://127.0.0.1:2",
                "--plain",
            ],
        ),
        (
            "aggregator",
            &[
                "--listen",
                "tcp://127.0.0.1:1",
                "--processors",
                "1",
                "--plain",
            ],
        ),
    ];
    for (role, base) in roles {
        let with =
            |extra: &[&'static str]| -> Vec<&str> { base.iter().chain(extra).copied().collect() };
        let out = check_config(role, &with(&["--metrics-listen", "0.0.0.0:9600"]));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{role}: {err}");
        assert!(err.contains("--metrics-public"), "{role}: {err}");
        let out = check_config(role, &with(&["--metrics-listen", "127.0.0.1:9600"]));
        assert!(out.status.success(), "{role}: {}", text(&out.stderr));
        let out = check_config(
            role,
            &with(&["--metrics-listen", "0.0.0.0:9600", "--metrics-public"]),
        );
        assert!(out.status.success(), "{role}: {}", text(&out.stderr));
        let resolved = text(&out.stdout);
        assert!(
            resolved.lines().any(|l| l == "metrics_public = true"),
            "{role}: {resolved}"
        );
    }
}

#[test]
fn config_and_url_errors_show_no_secret() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let password = dir.path().join("influx.password");
    std::fs::write(&password, format!("{PASSWORD}\n")).expect("write the password file");
    let password = password.display().to_string();
    let base = [
        "--listen",
        "tcp://127.0.0.1:1",
        "--processors",
        "1",
        "--plain",
    ];
    let mut cases: Vec<Vec<&str>> = vec![vec!["--config", &password]];
    let urls = [
        format!("http://tapflow:{PASSWORD}"),
        format!("http://tapflow:{PASSWORD}/prefix"),
        format!("http://tapflow:{PASSWORD}@127.0.0.1:8086"),
        "http://127.0.0.1:99999".to_owned(),
        "http://127.0.0.1:abc".to_owned(),
        "https://[::1".to_owned(),
        "http://:8086".to_owned(),
    ];
    for url in &urls {
        cases.push(vec!["--influx-url", url, "--influx-db", "tapflow"]);
    }
    for case in cases {
        let args: Vec<&str> = base.iter().chain(&case).copied().collect();
        let out = check_config("aggregator", &args);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{case:?}: {stderr}");
        assert!(
            !stderr.contains(PASSWORD) && !stdout.contains(PASSWORD),
            "{case:?}: {stdout}{stderr}"
        );
    }
}

/// What the fake InfluxDB saw: each request's path and (gunzipped) body.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A loopback HTTP server standing in for InfluxDB (or a proxy before it): every request is
/// recorded and answered by `reply(request number, Authorization header)` as (status, body).
fn fake_influx(reply: fn(usize, &str) -> (u16, String)) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("the bound address").port();
    let seen = Seen::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().flatten().enumerate() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(&stream);
            let (mut line, mut auth, mut len, mut gzip) = (String::new(), String::new(), 0, false);
            let _ = r.read_line(&mut line);
            let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).map_or(true, |k| k <= 2) {
                    break;
                }
                let (name, value) = h.split_once(':').unwrap_or_default();
                let value = value.trim().to_owned();
                match name.to_ascii_lowercase().as_str() {
                    "authorization" => auth = value,
                    "content-length" => len = value.parse().unwrap_or(0),
                    "content-encoding" => gzip = value == "gzip",
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let body = if gzip {
                let mut s = String::new();
                let _ = flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut s);
                s
            } else {
                text(&body)
            };
            record.lock().expect("the request log").push((path, body));
            let (status, body) = reply(n, &auth);
            let mut out = &stream;
            let _ = write!(
                out,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen)
}

/// 25 unanswered SYNs to port 22 of 25 hosts: 25 sessions and an address scan.
fn scan(path: &Path) {
    let mut w = PcapWriter::create(path);
    for i in 0..25u8 {
        let syn = Ipv4::tcp(
            ([192, 168, 7, 7], 40_000 + u16::from(i)),
            ([10, 1, 0, 1 + i], 22),
            tcp::SYN,
            1000,
            0,
            &[],
        );
        w.packet(1_700_000_000_000_000 + u64::from(i) * 100_000, &syn);
    }
    w.finish();
}

/// The pipeline over [`scan`], the aggregator writing to `port` with basic auth.
fn run(dir: &Path, port: u16, spool: &Path) -> PipelineRun {
    let pcap = dir.join("scan.pcap");
    scan(&pcap);
    let password = dir.join("influx.password");
    std::fs::write(&password, format!("{PASSWORD}\n")).expect("write the password file");
    let (url, pw, spool) = (
        format!("http://127.0.0.1:{port}"),
        password.display().to_string(),
        spool.display().to_string(),
    );
    let agg = [
        "--influx-url",
        &url,
        "--influx-db",
        "tapflow",
        "--influx-user",
        "tapflow",
        "--influx-password-file",
        &pw,
        "--influx-spool-dir",
        &spool,
        "--influx-finish-s",
        "3",
    ];
    start_pipeline_opts(&[CollectorSpec::pcap(&pcap, 1)], 1, &[], &agg)
        .wait(Duration::from_secs(60))
}

#[test]
fn influx_error_bodies_echoing_the_credentials_are_not_logged() {
    // CREATE DATABASE is refused with the header in a JSON error, then the writes get a 500,
    // a 401 and 400s with it in plain text (a debugging proxy).
    let (port, seen) = fake_influx(|n, auth| match n {
        0 => (
            400,
            format!("{{\"error\":\"bad request, Authorization: {auth}\"}}"),
        ),
        1 => (
            500,
            format!("upstream failed for Authorization: {auth}\r\n"),
        ),
        2 => (401, format!("who is {auth}?")),
        _ => (
            400,
            format!("{{\"error\":\"unable to parse; you sent {auth}\"}}"),
        ),
    });
    let dir = tempfile::tempdir().expect("create a temp dir");
    let run = run(dir.path(), port, &dir.path().join("spool"));
    assert!(run.all_exited(), "{}", run.exit_codes());
    let log = &run.aggregator.1;
    let basic = "dGFwZmxvdzpTM2NyZXRQYXNzdzByZA=="; // base64("tapflow:S3cretPassw0rd")
    assert!(
        seen.lock().expect("the request log").len() >= 4,
        "the fake InfluxDB was not asked enough:\n{log}"
    );
    assert!(
        !log.contains(basic) && !log.contains(PASSWORD),
        "a credential reached the log:\n{log}"
    );
    assert!(
        log.contains("<redacted>"),
        "no echoed header reached the log:\n{log}"
    );
}

#[test]
fn a_spool_left_by_another_user_is_not_replayed() {
    if !is_root() {
        println!("skipped: giving a file to another user needs root");
        return;
    }
    let (port, seen) = fake_influx(|_, _| (204, String::new()));
    let dir = tempfile::tempdir().expect("create a temp dir");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).expect("create the spool dir");
    let forged = spool.join(format!("{:020}.lp", 0));
    std::fs::write(
        &forged,
        "tapflow_alert,kind=forged,event=start count=1i 1\n",
    )
    .expect("write the forged spool file");
    std::os::unix::fs::chown(&forged, Some(65534), Some(65534)).expect("give the file away");
    let run = run(dir.path(), port, &spool);
    assert!(run.all_exited(), "{}", run.exit_codes());
    assert_eq!(run.aggregator.0, Some(0), "{}", run.aggregator.1);
    let seen = seen.lock().expect("the request log");
    assert!(
        seen.iter().any(|(p, _)| p.starts_with("/write")),
        "nothing was written: {seen:?}\n{}",
        run.aggregator.1
    );
    assert!(
        !seen.iter().any(|(_, body)| body.contains("forged")),
        "the forged point was replayed"
    );
    assert!(
        run.aggregator.1.contains("not replayed") && forged.exists(),
        "{}",
        run.aggregator.1
    );
    // A spool directory anyone may write is refused at start.
    use std::os::unix::fs::PermissionsExt as _;
    let open = dir.path().join("open-spool");
    std::fs::create_dir(&open).expect("create the open spool dir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777))
        .expect("chmod 777 the spool dir");
    let out = Command::new(bin("tapflow-aggregator"))
        .args([
            "--listen",
            "tcp://127.0.0.1:1",
            "--processors",
            "1",
            "--plain",
        ])
        .args([
            "--influx-url",
            &format!("http://127.0.0.1:{port}"),
            "--influx-db",
            "t",
        ])
        .arg("--influx-spool-dir")
        .arg(&open)
        .output()
        .expect("run the aggregator");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("writable by group or others"), "{err}");
}
