//! The capture loop: source -> decoder -> per-shard batches -> links, and the end-of-stream
//! that every exit path sends.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;
use tapflow_proto::account::DropCounts;
use tapflow_proto::{shard, CollectorCounters, DropReason, EosStatus, PacketSummary};
use tracing::{error, info, warn};

use crate::config::{Config, SlowPolicy, SourceSpec};
use crate::decode::Decoder;
use crate::epochs::{Reload, SetRouting};
use crate::link::{Link, LinkCmd, LinkError, LinkSettings, Shared};
use crate::progress::Progress;
use crate::source::{Next, Source, SourceError};

/// How long a processor leaving the set has to take its end-of-stream into the link's queue.
const RETIRE_WAIT: Duration = Duration::from_secs(5);

/// How a run ended, for the exit code.
#[derive(Debug)]
pub enum RunOutcome {
    /// End of file, or stopped by a signal; everything flushed.
    Done { interrupted: bool },
    /// The capture could not be opened (exit 3).
    OpenFailed(SourceError),
    /// The capture file is damaged (exit 4); everything before the damage was passed on.
    Damaged(SourceError),
    /// Live capture failed while running (exit 1).
    Failed(SourceError),
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
}

/// Runs the collector until the source ends, fails, or `shutdown` is set; sends end-of-stream
/// with a status on every link in every case, and returns the final counters.
pub fn run(
    config: &Config,
    shutdown: Arc<AtomicBool>,
) -> Result<(RunOutcome, CollectorCounters), RunError> {
    let shard_count = u16::try_from(config.processors.len()).unwrap_or(u16::MAX);
    // The capture first, so that its privileges are gone before any thread that handles input
    // or the network starts (threads inherit their creator's capabilities): see `privileges`.
    let opened = Source::open(&config.source, config.filter.as_deref());
    let reopen = match &config.source {
        SourceSpec::Live(l) => l.retry_for != Some(Duration::ZERO),
        SourceSpec::File(_) => false,
    };
    match crate::privileges::drop_after_open(reopen) {
        Ok(kept) if kept.is_empty() => info!("capabilities dropped: none kept"),
        Ok(kept) => info!(
            permitted = kept.join(","),
            "capabilities dropped: none effective, these kept to reopen the interface"
        ),
        Err(e) => warn!(error = %e, "could not drop capabilities"),
    }
    let shared = Arc::new(Shared {
        watermark_ns: Default::default(),
        counters: Mutex::new(CollectorCounters::default()),
        live: matches!(config.source, SourceSpec::Live(_)),
        shutdown: shutdown.clone(),
        messages_sent: AtomicU64::new(0),
        bytes_sent: AtomicU64::new(0),
    });
    if let Some(addr) = &config.metrics_listen {
        let shared = shared.clone();
        let render = std::sync::Arc::new(move || {
            let c = match shared.counters.lock() {
                Ok(g) => g.clone(),
                Err(p) => p.into_inner().clone(),
            };
            let wire = (
                shared.messages_sent.load(Ordering::Relaxed),
                shared.bytes_sent.load(Ordering::Relaxed),
            );
            render_metrics(&c, wire)
        });
        tapflow_runtime::serve_metrics(addr, render).map_err(|source| RunError::Metrics {
            addr: addr.clone(),
            source,
        })?;
    }
    // With a processor set, links are per member id and claim no shard count (0): the slot
    // table of each batch's epoch says who owns what.
    let set_ids: Option<Vec<u16>> = config
        .processor_set
        .as_ref()
        .map(|(_, set)| set.all_members());
    let settings = LinkSettings {
        sender: config.name.clone(),
        incarnation: incarnation(),
        epoch: if set_ids.is_some() { 1 } else { config.epoch },
        shard_count: if set_ids.is_some() { 0 } else { shard_count },
        heartbeat: config.heartbeat,
        linger: config.linger,
        batch_bytes: config.batch_bytes,
        security: config.security.clone(),
    };
    let ctx = zmq::Context::new();
    let (pool_tx, pool_rx) = crossbeam_channel::unbounded();
    let mut links = Vec::with_capacity(config.processors.len());
    for (i, endpoint) in config.processors.iter().enumerate() {
        let shard = match &set_ids {
            Some(ids) => ids[i],
            None => u16::try_from(i).unwrap_or(u16::MAX),
        };
        links.push(Link::start(
            &ctx,
            endpoint,
            shard,
            &settings,
            config.queue_batches,
            shared.clone(),
            pool_tx.clone(),
        )?);
    }
    let security = if config.security.is_plain() {
        "plain"
    } else {
        "curve"
    };
    info!(name = %settings.sender, incarnation = settings.incarnation, processors = shard_count, links = security, "collector started");

    let mut pipeline = Pipeline::new(config, links, shared.clone(), pool_rx);
    if let (Some((path, set)), Some(ids)) = (&config.processor_set, set_ids) {
        pipeline.routing = Some(SetRouting::new(path.clone(), set.clone(), ids));
        pipeline.next_switch_ns = pipeline
            .routing
            .as_ref()
            .map_or(u64::MAX, |r| r.next_switch_ns());
        pipeline.spawner = Some(Spawner {
            ctx: ctx.clone(),
            settings: settings.clone(),
            queue_batches: config.queue_batches,
            pool: pool_tx.clone(),
        });
    }
    // SIGHUP re-reads the processor set (and is ignored without one, instead of ending the
    // process as its default action would).
    let reload = match tapflow_runtime::reopen_flag() {
        Ok(flag) => flag,
        Err(e) => {
            warn!(error = %e, "cannot install the SIGHUP handler; the processor set cannot be reloaded");
            Arc::new(AtomicBool::new(false))
        }
    };
    pipeline.reload = reload;
    let outcome = match opened {
        Err(e) => RunOutcome::OpenFailed(e),
        Ok(mut source) => {
            info!(
                source = source.describe(),
                link = source.link().name(),
                "capture open"
            );
            loop {
                let outcome = pipeline.capture(&mut source, &shutdown);
                pipeline.update_capture_stats(&mut source);
                let retry_for = match (&outcome, &config.source) {
                    (RunOutcome::Failed(_), SourceSpec::Live(l)) => l.retry_for,
                    _ => break outcome,
                };
                if retry_for == Some(Duration::ZERO) {
                    break outcome;
                }
                if let RunOutcome::Failed(e) = &outcome {
                    error!(
                        "{e}; reopening it {}",
                        retry_for.map_or("until stopped".to_owned(), |d| format!(
                            "for up to {} s (--interface-retry-s)",
                            d.as_secs()
                        ))
                    );
                }
                match pipeline.reopen(config, retry_for, &shutdown) {
                    Reopen::Open(s) => source = s,
                    Reopen::Stopped => break RunOutcome::Done { interrupted: true },
                    Reopen::GaveUp(e) => break RunOutcome::Failed(e),
                }
            }
        }
    };
    let status = match &outcome {
        RunOutcome::Done { interrupted: false } => EosStatus::Complete,
        RunOutcome::Done { interrupted: true } => EosStatus::Interrupted,
        RunOutcome::OpenFailed(e) => EosStatus::OpenFailed(e.to_string()),
        RunOutcome::Damaged(e) => EosStatus::Damaged(e.to_string()),
        RunOutcome::Failed(e) => EosStatus::Failed(e.to_string()),
    };
    let counters = pipeline.finish(status);
    let bytes = shared.bytes_sent.load(Ordering::Relaxed);
    info!(
        messages = shared.messages_sent.load(Ordering::Relaxed),
        bytes,
        bytes_per_summary = format!("{:.1}", bytes as f64 / counters.summaries.max(1) as f64),
        "sent to processors"
    );
    Ok((outcome, counters))
}

