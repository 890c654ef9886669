//! The live dashboard (`--http-listen`) in a real browser: headless Chromium loads the page
//! while a real pipeline (collector -> processors -> aggregator, separate processes) runs, and
//! the DOM it renders is checked against the logs the same run wrote (sessions, alert
//! episodes, a searched uid), with a console free of errors. A screenshot of each run is kept
//! under `target/dashboard-test/` (printed). A second run checks that strings from the wire (a
//! collector's name, an HTTP Host header) reach the page as text, never as markup.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapflow_integration_tests::browser::{self, Page};
use tapflow_integration_tests::craft::{Ipv4, PcapWriter};
use tapflow_integration_tests::{bin, endpoint, free_ports, repo_root, Proc};

const TIMEOUT: Duration = Duration::from_secs(180);

/// A pipeline whose aggregator serves the dashboard and lingers after the end of the run.
struct Run {
    dir: tempfile::TempDir,
    aggregator: Proc,
    others: Vec<Proc>,
    url: String,
}

fn start(pcap: &Path, processors: usize, collector_name: &str) -> Run {
    let dir = tempfile::tempdir().expect("create the run's directory");
    let ports = free_ports(processors + 2);
    let (agg, http) = (ports[0], ports[1]);
    let path = |name: &str| dir.path().join(name).display().to_string();
    let mut args: Vec<String> = ["--plain", "--listen", &endpoint(agg), "--exit-on-eos"]
        .map(String::from)
        .to_vec();
    args.extend(["--processors".into(), processors.to_string()]);
    for (flag, file) in [
        ("--conn-log", "conn.jsonl"),
        ("--alerts-log", "alerts.jsonl"),
        ("--health-log", "health.jsonl"),
    ] {
        args.extend([flag.to_owned(), path(file)]);
    }
    args.extend([
        "--http-listen".into(),
        http.to_string(),
        "--http-linger".into(),
    ]);
    let aggregator = Proc::spawn("aggregator", &bin("tapflow-aggregator"), &args, dir.path());
    let mut others = Vec::new();
    let mut collector: Vec<String> = vec![
        "--plain".into(),
        "--pcap".into(),
        pcap.display().to_string(),
    ];
    for (i, port) in ports[2..].iter().enumerate() {
        let args: Vec<String> = [
            "--plain",
            "--listen",
            &endpoint(*port),
            "--aggregator",
            &endpoint(agg),
            "--collectors",
            "1",
            "--exit-on-eos",
            "--name",
            &format!("processor{i}"),
        ]
        .map(String::from)
        .to_vec();
        let name = format!("processor{i}");
        others.push(Proc::spawn(
            &name,
            &bin("tapflow-processor"),
            &args,
            dir.path(),
        ));
        collector.extend(["--processor".into(), endpoint(*port)]);
    }
    collector.extend(["--name".into(), collector_name.to_owned()]);
    others.push(Proc::spawn(
        "collector",
        &bin("tapflow-collector"),
        &collector,
        dir.path(),
    ));
    Run {
        dir,
        aggregator,
        others,
        url: format!("http://127.0.0.1:{http}/"),
    }
}

impl Run {
    /// Waits until the run has ended and the aggregator serves its final state.
    fn wait_ended(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        for p in &mut self.others {
            let status = p.wait_until(deadline);
            assert!(
                status.is_some_and(|s| s.success()),
                "{} {status:?}: {}",
                p.name,
                p.stderr()
            );
        }
        while !self
            .aggregator
            .stderr()
            .contains("serving the dashboard until")
        {
            assert!(
                Instant::now() < deadline
                    && self.aggregator.child.try_wait().ok().flatten().is_none(),
                "the aggregator did not linger: {}",
                self.aggregator.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self, name: &str) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join(name))
            .expect("read a log of the run")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// SIGTERM ends the lingering aggregator, exit 0.
    fn stop(mut self) {
        let pid = self.aggregator.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let status = self
            .aggregator
            .wait_until(Instant::now() + Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| s.success()),
            "the aggregator ends on SIGTERM with 0: {status:?} {}",
            self.aggregator.stderr()
        );
    }
}

