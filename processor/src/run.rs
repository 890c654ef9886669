//! The processor's edges: a PULL socket bound for collectors, a PUSH socket to the aggregator,
//! and the loop that drives inputs -> merge -> flow table -> connection batches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tapflow_proto::upstream::{ProcessorHeartbeat, UpMessage};
use tapflow_proto::wire::MAX_MESSAGE_BYTES;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::engine::{Engine, RECORDS_PER_MESSAGE};
use crate::inputs::{Inputs, Verdict};

fn sock<'a>(what: &'static str, endpoint: &'a str) -> impl FnOnce(zmq::Error) -> RunError + 'a {
    move |source| RunError::Socket {
        what,
        endpoint: endpoint.to_owned(),
        source,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot {what} {endpoint}: {source}")]
    Socket {
        what: &'static str,
        endpoint: String,
        source: zmq::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
}

/// Serves until every expected collector has ended (with `exit_on_eos`) or `shutdown` is set,
/// then flushes every session and sends its account to the aggregator.
pub fn run(config: &Config, shutdown: &AtomicBool) -> Result<(), RunError> {
    let ctx = zmq::Context::new();
    let pull = ctx
        .socket(zmq::PULL)
        .map_err(sock("create a socket for", &config.listen))?;
    pull.set_maxmsgsize(2 * MAX_MESSAGE_BYTES as i64)
        .map_err(sock("configure", &config.listen))?;
    pull.set_rcvhwm(256)
        .map_err(sock("configure", &config.listen))?;
    // CURVE: the ZAP handler starts before the bind; dropped before `ctx`, so the context can
    // still terminate (and linger) at exit.
    let auth = tapflow_runtime::curve::secure_server(&ctx, &pull, &config.security, &config.listen)
        .map_err(sock("set up CURVE for", &config.listen))?;
    pull.bind(&config.listen)
        .map_err(sock("bind", &config.listen))?;
    let push = ctx
        .socket(zmq::PUSH)
        .map_err(sock("create a socket for", &config.aggregator))?;
    push.set_linger(30_000)
        .map_err(sock("configure", &config.aggregator))?;
    tapflow_runtime::curve::secure_client(&push, &config.security)
        .map_err(sock("set up CURVE for", &config.aggregator))?;
    // An aggregator that refuses this processor's key is said here too, not only there.
    let mut handshakes = tapflow_runtime::curve::ClientMonitor::attach(
        &ctx,
        &push,
        &config.security,
        &config.aggregator,
    )
    .map_err(sock("monitor", &config.aggregator))?;
    push.connect(&config.aggregator)
        .map_err(sock("connect to", &config.aggregator))?;

    let incarnation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // SIGHUP re-reads the processor set (ignored without one, instead of ending the process).
    let reload = tapflow_runtime::reopen_flag().unwrap_or_else(|e| {
        warn!(error = %e, "cannot install the SIGHUP handler; the processor set cannot be reloaded");
        std::sync::Arc::new(AtomicBool::new(false))
    });
    info!(name = %config.name, listen = %config.listen, aggregator = %config.aggregator, "processor started");
    let metrics = tapflow_runtime::serve_metrics_text(config.metrics_listen.as_deref()).map_err(
        |source| RunError::Metrics {
            addr: config.metrics_listen.clone().unwrap_or_default(),
            source,
        },
    )?;
    let mut inputs = match &config.processor_set {
        Some((_, set, id)) => Inputs::with_set(set.clone(), *id),
        None => Inputs::new(config.shard),
    };
    let mut engine = Engine::new(config, incarnation);
    let mut buf = Vec::with_capacity(1 << 16);
    let mut last_heartbeat = Instant::now();
    let started = Instant::now();
    let poll_ms = i64::try_from(config.heartbeat.as_millis().min(250)).unwrap_or(250);
    loop {
        if shutdown.load(Ordering::Relaxed) {
            info!("signal received: flushing and reporting");
            break;
        }
        if config.exit_on_eos && inputs.ended() >= config.collectors {
            break;
        }
        match pull.poll(zmq::POLLIN, poll_ms) {
            Ok(n) if n > 0 => {
                let msg = match pull.recv_msg(0) {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(error = %e, "receive failed");
                        continue;
                    }
                };
                match inputs.on_bytes(&msg) {
                    Ok(Verdict::Accept { header, summaries }) => engine.accept(&header, summaries),
                    Ok(Verdict::Progress { header, ended }) => engine.progress(&header, ended),
                    Ok(Verdict::Misrouted {
                        header,
                        claim,
                        ours,
                        first,
                    }) => {
                        // Its time still moves on, or the merge would wait for it forever.
                        engine.progress(&header, false);
                        if first {
                            error!(sender = %header.sender, ?claim, ?ours, "MISROUTED: collector disagrees on the processor set or its order; its batches are dropped and counted");
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, bytes = msg.len(), "dropped an undecodable message")
                    }
                }
                engine.step();
            }
            Ok(_) => {}
            Err(zmq::Error::EINTR) => {}
            Err(e) => warn!(error = %e, "poll failed"),
        }
        let heartbeat_due = last_heartbeat.elapsed() >= config.heartbeat;
        if heartbeat_due && reload.swap(false, Ordering::Relaxed) {
            reload_set(config, &mut inputs, &mut engine);
        }
        if heartbeat_due {
            if let Some(m) = handshakes.as_mut() {
                m.poll();
            }
            engine.check_liveness(started);
            engine.step();
            if config.metrics_listen.is_some() {
                let mut counters = engine.counters();
                counters.insert("epoch_unknown".into(), inputs.epoch_unknown());
                tapflow_runtime::curve::add_counters(auth.as_ref(), &mut counters);
                let text = crate::metrics::render(
                    &inputs.account(&config.name, incarnation),
                    &counters,
                    &engine.collector_skews(),
                );
                if let Ok(mut g) = metrics.lock() {
                    *g = text;
                }
            }
        }
        if engine.records.len() >= RECORDS_PER_MESSAGE || heartbeat_due {
            engine.send_conns(&push, &mut buf, zmq::DONTWAIT);
        }
        if heartbeat_due {
            last_heartbeat = Instant::now();
            let hb = ProcessorHeartbeat {
                processor: config.name.clone(),
                incarnation,
                watermark_ns: inputs.watermark_ns(),
                silent_collectors: engine.silent_collectors(),
                collectors: inputs.collector_health(),
                links: inputs.progress(),
                flows_open: engine.table.stats().open_flows,
                member: config.processor_set.as_ref().map(|(_, _, id)| *id),
            };
            UpMessage::Heartbeat(hb).encode(&mut buf);
            if let Err(e) = push.send(&buf[..], zmq::DONTWAIT) {
                warn!(error = %e, "heartbeat to aggregator not sent");
            }
        }
    }
    engine.finish();
    engine.send_conns(&push, &mut buf, 0);
    let mut account = inputs.account(&config.name, incarnation);
    engine.fill_links(&mut account.links);
    account.counters = engine.counters();
    if config.processor_set.is_some() {
        account
            .counters
            .insert("epoch_unknown".into(), inputs.epoch_unknown());
    }
    tapflow_runtime::curve::add_counters(auth.as_ref(), &mut account.counters);
    let received: u64 = account.links.iter().map(|l| l.summaries_received).sum();
    let gaps: u64 = account.links.iter().map(|l| l.gaps).sum();
    let misrouted: u64 = account.links.iter().map(|l| l.misrouted).sum();
    info!(received, gaps, misrouted, malformed = ?account.malformed, claim = ?account.claim, counters = ?account.counters, "processor finished");
    UpMessage::Eos(account).encode(&mut buf);
    push.send(&buf[..], 0)
        .map_err(sock("send end-of-stream to", &config.aggregator))?;
    Ok(())
}

/// SIGHUP: re-reads the processor set; a reload must extend the history in use.
fn reload_set(config: &Config, inputs: &mut Inputs, engine: &mut Engine) {
    let (Some((path, _, _)), Some(epochs)) = (&config.processor_set, engine.epochs.as_mut()) else {
        info!("SIGHUP ignored: no processor set (--processor-set) to reload");
        return;
    };
    match tapflow_runtime::read_processor_set(path, false) {
        Ok(set) if !set.extends(epochs.set()) => error!(
            "SIGHUP: processor set {} does not extend the history in use (a reload may only append [[change]] entries); keeping it",
            path.display()
        ),
        Ok(set) => {
            info!(
                epochs = set.epochs().len(),
                members = ?set.latest().table.members(),
                "SIGHUP: processor set reloaded"
            );
            inputs.update_set(set.clone());
            epochs.update(set);
            engine.next_switch_ns = epochs.next_switch_ns();
        }
        Err(e) => error!("SIGHUP: {e}"),
    }
}
