//! Per-server latency per detection window (sans-IO, bounded): the samples the aggregator
//! keeps of each TCP server's sessions and their exact percentiles.
//!
//! A server is a TCP responder (address, port). Each final record of a TCP session to it gives
//! at most two samples ([`samples_of`]):
//! - `tcp_rtt`: the handshake round trip (`tcp_synack + tcp_ackdat`, issue 15);
//! - `data_rtt`: the session's mean *originator-data* round trip (`orig_ack_rtt`: the client's
//!   data segments to the server's first acknowledgement covering them). That is the round trip
//!   the server's side closes: network to the server plus the time the server takes to
//!   acknowledge (or answer, when the answer carries the acknowledgement) what the client sent,
//!   so it grows when "this server got slow". The other direction (`resp_ack_rtt`) measures the
//!   clients. One sample per session, so one bulk transfer does not outweigh many sessions.
//!
//! Samples go into the window of the record's first packet (the detection windows). Per server
//! and window, up to `samples` of each kind are kept exactly (in release order, which is the
//! same with any number of processors); more are counted (`*_dropped`) and the percentiles are
//! those of the kept samples. Up to `servers` servers are tracked per window; sessions of
//! further servers are counted as `servers_over_cap`. Percentiles are nearest-rank over the
//! sorted kept samples: independent of the order samples arrived in.

use std::collections::BTreeMap;

use tapflow_proto::conn::ConnRecord;
use tapflow_proto::key::ip_proto;
use tapflow_proto::Addr;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

const SECOND: u64 = 1_000_000_000;

/// Default: samples kept per server, window and kind (p99 of 1000 is the 990th).
pub const DEFAULT_SAMPLES: usize = 1000;
/// Default: servers tracked per window (memory: at most `servers * samples * 16` bytes per open
/// window, 160 MB; in practice the samples that exist).
pub const DEFAULT_SERVERS: usize = 10_000;

/// A TCP server: the responder's address and port.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Server {
    pub addr: Addr,
    pub port: u16,
}

impl std::fmt::Display for Server {
    /// `10.0.0.2:443`, `[2001:db8::1]:443`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.addr.is_v4() {
            write!(f, "{}:{}", self.addr, self.port)
        } else {
            write!(f, "[{}]:{}", self.addr, self.port)
        }
    }
}

/// What a session says about its server's latency: the handshake round trip and the mean
/// originator-data round trip, ns (either may be missing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub tcp_rtt_ns: Option<u64>,
    pub data_rtt_ns: Option<u64>,
}

impl Sample {
    pub fn is_empty(&self) -> bool {
        self.tcp_rtt_ns.is_none() && self.data_rtt_ns.is_none()
    }
}

/// The latency samples of a final record: TCP sessions with a timing only.
pub fn samples_of(r: &ConnRecord) -> Sample {
    match (&r.timing, r.proto) {
        (Some(t), ip_proto::TCP) => Sample {
            tcp_rtt_ns: t.tcp_rtt_ns(),
            data_rtt_ns: t.orig_ack_rtt.sum.checked_div(t.orig_ack_rtt.n),
        },
        _ => Sample::default(),
    }
}

/// Caps on what one window keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Caps {
    pub samples: usize,
    pub servers: usize,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps {
            samples: DEFAULT_SAMPLES,
            servers: DEFAULT_SERVERS,
        }
    }
}

/// Samples of one kind: up to the cap kept, all counted.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Kept {
    kept: Vec<u64>,
    seen: u64,
}

impl Kept {
    fn add(&mut self, v: Option<u64>, cap: usize) {
        if let Some(v) = v {
            self.seen += 1;
            if self.kept.len() < cap {
                self.kept.push(v);
            }
        }
    }

    fn summary(mut self) -> Option<Percentiles> {
        self.kept.sort_unstable();
        Percentiles::of(&self.kept, self.seen)
    }
}

/// Exact percentiles (nearest rank) of the kept samples, ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percentiles {
    /// Samples seen (kept or not).
    pub n: u64,
    /// Samples past the cap: not in the percentiles.
    pub dropped: u64,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    /// Of `sorted` (ascending), `seen` having been offered; `None` when empty.
    pub fn of(sorted: &[u64], seen: u64) -> Option<Percentiles> {
        let max = *sorted.last()?;
        Some(Percentiles {
            n: seen,
            dropped: seen.saturating_sub(sorted.len() as u64),
            p50: nearest_rank(sorted, 50),
            p95: nearest_rank(sorted, 95),
            p99: nearest_rank(sorted, 99),
            max,
        })
    }
}

