//! Anomaly detection over the ordered stream of connection records (sans-IO).
//!
//! The aggregator receives every processor's records and releases them in one deterministic
//! order (last packet time, uid) — the same with any number of processors or collectors. The
//! detector consumes that stream, so its decisions are shard-invariant by construction: no
//! decision keyed by a host is taken inside one processor.
//!
//! Each record is classified ([`classify`]) into what it says about hosts: a failed attempt
//! (no answer, RST, an ACK probe answered by RST; never a reply), a stealth probe (NULL, FIN,
//! XMAS, SYN+FIN), an unanswered SYN, an unsolicited response (a reply with no request: DNS
//! answers with no query, SYN-ACKs or RSTs with no SYN), and packets towards a victim. These
//! go into tumbling windows of event time, keyed by the record's first packet ([`window`]):
//! `window` seconds (60) for scans, SYN floods and reflection, 5 s for volumetric floods
//! (FastNetMon's averaging). Windows exist only where there is traffic. A window is judged once
//! the record stream has moved `hold` seconds (120) past its end, so SYNs have had their grace
//! period and late answers are in; a record that starts in a window judged already counts as
//! `late` for detection (long-lived connections, which are rarely attacks).
//!
//! Thresholds (all configurable; counts scale with the window, see the README):
//! `port_scan` >= 15 distinct failed ports from one source to one host; `address_scan` >= 25
//! distinct hosts failing on one port from one source; `stealth_scan` >= 15 distinct ports
//! probed with NULL/FIN/XMAS/SYN+FIN; `syn_flood` > 256 unanswered SYNs per minute to one
//! victim, from many sources (>= 20) or to few ports (<= 10) — one source walking many ports is
//! a scan; `reflection` unsolicited responses from >= 20 distinct sources to one victim;
//! `udp_flood`, `icmp_flood`, `volumetric_flood` (other traffic) at least 20,000 packets/s
//! or 1 Gbit/s to one victim averaged over 5 s, or at least 50,000 packets/s or 2.5 Gbit/s
//! over one 100 ms interval of it (peak rates, [`rates`]: a 25 ms burst is seen at its own
//! rate); `flow_flood` at least 3,500 new flows a second to one victim over 5 s (FastNetMon's
//! `threshold_flows`). `reflection` is also recognised by its shape whatever the port
//! ([`shape`]): one-way UDP from at least 20 sources to one victim, from at most 3 source
//! ports carrying 90% of it or more, 100 packets per source at most, from no port the victim
//! asked itself.
//!
//! `latency`: a TCP server whose handshake round-trip p95 in a window (of at least 20
//! handshakes) is at least 4 times (400%) the lower median of its p95s over its last 10 such
//! windows, once it has 3 ([`latency`]).
//!
//! An attack that lasts is one episode ([`episode`]): a `start` event in the first window that
//! raises it, `update`s while it goes on, an `end` with its peak when a window passes without
//! it (or at end of stream).

mod classify;
mod distinct;
mod episode;
mod failed;
mod latency;
mod rates;
mod shape;
mod window;

use std::collections::BTreeMap;

use tapflow_proto::conn::ConnRecord;
use tapflow_proto::Addr;

use crate::latency::{samples_of, Caps, Sample};

pub use episode::{AlertEvent, AlertKey, AlertKind, EventKind};
pub use latency::{DEFAULT_FACTOR_PCT, DEFAULT_HISTORY, DEFAULT_MIN_SESSIONS, DEFAULT_WARMUP};

/// Reflection by shape: the top source ports looked at.
pub const DEFAULT_REFLECTION_PORTS: usize = 3;
/// Reflection by shape: the share of the one-way packets the top ports carry, percent.
pub const DEFAULT_REFLECTION_PORT_SHARE_PCT: u64 = 90;
/// Reflection by shape: packets per source at most, on average.
pub const DEFAULT_REFLECTION_MAX_PKTS_PER_SOURCE: u64 = 100;
/// Peak rates: the interval, ms.
pub const DEFAULT_PEAK_INTERVAL_MS: u64 = 100;
/// Peak packets per second over one interval.
pub const DEFAULT_PEAK_PPS: u64 = 50_000;
/// Peak bits per second over one interval.
pub const DEFAULT_PEAK_BPS: u64 = 2_500_000_000;
/// New flows per second to one victim (FastNetMon's `threshold_flows` is 3,500 by default).
pub const DEFAULT_NEW_FLOWS_PER_S: u64 = 3_500;

