//! InfluxDB points for alert events and per-window traffic (sans-IO). Session and health
//! points are in [`crate::influx::schema`].

use std::collections::BTreeMap;

use tapflow_proto::conn::ConnRecord;
use tapflow_proto::key::ip_proto;

use crate::detect::AlertEvent;
use crate::influx::{Field, Point};

pub const ALERT_MEASUREMENT: &str = "tapflow_alert";
pub const TRAFFIC_MEASUREMENT: &str = "tapflow_traffic";

/// One alert event: tags `kind` and `event` (start/update/end); addresses and counts are fields.
pub fn alert_point(e: &AlertEvent) -> Point {
    let mut p = Point::new(ALERT_MEASUREMENT, e.ts_ns)
        .tag("kind", e.kind)
        .tag("event", e.event.as_str())
        .field("src", Field::Str(e.src.clone()))
        .field("dst", Field::Str(e.dst.clone()))
        .field("count", Field::UInt(e.count))
        .field("peak", Field::UInt(e.peak))
        .field("window_start", Field::Float(secs(e.window_start_ns)))
        .field("window_end", Field::Float(secs(e.window_end_ns)))
        .field("episode_start", Field::Float(secs(e.episode_start_ns)))
        .field("windows", Field::UInt(e.windows));
    for (k, v) in &e.evidence {
        p = p.field(*k, Field::UInt(*v));
    }
    p
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Flows, packets and bytes per protocol in tumbling windows of the first packet's time,
/// emitted once the record stream is `hold` past a window's end (as detection judges windows).
pub struct TrafficWindows {
    len: u64,
    hold: u64,
    windows: BTreeMap<u64, BTreeMap<&'static str, [u64; 3]>>,
    /// Records that started in a window already emitted (long connections).
    pub late: u64,
    emitted_to: u64,
}

impl TrafficWindows {
    pub fn new(window_s: u64, hold_s: u64) -> TrafficWindows {
        TrafficWindows {
            len: window_s.max(1) * 1_000_000_000,
            hold: hold_s * 1_000_000_000,
            windows: BTreeMap::new(),
            late: 0,
            emitted_to: 0,
        }
    }

    /// One released final record; points for windows now complete are appended to `out`.
    pub fn add(&mut self, r: &ConnRecord, out: &mut Vec<Point>) {
        let last = r.ts_ns.saturating_add(r.duration_ns.unwrap_or(0));
        self.emit_until(last, out);
        let start = r.ts_ns / self.len * self.len;
        if start < self.emitted_to {
            self.late += 1;
            return;
        }
        let proto = match r.proto {
            ip_proto::TCP => "tcp",
            ip_proto::UDP => "udp",
            ip_proto::ICMP | ip_proto::ICMPV6 => "icmp",
            _ => "other",
        };
        let e = self
            .windows
            .entry(start)
            .or_default()
            .entry(proto)
            .or_default();
        e[0] += 1;
        e[1] += r.orig_pkts + r.resp_pkts;
        e[2] += r.orig_ip_bytes + r.resp_ip_bytes;
    }

    /// Emits every window that ended `hold` before `now_ns` (`u64::MAX`: all of them).
    pub fn emit_until(&mut self, now_ns: u64, out: &mut Vec<Point>) {
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            if start.saturating_add(self.len).saturating_add(self.hold) > now_ns {
                break;
            }
            for (proto, [flows, packets, bytes]) in entry.remove() {
                out.push(
                    Point::new(TRAFFIC_MEASUREMENT, start)
                        .tag("proto", proto)
                        .field("flows", Field::UInt(flows))
                        .field("packets", Field::UInt(packets))
                        .field("bytes", Field::UInt(bytes))
                        .field("window_s", Field::UInt(self.len / 1_000_000_000)),
                );
            }
            self.emitted_to = start + self.len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::EventKind;

    #[test]
    fn alert_point_keeps_addresses_in_fields() {
        let e = AlertEvent {
            ts_ns: 60_000_000_000,
            event: EventKind::Start,
            kind: "port_scan",
            src: "10.0.0.1".into(),
            dst: "10.0.0.2".into(),
            window_start_ns: 0,
            window_end_ns: 60_000_000_000,
            count: 99,
            peak: 99,
            episode_start_ns: 0,
            windows: 1,
            evidence: [("distinct_ports", 99)].into(),
        };
        let mut buf = Vec::new();
        let _ = alert_point(&e).encode(&mut buf);
        let line = String::from_utf8_lossy(&buf);
        assert!(
            line.starts_with("tapflow_alert,event=start,kind=port_scan ")
                || line.starts_with("tapflow_alert,kind=port_scan,event=start "),
            "{line}"
        );
        assert!(
            line.contains("src=\"10.0.0.1\"") && line.contains("distinct_ports=99i"),
            "{line}"
        );
    }
}
