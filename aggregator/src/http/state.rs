//! What the dashboard serves, bounded: the last sessions, the traffic of the last windows,
//! the alert episodes open and recent, the processors' last heartbeats, the final report.
//! Applied by the updater thread from the [`super::Feed`]'s buffers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use tapflow_proto::conn::ConnRecord;
use tapflow_proto::key::ip_proto;
use tapflow_proto::upstream::{ProcessorHeartbeat, TrafficPartial};

use super::feed::Event;
use crate::detect::{AlertEvent, EventKind};

/// Buffers (one per input message) waiting for the updater at most.
pub const CHANNEL_BATCHES: usize = 256;
/// Traffic windows kept (by protocol and by service).
pub const WINDOWS: usize = 360;
/// Services kept per window; the others are summed as `other`.
pub const SERVICES_PER_WINDOW: usize = 32;
/// Alert episodes kept open at most, and ended ones kept.
pub const OPEN_EPISODES: usize = 1000;
pub const RECENT_EPISODES: usize = 200;
/// Processor incarnations whose last heartbeat is kept.
pub const PROCESSORS: usize = 1024;

/// One session as the conn log holds it, with what the search and the tops read.
pub struct Session {
    pub ts_ns: u64,
    pub uid: String,
    pub orig_h: String,
    pub orig_p: u16,
    pub resp_h: String,
    pub resp_p: u16,
    pub proto: u8,
    pub pkts: u64,
    pub bytes: u64,
    /// The conn-log line (a JSON object, no newline).
    pub line: String,
}

/// One window's traffic of one protocol (or sessions of one service).
#[derive(Clone, Copy, Default)]
pub struct Sum {
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
    pub complete: bool,
}

/// An episode: its last event, as the alerts log holds it.
pub struct Episode {
    pub last: AlertEvent,
    pub line: String,
}

pub struct DashState {
    pub cap: usize,
    pub sessions: VecDeque<Session>,
    pub sessions_received: u64,
    pub records_skipped: u64,
    pub window_s: u64,
    /// By window start (ns), then protocol name.
    pub traffic: BTreeMap<u64, BTreeMap<&'static str, Sum>>,
    /// Sessions (`flows`) and their IP bytes by window of their start, then service.
    pub services: BTreeMap<u64, BTreeMap<String, Sum>>,
    pub open: BTreeMap<(&'static str, String, String), Episode>,
    pub recent: VecDeque<Episode>,
    pub alert_events: u64,
    pub episodes_started: u64,
    pub episodes_not_kept: u64,
    /// By processor name: the last heartbeat and when it arrived (ns).
    pub processors: BTreeMap<String, (ProcessorHeartbeat, u64)>,
    /// The accounting report (JSON, as the health log holds it), once the run has ended.
    pub report: Option<String>,
    /// The aggregator's counters, as served on /metrics (Prometheus text).
    pub metrics: tapflow_runtime::MetricsText,
    pub batches_dropped: Arc<AtomicU64>,
}

impl DashState {
    pub fn new(cap: usize) -> DashState {
        DashState {
            cap: cap.max(1),
            sessions: VecDeque::new(),
            sessions_received: 0,
            records_skipped: 0,
            window_s: 0,
            traffic: BTreeMap::new(),
            services: BTreeMap::new(),
            open: BTreeMap::new(),
            recent: VecDeque::new(),
            alert_events: 0,
            episodes_started: 0,
            episodes_not_kept: 0,
            processors: BTreeMap::new(),
            report: None,
            metrics: tapflow_runtime::MetricsText::default(),
            batches_dropped: Arc::default(),
        }
    }

    pub fn apply(&mut self, e: Event) {
        match e {
            Event::Traffic(t) => t.iter().for_each(|p| self.traffic(p)),
            Event::Conn(r, parents) => self.conn(&r, &parents),
            Event::Alerts(a) => a.into_iter().for_each(|e| self.alert(e)),
            Event::Heartbeat(hb, now_ns) => self.heartbeat(*hb, now_ns),
            Event::Report(r) => self.report = Some(r),
            Event::Skipped(n) => self.records_skipped += n,
        }
    }

    fn traffic(&mut self, p: &TrafficPartial) {
        self.window_s = u64::from(p.window_s);
        let sum = self
            .traffic
            .entry(p.window_start_ns)
            .or_default()
            .entry(proto_name(p.proto))
            .or_insert(Sum {
                complete: true,
                ..Sum::default()
            });
        sum.packets += p.packets;
        sum.bytes += p.bytes;
        sum.flows += p.flows;
        sum.complete &= p.complete;
        trim(&mut self.traffic, WINDOWS);
    }

