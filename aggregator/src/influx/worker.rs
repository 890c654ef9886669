//! The writer thread: batches points, posts them, retries, spools and replays.
//!
//! While the spool holds anything, new batches join it (so points go out oldest first and
//! memory stays bounded), and the spool is replayed one file at a time whenever a retry is
//! due. A batch whose delivery hits a retryable failure leaves its unsettled lines in the
//! spool (a memory batch is appended; a spool file is rewritten with what is left).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::batch::{classify, measurement_of, Backoff, Batch, Delivery, Outcome, Settled};
use super::http::{Answer, Client};
use super::line::Point;
use super::shared::{spool_or_drop, Shared};
use super::{InfluxApi, InfluxConfig};

pub(crate) enum Msg {
    Points(Vec<Point>),
    /// A checkpoint: every point sent before is written, or put in the spool and synced; the
    /// answer says which failed.
    Checkpoint(std::sync::mpsc::Sender<Result<(), String>>),
    /// Write everything until this instant, then stop.
    Finish(Instant),
}

pub(crate) struct Worker {
    cfg: InfluxConfig,
    client: Client,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    /// The batch being filled, and when its first line came.
    cur: Batch,
    cur_since: Option<Instant>,
    backoff: Backoff,
    /// No request before this (backing off).
    next_try: Instant,
    /// v1: `CREATE DATABASE` answered (or refused for a reason other than no answer).
    db_ready: bool,
    /// v1: times the database was re-created after a "database not found".
    recreated: u32,
    /// Logged "InfluxDB unreachable" and not yet "back".
    outage: bool,
}

impl Worker {
    pub fn new(cfg: InfluxConfig, client: Client, rx: Receiver<Msg>, shared: Arc<Shared>) -> Self {
        Worker {
            backoff: Backoff::new(cfg.max_retry_delay),
            db_ready: !matches!(cfg.api, InfluxApi::V1 { .. }),
            cfg,
            client,
            rx,
            shared,
            cur: Batch::default(),
            cur_since: None,
            next_try: Instant::now(),
            recreated: 0,
            outage: false,
        }
    }

