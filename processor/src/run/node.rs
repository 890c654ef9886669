//! One processor incarnation between its sockets: each collector message goes through the
//! input accounting into the engine; each heartbeat tick checks liveness, refreshes the
//! metrics and reports upstream; the end flushes every session and sends the account.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tapflow_proto::control::SetHistory;
use tapflow_proto::procset::ProcessorSet;
use tapflow_proto::upstream::{ProcessorAccount, ProcessorCounters, ProcessorHeartbeat, UpMessage};
use tapflow_proto::LinkHeader;
use tapflow_runtime::curve::{NameBindings, RefusalLog};
use tapflow_runtime::ratelimit::RateLimit;
use tracing::{error, info, warn};

use super::delivery::Beat;
use super::links::{LinkError, Links};
use crate::config::Config;
use crate::engine::{Engine, RECORDS_PER_MESSAGE};
use crate::inputs::{Inputs, Refused, Verdict};

/// Input accounting and engine, with the buffer messages are encoded into.
pub(crate) struct Node<'c> {
    config: &'c Config,
    incarnation: u64,
    inputs: Inputs,
    engine: Engine,
    buf: Vec<u8>,
    started: Instant,
    /// WARN/ERROR lines about collector messages (undecodable: by reason; misrouted): a peer
    /// can send them by the thousand, so they are rate-limited (the counters count them all).
    log_limit: RateLimit<&'static str>,
    refusals: RefusalLog,
}

