//! The capture thread's path for one packet: decode, route, batch; and what it does between
//! packets (the batch age, epoch switches, SIGHUP reloads, publishing counters for heartbeats
//! and metrics) and at the end (end-of-stream on every link).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use tapflow_proto::summary::flag;
use tapflow_proto::{CaptureStats, CollectorCounters, DropReason, EosStatus, PacketSummary};
use tracing::{error, info, warn};

use crate::batch::{Batcher, Flush};
use crate::config::Config;
use crate::decode::{Decoder, LinkType};
use crate::epochs::{Reload, ReloadError};
use crate::link::{LinkCmd, LinkSet, Shared};
use crate::route::Router;
use crate::source::{Record, Source};
use crate::RUN_TARGET;
use tapflow_runtime::control::ControlSub;

/// How long a processor leaving the set has to take its end-of-stream into the link's queue.
const RETIRE_WAIT: Duration = Duration::from_secs(5);

pub struct Pipeline {
    decoder: Decoder,
    /// The decoder's output for one packet (reused).
    out: Vec<PacketSummary>,
    router: Router,
    batcher: Batcher,
    links: LinkSet,
    /// What link threads and the metrics endpoint read.
    shared: Arc<Shared>,
    /// Largest packet time read so far.
    max_ts: u64,
    /// The source's capture statistics as last read.
    capture_stats: CaptureStats,
    offload: Offload,
    /// Set by SIGHUP.
    reload: Arc<AtomicBool>,
    /// The aggregator's announced processor set (`--control`).
    control: Option<ControlSub>,
}

impl Pipeline {
    /// The pipeline over `links` (started for `router`'s link ids), batch vectors recycled
    /// through `pool`; `reload` is SIGHUP's flag.
    pub fn new(
        config: &Config,
        router: Router,
        links: LinkSet,
        pool: Receiver<Vec<PacketSummary>>,
        reload: Arc<AtomicBool>,
    ) -> Pipeline {
        let batcher = Batcher::new(
            links.links().len(),
            config.batch_size,
            config.batch_age,
            config.slow_policy,
            pool,
        );
        let control = config.control.as_ref().and_then(|c| {
            ControlSub::connect(links.context(), &c.endpoint, &c.security)
                .map_err(|e| error!(target: RUN_TARGET, endpoint = %c.endpoint, error = %e, "cannot subscribe to the aggregator's control channel: processor-set changes it decides will not reach this collector"))
                .ok()
        });
        Pipeline {
            control,
            decoder: Decoder::new(config.decode),
            out: Vec::with_capacity(8),
            shared: links.shared().clone(),
            router,
            batcher,
            links,
            max_ts: 0,
            capture_stats: CaptureStats::default(),
            offload: Offload::default(),
            reload,
        }
    }

    /// One packet: switches epoch first if its time has come, then decodes it and batches
    /// each summary for its link.
    #[inline]
    pub fn on_packet(&mut self, link: LinkType, rec: &Record<'_>) {
        if self.router.is_switch_due(rec.ts_ns) {
            self.switch_epoch(rec.ts_ns);
        }
        self.max_ts = self.max_ts.max(rec.ts_ns);
        self.decoder
            .decode(link, rec.ts_ns, rec.data, rec.wire_len, &mut self.out);
        let flush = Flush {
            links: self.links.links(),
            watermark_ns: self.max_ts,
            epoch: self.router.epoch(),
        };
        for s in self.out.drain(..) {
            self.offload.note(&s);
            self.batcher.push(self.router.link_of(&s.key), s, &flush);
        }
        self.batcher.mark_read();
    }

    /// Packets read so far.
    pub fn packets(&self) -> u64 {
        self.decoder.counters().packets
    }

    /// Flushes what is pending once it is older than the batch age.
    pub fn flush_if_due(&mut self) {
        if self.batcher.is_due() {
            self.flush_all();
        }
    }

    /// The periodic chores: a SIGHUP reload, the offload warning, a live source's statistics,
    /// and the counters heartbeats and metrics read.
    pub fn periodic(&mut self, source: &mut Source) {
        if self.reload.swap(false, Ordering::Relaxed) {
            self.reload_set();
        }
        if let Some(announced) = self.control.as_mut().and_then(ControlSub::poll) {
            info!(target: RUN_TARGET, seq = announced.seq, changes = announced.changes.len(), "processor set announced by the aggregator");
            let result = self.router.apply_announced(&announced, self.max_ts);
            self.extend_set(result, "processor set announced by the aggregator");
        }
        self.warn_offload();
        if source.is_live() {
            self.update_capture_stats(source);
        }
        self.publish();
    }