/// The page checked for what every load must show: rendered, no error on the page nor in
/// the console.
fn load(url: &str) -> Page {
    let page = browser::load(url);
    assert_eq!(
        page.body_data("ready"),
        Some("1"),
        "the page rendered:\n{}",
        page.dom
    );
    assert_eq!(
        page.body_data("errors"),
        Some("0"),
        "errors on the page:\n{}",
        page.dom
    );
    assert!(page.console.is_empty(), "console: {:#?}", page.console);
    page
}

fn artifact(name: &str) -> PathBuf {
    let path = repo_root().join("target/dashboard-test").join(name);
    println!("screenshot: {}", path.display());
    path
}

#[test]
fn the_page_shows_what_the_logs_hold_during_a_real_run() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let pcap = dir.path().join("demo.pcap");
    let gen = Command::new(bin("tapflow-gen"))
        .args([
            "--packets",
            "100000",
            "--flows",
            "10000",
            "--seed",
            "1",
            "--out",
        ])
        .arg(&pcap)
        .status();
    assert!(gen.is_ok_and(|s| s.success()), "tapflow-gen");
    let mut run = start(&pcap, 2, "collector0");
    // While it runs: the page renders whatever has arrived, without errors.
    let live = load(&run.url);
    assert!(live.text("session-count").is_some(), "{}", live.dom);
    run.wait_ended();

    let conns = run.log("conn.jsonl");
    let alerts = run.log("alerts.jsonl");
    let episodes = alerts.iter().filter(|a| a["event"] == "start").count();
    assert!(
        episodes > 0 && conns.len() > 1000,
        "the demo capture has sessions and attacks"
    );
    let uid = conns[conns.len() / 2]["uid"]
        .as_str()
        .expect("a uid")
        .to_owned();
    let page = load(&format!("{}#q={uid}", run.url));
    assert_eq!(
        page.text("session-count"),
        Some(conns.len().to_string().as_str())
    );
    assert_eq!(
        page.text("episode-count"),
        Some(episodes.to_string().as_str())
    );
    assert_eq!(
        page.text("open-count"),
        Some("0"),
        "every episode ended with the run"
    );
    assert_eq!(page.body_data("searched"), Some(uid.as_str()));
    assert_eq!(page.body_data("matched"), Some("1"));
    assert!(
        page.dom.contains(&format!("<tr data-uid=\"{uid}\">")),
        "{}",
        page.dom
    );
    let first = &alerts[0];
    for field in ["kind", "dst"] {
        let v = first[field].as_str().expect("an alert field");
        assert!(page.dom.contains(&format!("<td>{v}</td>")), "{field} {v}");
    }
    assert!(
        page.dom.contains("reconciled: true"),
        "the final accounting report"
    );
    episode_links_lead_to_their_sessions(&run, &page, &conns);
    browser::screenshot(&run.url, &artifact("dashboard.png"));
    run.stop();
}

/// An episode's link searches its address during the episode: the page then lists exactly the
/// conn log's sessions of that address that started in that time.
fn episode_links_lead_to_their_sessions(run: &Run, page: &Page, conns: &[Value]) {
    let at = page.dom.find("href=\"#q=");
    assert!(at.is_some(), "an episode with a link: {}", page.dom);
    let rest = &page.dom[at.expect("a link") + 6..];
    let hash = rest[..rest.find('"').expect("the link's end")].replace("&amp;", "&");
    let param = |k: &str| {
        let v = hash[1..]
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")));
        v.expect("a link parameter").to_owned()
    };
    let (who, from, to) = (param("q"), param("from"), param("to"));
    let (from, to): (f64, f64) = (from.parse().expect("from"), to.parse().expect("to"));
    let expected = conns
        .iter()
        .filter(|c| c["id.orig_h"] == who.as_str() || c["id.resp_h"] == who.as_str())
        .filter(|c| c["ts"].as_f64().is_some_and(|t| t >= from && t <= to))
        .count();
    assert!(expected > 0, "the episode of {who} has sessions");
    let linked = load(&format!("{}{hash}", run.url));
    assert_eq!(linked.body_data("searched"), Some(who.as_str()));
    assert_eq!(
        linked.body_data("matched"),
        Some(expected.to_string().as_str()),
        "{hash}"
    );
}

