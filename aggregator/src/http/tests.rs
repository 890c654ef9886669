use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use clap::Parser;

use super::feed::Event;
use super::*;
use crate::config::{Args, Config, ConfigError};
use crate::detect::{AlertEvent, AlertKind, EventKind};
use crate::sink::Sink;
use crate::testutil::scan_and_sessions;

fn load(extra: &[&str]) -> Result<Config, ConfigError> {
    let argv = [
        "a",
        "--listen",
        "tcp://127.0.0.1:5700",
        "--processors",
        "1",
        "--plain",
    ];
    let args = Args::try_parse_from(argv.iter().chain(extra).copied()).expect("parse the flags");
    Config::load(args)
}

#[test]
fn the_dashboard_is_off_by_default_on_loopback_for_a_bare_port_and_public_only_when_asked() {
    assert_eq!(load(&[]).expect("no dashboard").http, None);
    let http = load(&["--http-listen", "8080"]).expect("a bare port").http;
    assert_eq!(http.map(|h| h.listen), Some("127.0.0.1:8080".to_owned()));
    let http = load(&["--http-listen", "localhost:8081"])
        .expect("localhost")
        .http;
    assert_eq!(http.map(|h| h.listen), Some("127.0.0.1:8081".to_owned()));
    let ConfigError(errors) =
        load(&["--http-listen", "0.0.0.0:8080"]).expect_err("0.0.0.0 needs --http-public");
    assert!(
        errors.len() == 1 && errors[0].contains("--http-public") && errors[0].contains("no TLS"),
        "{errors:?}"
    );
    let public = load(&["--http-listen", "0.0.0.0:8080", "--http-public"])
        .expect("public when asked")
        .http
        .expect("served");
    assert!(public.public);
    for (flags, what) in [
        (&["--http-listen", "localhost:80x"][..], "not an address"),
        (
            &["--http-listen", "8080", "--http-sessions", "0"][..],
            "at least 1",
        ),
        (&["--http-linger"][..], "need http_listen"),
    ] {
        let ConfigError(errors) = load(flags).expect_err("refused");
        assert!(
            errors.iter().any(|e| e.contains(what)),
            "{flags:?}: {errors:?}"
        );
    }
}

