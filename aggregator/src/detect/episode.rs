//! Episodes: an attack that lasts is one start, its updates and one end with its peak.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::WindowAlerts;
use crate::json::push_escaped;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Start,
    Update,
    End,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Update => "update",
            EventKind::End => "end",
        }
    }
}

/// What an alert is about: detection's kinds and pipeline health's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AlertKind {
    PortScan,
    AddressScan,
    StealthScan,
    SynFlood,
    Reflection,
    UdpFlood,
    IcmpFlood,
    VolumetricFlood,
    /// New flows per second to one victim ([`super::DetectConfig::new_flows_per_s`]).
    FlowFlood,
    /// A server's handshake round trips k times its own baseline ([`super::latency`]).
    Latency,
    /// Pipeline health: a collector a processor no longer hears.
    CollectorSilent,
    /// Pipeline health: a collector losing more than the allowed share of its packets.
    DropRate,
}

impl AlertKind {
    /// The name in the alerts log and InfluxDB's `kind` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::PortScan => "port_scan",
            AlertKind::AddressScan => "address_scan",
            AlertKind::StealthScan => "stealth_scan",
            AlertKind::SynFlood => "syn_flood",
            AlertKind::Reflection => "reflection",
            AlertKind::UdpFlood => "udp_flood",
            AlertKind::IcmpFlood => "icmp_flood",
            AlertKind::VolumetricFlood => "volumetric_flood",
            AlertKind::FlowFlood => "flow_flood",
            AlertKind::Latency => "latency",
            AlertKind::CollectorSilent => "collector_silent",
            AlertKind::DropRate => "drop_rate",
        }
    }
}

/// Kinds order by name, so events of one window come out in the same order as always.
impl Ord for AlertKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for AlertKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who an alert is about: one episode per key (`src` or `dst` is `"*"` where there are many).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct AlertKey {
    pub kind: AlertKind,
    pub src: String,
    pub dst: String,
}

impl AlertKey {
    pub fn new(kind: AlertKind, src: impl Into<String>, dst: impl Into<String>) -> AlertKey {
        AlertKey {
            kind,
            src: src.into(),
            dst: dst.into(),
        }
    }
}

/// One alert event of the alerts log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertEvent {
    /// Event time: the end of the window that caused it (ns).
    pub ts_ns: u64,
    pub event: EventKind,
    pub kind: AlertKind,
    pub src: String,
    pub dst: String,
    pub window_start_ns: u64,
    pub window_end_ns: u64,
    /// This window's count (the start of the episode's first window for `end`).
    pub count: u64,
    /// The largest count of the episode so far.
    pub peak: u64,
    /// When the episode started (its first window's start).
    pub episode_start_ns: u64,
    pub windows: u64,
    pub evidence: BTreeMap<&'static str, u64>,
}

