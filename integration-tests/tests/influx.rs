//! The InfluxDB writer against a real influxd (Debian's 1.6.7: v1 API), and its v2 requests
//! against a small HTTP server in the test (Debian's influxd has no v2 API, so there the
//! server can only be a stand-in that checks requests against the v2 write documentation).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tapflow_aggregator::influx::{
    conn_point, Field, InfluxApi, InfluxConfig, InfluxStats, InfluxWriter, Point,
};
use tapflow_integration_tests::influxd::{Influxd, V2Stub};
use tapflow_proto::conn::{community_id, uid, ConnRecord, ConnState};
use tapflow_proto::{Addr, FiveTuple};

const DB: &str = "tapflow";

/// Session `i` of a spoofed SYN flood: `per_us` sessions start in each microsecond after `t0`.
fn session(i: u32, t0: u64, per_us: u32) -> ConnRecord {
    let b = i.to_be_bytes();
    let t = FiveTuple {
        proto: 6,
        src: Addr::from_v4([10, b[1], b[2], b[3]]),
        dst: Addr::from_v4([192, 0, 2, 1]),
        sport: 1024 + (i % 60000) as u16,
        dport: 80,
    };
    let key = t.key(0).0;
    let ts = t0 + u64::from(i / per_us) * 1000;
    ConnRecord {
        ts_ns: ts,
        uid: uid(&key, ts),
        orig_h: t.src,
        orig_p: t.sport,
        resp_h: t.dst,
        resp_p: 80,
        proto: 6,
        duration_ns: None,
        orig_bytes: None,
        resp_bytes: None,
        conn_state: ConnState::S0,
        local_orig: None,
        local_resp: None,
        missed_bytes: 0,
        history: "S".into(),
        orig_pkts: 1,
        orig_ip_bytes: 40,
        resp_pkts: 0,
        resp_ip_bytes: 0,
        tunnel_parents: vec![],
        community_id: community_id(6, t.src, t.sport, t.dst, 80),
        interim: false,
        evicted: false,
        key,
        orig_tcp_flags: 0x02,
        resp_tcp_flags: 0,
        split: 0,
        timing: None,
        service: None,
        server_name: None,
        service_incomplete: false,
    }
}

fn points(range: std::ops::Range<u32>, t0: u64, per_us: u32) -> Vec<Point> {
    range
        .map(|i| conn_point(&session(i, t0, per_us), &[]))
        .collect()
}

fn v1(rp: Option<&str>) -> InfluxApi {
    InfluxApi::V1 {
        db: DB.into(),
        rp: rp.map(str::to_owned),
        user: None,
        password: None,
    }
}

fn config(url: String, api: InfluxApi, spool: &std::path::Path) -> InfluxConfig {
    let mut c = InfluxConfig::new(url, api, spool);
    c.batch_lines = 1000;
    c.flush_interval = Duration::from_millis(100);
    c.max_retry_delay = Duration::from_millis(300);
    c.timeout = Duration::from_secs(3);
    c
}

fn start(cfg: InfluxConfig) -> InfluxWriter {
    InfluxWriter::start(cfg).expect("start the InfluxDB writer")
}

