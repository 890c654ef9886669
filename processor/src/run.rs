//! The processor's edges: a PULL socket bound for collectors, a PUSH socket to the aggregator,
//! and the loop that drives inputs -> merge -> flow table -> connection batches.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::flag;
use tapflow_proto::upstream::{ConnBatch, ProcessorHeartbeat, TrafficPartial, UpMessage};
use tapflow_proto::wire::MAX_MESSAGE_BYTES;
use tapflow_proto::{FlowKey, PacketSummary};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::epochs::{continues, Epochs};
use crate::inputs::{Inputs, Verdict};
use crate::merge::Merger;
use crate::session::{ConnRecord, FlowTable, SessionConfig};

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

/// Connection records are sent in messages of at most this many.
const RECORDS_PER_MESSAGE: usize = 2048;
/// IP-tunnel outer flows remembered for naming tunnel parents (count past it is reported).
const IP_TUNNELS_CAP: usize = 65_536;

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

/// Merge, flow table and the records waiting to be sent (sans-IO apart from `send_conns`).
struct Engine {
    name: String,
    incarnation: u64,
    merger: Merger,
    table: FlowTable,
    released: Vec<PacketSummary>,
    records: Vec<ConnRecord>,
    tunnel_outers: Vec<(FlowKey, u64)>,
    ip_tunnels: HashMap<FlowKey, u64>,
    ip_tunnels_over_cap: u64,
    settle_ns: u64,
    swept_to: u64,
    records_sent: u64,
    records_unsent: u64,
    /// Bytes of the connection-record messages handed to ZeroMQ.
    conn_bytes_sent: u64,
    finished: bool,
    dead_after: std::time::Duration,
    last_heard: HashMap<(String, u64), Instant>,
    dead: std::collections::HashSet<(String, u64)>,
    ended: std::collections::HashSet<(String, u64)>,
    dead_declared: u64,
    /// Collector incarnations replaced by a newer one of the same name (restarted).
    superseded: std::collections::HashSet<(String, u64)>,
    /// Inputs this incarnation joined mid-stream (first sequence number above 0: an earlier
    /// incarnation of this processor served their start), by merge input, with the
    /// watermark they had then.
    joined_mid_stream: HashMap<u32, u64>,
    /// Merge inputs this incarnation has had a message from: only an input's first message
    /// tells whether it was joined mid-stream.
    inputs_seen: std::collections::HashSet<u32>,
    /// Flows that may continue a session an earlier incarnation held (see `process_released`).
    flows_split: u64,
    waived: bool,
    traffic: crate::traffic::Traffic,
    /// Processor-set switches (`None`: a fixed shard).
    epochs: Option<Epochs>,
    /// `epochs`' next switch time, `u64::MAX` when none (checked per summary).
    next_switch_ns: u64,
}

impl Engine {
    fn new(config: &Config, incarnation: u64) -> Engine {
        let session = SessionConfig {
            max_flows: config.max_flows,
            ..SessionConfig::default()
        };
        let settle_ns = settle_ns(&session);
        Engine {
            name: config.name.clone(),
            incarnation,
            merger: Merger::new(config.collectors, config.merge_cap),
            table: FlowTable::new(session),
            released: Vec::with_capacity(4096),
            records: Vec::with_capacity(RECORDS_PER_MESSAGE),
            tunnel_outers: Vec::new(),
            ip_tunnels: HashMap::new(),
            ip_tunnels_over_cap: 0,
            settle_ns,
            swept_to: 0,
            records_sent: 0,
            conn_bytes_sent: 0,
            records_unsent: 0,
            finished: false,
            dead_after: config.dead_after,
            last_heard: HashMap::new(),
            dead: Default::default(),
            ended: Default::default(),
            dead_declared: 0,
            superseded: Default::default(),
            joined_mid_stream: HashMap::new(),
            inputs_seen: std::collections::HashSet::new(),
            flows_split: 0,
            waived: false,
            traffic: crate::traffic::Traffic::new(),
            next_switch_ns: u64::MAX,
            epochs: config
                .processor_set
                .as_ref()
                .map(|(_, set, id)| Epochs::new(set.clone(), *id)),
        }
        .with_switch_time()
    }

