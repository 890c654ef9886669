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

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub use feed::Feed;
pub use state::DashState;

pub use crate::config::HttpConfig;

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
    let in_flight = feed.in_flight();
    std::thread::Builder::new()
        .name("dashboard".into())
        .spawn(move || state::update_loop(&rx, &updated, &in_flight))?;
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