    /// Reads the source's capture statistics (kept as they were when it has none).
    pub fn update_capture_stats(&mut self, source: &mut Source) {
        if let Some(s) = source.stats() {
            self.capture_stats = s;
        }
    }

    /// Hands every pending batch to its link.
    pub fn flush_all(&mut self) {
        let flush = Flush {
            links: self.links.links(),
            watermark_ns: self.max_ts,
            epoch: self.router.epoch(),
        };
        self.batcher.flush_all(&flush);
        // Only now that every summary read so far is queued may heartbeats claim its time: a
        // link that finds its queue empty after reading this has sent all of them.
        self.shared
            .watermark_ns
            .fetch_max(self.max_ts, Ordering::Release);
    }

    /// Makes the current counters what heartbeats and metrics report.
    pub fn publish(&self) {
        let c = self.counters();
        match self.shared.counters.lock() {
            Ok(mut g) => *g = c,
            Err(poisoned) => *poisoned.into_inner() = c,
        }
    }

    /// Flushes everything, sends end-of-stream with `status` on every link and waits until the
    /// links have handed it to ZeroMQ; returns the final counters, and the links to
    /// [`Closing::confirm`] the delivery on.
    pub fn finish(mut self, status: EosStatus) -> (CollectorCounters, Closing) {
        let control_malformed = self.control.take().map_or(0, |c| c.malformed);
        self.decoder.finish();
        self.warn_offload();
        self.flush_all();
        self.batcher.log_suppressed(self.links.links());
        let counters = self.counters();
        self.publish();
        let r = counters.reconcile();
        if !r.holds() {
            error!(target: RUN_TARGET, ?r, "collector counters do not reconcile");
        }
        for (i, link) in self.links.links().iter().enumerate() {
            if self.router.is_retired(i) {
                continue;
            }
            let eos = LinkCmd::Eos {
                status: status.clone(),
                counters: Box::new(counters.clone()),
            };
            if link.send_blocking(eos).is_err() {
                error!(target: RUN_TARGET, endpoint = %link.endpoint, "processor unreachable: end-of-stream not delivered");
            }
        }
        self.links.close();
        let late_switches = self.router.late_switches();
        if late_switches + control_malformed > 0 {
            info!(target: RUN_TARGET, late_switches, control_malformed, "processor set: switches applied after their instant, and undecodable control messages");
        }
        let retired = (0..self.links.links().len())
            .map(|i| self.router.is_retired(i))
            .collect();
        let closing = Closing {
            links: self.links,
            retired,
        };
        (counters, closing)
    }

    /// The capture reached the next epoch's switch time: every batch of the current epoch goes
    /// out first (a batch never mixes epochs), then routing follows the new table, and members
    /// that left for good get end-of-stream.
    fn switch_epoch(&mut self, ts_ns: u64) {
        self.flush_all();
        let gone = self.router.switch(ts_ns);
        if gone.is_empty() {
            return;
        }
        let counters = self.counters();
        for i in gone {
            let (link, sent) = (&self.links.links()[i], self.batcher.sent()[i]);
            if self.router.is_declared_dead(i) {
                link.abandon(RETIRE_WAIT);
                warn!(target: RUN_TARGET, endpoint = %link.endpoint, sent, "processor declared dead by the aggregator left the set: link given up without end-of-stream, what its queue held is lost");
                continue;
            }
            let eos = LinkCmd::Eos {
                status: EosStatus::Complete,
                counters: Box::new(counters.clone()),
            };
            // A processor removed by plan drains its queue within this; one removed because it
            // crashed takes nothing, and must not stall the capture.
            if link.retire(eos, RETIRE_WAIT) {
                info!(target: RUN_TARGET, endpoint = %link.endpoint, sent, "processor left the set: end-of-stream sent on its link");
            } else {
                warn!(target: RUN_TARGET, endpoint = %link.endpoint, sent, wait_s = RETIRE_WAIT.as_secs(), "processor left the set and took nothing for the wait (crashed?): link given up, what its queue held is lost");
            }
        }
    }