/// The `p`-th percentile of a non-empty ascending slice, nearest-rank: the smallest value with
/// at least `p`% of the values at or below it (element `ceil(p * n / 100)`, 1-based).
pub fn nearest_rank(sorted: &[u64], p: usize) -> u64 {
    let n = sorted.len();
    let rank = (p * n).div_ceil(100).clamp(1, n.max(1));
    sorted.get(rank - 1).copied().unwrap_or(0)
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ServerSamples {
    sessions: u64,
    tcp_rtt: Kept,
    data_rtt: Kept,
}

/// One window of one server, summarised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Sessions with a sample of either kind.
    pub sessions: u64,
    pub tcp_rtt: Option<Percentiles>,
    pub data_rtt: Option<Percentiles>,
}

/// One window's samples by server.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Window {
    servers: HashMap<Server, ServerSamples>,
    /// Sessions with samples whose server was not tracked (the servers cap).
    over_cap: u64,
}

impl Window {
    /// Adds one session's samples; false if the servers cap kept it out (counted).
    pub fn add(&mut self, server: Server, s: Sample, caps: Caps) -> bool {
        if s.is_empty() {
            return true;
        }
        if self.servers.len() >= caps.servers && !self.servers.contains_key(&server) {
            self.over_cap += 1;
            return false;
        }
        let e = self.servers.entry(server).or_default();
        e.sessions += 1;
        e.tcp_rtt.add(s.tcp_rtt_ns, caps.samples);
        e.data_rtt.add(s.data_rtt_ns, caps.samples);
        true
    }

    /// Sessions kept out by the servers cap.
    pub fn over_cap(&self) -> u64 {
        self.over_cap
    }

    /// Every server's summary, in (address, port) order.
    pub fn summarise(self) -> BTreeMap<Server, Summary> {
        self.servers
            .into_iter()
            .map(|(server, s)| {
                let summary = Summary {
                    sessions: s.sessions,
                    tcp_rtt: s.tcp_rtt.summary(),
                    data_rtt: s.data_rtt.summary(),
                };
                (server, summary)
            })
            .collect()
    }
}

/// A window judged: its start, length and servers.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    pub start_ns: u64,
    pub len_ns: u64,
    pub servers: BTreeMap<Server, Summary>,
    /// Sessions kept out by the servers cap.
    pub over_cap: u64,
}

/// Counters of a [`Tracker`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrackerStats {
    /// Sessions with samples whose window had closed already.
    pub late: u64,
    /// Sessions with samples kept out by the servers cap.
    pub servers_over_cap: u64,
}

/// Tumbling windows of samples, closed as the detection windows are: once the release order
/// has moved `hold` past a window's end (every window at the end of the stream).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Tracker {
    len: u64,
    hold: u64,
    caps: Caps,
    open: BTreeMap<u64, Window>,
    /// Windows starting before this have closed.
    closed_below: u64,
    stats: TrackerStats,
}

impl Tracker {
    pub fn new(window_s: u64, hold_s: u64, caps: Caps) -> Tracker {
        Tracker {
            len: window_s.max(1) * SECOND,
            hold: hold_s * SECOND,
            caps,
            open: BTreeMap::new(),
            closed_below: 0,
            stats: TrackerStats::default(),
        }
    }

    pub fn stats(&self) -> TrackerStats {
        self.stats
    }

    /// A final record, in release order: its samples into its window, and the windows that
    /// its last packet's time closes appended to `out`.
    pub fn on_record(&mut self, r: &ConnRecord, out: &mut Vec<Closed>) {
        let last = r.ts_ns.saturating_add(r.duration_ns.unwrap_or(0));
        self.close_until(last, out);
        let s = samples_of(r);
        if s.is_empty() {
            return;
        }
        let start = r.ts_ns / self.len * self.len;
        if start < self.closed_below {
            self.stats.late += 1;
            return;
        }
        let server = Server {
            addr: r.resp_h,
            port: r.resp_p,
        };
        let w = self.open.entry(start).or_default();
        if !w.add(server, s, self.caps) {
            self.stats.servers_over_cap += 1;
        }
    }

    /// Closes, oldest first, every window that ended at least `hold` before `now_ns`.
    pub fn close_until(&mut self, now_ns: u64, out: &mut Vec<Closed>) {
        while let Some(entry) = self.open.first_entry() {
            let start = *entry.key();
            if start.saturating_add(self.len).saturating_add(self.hold) > now_ns {
                break;
            }
            let w = entry.remove();
            self.closed_below = start + self.len;
            out.push(Closed {
                start_ns: start,
                len_ns: self.len,
                over_cap: w.over_cap(),
                servers: w.summarise(),
            });
        }
    }
}

#[cfg(test)]
mod tests;
