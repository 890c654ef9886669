//! The aggregator's edges: a PULL socket bound for processors and the log files.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tapflow_proto::upstream::{ProcessorAccount, UpMessage};
use tapflow_proto::wire::MAX_MESSAGE_BYTES;
use tracing::{error, info, warn};

use crate::accounting::{reconcile_with, table, AccountingReport, SetReport};
use crate::config::Config;
use crate::conn_writer::ConnWriter;
use crate::conns::{conn_json, ConnSorter};
use crate::detect::AlertEvent;
use crate::detect_thread::DetectThread;
use crate::health::HealthWatch;
use crate::inbox::{Inbound, Inbox};
use crate::influx::{conn_point, health_point, InfluxError, InfluxWriter, Point};
use crate::logfile::LogFile;
use crate::points::{alert_point, TrafficMerge};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot {what} {endpoint}: {source}")]
    Socket {
        what: &'static str,
        endpoint: String,
        source: zmq::Error,
    },
    #[error("cannot write {path}: {source}")]
    Log {
        path: String,
        source: std::io::Error,
    },
    #[error("InfluxDB sink: {0}")]
    Influx(#[from] InfluxError),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
}

/// Serves until every expected processor has ended (with `exit_on_eos`) or `shutdown` is set;
/// returns the accounting report it wrote.
pub fn run(
    config: &Config,
    shutdown: &AtomicBool,
    reopen: &AtomicBool,
) -> Result<AccountingReport, RunError> {
    let mut health = LogFile::create(config.health_log.as_deref())?;
    let mut conn_log = ConnWriter::start(config.conn_log.as_deref())?;
    let mut interim_log = LogFile::create(config.conn_interim_log.as_deref())?;
    let mut alerts_log = LogFile::create(config.alerts_log.as_deref())?;
    let mut sorter = ConnSorter::new(config.processors, config.conn_cap);
    let mut detector = DetectThread::start(config.detect.clone()).map_err(RunError::Thread)?;
    let mut health_watch = HealthWatch::new(0.01);
    let mut influx = config.influx.clone().map(InfluxWriter::start).transpose()?;
    let mut traffic = TrafficMerge::new(config.processors);
    let mut live_health = crate::points::LiveHealth::default();
    let mut points: Vec<Point> = Vec::new();
    let metrics = tapflow_runtime::serve_metrics_text(config.metrics_listen.as_deref()).map_err(
        |source| RunError::Metrics {
            addr: config.metrics_listen.clone().unwrap_or_default(),
            source,
        },
    )?;
    let mut events: Vec<AlertEvent> = Vec::new();
    let mut alerts_text = String::new();
    let mut text = String::with_capacity(1 << 16);
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
    let auth = tapflow_runtime::curve::secure_server(&ctx, &pull, &config.security, &config.listen)
        .map_err(sock_err("set up CURVE for"))?;
    pull.bind(&config.listen).map_err(sock_err("bind"))?;
    let inbox = Inbox::start(&ctx, pull)?;
    info!(listen = %config.listen, processors = config.processors, "aggregator started");

    let mut accounts: BTreeMap<(String, u64), ProcessorAccount> = BTreeMap::new();
    // Processors expected: all members of any epoch when routing is by processor set (a
    // reload that adds one makes the merge wait for it too).
    let mut expected = config.processors;
    let mut processor_set = config.processor_set.clone();
    let mut split_records = 0u64;
    let mut members = crate::members::Members::default();
    let mut upstream = crate::upstream::Upstream::new();
    let mut malformed: BTreeMap<&'static str, u64> = BTreeMap::new();
    loop {
        if reopen.swap(false, Ordering::Relaxed) {
            conn_log.reopen()?;
            for log in [&mut interim_log, &mut alerts_log, &mut health] {
                log.reopen()?;
            }
            info!("SIGHUP: log files reopened");
            if let Some((path, old)) = processor_set.as_ref() {
                match tapflow_runtime::read_processor_set(path, false) {
                    Ok(set) if set.extends(old) => {
                        expected = set.all_members().len();
                        sorter.set_processors(expected);
                        traffic.set_processors(expected);
                        info!(epochs = set.epochs().len(), processors = expected, "SIGHUP: processor set reloaded");
                        processor_set = Some((path.clone(), set));
                    }
                    Ok(_) => error!("SIGHUP: processor set {} does not extend the history in use (a reload may only append [[change]] entries); keeping it", path.display()),
                    Err(e) => error!("SIGHUP: {e}"),
                }
            }
        }
        if shutdown.load(Ordering::Relaxed) {
            info!("signal received: writing what is known");
            break;
        }
        if let Some((_, set)) = processor_set.as_ref() {
            for (name, id) in members.newly_gone(set, std::time::Instant::now()) {
                warn!(processor = %name, id, silent_s = crate::members::SILENT_AFTER.as_secs(), "processor left the processor set and is silent (crashed?): no longer waited for; what it held is lost (see dead_processors in the report)");
                sorter.end(&name);
                traffic.end(&name);
            }
        }
        // Processors by name: an incarnation that died (restarted) sends no account; one given
        // up after it left the set never will.
        if config.exit_on_eos
            && accounts
                .keys()
                .map(|(p, _)| p)
                .chain(members.gone())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                >= expected
        {
            break;
        }
        match inbox.recv(Duration::from_millis(250)) {
            Some(Inbound::Message(m)) => match m {
                UpMessage::Heartbeat(hb) => {
                    members.heartbeat(&hb.processor, hb.member, std::time::Instant::now());
                    for old in upstream.on_heartbeat(&hb) {
                        warn!(processor = %hb.processor, old, new = hb.incarnation, "processor restarted: its previous incarnation sent no end-of-stream; its open sessions and what it had not passed on are lost (see the accounting report)");
                    }
                    if config.metrics_listen.is_some() {
                        let mut text = render_metrics(
                            &sorter.stats(),
                            &detector.stats(),
                            &malformed,
                            influx.as_ref().map(|w| w.stats()),
                        );
                        let mut auth_counters = BTreeMap::new();
                        tapflow_runtime::curve::add_counters(auth.as_ref(), &mut auth_counters);
                        tapflow_runtime::prometheus_counters(
                            "aggregator",
                            auth_counters.iter().map(|(k, v)| (k.as_str(), *v)),
                            &mut text,
                        );
                        if let Ok(mut g) = metrics.lock() {
                            *g = text;
                        }
                    }
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(0);
                    if let Some(w) = influx.as_mut() {
                        let live = live_health.points(&hb, now);
                        if !live.is_empty() {
                            w.send(live);
                        }
                    }
                    health_watch.heartbeat(&hb, now, &mut events);
                    detector.take_events(&mut events);
                    if let Some(w) = influx.as_mut() {
                        if !events.is_empty() {
                            w.send(events.iter().map(alert_point).collect());
                        }
                    }
                    write_alerts(&mut events, &mut alerts_text, &mut alerts_log)?;
                }
                UpMessage::Conns(batch) => {
                    upstream.on_conns(&batch);
                    if influx.is_some() {
                        traffic.push(&batch);
                        traffic.emit(false, &mut points);
                    }
                    sorter.push(batch);
                    let mut failed = Ok(());
                    sorter.release_owned(|r, parents| {
                        split_records += u64::from(r.split != 0);
                        detector.on_record(&r);
                        if influx.is_some() {
                            points.push(conn_point(&r, &parents));
                        }
                        if failed.is_ok() {
                            failed = conn_log.push(r, parents);
                        }
                    });
                    detector.flush();
                    detector.take_events(&mut events);
                    failed?;
                    conn_log.flush()?;
                    points.extend(events.iter().filter(|_| influx.is_some()).map(alert_point));
                    write_alerts(&mut events, &mut alerts_text, &mut alerts_log)?;
                    if let Some(w) = influx.as_mut() {
                        if !points.is_empty() {
                            w.send(std::mem::take(&mut points));
                        }
                    }
                    for r in sorter.take_interim() {
                        conn_json(&r, &[], &mut text);
                    }
                    interim_log.write(&mut text)?;
                }
                UpMessage::Eos(acc) => {
                    info!(processor = %acc.processor, links = acc.links.len(), "processor ended");
                    members.ended(&acc.processor);
                    sorter.end(&acc.processor);
                    traffic.end(&acc.processor);
                    accounts.insert((acc.processor.clone(), acc.incarnation), *acc);
                }
            },
            Some(Inbound::Malformed {
                reason,
                error,
                bytes,
            }) => {
                *malformed.entry(reason).or_default() += 1;
                warn!(%error, bytes, "dropped an undecodable message");
            }
            None => {}
        }
    }
    let mut failed = Ok(());
    sorter.drain_owned(|r, parents| {
        split_records += u64::from(r.split != 0);
        detector.on_record(&r);
        if influx.is_some() {
            points.push(conn_point(&r, &parents));
        }
        if failed.is_ok() {
            failed = conn_log.push(r, parents);
        }
    });
    failed?;
    conn_log.finish()?;
    let detect_stats = detector.finish(&mut events);
    if influx.is_some() {
        traffic.emit(true, &mut points);
        points.extend(events.iter().map(alert_point));
    }
    write_alerts(&mut events, &mut alerts_text, &mut alerts_log)?;
    alerts_log.flush()?;
    info!(?detect_stats, "detection finished");
    interim_log.flush()?;
    let conn_stats = sorter.stats();
    info!(?conn_stats, "connection records written");
    let accounts: Vec<ProcessorAccount> = accounts.into_values().collect();
    let mut report = reconcile_with(&accounts, &upstream);
    report.conns = Some(conn_stats);
    report.detection = Some(detect_stats);
    report.auth_rejected = auth.as_ref().map_or(0, |a| a.counts().rejected());
    report.processor_set = processor_set
        .as_ref()
        .map(|(_, set)| SetReport::new(set, &report.processors, split_records));
    if let Some(mut w) = influx.take() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        for p in &report.processors {
            let counters = p.counters.named().map(|(k, v)| (k.to_owned(), v)).collect();
            points.push(health_point("processor", &p.processor, &counters, now));
        }
        for c in &report.collectors {
            let mut counters = c.drops.clone();
            counters.insert("packets_read".into(), c.packets_read);
            counters.insert("packets_summarised".into(), c.packets_summarised);
            counters.insert("fragments_merged".into(), c.fragments_merged);
            counters.insert("summaries".into(), c.summaries);
            counters.insert("kernel_dropped".into(), c.kernel_dropped);
            counters.insert("if_dropped".into(), c.if_dropped);
            points.push(health_point("collector", &c.sender, &counters, now));
        }
        w.send(std::mem::take(&mut points));
        let stats = w.finish(config.influx_finish);
        if stats.points_in_spool > 0 || stats.unaccounted() != 0 {
            error!(
                ?stats,
                "InfluxDB: not every point was written; the rest is in the spool for the next run"
            );
        } else {
            info!(
                written = stats.points_written,
                rejected = stats.points_rejected,
                collisions = stats.collisions,
                "InfluxDB: every point written or counted"
            );
        }
        report.influx = Some(stats);
    }
    let text = table(&report);
    if report.reconciled {
        info!("accounting\n{text}");
    } else {
        error!("accounting does not reconcile\n{text}");
    }
    if !malformed.is_empty() {
        warn!(?malformed, "undecodable messages from processors");
    }
    let mut line = serde_json::to_string(&report).unwrap_or_default();
    line.push('\n');
    health.write(&mut line)?;
    health.flush()?;
    if !report.routing_consistent {
        error!("MISROUTED: processors saw conflicting shard claims; see the accounting report");
    }
    Ok(report)
}

