//! The aggregator as a sans-IO state machine: the processors' messages go in through `on_*`
//! methods, with the time passed in (it never reads a clock); what they produce goes out
//! through the fan-out of [`Sinks`]. `run.rs` owns the socket, signals and clock and drives it.
//!
//! Records are ordered by the [`ConnSorter`]; each released record goes, in release order, to
//! detection and to every sink. Alert events from all three producers (pipeline health on
//! heartbeats, detection after each release, the final judgement at the end) reach the sinks
//! in one place, [`Aggregator::emit_alerts`], after the records that caused them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use tapflow_proto::conn::{ConnRecord, InvalidRecord};
use tapflow_proto::control::SetHistory;
use tapflow_proto::procset::ProcessorSet;
use tapflow_proto::upstream::{ConnBatch, ProcessorAccount, ProcessorHeartbeat, UpMessage};
use tapflow_runtime::ratelimit::RateLimit;
use tracing::{error, info, warn};

use crate::accounting::{reconcile_with, table, AccountingReport, SetReport};
use crate::config::Config;
use crate::conns::ConnSorter;
use crate::control::{Membership, Policy};
use crate::detect::AlertEvent;
use crate::detect_thread::Detection;
use crate::health::HealthWatch;
use crate::inbox::Refused;
use crate::members::{Members, SILENT_AFTER};
use crate::sink::{SinkError, Sinks};
use crate::upstream::Upstream;

/// A processor heartbeat's drop rate above which pipeline health raises `drop_rate`.
const DROP_RATE_ALERT: f64 = 0.01;

/// The time as the edge read it: monotonic (for silence) and wall clock (for health points).
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub instant: Instant,
    /// Nanoseconds since the Unix epoch.
    pub unix_ns: u64,
}

/// What the machine needs of the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Processors expected (without a processor set).
    pub processors: usize,
    /// The processor set in use and where it was read from.
    pub processor_set: Option<(PathBuf, ProcessorSet)>,
    /// End once every expected processor has ended.
    pub exit_on_eos: bool,
    /// Records held for ordering before the oldest is written anyway.
    pub conn_cap: usize,
    /// How processors are declared dead and added back (with a processor set).
    pub membership: Policy,
}

impl Settings {
    pub fn of(config: &Config) -> Settings {
        Settings {
            processors: config.processors,
            processor_set: config.processor_set.clone(),
            exit_on_eos: config.exit_on_eos,
            conn_cap: config.conn_cap,
            membership: config.membership,
        }
    }
}

/// One processor incarnation's account, as kept until the end of the run.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Incarnation {
    processor: String,
    incarnation: u64,
}

pub struct Aggregator {
    exit_on_eos: bool,
    /// Processors expected: all members of any epoch when routing is by processor set (a
    /// reload that adds one makes the merge wait for it too).
    expected: usize,
    processor_set: Option<(PathBuf, ProcessorSet)>,
    sorter: ConnSorter,
    detector: Box<dyn Detection>,
    health_watch: HealthWatch,
    sinks: Sinks,
    members: Members,
    /// Dead processors removed, and back ones added, without an operator.
    membership: Membership,
    upstream: Upstream,
    accounts: BTreeMap<Incarnation, ProcessorAccount>,
    malformed: BTreeMap<&'static str, u64>,
    /// The WARN about undecodable messages, by reason: rate-limited (a peer can send them by
    /// the thousand; `malformed` counts them all).
    malformed_log: RateLimit<&'static str>,
    /// Records of flows split across processors by a processor-set switch.
    split_records: u64,
    /// Alert events not yet handed to the sinks.
    events: Vec<AlertEvent>,
    /// Messages the inbox's gate refused: (names_refused, senders_refused).
    refused: (u64, u64),
    /// With a state directory: the report's durability section (`set_durability`).
    durability: Option<crate::accounting::DurabilityReport>,
    /// The detector's state taken by [`Aggregator::sync_outputs`] for the checkpoint's
    /// snapshot.
    detect_state: Option<Result<Vec<u8>, crate::detect::StateError>>,
}

impl Aggregator {
    pub fn new(settings: Settings, detector: Box<dyn Detection>, sinks: Sinks) -> Aggregator {
        Aggregator {
            exit_on_eos: settings.exit_on_eos,
            expected: settings.processors,
            processor_set: settings.processor_set,
            sorter: ConnSorter::new(settings.processors, settings.conn_cap),
            detector,
            health_watch: HealthWatch::new(DROP_RATE_ALERT),
            sinks,
            members: Members::default(),
            membership: Membership::new(settings.membership),
            upstream: Upstream::new(),
            accounts: BTreeMap::new(),
            malformed: BTreeMap::new(),
            malformed_log: RateLimit::default(),
            split_records: 0,
            events: Vec::new(),
            refused: (0, 0),
            durability: None,
            detect_state: None,
        }
    }

