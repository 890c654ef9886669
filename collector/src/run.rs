//! The run: opens the source (and drops privileges), starts the links, and drives packets
//! from the source through the pipeline (`pipeline.rs`) until the source ends, fails, or a
//! signal comes; every one of those exits sends end-of-stream with a status on every link.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tapflow_proto::{CollectorCounters, EosStatus};
use tracing::{info, warn};

use crate::config::{Config, SourceSpec};
use crate::link::{LinkError, LinkSet, LinkSettings, Shared};
use crate::pipeline::Pipeline;
use crate::progress::Progress;
use crate::route::Router;
use crate::source::{self, Next, Pause, Recovery, Source, SourceError};

mod threads;

/// How often counters are published (heartbeats, metrics) and the reload flag looked at.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

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

/// What a run ended with: how, the final counters, and the links whose end-of-stream was not
/// delivered (their endpoints; see `link/delivery.rs`).
#[derive(Debug)]
pub struct Finished {
    pub outcome: RunOutcome,
    pub counters: CollectorCounters,
    pub undelivered: Vec<String>,
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
/// with a status on every link in every case, waits (at most the linger) to learn whether each
/// reached its processor, and returns the final counters and the links where it did not.
pub fn run(config: &Config, shutdown: Arc<AtomicBool>) -> Result<Finished, RunError> {
    if let SourceSpec::Live(live) = &config.source {
        if live.threads > 1 {
            return threads::run(config, live, shutdown);
        }
    }
    // The capture first, so that its privileges are gone before any thread that handles input
    // or the network starts (threads inherit their creator's capabilities): see `privileges`.
    let opened = Source::open(&config.source, config.filter.as_deref());
    drop_privileges(source::may_reopen(&config.source));
    run_source(config, opened, shutdown)
}

/// [`run`] on a source opened (or not) already, the privileges dropped: one capture thread
/// with its own links, sequence numbers and watermark.
pub(crate) fn run_source(
    config: &Config,
    opened: Result<Source, SourceError>,
    shutdown: Arc<AtomicBool>,
) -> Result<Finished, RunError> {
    let shared = Arc::new(Shared {
        watermark_ns: Default::default(),
        counters: Mutex::new(CollectorCounters::default()),
        live: source::is_live(&config.source),
        shutdown: shutdown.clone(),
        messages_sent: AtomicU64::new(0),
        bytes_sent: AtomicU64::new(0),
    });
    if let Some(addr) = &config.metrics_listen {
        crate::metrics::serve(addr, &shared).map_err(|source| RunError::Metrics {
            addr: addr.clone(),
            source,
        })?;
    }
    let router = Router::new(config);
    let (pool_tx, pool_rx) = crossbeam_channel::unbounded();
    // Held until the run returns: dropping the last handle waits out the linger of what the
    // sockets still hold, which must come after the report below (links that judge their
    // end-of-stream wait for it themselves, in `Closing::confirm`).
    let ctx = zmq::Context::new();
    let links = LinkSet::start(
        &ctx,
        &config.processors,
        &router.link_ids(),
        link_settings(config, &router),
        config.queue_batches,
        shared.clone(),
        pool_tx,
    )?;
    let security = if config.security.is_plain() {
        "plain"
    } else {
        "curve"
    };
    let (name, incarnation) = (&links.settings().sender, links.settings().incarnation);
    let processors = u16::try_from(config.processors.len()).unwrap_or(u16::MAX);
    info!(name = %name, incarnation, processors, links = security, "collector started");
    let mut pipeline = Pipeline::new(config, router, links, pool_rx, reload_flag());
    let outcome = match opened {
        Err(e) => RunOutcome::OpenFailed(e),
        Ok(mut source) => {
            info!(
                source = source.describe(),
                link = source.link().name(),
                "capture open"
            );
            drive(&mut pipeline, &mut source, &shutdown)
        }
    };
    let (counters, closing) = pipeline.finish(eos_status(&outcome));
    let bytes = shared.bytes_sent.load(Ordering::Relaxed);
    info!(
        messages = shared.messages_sent.load(Ordering::Relaxed),
        bytes,
        bytes_per_summary = format!("{:.1}", bytes as f64 / counters.summaries.max(1) as f64),
        "sent to processors"
    );
    log_evidence(&counters);
    let undelivered = closing.confirm();
    Ok(Finished {
        outcome,
        counters,
        undelivered,
    })
}

/// Reads the source until it ends or a signal comes; a read error goes to the source to
/// recover from (a live source reopens) or ends the run.
fn drive(pipeline: &mut Pipeline, source: &mut Source, shutdown: &AtomicBool) -> RunOutcome {
    loop {
        let read = capture(pipeline, source, shutdown);
        pipeline.update_capture_stats(source);
        let error = match read {
            Ok(outcome) => return outcome,
            Err(e) => e,
        };
        let mut waiting = Waiting { pipeline, shutdown };
        match source.recover(error, &mut waiting) {
            Recovery::Resumed => {}
            Recovery::Stopped => return RunOutcome::Done { interrupted: true },
            Recovery::Failed(e @ SourceError::Damaged { .. }) => return RunOutcome::Damaged(e),
            Recovery::Failed(e) => return RunOutcome::Failed(e),
        }
    }
}

/// The capture loop: every packet into the pipeline; housekeeping every 4096 packets or on
/// an idle read. Ends `Done` at the end of input or on a signal, or with the read error.
fn capture(
    pipeline: &mut Pipeline,
    source: &mut Source,
    shutdown: &AtomicBool,
) -> Result<RunOutcome, SourceError> {
    let mut progress = if std::io::stderr().is_terminal() {
        source.size_bytes().map(Progress::new)
    } else {
        None
    };
    let mut last_publish = Instant::now();
    let mut tick: u32 = 0;
    loop {
        if shutdown.load(Ordering::Relaxed) {
            return Ok(RunOutcome::Done { interrupted: true });
        }
        match source.next_record()? {
            Next::Packet(rec) => {
                pipeline.on_packet(rec.link, &rec);
                if let Some(p) = progress.as_mut() {
                    p.record(rec.data.len());
                }
                tick = tick.wrapping_add(1);
                if !tick.is_multiple_of(4096) {
                    continue;
                }
            }
            Next::Idle => {}
            Next::End => return Ok(RunOutcome::Done { interrupted: false }),
        }
        pipeline.flush_if_due();
        if last_publish.elapsed() >= PUBLISH_EVERY {
            last_publish = Instant::now();
            pipeline.periodic(source);
            if let Some(p) = progress.as_mut() {
                p.draw(pipeline.packets());
            }
        }
    }
}

/// The pipeline while a source waits to recover: what is pending goes out first, counters
/// keep being published (link threads send heartbeats meanwhile), and a signal stops it.
struct Waiting<'a> {
    pipeline: &'a mut Pipeline,
    shutdown: &'a AtomicBool,
}

