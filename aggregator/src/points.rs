//! InfluxDB points for alert events, per-window traffic and per-server latency (sans-IO).
//! Session, health and latency point formats are in [`crate::influx::schema`].

use std::collections::BTreeMap;

use std::collections::HashMap;

use tapflow_proto::conn::ConnRecord;
use tapflow_proto::key::ip_proto;
use tapflow_proto::upstream::{ConnBatch, ProcessorHeartbeat};

use crate::detect::AlertEvent;
use crate::influx::{latency_point, Field, Point};
use crate::latency::{Caps, Closed, Tracker, TrackerStats};

mod service;

pub use service::{service_tag, ServiceTraffic, SERVICE_MEASUREMENT};

pub const ALERT_MEASUREMENT: &str = "tapflow_alert";
pub const TRAFFIC_MEASUREMENT: &str = "tapflow_traffic";

/// How often a running pipeline's health goes to InfluxDB (per processor, wall clock), so that
/// dashboards show it while it runs, not only the end-of-stream accounting.
pub const LIVE_HEALTH_EVERY_NS: u64 = 10_000_000_000;

/// Decides when each processor's heartbeat is written as live health points.
#[derive(Default)]
pub struct LiveHealth {
    last: HashMap<String, u64>,
}

impl LiveHealth {
    /// Points for this heartbeat if its processor's last were written `LIVE_HEALTH_EVERY_NS`
    /// ago or more (or never), else none: a `tapflow_health` point for the processor (its
    /// open flows, summaries received, collectors it holds silent) and one per collector it
    /// hears (packets read, losses), all at `now_ns`.
    pub fn points(&mut self, hb: &ProcessorHeartbeat, now_ns: u64) -> Vec<Point> {
        let last = self.last.entry(hb.processor.clone()).or_insert(0);
        if *last != 0 && now_ns.saturating_sub(*last) < LIVE_HEALTH_EVERY_NS {
            return Vec::new();
        }
        *last = now_ns;
        let received: u64 = hb.links.iter().map(|l| l.summaries_received).sum();
        let mut out = vec![Point::new(crate::influx::HEALTH_MEASUREMENT, now_ns)
            .tag("component", "processor")
            .tag("name", hb.processor.clone())
            .field("flows_open", Field::UInt(hb.flows_open))
            .field("summaries_received", Field::UInt(received))
            .field(
                "collectors_silent",
                Field::UInt(hb.silent_collectors.len() as u64),
            )];
        out.extend(hb.collectors.iter().map(|c| {
            Point::new(crate::influx::HEALTH_MEASUREMENT, now_ns)
                .tag("component", "collector")
                .tag("name", c.sender.clone())
                .field("packets_read", Field::UInt(c.packets_read))
                .field("losses", Field::UInt(c.drops))
        }));
        out
    }
}

/// One alert event: tags `kind` and `event` (start/update/end); addresses and counts are fields.
pub fn alert_point(e: &AlertEvent) -> Point {
    let mut p = Point::new(ALERT_MEASUREMENT, e.ts_ns)
        .tag("kind", e.kind.as_str())
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

/// Per-server latency per detection window: `tapflow_latency` points as the released records
/// close their windows (the detector's windows: same length and hold), all at the end.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct LatencyPoints {
    tracker: Tracker,
    window_s: u64,
    /// Empty between records.
    #[serde(skip)]
    closed: Vec<Closed>,
}

impl LatencyPoints {
    pub fn new(window_s: u64, hold_s: u64, caps: Caps) -> LatencyPoints {
        LatencyPoints {
            tracker: Tracker::new(window_s, hold_s, caps),
            window_s: window_s.max(1),
            closed: Vec::new(),
        }
    }

    /// The next final record in release order; points of the windows it closes into `out`.
    pub fn on_record(&mut self, r: &ConnRecord, out: &mut Vec<Point>) {
        self.tracker.on_record(r, &mut self.closed);
        self.drain(out);
    }

    /// End of the records: every window's points into `out`.
    pub fn finish(&mut self, out: &mut Vec<Point>) {
        self.tracker.close_until(u64::MAX, &mut self.closed);
        self.drain(out);
    }

    pub fn stats(&self) -> TrackerStats {
        self.tracker.stats()
    }

    fn drain(&mut self, out: &mut Vec<Point>) {
        for w in self.closed.drain(..) {
            out.extend(w.servers.iter().enumerate().map(|(i, (server, s))| {
                let ts = w.start_ns.saturating_add(i as u64);
                latency_point(ts, self.window_s, server, s, w.over_cap)
            }));
        }
    }
}

