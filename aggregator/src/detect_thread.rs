//! Detection on its own thread, fed in release order.
//!
//! At the end of a capture the aggregator releases every record still held (hundreds of
//! thousands at once) while the other core has nothing left to do: here detection runs there,
//! in parallel with the conn-log lines. Records go over as [`DetectInput`] values (small,
//! `Copy`: nothing allocated on one thread is freed on the other) in chunks, through one
//! bounded channel, so detection sees them in exactly the order they are written, and the
//! alert events come back on another. The detector is the same sans-IO [`Detector`]; what it
//! decides does not depend on which thread runs it.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tapflow_proto::conn::ConnRecord;
use tracing::error;

use crate::detect::{AlertEvent, DetectConfig, DetectInput, DetectStats, Detector};

/// Records per chunk: large enough that the channel is not the cost, small enough that the
/// detection thread starts on a drain long before it ends.
const CHUNK: usize = 2048;
/// Chunks in flight: at most `CHUNK * DEPTH` inputs (~100 bytes each) are queued; past that
/// the releasing thread waits for detection.
const DEPTH: usize = 32;

/// Detection as the aggregator drives it: records in release order, alert events back.
/// [`DetectThread`] runs it on another core; [`InlineDetection`] on the caller's thread (tests).
pub trait Detection {
    /// The next record in release order.
    fn on_record(&mut self, r: &ConnRecord);
    /// Hands over what is queued (call after each release).
    fn flush(&mut self);
    /// Alert events decided so far, appended to `out` (does not wait).
    fn take_events(&mut self, out: &mut Vec<AlertEvent>);
    /// Counters as of the last records detection finished.
    fn stats(&self) -> DetectStats;
    /// End of stream: judges every window and ends every episode; appends the events to
    /// `out` and returns the final counters.
    fn finish(&mut self, out: &mut Vec<AlertEvent>) -> DetectStats;
}

/// The sans-IO [`Detector`] on the caller's thread.
pub struct InlineDetection {
    detector: Detector,
    events: Vec<AlertEvent>,
}

impl InlineDetection {
    pub fn new(cfg: DetectConfig) -> InlineDetection {
        InlineDetection {
            detector: Detector::new(cfg),
            events: Vec::new(),
        }
    }
}

impl Detection for InlineDetection {
    fn on_record(&mut self, r: &ConnRecord) {
        self.detector.on_record(r, &mut self.events);
    }

    fn flush(&mut self) {}

    fn take_events(&mut self, out: &mut Vec<AlertEvent>) {
        out.append(&mut self.events);
    }

    fn stats(&self) -> DetectStats {
        self.detector.stats()
    }

    fn finish(&mut self, out: &mut Vec<AlertEvent>) -> DetectStats {
        out.append(&mut self.events);
        self.detector.finish(out);
        self.detector.stats()
    }
}

impl Detection for DetectThread {
    fn on_record(&mut self, r: &ConnRecord) {
        DetectThread::on_record(self, r);
    }

    fn flush(&mut self) {
        DetectThread::flush(self);
    }

    fn take_events(&mut self, out: &mut Vec<AlertEvent>) {
        DetectThread::take_events(self, out);
    }

    fn stats(&self) -> DetectStats {
        DetectThread::stats(self)
    }

    fn finish(&mut self, out: &mut Vec<AlertEvent>) -> DetectStats {
        DetectThread::finish(self, out)
    }
}

pub struct DetectThread {
    chunk: Vec<DetectInput>,
    tx: Option<SyncSender<Vec<DetectInput>>>,
    /// Chunks the thread is done with, emptied, to be filled again (no fresh allocation, and
    /// nothing allocated here is freed there).
    spare: Receiver<Vec<DetectInput>>,
    events: Receiver<Vec<AlertEvent>>,
    stats: Arc<Mutex<DetectStats>>,
    handle: Option<JoinHandle<DetectStats>>,
}

