//! `--capture-threads N`: N handles on the interface in one kernel `PACKET_FANOUT` group
//! (flow hash, fragments reassembled before hashing), each read by its own thread that
//! decodes, routes and batches on its own ([`run_source`]): its own links, sequence numbers,
//! watermark and counters. Each thread is a sender of its own, named `NAME/K`, so processors
//! count N senders per collector (`--collectors`), and each sender's end-of-stream accounts
//! for exactly what its handle read: the accounting identities hold per sender as with N
//! collectors. The run's final counters are the threads' summed.
//!
//! Every handle is opened before the privileges are dropped; the first thread to end (a
//! failure, a panic, a signal) stops the others, so no half-working collector goes on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tapflow_proto::CollectorCounters;
use tracing::{error, info};

use super::{drop_privileges, run_source, Finished, RunError, RunOutcome};
use crate::config::{Config, LiveSpec};
use crate::source::{self, Source, SourceError};
use crate::RUN_TARGET;

/// Runs `live.threads` capture threads until one ends; returns the worst outcome among them
/// and the counters summed.
pub fn run(
    config: &Config,
    live: &LiveSpec,
    shutdown: Arc<AtomicBool>,
) -> Result<Finished, RunError> {
    let opened = Source::open_fanout(live, config.filter.as_deref());
    drop_privileges(source::may_reopen(&config.source));
    let n = usize::from(live.threads);
    let sources: Vec<Result<Source, SourceError>> = match opened {
        Ok(sources) => sources.into_iter().map(Ok).collect(),
        // Every thread's links still carry the failure to the processors, which wait for N
        // senders.
        Err(e) => (0..n)
            .map(|_| {
                Err(SourceError::Open {
                    what: live.interface.clone(),
                    msg: e.to_string(),
                })
            })
            .collect(),
    };
    info!(target: RUN_TARGET, threads = n, interface = live.interface.as_str(), "capture threads: one PACKET_FANOUT group (hash, defrag); senders {}/0..{}", config.name, n - 1);
    let handles: Vec<_> = sources
        .into_iter()
        .enumerate()
        .map(|(k, opened)| {
            let mut cfg = config.clone();
            cfg.name = format!("{}/{k}", config.name);
            let stop = shutdown.clone();
            std::thread::Builder::new()
                .name(format!("capture-{k}"))
                .spawn(move || {
                    let _stop_all = StopAll(stop.clone());
                    run_source(&cfg, opened, stop)
                })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for (k, h) in handles.into_iter().enumerate() {
        let result = match h {
            Ok(h) => h
                .join()
                .unwrap_or_else(|_| Ok(failed(live, format!("capture thread {k} panicked")))),
            Err(e) => {
                shutdown.store(true, Ordering::Relaxed);
                Ok(failed(
                    live,
                    format!("cannot start capture thread {k}: {e}"),
                ))
            }
        };
        results.push(result);
    }
    combine(results)
}

/// Sets the stop flag when its thread ends, however it ends (a panic included): the others
/// then end too, sending their end-of-stream.
struct StopAll(Arc<AtomicBool>);

impl Drop for StopAll {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A thread that died without a run's result.
fn failed(live: &LiveSpec, msg: String) -> Finished {
    error!(target: RUN_TARGET, "{msg}; stopping the collector");
    Finished {
        outcome: RunOutcome::Failed(SourceError::Live {
            what: live.interface.clone(),
            msg,
        }),
        counters: CollectorCounters::default(),
        undelivered: Vec::new(),
    }
}

/// The threads' results as one: the first error; else the worst outcome (a failure before a
/// damaged source before an open failure before an interrupt), the counters summed and every
/// undelivered link.
fn combine(results: Vec<Result<Finished, RunError>>) -> Result<Finished, RunError> {
    let mut counters = CollectorCounters::default();
    let mut undelivered = Vec::new();
    let mut outcome = RunOutcome::Done { interrupted: false };
    let mut first = true;
    for r in results {
        let f = r?;
        add(&mut counters, &f.counters);
        undelivered.extend(f.undelivered);
        if first || rank(&f.outcome) > rank(&outcome) {
            outcome = f.outcome;
        }
        first = false;
    }
    Ok(Finished {
        outcome,
        counters,
        undelivered,
    })
}

fn rank(o: &RunOutcome) -> u8 {
    match o {
        RunOutcome::Done { interrupted: false } => 0,
        RunOutcome::Done { interrupted: true } => 1,
        RunOutcome::OpenFailed(_) => 2,
        RunOutcome::Damaged(_) => 3,
        RunOutcome::Failed(_) => 4,
    }
}

/// `total += c`, link by link.
fn add(total: &mut CollectorCounters, c: &CollectorCounters) {
    total.packets_read += c.packets_read;
    total.packets_summarised += c.packets_summarised;
    total.fragments_merged += c.fragments_merged;
    total.summaries += c.summaries;
    if total.summaries_sent.len() < c.summaries_sent.len() {
        total.summaries_sent.resize(c.summaries_sent.len(), 0);
    }
    for (t, s) in total.summaries_sent.iter_mut().zip(&c.summaries_sent) {
        *t += s;
    }
    for (reason, n) in &c.drops {
        *total.drops.entry(reason.clone()).or_default() += n;
    }
    total.capture.received += c.capture.received;
    total.capture.kernel_dropped += c.capture.kernel_dropped;
    total.capture.if_dropped += c.capture.if_dropped;
}
