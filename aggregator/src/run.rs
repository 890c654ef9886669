//! The aggregator's edges: a PULL socket bound for processors, signals, the clock and the
//! metrics endpoint, driving the state machine ([`Aggregator`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tapflow_proto::wire::MAX_MESSAGE_BYTES;
use tapflow_runtime::curve::Authenticator;
use tapflow_runtime::MetricsText;
use tracing::{error, info};

use crate::accounting::AccountingReport;
use crate::config::Config;
use crate::detect_thread::DetectThread;
use crate::durable::{Durable, DurableError, Verdict};
use crate::inbox::{Gate, Inbound, Inbox, InboxError};
use crate::sink::{SinkError, Sinks};
use crate::state::{Aggregator, Now, Settings};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot {what} {endpoint}: {source}")]
    Socket {
        what: &'static str,
        endpoint: String,
        source: zmq::Error,
    },
    #[error(transparent)]
    Inbox(#[from] InboxError),
    #[error(transparent)]
    Durable(#[from] DurableError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot serve the dashboard on {addr}: {source}")]
    Http {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
    /// The run went to its end but logs lost lines (a full disk): exit 1, after writing
    /// everything that could be written.
    #[error("output lost: {}", lost_list(.0))]
    OutputLost(std::collections::BTreeMap<String, u64>),
}

fn lost_list(lost: &std::collections::BTreeMap<String, u64>) -> String {
    let each: Vec<String> = lost
        .iter()
        .map(|(log, n)| format!("{log}: {n} lines not written"))
        .collect();
    format!("{} (see the accounting report)", each.join(", "))
}

/// Serves until every expected processor has ended (with `exit_on_eos`) or `shutdown` is set;
/// returns the accounting report it wrote, or [`RunError::OutputLost`] (after the report) if a
/// log could not write everything. With a state directory, a signal before every processor
/// has ended ends the run without writing what is held (`None`): the write-ahead log keeps it
/// for the next start.
pub fn run(
    config: &Config,
    shutdown: &AtomicBool,
    reopen: &AtomicBool,
) -> Result<Option<AccountingReport>, RunError> {
    // Before the logs open: a restart tells them how much they already hold.
    let (mut durable, replay) = Durable::open_if(config, now().unix_ns)?;
    let (sinks, metrics, dashboard) = outputs(config)?;
    let counters_wanted = config.metrics_listen.is_some() || config.http.is_some();
    let detector = DetectThread::start(config.detect.clone()).map_err(RunError::Thread)?;
    let mut machine = Aggregator::new(Settings::of(config), Box::new(detector), sinks);
    if let Some(d) = durable.as_mut() {
        d.replay(replay, &mut machine, |m, msg| m.on_message(msg, now()))?;
    }
    let mut edge = Edge::bind(config, durable.is_some())?;
    info!(listen = %config.listen, processors = config.processors, "aggregator started");
    loop {
        if reopen.swap(false, Ordering::Relaxed) {
            on_sighup(&mut machine)?;
        }
        if shutdown.load(Ordering::Relaxed) {
            // Once every processor has ended nothing more is coming: the run is finished as
            // without a state directory (a restart would only replay it to the same end).
            if let Some(d) = durable.as_mut().filter(|_| !machine.all_ended()) {
                d.service(Instant::now(), true);
                info!("signal received: the write-ahead log keeps what is held for the next start");
                return Ok(None);
            }
            info!("signal received: writing what is known");
            break;
        }
        if tick(&mut machine, durable.as_mut(), edge.control.as_mut()) {
            break;
        }
        let wait = durable
            .as_ref()
            .map_or(Duration::MAX, |d| d.wait(Instant::now()))
            .min(Duration::from_millis(250));
        if let Some(inbound) = edge.inbox.recv(wait) {
            let wanted = counters_wanted.then_some((&metrics, edge.auth.as_ref()));
            on_inbound(&mut machine, durable.as_mut(), inbound, wanted)?;
        }
        if let Some(d) = durable.as_mut() {
            d.service(Instant::now(), false);
            if d.checkpoint_due(Instant::now()) {
                d.checkpoint(&mut machine, Instant::now());
            }
        }
    }
    if let Some(d) = durable.as_mut() {
        d.before_finish(&mut machine);
    }
    let auth_rejected = edge.auth.as_ref().map_or(0, |a| a.counts().rejected());
    machine.log_suppressed();
    if counters_wanted {
        publish_metrics(&machine, edge.auth.as_ref(), &metrics);
    }
    let report = machine.finish(now().unix_ns, auth_rejected)?;
    if let Some(d) = durable.as_mut() {
        d.finished();
    }
    if let Some(d) = dashboard.filter(|_| config.http.as_ref().is_some_and(|h| h.linger)) {
        linger(d.bound, shutdown);
    }
    if !report.records_unwritten.is_empty() {
        return Err(RunError::OutputLost(report.records_unwritten));
    }
    Ok(Some(report))
}

/// Time passes: membership decisions are made durable, then announced. True: the run ends.
fn tick(
    machine: &mut Aggregator,
    durable: Option<&mut Durable>,
    control: Option<&mut crate::control::publish::Publisher>,
) -> bool {
    let ended = machine.tick(Instant::now());
    // A membership decision is durable before the history it changes is announced.
    let decided = machine.take_membership_log();
    let announce = match durable {
        Some(d) => {
            d.decided(decided);
            d.decisions_durable()
        }
        None => true,
    };
    if let (Some(control), Some(history), true, false) =
        (control, machine.announced(), announce, ended)
    {
        control.offer(&history, Instant::now());
    }
    ended
}

/// The run's outputs: the sinks (logs, InfluxDB, the dashboard's feed), the metrics text
/// served on `--metrics-listen`, and the dashboard, if any.
fn outputs(
    config: &Config,
) -> Result<(Sinks, MetricsText, Option<crate::http::Dashboard>), RunError> {
    let mut sinks = Sinks::from_config(config)?;
    let metrics = tapflow_runtime::serve_metrics_text(config.metrics_listen.as_deref()).map_err(
        |source| RunError::Metrics {
            addr: config.metrics_listen.clone().unwrap_or_default(),
            source,
        },
    )?;
    let mut dashboard = None;
    if let Some(http) = &config.http {
        let (feed, d) =
            crate::http::start(http, metrics.clone()).map_err(|source| RunError::Http {
                addr: http.listen.clone(),
                source,
            })?;
        sinks.push(feed);
        dashboard = Some(d);
    }
    Ok((sinks, metrics, dashboard))
}

/// One thing the inbox delivered: a message (through the state directory's log first, when
/// there is one), a malformed message or a refusal, counted.
fn on_inbound(
    machine: &mut Aggregator,
    durable: Option<&mut Durable>,
    inbound: Inbound,
    metrics: Option<(&MetricsText, Option<&Authenticator>)>,
) -> Result<(), RunError> {
    match inbound {
        Inbound::Message(d, raw) => {
            if let Some(durable) = durable {
                if durable.received(&d, raw.as_deref().unwrap_or(&[])) == Verdict::Drop {
                    return Ok(());
                }
            }
            let heartbeat = matches!(d.message, tapflow_proto::upstream::UpMessage::Heartbeat(_));
            machine.on_message(d.message, now())?;
            if let Some((text, auth)) = metrics.filter(|_| heartbeat) {
                publish_metrics(machine, auth, text);
            }
        }
        Inbound::Malformed {
            reason,
            error,
            bytes,
        } => machine.on_malformed(reason, &error, bytes, now().instant),
        Inbound::Refused(reason) => machine.on_refused(reason),
    }
    Ok(())
}

/// `--http-linger`: the run has ended; the dashboard serves its final state until a signal.
fn linger(bound: std::net::SocketAddr, shutdown: &AtomicBool) {
    if shutdown.load(Ordering::Relaxed) {
        return;
    }
    info!(
        url = %format!("http://{bound}/"),
        "run ended; serving the dashboard until SIGINT or SIGTERM"
    );
    while !shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The socket side: dropped in field order (the inbox, the ZAP handler, then the context).
struct Edge {
    /// The control channel to collectors (`--control-listen`).
    control: Option<crate::control::publish::Publisher>,
    inbox: Inbox,
    auth: Option<Authenticator>,
    _ctx: zmq::Context,
}

impl Edge {
    /// The PULL socket, configured, secured (CURVE unless plain) and bound, on its thread.
    fn bind(config: &Config, keep: bool) -> Result<Edge, RunError> {
        let ctx = zmq::Context::new();
        let sock_err = |what: &'static str| {
            let endpoint = config.listen.clone();
            move |source| RunError::Socket {
                what,
                endpoint,
                source,
            }
        };
        let pull = ctx
            .socket(zmq::PULL)
            .map_err(sock_err("create a socket for"))?;
        pull.set_maxmsgsize(2 * MAX_MESSAGE_BYTES as i64)
            .map_err(sock_err("configure"))?;
        // CURVE: the ZAP handler starts before the bind.
        let auth =
            tapflow_runtime::curve::secure_server(&ctx, &pull, &config.security, &config.listen)
                .map_err(sock_err("set up CURVE for"))?;
        pull.bind(&config.listen).map_err(sock_err("bind"))?;
        let bindings = tapflow_runtime::curve::NameBindings::of(&config.security);
        bindings.warn_unbound("processor");
        let inbox = Inbox::start(&ctx, pull, Gate::new(bindings, config.max_senders), keep)?;
        let control = match &config.control_listen {
            Some(endpoint) => Some(
                crate::control::publish::Publisher::bind(&ctx, endpoint, &config.security)
                    .map_err(|source| RunError::Socket {
                        what: "bind the control channel on",
                        endpoint: endpoint.clone(),
                        source,
                    })?,
            ),
            None => None,
        };
        Ok(Edge {
            control,
            inbox,
            auth,
            _ctx: ctx,
        })
    }
}

/// SIGHUP: the outputs reopen their files and the processor set is read again.
fn on_sighup(machine: &mut Aggregator) -> Result<(), RunError> {
    machine.reopen()?;
    info!("SIGHUP: log files reopened");
    if let Some(path) = machine.processor_set_path().cloned() {
        match tapflow_runtime::read_processor_set(&path, false) {
            Ok(set) => machine.on_processor_set(set),
            Err(e) => error!("SIGHUP: {e}"),
        }
    }
    Ok(())
}

/// The machine's counters and the CURVE handler's, served at the metrics endpoint.
fn publish_metrics(machine: &Aggregator, auth: Option<&Authenticator>, metrics: &MetricsText) {
    let mut text = machine.metrics();
    let mut auth_counters = std::collections::BTreeMap::new();
    tapflow_runtime::curve::add_counters(auth, &mut auth_counters);
    tapflow_runtime::prometheus_counters(
        "aggregator",
        auth_counters.iter().map(|(k, v)| (k.as_str(), *v)),
        &mut text,
    );
    if let Ok(mut g) = metrics.lock() {
        *g = text;
    }
}

/// The clock, read once per message.
fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn_writer::ConnLogError;
    use crate::logfile::LogError;

    #[test]
    fn wrapped_errors_read_as_they_always_did() {
        let log = || LogError {
            path: "/var/log/conn.jsonl".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let expected = format!("cannot write /var/log/conn.jsonl: {}", log().source);
        let through_conn_log = RunError::from(SinkError::from(ConnLogError::from(log())));
        assert_eq!(through_conn_log.to_string(), expected);
        assert_eq!(RunError::from(SinkError::from(log())).to_string(), expected);
        let thread = ConnLogError::Thread(std::io::Error::other("the conn-log thread failed"));
        assert_eq!(
            RunError::from(SinkError::from(thread)).to_string(),
            "cannot start a thread: the conn-log thread failed"
        );
        let influx = crate::influx::InfluxError::Config("batch_lines must be positive");
        assert_eq!(
            RunError::from(SinkError::from(influx)).to_string(),
            "InfluxDB sink: invalid InfluxDB setting: batch_lines must be positive"
        );
        let socket = InboxError::Socket {
            what: "set up",
            endpoint: "inproc://stop".into(),
            source: zmq::Error::EINVAL,
        };
        assert_eq!(
            RunError::from(socket).to_string(),
            format!("cannot set up inproc://stop: {}", zmq::Error::EINVAL)
        );
    }
}