/// Detection settings; every default is the one DESIGN.md starts from.
#[derive(Clone, Debug)]
pub struct DetectConfig {
    /// Scan, SYN-flood and reflection window, seconds of packet time. Default 60.
    pub window_s: u64,
    /// Volumetric window, seconds. Default 5.
    pub flood_window_s: u64,
    /// How far past a window's end the record stream must be before it is judged. Default 120.
    pub hold_s: u64,
    pub port_scan_ports: usize,
    pub address_scan_hosts: usize,
    pub stealth_scan_ports: usize,
    /// Unanswered SYNs per minute to one victim (scaled to the window). Default 256.
    pub syn_flood_per_min: u64,
    /// A SYN flood needs this many sources, or at most `syn_flood_max_ports` ports.
    pub syn_flood_min_sources: usize,
    pub syn_flood_max_ports: usize,
    pub reflection_sources: usize,
    /// Reflection by shape: the top source ports looked at ("one or a few"). Default 3.
    pub reflection_ports: usize,
    /// Reflection by shape: the share of the one-way packets (percent) the top ports carry.
    pub reflection_port_share_pct: u64,
    /// Reflection by shape: packets per source at most (on average, over the top ports).
    pub reflection_max_pkts_per_source: u64,
    pub flood_pps: u64,
    pub flood_bps: u64,
    /// Peak rates: the short interval, milliseconds. Default 100.
    pub peak_interval_ms: u64,
    /// Packets per second to one victim over one short interval that make a flood.
    pub peak_pps: u64,
    /// Bits per second to one victim over one short interval that make a flood.
    pub peak_bps: u64,
    /// New flows per second to one victim (averaged over the flood window): `flow_flood`.
    pub new_flows_per_s: u64,
    /// Sources never reported as scanners (known scanners, monitoring hosts): (network, prefix).
    pub allow: Vec<(Addr, u8)>,
    /// Windows without the attack before its episode ends. Default 1.
    pub episode_gap: u64,
    /// Distinct values kept per key (ports, hosts, sources): past it they are counted, not kept.
    pub distinct_cap: usize,
    /// Keys kept per window and kind: past it new keys are dropped and counted.
    pub keys_cap: usize,
    /// `latency`: a window's handshake p95 at least this percent of the server's baseline.
    pub latency_factor_pct: u64,
    /// `latency`: handshakes a server needs in a window for it to be judged.
    pub latency_min_sessions: u64,
    /// `latency`: judged windows whose p95s the baseline is the median of.
    pub latency_history: usize,
    /// `latency`: judged windows needed before a server can raise.
    pub latency_warmup: usize,
    /// Latency samples kept per server and window, and servers per window.
    pub latency_caps: Caps,
    /// Thresholds for particular networks: scans by the scanner's network, floods and
    /// reflection by the victim's. The longest matching prefix wins.
    pub subnets: Vec<SubnetThresholds>,
}

/// Thresholds that differ for one network (any left `None` keeps the global one).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetThresholds {
    /// `ADDRESS/PREFIX`.
    pub net: String,
    #[serde(skip)]
    pub parsed: Option<(Addr, u8)>,
    pub port_scan_ports: Option<usize>,
    pub address_scan_hosts: Option<usize>,
    pub stealth_scan_ports: Option<usize>,
    pub syn_flood_per_min: Option<u64>,
    pub reflection_sources: Option<usize>,
    pub flood_pps: Option<u64>,
    pub peak_pps: Option<u64>,
    pub peak_bps: Option<u64>,
    pub new_flows_per_s: Option<u64>,
    pub latency_factor_pct: Option<u64>,
    pub latency_min_sessions: Option<u64>,
}

impl DetectConfig {
    /// The most specific per-network thresholds that apply to `a`, if any.
    pub(crate) fn subnet(&self, a: Addr) -> Option<&SubnetThresholds> {
        self.subnets
            .iter()
            .filter_map(|s| {
                s.parsed
                    .filter(|(net, len)| a.in_net(*net, *len))
                    .map(|(_, len)| (len, s))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, s)| s)
    }
}

