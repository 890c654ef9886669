//! InfluxDB: sessions, per-window traffic, alerts and health as points, sent per input message
//! to the writer thread ([`crate::influx::InfluxWriter`]), which batches, retries and spools.
//!
//! At a checkpoint of the write-ahead log ([`Sink::sync`]) every point sent so far is made
//! written or durable: what the writer holds goes to its spool, synced, and the spool is
//! written by this run or, after a crash, by the next. What the messages before the
//! checkpoint built and no point holds yet — the traffic windows being merged, the latency
//! and service windows open, the times the uniquifier used — is the checkpoint's state
//! ([`Sink::state`]). A restart restores it, and the messages after the checkpoint, replayed,
//! make the same points with the same times: those written before the crash are written again,
//! byte for byte, and InfluxDB keeps one (a point is its series and time). So InfluxDB holds
//! every point once. Live health points (wall clock, from heartbeats: not replayed) are not
//! made again.

use std::time::Duration;

use tapflow_proto::conn::ConnRecord;
use tapflow_proto::upstream::{ConnBatch, ProcessorHeartbeat};
use tracing::{error, info};

use super::{Sink, SinkError};
use crate::accounting::AccountingReport;
use crate::detect::AlertEvent;
use crate::influx::UniqueSnapshot;
use crate::influx::{conn_point, health_point, InfluxConfig, InfluxWriter, Point};
use crate::points::{alert_point, LatencyPoints, LiveHealth, ServiceTraffic, TrafficMerge};

pub struct Influx {
    /// `None` once finished.
    writer: Option<InfluxWriter>,
    /// How long [`Sink::finish`] waits for the last points to be written.
    finish_within: Duration,
    traffic: TrafficMerge,
    live_health: LiveHealth,
    latency: LatencyPoints,
    service: ServiceTraffic,
    /// Points of the message being handled, sent by [`Sink::flush`].
    points: Vec<Point>,
}

impl Influx {
    /// Starts the writer; traffic windows wait for `processors` processors.
    pub fn start(
        cfg: InfluxConfig,
        processors: usize,
        finish_within: Duration,
        latency: LatencyPoints,
    ) -> Result<Influx, SinkError> {
        Ok(Influx {
            writer: Some(InfluxWriter::start(cfg)?),
            finish_within,
            traffic: TrafficMerge::new(processors),
            live_health: LiveHealth::default(),
            latency,
            service: ServiceTraffic::default(),
            points: Vec::new(),
        })
    }
}

impl Sink for Influx {
    fn on_batch(&mut self, batch: &ConnBatch) {
        self.traffic.push(batch);
        self.traffic.emit(false, &mut self.points);
    }

    fn on_processors(&mut self, n: usize) {
        self.traffic.set_processors(n);
    }

    fn on_processor_end(&mut self, processor: &str) {
        self.traffic.end(processor);
    }

    fn on_conn(&mut self, r: &ConnRecord, parents: &[String]) -> Result<(), SinkError> {
        self.points.push(conn_point(r, parents));
        self.latency.on_record(r, &mut self.points);
        self.service.on_record(r, &mut self.points);
        Ok(())
    }

    fn on_alerts(&mut self, events: &[AlertEvent]) -> Result<(), SinkError> {
        self.points.extend(events.iter().map(alert_point));
        Ok(())
    }