fn assert_settled(s: &InfluxStats) {
    assert_eq!(s.unaccounted(), 0, "{s:#?}");
    assert_eq!((s.points_in_spool, s.points_pending), (0, 0), "{s:#?}");
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[test]
fn every_session_is_written_once_even_hundreds_per_microsecond() {
    let Some(influxd) = Influxd::start() else {
        return;
    };
    let spool = tempfile::tempdir().expect("create the spool dir");
    let mut w = start(config(influxd.url(), v1(None), spool.path()));
    let n = 5000;
    // 500 sessions start in each microsecond: collisions are certain.
    let all = points(0..n, 1_700_000_000_000_000_000, 500);
    for chunk in all.chunks(250) {
        w.send(chunk.to_vec());
    }
    let s = w.finish(Duration::from_secs(60));
    assert_settled(&s);
    assert_eq!(
        (s.points_written, s.points_rejected),
        (u64::from(n), 0),
        "{s:#?}"
    );
    assert!(s.collisions > 0, "{s:#?}");
    assert_eq!(
        s.points_written_by_measurement.get("tapflow_conn"),
        Some(&u64::from(n))
    );
    assert_eq!(
        s.counters().get("points_written_tapflow_conn"),
        Some(&u64::from(n))
    );
    eprintln!("{s:#?}");
    let count = |q| influxd.scalar(DB, q);
    assert_eq!(count("SELECT count(uid) FROM tapflow_conn"), u64::from(n));
    assert_eq!(
        count("SELECT count(distinct(uid)) FROM tapflow_conn"),
        u64::from(n)
    );
    // Only low-cardinality tags.
    let tags = influxd.query(DB, "SHOW TAG KEYS FROM tapflow_conn");
    let keys: Vec<&str> = tags["results"][0]["series"][0]["values"]
        .as_array()
        .map(|v| v.iter().filter_map(|r| r[0].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(keys, ["conn_state", "ip_version", "proto"]);
    let one = session(1234, 1_700_000_000_000_000_000, 500);
    let row = influxd.query(
        DB,
        &format!(
            "SELECT orig_h, orig_p, history FROM tapflow_conn WHERE uid = '{}'",
            one.uid
        ),
    );
    let values = &row["results"][0]["series"][0]["values"][0];
    assert_eq!(values[1], one.orig_h.to_string());
    assert_eq!(values[2], u64::from(one.orig_p));
    assert_eq!(values[3], "S");
}

#[test]
fn outage_spools_and_every_point_lands_once() {
    let Some(mut influxd) = Influxd::start() else {
        return;
    };
    let spool = tempfile::tempdir().expect("create the spool dir");
    let mut w = start(config(influxd.url(), v1(None), spool.path()));
    let (rounds, per_round) = (30u32, 200u32);
    let t0 = 1_700_000_000_000_000_000;
    for r in 0..rounds {
        if r == 8 {
            influxd.kill();
        }
        if r == 20 {
            influxd.restart();
        }
        w.send(points(r * per_round..(r + 1) * per_round, t0, 100));
        std::thread::sleep(Duration::from_millis(40));
    }
    let s = w.finish(Duration::from_secs(60));
    let sent = u64::from(rounds * per_round);
    eprintln!("{s:#?}");
    assert_settled(&s);
    assert_eq!((s.points_sent, s.points_written), (sent, sent), "{s:#?}");
    assert!(s.retries > 0 && s.points_spooled > 0, "{s:#?}");
    assert!(s.http_errors.contains_key("connect"), "{s:#?}");
    assert_eq!(
        influxd.scalar(DB, "SELECT count(uid) FROM tapflow_conn"),
        sent
    );
    assert_eq!(
        influxd.scalar(DB, "SELECT count(distinct(uid)) FROM tapflow_conn"),
        sent
    );
    let left = std::fs::read_dir(spool.path()).map_or(0, |d| d.count());
    assert_eq!(left, 0, "spool not emptied");
}

#[test]
fn a_refused_point_is_counted_and_the_rest_of_its_batch_written() {
    let Some(influxd) = Influxd::start() else {
        return;
    };
    let spool = tempfile::tempdir().expect("create the spool dir");
    let t0 = now_ns() - 60_000_000_000;
    let mut w = start(config(influxd.url(), v1(None), spool.path()));
    w.send(points(0..50, t0, 1));
    let s = w.finish(Duration::from_secs(30));
    assert_eq!(s.points_written, 50, "{s:#?}");

    // One batch: 50 good, one whose orig_p is a string (a field type conflict), 50 good.
    let mut bad = conn_point(&session(1000, t0, 1), &[]);
    for (k, v) in &mut bad.fields {
        if k == "orig_p" {
            *v = Field::Str("eighty".into());
        }
    }
    let mut batch = points(50..100, t0, 1);
    batch.push(bad);
    batch.extend(points(100..150, t0, 1));
    let mut w = start(config(influxd.url(), v1(None), spool.path()));
    w.send(batch);
    let s = w.finish(Duration::from_secs(30));
    assert_settled(&s);
    assert_eq!((s.points_written, s.points_rejected), (100, 1), "{s:#?}");
    assert!(s.http_errors.get("400").is_some_and(|&n| n >= 1), "{s:#?}");
    assert_eq!(
        influxd.scalar(DB, "SELECT count(uid) FROM tapflow_conn"),
        150
    );

    // Outside the retention policy: a 1970 point into a one-hour policy.
    let q = influxd.query(
        DB,
        "CREATE RETENTION POLICY \"short\" ON \"tapflow\" DURATION 1h REPLICATION 1",
    );
    assert!(q["results"][0]["error"].is_null(), "{q}");
    let mut batch = points(0..10, now_ns(), 1);
    batch.insert(5, conn_point(&session(99, 1_000_000_000, 1), &[]));
    let mut w = start(config(influxd.url(), v1(Some("short")), spool.path()));
    w.send(batch);
    let s = w.finish(Duration::from_secs(30));
    assert_settled(&s);
    assert_eq!((s.points_written, s.points_rejected), (10, 1), "{s:#?}");
    assert_eq!(
        influxd.scalar(DB, "SELECT count(uid) FROM \"short\".tapflow_conn"),
        10
    );
}

#[test]
fn a_deadline_leaves_the_spool_and_the_next_run_writes_it() {
    let Some(influxd) = Influxd::start() else {
        return;
    };
    let spool = tempfile::tempdir().expect("create the spool dir");
    let t0 = 1_700_000_000_000_000_000;
    // Nothing listens there: everything waits in the spool, bounded to about 3 batches.
    let nobody = format!(
        "http://127.0.0.1:{}",
        tapflow_integration_tests::free_port()
    );
    let mut cfg = config(nobody, v1(None), spool.path());
    cfg.batch_lines = 100;
    let one_batch: usize = points(0..100, t0, 1)
        .iter()
        .map(|p| {
            let mut b = Vec::new();
            let _ = p.encode(&mut b);
            b.len()
        })
        .sum();
    // Batches differ by a few bytes (uids vary in length): room for 3.5 of them.
    cfg.spool_max_bytes = (7 * one_batch / 2) as u64;
    let mut w = start(cfg);
    for r in 0..5 {
        w.send(points(r * 100..(r + 1) * 100, t0, 1));
        std::thread::sleep(Duration::from_millis(150));
    }
    let s = w.finish(Duration::from_millis(300));
    assert_eq!(s.unaccounted(), 0, "{s:#?}");
    assert_eq!(s.points_written, 0);
    assert_eq!(
        (s.points_in_spool, s.points_dropped_spool_full),
        (300, 200),
        "{s:#?}"
    );

    let w = start(config(influxd.url(), v1(None), spool.path()));
    let s = w.finish(Duration::from_secs(30));
    assert_settled(&s);
    assert_eq!((s.points_recovered, s.points_written), (300, 300), "{s:#?}");
    // The newest three batches were kept.
    assert_eq!(
        influxd.scalar(DB, "SELECT count(uid) FROM tapflow_conn"),
        300
    );
    let oldest = session(200, t0, 1);
    let q = format!(
        "SELECT count(uid) FROM tapflow_conn WHERE time < {}",
        oldest.ts_ns
    );
    assert_eq!(influxd.scalar(DB, &q), 0);
}

#[test]
fn escaped_values_read_back_as_written() {
    let Some(influxd) = Influxd::start() else {
        return;
    };
    let spool = tempfile::tempdir().expect("create the spool dir");
    // (tag value, string field value) written, and what InfluxDB should hold.
    let cases = [
        ("plain", "plain", "plain", "plain"),
        ("a b,c=d", "a \"b\", c=d", "a b,c=d", "a \"b\", c=d"),
        (r"c:\dir\", r"c:\dir\", r"c:\dir", r"c:\dir\"),
        (r"x\y", r#"\"\\"#, r"x\y", r#"\"\\"#),
        ("é ⚡", "two\nlines", "é ⚡", "two lines"),
    ];
    let mut w = start(config(influxd.url(), v1(None), spool.path()));
    let pts: Vec<Point> = cases
        .iter()
        .enumerate()
        .map(|(i, (tag, text, _, _))| {
            Point::new("escapes", 1_000 + i as u64)
                .tag("t", *tag)
                .field("i", Field::Int(i as i64))
                .field("s", Field::Str((*text).to_owned()))
        })
        .collect();
    w.send(pts);
    let s = w.finish(Duration::from_secs(30));
    assert_eq!(s.points_written, cases.len() as u64, "{s:#?}");
    let v = influxd.query(DB, "SELECT i, s, t FROM escapes");
    let rows = v["results"][0]["series"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(rows.len(), cases.len(), "{v}");
    for (row, (_, _, tag, text)) in rows.iter().zip(cases) {
        assert_eq!((row[2].as_str(), row[3].as_str()), (Some(text), Some(tag)));
    }
}

/// The v2 write API (docs: "Write data with the InfluxDB API"): `POST /api/v2/write` with
/// `org`, `bucket` and `precision` query parameters, `Authorization: Token <token>`,
/// `Content-Type: text/plain; charset=utf-8`, `Content-Encoding: gzip` for a gzip body; 429
/// and 503 carry `Retry-After` (seconds) that a client must wait.
#[test]
fn v2_requests_follow_the_api_and_retry_after_is_honoured() {
    let stub = V2Stub::start(vec![
        (429, Some(1), Duration::ZERO),
        (503, None, Duration::ZERO),
    ]);
    let spool = tempfile::tempdir().expect("create the spool dir");
    let api = InfluxApi::V2 {
        org: "my org".into(),
        bucket: "tapflow/sessions".into(),
        token: "s3cr3t==".into(),
    };
    let mut cfg = config(
        format!("http://127.0.0.1:{}/", stub.port),
        api,
        spool.path(),
    );
    cfg.max_retry_delay = Duration::from_millis(100);
    let mut w = start(cfg);
    let sent = points(0..10, 1_700_000_000_000_000_000, 10);
    w.send(sent.clone());
    let s = w.finish(Duration::from_secs(30));
    assert_settled(&s);
    assert_eq!((s.points_written, s.retries), (10, 2), "{s:#?}");
    let want_errors: BTreeMap<String, u64> = [("429".to_owned(), 1), ("503".to_owned(), 1)].into();
    assert_eq!(s.http_errors, want_errors);

    let seen = stub.seen.lock().unwrap_or_else(|p| p.into_inner());
    assert_eq!(seen.len(), 3, "{seen:#?}");
    let mut expected = Vec::new();
    for p in &sent {
        let mut p = p.clone();
        // The writer moved colliding times; compare without the time.
        p.ts_ns = 0;
        let mut line = Vec::new();
        let _ = p.encode(&mut line);
        expected.push(String::from_utf8_lossy(&line).trim_end().to_owned());
    }
    for s in seen.iter() {
        assert_eq!(
            (s.method.as_str(), s.path.as_str()),
            ("POST", "/api/v2/write")
        );
        let q: Vec<(&str, &str)> = s
            .query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            q,
            [
                ("bucket", "tapflow/sessions"),
                ("org", "my org"),
                ("precision", "ns")
            ]
        );
        let h = |k: &str| s.headers.get(k).map(String::as_str);
        assert_eq!(h("authorization"), Some("Token s3cr3t=="));
        assert_eq!(h("content-encoding"), Some("gzip"));
        assert_eq!(h("content-type"), Some("text/plain; charset=utf-8"));
        let got: Vec<String> = s
            .lines
            .iter()
            .map(|l| l.rsplit_once(' ').map_or(l.as_str(), |(a, _)| a).to_owned())
            .map(|l| l + " 0")
            .collect();
        assert_eq!(got, expected);
    }
    let gap1 = seen[1].at - seen[0].at;
    let gap2 = seen[2].at - seen[1].at;
    assert!(
        gap1 >= Duration::from_millis(990),
        "Retry-After 1 s: waited {gap1:?}"
    );
    assert!(
        gap2 < Duration::from_millis(900),
        "backoff without Retry-After: {gap2:?}"
    );
}

/// While the writer thread waits on a slow server, `send` does not wait: past the queue's
/// bound, points go to the spool from the caller's thread, and all arrive once in the end.
#[test]
fn a_full_queue_spills_to_the_spool_and_nothing_is_lost() {
    let stub = V2Stub::start(vec![(204, None, Duration::from_millis(1500))]);
    let spool = tempfile::tempdir().expect("create the spool dir");
    let api = InfluxApi::V2 {
        org: "o".into(),
        bucket: "b".into(),
        token: "t".into(),
    };
    let mut w = start(config(
        format!("http://127.0.0.1:{}", stub.port),
        api,
        spool.path(),
    ));
    let n = 30_000u32;
    let all = points(0..n, 1_700_000_000_000_000_000, 100);
    for chunk in all.chunks(1000) {
        w.send(chunk.to_vec());
    }
    let during = w.stats();
    let s = w.finish(Duration::from_secs(60));
    assert!(during.points_spooled > 0, "{during:#?}");
    assert_settled(&s);
    assert_eq!(s.points_written, u64::from(n), "{s:#?}");
    let seen = stub.seen.lock().unwrap_or_else(|p| p.into_inner());
    let lines: Vec<&String> = seen.iter().flat_map(|s| &s.lines).collect();
    let distinct: std::collections::HashSet<&String> = lines.iter().copied().collect();
    assert_eq!((lines.len(), distinct.len()), (n as usize, n as usize));
}
