//! The processor's edges: a PULL socket bound for collectors, a PUSH socket to the aggregator.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tapflow_proto::upstream::{ProcessorHeartbeat, UpMessage};
use tapflow_proto::wire::MAX_MESSAGE_BYTES;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::inputs::{Inputs, Verdict};

fn sock<'a>(what: &'static str, endpoint: &'a str) -> impl FnOnce(zmq::Error) -> RunError + 'a {
    move |source| RunError::Socket { what, endpoint: endpoint.to_owned(), source }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot {what} {endpoint}: {source}")]
    Socket { what: &'static str, endpoint: String, source: zmq::Error },
}

/// Serves until every expected collector has ended (with `exit_on_eos`) or `shutdown` is set,
/// then sends its account to the aggregator.
pub fn run(config: &Config, shutdown: &AtomicBool) -> Result<(), RunError> {
    let ctx = zmq::Context::new();
    let pull = ctx.socket(zmq::PULL).map_err(sock("create a socket for", &config.listen))?;
    pull.set_maxmsgsize(2 * MAX_MESSAGE_BYTES as i64).map_err(sock("configure", &config.listen))?;
    pull.set_rcvhwm(256).map_err(sock("configure", &config.listen))?;
    pull.bind(&config.listen).map_err(sock("bind", &config.listen))?;
    let push = ctx.socket(zmq::PUSH).map_err(sock("create a socket for", &config.aggregator))?;
    push.set_linger(30_000).map_err(sock("configure", &config.aggregator))?;
    push.connect(&config.aggregator).map_err(sock("connect to", &config.aggregator))?;

    let incarnation = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    info!(name = %config.name, listen = %config.listen, aggregator = %config.aggregator, "processor started");
    let mut inputs = Inputs::new(config.shard);
    let mut processed: u64 = 0;
    let mut out = Vec::with_capacity(4096);
    let mut last_heartbeat = Instant::now();
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
                    Ok(Verdict::Accept(summaries)) => processed += summaries.len() as u64,
                    Ok(Verdict::Misrouted { sender, claim, ours, first }) => {
                        if first {
                            error!(%sender, ?claim, ?ours, "MISROUTED: collector disagrees on the processor set or its order; its batches are dropped and counted");
                        }
                    }
                    Ok(Verdict::Nothing) => {}
                    Err(e) => warn!(error = %e, bytes = msg.len(), "dropped an undecodable message"),
                }
            }
            Ok(_) => {}
            Err(zmq::Error::EINTR) => {}
            Err(e) => warn!(error = %e, "poll failed"),
        }
        if last_heartbeat.elapsed() >= config.heartbeat {
            last_heartbeat = Instant::now();
            let hb = ProcessorHeartbeat { processor: config.name.clone(), incarnation, watermark_ns: inputs.watermark_ns() };
            UpMessage::Heartbeat(hb).encode(&mut out);
            if let Err(e) = push.send(&out[..], zmq::DONTWAIT) {
                warn!(error = %e, "heartbeat to aggregator not sent");
            }
        }
    }
    let account = inputs.account(&config.name, incarnation);
    let received: u64 = account.links.iter().map(|l| l.summaries_received).sum();
    let gaps: u64 = account.links.iter().map(|l| l.gaps).sum();
    let misrouted: u64 = account.links.iter().map(|l| l.misrouted).sum();
    info!(processed, received, gaps, misrouted, malformed = ?account.malformed, claim = ?account.claim, "processor finished");
    UpMessage::Eos(account).encode(&mut out);
    push.send(&out[..], 0).map_err(sock("send end-of-stream to", &config.aggregator))?;
    Ok(())
}