    /// What the state directory did, for the report [`Aggregator::finish`] makes.
    pub fn set_durability(&mut self, d: crate::accounting::DurabilityReport) {
        self.durability = Some(d);
    }

    /// One decoded message from a processor.
    pub fn on_message(&mut self, m: UpMessage, now: Now) -> Result<(), SinkError> {
        match m {
            UpMessage::Heartbeat(hb) => self.on_heartbeat(&hb, now),
            UpMessage::Conns(batch) => self.on_conns(batch),
            UpMessage::Eos(account) => {
                self.on_eos(*account);
                Ok(())
            }
            // Announced data connections: held until the records they label are released.
            UpMessage::Expects(batch) => {
                self.sorter.expects_mut().push(&batch.expects);
                Ok(())
            }
        }
    }

    /// A heartbeat: membership, restarts, live health and pipeline self-alerts.
    pub fn on_heartbeat(&mut self, hb: &ProcessorHeartbeat, now: Now) -> Result<(), SinkError> {
        self.members
            .heartbeat(&hb.processor, hb.member, now.instant);
        self.membership
            .heartbeat(&hb.processor, hb.member, hb.watermark_ns, now.instant);
        for old in self.upstream.on_heartbeat(hb) {
            warn!(processor = %hb.processor, old, new = hb.incarnation, "processor restarted: its previous incarnation sent no end-of-stream; its open sessions and what it had not passed on are lost (see the accounting report)");
        }
        self.sinks.on_live_health(hb, now.unix_ns);
        self.health_watch
            .heartbeat(hb, now.unix_ns, &mut self.events);
        self.detector.take_events(&mut self.events);
        self.emit_alerts()?;
        self.sinks.flush()
    }

    /// A batch of connection records: ordered, released to detection and the sinks as far as
    /// every processor's watermark allows; its interim records go straight out.
    pub fn on_conns(&mut self, batch: ConnBatch) -> Result<(), SinkError> {
        self.upstream.on_conns(&batch);
        self.sinks.on_batch(&batch);
        self.sorter.push(batch);
        let released = self.release(false);
        self.detector.flush();
        self.detector.take_events(&mut self.events);
        released?;
        self.sinks.on_released()?;
        self.emit_alerts()?;
        self.sinks.flush()?;
        for r in self.sorter.take_interim() {
            self.sinks.on_interim(&r)?;
        }
        Ok(())
    }

    /// A processor's end-of-stream, with its account.
    pub fn on_eos(&mut self, account: ProcessorAccount) {
        info!(processor = %account.processor, links = account.links.len(), "processor ended");
        self.members.ended(&account.processor);
        self.membership.ended(&account.processor);
        self.health_watch
            .ended(&account.processor, account.incarnation);
        self.end_processor(&account.processor);
        let key = Incarnation {
            processor: account.processor.clone(),
            incarnation: account.incarnation,
        };
        self.accounts.insert(key, account);
    }

    /// A message this aggregator cannot read: counted by `reason`, never fatal.
    /// The first of each reason is logged, then at most one per interval with the count
    /// suppressed since; [`Aggregator::log_suppressed`] says the rest at exit.
    pub fn on_malformed(&mut self, reason: &'static str, error: &str, bytes: usize, now: Instant) {
        *self.malformed.entry(reason).or_default() += 1;
        if let Some(l) = self.malformed_log.hit(reason, now) {
            warn!(%error, bytes, suppressed = l.suppressed, total = l.total, "dropped an undecodable message");
        }
    }

    /// The summary of the log lines rate-limited (before [`Aggregator::finish`]).
    pub fn log_suppressed(&mut self) {
        self.malformed_log
            .log_suppressed("dropped undecodable messages");
    }

    /// A message the inbox's gate refused: counted.
    pub fn on_refused(&mut self, reason: Refused) {
        match reason {
            Refused::NameNotBound => self.refused.0 += 1,
            Refused::OverCap => self.refused.1 += 1,
        }
    }