/// How [`Pipeline::reopen`] ended.
enum Reopen {
    Open(Source),
    Stopped,
    GaveUp(SourceError),
}

/// The collector's counters in Prometheus text format.
fn render_metrics(c: &CollectorCounters, (messages, bytes): (u64, u64)) -> String {
    let mut named: Vec<(String, u64)> = vec![
        ("packets_read".into(), c.packets_read),
        ("packets_summarised".into(), c.packets_summarised),
        ("fragments_merged".into(), c.fragments_merged),
        ("summaries".into(), c.summaries),
        ("pcap_received_packets".into(), c.capture.received),
        ("kernel_dropped_packets".into(), c.capture.kernel_dropped),
        ("interface_dropped_packets".into(), c.capture.if_dropped),
        ("messages_sent".into(), messages),
        ("wire_bytes_sent".into(), bytes),
    ];
    named.extend(
        c.summaries_sent
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("summaries_sent{{shard=\"{i}\"}}"), *n)),
    );
    named.extend(
        c.drops
            .iter()
            .map(|(r, n)| (format!("drops{{reason=\"{r}\"}}"), *n)),
    );
    let mut out = String::new();
    tapflow_runtime::prometheus_counters(
        "collector",
        named.iter().map(|(k, v)| (k.as_str(), *v)),
        &mut out,
    );
    out
}

