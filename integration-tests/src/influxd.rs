//! A real `influxd` (Debian's `influxdb` package, 1.x) for the tests, without systemd: its
//! own config file, data in a temporary directory, HTTP and RPC on free loopback ports. Killed
//! when dropped; can be killed and restarted on the same directories and ports to play an
//! outage. [`Influxd::start_https`] serves https instead, with a certificate made by
//! [`self_signed`] (the openssl CLI).
//!
//! And [`V2Stub`], a stand-in for the InfluxDB 2.x write endpoint: Debian's influxd 1.6.7 has
//! no v2 API, so v2 requests can only be checked against the API documentation by a small
//! server that records them. It is used for nothing the real server can do.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{free_port, free_ports};

/// The `influxd` binary: `$INFLUXD`, else the first on `PATH`, else `/usr/bin/influxd`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("INFLUXD") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("influxd"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| Some(PathBuf::from("/usr/bin/influxd")).filter(|p| p.is_file()))
}

/// A running influxd.
pub struct Influxd {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub rpc_port: u16,
    bin: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    agent: ureq::Agent,
    /// https with this certificate (trusted by `agent`) and key.
    tls: Option<(PathBuf, PathBuf)>,
}

impl Influxd {
    /// Starts influxd on a new temporary directory, or returns `None` after printing
    /// `SKIP: influxd not installed` (CI installs Debian's `influxdb`).
    pub fn start() -> Option<Influxd> {
        Self::start_with(None)
    }

    /// As [`Influxd::start`], serving https only with `cert` and `key` (PEM files, e.g. from
    /// [`self_signed`]); the helper's own requests trust `cert`.
    pub fn start_https(cert: &Path, key: &Path) -> Option<Influxd> {
        Self::start_with(Some((cert.to_owned(), key.to_owned())))
    }

    fn start_with(tls: Option<(PathBuf, PathBuf)>) -> Option<Influxd> {
        let Some(bin) = binary() else {
            eprintln!("SKIP: influxd not installed (Debian package `influxdb`)");
            return None;
        };
        let dir = tempfile::tempdir().expect("create the influxd directory");
        let ports = free_ports(2);
        let (http_port, rpc_port) = (ports[0], ports[1]);
        let config = dir.path().join("influxdb.conf");
        std::fs::write(
            &config,
            config_text(dir.path(), http_port, rpc_port, tls.as_ref()),
        )
        .expect("write the influxd config");
        let mut agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(30)));
        if let Some((cert, _)) = &tls {
            let pem = crate::read_file(cert);
            let root = ureq::tls::Certificate::from_pem(&pem).expect("parse the test certificate");
            agent = agent.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&[root]))
                    .build(),
            );
        }
        let mut d = Influxd {
            dir,
            http_port,
            rpc_port,
            bin,
            config,
            child: None,
            agent: agent.build().into(),
            tls,
        };
        d.restart();
        Some(d)
    }

    /// `http://127.0.0.1:<port>`, or `https://` when started with [`Influxd::start_https`].
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.http_port)
    }

    /// Kills it (SIGKILL: nothing is flushed that was not already acknowledged).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts it on the same directories and ports; waits until `/ping` answers 204.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("influxd.log"))
            .expect("open the influxd log");
        let child = Command::new(&self.bin)
            .arg("-config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        assert!(child.is_ok(), "{}: {child:?}", self.bin.display());
        let child = child.expect("start influxd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.ping() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("influxd exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "influxd did not answer /ping within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// True when `GET /ping` answers 204.
    pub fn ping(&self) -> bool {
        self.agent
            .get(format!("{}/ping", self.url()))
            .config()
            .timeout_global(Some(Duration::from_secs(1)))
            .build()
            .call()
            .is_ok_and(|r| r.status().as_u16() == 204)
    }

    /// Runs InfluxQL `q` on database `db` (`POST /query`) and returns the JSON answer.
    pub fn query(&self, db: &str, q: &str) -> Value {
        let resp = self
            .agent
            .post(format!("{}/query", self.url()))
            .query("db", db)
            .query("q", q)
            .send_empty();
        assert!(resp.is_ok(), "query {q:?}: {resp:?}");
        // ureq reads at most 10 MB by default: a whole measurement of a large run is more.
        let text = resp
            .expect("query influxd")
            .body_mut()
            .with_config()
            .limit(1 << 32)
            .read_to_string()
            .expect("read influxd's answer to a query");
        let v = serde_json::from_str(&text);
        assert!(v.is_ok(), "query {q:?}: {v:?}: {text}");
        v.expect("parse the query's answer")
    }

    /// The first value of the first row of `q`'s answer as an integer (e.g. a `count`), or
    /// 0 when there is no row (an empty measurement).
    pub fn scalar(&self, db: &str, q: &str) -> u64 {
        let v = self.query(db, q);
        if let Some(e) = v["results"][0]["error"].as_str() {
            panic!("query {q:?}: {e}");
        }
        v["results"][0]["series"][0]["values"][0][1]
            .as_u64()
            .unwrap_or(0)
    }

    /// influxd's own log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("influxd.log")).unwrap_or_default()
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A self-signed certificate and its key (RSA 2048, one day) for the subject alternative
/// names `san` (e.g. `IP:127.0.0.1,DNS:localhost`), written by the openssl CLI into `dir` as
/// `cert.pem` and `key.pem`; `None` after printing `SKIP:` when openssl is not installed.
///
/// `basicConstraints=CA:FALSE`: `openssl req -x509` otherwise marks it a CA, and rustls
/// (webpki) refuses a CA certificate as a server's own (`CaUsedAsEndEntity`). Its subject is
/// not `CN=localhost`: Debian's `ssl-cert` puts a snakeoil certificate of that name in
/// /etc/ssl/certs, and a verifier with the system roots would then find the wrong issuer
/// (`BadSignature` instead of `UnknownIssuer`).
pub fn self_signed(dir: &Path, san: &str) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=tapflow test InfluxDB", "-addext"])
        .arg(format!("subjectAltName={san}"))
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Some((cert, key)),
        Ok(o) => panic!("openssl req failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            eprintln!("SKIP: cannot run openssl ({e}; Debian package `openssl`)");
            None
        }
    }
}

