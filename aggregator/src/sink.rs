//! The aggregator's outputs behind one interface: every log file and InfluxDB is a [`Sink`],
//! and [`Sinks`] hands each of them the same events in the same order.
//!
//! The state machine ([`crate::state::Aggregator`]) calls the fan-out; it never knows which
//! outputs exist. An output that is not configured is simply not in the list, so nothing is
//! built for it (no InfluxDB point is made when InfluxDB is off). Adding an output is one
//! module under `sink/`, its configuration, and one line in [`Sinks::from_config`].
//!
//! Order, per input message: a batch's traffic ([`Sink::on_batch`]), its released records in
//! release order ([`Sink::on_conn`]), the end of that release ([`Sink::on_released`]), the alert
//! events those records caused ([`Sink::on_alerts`]), then [`Sink::flush`] and the batch's
//! interim records ([`Sink::on_interim`]). At the end: the last records, [`Sink::end_of_records`],
//! the last alerts, [`Sink::finish`] (a sink may add its own figures to the report) and
//! [`Sink::on_report`] with the final report. A log that could not write some of its lines
//! (a full disk) goes on and says how many in [`Sink::unwritten`].

mod alerts_log;
mod conn_log;
mod health_log;
mod influx;
mod interim_log;

use std::collections::BTreeMap;

use tapflow_proto::conn::ConnRecord;
use tapflow_proto::upstream::{ConnBatch, ProcessorHeartbeat};
use tracing::info;

use crate::accounting::AccountingReport;
use crate::config::Config;
use crate::conn_writer::ConnLogError;
use crate::detect::AlertEvent;
use crate::influx::InfluxError;
use crate::logfile::LogError;

pub use alerts_log::AlertsLog;
pub use conn_log::ConnLog;
pub use health_log::HealthLog;
pub use influx::Influx;
pub use interim_log::InterimLog;

/// Why an output failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    ConnLog(#[from] ConnLogError),
    #[error("InfluxDB sink: {0}")]
    Influx(#[from] InfluxError),
}

/// One output. Every method has a default that does nothing: a sink implements what it writes.
pub trait Sink {
    /// A batch of records arrived from a processor (before they are ordered): its per-window
    /// traffic partials and its watermark.
    fn on_batch(&mut self, _batch: &ConnBatch) {}

    /// `n` processors are expected from now on (the processor set was reloaded).
    fn on_processors(&mut self, _n: usize) {}

    /// `processor` ended or was given up: nothing more comes from it.
    fn on_processor_end(&mut self, _processor: &str) {}

    /// The next final record in release order, with its tunnel parents' uids.
    fn on_conn(&mut self, _r: &ConnRecord, _parents: &[String]) -> Result<(), SinkError> {
        Ok(())
    }

    /// True for the sink that keeps the records it is handed (the conn log sends them to its
    /// thread): it is called last, with [`Sink::on_conn_owned`], so they need no copy.
    fn takes_records(&self) -> bool {
        false
    }

    /// As [`Sink::on_conn`], the record handed over: the fan-out gives it to its last sink
    /// this way.
    fn on_conn_owned(&mut self, r: Box<ConnRecord>, parents: Vec<String>) -> Result<(), SinkError> {
        self.on_conn(&r, &parents)
    }