impl Default for DetectConfig {
    fn default() -> DetectConfig {
        DetectConfig {
            window_s: 60,
            flood_window_s: 5,
            hold_s: 120,
            port_scan_ports: 15,
            address_scan_hosts: 25,
            stealth_scan_ports: 15,
            syn_flood_per_min: 256,
            syn_flood_min_sources: 20,
            syn_flood_max_ports: 10,
            reflection_sources: 20,
            reflection_ports: DEFAULT_REFLECTION_PORTS,
            reflection_port_share_pct: DEFAULT_REFLECTION_PORT_SHARE_PCT,
            reflection_max_pkts_per_source: DEFAULT_REFLECTION_MAX_PKTS_PER_SOURCE,
            flood_pps: 20_000,
            flood_bps: 1_000_000_000,
            peak_interval_ms: DEFAULT_PEAK_INTERVAL_MS,
            peak_pps: DEFAULT_PEAK_PPS,
            peak_bps: DEFAULT_PEAK_BPS,
            new_flows_per_s: DEFAULT_NEW_FLOWS_PER_S,
            allow: Vec::new(),
            episode_gap: 1,
            distinct_cap: 65_536,
            keys_cap: 1_000_000,
            latency_factor_pct: DEFAULT_FACTOR_PCT,
            latency_min_sessions: DEFAULT_MIN_SESSIONS,
            latency_history: DEFAULT_HISTORY,
            latency_warmup: DEFAULT_WARMUP,
            latency_caps: Caps::default(),
            subnets: Vec::new(),
        }
    }
}

/// What detection reads of a connection record: a small `Copy` value, so the aggregator can
/// hand records to a detection thread without sharing or freeing them there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectInput {
    pub ts_ns: u64,
    pub duration_ns: Option<u64>,
    pub orig_h: Addr,
    pub resp_h: Addr,
    pub orig_p: u16,
    pub resp_p: u16,
    pub proto: u8,
    pub orig_pkts: u64,
    pub resp_pkts: u64,
    pub orig_ip_bytes: u64,
    pub resp_ip_bytes: u64,
    pub orig_tcp_flags: u8,
    pub resp_tcp_flags: u8,
    /// The first letter of Zeek's history (0 when empty).
    pub history_first: u8,
    /// History has `h` (the responder sent a SYN-ACK).
    pub syn_acked: bool,
    /// History has `h`, `d` or `a`: the responder answered.
    pub answered: bool,
    /// The session's latency samples (TCP with a timing only).
    pub latency: Sample,
}

impl DetectInput {
    /// The last packet's time.
    pub fn last_ns(&self) -> u64 {
        self.ts_ns.saturating_add(self.duration_ns.unwrap_or(0))
    }

    /// The responder (as Zeek oriented the connection) sent the first packet: the history
    /// starts with a lower-case letter, or with `^` (Zeek flipped it to put a likely server
    /// on the responder's side).
    pub fn resp_first(&self) -> bool {
        self.history_first == b'^' || self.history_first.is_ascii_lowercase()
    }
}

impl From<&ConnRecord> for DetectInput {
    fn from(r: &ConnRecord) -> DetectInput {
        let h = r.history.as_bytes();
        DetectInput {
            ts_ns: r.ts_ns,
            duration_ns: r.duration_ns,
            orig_h: r.orig_h,
            resp_h: r.resp_h,
            orig_p: r.orig_p,
            resp_p: r.resp_p,
            proto: r.proto,
            orig_pkts: r.orig_pkts,
            resp_pkts: r.resp_pkts,
            orig_ip_bytes: r.orig_ip_bytes,
            resp_ip_bytes: r.resp_ip_bytes,
            orig_tcp_flags: r.orig_tcp_flags,
            resp_tcp_flags: r.resp_tcp_flags,
            history_first: h.first().copied().unwrap_or(0),
            syn_acked: h.contains(&b'h'),
            answered: h.iter().any(|c| matches!(c, b'h' | b'd' | b'a')),
            latency: samples_of(r),
        }
    }
}

/// Detector counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DetectStats {
    pub records: u64,
    /// Records that started in a window already judged.
    pub late: u64,
    pub windows_judged: u64,
    /// Keys or distinct values not kept because a cap was reached.
    pub cap_hits: u64,
    pub events: u64,
}

/// A detector's state that cannot be saved or read back.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("detector state: cannot encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("detector state: cannot read: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("the detection thread has stopped")]
    Stopped,
    #[error("detector state: format {found}, this build reads format {STATE_FORMAT}")]
    Format { found: u32 },
    #[error("detector state: its windows ({saved}) are not this configuration's ({now})")]
    Shape {
        saved: window::Shape,
        now: window::Shape,
    },
}

/// The detector state's format: raised whenever what [`Detector::save`] writes changes, so a
/// state from another build is refused by its number, never read field by field into the wrong
/// places (MessagePack here is positional).
const STATE_FORMAT: u32 = 1;

