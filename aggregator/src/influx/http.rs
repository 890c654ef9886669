//! The HTTP edge: one request per call, gzip, auth. No decisions here: answers go back as
//! they came, and [`super::batch::classify`] says what they mean.

use std::io::Write as _;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;

use super::tls;
use super::{InfluxApi, InfluxConfig, InfluxError};

mod redact;

/// What came back for one request.
#[derive(Clone, Debug, Default)]
pub(crate) struct Answer {
    /// `None`: no answer (connection refused, reset, timed out).
    pub status: Option<u16>,
    pub retry_after: Option<String>,
    /// InfluxDB's error message (a short excerpt of the body, credentials redacted:
    /// [`redact::error_excerpt`]), or the client error.
    pub message: String,
    /// For counting failures: the status, or `connect` / `timeout` / `tls` / `io`.
    pub error_kind: Option<String>,
}

pub(crate) struct Client {
    agent: ureq::Agent,
    /// For naming failures: an https URL, and its CA file if any.
    https: bool,
    ca_file: Option<std::path::PathBuf>,
    write_url: String,
    write_query: Vec<(&'static str, String)>,
    query_url: String,
    /// `Authorization` header value. Never logged.
    auth: Option<String>,
    /// The credentials as they could come back in an error body (password, token, the
    /// header's base64), redacted from it.
    secrets: Vec<String>,
    create_db: Option<String>,
    gzip: bool,
    gz: Vec<u8>,
}

/// Checks an InfluxDB base URL: `http://` or `https://`, a host (a name, an IPv4 address or a
/// bracketed IPv6 one) with an optional port from 1 to 65535, no credentials (they go in the
/// credential files, never in a URL that could be logged) and no query string. The error shows
/// the URL with any credentials redacted, and never what stands where a port should be (in
/// `http://user:password` it is a password).
pub fn check_url(url: &str) -> Result<(), InfluxError> {
    let bad = |reason| InfluxError::Url {
        url: tls::redact_url(url),
        reason,
    };
    let Some((scheme, rest)) = ["http://", "https://"]
        .into_iter()
        .find_map(|s| url.strip_prefix(s).map(|rest| (s, rest)))
    else {
        return Err(bad("must start with http:// or https://"));
    };
    if rest.contains('@') {
        return Err(bad(
            "must not hold credentials (user:password@): give --influx-user with \
             --influx-password-file (v1) or --influx-token-file (v2), or their TAPFLOW_INFLUX_* \
             variables",
        ));
    }
    if rest.contains(['?', '#']) {
        return Err(bad("must not have a query string or fragment"));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    check_authority(authority).map_err(|reason| {
        let host = match authority.find(']') {
            Some(i) if authority.starts_with('[') => &authority[..=i],
            _ => authority.split(':').next().unwrap_or_default(),
        };
        InfluxError::Url {
            // Whatever stands after the last `:` may be a password: never shown.
            url: match reason {
                AuthorityProblem::Port => format!("{scheme}{host}:<redacted>"),
                _ => tls::redact_url(url),
            },
            reason: reason.as_str(),
        }
    })
}

/// What is wrong with the `host[:port]` of a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthorityProblem {
    NoHost,
    Bracket,
    Host,
    Port,
}

impl AuthorityProblem {
    fn as_str(self) -> &'static str {
        match self {
            AuthorityProblem::NoHost => "has no host",
            AuthorityProblem::Bracket => {
                "has an IPv6 host that is not a closed [ADDRESS] (e.g. https://[::1]:8086)"
            }
            AuthorityProblem::Host => {
                "has a host with a space, a control character or a bare `:` (an IPv6 address \
                 goes in brackets: http://[::1]:8086)"
            }
            AuthorityProblem::Port => {
                "has a port that is not a number from 1 to 65535 (credentials go in \
                 --influx-user and --influx-password-file, never in the URL)"
            }
        }
    }
}

/// Checks `host[:port]`: a non-empty host (or `[IPv6]`) and, after a `:`, a port 1-65535.
fn check_authority(authority: &str) -> Result<(), AuthorityProblem> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or(AuthorityProblem::Bracket)?;
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(AuthorityProblem::Bracket);
            }
            match after {
                "" => (addr, None),
                p => (
                    addr,
                    Some(p.strip_prefix(':').ok_or(AuthorityProblem::Port)?),
                ),
            }
        }
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(AuthorityProblem::NoHost);
    }
    if host.contains(|c: char| c.is_whitespace() || c.is_control() || c == '[' || c == ']') {
        return Err(AuthorityProblem::Host);
    }
    match port {
        Some(p)
            if !p.bytes().all(|b| b.is_ascii_digit()) || !matches!(p.parse::<u16>(), Ok(1..)) =>
        {
            Err(AuthorityProblem::Port)
        }
        _ => Ok(()),
    }
}

impl Client {
    pub fn new(cfg: &InfluxConfig) -> Result<Client, InfluxError> {
        check_url(&cfg.url)?;
        let base = cfg.url.trim_end_matches('/');
        let https = base.starts_with("https://");
        if cfg.ca_file.is_some() && !https {
            return Err(InfluxError::Config(
                "a CA file is for https:// URLs only (this one is http://)",
            ));
        }
        let mut agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // InfluxDB is usually local; an environment proxy would only get in the way.
            .proxy(None)
            .timeout_global(Some(cfg.timeout));
        if https {
            agent = agent.tls_config(tls::config(cfg.ca_file.as_deref())?);
        }
        let agent: ureq::Agent = agent.build().into();
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
            secrets: secrets(&cfg.api, auth.as_deref()),
            https,
            ca_file: cfg.ca_file.clone(),
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
        self.answer(result)
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
        Some(
            self.answer(
                req.config()
                    .timeout_global(Some(timeout))
                    .build()
                    .send_empty(),
            ),
        )
    }
}