impl<'c> Node<'c> {
    pub(crate) fn new(config: &'c Config, incarnation: u64) -> Node<'c> {
        let inputs = match &config.processor_set {
            Some((_, set, id)) => Inputs::with_set(set.clone(), *id),
            None => Inputs::new(config.shard),
        };
        let bindings = NameBindings::of(&config.security);
        bindings.warn_unbound("collector");
        let inputs = inputs.guarded(bindings, config.max_senders);
        Node {
            config,
            incarnation,
            inputs,
            engine: Engine::new(config, incarnation),
            buf: Vec::with_capacity(1 << 16),
            started: Instant::now(),
            log_limit: RateLimit::default(),
            refusals: RefusalLog::default(),
        }
    }

    /// With `exit_on_eos`: every expected collector has sent end-of-stream.
    pub(crate) fn all_ended(&self) -> bool {
        self.config.exit_on_eos && self.inputs.ended() >= self.config.collectors
    }

    /// One message from a collector, authenticated as `user_id` (CURVE: the sending key):
    /// accounted, then its summaries or progress go to the engine, which releases what the
    /// watermark allows.
    pub(crate) fn on_message(&mut self, msg: &[u8], user_id: Option<&str>) {
        match self.inputs.on_bytes(msg, user_id) {
            Ok(Verdict::Accept { header, summaries }) => self.engine.accept(&header, summaries),
            Ok(Verdict::Progress { header, ended }) => self.engine.progress(&header, ended),
            Ok(Verdict::Misrouted {
                header,
                claim,
                ours,
                first,
            }) => {
                // Its time still moves on, or the merge would wait for it forever.
                self.engine.progress(&header, false);
                // Logged for each link's first, as long as the links are not new by the
                // thousand (a peer making up sender names).
                if let Some(l) = first
                    .then(|| self.log_limit.hit("misrouted", Instant::now()))
                    .flatten()
                {
                    error!(sender = %header.sender, ?claim, ?ours, suppressed = l.suppressed, links = l.total, "MISROUTED: collector disagrees on the processor set or its order; its batches are dropped and counted");
                }
            }
            Err(e) => {
                if let Some(l) = self.log_limit.hit(e.reason(), Instant::now()) {
                    warn!(error = %e, bytes = msg.len(), suppressed = l.suppressed, total = l.total, "dropped an undecodable message");
                }
            }
            Ok(Verdict::Refused { header, reason }) => {
                self.log_refused(&header, reason, user_id);
                return;
            }
        }
        self.engine.step();
    }

    /// A refused message, logged at the first refusal of its key (or of the cap) and then at
    /// most once a minute.
    fn log_refused(&mut self, h: &LinkHeader, reason: Refused, user_id: Option<&str>) {
        let peer = match reason {
            Refused::NameNotBound => user_id.unwrap_or("(no key)"),
            Refused::OverCap => "(max_senders)",
        };
        let Some(refused) = self.refusals.note(peer, Instant::now()) else {
            return;
        };
        match reason {
            Refused::NameNotBound => warn!(sender = %h.sender, key = peer, refused,
                "REFUSED: this collector key may not speak for that collector name (curve_clients `names`); its messages are dropped and counted as names_refused (logged at the first and at most once a minute)"),
            Refused::OverCap => {
                warn!(sender = %h.sender, incarnation = h.incarnation, max_senders = self.config.max_senders, refused,
                "REFUSED: a new collector link past max_senders; its messages are dropped and counted as senders_refused (logged at the first and at most once a minute)")
            }
        }
    }

    /// The heartbeat period has passed: a pending SIGHUP reloads the processor set, silent
    /// collectors are declared dead, and the metrics text is refreshed.
    pub(crate) fn on_tick(&mut self, links: &mut Links, reload: &AtomicBool, metrics: &Metrics) {
        if reload.swap(false, Ordering::Relaxed) {
            self.reload_set();
        }
        if let Some(announced) = links.poll_control() {
            self.apply_announced(&announced);
        }
        links.poll_handshakes();
        self.engine.check_liveness(self.started);
        self.engine.step();
        if self.config.metrics_listen.is_some() {
            let mut counters = self.engine.counters();
            counters.epoch_unknown = Some(self.inputs.epoch_unknown());
            counters.auth = links.auth_counters();
            // On /metrics always (names_refused with CURVE), in the account only when not 0.
            counters.names_refused = counters.auth.map(|_| self.inputs.names_refused());
            counters.senders_refused = Some(self.inputs.senders_refused());
            let text = crate::metrics::render(
                &self.inputs.account(&self.config.name, self.incarnation),
                &counters,
                &self.engine.collector_skews(),
            );
            if let Ok(mut g) = metrics.lock() {
                *g = text;
            }
        }
    }

    /// Sends the connection records waiting when a message's worth has gathered, or when
    /// `due` (every heartbeat period).
    pub(crate) fn send_conns(&mut self, links: &mut Links, due: bool) {
        // Announced data connections go at once, ahead of the records.
        self.engine
            .send_expects(links.upstream(), &mut self.buf, zmq::DONTWAIT);
        if self.engine.records.len() >= RECORDS_PER_MESSAGE || due {
            self.engine
                .send_conns(links.upstream(), &mut self.buf, zmq::DONTWAIT);
        }
    }

    /// Tells the aggregator how far this processor has got and what it holds.
    pub(crate) fn send_heartbeat(&mut self, links: &mut Links) {
        let hb = self.heartbeat(links);
        UpMessage::Heartbeat(hb).encode(&mut self.buf);
        // Not taken (no aggregator connected): the next one says it all again.
        let _ = links.upstream().send_heartbeat(&self.buf);
    }

    fn heartbeat(&self, links: &mut Links) -> ProcessorHeartbeat {
        ProcessorHeartbeat {
            processor: self.config.name.clone(),
            incarnation: self.incarnation,
            watermark_ns: self.inputs.watermark_ns(),
            silent_collectors: self.engine.silent_collectors(),
            collectors: self.inputs.collector_health(),
            links: self.inputs.progress(),
            flows_open: self.engine.table.stats().open_flows,
            member: self.config.processor_set.as_ref().map(|(_, _, id)| *id),
            unacked: links.upstream().unacked().map(Box::new),
        }
    }

    /// Ends every session, sends the last records, then the account (waiting for room).
    pub(crate) fn finish(mut self, links: &mut Links) -> Result<(), LinkError> {
        self.engine.finish();
        self.engine.send_conns(links.upstream(), &mut self.buf, 0);
        let account = self.account(links);
        let received: u64 = account.links.iter().map(|l| l.summaries_received).sum();
        let gaps: u64 = account.links.iter().map(|l| l.gaps).sum();
        let misrouted: u64 = account.links.iter().map(|l| l.misrouted).sum();
        self.log_limit
            .log_suppressed("messages from collectors dropped");
        self.engine.log_suppressed();
        info!(received, gaps, misrouted, malformed = ?account.malformed, claim = ?account.claim, counters = ?account.counters, "processor finished");
        let control_malformed = links.control_malformed();
        if control_malformed > 0 {
            info!(control_malformed, "undecodable control messages");
        }
        let beat = Beat {
            hb: self.heartbeat(links),
            every: self.config.heartbeat,
        };
        UpMessage::Eos(Box::new(account)).encode(&mut self.buf);
        let wait = self
            .config
            .acks
            .as_ref()
            .map_or(std::time::Duration::ZERO, |a| a.wait);
        links.send_eos(&self.buf, wait, beat)
    }

    /// The end-of-stream account: the links as the inputs and the merge saw them, and every
    /// counter (`epoch_unknown` only with a processor set, `auth` only with CURVE).
    fn account(&self, links: &Links) -> ProcessorAccount {
        let mut account = self.inputs.account(&self.config.name, self.incarnation);
        self.engine.fill_links(&mut account.links);
        account.counters = self.engine.counters();
        if self.config.processor_set.is_some() {
            account.counters.epoch_unknown = Some(self.inputs.epoch_unknown());
        }
        account.counters.auth = links.auth_counters();
        self.refused_counters(&mut account.counters);
        account
    }

    /// The refusals, in an account only when there were some: a run without any reports
    /// what it reported before they were counted.
    fn refused_counters(&self, counters: &mut ProcessorCounters) {
        let some = |n: u64| (n > 0).then_some(n);
        counters.names_refused = some(self.inputs.names_refused());
        counters.senders_refused = some(self.inputs.senders_refused());
    }

    /// SIGHUP: re-reads the processor set; a reload must extend the history in use.
    fn reload_set(&mut self) {
        let (Some((path, _, _)), Some(epochs)) =
            (&self.config.processor_set, self.engine.epochs.as_mut())
        else {
            info!("SIGHUP ignored: no processor set (--processor-set) to reload");
            return;
        };
        match tapflow_runtime::read_processor_set(path, false) {
            Ok(set) if !set.extends(epochs.set()) => error!(
                "SIGHUP: processor set {} does not extend the history in use (a reload may only append [[change]] entries); keeping it",
                path.display()
            ),
            Ok(set) => self.use_set(set, "SIGHUP: processor set reloaded"),
            Err(e) => error!("SIGHUP: {e}"),
        }
    }

    /// The history the aggregator announced on its control channel (`--control`), applied as
    /// a SIGHUP reload is: it must extend the history in use.
    fn apply_announced(&mut self, announced: &SetHistory) {
        let Some(epochs) = self.engine.epochs.as_ref() else {
            return;
        };
        let current = epochs.set();
        match current.with_history(&announced.initial, &announced.changes, false) {
            Ok(set) if set.epochs().len() == current.epochs().len() => {}
            Ok(set) if !set.extends(current) => error!(
                seq = announced.seq,
                "processor set announced by the aggregator does not extend the history in use; keeping it"
            ),
            Ok(set) => self.use_set(set, "processor set announced by the aggregator"),
            Err(e) => error!(seq = announced.seq, "processor set announced by the aggregator: {e}"),
        }
    }

    /// A set that extends the one in use: routing is checked by it and the engine switches at
    /// its instants.
    fn use_set(&mut self, set: ProcessorSet, what: &'static str) {
        let Some(epochs) = self.engine.epochs.as_mut() else {
            return;
        };
        info!(
            epochs = set.epochs().len(),
            members = ?set.latest().table.members(),
            "{what}"
        );
        self.inputs.update_set(set.clone());
        epochs.update(set);
        self.engine.next_switch_ns = epochs.next_switch_ns();
    }
}

/// The text served on `/metrics`.
pub(crate) type Metrics = tapflow_runtime::MetricsText;