/// The field of the conn log that carries the HTTP Host (issue 17's `server_name`): this test
/// requires it to hold the crafted Host and the page to show it as text.
const HOST_FIELD: Option<&str> = Some("server_name");

const HOSTILE_HOST: &str = "<script>alert(1)</script>";
const HOSTILE_NAME: &str = "<img src=x onerror=alert(2)><script>alert(3)</script>";

/// One HTTP request whose Host header is [`HOSTILE_HOST`], answered, then closed.
fn hostile_http(path: &Path) {
    use tapflow_integration_tests::craft::tcp::{ACK, FIN, PSH, SYN};
    let (c, s) = (([10, 0, 0, 1], 40_000), ([10, 0, 0, 2], 80));
    let req = format!("GET / HTTP/1.1\r\nHost: {HOSTILE_HOST}\r\nUser-Agent: t\r\n\r\n");
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let (rl, sl) = (req.len() as u32, resp.len() as u32);
    let packets = [
        Ipv4::tcp(c, s, SYN, 100, 0, &[]),
        Ipv4::tcp(s, c, SYN | ACK, 900, 101, &[]),
        Ipv4::tcp(c, s, ACK, 101, 901, &[]),
        Ipv4::tcp(c, s, PSH | ACK, 101, 901, req.as_bytes()),
        Ipv4::tcp(s, c, PSH | ACK, 901, 101 + rl, resp),
        Ipv4::tcp(c, s, FIN | ACK, 101 + rl, 901 + sl, &[]),
        Ipv4::tcp(s, c, FIN | ACK, 901 + sl, 102 + rl, &[]),
        Ipv4::tcp(c, s, ACK, 102 + rl, 902 + sl, &[]),
    ];
    let mut pcap = PcapWriter::create(path);
    for (i, p) in packets.iter().enumerate() {
        pcap.packet(1_704_067_200_000_000 + i as u64 * 1000, p);
    }
    pcap.finish();
}

#[test]
fn strings_from_the_wire_are_shown_as_text_never_as_markup() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let pcap = dir.path().join("hostile.pcap");
    hostile_http(&pcap);
    let mut run = start(&pcap, 1, HOSTILE_NAME);
    run.wait_ended();
    let conns = run.log("conn.jsonl");
    assert_eq!(conns.len(), 1, "{conns:?}");
    let uid = conns[0]["uid"].as_str().expect("a uid");
    let page = load(&format!("{}#q={uid}", run.url));
    assert_eq!(page.body_data("matched"), Some("1"), "{}", page.dom);
    // The collector's name (heartbeats, the accounting report) as text: escaped in the DOM.
    let escaped = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    assert!(
        page.dom
            .contains(&format!("<td>{}</td>", escaped(HOSTILE_NAME))),
        "{}",
        page.dom
    );
    assert_eq!(page.count_tags("script"), 1, "only /app.js: {}", page.dom);
    assert_eq!(page.count_tags("img"), 0, "{}", page.dom);
    // Whatever conn-log field holds the Host is in the session row, as text.
    let carriers: Vec<&String> = conns[0]
        .as_object()
        .expect("a record")
        .iter()
        .filter(|(_, v)| v.as_str().is_some_and(|s| s.contains(HOSTILE_HOST)))
        .map(|(k, _)| k)
        .collect();
    if let Some(field) = HOST_FIELD {
        assert_eq!(
            carriers,
            [field],
            "the Host is in the conn log: {:?}",
            conns[0]
        );
    }
    for field in &carriers {
        let v = conns[0][field.as_str()].as_str().expect("a string field");
        assert!(
            page.dom.contains(&format!("<td>{}</td>", escaped(v))),
            "{field}: {}",
            page.dom
        );
    }
    println!("conn-log fields carrying the Host: {carriers:?}");
    browser::screenshot(
        &format!("{}#q={uid}", run.url),
        &artifact("dashboard-hostile.png"),
    );
    run.stop();
}