    /// Time passes: processors that left the set and went silent are given up. Returns true
    /// when the run should end (`exit_on_eos` and every expected processor ended or given up).
    pub fn tick(&mut self, now: Instant) -> bool {
        let gone = match self.processor_set.as_ref() {
            Some((_, set)) => self.members.newly_gone(set, now),
            None => Vec::new(),
        };
        for (name, id) in gone {
            warn!(processor = %name, id, silent_s = SILENT_AFTER.as_secs(), "processor left the processor set and is silent (crashed?): no longer waited for; what it held is lost (see dead_processors in the report)");
            self.end_processor(&name);
            self.note_given_up(id, name);
        }
        let verdict = match self.processor_set.as_ref() {
            Some((_, set)) => self.membership.decide(set, now),
            None => None,
        };
        if let Some(v) = verdict {
            self.on_verdict(v);
        }
        self.exit_on_eos && self.all_ended()
    }

    /// Every expected processor has ended (or was given up): nothing more is coming.
    pub fn all_ended(&self) -> bool {
        // Processors by name: an incarnation that died (restarted) sends no account; one given
        // up after it left the set never will.
        self.accounts
            .keys()
            .map(|k| &k.processor)
            .chain(self.members.gone())
            .collect::<BTreeSet<_>>()
            .len()
            >= self.expected
    }

    /// The processor-set history to announce to collectors: once this aggregator has decided a
    /// change (before, the collectors' own file says the same).
    pub fn announced(&self) -> Option<SetHistory> {
        let (_, set) = self.processor_set.as_ref()?;
        if self.membership.decisions.is_empty() {
            return None;
        }
        let (initial, changes) = set.history();
        Some(SetHistory {
            seq: self.membership.decisions.len() as u64,
            initial,
            changes,
        })
    }

    /// Where the processor set in use was read from, if routing is by processor set.
    pub fn processor_set_path(&self) -> Option<&PathBuf> {
        self.processor_set.as_ref().map(|(path, _)| path)
    }

    /// The processor set read again (SIGHUP): taken if it only appends to the history in use.
    pub fn on_processor_set(&mut self, set: ProcessorSet) {
        let Some((path, old)) = self.processor_set.as_ref() else {
            return;
        };
        if !set.extends(old) {
            error!("SIGHUP: processor set {} does not extend the history in use (a reload may only append [[change]] entries); keeping it", path.display());
            return;
        }
        self.expected = set.all_members().len();
        self.sorter.set_processors(self.expected);
        self.sinks.on_processors(self.expected);
        info!(
            epochs = set.epochs().len(),
            processors = self.expected,
            "SIGHUP: processor set reloaded"
        );
        let path = path.clone();
        self.processor_set = Some((path, set));
    }

    /// SIGHUP: every output opens its files again.
    pub fn reopen(&mut self) -> Result<(), SinkError> {
        self.sinks.reopen()
    }

    /// The aggregator's counters in Prometheus text format.
    pub fn metrics(&self) -> String {
        let conns = self.sorter.stats();
        let detect = self.detector.stats();
        let mut named: Vec<(String, u64)> = vec![
            ("conn_records_received".into(), conns.received),
            ("conn_records_written".into(), conns.released),
            ("conn_records_forced".into(), conns.forced),
            ("detect_records".into(), detect.records),
            ("detect_late".into(), detect.late),
            ("detect_cap_hits".into(), detect.cap_hits),
            ("alert_events".into(), detect.events),
            ("names_refused".into(), self.refused.0),
            ("senders_refused".into(), self.refused.1),
            ("expects_received".into(), conns.expects.received),
            ("expects_invalid".into(), conns.expects.invalid),
            ("expects_over_cap".into(), conns.expects.over_cap),
            ("expects_expired".into(), conns.expects.expired),
            ("expects_labelled".into(), conns.expects.labelled),
            ("processors_removed".into(), self.membership.counts.removed),
            ("processors_added".into(), self.membership.counts.added),
            (
                "membership_pinned_suppressed".into(),
                self.membership.counts.pinned_suppressed,
            ),
        ];
        named.extend(InvalidRecord::ALL.iter().filter_map(|&r| {
            let n = conns.invalid.get(r);
            (n > 0).then(|| {
                (
                    format!("conn_records_invalid{{reason=\"{}\"}}", r.as_str()),
                    n,
                )
            })
        }));
        named.extend(
            self.malformed
                .iter()
                .map(|(r, n)| (format!("messages_malformed{{reason=\"{r}\"}}"), *n)),
        );
        self.sinks.counters(&mut named);
        let mut out = String::new();
        tapflow_runtime::prometheus_counters(
            "aggregator",
            named.iter().map(|(k, v)| (k.as_str(), *v)),
            &mut out,
        );
        out
    }

