//! The dashboard's options (`--http-*`), checked (the dashboard itself: the `http` module).

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::Options;

/// `--http-sessions`: sessions held for the session list and search.
pub const DEFAULT_SESSIONS: usize = 20_000;

/// The dashboard's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// `HOST:PORT` (a bare port given is on 127.0.0.1).
    pub listen: String,
    /// Served beyond loopback (`--http-public`).
    pub public: bool,
    /// Sessions held for the list and the search (`--http-sessions`).
    pub sessions: usize,
    /// Keep serving after the end of the run, until SIGINT/SIGTERM (`--http-linger`).
    pub linger: bool,
}

/// The dashboard's options, checked; `None` when `http_listen` is not given.
pub fn http_config(o: &Options, errors: &mut Vec<String>) -> Option<HttpConfig> {
    let Some(addr) = o.http_listen.as_deref() else {
        if o.http_public || o.http_linger || o.http_sessions.is_some() {
            errors.push(
                "http_public, http_linger and http_sessions need http_listen (the dashboard is off)"
                    .to_owned(),
            );
        }
        return None;
    };
    // A bare port, or `localhost:PORT`, is served on 127.0.0.1.
    let localhost_port = addr
        .split_once(':')
        .filter(|(h, _)| h.eq_ignore_ascii_case("localhost"))
        .and_then(|(_, p)| p.parse::<u16>().ok());
    let listen = match addr.parse::<u16>().ok().or(localhost_port) {
        Some(port) => format!("127.0.0.1:{port}"),
        None => addr.to_owned(),
    };
    match listen.parse::<SocketAddr>() {
        Ok(a) if !a.ip().is_loopback() && !o.http_public => errors.push(format!(
            "http_listen {addr:?} is not a loopback address (127.0.0.0/8, [::1], localhost, or a bare port): \
             the dashboard (plain HTTP, no TLS, no authentication) would be served to the \
             network; give --http-public (http_public = true) to allow it"
        )),
        Ok(_) => {}
        Err(_) => errors.push(format!(
            "http_listen {addr:?} is not an address: give IP:PORT (e.g. 127.0.0.1:8080, \
             [::1]:8080), localhost:PORT or a bare port"
        )),
    }
    let sessions = o.http_sessions.unwrap_or(DEFAULT_SESSIONS);
    if sessions == 0 {
        errors.push("http_sessions must be at least 1".to_owned());
    }
    Some(HttpConfig {
        listen,
        public: o.http_public,
        sessions,
        linger: o.http_linger,
    })
}

/// The dashboard's lines of a resolved configuration.
pub fn toml_http(out: &mut String, http: Option<&HttpConfig>) {
    let Some(h) = http else {
        out.push_str("# http_listen: off\n");
        return;
    };
    let _ = writeln!(
        out,
        "http_listen = {}",
        tapflow_runtime::toml_string(&h.listen)
    );
    if h.public {
        out.push_str("http_public = true\n");
    }
    let _ = writeln!(out, "http_sessions = {}", h.sessions);
    if h.linger {
        out.push_str("http_linger = true\n");
    }
}
