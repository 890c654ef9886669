//! The aggregator's edges: a PULL socket bound for processors and the log files.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use tapflow_proto::upstream::{ProcessorAccount, UpMessage};
use tapflow_proto::wire::MAX_MESSAGE_BYTES;
use tracing::{error, info, warn};

use crate::accounting::{reconcile, table, AccountingReport};
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot {what} {endpoint}: {source}")]
    Socket { what: &'static str, endpoint: String, source: zmq::Error },
    #[error("cannot write {path}: {source}")]
    Log { path: String, source: std::io::Error },
}

/// Serves until every expected processor has ended (with `exit_on_eos`) or `shutdown` is set;
/// returns the accounting report it wrote.
pub fn run(config: &Config, shutdown: &AtomicBool) -> Result<AccountingReport, RunError> {
    let mut health = match &config.health_log {
        Some(p) => Some(BufWriter::new(File::create(p).map_err(|source| RunError::Log { path: p.display().to_string(), source })?)),
        None => None,
    };
    let ctx = zmq::Context::new();
    let sock_err = |what: &'static str| {
        let endpoint = config.listen.clone();
        move |source| RunError::Socket { what, endpoint, source }
    };
    let pull = ctx.socket(zmq::PULL).map_err(sock_err("create a socket for"))?;
    pull.set_maxmsgsize(2 * MAX_MESSAGE_BYTES as i64).map_err(sock_err("configure"))?;
    pull.bind(&config.listen).map_err(sock_err("bind"))?;
    info!(listen = %config.listen, processors = config.processors, "aggregator started");

    let mut accounts: BTreeMap<(String, u64), ProcessorAccount> = BTreeMap::new();
    let mut malformed: BTreeMap<&'static str, u64> = BTreeMap::new();
    loop {
        if shutdown.load(Ordering::Relaxed) {
            info!("signal received: writing what is known");
            break;
        }
        if config.exit_on_eos && accounts.len() >= config.processors {
            break;
        }
        match pull.poll(zmq::POLLIN, 250) {
            Ok(n) if n > 0 => {
                let msg = match pull.recv_msg(0) {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(error = %e, "receive failed");
                        continue;
                    }
                };
                match UpMessage::decode(&msg) {
                    Ok(UpMessage::Heartbeat(_)) => {}
                    Ok(UpMessage::Eos(acc)) => {
                        info!(processor = %acc.processor, links = acc.links.len(), "processor ended");
                        accounts.insert((acc.processor.clone(), acc.incarnation), acc);
                    }
                    Err(e) => {
                        *malformed.entry(e.reason()).or_default() += 1;
                        warn!(error = %e, bytes = msg.len(), "dropped an undecodable message");
                    }
                }
            }
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(e) => warn!(error = %e, "poll failed"),
        }
    }
    let accounts: Vec<ProcessorAccount> = accounts.into_values().collect();
    let report = reconcile(&accounts);
    let text = table(&report);
    if report.reconciled {
        info!("accounting\n{text}");
    } else {
        error!("accounting does not reconcile\n{text}");
    }
    if !malformed.is_empty() {
        warn!(?malformed, "undecodable messages from processors");
    }
    if let (Some(w), Some(path)) = (health.as_mut(), config.health_log.as_ref()) {
        let log_err = |source| RunError::Log { path: path.display().to_string(), source };
        serde_json::to_writer(&mut *w, &report).map_err(|e| log_err(e.into()))?;
        w.write_all(b"\n").map_err(log_err)?;
        w.flush().map_err(log_err)?;
    }
    if !report.routing_consistent {
        error!("MISROUTED: processors saw conflicting shard claims; see the accounting report");
    }
    Ok(report)
}