    /// End of the run at wall-clock `now_ns`: every record still held is released, detection
    /// judges its last windows, and the accounting report is built, handed to every sink and
    /// returned. `auth_rejected`: CURVE clients the ZAP handler refused.
    pub fn finish(
        mut self,
        now_ns: u64,
        auth_rejected: u64,
    ) -> Result<AccountingReport, SinkError> {
        self.release(true)?;
        self.sinks.end_of_records()?;
        let detect_stats = self.detector.finish(&mut self.events);
        self.emit_alerts()?;
        info!(?detect_stats, "detection finished");
        let conn_stats = self.sorter.stats();
        info!(?conn_stats, "connection records written");
        let accounts: Vec<ProcessorAccount> = self.accounts.into_values().collect();
        let mut report = reconcile_with(&accounts, &self.upstream);
        report.conns = Some(conn_stats);
        report.detection = Some(detect_stats);
        report.auth_rejected = auth_rejected;
        report.durability = self.durability.take();
        if let Some(d) = report.durability.as_mut() {
            d.unacked = self.health_watch.unacked();
        }
        report.names_refused = Some(self.refused.0).filter(|&n| n > 0);
        report.senders_refused = Some(self.refused.1).filter(|&n| n > 0);
        report.processor_set = self
            .processor_set
            .as_ref()
            .map(|(_, set)| SetReport::new(set, &report.processors, self.split_records));
        report.membership = self
            .processor_set
            .as_ref()
            .map(|_| self.membership.report());
        report.settle_removed();
        let m = &self.membership.counts;
        if m.removed + m.added + m.pinned_suppressed + m.last_member_kept > 0 {
            info!(
                removed = m.removed,
                added = m.added,
                pinned_suppressed = m.pinned_suppressed,
                last_member_kept = m.last_member_kept,
                "processor membership decisions"
            );
        }
        self.sinks.finish(&mut report, now_ns)?;
        report.records_unwritten = self.sinks.unwritten();
        report.complete &= report.records_unwritten.is_empty();
        log_report(&report, &self.malformed);
        self.sinks.on_report(&report)?;
        if !report.routing_consistent {
            error!("MISROUTED: processors saw conflicting shard claims; see the accounting report");
        }
        // The health log may have lost the report itself: the report returned says so.
        report.records_unwritten = self.sinks.unwritten();
        report.complete &= report.records_unwritten.is_empty();
        Ok(report)
    }

    /// Hands the records that can be written now (`drain`: all of them) to detection and the
    /// sinks, in release order; a sink's first error stops the sinks, not detection.
    fn release(&mut self, drain: bool) -> Result<(), SinkError> {
        let Aggregator {
            sorter,
            detector,
            sinks,
            split_records,
            ..
        } = self;
        let mut failed = Ok(());
        let mut each = |r: Box<ConnRecord>, parents: Vec<String>| {
            *split_records += u64::from(r.split != 0);
            detector.on_record(&r);
            if failed.is_ok() {
                failed = sinks.on_conn(r, parents);
            }
        };
        if drain {
            sorter.drain_owned(&mut each);
        } else {
            sorter.release_owned(&mut each);
        }
        failed
    }

    /// Nothing more comes from `processor` (ended, or given up).
    fn end_processor(&mut self, processor: &str) {
        self.sorter.end(processor);
        self.sinks.on_processor_end(processor);
    }

    /// The alert events gathered so far go to every sink (and are cleared).
    fn emit_alerts(&mut self) -> Result<(), SinkError> {
        self.sinks.on_alerts(&self.events)?;
        self.events.clear();
        Ok(())
    }
}

/// The accounting table (an error if it does not reconcile) and any undecodable messages.
fn log_report(report: &AccountingReport, malformed: &BTreeMap<&'static str, u64>) {
    let text = table(report);
    if report.reconciled {
        info!("accounting\n{text}");
    } else {
        error!("accounting does not reconcile\n{text}");
    }
    if !malformed.is_empty() {
        warn!(?malformed, "undecodable messages from processors");
    }
    for (log, n) in &report.records_unwritten {
        error!(
            "{log}: {n} lines not written (see the errors above); the report says complete=false"
        );
    }
}

mod checkpoint;
mod membership;
#[cfg(test)]
mod tests;

pub use checkpoint::Snapshot;