/// The aggregator's counters in Prometheus text format.
fn render_metrics(
    conns: &crate::conns::ConnStats,
    detect: &crate::detect::DetectStats,
    malformed: &BTreeMap<&'static str, u64>,
    influx: Option<crate::influx::InfluxStats>,
) -> String {
    let mut named: Vec<(String, u64)> = vec![
        ("conn_records_received".into(), conns.received),
        ("conn_records_written".into(), conns.released),
        ("conn_records_forced".into(), conns.forced),
        ("detect_records".into(), detect.records),
        ("detect_late".into(), detect.late),
        ("detect_cap_hits".into(), detect.cap_hits),
        ("alert_events".into(), detect.events),
    ];
    named.extend(
        malformed
            .iter()
            .map(|(r, n)| (format!("messages_malformed{{reason=\"{r}\"}}"), *n)),
    );
    if let Some(i) = influx {
        named.extend(
            i.counters()
                .into_iter()
                .map(|(k, v)| (format!("influx_{k}"), v)),
        );
    }
    let mut out = String::new();
    tapflow_runtime::prometheus_counters(
        "aggregator",
        named.iter().map(|(k, v)| (k.as_str(), *v)),
        &mut out,
    );
    out
}

/// Logs and writes alert events (and clears them).
fn write_alerts(
    events: &mut Vec<AlertEvent>,
    text: &mut String,
    log: &mut LogFile,
) -> Result<(), RunError> {
    for e in events.drain(..) {
        info!(event = e.event.as_str(), kind = e.kind, src = %e.src, dst = %e.dst, count = e.count, peak = e.peak, "alert");
        e.to_json(text);
    }
    log.write(text)
}
