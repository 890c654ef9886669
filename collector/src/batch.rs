//! Batching: the summaries pending for each link, and handing a full or old batch to its link
//! under the slow-processor policy (`--slow-policy block|drop`), counting what a full queue
//! refuses as `queue_full`. Emptied vectors come back from the links through a pool, so steady
//! state allocates nothing.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tapflow_proto::PacketSummary;
use tapflow_runtime::ratelimit::RateLimit;
use tracing::warn;

use crate::config::SlowPolicy;
use crate::link::{Link, LinkCmd};
use crate::RUN_TARGET;

/// What a batch handed over is stamped with, and where it goes.
pub struct Flush<'a> {
    /// One link per pending batch, by index.
    pub links: &'a [Link],
    /// Largest packet time read so far.
    pub watermark_ns: u64,
    /// The processor-set epoch the batch was routed by.
    pub epoch: u32,
}

pub struct Batcher {
    /// Summaries waiting, per link.
    pending: Vec<Vec<PacketSummary>>,
    /// Emptied batch vectors coming back from the links.
    pool: Receiver<Vec<PacketSummary>>,
    /// Summaries handed to each link.
    sent: Vec<u64>,
    /// Summaries dropped because a link's queue was full.
    queue_full: u64,
    policy: SlowPolicy,
    batch_size: usize,
    batch_age: Duration,
    /// When the oldest summary still pending was added (`None`: nothing pending since the
    /// last flush of every link).
    oldest_pending: Option<Instant>,
    /// The WARN about a batch dropped, per link: a slow processor makes one per batch, so it
    /// is rate-limited (`queue_full` counts every summary).
    drop_log: RateLimit<usize>,
}

impl Batcher {
    /// Batches for `links` links of `batch_size` summaries, flushed when full or `batch_age`
    /// old; vectors recycled through `pool`.
    pub fn new(
        links: usize,
        batch_size: usize,
        batch_age: Duration,
        policy: SlowPolicy,
        pool: Receiver<Vec<PacketSummary>>,
    ) -> Batcher {
        Batcher {
            pending: (0..links).map(|_| Vec::with_capacity(batch_size)).collect(),
            pool,
            sent: vec![0; links],
            queue_full: 0,
            policy,
            batch_size,
            batch_age,
            oldest_pending: None,
            drop_log: RateLimit::default(),
        }
    }

    /// Adds `s` to link `i`'s batch, handing the batch over once full.
    #[inline]
    pub fn push(&mut self, i: usize, s: PacketSummary, flush: &Flush<'_>) {
        self.pending[i].push(s);
        if self.pending[i].len() >= self.batch_size {
            self.flush_one(i, flush);
        }
    }

    /// Notes that a packet was read (the age of what is pending starts with the first).
    #[inline]
    pub fn mark_read(&mut self) {
        if self.oldest_pending.is_none() {
            self.oldest_pending = Some(Instant::now());
        }
    }

    /// Whether what is pending is older than the batch age.
    pub fn is_due(&self) -> bool {
        self.oldest_pending
            .is_some_and(|t| t.elapsed() >= self.batch_age)
    }

    /// Hands every non-empty batch to its link.
    pub fn flush_all(&mut self, flush: &Flush<'_>) {
        for i in 0..self.pending.len() {
            if !self.pending[i].is_empty() {
                self.flush_one(i, flush);
            }
        }
        self.oldest_pending = None;
    }

    /// A link was added (a new member of the processor set).
    pub fn add_link(&mut self) {
        self.pending.push(Vec::with_capacity(self.batch_size));
        self.sent.push(0);
    }

    /// Summaries handed to each link, by link index.
    pub fn sent(&self) -> &[u64] {
        &self.sent
    }

    /// Summaries dropped as `queue_full`.
    pub fn queue_full(&self) -> u64 {
        self.queue_full
    }

    /// The summary at exit of the batch drops not logged (rate limit), per link.
    pub fn log_suppressed(&mut self, links: &[Link]) {
        for s in self.drop_log.take_suppressed() {
            let endpoint = links.get(s.kind).map_or("?", |l| l.endpoint.as_str());
            warn!(target: RUN_TARGET, %endpoint, suppressed = s.suppressed, batches = s.total,
                "processor queue full: batches dropped and not logged (rate limit), summary at exit");
        }
    }

    /// Hands link `i`'s pending batch over, replacing it with a recycled vector.
    fn flush_one(&mut self, i: usize, flush: &Flush<'_>) {
        let fresh = self
            .pool
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.batch_size));
        let summaries = std::mem::replace(&mut self.pending[i], fresh);
        let n = summaries.len() as u64;
        let cmd = LinkCmd::Batch {
            summaries,
            watermark_ns: flush.watermark_ns,
            epoch: flush.epoch,
        };
        let link = &flush.links[i];
        let (queued, why) = match self.policy {
            SlowPolicy::Block => (
                link.send_blocking(cmd),
                "shutdown while the processor's queue was full: batch dropped",
            ),
            SlowPolicy::Drop => (link.try_send(cmd), "processor queue full: batch dropped"),
        };
        match queued {
            Ok(()) => self.sent[i] += n,
            Err(_) => {
                self.queue_full += n;
                if let Some(l) = self.drop_log.hit(i, Instant::now()) {
                    warn!(target: RUN_TARGET, endpoint = %link.endpoint, summaries = n, suppressed = l.suppressed, batches = l.total, "{why}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
