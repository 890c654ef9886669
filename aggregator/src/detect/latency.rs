//! The `latency` alert: a server whose handshake round trips got slow against its own past.
//!
//! Each detection window summarises every TCP server's handshake round trips
//! ([`crate::latency`]). A window in which a server had at least `latency_min_sessions`
//! handshakes is *judged*: it raises `latency` when the window's p95 is at least
//! `latency_factor_pct` percent of the server's baseline (and above it), the baseline being the
//! lower median of the p95s of its last `latency_history` judged windows, once there are at
//! least `latency_warmup` of them. Every judged window's p95 then joins the history (a lasting
//! slowdown becomes the new normal: its episode ends once it is most of the history). Windows
//! with fewer handshakes neither raise nor change the baseline. Comparisons are in integers, so
//! the decision at exactly k times is exact. A server not judged for `latency_history` windows
//! is forgotten; at most `latency_servers` servers have a history (more are counted as cap hits).

use std::collections::{BTreeMap, VecDeque};

use super::{AlertKey, AlertKind, DetectConfig, WindowAlerts};
use crate::latency::{Server, Summary};

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Default: the window's p95 must be at least this percent of the baseline (4 times).
pub const DEFAULT_FACTOR_PCT: u64 = 400;
/// Default: handshakes a server needs in a window for the window to be judged.
pub const DEFAULT_MIN_SESSIONS: u64 = 20;
/// Default: judged windows the baseline is the median of.
pub const DEFAULT_HISTORY: usize = 10;
/// Default: judged windows needed before a server can raise.
pub const DEFAULT_WARMUP: usize = 3;

#[derive(serde::Serialize, serde::Deserialize)]
struct History {
    p95s: VecDeque<u64>,
    last_start_ns: u64,
}

/// Every server's recent p95s.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Baselines {
    servers: HashMap<Server, History>,
    over_cap: u64,
}

/// The lower median of a non-empty set.
fn lower_median(values: &VecDeque<u64>) -> u64 {
    let mut v: Vec<u64> = values.iter().copied().collect();
    v.sort_unstable();
    v.get((v.len().max(1) - 1) / 2).copied().unwrap_or(0)
}

impl Baselines {
    /// Servers left out because `latency_servers` histories were kept.
    pub fn over_cap(&self) -> u64 {
        self.over_cap
    }

    /// The window `[start, start + len)`'s servers: alerts into `alerts`, p95s into the
    /// histories.
    pub fn judge(
        &mut self,
        start: u64,
        len: u64,
        servers: &BTreeMap<Server, Summary>,
        cfg: &DetectConfig,
        alerts: &mut WindowAlerts,
    ) {
        let keep = cfg.latency_history.max(1);
        for (server, summary) in servers {
            let Some(rtt) = summary.tcp_rtt else { continue };
            let t = cfg.subnet(server.addr);
            let min = t
                .and_then(|t| t.latency_min_sessions)
                .unwrap_or(cfg.latency_min_sessions);
            if rtt.n < min.max(1) {
                continue;
            }
            let k = t
                .and_then(|t| t.latency_factor_pct)
                .unwrap_or(cfg.latency_factor_pct);
            if !self.servers.contains_key(server) && self.servers.len() >= cfg.latency_caps.servers
            {
                self.over_cap += 1;
                continue;
            }
            let h = self.servers.entry(*server).or_insert_with(|| History {
                p95s: VecDeque::with_capacity(keep),
                last_start_ns: start,
            });
            if h.p95s.len() >= cfg.latency_warmup.max(1) {
                let base = lower_median(&h.p95s);
                let slow = u128::from(rtt.p95) * 100 >= u128::from(base) * u128::from(k);
                if slow && rtt.p95 > base {
                    let evidence = [
                        ("tcp_rtt_p95_us", rtt.p95 / 1000),
                        ("baseline_p95_us", base / 1000),
                        ("factor_pct", k),
                        ("sessions", rtt.n),
                        ("baseline_windows", h.p95s.len() as u64),
                        ("port", u64::from(server.port)),
                    ];
                    alerts.insert(
                        AlertKey::new(AlertKind::Latency, "*", server.to_string()),
                        (rtt.p95 / 1000, evidence.into()),
                    );
                }
            }
            if h.p95s.len() >= keep {
                h.p95s.pop_front();
            }
            h.p95s.push_back(rtt.p95);
            h.last_start_ns = start;
        }
        let forget = len.saturating_mul(keep as u64);
        self.servers
            .retain(|_, h| start.saturating_sub(h.last_start_ns) < forget);
    }
}

#[cfg(test)]
mod tests;
