//! The live dashboard (`--http-listen`): a read-only web page and its JSON API (`/api/...`),
//! served from the aggregator's own state, without InfluxDB.
//!
//! The aggregator's thread never waits on it: [`Feed`] is one more [`crate::sink::Sink`] that
//! copies what it is handed (traffic partials, released records, alert events, heartbeats, the
//! counters, the final report) into a buffer and, at the end of each input message, offers the
//! buffer to a bounded channel without blocking (a full channel drops the buffer and counts it:
//! `dashboard_batches_dropped`). An updater thread applies what arrives to [`state::DashState`]
//! (bounded: [`HttpConfig::sessions`] sessions, [`state::WINDOWS`] traffic windows, ...) under
//! a mutex that only it and the HTTP threads take. The HTTP side ([`server`]) is hand-written on
//! `std::net` (GET and HEAD only, no keep-alive, bounded request heads, read and write timeouts,
//! at most [`server::MAX_CONNECTIONS`] connections at once): a slow or hostile client holds at
//! most one of its own threads.

mod api;
mod feed;
mod server;
mod state;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub use feed::Feed;
pub use state::DashState;

use crate::config::Options;

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
    let listen = match addr.parse::<u16>() {
        Ok(port) => format!("127.0.0.1:{port}"),
        Err(_) => addr.to_owned(),
    };
    match listen.parse::<SocketAddr>() {
        Ok(a) if !a.ip().is_loopback() && !o.http_public => errors.push(format!(
            "http_listen {addr:?} is not a loopback address (127.0.0.0/8, [::1], or a bare port): \
             the dashboard (plain HTTP, no TLS, no authentication) would be served to the \
             network; give --http-public (http_public = true) to allow it"
        )),
        Ok(_) => {}
        Err(_) => errors.push(format!(
            "http_listen {addr:?} is not an address: give IP:PORT (e.g. 127.0.0.1:8080, \
             [::1]:8080) or a bare port"
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

/// A running dashboard: its address, and the state it serves.
pub struct Dashboard {
    pub bound: SocketAddr,
    pub state: Arc<Mutex<DashState>>,
}

/// Binds `cfg.listen` and starts the updater and HTTP threads; returns the sink that feeds
/// them and the dashboard.
/// `metrics`: the aggregator's counters as it serves them on /metrics, which its loop replaces.
pub fn start(
    cfg: &HttpConfig,
    metrics: tapflow_runtime::MetricsText,
) -> std::io::Result<(Feed, Dashboard)> {
    let listener = std::net::TcpListener::bind(&cfg.listen)?;
    let bound = listener.local_addr()?;
    let (feed, rx) = Feed::new(state::CHANNEL_BATCHES);
    let mut s = DashState::new(cfg.sessions);
    s.metrics = metrics;
    s.batches_dropped = feed.dropped_counter();
    let state = Arc::new(Mutex::new(s));
    let updated = Arc::clone(&state);
    std::thread::Builder::new()
        .name("dashboard".into())
        .spawn(move || state::update_loop(&rx, &updated))?;
    server::serve(listener, Arc::clone(&state), cfg.public)?;
    if bound.ip().is_loopback() {
        tracing::info!(url = %format!("http://{bound}/"), "dashboard");
    } else {
        tracing::warn!(url = %format!("http://{bound}/"), "dashboard served beyond loopback (--http-public), plain HTTP");
    }
    Ok((feed, Dashboard { bound, state }))
}

#[cfg(test)]
mod tests;