/// A restart gets a new incarnation, so its sequence numbers are not read as a gap.
fn incarnation() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    now ^ (u64::from(std::process::id()) << 40)
}

struct Pipeline {
    decoder: Decoder,
    links: Vec<Link>,
    shared: Arc<Shared>,
    pool: Receiver<Vec<PacketSummary>>,
    pending: Vec<Vec<PacketSummary>>,
    out: Vec<PacketSummary>,
    sent: Vec<u64>,
    queue_drops: DropCounts,
    capture_stats: tapflow_proto::CaptureStats,
    /// libpcap's counters of the handles closed before the current one (after a reopen).
    capture_base: tapflow_proto::CaptureStats,
    batch_size: usize,
    batch_age: std::time::Duration,
    oldest_pending: Option<Instant>,
    policy: SlowPolicy,
    max_ts: u64,
    bad_checksums: u64,
    warned_offload: bool,
    /// Routing by processor set (`None`: fixed shards, `shard(key, n)`).
    routing: Option<SetRouting>,
    /// `routing`'s next switch time, `u64::MAX` when none (checked per packet).
    next_switch_ns: u64,
    /// The epoch batches are tagged with.
    epoch: u32,
    /// What new links need (with a processor set).
    spawner: Option<Spawner>,
    /// Set by SIGHUP.
    reload: Arc<AtomicBool>,
}

/// What starting a link for a member added by a reload needs.
struct Spawner {
    ctx: zmq::Context,
    settings: LinkSettings,
    queue_batches: usize,
    pool: crossbeam_channel::Sender<Vec<PacketSummary>>,
}

impl Pipeline {
    fn new(
        config: &Config,
        links: Vec<Link>,
        shared: Arc<Shared>,
        pool: Receiver<Vec<PacketSummary>>,
    ) -> Pipeline {
        let n = links.len();
        Pipeline {
            decoder: Decoder::new(config.decode),
            pending: (0..n)
                .map(|_| Vec::with_capacity(config.batch_size))
                .collect(),
            sent: vec![0; n],
            links,
            shared,
            pool,
            out: Vec::with_capacity(8),
            queue_drops: DropCounts::default(),
            capture_stats: Default::default(),
            capture_base: Default::default(),
            batch_size: config.batch_size,
            batch_age: config.batch_age,
            oldest_pending: None,
            policy: config.slow_policy,
            max_ts: 0,
            bad_checksums: 0,
            warned_offload: false,
            routing: None,
            next_switch_ns: u64::MAX,
            epoch: config.epoch,
            spawner: None,
            reload: Arc::new(AtomicBool::new(false)),
        }
    }