/// Per-window traffic by collector and protocol, summed over the processors' partials and
/// emitted once every processor's watermark is past the window (all of it at end of stream).
/// One window of one collector's traffic of one IP protocol (ordered by window start first).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
struct TrafficKey {
    window_start_ns: u64,
    window_s: u32,
    collector: String,
    proto: u8,
}

/// The processors' partials summed, and whether every one was complete.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct TrafficSum {
    packets: u64,
    bytes: u64,
    flows: u64,
    complete: bool,
}

impl Default for TrafficSum {
    fn default() -> TrafficSum {
        TrafficSum {
            packets: 0,
            bytes: 0,
            flows: 0,
            complete: true,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct TrafficMerge {
    /// Not kept by a checkpoint: the configuration's (a restart reads it again).
    #[serde(skip)]
    processors: usize,
    watermarks: HashMap<String, u64>,
    sums: BTreeMap<TrafficKey, TrafficSum>,
}

impl TrafficMerge {
    pub fn new(processors: usize) -> TrafficMerge {
        TrafficMerge {
            processors,
            watermarks: HashMap::new(),
            sums: BTreeMap::new(),
        }
    }

    pub fn push(&mut self, batch: &ConnBatch) {
        let wm = self.watermarks.entry(batch.processor.clone()).or_insert(0);
        *wm = (*wm).max(batch.watermark_ns);
        for t in &batch.traffic {
            let e = self
                .sums
                .entry(TrafficKey {
                    window_start_ns: t.window_start_ns,
                    window_s: t.window_s,
                    collector: t.collector.clone(),
                    proto: t.proto,
                })
                .or_default();
            e.packets += t.packets;
            e.bytes += t.bytes;
            e.flows += t.flows;
            e.complete &= t.complete;
        }
    }

    /// The processors expected.
    pub fn processors(&self) -> usize {
        self.processors
    }

    /// The processor set changed: `n` processors are expected from now on.
    pub fn set_processors(&mut self, n: usize) {
        self.processors = n;
    }

    /// A processor has ended.
    pub fn end(&mut self, processor: &str) {
        self.watermarks.insert(processor.to_owned(), u64::MAX);
    }

    /// Points for every complete window (`all`: every window) appended to `out`.
    pub fn emit(&mut self, all: bool, out: &mut Vec<Point>) {
        let limit = if all {
            u64::MAX
        } else if self.watermarks.len() < self.processors {
            0
        } else {
            self.watermarks.values().copied().min().unwrap_or(0)
        };
        while let Some(entry) = self.sums.first_entry() {
            let key = entry.key();
            let end = key
                .window_start_ns
                .saturating_add(u64::from(key.window_s) * 1_000_000_000);
            if !all && end > limit {
                break;
            }
            let (
                TrafficKey {
                    window_start_ns: start,
                    window_s,
                    collector,
                    proto,
                },
                TrafficSum {
                    packets,
                    bytes,
                    flows,
                    complete,
                },
            ) = entry.remove_entry();
            let proto = match proto {
                ip_proto::TCP => "tcp",
                ip_proto::UDP => "udp",
                ip_proto::ICMP | ip_proto::ICMPV6 => "icmp",
                _ => "other",
            };
            out.push(
                Point::new(TRAFFIC_MEASUREMENT, start)
                    .tag("collector", collector)
                    .tag("proto", proto)
                    .field("packets", Field::UInt(packets))
                    .field("bytes", Field::UInt(bytes))
                    .field("flows", Field::UInt(flows))
                    .field("window_s", Field::UInt(u64::from(window_s)))
                    .field("complete", Field::Bool(complete)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::EventKind;
    use tapflow_proto::upstream::TrafficPartial;

    fn partial(start: u64, collector: &str, packets: u64) -> TrafficPartial {
        TrafficPartial {
            window_start_ns: start,
            window_s: 60,
            collector: collector.into(),
            proto: 6,
            packets,
            bytes: packets * 100,
            flows: 1,
            complete: true,
        }
    }

    #[test]
    fn traffic_partials_are_summed_and_wait_for_every_processor() {
        let mut m = TrafficMerge::new(2);
        let mut out = Vec::new();
        let batch = |p: &str, wm: u64, traffic: Vec<TrafficPartial>| ConnBatch {
            processor: p.into(),
            watermark_ns: wm,
            traffic,
            ..ConnBatch::default()
        };
        m.push(&batch(
            "p0",
            120_000_000_000,
            vec![partial(0, "tap-a", 10), partial(60_000_000_000, "tap-a", 1)],
        ));
        m.emit(false, &mut out);
        assert!(out.is_empty(), "p1 not heard from");
        m.push(&batch("p1", 61_000_000_000, vec![partial(0, "tap-a", 5)]));
        m.emit(false, &mut out);
        assert_eq!(out.len(), 1);
        let mut line = Vec::new();
        let _ = out[0].encode(&mut line);
        assert!(
            String::from_utf8_lossy(&line).contains("packets=15i"),
            "{}",
            String::from_utf8_lossy(&line)
        );
        m.end("p1");
        m.emit(true, &mut out);
        assert_eq!(out.len(), 2);
        assert!(
            String::from_utf8_lossy(&line).contains("complete=true"),
            "{}",
            String::from_utf8_lossy(&line)
        );
    }

    #[test]
    fn live_health_is_written_at_most_every_interval_per_processor() {
        use tapflow_proto::upstream::CollectorHealth;
        let hb = |p: &str| ProcessorHeartbeat {
            processor: p.into(),
            flows_open: 7,
            member: None,
            collectors: vec![CollectorHealth {
                sender: "tap-a".into(),
                packets_read: 100,
                drops: 2,
            }],
            ..ProcessorHeartbeat::default()
        };
        let mut h = LiveHealth::default();
        let s = 1_000_000_000;
        assert_eq!(h.points(&hb("p0"), 100 * s).len(), 2);
        assert!(
            h.points(&hb("p0"), 105 * s).is_empty(),
            "within the interval"
        );
        assert_eq!(h.points(&hb("p1"), 105 * s).len(), 2, "another processor");
        let again = h.points(&hb("p0"), 110 * s);
        let mut line = Vec::new();
        let _ = again[1].encode(&mut line);
        let line = String::from_utf8_lossy(&line);
        assert!(
            line.contains("component=collector") && line.contains("losses=2i"),
            "{line}"
        );
    }

    #[test]
    fn one_incomplete_partial_makes_its_window_incomplete() {
        let mut m = TrafficMerge::new(2);
        let mut out = Vec::new();
        let gap = TrafficPartial {
            complete: false,
            ..partial(0, "tap-a", 3)
        };
        for (p, t) in [("p0", partial(0, "tap-a", 4)), ("p1", gap)] {
            m.push(&ConnBatch {
                processor: p.into(),
                watermark_ns: 0,
                traffic: vec![t],
                ..ConnBatch::default()
            });
        }
        m.emit(true, &mut out);
        let mut line = Vec::new();
        let _ = out[0].encode(&mut line);
        let line = String::from_utf8_lossy(&line);
        assert!(
            line.contains("packets=7i") && line.contains("complete=false"),
            "{line}"
        );
    }

    #[test]
    fn latency_points_per_server_and_window_with_addresses_in_fields() {
        use tapflow_proto::conn::Timing;
        let mut r = crate::testutil::scan_and_sessions(2).remove(1);
        r.timing = Some(Box::new(Timing {
            tcp_synack_ns: Some(1_500_000),
            tcp_ackdat_ns: Some(500_000),
            ..Timing::default()
        }));
        let mut other = r.clone();
        other.resp_p = 8443;
        let mut l = LatencyPoints::new(60, 120, Caps::default());
        let mut out = Vec::new();
        l.on_record(&other, &mut out);
        l.on_record(&r, &mut out);
        assert!(out.is_empty(), "the window is held 120 s");
        l.finish(&mut out);
        let lines: Vec<String> = out
            .iter()
            .map(|p| {
                let mut b = Vec::new();
                let _ = p.encode(&mut b);
                String::from_utf8_lossy(&b).into_owned()
            })
            .collect();
        let start = r.ts_ns / 60_000_000_000 * 60_000_000_000;
        assert_eq!(
            lines[0],
            format!(
                "tapflow_latency,ip_version=4 resp_h=\"{}\",resp_p=443i,window_s=60i,\
                 sessions=1i,tcp_rtt_n=1i,tcp_rtt_dropped=0i,tcp_rtt_p50=0.002,\
                 tcp_rtt_p95=0.002,tcp_rtt_p99=0.002,tcp_rtt_max=0.002,data_rtt_n=0i {start}\n",
                r.resp_h
            )
        );
        assert!(
            lines[1].contains("resp_p=8443i") && lines[1].ends_with(&format!(" {}\n", start + 1)),
            "the second server one ns later: {}",
            lines[1]
        );
    }

    #[test]
    fn alert_point_keeps_addresses_in_fields() {
        let e = AlertEvent {
            ts_ns: 60_000_000_000,
            event: EventKind::Start,
            kind: crate::detect::AlertKind::PortScan,
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
