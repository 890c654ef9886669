//! The InfluxDB sink: a sans-IO core (line protocol, unique point times, the schema, batching
//! and bisection) and an IO edge ([`InfluxWriter`]: its own thread, HTTP, the on-disk spool).
//!
//! The aggregator's loop builds points ([`conn_point`], [`health_point`], ...) and hands them
//! to [`InfluxWriter::send`], which never blocks on the network: points travel over a channel
//! bounded in points, and when it is full they go straight to the spool. The writer thread
//! batches them (`batch_lines`, or whatever came within `flush_interval`), gzips and posts them
//! to v1 `/write` or v2 `/api/v2/write`, retries with backoff (honouring `Retry-After`), spools
//! what it cannot write while InfluxDB is down and replays it, oldest first, when it answers.
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
mod spool;
mod unique;
mod worker;
mod writer;

pub use batch::{classify, Backoff, Batch, Delivery, Outcome, Settled};
pub use line::{EncodeError, Encoded, Field, Key, Point};
pub use schema::{conn_point, health_point, CONN_MEASUREMENT, HEALTH_MEASUREMENT};
pub use spool::Spool;
pub use unique::{uid_offset_ns, UniqueStats, Uniquifier};
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
    /// `http://host:port` (with an optional path prefix). No TLS: put a local proxy in front
    /// of a remote https server.
    pub url: String,
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
    /// Requests that failed, by HTTP status or `connect`/`timeout`/`io`.
    pub http_errors: BTreeMap<String, u64>,
    /// Requests that wrote something.
    pub requests_ok: u64,
}

impl InfluxStats {
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
    #[error("invalid InfluxDB URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("invalid InfluxDB setting: {0}")]
    Config(&'static str),
    #[error("cannot open the InfluxDB spool {dir}: {source}")]
    Spool { dir: String, source: std::io::Error },
    #[error("cannot start the InfluxDB writer thread: {0}")]
    Thread(std::io::Error),
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
            .field("url", &self.url)
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