    /// Notes that an input spoke (wall clock: liveness is about the wire, not packet time).
    /// A new incarnation of a collector supersedes its earlier ones: they died without
    /// end-of-stream (a clean restart ends them first), so they stop holding the watermark and
    /// are no longer reported silent.
    fn heard(&mut self, h: &tapflow_proto::LinkHeader) {
        let key = (h.sender.clone(), h.incarnation);
        if self.dead.remove(&key) {
            warn!(sender = %h.sender, "collector declared dead is back: it holds the watermark again");
            self.merger.revive(&h.sender, h.incarnation);
            self.traffic.close_gaps(&h.sender, h.watermark_ns);
        }
        if self.last_heard.insert(key, Instant::now()).is_none() {
            let older: Vec<(String, u64)> = self
                .last_heard
                .keys()
                .filter(|(s, i)| *s == h.sender && *i != h.incarnation)
                .filter(|k| !self.ended.contains(*k) && !self.superseded.contains(*k))
                .cloned()
                .collect();
            if !older.is_empty() {
                // What the old incarnation read but never sent is missing up to here.
                let from = self.gap_start().min(h.watermark_ns);
                self.traffic.open_gap(&h.sender, from);
                self.traffic.close_gaps(&h.sender, h.watermark_ns);
            }
            for old in older {
                warn!(sender = %h.sender, old = old.1, new = h.incarnation, "collector restarted: its previous incarnation ended without end-of-stream; what it had not sent is lost with it");
                self.merger.declare_dead(&old.0, old.1);
                self.dead.remove(&old);
                self.superseded.insert(old);
            }
        }
    }

    /// Records that this incarnation joined an input mid-stream (called after the merge
    /// knows the input).
    fn note_join(&mut self, h: &tapflow_proto::LinkHeader) {
        let Some(id) = self.merger.input_id(&h.sender, h.incarnation) else {
            return;
        };
        // Only the input's first message says where this incarnation joined its stream.
        if !self.inputs_seen.insert(id) || h.seq == 0 {
            return;
        }
        info!(sender = %h.sender, seq = h.seq, "joined the collector's link mid-stream (this processor was restarted): flows it first sees now may be split sessions");
        self.joined_mid_stream.insert(id, h.watermark_ns);
    }

    /// Inputs silent for `dead_after` leave the watermark (and are logged); collectors that
    /// never appeared are no longer waited for after that long.
    fn check_liveness(&mut self, started: Instant) {
        let mut declared = Vec::new();
        for ((sender, incarnation), at) in &self.last_heard {
            let key = (sender.clone(), *incarnation);
            if at.elapsed() >= self.dead_after
                && !self.dead.contains(&key)
                && !self.ended.contains(&key)
                && !self.superseded.contains(&key)
            {
                warn!(%sender, incarnation, silent_ms = at.elapsed().as_millis() as u64, "collector silent: declared dead, its windows go on without it (marked incomplete)");
                declared.push(key);
            }
        }
        for key in declared {
            // Its data stops about where the merge had got to, the slowest input's watermark.
            let from = self.gap_start();
            self.traffic.open_gap(&key.0, from);
            self.merger.declare_dead(&key.0, key.1);
            self.dead_declared += 1;
            self.dead.insert(key);
        }
        if !self.waived
            && started.elapsed() >= self.dead_after
            && self.merger.watermark_ns().is_none()
        {
            warn!(
                heard = self.last_heard.len(),
                "not every expected collector has appeared: going on without the missing ones"
            );
            self.merger.waive_expected();
            self.waived = true;
        }
    }