    pub fn run(mut self) {
        loop {
            let now = Instant::now();
            if now >= self.next_try && !self.shared.spool().is_empty() {
                // Keep the queue moving while replaying.
                if let Some(deadline) = self.drain() {
                    return self.finish(deadline);
                }
                self.replay_one(None);
                continue;
            }
            let mut wake = now + Duration::from_secs(1);
            if let Some(since) = self.cur_since {
                wake = wake.min(since + self.cfg.flush_interval);
            }
            if !self.shared.spool().is_empty() {
                wake = wake.min(self.next_try);
            }
            match self.rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(Msg::Points(points)) => self.take(points),
                Ok(Msg::Checkpoint(reply)) => {
                    let _ = reply.send(self.checkpoint());
                }
                Ok(Msg::Finish(deadline)) => return self.finish(deadline),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.finish(Instant::now()),
            }
            if self
                .cur_since
                .is_some_and(|s| s.elapsed() >= self.cfg.flush_interval)
            {
                self.seal(None);
            }
        }
    }

    /// Takes whatever is in the channel without waiting; `Some(deadline)` when told to finish.
    fn drain(&mut self) -> Option<Instant> {
        loop {
            match self.rx.try_recv() {
                Ok(Msg::Points(points)) => self.take(points),
                Ok(Msg::Checkpoint(reply)) => {
                    let _ = reply.send(self.checkpoint());
                }
                Ok(Msg::Finish(deadline)) => return Some(deadline),
                Err(std::sync::mpsc::TryRecvError::Empty) => return None,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return Some(Instant::now()),
            }
        }
    }

    fn take(&mut self, points: Vec<Point>) {
        let n = points.len() as u64;
        self.shared.queued.fetch_sub(n, Ordering::Relaxed);
        // Pending first: sealing below settles some of them.
        self.shared.stats().points_pending += n;
        let (mut clamped, mut dropped, mut rejected) = (0, 0, 0);
        for p in &points {
            match p.encode(&mut self.cur.body) {
                Ok(e) => {
                    clamped += u64::from(e.clamped);
                    dropped += u64::from(e.fields_dropped);
                    self.cur.ends.push(self.cur.body.len());
                    self.cur_since.get_or_insert_with(Instant::now);
                    if self.cur.lines() >= self.cfg.batch_lines {
                        self.seal(None);
                    }
                }
                Err(e) => {
                    rejected += 1;
                    warn!(error = %e, "point not written");
                }
            }
        }
        let mut s = self.shared.stats();
        s.points_pending -= rejected;
        s.points_rejected += rejected;
        s.uint_clamped += clamped;
        s.fields_dropped += dropped;
    }

    /// The current batch is complete: post it now, or spool it behind what waits there.
    fn seal(&mut self, deadline: Option<Instant>) {
        self.cur_since = None;
        if self.cur.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.cur);
        let waiting = Instant::now() < self.next_try || !self.shared.spool().is_empty();
        let rest = (!waiting).then(|| self.deliver(&batch, deadline));
        let rest = rest.as_ref().unwrap_or(&batch);
        if !rest.is_empty() {
            let n = spool_or_drop(&self.shared, rest);
            let mut s = self.shared.stats();
            s.points_spooled += n;
            s.points_pending -= rest.lines() as u64;
        }
        self.cur = batch_reuse(batch);
    }

    /// A checkpoint of the write-ahead log: the batch being filled goes to the spool (no
    /// request: the aggregator waits), then the spool is synced. Every point taken so far is
    /// then written, rejected, or on disk in the spool (written by this run or the next).
    fn checkpoint(&mut self) -> Result<(), String> {
        self.cur_since = None;
        if !self.cur.is_empty() {
            let batch = std::mem::take(&mut self.cur);
            let n = spool_or_drop(&self.shared, &batch);
            {
                let mut s = self.shared.stats();
                s.points_spooled += n;
                s.points_pending -= batch.lines() as u64;
            }
            self.cur = batch_reuse(batch);
        }
        self.shared.spool().sync().map_err(|e| e.to_string())
    }

    /// Delivers the spool's oldest file; what is left of it stays there.
    fn replay_one(&mut self, deadline: Option<Instant>) {
        let taken = self.shared.spool().take_oldest();
        match taken {
            Ok(Some((seq, batch))) => {
                let n = batch.lines() as u64;
                self.shared.stats().points_pending += n;
                let rest = self.deliver(&batch, deadline);
                self.shared.stats().points_pending -= rest.lines() as u64;
                let settled = self.shared.spool().settle(seq, &rest);
                if let Err(e) = settled {
                    error!(error = %e, "cannot update the InfluxDB spool");
                }
                if self.outage && self.shared.spool().is_empty() {
                    self.outage = false;
                    info!("InfluxDB spool drained");
                }
            }
            Ok(None) => {}
            Err(e) => error!(error = %e, "cannot read the InfluxDB spool"),
        }
    }

    /// Posts `batch` until every line is settled, a retry is due, or `deadline` passes;
    /// returns the lines not settled. Counts written, rejected and pending points.
    fn deliver(&mut self, batch: &Batch, deadline: Option<Instant>) -> Batch {
        let mut d = Delivery::new(batch.lines());
        while let Some(run) = d.next() {
            let now = Instant::now();
            let timeout = match deadline {
                Some(dl) if now >= dl => break,
                Some(dl) => (dl - now).min(self.cfg.timeout),
                None => self.cfg.timeout,
            };
            if !self.db_ready && !self.create_database(timeout) {
                break;
            }
            let ans = self.client.write(batch.slice(run.clone()), timeout);
            self.count_error(ans.error_kind.as_deref());
            let mut outcome = classify(ans.status, ans.retry_after.as_deref());
            if outcome == Outcome::Unwritable
                && self.recreated < 3
                && ans.message.contains("database not found")
            {
                // Dropped while we ran (or created under us): make it again, then retry.
                self.recreated += 1;
                self.db_ready = false;
                outcome = Outcome::Retry { after: None };
            }
            match d.answer(outcome) {
                Settled::Written(k) => {
                    let mut s = self.shared.stats();
                    s.points_written += k as u64;
                    s.points_pending -= k as u64;
                    s.requests_ok += 1;
                    count_measurements(batch, run, &mut s.points_written_by_measurement);
                    drop(s);
                    self.backoff.succeed();
                    self.recreated = 0;
                    if self.outage && self.shared.spool().is_empty() {
                        self.outage = false;
                        info!("InfluxDB answers again");
                    }
                }
                Settled::Rejected(r) => {
                    let mut s = self.shared.stats();
                    s.points_rejected += r.len() as u64;
                    s.points_pending -= r.len() as u64;
                    drop(s);
                    let line = String::from_utf8_lossy(batch.slice(r.start..r.start + 1));
                    warn!(status = ?ans.status, points = r.len(), error = %ans.message,
                        first_line = %line.trim_end().chars().take(300).collect::<String>(),
                        "InfluxDB refused points for good: dropped");
                }
                Settled::Split => {
                    debug!(status = ?ans.status, lines = run.len(), "splitting a refused batch");
                }
                Settled::Retry { after } => {
                    self.retry_later(&ans, after);
                    break;
                }
            }
        }
        batch.subset(&d.pending())
    }

    /// Counts a failed request by kind (`http_errors` in the report).
    fn count_error(&self, kind: Option<&str>) {
        if let Some(kind) = kind {
            *self
                .shared
                .stats()
                .http_errors
                .entry(kind.to_owned())
                .or_default() += 1;
        }
    }

    /// v1: `CREATE DATABASE`. False when there was no answer (retry later).
    fn create_database(&mut self, timeout: Duration) -> bool {
        let Some(ans) = self.client.create_database(timeout) else {
            self.db_ready = true;
            return true;
        };
        self.count_error(ans.error_kind.as_deref());
        match ans.status {
            Some(200..=299) => debug!("InfluxDB database ready"),
            Some(status) => warn!(status, error = %ans.message,
                "InfluxDB refused CREATE DATABASE; writing anyway (it may exist)"),
            None => {
                self.retry_later(&ans, None);
                return false;
            }
        }
        self.db_ready = true;
        true
    }

    fn retry_later(&mut self, ans: &Answer, after: Option<Duration>) {
        self.shared.stats().retries += 1;
        let wait = self.backoff.fail(after);
        self.next_try = Instant::now() + wait;
        let (status, message) = (ans.status, &ans.message);
        // Refused credentials or a refused TLS handshake: an operator must fix them; points
        // wait in the spool meanwhile.
        let fix = if matches!(status, Some(401 | 403)) {
            Some("InfluxDB refused the credentials: spooling and retrying")
        } else if ans.error_kind.as_deref() == Some("tls") {
            Some("TLS with InfluxDB failed: spooling and retrying")
        } else {
            None
        };
        if let Some(what) = fix.filter(|_| !self.outage || self.backoff.failures() == 1) {
            self.outage = true;
            error!(?status, error = %message, retry_in = ?wait, "{what}");
        } else if !self.outage {
            self.outage = true;
            warn!(?status, error = %message, retry_in = ?wait,
                "InfluxDB write failed: spooling and retrying");
        } else {
            debug!(?status, error = %message, retry_in = ?wait, "InfluxDB write failed again");
        }
    }

    /// Writes what is in memory and in the spool until `deadline`; what is left stays in the
    /// spool, said in a log line.
    fn finish(mut self, deadline: Instant) {
        self.seal(Some(deadline));
        loop {
            let now = Instant::now();
            if self.shared.spool().is_empty() || now >= deadline {
                break;
            }
            if now < self.next_try {
                std::thread::sleep(self.next_try.min(deadline) - now);
                continue;
            }
            self.replay_one(Some(deadline));
        }
        let spool = self.shared.spool();
        if !spool.is_empty() {
            error!(points = spool.points(), files = spool.files(), dir = %spool.dir().display(),
                "InfluxDB writer stopped at its deadline: points left in the spool \
                 (written by the next run that uses this spool directory)");
        }
    }
}

/// Adds the lines of `run` to `counts` by measurement.
fn count_measurements(batch: &Batch, run: Range<usize>, counts: &mut BTreeMap<String, u64>) {
    let mut last: Option<(&[u8], u64)> = None;
    let mut flush = |m: &[u8], n: u64| {
        let name = String::from_utf8_lossy(m);
        match counts.get_mut(name.as_ref()) {
            Some(c) => *c += n,
            None => {
                counts.insert(name.into_owned(), n);
            }
        }
    };
    for i in run {
        let m = measurement_of(batch.slice(i..i + 1));
        match &mut last {
            Some((prev, n)) if *prev == m => *n += 1,
            _ => {
                if let Some((prev, n)) = last.take() {
                    flush(prev, n);
                }
                last = Some((m, 1));
            }
        }
    }
    if let Some((prev, n)) = last {
        flush(prev, n);
    }
}

/// An emptied batch keeps its buffers for the next one.
fn batch_reuse(mut b: Batch) -> Batch {
    b.clear();
    b
}
