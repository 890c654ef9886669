//! The HTTP edge: one request per call, gzip, auth. No decisions here: answers go back as
//! they came, and [`super::batch::classify`] says what they mean.

use std::io::Write as _;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;

use super::{InfluxApi, InfluxConfig, InfluxError};

/// What came back for one request.
#[derive(Clone, Debug, Default)]
pub(crate) struct Answer {
    /// `None`: no answer (connection refused, reset, timed out).
    pub status: Option<u16>,
    pub retry_after: Option<String>,
    /// The start of the response body (InfluxDB's error message), or the client error.
    pub message: String,
    /// For counting failures: the status, or `connect` / `timeout` / `io`.
    pub error_kind: Option<String>,
}

pub(crate) struct Client {
    agent: ureq::Agent,
    write_url: String,
    write_query: Vec<(&'static str, String)>,
    query_url: String,
    /// `Authorization` header value. Never logged.
    auth: Option<String>,
    create_db: Option<String>,
    gzip: bool,
    gz: Vec<u8>,
}

impl Client {
    pub fn new(cfg: &InfluxConfig) -> Result<Client, InfluxError> {
        let base = cfg.url.trim_end_matches('/');
        let bad = |reason| InfluxError::Url {
            url: cfg.url.clone(),
            reason,
        };
        if base.starts_with("https://") {
            return Err(bad(
                "https is not built in (no TLS); use http:// or a local proxy",
            ));
        }
        let Some(rest) = base.strip_prefix("http://") else {
            return Err(bad("must start with http://"));
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad("has no host"));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // InfluxDB is usually local; an environment proxy would only get in the way.
            .proxy(None)
            .timeout_global(Some(cfg.timeout))
            .build()
            .into();
        let (write_url, write_query, auth, create_db) = match &cfg.api {
            InfluxApi::V1 {
                db,
                rp,
                user,
                password,
            } => {
                if db.is_empty() {
                    return Err(InfluxError::Config("the v1 database name is empty"));
                }
                let mut q = vec![("db", db.clone())];
                if let Some(rp) = rp.as_ref().filter(|r| !r.is_empty()) {
                    q.push(("rp", rp.clone()));
                }
                q.push(("precision", "ns".to_owned()));
                let auth = user.as_ref().map(|u| {
                    let cred = format!("{u}:{}", password.as_deref().unwrap_or(""));
                    format!("Basic {}", base64(cred.as_bytes()))
                });
                let create = format!("CREATE DATABASE \"{}\"", db.replace('"', "\\\""));
                (format!("{base}/write"), q, auth, Some(create))
            }
            InfluxApi::V2 { org, bucket, token } => {
                if bucket.is_empty() {
                    return Err(InfluxError::Config("the v2 bucket name is empty"));
                }
                let q = vec![
                    ("org", org.clone()),
                    ("bucket", bucket.clone()),
                    ("precision", "ns".to_owned()),
                ];
                (
                    format!("{base}/api/v2/write"),
                    q,
                    Some(format!("Token {token}")),
                    None,
                )
            }
        };
        Ok(Client {
            agent,
            write_url,
            write_query,
            query_url: format!("{base}/query"),
            auth,
            create_db,
            gzip: cfg.gzip,
            gz: Vec::new(),
        })
    }

    /// Posts `body` (line protocol) to the write endpoint.
    pub fn write(&mut self, body: &[u8], timeout: Duration) -> Answer {
        let mut req = self
            .agent
            .post(&self.write_url)
            .query_pairs(self.write_query.iter().map(|(k, v)| (*k, v.as_str())))
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Accept", "application/json");
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        let req = req.config().timeout_global(Some(timeout)).build();
        let result = if self.gzip {
            self.gz.clear();
            let mut enc = GzEncoder::new(std::mem::take(&mut self.gz), Compression::fast());
            let done = enc.write_all(body).and_then(|_| enc.finish());
            match done {
                Ok(gz) => {
                    self.gz = gz;
                    req.header("Content-Encoding", "gzip").send(&self.gz[..])
                }
                Err(e) => return io_answer(&e.to_string()),
            }
        } else {
            req.send(body)
        };
        answer(result)
    }

    /// v1: `CREATE DATABASE` (a no-op when it exists). `None` for v2.
    pub fn create_database(&mut self, timeout: Duration) -> Option<Answer> {
        let q = self.create_db.as_deref()?;
        let mut req = self
            .agent
            .post(&self.query_url)
            .query("q", q)
            .header("Accept", "application/json");
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        Some(answer(
            req.config()
                .timeout_global(Some(timeout))
                .build()
                .send_empty(),
        ))
    }
}

fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    match result {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut message = resp
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_string()
                .unwrap_or_default();
            truncate(&mut message, 512);
            Answer {
                status: Some(status),
                retry_after,
                message,
                error_kind: (!(200..300).contains(&status)).then(|| status.to_string()),
            }
        }
        Err(e) => {
            let kind = match &e {
                ureq::Error::Timeout(_) => "timeout",
                ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => "connect",
                ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                    "connect"
                }
                _ => "io",
            };
            Answer {
                status: None,
                retry_after: None,
                message: e.to_string(),
                error_kind: Some(kind.to_owned()),
            }
        }
    }
}

fn io_answer(message: &str) -> Answer {
    Answer {
        status: None,
        retry_after: None,
        message: message.to_owned(),
        error_kind: Some("io".to_owned()),
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Standard base64 with padding (for HTTP basic auth).
fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(T[((n >> (18 - 6 * i)) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_encoding() {
        for (input, want) in [
            ("", ""),
            ("a", "YQ=="),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn urls_are_checked() {
        let api = InfluxApi::V2 {
            org: "o".into(),
            bucket: "b".into(),
            token: "t".into(),
        };
        for (url, ok) in [
            ("http://127.0.0.1:8086", true),
            ("http://influx.example/prefix/", true),
            ("https://influx.example", false),
            ("influx:8086", false),
            ("http://", false),
        ] {
            let cfg = InfluxConfig::new(url, api.clone(), "/tmp");
            assert_eq!(Client::new(&cfg).is_ok(), ok, "{url}");
        }
    }
}