impl Pause for Waiting<'_> {
    fn begin(&mut self) {
        self.pipeline.flush_all();
    }

    fn tick(&mut self) -> bool {
        if self.shutdown.load(Ordering::Relaxed) {
            return false;
        }
        self.pipeline.publish();
        true
    }
}

/// The end-of-stream status of a run that ended with `outcome`.
fn eos_status(outcome: &RunOutcome) -> EosStatus {
    match outcome {
        RunOutcome::Done { interrupted: false } => EosStatus::Complete,
        RunOutcome::Done { interrupted: true } => EosStatus::Interrupted,
        RunOutcome::OpenFailed(e) => EosStatus::OpenFailed(e.to_string()),
        RunOutcome::Damaged(e) => EosStatus::Damaged(e.to_string()),
        RunOutcome::Failed(e) => EosStatus::Failed(e.to_string()),
    }
}

/// Drops the capabilities, keeping (not effective) what reopening the capture needs.
pub(crate) fn drop_privileges(reopen: bool) {
    match crate::privileges::drop_after_open(reopen) {
        Ok(kept) if kept.is_empty() => info!("capabilities dropped: none kept"),
        Ok(kept) => info!(
            permitted = kept.join(","),
            "capabilities dropped: none effective, these kept to reopen the interface"
        ),
        Err(e) => warn!(error = %e, "could not drop capabilities"),
    }
}

/// SIGHUP re-reads the processor set (and is ignored without one, instead of ending the
/// process as its default action would).
fn reload_flag() -> Arc<AtomicBool> {
    match tapflow_runtime::reopen_flag() {
        Ok(flag) => flag,
        Err(e) => {
            warn!(error = %e, "cannot install the SIGHUP handler; the processor set cannot be reloaded");
            Arc::new(AtomicBool::new(false))
        }
    }
}

/// Identity and settings common to every link.
fn link_settings(config: &Config, router: &Router) -> LinkSettings {
    let (epoch, shard_count) = router.link_claims();
    LinkSettings {
        sender: config.name.clone(),
        incarnation: incarnation(),
        epoch,
        shard_count,
        heartbeat: config.heartbeat,
        linger: config.linger,
        batch_bytes: config.batch_bytes,
        security: config.security.clone(),
    }
}

/// A restart gets a new incarnation, so its sequence numbers are not read as a gap.
fn incarnation() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    now ^ (u64::from(std::process::id()) << 40)
}

/// The payload evidence shipped, and the payload packets not shipped by reason.
fn log_evidence(counters: &tapflow_proto::CollectorCounters) {
    let e = counters.evidence;
    info!(
        flows = e.flows,
        pieces = e.pieces_shipped,
        bytes = e.bytes_shipped,
        bytes_per_summary = format!(
            "{:.1}",
            e.bytes_shipped as f64 / counters.summaries.max(1) as f64
        ),
        unshipped_table_full = e.table_full,
        unshipped_budget = e.budget,
        unshipped_complete = e.complete,
        unshipped_repeated = e.repeated,
        unshipped_reordered = e.reordered,
        unshipped_gave_up = e.gave_up,
        "payload evidence shipped"
    );
}