    fn conn(&mut self, r: &ConnRecord, parents: &[String]) {
        let mut line = String::new();
        crate::conns::conn_json(r, parents, &mut line);
        while line.ends_with('\n') {
            line.pop();
        }
        self.sessions_received += 1;
        let bytes = r.orig_ip_bytes + r.resp_ip_bytes;
        let pkts = r.orig_pkts + r.resp_pkts;
        self.service(r.ts_ns, &line, bytes);
        if self.sessions.len() >= self.cap {
            self.sessions.pop_front();
        }
        self.sessions.push_back(Session {
            ts_ns: r.ts_ns,
            uid: r.uid.to_string(),
            orig_h: r.orig_h.to_string(),
            orig_p: r.orig_p,
            resp_h: r.resp_h.to_string(),
            resp_p: r.resp_p,
            proto: r.proto,
            pkts,
            bytes,
            line,
        });
    }

    /// Counts a session under its `service` (as the conn log names it), if it has one, in the
    /// window of its start.
    fn service(&mut self, ts_ns: u64, line: &str, bytes: u64) {
        if !line.contains("\"service\":") || self.window_s == 0 {
            return;
        }
        let Ok(serde_json::Value::Object(o)) = serde_json::from_str(line) else {
            return;
        };
        let Some(service) = o.get("service").and_then(|s| s.as_str()) else {
            return;
        };
        let w = self.window_s * 1_000_000_000;
        let by = self.services.entry(ts_ns / w * w).or_default();
        let key = if by.len() < SERVICES_PER_WINDOW || by.contains_key(service) {
            service.to_owned()
        } else {
            "other".to_owned()
        };
        let sum = by.entry(key).or_default();
        sum.flows += 1;
        sum.bytes += bytes;
        trim(&mut self.services, WINDOWS);
    }

    fn alert(&mut self, e: AlertEvent) {
        self.alert_events += 1;
        let mut line = String::new();
        e.to_json(&mut line);
        while line.ends_with('\n') {
            line.pop();
        }
        let key = (e.kind.as_str(), e.src.clone(), e.dst.clone());
        if e.event == EventKind::Start {
            self.episodes_started += 1;
        }
        if e.event == EventKind::End {
            self.open.remove(&key);
            if self.recent.len() >= RECENT_EPISODES {
                self.recent.pop_front();
            }
            self.recent.push_back(Episode { last: e, line });
        } else if self.open.len() < OPEN_EPISODES || self.open.contains_key(&key) {
            self.open.insert(key, Episode { last: e, line });
        } else {
            self.episodes_not_kept += 1;
        }
    }

    fn heartbeat(&mut self, hb: ProcessorHeartbeat, now_ns: u64) {
        if self.processors.len() < PROCESSORS || self.processors.contains_key(&hb.processor) {
            self.processors.insert(hb.processor.clone(), (hb, now_ns));
        }
    }
}

/// The protocol names of InfluxDB's `tapflow_traffic` points.
pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        ip_proto::TCP => "tcp",
        ip_proto::UDP => "udp",
        ip_proto::ICMP | ip_proto::ICMPV6 => "icmp",
        _ => "other",
    }
}

/// Keeps the last `n` entries.
fn trim<V>(m: &mut BTreeMap<u64, V>, n: usize) {
    while m.len() > n {
        m.pop_first();
    }
}

/// The updater: applies each buffer under the lock, until the feed is gone.
/// `in_flight`: the records sent and not yet applied, less those of each buffer applied.
pub fn update_loop(rx: &Receiver<Vec<Event>>, state: &Mutex<DashState>, in_flight: &AtomicUsize) {
    while let Ok(events) = rx.recv() {
        let records = events
            .iter()
            .filter(|e| matches!(e, Event::Conn(..)))
            .count();
        // In chunks: a request waits for one chunk at most, not for a whole release.
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let Ok(mut s) = state.lock() else {
                return;
            };
            events.by_ref().take(1000).for_each(|e| s.apply(e));
        }
        in_flight.fetch_sub(
            records.min(in_flight.load(Ordering::Acquire)),
            Ordering::AcqRel,
        );
    }
}
