//! [`InfluxWriter`]: the handle the aggregator's loop holds. `send` stamps unique times and
//! hands points to the writer thread ([`super::worker`]) without blocking on the network.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use super::batch::Batch;
use super::http::Client;
use super::line::Point;
use super::shared::{spool_or_drop, Shared};
use super::spool::Spool;
use super::unique::{UniqueSnapshot, Uniquifier};
use super::worker::{Msg, Worker};
use super::{InfluxConfig, InfluxError, InfluxStats};

/// Writes points to InfluxDB from its own thread. See the module docs of [`super`].
pub struct InfluxWriter {
    tx: Option<mpsc::Sender<Msg>>,
    shared: Arc<Shared>,
    uniq: Uniquifier,
    /// For health points, stamped with the wall clock: kept apart so that their times (now)
    /// do not move the event-time uniquifier's horizon past the sessions still to come.
    uniq_wall: Uniquifier,
    queue_cap: u64,
    batch_lines: usize,
    handle: Option<JoinHandle<()>>,
}

impl InfluxWriter {
    /// Checks the settings, opens the spool (files left by an earlier run are written first)
    /// and starts the writer thread. InfluxDB need not be up: points wait in the spool.
    pub fn start(cfg: InfluxConfig) -> Result<InfluxWriter, InfluxError> {
        Self::start_with(cfg, Uniquifier::default())
    }