    fn capture(&mut self, source: &mut Source, shutdown: &AtomicBool) -> RunOutcome {
        let link = source.link();
        let live = source.is_live();
        let shard_count = u16::try_from(self.links.len()).unwrap_or(u16::MAX);
        let mut progress = match std::fs::metadata(source.describe()) {
            Ok(m) if !live && std::io::stderr().is_terminal() => Some(Progress::new(m.len())),
            _ => None,
        };
        let mut last_publish = Instant::now();
        let mut tick: u32 = 0;
        loop {
            if shutdown.load(Ordering::Relaxed) {
                return RunOutcome::Done { interrupted: true };
            }
            match source.next_record() {
                Ok(Next::Packet(rec)) => {
                    if rec.ts_ns >= self.next_switch_ns {
                        self.switch_epoch(rec.ts_ns);
                    }
                    self.max_ts = self.max_ts.max(rec.ts_ns);
                    self.decoder
                        .decode(link, rec.ts_ns, rec.data, rec.wire_len, &mut self.out);
                    if let Some(p) = progress.as_mut() {
                        p.record(rec.data.len());
                    }
                    for s in self.out.drain(..) {
                        self.bad_checksums +=
                            u64::from(s.flags & tapflow_proto::summary::flag::BAD_CHECKSUM != 0);
                        let i = match &self.routing {
                            Some(r) => r.link_of(&s.key),
                            None => usize::from(shard(&s.key, shard_count)),
                        };
                        self.pending[i].push(s);
                        if self.pending[i].len() >= self.batch_size {
                            flush_one(
                                i,
                                &mut self.pending,
                                &self.links,
                                &self.pool,
                                &mut self.sent,
                                &mut self.queue_drops,
                                self.policy,
                                self.max_ts,
                                self.batch_size,
                                self.epoch,
                            );
                        }
                    }
                    if self.oldest_pending.is_none() {
                        self.oldest_pending = Some(Instant::now());
                    }
                    tick = tick.wrapping_add(1);
                    if !tick.is_multiple_of(4096) {
                        continue;
                    }
                }
                Ok(Next::Idle) => {}
                Ok(Next::End) => return RunOutcome::Done { interrupted: false },
                Err(e @ SourceError::Damaged { .. }) => return RunOutcome::Damaged(e),
                Err(e) => return RunOutcome::Failed(e),
            }
            // Housekeeping, every 4096 packets or on a live read timeout.
            if self
                .oldest_pending
                .is_some_and(|t| t.elapsed() >= self.batch_age)
            {
                self.flush_all();
            }
            if last_publish.elapsed() >= std::time::Duration::from_millis(250) {
                last_publish = Instant::now();
                if self.reload.swap(false, Ordering::Relaxed) {
                    self.reload_set();
                }
                self.warn_offload();
                if live {
                    self.update_capture_stats(source);
                }
                self.publish();
                if let Some(p) = progress.as_mut() {
                    p.draw(self.decoder.counters().packets);
                }
            }
        }
    }

    /// The capture's counters: the closed handles' plus the current one's (when libpcap can
    /// still tell; an interface that disappeared keeps its last known values).
    fn update_capture_stats(&mut self, source: &mut Source) {
        if let Some(s) = source.stats() {
            let b = self.capture_base;
            self.capture_stats = tapflow_proto::CaptureStats {
                received: b.received + s.received,
                kernel_dropped: b.kernel_dropped + s.kernel_dropped,
                if_dropped: b.if_dropped + s.if_dropped,
            };
        }
    }

    /// After a live capture failed: flushes what is pending, then tries to open the interface
    /// again with backoff (1 s doubling to 30 s) until it opens, a signal arrives or `retry_for`
    /// has passed. Heartbeats go on meanwhile (link threads; the watermark follows the clock),
    /// so processors do not declare this collector dead while it waits.
    fn reopen(
        &mut self,
        config: &Config,
        retry_for: Option<Duration>,
        shutdown: &AtomicBool,
    ) -> Reopen {
        self.flush_all();
        self.capture_base = self.capture_stats;
        let started = Instant::now();
        let mut wait = Duration::from_secs(1);
        let mut attempts = 0u32;
        loop {
            let next = Instant::now() + wait;
            while Instant::now() < next {
                if shutdown.load(Ordering::Relaxed) {
                    return Reopen::Stopped;
                }
                self.publish();
                std::thread::sleep(Duration::from_millis(100));
            }
            attempts += 1;
            crate::privileges::raise_for_open();
            let opened = Source::open(&config.source, config.filter.as_deref());
            crate::privileges::lower();
            match opened {
                Ok(s) => {
                    info!(
                        source = s.describe(),
                        attempts,
                        after_s = started.elapsed().as_secs(),
                        "capture reopened"
                    );
                    return Reopen::Open(s);
                }
                Err(e) => {
                    if retry_for.is_some_and(|d| started.elapsed() >= d) {
                        return Reopen::GaveUp(SourceError::Live {
                            what: match &config.source {
                                SourceSpec::Live(l) => l.interface.clone(),
                                SourceSpec::File(p) => p.display().to_string(),
                            },
                            msg: format!(
                                "gave up reopening after {} s and {attempts} attempts: {e}",
                                started.elapsed().as_secs()
                            ),
                        });
                    }
                    wait = (wait * 2).min(Duration::from_secs(30));
                    warn!(attempts, error = %e, retry_in_s = wait.as_secs(), "capture still cannot be opened");
                }
            }
        }
    }