impl AlertEvent {
    /// One line of the alerts log (JSON), fields as DESIGN.md names them. `src` and `dst`
    /// are escaped: pipeline health's name collectors and processors as they named themselves
    /// on the wire.
    pub fn to_json(&self, out: &mut String) {
        let secs = |ns: u64| format!("{}.{:06}", ns / 1_000_000_000, (ns % 1_000_000_000) / 1000);
        let _ = write!(
            out,
            "{{\"ts\":{},\"event\":\"{}\",\"kind\":\"{}\",\"src\":\"",
            secs(self.ts_ns),
            self.event.as_str(),
            self.kind.as_str(),
        );
        push_escaped(&self.src, out);
        out.push_str("\",\"dst\":\"");
        push_escaped(&self.dst, out);
        let _ = write!(
            out,
            "\",\"window_start\":{},\"window_end\":{},\"count\":{},\"peak\":{},\"episode_start\":{},\"windows\":{}",
            secs(self.window_start_ns),
            secs(self.window_end_ns),
            self.count,
            self.peak,
            secs(self.episode_start_ns),
            self.windows
        );
        for (k, v) in &self.evidence {
            let _ = write!(out, ",\"{k}\":{v}");
        }
        out.push_str("}\n");
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Open {
    start_ns: u64,
    last_end_ns: u64,
    len_ns: u64,
    peak: u64,
    windows: u64,
    #[serde(deserialize_with = "known_evidence")]
    evidence: BTreeMap<&'static str, u64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Episodes {
    gap: u64,
    open: BTreeMap<AlertKey, Open>,
}

impl Episodes {
    pub fn new(gap: u64) -> Episodes {
        Episodes {
            gap: gap.max(1),
            open: BTreeMap::new(),
        }
    }

    /// Ends episodes after `gap` quiet windows from now on (open ones included).
    pub fn set_gap(&mut self, gap: u64) {
        self.gap = gap.max(1);
    }

    /// A judged window `[start, end)` and what it raised.
    pub fn window(
        &mut self,
        start: u64,
        end: u64,
        alerts: WindowAlerts,
        out: &mut Vec<AlertEvent>,
    ) {
        let len = end - start;
        // Episodes of windows this long that this window did not continue, and that have now
        // missed `gap` windows, end.
        let ended: Vec<_> = self
            .open
            .iter()
            .filter(|(k, o)| {
                o.len_ns == len
                    && !alerts.contains_key(*k)
                    && start >= o.last_end_ns + (self.gap - 1) * len
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in ended {
            if let Some(o) = self.open.remove(&k) {
                out.push(end_event(k, o));
            }
        }
        for (key, (count, evidence)) in alerts {
            let (event, o) = match self.open.get_mut(&key) {
                Some(o) => {
                    o.peak = o.peak.max(count);
                    o.last_end_ns = end;
                    o.windows += 1;
                    o.evidence = evidence.clone();
                    (EventKind::Update, o)
                }
                None => {
                    let o = Open {
                        start_ns: start,
                        last_end_ns: end,
                        len_ns: len,
                        peak: count,
                        windows: 1,
                        evidence: evidence.clone(),
                    };
                    (EventKind::Start, self.open.entry(key.clone()).or_insert(o))
                }
            };
            out.push(AlertEvent {
                ts_ns: end,
                event,
                kind: key.kind,
                src: key.src,
                dst: key.dst,
                window_start_ns: start,
                window_end_ns: end,
                count,
                peak: o.peak,
                episode_start_ns: o.start_ns,
                windows: o.windows,
                evidence,
            });
        }
    }

    /// End of stream: every open episode ends.
    pub fn end_all(&mut self, out: &mut Vec<AlertEvent>) {
        let open = std::mem::take(&mut self.open);
        let mut ends: Vec<AlertEvent> = open.into_iter().map(|(k, o)| end_event(k, o)).collect();
        ends.sort_by(|a, b| {
            (a.ts_ns, a.kind, &a.src, &a.dst).cmp(&(b.ts_ns, b.kind, &b.src, &b.dst))
        });
        out.extend(ends);
    }
}

/// Every name of evidence detection gives (a snapshot's episodes name theirs as strings).
const EVIDENCE: &[&str] = &[
    "answered_pct",
    "baseline_p95_us",
    "baseline_windows",
    "bps",
    "bytes",
    "bytes_per_packet",
    "distinct_hosts",
    "distinct_ports",
    "distinct_sources",
    "factor_pct",
    "new_flows",
    "new_flows_per_s",
    "one_way_sources",
    "packets",
    "peak_bps",
    "peak_interval_ms",
    "peak_pps",
    "port",
    "pps",
    "responses",
    "sessions",
    "src_port_1",
    "src_port_1_pct",
    "src_port_2",
    "src_port_2_pct",
    "src_port_3",
    "src_port_3_pct",
    "src_ports",
    "syns",
    "tcp_rtt_p95_us",
    "unanswered_syns",
];

/// An open episode's evidence read back from a snapshot: each name one detection gives (a
/// name it does not know refuses the snapshot rather than losing a field).
fn known_evidence<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<&'static str, u64>, D::Error> {
    let named: BTreeMap<String, u64> = serde::Deserialize::deserialize(d)?;
    named
        .into_iter()
        .map(|(k, v)| match EVIDENCE.iter().find(|n| **n == k) {
            Some(n) => Ok((*n, v)),
            None => Err(serde::de::Error::custom(format!(
                "unknown evidence name {k:?}"
            ))),
        })
        .collect()
}

fn end_event(k: AlertKey, o: Open) -> AlertEvent {
    AlertEvent {
        ts_ns: o.last_end_ns,
        event: EventKind::End,
        kind: k.kind,
        src: k.src,
        dst: k.dst,
        window_start_ns: o.start_ns,
        window_end_ns: o.last_end_ns,
        count: o.peak,
        peak: o.peak,
        episode_start_ns: o.start_ns,
        windows: o.windows,
        evidence: o.evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(src: &str, dst: &str) -> AlertEvent {
        AlertEvent {
            ts_ns: 1_700_000_060_000_000_000,
            event: EventKind::Start,
            kind: AlertKind::CollectorSilent,
            src: src.into(),
            dst: dst.into(),
            window_start_ns: 1_700_000_000_000_000_000,
            window_end_ns: 1_700_000_060_000_000_000,
            count: 1,
            peak: 1,
            episode_start_ns: 1_700_000_000_000_000_000,
            windows: 1,
            evidence: BTreeMap::from([("silent_s", 30)]),
        }
    }

    #[test]
    fn a_line_as_before_for_names_tapflow_gives() {
        let mut out = String::new();
        event("collector0", "processor1").to_json(&mut out);
        assert_eq!(
            out,
            "{\"ts\":1700000060.000000,\"event\":\"start\",\"kind\":\"collector_silent\",\
             \"src\":\"collector0\",\"dst\":\"processor1\",\"window_start\":1700000000.000000,\
             \"window_end\":1700000060.000000,\"count\":1,\"peak\":1,\
             \"episode_start\":1700000000.000000,\"windows\":1,\"silent_s\":30}\n"
        );
    }

    #[test]
    fn names_from_the_wire_cannot_forge_fields_or_lines() {
        // Pipeline health names collectors and processors as they named themselves.
        let src = "c\",\"kind\":\"port_scan\"}\n{\"ts\":1,\"src\":\"6.6.6.6";
        let dst = "p\u{1b}[2J";
        let mut out = String::new();
        event(src, dst).to_json(&mut out);
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("an alerts line that is JSON");
        assert_eq!(
            (&v["kind"], &v["src"], &v["dst"]),
            (
                &serde_json::Value::from("collector_silent"),
                &serde_json::Value::from(src),
                &serde_json::Value::from(dst)
            )
        );
        assert!(!out.contains('\u{1b}'), "{out:?}");
    }
}
