//! The InfluxDB sink: a sans-IO core (line protocol, unique point times, the schema, batching
//! and bisection) and an IO edge ([`InfluxWriter`]: its own thread, HTTP, the on-disk spool).
//!
//! The aggregator's loop builds points ([`conn_point`], [`health_point`], ...) and hands them
//! to [`InfluxWriter::send`], which never blocks on the network: points travel over a channel
//! bounded in points, and when it is full they go straight to the spool. The writer thread
//! batches them (`batch_lines`, or whatever came within `flush_interval`), gzips and posts them
//! to v1 `/write` or v2 `/api/v2/write`, retries with backoff (honouring `Retry-After`), spools
//! what it cannot write while InfluxDB is down and replays it, oldest first, when it answers.
//! Over http or https (rustls; the system's roots or a CA file, see `tls.rs`); a TLS failure
//! is counted and retried like a connection failure, the points waiting in the spool.
//!
//! Credentials (the v1 password, the v2 token) come from files or the environment, live in
//! [`InfluxApi`] only, and reach no log line: its `Debug` redacts them, URLs may not carry
//! any ([`check_url`]), and the `Authorization` header is built once and never printed.
//!
//! Nothing is lost silently: every point given to `send` ends as written, rejected (a
//! permanent 4xx for that very point, found by bisecting its batch; or not encodable), dropped
//! because the spool was full (counted, ERROR logged), or still in the spool at exit (counted,
//! and written by the next run that opens the same spool). [`InfluxStats`] says which.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

mod batch;
mod http;
mod line;
mod schema;
mod shared;
mod spool;
mod tls;
mod unique;
mod worker;
mod writer;

pub use batch::{classify, measurement_of, Backoff, Batch, Delivery, Outcome, Settled};
pub use http::check_url;
pub use line::{EncodeError, Encoded, Field, Key, Point};
pub use schema::{
    conn_point, health_point, latency_point, CONN_MEASUREMENT, HEALTH_MEASUREMENT,
    LATENCY_MEASUREMENT,
};
pub use spool::{default_spool_dir, Spool, SpoolError};
pub use tls::{load_ca_file, redact_url};
pub use unique::{uid_offset_ns, UniqueSnapshot, UniqueStats, Uniquifier};
pub use writer::InfluxWriter;

/// Which write API, and its credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum InfluxApi {
    /// InfluxDB 1.x: `POST /write?db=&rp=&precision=ns`, the database created if missing
    /// (`CREATE DATABASE`), HTTP basic auth when `user` is given.
    V1 {
        db: String,
        rp: Option<String>,
        user: Option<String>,
        password: Option<String>,
    },
    /// InfluxDB 2.x (or 3.x's v2 compatibility): `POST /api/v2/write?org=&bucket=&precision=ns`
    /// with `Authorization: Token <token>`.
    V2 {
        org: String,
        bucket: String,
        token: String,
    },
}

/// The writer's settings.
#[derive(Clone)]
pub struct InfluxConfig {
    /// `http://host:port` or `https://host:port` (with an optional path prefix); never with
    /// credentials in it ([`check_url`]).
    pub url: String,
    /// https: PEM file of the CA certificate(s) to trust instead of the system's roots (a
    /// private CA, or InfluxDB's self-signed certificate) [default: the system's roots].
    pub ca_file: Option<PathBuf>,
    pub api: InfluxApi,
    /// Lines per request [default: 5000].
    pub batch_lines: usize,
    /// Longest a point waits for its batch to fill [default: 1 s].
    pub flush_interval: Duration,
    /// gzip request bodies [default: true].
    pub gzip: bool,
    /// Where batches wait while InfluxDB is down or failing (created if missing).
    pub spool_dir: PathBuf,
    /// Spool bound; past it the oldest batches are dropped and counted [default: 256 MiB].
    pub spool_max_bytes: u64,
    /// Longest wait between retries, unless the server's `Retry-After` says more
    /// [default: 30 s].
    pub max_retry_delay: Duration,
    /// Per-request timeout [default: 10 s].
    pub timeout: Duration,
}