    /// The capture reached the next epoch's switch time: every batch of the current epoch goes
    /// out first (a batch never mixes epochs), then routing follows the new table, and members
    /// that left for good get end-of-stream.
    fn switch_epoch(&mut self, ts_ns: u64) {
        self.flush_all();
        let Some(r) = self.routing.as_mut() else {
            return;
        };
        let gone = r.advance(ts_ns);
        self.epoch = r.epoch();
        self.next_switch_ns = r.next_switch_ns();
        if gone.is_empty() {
            return;
        }
        let counters = self.counters();
        for i in gone {
            let link = &self.links[i];
            let eos = LinkCmd::Eos {
                status: EosStatus::Complete,
                counters: Box::new(counters.clone()),
            };
            // A processor removed by plan drains its queue within this; one removed because it
            // crashed takes nothing, and must not stall the capture.
            if link.retire(eos, RETIRE_WAIT) {
                info!(endpoint = %link.endpoint, sent = self.sent[i], "processor left the set: end-of-stream sent on its link");
            } else {
                warn!(endpoint = %link.endpoint, sent = self.sent[i], wait_s = RETIRE_WAIT.as_secs(), "processor left the set and took nothing for the wait (crashed?): link given up, what its queue held is lost");
            }
        }
    }

    /// SIGHUP: re-reads the processor set; starts links for new members; switches at once if
    /// the capture is already past an announced instant.
    fn reload_set(&mut self) {
        let (Some(r), Some(sp)) = (self.routing.as_mut(), self.spawner.as_ref()) else {
            info!("SIGHUP ignored: no processor set (--processor-set) to reload");
            return;
        };
        let new_ids = match r.reload(self.max_ts) {
            Ok(Reload::Unchanged) => {
                info!("SIGHUP: processor set unchanged");
                return;
            }
            Ok(Reload::Extended { new_ids }) => new_ids,
            Err(e) => {
                error!("SIGHUP: {e}");
                return;
            }
        };
        for id in new_ids {
            let Some(endpoint) = r.endpoint(id).map(str::to_owned) else {
                continue;
            };
            let mut settings = sp.settings.clone();
            settings.epoch = self.epoch;
            match Link::start(
                &sp.ctx,
                &endpoint,
                id,
                &settings,
                sp.queue_batches,
                self.shared.clone(),
                sp.pool.clone(),
            ) {
                Ok(link) => {
                    info!(id, %endpoint, "processor set: link to a new member");
                    self.links.push(link);
                    self.pending.push(Vec::with_capacity(self.batch_size));
                    self.sent.push(0);
                    r.add_link(id);
                }
                Err(e) => error!(id, error = %e, "processor set: cannot link to a new member"),
            }
        }
        self.next_switch_ns = r.next_switch_ns();
        if self.next_switch_ns <= self.max_ts {
            self.switch_epoch(self.max_ts);
        }
    }

    fn flush_all(&mut self) {
        for i in 0..self.pending.len() {
            if !self.pending[i].is_empty() {
                flush_one(
                    i,
                    &mut self.pending,
                    &self.links,
                    &self.pool,
                    &mut self.sent,
                    &mut self.queue_drops,
                    self.policy,
                    self.max_ts,
                    self.batch_size,
                    self.epoch,
                );
            }
        }
        self.oldest_pending = None;
        // Only now that every summary read so far is queued may heartbeats claim its time: a
        // link that finds its queue empty after reading this has sent all of them.
        self.shared
            .watermark_ns
            .fetch_max(self.max_ts, Ordering::Release);
    }