    /// As [`InfluxWriter::start`], with a uniquifier of another horizon or cap.
    pub fn start_with(cfg: InfluxConfig, uniq: Uniquifier) -> Result<InfluxWriter, InfluxError> {
        if cfg.batch_lines == 0 {
            return Err(InfluxError::Config("batch_lines must be at least 1"));
        }
        if cfg.spool_max_bytes == 0 {
            return Err(InfluxError::Config("spool_max_bytes must be at least 1"));
        }
        let client = Client::new(&cfg)?;
        let spool = Spool::open(&cfg.spool_dir, cfg.spool_max_bytes).map_err(|source| {
            InfluxError::Spool {
                dir: cfg.spool_dir.display().to_string(),
                source,
            }
        })?;
        if spool.recovered_points > 0 {
            warn!(points = spool.recovered_points, dir = %cfg.spool_dir.display(),
                "InfluxDB spool holds points from an earlier run: writing them first");
        }
        let stats = InfluxStats {
            points_recovered: spool.recovered_points,
            ..InfluxStats::default()
        };
        let shared = Arc::new(Shared {
            stats: Mutex::new(stats),
            spool: Mutex::new(spool),
            queued: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let batch_lines = cfg.batch_lines;
        let worker = Worker::new(cfg, client, rx, shared.clone());
        let handle = std::thread::Builder::new()
            .name("influx-writer".into())
            .spawn(move || worker.run())
            .map_err(InfluxError::Thread)?;
        Ok(InfluxWriter {
            tx: Some(tx),
            shared,
            uniq,
            uniq_wall: Uniquifier::default(),
            queue_cap: (4 * batch_lines as u64).max(10_000),
            batch_lines,
            handle: Some(handle),
        })
    }

    /// Gives `points` to the writer, never blocking on the network: their times are made
    /// unique (in the order given), then they go to the writer thread, or straight to the
    /// spool when more than the queue's bound (4 batches, at least 10,000 points) are waiting.
    pub fn send(&mut self, mut points: Vec<Point>) {
        if points.is_empty() {
            return;
        }
        for p in &mut points {
            if p.measurement == super::HEALTH_MEASUREMENT {
                self.uniq_wall.place(p);
            } else {
                self.uniq.place(p);
            }
        }
        let n = points.len() as u64;
        {
            let u = self.uniq.stats();
            let mut s = self.shared.stats();
            s.points_sent += n;
            s.collisions = u.collisions;
            s.unique = u;
        }
        let queued = self.shared.queued.load(Ordering::Relaxed);
        let points = match &self.tx {
            Some(tx) if queued + n <= self.queue_cap => {
                self.shared.queued.fetch_add(n, Ordering::Relaxed);
                match tx.send(Msg::Points(points)) {
                    Ok(()) => return,
                    Err(mpsc::SendError(msg)) => {
                        self.shared.queued.fetch_sub(n, Ordering::Relaxed);
                        error!("InfluxDB writer thread is gone: spooling");
                        match msg {
                            Msg::Points(p) => p,
                            Msg::Checkpoint(_) | Msg::Finish(_) => return,
                        }
                    }
                }
            }
            _ => points,
        };
        self.spool_points(&points);
    }

    /// A checkpoint of the write-ahead log: waits until every point sent so far is written,
    /// rejected, or in the spool and synced (the batch being filled is spooled, not posted).
    pub fn checkpoint(&mut self) -> Result<(), InfluxError> {
        let (reply, answer) = mpsc::channel();
        match &self.tx {
            Some(tx) if tx.send(Msg::Checkpoint(reply)).is_ok() => answer
                .recv()
                .map_err(|_| InfluxError::Checkpoint("the writer thread is gone".into()))?
                .map_err(InfluxError::Checkpoint),
            // No thread: what was sent went to the spool; sync it.
            _ => self
                .shared
                .spool()
                .sync()
                .map_err(|e| InfluxError::Checkpoint(e.to_string())),
        }
    }

    /// The event-time uniquifier's state, for a checkpoint.
    pub fn unique_snapshot(&self) -> UniqueSnapshot {
        self.uniq.snapshot()
    }

    /// A restart from a checkpoint: the uniquifier goes on from `s`, so the points rebuilt
    /// from the messages after it get the times they had (InfluxDB overwrites them, same
    /// bytes, rather than adding).
    pub fn restore_unique(&mut self, s: UniqueSnapshot) {
        self.uniq.restore(s);
    }

    /// What was done so far. `points_pending` is exact once `finish` has returned.
    pub fn stats(&self) -> InfluxStats {
        let queued = self.shared.queued.load(Ordering::Relaxed);
        let (in_spool, dropped) = {
            let sp = self.shared.spool();
            (sp.points(), sp.dropped_points)
        };
        let mut s = self.shared.stats().clone();
        s.points_in_spool = in_spool;
        s.points_dropped_spool_full = dropped;
        s.points_pending += queued;
        s
    }

    /// Writes everything, the spool included, or gives up when `deadline` has passed (plus, at
    /// most, the rest of a request already in flight, itself bounded by `timeout`), leaving
    /// what is left in the spool (said in an ERROR line, counted in `points_in_spool`; the
    /// next run with the same spool directory writes it first).
    pub fn finish(mut self, deadline: Duration) -> InfluxStats {
        self.stop(deadline);
        self.stats()
    }

    fn stop(&mut self, deadline: Duration) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Finish(Instant::now() + deadline));
        }
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                error!("InfluxDB writer thread panicked; see the points left in the spool");
            }
        }
    }

    /// The queue is full (or the thread gone): encode here and spool, in batches.
    fn spool_points(&mut self, points: &[Point]) {
        let mut batch = Batch::default();
        let (mut clamped, mut dropped_fields, mut rejected) = (0u64, 0u64, 0u64);
        let mut spooled = 0u64;
        for chunk in points.chunks(self.batch_lines) {
            batch.clear();
            for p in chunk {
                match p.encode(&mut batch.body) {
                    Ok(e) => {
                        clamped += u64::from(e.clamped);
                        dropped_fields += u64::from(e.fields_dropped);
                        batch.ends.push(batch.body.len());
                    }
                    Err(e) => {
                        rejected += 1;
                        warn!(error = %e, "point not written");
                    }
                }
            }
            spooled += spool_or_drop(&self.shared, &batch);
        }
        let mut s = self.shared.stats();
        s.points_spooled += spooled;
        s.points_rejected += rejected;
        s.uint_clamped += clamped;
        s.fields_dropped += dropped_fields;
    }
}

impl Drop for InfluxWriter {
    /// Dropped without `finish`: whatever is not written goes to the spool at once.
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}