    /// Names of the collectors declared dead and not back.
    fn silent_collectors(&self) -> Vec<String> {
        let mut v: Vec<String> = self.dead.iter().map(|(s, _)| s.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    fn accept(&mut self, h: &tapflow_proto::LinkHeader, summaries: &[PacketSummary]) {
        self.heard(h);
        self.merger.push(
            &h.sender,
            h.incarnation,
            h.watermark_ns,
            summaries,
            &mut self.released,
        );
        self.note_join(h);
    }

    fn progress(&mut self, h: &tapflow_proto::LinkHeader, ended: bool) {
        self.heard(h);
        if ended {
            self.ended.insert((h.sender.clone(), h.incarnation));
        }
        self.merger
            .advance(&h.sender, h.incarnation, h.watermark_ns);
        if ended {
            self.merger.end(&h.sender, h.incarnation);
        }
        self.note_join(h);
    }

    fn with_switch_time(mut self) -> Engine {
        self.next_switch_ns = self
            .epochs
            .as_ref()
            .map_or(u64::MAX, Epochs::next_switch_ns);
        self
    }

    /// Applies the processor-set switches at or before packet time `t`.
    fn switch_epochs(&mut self, t: u64) {
        if let Some(e) = self.epochs.as_mut() {
            e.apply(t, &mut self.table, &mut self.records);
            self.next_switch_ns = e.next_switch_ns();
        }
    }

    /// Releases what the watermark allows into the table and sweeps.
    fn step(&mut self) {
        self.merger.release(&mut self.released);
        self.process_released();
        if let Some(wm) = self.merger.watermark_ns() {
            if wm != u64::MAX && wm >= self.next_switch_ns {
                self.switch_epochs(wm);
            }
            if wm != u64::MAX && wm > self.swept_to {
                self.table.sweep(wm, &mut self.records);
                self.swept_to = wm;
            }
        }
    }

    fn process_released(&mut self) {
        let origins = self.merger.take_origins();
        for (s, &origin) in self.released.drain(..).zip(origins.iter()) {
            if s.ts_ns >= self.next_switch_ns {
                if let Some(e) = self.epochs.as_mut() {
                    e.apply(s.ts_ns, &mut self.table, &mut self.records);
                    self.next_switch_ns = e.next_switch_ns();
                }
            }
            let created = self.table.stats().flows_created;
            self.table.on_summary(&s, &mut self.records);
            if self.table.stats().flows_created > created {
                if let Some(e) = self.epochs.as_mut() {
                    e.on_created(&s, &mut self.table);
                }
                if self
                    .joined_mid_stream
                    .get(&origin)
                    .is_some_and(|&joined| continues(self.table.config(), &s, joined))
                {
                    self.flows_split += 1;
                }
            }
            if s.flags & flag::TUNNEL_INNER == 0 {
                let started = self.table.stats().flows_created > created;
                self.traffic
                    .count(s.ts_ns, origin, s.key.proto, s.ip_len, started);
            }
            if s.flags & flag::TUNNEL_OUTER == 0 {
                continue;
            }
            if matches!(s.key.proto, ip_proto::GRE | 4 | 41) {
                // Zeek keeps IP tunnels out of conn.log; their uid still names the parent.
                if !self.ip_tunnels.contains_key(&s.key) {
                    if self.ip_tunnels.len() < IP_TUNNELS_CAP {
                        self.ip_tunnels.insert(s.key, s.ts_ns);
                        self.tunnel_outers.push((s.key, s.ts_ns));
                    } else {
                        self.ip_tunnels_over_cap += 1;
                    }
                }
            } else if self.table.first_ts(&s.key) == Some(s.ts_ns) {
                self.tunnel_outers.push((s.key, s.ts_ns));
            }
        }
        self.merger.give_back_origins(origins);
    }

    /// Where a gap that starts now starts in packet time: the merge's watermark.
    fn gap_start(&self) -> u64 {
        self.merger
            .watermark_ns()
            .filter(|&w| w != u64::MAX)
            .unwrap_or(0)
    }

    /// Traffic windows the watermark has passed (all of them once finished), as partials.
    fn finished_traffic(&mut self) -> Vec<TrafficPartial> {
        let upto = if self.finished {
            u64::MAX
        } else {
            self.merger
                .watermark_ns()
                .filter(|&w| w != u64::MAX)
                .unwrap_or(0)
        };
        let merger = &self.merger;
        self.traffic
            .finished(upto, |i| merger.input_name(i).to_owned())
    }

    /// End of stream: everything buffered goes through the table, and every session ends.
    fn finish(&mut self) {
        self.merger.drain(&mut self.released);
        self.process_released();
        // A processor that left the set ends when the collectors, reaching the switch, retire
        // its links (their watermarks stop just short of it): its flows moved, and end split.
        if let Some(e) = self.epochs.as_mut().filter(|e| e.leaving()) {
            e.apply(u64::MAX, &mut self.table, &mut self.records);
        }
        self.table.flush(&mut self.records);
        self.finished = true;
    }

    /// The watermark records are complete up to: the merge's, or "everything" once finished.
    fn watermark_ns(&self) -> u64 {
        if self.finished {
            return u64::MAX;
        }
        // Sweeps use whole seconds: a connection may leave up to a second after its deadline.
        self.merger
            .watermark_ns()
            .filter(|&w| w != u64::MAX)
            .map(|w| w.min(self.swept_to))
            .unwrap_or(0)
    }

    fn send_conns(&mut self, push: &zmq::Socket, buf: &mut Vec<u8>, flags: i32) {
        let batch = ConnBatch {
            processor: self.name.clone(),
            incarnation: self.incarnation,
            watermark_ns: self.watermark_ns(),
            settle_ns: self.settle_ns,
            records: std::mem::take(&mut self.records),
            tunnel_outers: std::mem::take(&mut self.tunnel_outers),
            traffic: self.finished_traffic(),
            records_seq: self.records_sent + self.records_unsent,
        };
        let n = batch.records.len() as u64;
        UpMessage::Conns(batch).encode(buf);
        match push.send(&buf[..], flags) {
            Ok(()) => {
                self.records_sent += n;
                self.conn_bytes_sent += buf.len() as u64;
            }
            Err(e) => {
                self.records_unsent += n;
                error!(error = %e, records = n, "connection records not sent to the aggregator (lost)");
            }
        }
    }

    /// Per collector name (over its incarnations): the current and the largest skew seen, ms.
    fn collector_skews(&self) -> BTreeMap<String, (u64, u64)> {
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for i in self.merger.inputs() {
            let e = out.entry(i.sender.to_owned()).or_default();
            e.0 = e.0.max(i.skew_ns / 1_000_000);
            e.1 = e.1.max(i.skew_max_ns / 1_000_000);
        }
        out
    }

    /// Each link's share of the merge's late summaries and its largest skew (a link and a
    /// merge input are both one collector incarnation).
    fn fill_links(&self, links: &mut [tapflow_proto::upstream::LinkAccount]) {
        let by_input: HashMap<(&str, u64), (u64, u64)> = self
            .merger
            .inputs()
            .map(|i| {
                (
                    (i.sender, i.incarnation),
                    (i.late, i.skew_max_ns / 1_000_000),
                )
            })
            .collect();
        for l in links {
            if let Some(&(late, skew)) = by_input.get(&(l.sender.as_str(), l.incarnation)) {
                l.late = late;
                l.skew_max_ms = skew;
            }
        }
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        let t = self.table.stats();
        let m = self.merger.stats();
        [
            ("summaries_processed", t.summaries),
            ("flows_created", t.flows_created),
            ("records", t.records),
            ("interim_records", t.interim_records),
            ("records_sent", self.records_sent),
            ("records_unsent", self.records_unsent),
            ("conn_bytes_sent", self.conn_bytes_sent),
            ("flows_evicted", t.evicted),
            ("flows_open", t.open_flows),
            ("bad_checksum", t.bad_checksum),
            ("tunnel_outer_skipped", t.tunnel_outer_skipped),
            ("truncated_uncounted", t.truncated_uncounted),
            ("history_truncated", t.history_truncated),
            ("merge_late", m.late),
            ("merge_forced", m.forced),
            ("ip_tunnels_over_cap", self.ip_tunnels_over_cap),
            ("collectors_declared_dead", self.dead_declared),
            ("collectors_superseded", self.superseded.len() as u64),
            ("flows_split", self.flows_split),
            (
                "flows_moved_out",
                self.epochs.as_ref().map_or(0, |e| e.flows_moved_out),
            ),
            (
                "flows_continued",
                self.epochs.as_ref().map_or(0, |e| e.flows_continued),
            ),
            ("traffic_late", self.traffic.late),
            ("traffic_keys_over_cap", self.traffic.over_cap),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// How long after its last packet a connection can still be open: the longest timeout plus
/// two seconds of sweep granularity.
fn settle_ns(c: &SessionConfig) -> u64 {
    [
        c.tcp_inactivity_ns,
        c.tcp_handshake_inactivity_ns,
        c.udp_inactivity_ns,
        c.icmp_inactivity_ns,
        c.other_inactivity_ns,
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
    .saturating_add(
        c.tcp_close_delay_ns
            .max(c.tcp_reset_delay_ns)
            .max(c.tcp_attempt_delay_ns)
            .max(c.tcp_linger_ns),
    )
    .saturating_add(2_000_000_000)
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
