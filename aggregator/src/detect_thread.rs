//! Detection on its own thread, fed in release order.
//!
//! At the end of a capture the aggregator releases every record still held (hundreds of
//! thousands at once) while the other core has nothing left to do: here detection runs there,
//! in parallel with the conn-log lines. Records go over as [`DetectInput`] values (small,
//! `Copy`: nothing allocated on one thread is freed on the other) in chunks, through one
//! bounded channel, so detection sees them in exactly the order they are written, and the
//! alert events come back on another. The detector is the same sans-IO [`Detector`]; what it
//! decides does not depend on which thread runs it.
//!
//! A checkpoint asks the thread for the detector's state ([`Detection::snapshot`]) through
//! the same channel, so it is taken after every record handed over before it and before any
//! after; the events those records decided are sent back first. A restart hands the state
//! back ([`Detection::restore`]) before any record.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tapflow_proto::conn::ConnRecord;
use tracing::error;

use crate::detect::{AlertEvent, DetectConfig, DetectInput, DetectStats, Detector, StateError};

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
    /// The detector's state after every record handed over so far ([`Detector::save`]);
    /// the events they decided are then ready for [`Detection::take_events`]. Waits.
    fn snapshot(&mut self) -> Result<Vec<u8>, StateError>;
    /// Takes a state [`Detection::snapshot`] gave (before any record). Waits.
    fn restore(&mut self, state: &[u8]) -> Result<(), StateError>;
}

/// What the detection thread is sent.
enum ToThread {
    Inputs(Vec<DetectInput>),
    Save(mpsc::Sender<Result<Vec<u8>, StateError>>),
    Restore(Vec<u8>, mpsc::Sender<Result<(), StateError>>),
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

    fn snapshot(&mut self) -> Result<Vec<u8>, StateError> {
        self.detector.save()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), StateError> {
        self.detector.restore(state)
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

    fn snapshot(&mut self) -> Result<Vec<u8>, StateError> {
        DetectThread::snapshot(self)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), StateError> {
        DetectThread::restore(self, state)
    }
}

pub struct DetectThread {
    chunk: Vec<DetectInput>,
    tx: Option<SyncSender<ToThread>>,
    /// Chunks the thread is done with, emptied, to be filled again (no fresh allocation, and
    /// nothing allocated here is freed there).
    spare: Receiver<Vec<DetectInput>>,
    events: Receiver<Vec<AlertEvent>>,
    stats: Arc<Mutex<DetectStats>>,
    handle: Option<JoinHandle<DetectStats>>,
}

impl DetectThread {
    pub fn start(cfg: DetectConfig) -> std::io::Result<DetectThread> {
        let (tx, rx) = mpsc::sync_channel::<ToThread>(DEPTH);
        let (events_tx, events) = mpsc::channel();
        let (spare_tx, spare) = mpsc::channel();
        let stats = Arc::new(Mutex::new(DetectStats::default()));
        let shared = Arc::clone(&stats);
        let handle = std::thread::Builder::new()
            .name("detect".into())
            .spawn(move || {
                let mut detector = Detector::new(cfg);
                let mut out = Vec::new();
                for m in rx {
                    let mut chunk = match m {
                        ToThread::Inputs(chunk) => chunk,
                        // Between chunks: every event decided so far has been sent.
                        ToThread::Save(reply) => {
                            let _ = reply.send(detector.save());
                            continue;
                        }
                        ToThread::Restore(state, reply) => {
                            let _ = reply.send(detector.restore(&state));
                            if let Ok(mut s) = shared.lock() {
                                *s = detector.stats();
                            }
                            continue;
                        }
                    };
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
            if tx.send(ToThread::Inputs(chunk)).is_err() {
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

    /// The detector's state after every record handed over so far: waits for detection to
    /// catch up. The events those records decided are ready for [`DetectThread::take_events`].
    pub fn snapshot(&mut self) -> Result<Vec<u8>, StateError> {
        self.flush();
        let (reply, answer) = mpsc::channel();
        self.ask(ToThread::Save(reply))?;
        answer.recv().map_err(|_| StateError::Stopped)?
    }

    /// Takes a state [`DetectThread::snapshot`] gave (before any record): waits for it.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), StateError> {
        let (reply, answer) = mpsc::channel();
        self.ask(ToThread::Restore(state.to_vec(), reply))?;
        answer.recv().map_err(|_| StateError::Stopped)?
    }

    fn ask(&mut self, m: ToThread) -> Result<(), StateError> {
        let tx = self.tx.as_ref().ok_or(StateError::Stopped)?;
        tx.send(m).map_err(|_| StateError::Stopped)
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

    /// A thread asked for its state mid-stream has handed back every event its records decided;
    /// a new thread given that state decides the rest as one thread running through does.
    #[test]
    fn a_thread_restored_from_a_snapshot_goes_on_as_one_that_ran_through() {
        let records = scan_and_sessions(30_000);
        let mut inline = InlineDetection::new(DetectConfig::default());
        records.iter().for_each(|r| inline.on_record(r));
        let mut expected = Vec::new();
        let want = inline.finish(&mut expected);
        for split in [0, 7_777, 20_001] {
            let mut a = DetectThread::start(DetectConfig::default()).expect("thread starts");
            records[..split].iter().for_each(|r| a.on_record(r));
            let state = a.snapshot().expect("a snapshot");
            let mut got = Vec::new();
            a.take_events(&mut got);
            let mut inline_a = InlineDetection::new(DetectConfig::default());
            records[..split].iter().for_each(|r| inline_a.on_record(r));
            let mut decided = Vec::new();
            inline_a.take_events(&mut decided);
            assert_eq!(
                got, decided,
                "every event decided before the snapshot, split {split}"
            );
            let mut b = DetectThread::start(DetectConfig::default()).expect("thread starts");
            b.restore(&state).expect("restored");
            records[split..].iter().for_each(|r| b.on_record(r));
            let stats = b.finish(&mut got);
            assert_eq!(got, expected, "split at {split}");
            assert_eq!(stats, want);
        }
    }
}
