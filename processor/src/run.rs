//! The processor's loop: a PULL socket bound for collectors, a PUSH socket to the aggregator
//! ([`links`]), and the processor between them ([`node`]), driven by messages and by the
//! heartbeat period.

mod delivery;
mod links;
mod node;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::config::Config;
pub use crate::metrics::MetricsError;
pub use links::LinkError;
use links::Links;
use node::Node;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// Serves until every expected collector has ended (with `exit_on_eos`) or `shutdown` is set,
/// then flushes every session and sends its account to the aggregator.
pub fn run(config: &Config, shutdown: &AtomicBool) -> Result<(), RunError> {
    let incarnation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut links = Links::open(config, incarnation)?;
    let reload = reload_flag();
    info!(name = %config.name, listen = %config.listen, aggregator = %config.aggregator, "processor started");
    let metrics = crate::metrics::serve(config.metrics_listen.as_deref())?;
    let mut node = Node::new(config, incarnation);
    let mut last_heartbeat = Instant::now();
    let poll_ms = i64::try_from(config.heartbeat.as_millis().min(250)).unwrap_or(250);
    loop {
        if shutdown.load(Ordering::Relaxed) {
            info!("signal received: flushing and reporting");
            break;
        }
        if node.all_ended() {
            break;
        }
        if let Some(mut msg) = links.receive(poll_ms) {
            // CURVE: the key the message came with (its ZAP user id), for the name check.
            let user_id = msg.gets("User-Id").map(str::to_owned);
            node.on_message(&msg, user_id.as_deref());
        }
        let heartbeat_due = last_heartbeat.elapsed() >= config.heartbeat;
        if heartbeat_due {
            node.on_tick(&mut links, &reload, &metrics);
        }
        node.send_conns(&mut links, heartbeat_due);
        if heartbeat_due {
            last_heartbeat = Instant::now();
            node.send_heartbeat(&mut links);
        }
        links.upstream().service();
    }
    node.finish(&mut links)?;
    Ok(())
}

/// SIGHUP re-reads the processor set (ignored without one, instead of ending the process).
fn reload_flag() -> std::sync::Arc<AtomicBool> {
    tapflow_runtime::reopen_flag().unwrap_or_else(|e| {
        warn!(error = %e, "cannot install the SIGHUP handler; the processor set cannot be reloaded");
        std::sync::Arc::new(AtomicBool::new(false))
    })
}