#[derive(serde::Serialize)]
struct SavedRef<'a> {
    format: u32,
    windows: &'a window::Windows,
    episodes: &'a episode::Episodes,
    stats: &'a DetectStats,
}

/// A saved state's format number, its first element (0 if that is not a number: a state
/// from before formats were numbered).
struct Format(u32);

impl<'de> serde::Deserialize<'de> for Format {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Format, D::Error> {
        struct First;
        impl<'de> serde::de::Visitor<'de> for First {
            type Value = Format;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a saved detector state")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Format, A::Error> {
                let found = a.next_element::<u32>()?.unwrap_or(0);
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Format(found))
            }
        }
        d.deserialize_seq(First)
    }
}

#[derive(serde::Deserialize)]
struct Saved {
    /// Read by [`Format`] first; here only to keep the fields in place.
    _format: u32,
    windows: window::Windows,
    episodes: episode::Episodes,
    stats: DetectStats,
}

pub struct Detector {
    cfg: DetectConfig,
    windows: window::Windows,
    episodes: episode::Episodes,
    stats: DetectStats,
}

impl Detector {
    pub fn new(cfg: DetectConfig) -> Detector {
        Detector {
            windows: window::Windows::new(&cfg),
            episodes: episode::Episodes::new(cfg.episode_gap),
            cfg,
            stats: DetectStats::default(),
        }
    }

    /// One final record, in the aggregator's release order. Alert events that this record's
    /// time makes due are appended to `out`.
    pub fn on_record(&mut self, r: &ConnRecord, out: &mut Vec<AlertEvent>) {
        self.on_input(&DetectInput::from(r), out);
    }

    /// Like [`Detector::on_record`], with what detection reads of the record.
    pub fn on_input(&mut self, r: &DetectInput, out: &mut Vec<AlertEvent>) {
        self.stats.records += 1;
        self.judge_until(r.last_ns(), out);
        let obs = classify::observe(r, &self.cfg);
        if !self.windows.add(r, &obs, &self.cfg) {
            self.stats.late += 1;
        }
    }

    /// End of stream: every window is judged and every episode ends.
    pub fn finish(&mut self, out: &mut Vec<AlertEvent>) {
        self.judge_until(u64::MAX, out);
        let n = out.len();
        self.episodes.end_all(out);
        self.stats.events += (out.len() - n) as u64;
    }

    /// The detector's state between two records — windows, open episodes, latency baselines,
    /// counters — for a checkpoint (MessagePack). [`Detector::restore`] of it, then the same
    /// records, decides the same events as this detector going on.
    pub fn save(&self) -> Result<Vec<u8>, StateError> {
        let state = SavedRef {
            format: STATE_FORMAT,
            windows: &self.windows,
            episodes: &self.episodes,
            stats: &self.stats,
        };
        Ok(rmp_serde::to_vec(&state)?)
    }

    /// Takes the state [`Detector::save`] gave (before any record). On an error the detector
    /// is left as it was: a state of another format, or whose windows have other lengths than
    /// this configuration's (a restart with a new `window_s`, `flood_window_s` or
    /// `peak_interval_ms`), is refused. The hold and the episode gap are this configuration's.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        // The format first, alone: a state of another format may not decode as `Saved`.
        let Format(found) = rmp_serde::from_slice(bytes).unwrap_or(Format(0));
        if found != STATE_FORMAT {
            return Err(StateError::Format { found });
        }
        let mut s: Saved = rmp_serde::from_slice(bytes)?;
        let (saved, now) = (s.windows.shape(), self.windows.shape());
        if saved != now {
            return Err(StateError::Shape { saved, now });
        }
        s.windows.set_hold(&self.cfg);
        s.episodes.set_gap(self.cfg.episode_gap);
        self.windows = s.windows;
        self.episodes = s.episodes;
        self.stats = s.stats;
        Ok(())
    }

    pub fn stats(&self) -> DetectStats {
        DetectStats {
            cap_hits: self.windows.cap_hits(),
            ..self.stats.clone()
        }
    }

    fn judge_until(&mut self, now_ns: u64, out: &mut Vec<AlertEvent>) {
        let n = out.len();
        for (start, end, alerts) in self.windows.judge_until(now_ns, &self.cfg) {
            self.stats.windows_judged += 1;
            self.episodes.window(start, end, alerts, out);
        }
        self.stats.events += (out.len() - n) as u64;
    }
}

/// The alerts a window raises, by key, with their count and evidence.
pub type WindowAlerts = BTreeMap<AlertKey, (u64, BTreeMap<&'static str, u64>)>;

#[cfg(test)]
mod rate_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