    /// Like Zeek's checksum-offloading notice: when most transport checksums are wrong, the
    /// capture point (a NIC with checksum offload, loopback) is the likely cause, and every
    /// such packet is left out of session counts until `--ignore-checksums` is given.
    fn warn_offload(&mut self) {
        let summaries = self.decoder.counters().summaries;
        if !self.warned_offload && summaries >= 100 && self.bad_checksums * 20 > summaries {
            self.warned_offload = true;
            warn!(
                bad = self.bad_checksums,
                summaries,
                "more than 5% of packets have bad TCP/UDP/ICMP checksums: likely checksum offloading at the capture point; sessions will not count them unless --ignore-checksums is given"
            );
        }
    }

    fn counters(&self) -> CollectorCounters {
        let d = self.decoder.counters();
        let mut drops = d.drops;
        drops.add(
            DropReason::QueueFull,
            self.queue_drops.get(DropReason::QueueFull),
        );
        CollectorCounters {
            packets_read: d.packets,
            packets_summarised: d.packets_summarised,
            fragments_merged: d.fragments_merged,
            summaries: d.summaries,
            summaries_sent: match &self.routing {
                Some(r) => r.by_id(&self.sent),
                None => self.sent.clone(),
            },
            drops: drops.to_map(),
            capture: self.capture_stats,
        }
    }

    fn publish(&self) {
        let c = self.counters();
        match self.shared.counters.lock() {
            Ok(mut g) => *g = c,
            Err(poisoned) => *poisoned.into_inner() = c,
        }
    }

    /// Flushes everything, sends end-of-stream on every link and waits for the links.
    fn finish(mut self, status: EosStatus) -> CollectorCounters {
        self.decoder.finish();
        self.warn_offload();
        self.flush_all();
        let counters = self.counters();
        self.publish();
        let r = counters.reconcile();
        if !r.holds() {
            error!(?r, "collector counters do not reconcile");
        }
        for (i, link) in self.links.iter().enumerate() {
            if self.routing.as_ref().is_some_and(|r| r.is_retired(i)) {
                continue;
            }
            if link
                .send_blocking(LinkCmd::Eos {
                    status: status.clone(),
                    counters: Box::new(counters.clone()),
                })
                .is_err()
            {
                error!(endpoint = %link.endpoint, "processor unreachable: end-of-stream not delivered");
            }
        }
        for link in self.links.drain(..) {
            link.join();
        }
        counters
    }
}

/// Hands shard `i`'s pending batch to its link, replacing it with a recycled vector.
#[allow(clippy::too_many_arguments)]
fn flush_one(
    i: usize,
    pending: &mut [Vec<PacketSummary>],
    links: &[Link],
    pool: &Receiver<Vec<PacketSummary>>,
    sent: &mut [u64],
    drops: &mut DropCounts,
    policy: SlowPolicy,
    watermark_ns: u64,
    batch_size: usize,
    epoch: u32,
) {
    let fresh = pool
        .try_recv()
        .unwrap_or_else(|_| Vec::with_capacity(batch_size));
    let summaries = std::mem::replace(&mut pending[i], fresh);
    let n = summaries.len() as u64;
    let cmd = LinkCmd::Batch {
        summaries,
        watermark_ns,
        epoch,
    };
    match policy {
        SlowPolicy::Block => match links[i].send_blocking(cmd) {
            Ok(()) => sent[i] += n,
            Err(_) => {
                drops.add(DropReason::QueueFull, n);
                warn!(endpoint = %links[i].endpoint, summaries = n, "shutdown while the processor's queue was full: batch dropped");
            }
        },
        SlowPolicy::Drop => match links[i].try_send(cmd) {
            Ok(()) => sent[i] += n,
            Err(_) => {
                drops.add(DropReason::QueueFull, n);
                warn!(endpoint = %links[i].endpoint, summaries = n, "processor queue full: batch dropped");
            }
        },
    }
}