impl InfluxConfig {
    /// The defaults above, for `url`, `api` and `spool_dir`.
    pub fn new(url: impl Into<String>, api: InfluxApi, spool_dir: impl Into<PathBuf>) -> Self {
        InfluxConfig {
            url: url.into(),
            ca_file: None,
            api,
            batch_lines: 5000,
            flush_interval: Duration::from_secs(1),
            gzip: true,
            spool_dir: spool_dir.into(),
            spool_max_bytes: 256 << 20,
            max_retry_delay: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What the writer did. At exit (after [`InfluxWriter::finish`]):
/// `points_sent + points_recovered = points_written + points_rejected +
/// points_dropped_spool_full + points_in_spool`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct InfluxStats {
    /// Points given to `send`.
    pub points_sent: u64,
    /// Points found in the spool at start, left by an earlier run.
    pub points_recovered: u64,
    /// Points InfluxDB accepted.
    pub points_written: u64,
    /// The same, by measurement (to compare with InfluxQL counts and the JSON logs).
    pub points_written_by_measurement: BTreeMap<String, u64>,
    /// Points refused for good (the point itself: 400/422 after bisecting, or the whole batch
    /// on 404), or that could not be encoded (no writable field).
    pub points_rejected: u64,
    /// Points that went to the spool (each time they went).
    pub points_spooled: u64,
    /// Points dropped because the spool was full (or unreadable).
    pub points_dropped_spool_full: u64,
    /// Points in the spool now.
    pub points_in_spool: u64,
    /// Points received by the writer thread and not settled yet (0 after `finish`).
    pub points_pending: u64,
    /// Failed attempts that will be (or were) tried again.
    pub retries: u64,
    /// Points whose time was moved to keep (series, time) unique.
    pub collisions: u64,
    /// Details of the uniquifier (points checked, forgotten pairs...).
    pub unique: UniqueStats,
    /// Unsigned values above `i64::MAX` written clamped.
    pub uint_clamped: u64,
    /// Non-finite float fields left out.
    pub fields_dropped: u64,
    /// Requests that failed, by HTTP status or `connect`/`timeout`/`tls`/`io`.
    pub http_errors: BTreeMap<String, u64>,
    /// Requests that wrote something.
    pub requests_ok: u64,
}

impl InfluxStats {
    /// The counters as plain names and values, e.g. for [`health_point`]`("influx", ...)`:
    /// `http_errors` and `points_written_by_measurement` are flattened to
    /// `http_errors_<kind>` and `points_written_<measurement>`; `unique` to `unique_<name>`.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let mut c: BTreeMap<String, u64> = [
            ("points_sent", self.points_sent),
            ("points_recovered", self.points_recovered),
            ("points_written", self.points_written),
            ("points_rejected", self.points_rejected),
            ("points_spooled", self.points_spooled),
            ("points_dropped_spool_full", self.points_dropped_spool_full),
            ("points_in_spool", self.points_in_spool),
            ("points_pending", self.points_pending),
            ("retries", self.retries),
            ("collisions", self.collisions),
            ("uint_clamped", self.uint_clamped),
            ("fields_dropped", self.fields_dropped),
            ("requests_ok", self.requests_ok),
            ("unique_unchecked", self.unique.unchecked),
            ("unique_evicted_over_cap", self.unique.evicted_over_cap),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in &self.http_errors {
            c.insert(format!("http_errors_{k}"), *v);
        }
        for (k, v) in &self.points_written_by_measurement {
            c.insert(format!("points_written_{k}"), *v);
        }
        c
    }

    /// `points_sent + points_recovered` minus every way a point can end: 0 when all is
    /// accounted for (and nothing is still on its way to the writer thread).
    pub fn unaccounted(&self) -> i128 {
        i128::from(self.points_sent) + i128::from(self.points_recovered)
            - i128::from(self.points_written)
            - i128::from(self.points_rejected)
            - i128::from(self.points_dropped_spool_full)
            - i128::from(self.points_in_spool)
            - i128::from(self.points_pending)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    /// `url` is shown redacted ([`redact_url`]).
    #[error("invalid InfluxDB URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("cannot use the InfluxDB CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("invalid InfluxDB setting: {0}")]
    Config(&'static str),
    #[error("cannot open the InfluxDB spool {dir}: {source}")]
    Spool {
        dir: String,
        source: spool::SpoolError,
    },
    #[error("cannot start the InfluxDB writer thread: {0}")]
    Thread(std::io::Error),
    #[error("InfluxDB: the points not yet written cannot be made durable in the spool: {0}")]
    Checkpoint(String),
}

// Credentials never reach a log line, even through `{:?}`.
impl fmt::Debug for InfluxApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InfluxApi::V1 {
                db,
                rp,
                user,
                password,
            } => f
                .debug_struct("V1")
                .field("db", db)
                .field("rp", rp)
                .field("user", user)
                .field("password", &password.as_ref().map(|_| "<redacted>"))
                .finish(),
            InfluxApi::V2 { org, bucket, .. } => f
                .debug_struct("V2")
                .field("org", org)
                .field("bucket", bucket)
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

impl fmt::Debug for InfluxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InfluxConfig")
            .field("url", &redact_url(&self.url))
            .field("ca_file", &self.ca_file)
            .field("api", &self.api)
            .field("batch_lines", &self.batch_lines)
            .field("flush_interval", &self.flush_interval)
            .field("gzip", &self.gzip)
            .field("spool_dir", &self.spool_dir)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("max_retry_delay", &self.max_retry_delay)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_flatten_and_accounting_balances() {
        let mut s = InfluxStats {
            points_sent: 10,
            points_recovered: 2,
            points_written: 7,
            points_rejected: 1,
            points_dropped_spool_full: 1,
            points_in_spool: 2,
            points_pending: 1,
            ..InfluxStats::default()
        };
        assert_eq!(s.unaccounted(), 0);
        s.http_errors.insert("503".into(), 4);
        s.points_written_by_measurement
            .insert("tapflow_conn".into(), 7);
        let c = s.counters();
        assert_eq!(c.get("http_errors_503"), Some(&4));
        assert_eq!(c.get("points_written_tapflow_conn"), Some(&7));
        assert_eq!(c.get("points_written"), Some(&7));
        s.points_written += 1;
        assert_eq!(s.unaccounted(), -1);
    }

    #[test]
    fn secrets_are_redacted() {
        let v1 = InfluxApi::V1 {
            db: "tapflow".into(),
            rp: None,
            user: Some("u".into()),
            password: Some("hunter2".into()),
        };
        let v2 = InfluxApi::V2 {
            org: "o".into(),
            bucket: "b".into(),
            token: "s3cr3t-token".into(),
        };
        for api in [v1, v2] {
            let text = format!("{:?}", InfluxConfig::new("http://x", api, "/tmp/s"));
            assert!(
                !text.contains("hunter2") && !text.contains("s3cr3t"),
                "{text}"
            );
            assert!(text.contains("redacted"), "{text}");
        }
    }
}