/// A config for influxd 1.x with everything under `dir`, loopback only, quiet; https only
/// with `tls` (certificate, key).
fn config_text(
    dir: &Path,
    http_port: u16,
    rpc_port: u16,
    tls: Option<&(PathBuf, PathBuf)>,
) -> String {
    let d = dir.display();
    let https = match tls {
        Some((cert, key)) => format!(
            "  https-enabled = true\n  https-certificate = \"{}\"\n  https-private-key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        None => String::new(),
    };
    format!(
        r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{d}/meta"
  logging-enabled = false

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  pprof-enabled = false
{https}
[logging]
  level = "warn"
  suppress-logo = true
"#
    )
}

/// One request as the stand-in server saw it.
#[derive(Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
    pub lines: Vec<String>,
}

/// A stand-in for an InfluxDB 2.x write endpoint: answers each request with the next of
/// `script` (status, Retry-After, delay before answering), then 204, and records what it
/// saw.
pub struct V2Stub {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl V2Stub {
    pub fn start(script: Vec<(u16, Option<u64>, Duration)>) -> V2Stub {
        let listener =
            TcpListener::bind(("127.0.0.1", free_port())).expect("bind the stub's listener");
        let port = listener.local_addr().map_or(0, |a| a.port());
        let _ = listener.set_nonblocking(true);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        serve_one(stream, &mut script, &seen2);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        V2Stub { port, seen, stop }
    }
}

impl Drop for V2Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Serves one request; what it saw is recorded before the answer goes out, so a client that
/// has its answer finds its request in `seen`.
fn serve_one(
    stream: TcpStream,
    script: &mut impl Iterator<Item = (u16, Option<u64>, Duration)>,
    seen: &Mutex<Vec<Seen>>,
) -> Option<()> {
    let at = Instant::now();
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut first = String::new();
    r.read_line(&mut first).ok()?;
    let mut parts = first.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).ok()?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        // A repeated header shows as its values joined by newlines, so a check sees it.
        headers
            .entry(k.trim().to_ascii_lowercase())
            .and_modify(|old: &mut String| *old = format!("{old}\n{}", v.trim()))
            .or_insert_with(|| v.trim().to_owned());
    }
    let mut w = stream;
    if headers.get("expect").is_some_and(|e| e == "100-continue") {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    let mut text = String::new();
    if headers.get("content-encoding").is_some_and(|e| e == "gzip") {
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .ok()?;
    } else {
        text = String::from_utf8(body).ok()?;
    }
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (unescape(k), unescape(v)))
        .collect();
    let (status, after, delay) = script.next().unwrap_or((204, None, Duration::ZERO));
    std::thread::sleep(delay);
    let mut resp = format!("HTTP/1.1 {status} Stub\r\nConnection: close\r\n");
    if let Some(a) = after {
        resp.push_str(&format!("Retry-After: {a}\r\n"));
    }
    resp.push_str("Content-Length: 0\r\n\r\n");
    seen.lock().unwrap_or_else(|p| p.into_inner()).push(Seen {
        at,
        method,
        path: path.to_owned(),
        query,
        headers,
        lines: text.lines().map(str::to_owned).collect(),
    });
    w.write_all(resp.as_bytes()).ok()
}