    /// SIGHUP: re-reads the processor set; starts links for new members; switches at once if
    /// the capture is already past an announced instant.
    fn reload_set(&mut self) {
        let result = self.router.reload(self.max_ts);
        self.extend_set(result, "SIGHUP");
    }

    /// A reload's or an announcement's outcome (`what` says which): new members get links,
    /// and a switch already behind the capture happens now. The same path for both, so an
    /// announced change switches exactly as a reloaded one.
    fn extend_set(&mut self, result: Option<Result<Reload, ReloadError>>, what: &str) {
        let new_ids = match result {
            None => {
                info!(target: RUN_TARGET, "{what} ignored: no processor set (--processor-set) to change");
                return;
            }
            Some(Ok(Reload::Unchanged)) => {
                info!(target: RUN_TARGET, "{what}: processor set unchanged");
                return;
            }
            Some(Ok(Reload::Extended { new_ids })) => new_ids,
            Some(Err(e)) => {
                error!(target: RUN_TARGET, "{what}: {e}");
                return;
            }
        };
        for id in new_ids {
            let Some(endpoint) = self.router.endpoint(id).map(str::to_owned) else {
                continue;
            };
            let ids = self.router.link_ids();
            let first_seq = (ids.iter().zip(self.batcher.sent()))
                .filter(|(&link_id, _)| link_id == id)
                .map(|(_, &sent)| sent)
                .sum();
            match self
                .links
                .add(&endpoint, id, self.router.epoch(), first_seq)
            {
                Ok(()) => {
                    info!(target: RUN_TARGET, id, %endpoint, "processor set: link to a new member");
                    self.batcher.add_link();
                    self.router.add_link(id);
                }
                Err(e) => {
                    error!(target: RUN_TARGET, id, error = %e, "processor set: cannot link to a new member")
                }
            }
        }
        if self.router.refresh_switch(self.max_ts) {
            self.switch_epoch(self.max_ts);
        }
    }

    /// Like Zeek's checksum-offloading notice: when most transport checksums are wrong, the
    /// capture point (a NIC with checksum offload, loopback) is the likely cause, and every
    /// such packet is left out of session counts until `--ignore-checksums` is given.
    fn warn_offload(&mut self) {
        let summaries = self.decoder.counters().summaries;
        let o = &mut self.offload;
        if !o.warned && summaries >= 100 && o.bad_checksums * 20 > summaries {
            o.warned = true;
            warn!(target: RUN_TARGET,
                bad = o.bad_checksums,
                summaries,
                "more than 5% of packets have bad TCP/UDP/ICMP checksums: likely checksum offloading at the capture point; sessions will not count them unless --ignore-checksums is given"
            );
        }
    }

    fn counters(&self) -> CollectorCounters {
        let d = self.decoder.counters();
        let mut drops = d.drops;
        drops.add(DropReason::QueueFull, self.batcher.queue_full());
        CollectorCounters {
            packets_read: d.packets,
            packets_summarised: d.packets_summarised,
            fragments_merged: d.fragments_merged,
            summaries: d.summaries,
            summaries_sent: self.router.sent_by_claim(self.batcher.sent()),
            drops: drops.to_map(),
            capture: self.capture_stats,
            evidence: *self.decoder.evidence(),
        }
    }
}

/// The links after end-of-stream, their sockets closed and draining.
pub struct Closing {
    links: LinkSet,
    /// Links retired mid-run: their end is logged at the switch, not judged again.
    retired: Vec<bool>,
}

impl Closing {
    /// Waits (at most the linger) for each link still in the set to learn whether its
    /// end-of-stream reached its processor; logs an ERROR for each that did not and returns
    /// their endpoints.
    pub fn confirm(self) -> Vec<String> {
        self.links.confirm(&self.retired)
    }
}

/// Summaries with a bad transport checksum, for [`Pipeline::warn_offload`] (warned once).
#[derive(Default)]
struct Offload {
    bad_checksums: u64,
    warned: bool,
}

impl Offload {
    #[inline]
    fn note(&mut self, s: &PacketSummary) {
        self.bad_checksums += u64::from(s.flags & flag::BAD_CHECKSUM != 0);
    }
}