#[test]
fn the_resolved_configuration_names_the_dashboard_and_reads_back_the_same() {
    let config = load(&[
        "--http-listen",
        "9000",
        "--http-sessions",
        "7",
        "--http-linger",
    ])
    .expect("valid");
    let text = config.resolved("", "");
    for line in [
        "http_listen = \"127.0.0.1:9000\"",
        "http_sessions = 7",
        "http_linger = true",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    let file: crate::config::Options = toml::from_str(&text).expect("parse the resolved text");
    let args = Args::try_parse_from(["a"]).expect("no flag");
    let again = Config::merge(args, file).expect("valid again");
    assert_eq!(again.http, config.http);
    assert!(load(&[])
        .expect("off")
        .resolved("", "")
        .contains("# http_listen: off"));
}

fn state_with(records: &[tapflow_proto::conn::ConnRecord], cap: usize) -> DashState {
    let mut s = DashState::new(cap);
    for r in records {
        s.apply(Event::Conn(Box::new(r.clone()), vec![]));
    }
    s
}

fn api(s: &DashState, path: &str, query: &str) -> serde_json::Value {
    let body = api::render(s, path, query, 0)
        .expect("a known endpoint")
        .expect("a valid request");
    serde_json::from_str(&body).expect("the API answers JSON")
}

#[test]
fn sessions_are_bounded_searchable_and_served_as_the_conn_log_writes_them() {
    let records = scan_and_sessions(30);
    let s = state_with(&records, 10);
    let all = api(&s, "/api/sessions", "");
    assert_eq!(all["sessions_received"], 30);
    assert_eq!(all["sessions_held"], 10, "the cap holds");
    let newest = &records[29];
    let mut line = String::new();
    crate::conns::conn_json(newest, &[], &mut line);
    let expected: serde_json::Value = serde_json::from_str(&line).expect("a conn-log line");
    assert_eq!(
        all["sessions"][0], expected,
        "newest first, the conn log's fields"
    );

    let by_uid = api(&s, "/api/sessions", &format!("q={}", newest.uid));
    assert_eq!(
        (by_uid["matched"].as_u64(), &by_uid["sessions"][0]["uid"]),
        (Some(1), &expected["uid"])
    );
    let by_port = api(&s, "/api/sessions", "q=443&limit=2");
    assert_eq!(
        (by_port["matched"].as_u64(), by_port["returned"].as_u64()),
        (Some(7), Some(2))
    );
    let scanner = api(&s, "/api/sessions", "q=203.0.113.9");
    assert_eq!(scanner["matched"], 3, "records 21, 24, 27 of the last ten");
    let ts = expected["ts"].as_f64().expect("ts");
    let window = api(
        &s,
        "/api/sessions",
        &format!("from={}&to={}", ts - 0.015, ts + 1.0),
    );
    assert_eq!(window["matched"], 2);
    let bad = api::render(&s, "/api/sessions", "q=%3Cscript%3E", 0).expect("known");
    assert_eq!(
        bad,
        Err(api::BadRequest(
            "q: give an address, a port or a uid (C...)".into()
        ))
    );
    assert!(api::render(&s, "/api/nothing", "", 0).is_none());
}

#[test]
fn tops_traffic_and_episodes_come_from_what_the_sink_was_handed() {
    let records = scan_and_sessions(30);
    let mut s = state_with(&records, 100);
    s.apply(Event::Traffic(vec![
        tapflow_proto::upstream::TrafficPartial {
            window_start_ns: records[29].ts_ns / 60_000_000_000 * 60_000_000_000,
            window_s: 60,
            collector: "c0".into(),
            proto: 6,
            packets: 60,
            bytes: 3000,
            flows: 30,
            complete: true,
        },
    ]));
    let top = api(&s, "/api/top", "windows=1");
    assert_eq!(top["talkers"][0]["id.orig_h"], "203.0.113.9", "{top}");
    assert_eq!(top["talkers"][0]["sessions"], 10);
    assert_eq!(top["servers"][0]["proto"], "tcp");
    let traffic = api(&s, "/api/traffic", "");
    assert_eq!(traffic["windows"][0]["proto"]["tcp"]["packets"], 60);

    let event = |event, src: &str| AlertEvent {
        ts_ns: 2_000_000_000,
        event,
        kind: AlertKind::PortScan,
        src: src.into(),
        dst: "198.51.100.1".into(),
        window_start_ns: 0,
        window_end_ns: 1_000_000_000,
        count: 30,
        peak: 30,
        episode_start_ns: 0,
        windows: 1,
        evidence: [("ports", 30)].into_iter().collect(),
    };
    s.apply(Event::Alerts(vec![
        event(EventKind::Start, "203.0.113.9"),
        event(EventKind::Start, "<b>"),
    ]));
    s.apply(Event::Alerts(vec![event(EventKind::End, "203.0.113.9")]));
    let alerts = api(&s, "/api/alerts", "");
    assert_eq!(
        (
            alerts["episodes_started"].as_u64(),
            alerts["episodes_open"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(
        alerts["recent"][0]["ports"], 30,
        "the evidence, as the alerts log names it"
    );
    assert_eq!(
        alerts["open"][0]["src"], "<b>",
        "a string, for the page to show as text"
    );
}

#[test]
fn the_feed_never_waits_for_a_dashboard_that_is_behind() {
    let (mut feed, _rx) = Feed::new(1);
    let records = scan_and_sessions(3);
    let start = Instant::now();
    for _ in 0..100 {
        for r in &records {
            feed.on_conn_owned(Box::new(r.clone()), vec![])
                .expect("never fails");
        }
        feed.flush().expect("never fails");
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    let mut counters = Vec::new();
    feed.counters(&mut counters);
    assert_eq!(counters, [("dashboard_batches_dropped".to_owned(), 99)]);

    // However roomy the channel, the records in flight are bounded.
    let (mut feed, rx) = Feed::new(1000);
    let record = &records[0];
    for _ in 0..3 {
        for _ in 0..feed::RECORDS_PER_MESSAGE + 10 {
            feed.on_conn(record, &[]).expect("never fails");
        }
        feed.flush().expect("never fails");
    }
    let sent: Vec<Vec<Event>> = rx.try_iter().collect();
    let copies: usize = sent.iter().map(Vec::len).sum();
    assert_eq!(
        copies,
        2 * (feed::RECORDS_PER_MESSAGE + 1),
        "two buffers (and their skip counts)"
    );
    const { assert!(2 * feed::RECORDS_PER_MESSAGE <= feed::RECORDS_IN_FLIGHT) };
    assert_eq!(
        feed.in_flight().load(std::sync::atomic::Ordering::Relaxed),
        2 * feed::RECORDS_PER_MESSAGE
    );
    let mut counters = Vec::new();
    feed.counters(&mut counters);
    assert_eq!(counters, [("dashboard_batches_dropped".to_owned(), 1)]);
}

fn dashboard() -> (Feed, Dashboard) {
    let cfg = HttpConfig {
        listen: "127.0.0.1:0".into(),
        public: false,
        sessions: 100,
        linger: false,
    };
    start(&cfg, tapflow_runtime::MetricsText::default()).expect("start the dashboard")
}

fn request(at: SocketAddr, text: &str) -> String {
    let mut s = TcpStream::connect(at).expect("connect to the dashboard");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(text.as_bytes()).expect("send the request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn the_server_is_read_only_strict_and_answers_with_the_security_headers() {
    let (mut feed, d) = dashboard();
    for r in scan_and_sessions(5) {
        feed.on_conn_owned(Box::new(r), vec![])
            .expect("never fails");
    }
    feed.flush().expect("never fails");
    let get = |path: &str| {
        request(
            d.bound,
            &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        )
    };
    let page = get("/");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains(&format!("Content-Security-Policy: {}\r\n", server::CSP)));
    assert!(
        page.contains("X-Content-Type-Options: nosniff\r\n")
            && page.contains("<script src=\"/app.js\"")
    );
    assert!(!server::CSP.contains("unsafe") && server::CSP.contains("script-src 'self'"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !get("/api/sessions").contains("\"sessions_received\":5") {
        assert!(Instant::now() < deadline, "the updater applied the records");
        std::thread::sleep(Duration::from_millis(20));
    }
    let post = request(
        d.bound,
        "POST /api/sessions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert!(
        post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD\r\n"),
        "{post}"
    );
    let rebound = request(d.bound, "GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n");
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert!(request(d.bound, &huge).starts_with("HTTP/1.1 431"));
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
    let bad = get("/api/sessions?q=nonsense");
    assert!(
        bad.starts_with("HTTP/1.1 400") && bad.contains("address, a port or a uid"),
        "{bad}"
    );
    let head = request(d.bound, "HEAD / HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
}

#[test]
fn idle_clients_neither_stall_the_others_nor_hold_more_than_the_connection_limit() {
    let (_feed, d) = dashboard();
    let idle: Vec<TcpStream> = (0..server::MAX_CONNECTIONS - 1)
        .map(|_| TcpStream::connect(d.bound).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let ok = request(
        d.bound,
        "GET /api/summary HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "served beside idle clients"
    );
    // Its thread ends just after the client has read the answer.
    std::thread::sleep(Duration::from_millis(200));
    let more = TcpStream::connect(d.bound).expect("connect");
    std::thread::sleep(Duration::from_millis(200));
    let busy = request(d.bound, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(busy.starts_with("HTTP/1.1 503"), "over the limit: {busy}");
    // The idle connections, still open, are cut at the head deadline: room again.
    std::thread::sleep(server::HEAD_DEADLINE + Duration::from_millis(500));
    let again = request(
        d.bound,
        "GET /api/summary HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    drop((idle, more));
}

#[test]
fn counters_are_read_from_the_metrics_text_by_name_and_reason() {
    let text = "# TYPE tapflow_aggregator_conn_records_received_total counter\n\
                tapflow_aggregator_conn_records_received_total 12\n\
                tapflow_aggregator_conn_records_invalid_total{reason=\"bad_uid\"} 3\n";
    let c = api::counters(text);
    assert_eq!(c["conn_records_received"], 12);
    assert_eq!(c["conn_records_invalid{reason=\"bad_uid\"}"], 3);
    let q = api::parse_query("q=10.0.0.1&x=%3Cb%3E+c&bad=%zz");
    assert_eq!(
        (q["q"].as_str(), q["x"].as_str(), q["bad"].as_str()),
        ("10.0.0.1", "<b> c", "%zz")
    );
}