/// `application/x-www-form-urlencoded` decoding (`%XX`, `+`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 2;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Influxd {
    /// Turns on `auth-enabled` in its `[http]` section, restarts it, and creates `user` as an
    /// admin with `password` (InfluxDB 1.x lets the first admin be created without
    /// credentials; every other query and write then needs them; `/ping` does not).
    pub fn enable_auth(&mut self, user: &str, password: &str) {
        let text = std::fs::read_to_string(&self.config).expect("reading influxdb.conf");
        let text = text.replacen(
            "[http]\n  enabled = true\n",
            "[http]\n  enabled = true\n  auth-enabled = true\n",
            1,
        );
        assert!(text.contains("auth-enabled = true"), "{text}");
        std::fs::write(&self.config, text).expect("writing influxdb.conf");
        self.restart();
        let q = format!("CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES");
        let v = self.query_as(None, "", &q);
        assert!(v["results"][0]["error"].is_null(), "{q}: {v}");
    }

    /// As [`Influxd::query`], with `user` and `password` (InfluxDB 1.x's `u` and `p`
    /// parameters) when given.
    pub fn query_as(&self, credentials: Option<(&str, &str)>, db: &str, q: &str) -> Value {
        let mut req = self
            .agent
            .post(format!("{}/query", self.url()))
            .query("db", db)
            .query("q", q);
        if let Some((u, p)) = credentials {
            req = req.query("u", u).query("p", p);
        }
        let mut resp = req.send_empty().expect("querying influxd");
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        serde_json::from_str(&text).expect("parsing influxd's answer")
    }
}

/// What a database holds, to compare two runs' writes point for point: per measurement and
/// series (its tag set), `SELECT COUNT(*)`'s counts per field; and every point of the
/// measurements asked for in full (time, tags and fields), as a sorted list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Contents {
    /// measurement -> series (tags as JSON) -> the `count_<field>` columns and values.
    pub counts: BTreeMap<String, BTreeMap<String, Vec<(String, Value)>>>,
    /// measurement -> its points, each one JSON line of time, tags and fields, sorted.
    pub points: BTreeMap<String, Vec<String>>,
}

impl Contents {
    /// Points of `measurement` (the most populated field's count, summed over its series).
    pub fn point_count(&self, measurement: &str) -> u64 {
        let Some(series) = self.counts.get(measurement) else {
            return 0;
        };
        series
            .values()
            .map(|cols| {
                cols.iter()
                    .filter_map(|(_, v)| v.as_u64())
                    .max()
                    .unwrap_or(0)
            })
            .sum()
    }
}

impl Influxd {
    /// [`Contents`] of database `db`: every measurement but those in `skip` counted, and the
    /// points of those in `full` listed.
    pub fn contents(&self, db: &str, skip: &[&str], full: &[&str]) -> Contents {
        let mut out = Contents::default();
        let shown = self.query(db, "SHOW MEASUREMENTS");
        let names: Vec<String> = shown["results"][0]["series"][0]["values"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r[0].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for m in names.iter().filter(|m| !skip.contains(&m.as_str())) {
            let v = self.query(db, &format!("SELECT COUNT(*) FROM \"{m}\" GROUP BY *"));
            let mut series = BTreeMap::new();
            for s in v["results"][0]["series"].as_array().into_iter().flatten() {
                let cols = s["columns"].as_array().cloned().unwrap_or_default();
                let row = s["values"][0].as_array().cloned().unwrap_or_default();
                let counts = cols
                    .iter()
                    .zip(row)
                    .filter_map(|(c, v)| Some((c.as_str()?.to_owned(), v)))
                    .filter(|(c, _)| c != "time")
                    .collect();
                series.insert(s["tags"].to_string(), counts);
            }
            out.counts.insert(m.clone(), series);
        }
        for m in full {
            let v = self.query(db, &format!("SELECT * FROM \"{m}\""));
            assert!(v["results"][0]["error"].is_null(), "SELECT * FROM {m}: {v}");
            let mut points = answer_points(&v);
            points.sort();
            out.points.insert((*m).to_owned(), points);
        }
        out
    }
}

/// The points of a query's answer `v`, in its order: each one JSON line of its columns (time,
/// tags and fields), those without a value left out.
pub fn answer_points(v: &Value) -> Vec<String> {
    let mut points = Vec::new();
    for s in v["results"][0]["series"].as_array().into_iter().flatten() {
        let cols = s["columns"].as_array().cloned().unwrap_or_default();
        for row in s["values"].as_array().into_iter().flatten() {
            let fields: BTreeMap<String, Value> = cols
                .iter()
                .filter_map(|c| c.as_str().map(String::from))
                .zip(row.as_array().cloned().unwrap_or_default())
                .filter(|(_, v)| !v.is_null())
                .collect();
            points.push(serde_json::to_string(&fields).unwrap_or_default());
        }
    }
    points
}