    fn on_live_health(&mut self, hb: &ProcessorHeartbeat, now_ns: u64) {
        let live = self.live_health.points(hb, now_ns);
        if let (false, Some(w)) = (live.is_empty(), self.writer.as_mut()) {
            w.send(live);
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if let (false, Some(w)) = (self.points.is_empty(), self.writer.as_mut()) {
            w.send(std::mem::take(&mut self.points));
        }
        Ok(())
    }

    /// Every point sent so far is written, or in the spool and synced.
    fn sync(&mut self) -> Result<bool, SinkError> {
        self.flush()?;
        if let Some(w) = self.writer.as_mut() {
            w.checkpoint()?;
        }
        Ok(true)
    }

    fn state(&self) -> Option<(&'static str, Vec<u8>)> {
        let s = StateRef {
            traffic: &self.traffic,
            latency: &self.latency,
            service: &self.service,
            unique: self.writer.as_ref()?.unique_snapshot(),
        };
        match rmp_serde::to_vec(&s) {
            Ok(bytes) => Some((STATE, bytes)),
            Err(e) => {
                error!(error = %e, "checkpoint without InfluxDB's windows: they cannot be encoded");
                None
            }
        }
    }

    fn restore_state(&mut self, name: &str, state: &[u8]) {
        if name != STATE {
            return;
        }
        let s: State = match rmp_serde::from_slice(state) {
            Ok(s) => s,
            Err(e) => {
                return error!(error = %e, "the checkpoint's InfluxDB windows cannot be read: the traffic, latency and service points of the windows open at the checkpoint will be short, and some session times may differ");
            }
        };
        let processors = self.traffic.processors();
        self.traffic = s.traffic;
        self.traffic.set_processors(processors);
        self.latency = s.latency;
        self.service = s.service;
        if let Some(w) = self.writer.as_mut() {
            w.restore_unique(s.unique);
        }
    }

    fn counters(&self, out: &mut Vec<(String, u64)>) {
        if let Some(w) = self.writer.as_ref() {
            out.extend(
                w.stats()
                    .counters()
                    .into_iter()
                    .map(|(k, v)| (format!("influx_{k}"), v)),
            );
        }
        let l = self.latency.stats();
        out.push(("latency_late".into(), l.late));
        out.push(("latency_servers_over_cap".into(), l.servers_over_cap));
        out.push(("service_late".into(), self.service.late));
    }

    /// Every traffic, latency and service window closes.
    fn end_of_records(&mut self) -> Result<(), SinkError> {
        self.traffic.emit(true, &mut self.points);
        self.latency.finish(&mut self.points);
        self.service.finish(&mut self.points);
        Ok(())
    }

    /// The report's health points, then waits (at most `finish_within`) for every point to be
    /// written; the writer's figures go into the report.
    fn finish(&mut self, report: &mut AccountingReport, now_ns: u64) -> Result<(), SinkError> {
        let Some(mut w) = self.writer.take() else {
            return Ok(());
        };
        report_points(report, now_ns, &mut self.points);
        w.send(std::mem::take(&mut self.points));
        let stats = w.finish(self.finish_within);
        if stats.points_in_spool > 0 || stats.unaccounted() != 0 {
            error!(
                ?stats,
                "InfluxDB: not every point was written; the rest is in the spool for the next run"
            );
        } else {
            info!(
                written = stats.points_written,
                rejected = stats.points_rejected,
                collisions = stats.collisions,
                "InfluxDB: every point written or counted"
            );
        }
        report.influx = Some(stats);
        Ok(())
    }
}

/// The name of this sink's state in a checkpoint.
const STATE: &str = "influx";

#[derive(serde::Serialize)]
struct StateRef<'a> {
    traffic: &'a TrafficMerge,
    latency: &'a LatencyPoints,
    service: &'a ServiceTraffic,
    unique: UniqueSnapshot,
}

#[derive(serde::Deserialize)]
struct State {
    traffic: TrafficMerge,
    latency: LatencyPoints,
    service: ServiceTraffic,
    unique: UniqueSnapshot,
}

/// `tapflow_health` points for every processor's and collector's final counters, at `now`.
fn report_points(report: &AccountingReport, now: u64, points: &mut Vec<Point>) {
    for p in &report.processors {
        let counters = p.counters.named().map(|(k, v)| (k.to_owned(), v)).collect();
        points.push(health_point("processor", &p.processor, &counters, now));
    }
    for c in &report.collectors {
        let mut counters = c.drops.clone();
        counters.insert("packets_read".into(), c.packets_read);
        counters.insert("packets_summarised".into(), c.packets_summarised);
        counters.insert("fragments_merged".into(), c.fragments_merged);
        counters.insert("summaries".into(), c.summaries);
        counters.insert("kernel_dropped".into(), c.kernel_dropped);
        counters.insert("if_dropped".into(), c.if_dropped);
        points.push(health_point("collector", &c.sender, &counters, now));
    }
}
