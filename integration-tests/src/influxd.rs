//! A real `influxd` (Debian's `influxdb` package, 1.x) for the tests, without systemd: its
//! own config file, data in a temporary directory, HTTP and RPC on free loopback ports. Killed
//! when dropped; can be killed and restarted on the same directories and ports to play an
//! outage.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::free_port;

/// The `influxd` binary: `$INFLUXD`, else the first on `PATH`, else `/usr/bin/influxd`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("INFLUXD") {
        return Some(PathBuf::from(p));
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
}

impl Influxd {
    /// Starts influxd on a new temporary directory, or returns `None` after printing
    /// `SKIP: influxd not installed` (CI installs Debian's `influxdb`).
    pub fn start() -> Option<Influxd> {
        let Some(bin) = binary() else {
            eprintln!("SKIP: influxd not installed (Debian package `influxdb`)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (http_port, rpc_port) = (free_port(), free_port());
        let config = dir.path().join("influxdb.conf");
        std::fs::write(&config, config_text(dir.path(), http_port, rpc_port))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut d = Influxd {
            dir,
            http_port,
            rpc_port,
            bin,
            config,
            child: None,
            agent,
        };
        d.restart();
        Some(d)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
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
            .unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(&self.bin)
            .arg("-config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
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
        let text = match resp {
            Ok(mut r) => r.body_mut().read_to_string().unwrap_or_default(),
            Err(e) => panic!("query {q:?} failed: {e}"),
        };
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("query {q:?}: {e}: {text}"))
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

/// A config for influxd 1.x with everything under `dir`, loopback only, quiet.
fn config_text(dir: &Path, http_port: u16, rpc_port: u16) -> String {
    let d = dir.display();
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

[logging]
  level = "warn"
  suppress-logo = true
"#
    )
}
