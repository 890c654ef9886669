//! The dashboard's sink: copies what the aggregator's thread hands every sink into a buffer and
//! offers it to the updater at the end of each input message, never blocking.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use tapflow_proto::conn::ConnRecord;
use tapflow_proto::upstream::{ConnBatch, ProcessorHeartbeat, TrafficPartial};

use crate::accounting::AccountingReport;
use crate::detect::AlertEvent;
use crate::sink::{Sink, SinkError};

/// Records copied per input message at most (a release at the end of a capture can hand
/// over hundreds of thousands at once); past it they are counted (`records_skipped`, /api/health).
pub const RECORDS_PER_MESSAGE: usize = 50_000;

/// Records copied and not yet applied by the updater, at most: past it a buffer is dropped
/// (counted), so the copies in flight hold a bounded amount of memory (about 1 KiB each).
pub const RECORDS_IN_FLIGHT: usize = 100_000;

/// What the updater applies, in the order the aggregator produced it.
pub enum Event {
    Traffic(Vec<TrafficPartial>),
    Conn(Box<ConnRecord>, Vec<String>),
    Alerts(Vec<AlertEvent>),
    Heartbeat(Box<ProcessorHeartbeat>, u64),
    /// The accounting report, as the health log holds it (JSON).
    Report(String),
    /// Records not copied (over [`RECORDS_PER_MESSAGE`]).
    Skipped(u64),
}

/// The sink half: buffers events, hands them over per input message.
pub struct Feed {
    pending: Vec<Event>,
    records: usize,
    skipped: u64,
    tx: SyncSender<Vec<Event>>,
    dropped: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
}

impl Feed {
    /// A feed whose channel holds `batches` buffers at most, and the updater's end.
    pub fn new(batches: usize) -> (Feed, Receiver<Vec<Event>>) {
        let (tx, rx) = sync_channel(batches);
        let feed = Feed {
            pending: Vec::new(),
            records: 0,
            skipped: 0,
            tx,
            dropped: Arc::default(),
            in_flight: Arc::default(),
        };
        (feed, rx)
    }

    /// Records sent and not yet applied (the updater subtracts what it applied).
    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.in_flight)
    }

    /// Buffers dropped because the updater was behind (shared with it, to be shown).
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dropped)
    }

    /// Hands the buffer over without waiting; a full channel drops it (counted).
    pub fn send(&mut self) {
        if self.skipped > 0 {
            self.pending
                .push(Event::Skipped(std::mem::take(&mut self.skipped)));
        }
        let records = std::mem::take(&mut self.records);
        if self.pending.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.pending);
        if self.in_flight.load(Ordering::Acquire) + records > RECORDS_IN_FLIGHT {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.in_flight.fetch_add(records, Ordering::AcqRel);
        if self.tx.try_send(events).is_err() {
            self.in_flight.fetch_sub(records, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn conn(&mut self, r: Box<ConnRecord>, parents: Vec<String>) {
        if self.records >= RECORDS_PER_MESSAGE {
            self.skipped += 1;
            return;
        }
        self.records += 1;
        self.pending.push(Event::Conn(r, parents));
    }
}

impl Sink for Feed {
    fn on_batch(&mut self, batch: &ConnBatch) {
        if !batch.traffic.is_empty() {
            self.pending.push(Event::Traffic(batch.traffic.clone()));
        }
    }

    fn on_conn(&mut self, r: &ConnRecord, parents: &[String]) -> Result<(), SinkError> {
        if self.records >= RECORDS_PER_MESSAGE {
            self.skipped += 1;
            return Ok(());
        }
        self.conn(Box::new(r.clone()), parents.to_vec());
        Ok(())
    }

    fn on_conn_owned(&mut self, r: Box<ConnRecord>, parents: Vec<String>) -> Result<(), SinkError> {
        self.conn(r, parents);
        Ok(())
    }

    fn on_alerts(&mut self, events: &[AlertEvent]) -> Result<(), SinkError> {
        if !events.is_empty() {
            self.pending.push(Event::Alerts(events.to_vec()));
        }
        Ok(())
    }

    fn on_live_health(&mut self, hb: &ProcessorHeartbeat, now_ns: u64) {
        self.pending
            .push(Event::Heartbeat(Box::new(hb.clone()), now_ns));
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.send();
        Ok(())
    }

    fn counters(&self, out: &mut Vec<(String, u64)>) {
        out.push((
            "dashboard_batches_dropped".to_owned(),
            self.dropped.load(Ordering::Relaxed),
        ));
    }

    fn end_of_records(&mut self) -> Result<(), SinkError> {
        self.send();
        Ok(())
    }

    fn on_report(&mut self, report: &AccountingReport) -> Result<(), SinkError> {
        let json = serde_json::to_string(report).unwrap_or_default();
        self.pending.push(Event::Report(json));
        // The last buffer of the run: worth a short wait rather than a drop.
        let events = std::mem::take(&mut self.pending);
        if self
            .tx
            .send_timeout_compat(events, std::time::Duration::from_secs(2))
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// `SyncSender` has no `send_timeout` on stable: retries `try_send` until `timeout`.
trait SendTimeout<T> {
    fn send_timeout_compat(&self, v: T, timeout: std::time::Duration) -> Result<(), ()>;
}

impl<T> SendTimeout<T> for SyncSender<T> {
    fn send_timeout_compat(&self, mut v: T, timeout: std::time::Duration) -> Result<(), ()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.try_send(v) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(()),
                Err(TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                    v = back;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(TrySendError::Full(_)) => return Err(()),
            }
        }
    }
}
