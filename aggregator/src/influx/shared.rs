//! What the InfluxDB writer and its thread share: counters, the spool, and how a batch that
//! cannot be written goes to the spool (or is counted as dropped).

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};

use tracing::error;

use super::batch::Batch;
use super::spool::Spool;
use super::InfluxStats;

/// State both sides see: counters and the spool.
pub(crate) struct Shared {
    pub stats: Mutex<InfluxStats>,
    pub spool: Mutex<Spool>,
    /// Points in the channel, not yet taken by the writer thread.
    pub queued: AtomicU64,
}

impl Shared {
    pub fn stats(&self) -> MutexGuard<'_, InfluxStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn spool(&self) -> MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Puts `batch` in the spool; when even the disk refuses it, its points are counted as
/// dropped, loudly. Returns the points stored.
pub(crate) fn spool_or_drop(shared: &Shared, batch: &Batch) -> u64 {
    let mut spool = shared.spool();
    match spool.push(batch) {
        Ok(n) => n,
        Err(e) => {
            error!(error = %e, points = batch.lines(), dir = %spool.dir().display(),
                "cannot write the InfluxDB spool: points dropped");
            spool.dropped_points += batch.lines() as u64;
            0
        }
    }
}