    /// Every record of one release has been handed over.
    fn on_released(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Alert events, in the order decided, after the records that caused them.
    fn on_alerts(&mut self, _events: &[AlertEvent]) -> Result<(), SinkError> {
        Ok(())
    }

    /// An interim update of a long session, in arrival order.
    fn on_interim(&mut self, _r: &ConnRecord) -> Result<(), SinkError> {
        Ok(())
    }

    /// A processor's heartbeat, at wall-clock `now_ns` (live health).
    fn on_live_health(&mut self, _hb: &ProcessorHeartbeat, _now_ns: u64) {}

    /// The end of one input message: pass on what it produced (buffered files stay buffered).
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// SIGHUP: open files again (after logrotate moved them).
    fn reopen(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// A checkpoint of the write-ahead log: every line handed over is written and synced.
    /// `Ok(false)`: a resumed log still skips lines it holds (not caught up since a restart).
    fn sync(&mut self) -> Result<bool, SinkError> {
        Ok(true)
    }

    /// What a checkpoint keeps of this sink (after [`Sink::sync`]), if it keeps anything that
    /// a restart cannot rebuild from the messages after the checkpoint: its name and bytes.
    fn state(&self) -> Option<(&'static str, Vec<u8>)> {
        None
    }

    /// A restart from a checkpoint: the state [`Sink::state`] gave, before any message. A
    /// sink whose name it is not ignores it.
    fn restore_state(&mut self, _name: &str, _state: &[u8]) {}

    /// Counters for the metrics endpoint, appended to `out` as (name, value).
    fn counters(&self, _out: &mut Vec<(String, u64)>) {}

    /// Every record has been released (end of the run).
    fn end_of_records(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// End of the run, at wall-clock `now_ns`: write and flush everything; a sink may add its
    /// own figures to `report`.
    fn finish(&mut self, _report: &mut AccountingReport, _now_ns: u64) -> Result<(), SinkError> {
        Ok(())
    }

    /// The final accounting report, after every [`Sink::finish`].
    fn on_report(&mut self, _report: &AccountingReport) -> Result<(), SinkError> {
        Ok(())
    }

    /// A log's lines that could not be written so far, inserted into `out` under the log's
    /// option name (`conn_log`, ...) if there are any.
    fn unwritten(&self, _out: &mut BTreeMap<String, u64>) {}
}

/// Every configured output, called in list order.
#[derive(Default)]
pub struct Sinks {
    sinks: Vec<Box<dyn Sink>>,
}

impl Sinks {
    /// The outputs `config` asks for (files created, InfluxDB's writer started), in this order.
    pub fn from_config(config: &Config) -> Result<Sinks, SinkError> {
        let mut sinks = Sinks::default();
        if let Some(path) = &config.health_log {
            sinks.push(HealthLog::create(path)?);
        }
        if let Some(path) = &config.conn_log {
            sinks.push(ConnLog::start(path)?);
        }
        if let Some(path) = &config.conn_interim_log {
            sinks.push(InterimLog::create(path)?);
        }
        if let Some(path) = &config.alerts_log {
            sinks.push(AlertsLog::create(path)?);
        }
        if let Some(cfg) = &config.influx {
            sinks.push(Influx::start(
                cfg.clone(),
                config.processors,
                config.influx_finish,
                crate::points::LatencyPoints::new(
                    config.detect.window_s,
                    config.detect.hold_s,
                    config.detect.latency_caps,
                ),
            )?);
        }
        Ok(sinks)
    }

    /// Adds an output. Outputs are called in the order added, except that one which takes
    /// the released records over ([`Sink::takes_records`]) stays last.
    pub fn push(&mut self, sink: impl Sink + 'static) {
        let sink: Box<dyn Sink> = Box::new(sink);
        match self.sinks.last() {
            Some(last) if last.takes_records() && !sink.takes_records() => {
                self.sinks.insert(self.sinks.len() - 1, sink);
            }
            _ => self.sinks.push(sink),
        }
    }

    pub fn on_batch(&mut self, batch: &ConnBatch) {
        self.sinks.iter_mut().for_each(|s| s.on_batch(batch));
    }

    pub fn on_processors(&mut self, n: usize) {
        self.sinks.iter_mut().for_each(|s| s.on_processors(n));
    }

    pub fn on_processor_end(&mut self, processor: &str) {
        self.sinks
            .iter_mut()
            .for_each(|s| s.on_processor_end(processor));
    }

    /// A released record: borrowed by every sink but the last, which takes it.
    pub fn on_conn(&mut self, r: Box<ConnRecord>, parents: Vec<String>) -> Result<(), SinkError> {
        let Some((last, rest)) = self.sinks.split_last_mut() else {
            return Ok(());
        };
        for s in rest {
            s.on_conn(&r, &parents)?;
        }
        last.on_conn_owned(r, parents)
    }

    pub fn on_released(&mut self) -> Result<(), SinkError> {
        self.sinks.iter_mut().try_for_each(|s| s.on_released())
    }

    /// Alert events from any producer (detection, pipeline health, the end of the run): each
    /// is logged, then written by every sink.
    pub fn on_alerts(&mut self, events: &[AlertEvent]) -> Result<(), SinkError> {
        for e in events {
            info!(event = e.event.as_str(), kind = e.kind.as_str(), src = %e.src, dst = %e.dst, count = e.count, peak = e.peak, "alert");
        }
        self.sinks.iter_mut().try_for_each(|s| s.on_alerts(events))
    }

    pub fn on_interim(&mut self, r: &ConnRecord) -> Result<(), SinkError> {
        self.sinks.iter_mut().try_for_each(|s| s.on_interim(r))
    }

    pub fn on_live_health(&mut self, hb: &ProcessorHeartbeat, now_ns: u64) {
        self.sinks
            .iter_mut()
            .for_each(|s| s.on_live_health(hb, now_ns));
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.sinks.iter_mut().try_for_each(|s| s.flush())
    }

    pub fn reopen(&mut self) -> Result<(), SinkError> {
        self.sinks.iter_mut().try_for_each(|s| s.reopen())
    }

    /// [`Sink::sync`] of every sink: true when every one is caught up.
    pub fn sync(&mut self) -> Result<bool, SinkError> {
        let mut all = true;
        for s in &mut self.sinks {
            all &= s.sync()?;
        }
        Ok(all)
    }

    /// Every sink's [`Sink::state`].
    pub fn state(&self) -> Vec<(&'static str, Vec<u8>)> {
        self.sinks.iter().filter_map(|s| s.state()).collect()
    }

    pub fn restore_state(&mut self, name: &str, state: &[u8]) {
        self.sinks
            .iter_mut()
            .for_each(|s| s.restore_state(name, state));
    }

    pub fn counters(&self, out: &mut Vec<(String, u64)>) {
        self.sinks.iter().for_each(|s| s.counters(out));
    }

    pub fn end_of_records(&mut self) -> Result<(), SinkError> {
        self.sinks.iter_mut().try_for_each(|s| s.end_of_records())
    }

    pub fn finish(&mut self, report: &mut AccountingReport, now_ns: u64) -> Result<(), SinkError> {
        self.sinks
            .iter_mut()
            .try_for_each(|s| s.finish(report, now_ns))
    }

    pub fn on_report(&mut self, report: &AccountingReport) -> Result<(), SinkError> {
        self.sinks.iter_mut().try_for_each(|s| s.on_report(report))
    }

    /// Every log's unwritten lines, by log (logs that wrote everything are left out).
    pub fn unwritten(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        self.sinks.iter().for_each(|s| s.unwritten(&mut out));
        out
    }
}

/// Adds `n` unwritten lines of log `name` to `out`, if there are any.
fn count_unwritten(out: &mut BTreeMap<String, u64>, name: &str, n: u64) {
    if n > 0 {
        *out.entry(name.to_string()).or_default() += n;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::testutil::scan_and_sessions;

    /// Records uids as borrowed (`b`) or taken (`t`); `keeps`: takes records over.
    struct Seen(Rc<RefCell<Vec<String>>>, &'static str, bool);

    impl Sink for Seen {
        fn takes_records(&self) -> bool {
            self.2
        }

        fn on_conn(&mut self, r: &ConnRecord, _: &[String]) -> Result<(), SinkError> {
            self.0.borrow_mut().push(format!("{} b {}", self.1, r.uid));
            Ok(())
        }

        fn on_conn_owned(&mut self, r: Box<ConnRecord>, _: Vec<String>) -> Result<(), SinkError> {
            self.0.borrow_mut().push(format!("{} t {}", self.1, r.uid));
            Ok(())
        }
    }

    #[test]
    fn every_sink_sees_each_record_and_the_one_that_keeps_records_takes_it_last() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut sinks = Sinks::default();
        sinks.push(Seen(Rc::clone(&seen), "keeps", true));
        sinks.push(Seen(Rc::clone(&seen), "a", false));
        sinks.push(Seen(Rc::clone(&seen), "b", false));
        let records = scan_and_sessions(2);
        for r in &records {
            sinks
                .on_conn(Box::new(r.clone()), vec![])
                .expect("no sink fails");
        }
        let (u0, u1) = (&records[0].uid, &records[1].uid);
        assert_eq!(
            *seen.borrow(),
            [
                format!("a b {u0}"),
                format!("b b {u0}"),
                format!("keeps t {u0}"),
                format!("a b {u1}"),
                format!("b b {u1}"),
                format!("keeps t {u1}")
            ]
        );
        Sinks::default()
            .on_conn(Box::new(records[0].clone()), vec![])
            .expect("no sinks, nothing to fail");
    }
}