impl Client {
    fn answer(&self, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        match result {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("Retry-After")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let mut body = resp
                    .body_mut()
                    .with_config()
                    .limit(64 * 1024)
                    .read_to_string()
                    .unwrap_or_default();
                truncate(&mut body, 4096);
                let message = redact::error_excerpt(&body, &self.secrets);
                Answer {
                    status: Some(status),
                    retry_after,
                    message,
                    error_kind: (!(200..300).contains(&status)).then(|| status.to_string()),
                }
            }
            Err(e) => {
                let (kind, message) = match &e {
                    e if tls::is_tls_error(e, self.https) => {
                        ("tls", tls::describe(e, self.ca_file.as_deref()))
                    }
                    ureq::Error::Timeout(_) => ("timeout", e.to_string()),
                    ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                        ("connect", e.to_string())
                    }
                    ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                        ("connect", e.to_string())
                    }
                    _ => ("io", e.to_string()),
                };
                Answer {
                    status: None,
                    retry_after: None,
                    message,
                    error_kind: Some(kind.to_owned()),
                }
            }
        }
    }
}

/// The credentials as an error body could echo them: the password or token, and the
/// `Authorization` header's credential (the base64 of `user:password`).
fn secrets(api: &InfluxApi, auth: Option<&str>) -> Vec<String> {
    let mut secrets: Vec<String> = match api {
        InfluxApi::V1 { password, .. } => password.iter().cloned().collect(),
        InfluxApi::V2 { token, .. } => vec![token.clone()],
    };
    secrets.extend(
        auth.and_then(|a| a.split_once(' '))
            .map(|(_, cred)| cred.to_owned()),
    );
    secrets.retain(|s| !s.is_empty());
    secrets
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
            ("https://influx.example", true),
            ("https://127.0.0.1:8086/", true),
            ("ftp://influx.example", false),
            ("influx:8086", false),
            ("http://", false),
            ("https:///x", false),
            ("https://admin:hunter2@influx.example", false),
            ("http://influx.example/?u=admin&p=hunter2", false),
            ("http://[::1]:8086", true),
            ("https://[2001:db8::1]/prefix", true),
            ("http://influx.example:65535", true),
            ("http://u:S3cret", false),
            ("http://influx.example:abc", false),
            ("http://influx.example:99999", false),
            ("http://influx.example:0", false),
            ("http://influx.example:", false),
            ("http://influx.example:80:80", false),
            ("https://[::1", false),
            ("https://[::1]x", false),
            ("https://[nope]:8086", false),
            ("http://:8086", false),
            ("http://influx example", false),
            ("http://u:S3cret/x", false),
        ] {
            let cfg = InfluxConfig::new(url, api.clone(), "/tmp");
            assert_eq!(Client::new(&cfg).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn url_errors_never_show_credentials() {
        for url in [
            "http://u:S3cret",
            "http://u:S3cret/prefix",
            "http://u:S3cret:x",
            "http://[::1]:S3cret",
            "http://u:S3cret@influx.example",
            "https://u:pa/S3cret@influx.example",
            "http://influx.example/?p=S3cret",
        ] {
            let e = check_url(url).expect_err("refused").to_string();
            assert!(!e.contains("S3cret"), "{url}: {e}");
        }
        let e = check_url("http://u:S3cret@h")
            .expect_err("userinfo")
            .to_string();
        assert!(e.contains("--influx-password-file"), "{e}");
        let e = check_url("http://u:S3cret")
            .expect_err("a bad port")
            .to_string();
        assert!(
            e.contains("http://u:<redacted>") && e.contains("port"),
            "{e}"
        );
    }

    /// A loopback server that answers every connection with `reply` and closes it.
    fn plain_server(reply: &'static [u8]) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().map_or(0, |a| a.port());
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let _ = std::io::Read::read(&mut s, &mut buf);
                let _ = s.write_all(reply);
            }
        });
        port
    }

    #[test]
    fn failures_are_named_and_carry_no_credentials() {
        let v1 = InfluxApi::V1 {
            db: "tapflow".into(),
            rp: None,
            user: Some("tapflow".into()),
            password: Some("hunter2-Pa55".into()),
        };
        let v2 = InfluxApi::V2 {
            org: "o".into(),
            bucket: "b".into(),
            token: "s3cr3t-T0ken".into(),
        };
        let http = plain_server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
            l.local_addr().map_or(0, |a| a.port())
        };
        let basic = base64(b"tapflow:hunter2-Pa55");
        for api in [v1, v2] {
            for (url, kind, says) in [
                (
                    format!("https://127.0.0.1:{http}"),
                    "tls",
                    "does not speak TLS",
                ),
                (format!("http://127.0.0.1:{closed}"), "connect", ""),
            ] {
                let mut cfg = InfluxConfig::new(url.clone(), api.clone(), "/tmp");
                cfg.timeout = Duration::from_secs(5);
                let mut client = Client::new(&cfg).expect("build the HTTP client");
                let ans = client.write(b"m f=1i 1\n", cfg.timeout);
                let text = format!("{ans:?}");
                assert_eq!(ans.error_kind.as_deref(), Some(kind), "{url}: {text}");
                assert!(ans.message.contains(says), "{url}: {text}");
                for secret in ["hunter2", "s3cr3t", basic.as_str()] {
                    assert!(!text.contains(secret), "{url}: {text}");
                }
            }
        }
    }
}