impl DetectThread {
    pub fn start(cfg: DetectConfig) -> std::io::Result<DetectThread> {
        let (tx, rx) = mpsc::sync_channel::<Vec<DetectInput>>(DEPTH);
        let (events_tx, events) = mpsc::channel();
        let (spare_tx, spare) = mpsc::channel();
        let stats = Arc::new(Mutex::new(DetectStats::default()));
        let shared = Arc::clone(&stats);
        let handle = std::thread::Builder::new()
            .name("detect".into())
            .spawn(move || {
                let mut detector = Detector::new(cfg);
                let mut out = Vec::new();
                for mut chunk in rx {
                    for input in &chunk {
                        detector.on_input(input, &mut out);
                    }
                    chunk.clear();
                    let _ = spare_tx.send(chunk);
                    if let Ok(mut s) = shared.lock() {
                        *s = detector.stats();
                    }
                    if !out.is_empty() && events_tx.send(std::mem::take(&mut out)).is_err() {
                        break;
                    }
                }
                // The channel closed: end of stream. The windows are freed here too.
                detector.finish(&mut out);
                let _ = events_tx.send(out);
                detector.stats()
            })?;
        Ok(DetectThread {
            chunk: Vec::with_capacity(CHUNK),
            tx: Some(tx),
            spare,
            events,
            stats,
            handle: Some(handle),
        })
    }

    /// The next record in release order.
    pub fn on_record(&mut self, r: &ConnRecord) {
        self.chunk.push(DetectInput::from(r));
        if self.chunk.len() >= CHUNK {
            self.flush();
        }
    }

    /// Hands over what is queued here (call after each release).
    pub fn flush(&mut self) {
        if self.chunk.is_empty() {
            return;
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let chunk = std::mem::replace(&mut self.chunk, next);
        if let Some(tx) = self.tx.as_ref() {
            if tx.send(chunk).is_err() {
                error!(
                    "the detection thread has stopped: records are no longer checked for anomalies"
                );
                self.tx = None;
            }
        }
    }

    /// Alert events decided so far, appended to `out` (does not wait).
    pub fn take_events(&mut self, out: &mut Vec<AlertEvent>) {
        while let Ok(mut e) = self.events.try_recv() {
            out.append(&mut e);
        }
    }

    /// Counters as of the last chunk detection finished.
    pub fn stats(&self) -> DetectStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// End of stream: waits for detection to catch up, judges every window and ends every
    /// episode; appends the events to `out` and returns the final counters. Once.
    pub fn finish(&mut self, out: &mut Vec<AlertEvent>) -> DetectStats {
        self.flush();
        self.tx = None;
        let stats = self.handle.take().map(JoinHandle::join);
        self.take_events(out);
        match stats {
            Some(Ok(stats)) => stats,
            // Finished already.
            None => self.stats(),
            Some(Err(_)) => {
                error!("the detection thread failed: the alerts of this run are incomplete");
                self.stats()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::scan_and_sessions;

    #[test]
    fn the_thread_decides_what_the_detector_decides_inline() {
        let records = scan_and_sessions(30_000);
        let mut inline = Detector::new(DetectConfig::default());
        let mut expected = Vec::new();
        for r in &records {
            inline.on_record(r, &mut expected);
        }
        inline.finish(&mut expected);
        assert!(
            expected
                .iter()
                .any(|e| e.kind == crate::detect::AlertKind::PortScan),
            "the records hold a port scan: {expected:?}"
        );

        let mut thread = DetectThread::start(DetectConfig::default()).expect("thread starts");
        let mut got = Vec::new();
        for (i, r) in records.iter().enumerate() {
            thread.on_record(r);
            // Releases of odd sizes, events taken as they come.
            if i % 777 == 0 {
                thread.flush();
                thread.take_events(&mut got);
            }
        }
        let stats = thread.finish(&mut got);
        assert_eq!(got, expected);
        assert_eq!(stats, inline.stats());
        assert_eq!(stats.records, records.len() as u64);
    }
}
