//! Pipeline accounting (sans-IO): joins the processors' accounts of their inputs with the
//! collectors' own counters and checks DESIGN invariant 5 hop by hop:
//!
//! - per collector: `packets_read = packets_summarised + fragments_merged + Σ packet drops` and
//!   `summaries = Σ sent per link + queue_full`;
//! - per link: `sent (collector counter) = end-of-stream sequence = received + wire gaps` at the
//!   processor that served it.

use std::collections::BTreeMap;

use serde::Serialize;
use tapflow_proto::upstream::{
    ProcessorAccount, ProcessorCounters, ProcessorHeartbeat, ShardClaim,
};
use tapflow_proto::{CollectorCounters, EosStatus};

use crate::upstream::Upstream;

mod table;

pub use table::table;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LinkRow {
    pub shard: u16,
    /// The processor that served the link last (its latest incarnation).
    pub processor: Option<String>,
    /// What the collector says it sent on this link.
    pub sent: u64,
    /// The sequence number of the link's end-of-stream, as the processor saw it.
    pub eos_seq: Option<u64>,
    /// Received and gaps seen by the processor incarnations that ended with an account.
    pub received: u64,
    pub gaps: u64,
    pub misrouted: u64,
    /// Summaries sent on the link before the surviving incarnation joined it: they went to an
    /// earlier incarnation that died (what it received, and what was in flight to it), and
    /// their open sessions with it. `sent = received + gaps + lost_with_dead_processor`.
    pub lost_with_dead_processor: u64,
    /// Of those, what the dead incarnations' last heartbeats say they had received.
    pub dead_processor_received: u64,
    /// A collector that died: summaries it counted as sent (as of its last counters) that no
    /// processor received nor saw as a gap. What it read after those counters is unknown.
    pub lost_with_collector_at_least: u64,
    pub reconciles: bool,
    /// Summaries of this link its processor's merge released behind an earlier release's time.
    pub late: u64,
    /// The most the link's watermark trailed the processor's most advanced live input's, ms
    /// (clock skew against the other collectors, plus reporting lag).
    pub skew_max_ms: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CollectorRow {
    pub sender: String,
    pub incarnation: u64,
    pub status: Option<String>,
    /// No end-of-stream reached any processor: the incarnation died (a newer one may have
    /// replaced it) or was still running when the processors stopped. Its counters are those
    /// of its last heartbeat, and its links cannot be reconciled.
    pub dead: bool,
    pub packets_read: u64,
    pub packets_summarised: u64,
    pub fragments_merged: u64,
    pub drops: BTreeMap<String, u64>,
    pub summaries: u64,
    pub kernel_dropped: u64,
    pub if_dropped: u64,
    pub packets_reconcile: bool,
    pub summaries_reconcile: bool,
    /// The largest `skew_max_ms` over its links: how far its clock trailed another
    /// collector's, as the processors saw it.
    pub skew_max_ms: u64,
    pub links: Vec<LinkRow>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ProcessorRow {
    pub processor: String,
    pub incarnation: u64,
    pub claim: Option<ShardClaim>,
    pub malformed: BTreeMap<String, u64>,
    pub misrouted_messages: u64,
    pub summaries_wrong_shard: u64,
    #[serde(serialize_with = "ProcessorCounters::serialize_named")]
    pub counters: ProcessorCounters,
    /// Connection records the processor handed to its socket (sent or not).
    pub records_handed: u64,
    /// Records this aggregator received from it.
    pub records_received: u64,
    /// Records handed over before this aggregator first heard from it: they went to an
    /// earlier aggregator incarnation (killed: lost with it, unless it had written them).
    pub records_before_start: u64,
    /// Records missing between its batches (`records_unsent` at a full queue, or the wire).
    pub records_gaps: u64,
    /// `records_handed = records_before_start + records_received + records_gaps`.
    pub records_reconcile: bool,
}

/// A processor incarnation that sent no end-of-stream account: what its last heartbeat said.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DeadProcessorRow {
    pub processor: String,
    pub incarnation: u64,
    /// A newer incarnation of the same processor reported (it was restarted).
    pub superseded: bool,
    /// Summaries received and gaps seen, over its links, as of its last heartbeat.
    pub summaries_received: u64,
    pub gaps: u64,
    /// Summaries sent to it after its last heartbeat, up to where the next incarnation
    /// joined (or the end of the link): delivered to it after that heartbeat, or in flight
    /// when it died.
    pub summaries_after_last_heartbeat: u64,
    /// Open flows at its last heartbeat (the gauge).
    pub flows_open: u64,
    /// Sessions lost with it, at most: the flows open at its last heartbeat plus one per
    /// summary after it (each could have started a flow).
    pub sessions_lost_upper_bound: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AccountingReport {
    pub kind: &'static str,
    /// Every identity above holds for every collector incarnation that ended and every link
    /// it sent on, losses to dead processor incarnations named as such.
    pub reconciled: bool,
    /// Nothing died: no collector or processor incarnation without end-of-stream, no
    /// connection records missing at this aggregator, and every log written in full (see
    /// `records_unwritten`).
    pub complete: bool,
    /// No processor saw conflicting shard claims or summaries hashed to another shard.
    pub routing_consistent: bool,
    pub collectors: Vec<CollectorRow>,
    pub processors: Vec<ProcessorRow>,
    pub dead_processors: Vec<DeadProcessorRow>,
    /// Connection records handed over before this aggregator started (Σ records_before_start).
    pub records_lost_with_previous_aggregator: u64,
    /// Connection records written (set by the run loop).
    pub conns: Option<crate::conns::ConnStats>,
    /// Detection counters (set by the run loop).
    pub detection: Option<crate::detect::DetectStats>,
    /// The InfluxDB sink's counters (set by the run loop when it writes to InfluxDB).
    pub influx: Option<crate::influx::InfluxStats>,
    /// Connections refused by CURVE authentication (set by the run loop).
    pub auth_rejected: u64,
    /// Processor messages refused because their CURVE key may not speak for the processor
    /// name they carry (`curve_clients` `names`; set by the run loop, left out when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names_refused: Option<u64>,
    /// Processor messages refused because they came from an incarnation past `max_senders`
    /// (set by the run loop, left out when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub senders_refused: Option<u64>,
    /// Processor-set epochs and the flows their switches split (set by the run loop when
    /// routing is by processor set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processor_set: Option<SetReport>,
    /// Processors declared dead and added back by the aggregator (with a processor set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership: Option<crate::control::MembershipReport>,
    /// Lines (records, alert events, the report itself) a log could not write (a full disk),
    /// by log: `conn_log`, `conn_interim_log`, `alerts_log`, `health_log` (set by the run loop;
    /// left out when every log was written in full).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub records_unwritten: BTreeMap<String, u64>,
    /// With `--state-dir`: the restarts of this run and what the write-ahead log did (set by
    /// the run loop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<DurabilityReport>,
}

/// What the processor set did during the run.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SetReport {
    pub epochs: Vec<EpochRow>,
    /// Open connections the old owners closed at switches (Σ processors' `flows_moved_out`).
    pub flows_moved_out: u64,
    /// Connections the new owners continued (Σ `flows_continued`).
    pub flows_continued: u64,
    /// Conn log records marked `tapflow_split`.
    pub split_records: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct EpochRow {
    pub epoch: u32,
    /// Packet time the epoch starts at, ns (0 for the first).
    pub switch_at_ns: u64,
    /// `add N` / `remove N` (empty for the first).
    pub change: String,
    pub members: Vec<u16>,
    /// Slots (of 4096) whose owner changed at this switch.
    pub moved_slots: usize,
}

impl SetReport {
    pub fn new(
        set: &tapflow_proto::procset::ProcessorSet,
        processors: &[ProcessorRow],
        split_records: u64,
    ) -> SetReport {
        use tapflow_proto::procset::Change;
        let mut epochs = Vec::new();
        let mut previous: Option<&tapflow_proto::slots::SlotTable> = None;
        for e in set.epochs() {
            epochs.push(EpochRow {
                epoch: e.table.epoch(),
                switch_at_ns: e.starts_ns,
                change: match e.change {
                    Some(Change::Add(id)) => format!("add {id}"),
                    Some(Change::Remove(id)) => format!("remove {id}"),
                    None => String::new(),
                },
                members: e.table.members().to_vec(),
                moved_slots: previous.map_or(0, |p| p.moved(&e.table).len()),
            });
            previous = Some(&e.table);
        }
        let sum = |count: fn(&ProcessorCounters) -> u64| -> u64 {
            processors.iter().map(|p| count(&p.counters)).sum()
        };
        SetReport {
            epochs,
            flows_moved_out: sum(|c| c.flows_moved_out),
            flows_continued: sum(|c| c.flows_continued),
            split_records,
        }
    }
}

/// One processor incarnation's share of one link: `[first_seq, first_seq + received + gaps)`.
#[derive(Clone, Debug)]
struct Segment {
    processor: String,
    incarnation: u64,
    /// Ended with an account (false: known from its last heartbeat only).
    ended: bool,
    first_seq: u64,
    received: u64,
    gaps: u64,
    misrouted: u64,
    eos_seq: Option<u64>,
    late: u64,
    skew_max_ms: u64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.first_seq + self.received + self.gaps
    }
}

/// What the processors saw of one collector incarnation: its freshest counters, its
/// end-of-stream status and its links' segments by shard.
#[derive(Default)]
struct Seen {
    counters: Option<CollectorCounters>,
    status: Option<EosStatus>,
    by_shard: BTreeMap<u16, Vec<Segment>>,
}

/// One collector incarnation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct CollectorId {
    sender: String,
    incarnation: u64,
}

/// One processor incarnation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ProcessorId {
    processor: String,
    incarnation: u64,
}

/// Summaries sent after each dead processor incarnation's last heartbeat.
type AfterHeartbeat = BTreeMap<ProcessorId, u64>;

/// Builds the report from every processor's end-of-stream account alone.
pub fn reconcile(accounts: &[ProcessorAccount]) -> AccountingReport {
    reconcile_with(accounts, &Upstream::new())
}

/// Builds the report from the processors' accounts and what `upstream` knows of incarnations
/// that sent none (their last heartbeats) and of the connection records received.
pub fn reconcile_with(accounts: &[ProcessorAccount], upstream: &Upstream) -> AccountingReport {
    let unended: Vec<_> = upstream.unended(accounts).collect();
    let mut collectors = BTreeMap::new();
    seen_in_accounts(accounts, &mut collectors);
    seen_in_heartbeats(&unended, &mut collectors);
    let mut after_heartbeat = AfterHeartbeat::new();
    let rows: Vec<CollectorRow> = collectors
        .into_iter()
        .map(|(id, seen)| collector_row(id, seen, &mut after_heartbeat))
        .collect();
    let processors: Vec<ProcessorRow> = accounts
        .iter()
        .map(|a| processor_row(a, upstream))
        .collect();
    let dead_processors: Vec<DeadProcessorRow> = unended
        .iter()
        .map(|(hb, superseded)| dead_processor_row(hb, *superseded, &after_heartbeat))
        .collect();
    report(rows, processors, dead_processors)
}

/// The links in the processors' end-of-stream accounts, by collector incarnation: the
/// freshest counters, the end-of-stream status and one segment per link.
fn seen_in_accounts(accounts: &[ProcessorAccount], collectors: &mut BTreeMap<CollectorId, Seen>) {
    for acc in accounts {
        for link in &acc.links {
            let entry = collectors
                .entry(CollectorId {
                    sender: link.sender.clone(),
                    incarnation: link.incarnation,
                })
                .or_default();
            if let Some(c) = &link.counters {
                let fresher = match &entry.counters {
                    None => true,
                    Some(old) => link.eos_seq.is_some() || c.packets_read > old.packets_read,
                };
                if fresher && (entry.status.is_none() || link.eos_seq.is_some()) {
                    entry.counters = Some(c.clone());
                }
            }
            if link.eos_status.is_some() {
                entry.status = link.eos_status.clone();
            }
            entry
                .by_shard
                .entry(link.claim.map(|c| c.shard).unwrap_or(0))
                .or_default()
                .push(Segment {
                    processor: acc.processor.clone(),
                    incarnation: acc.incarnation,
                    ended: true,
                    first_seq: link.first_seq,
                    received: link.summaries_received,
                    gaps: link.gaps,
                    misrouted: link.misrouted,
                    eos_seq: link.eos_seq,
                    late: link.late,
                    skew_max_ms: link.skew_max_ms,
                });
        }
    }
}

/// The links of incarnations that sent no account, from their last heartbeats.
fn seen_in_heartbeats(
    unended: &[(&ProcessorHeartbeat, bool)],
    collectors: &mut BTreeMap<CollectorId, Seen>,
) {
    for (hb, _) in unended {
        for l in &hb.links {
            let entry = collectors
                .entry(CollectorId {
                    sender: l.sender.clone(),
                    incarnation: l.incarnation,
                })
                .or_default();
            entry.by_shard.entry(l.shard).or_default().push(Segment {
                processor: hb.processor.clone(),
                incarnation: hb.incarnation,
                ended: false,
                first_seq: l.first_seq,
                received: l.summaries_received,
                gaps: l.gaps,
                misrouted: 0,
                eos_seq: None,
                late: 0,
                skew_max_ms: 0,
            });
        }
    }
}

/// One collector incarnation's row, its links reconciled.
fn collector_row(
    id: CollectorId,
    seen: Seen,
    after_heartbeat: &mut AfterHeartbeat,
) -> CollectorRow {
    let Seen {
        counters,
        status,
        mut by_shard,
    } = seen;
    let counters = counters.unwrap_or_default();
    let dead = status.is_none();
    // A shard nothing was sent to needs no row (a processor-set collector's ids need not
    // be dense, and a member added late had nothing before it joined).
    for (shard, _) in counters
        .summaries_sent
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
    {
        by_shard
            .entry(u16::try_from(shard).unwrap_or(u16::MAX))
            .or_default();
    }
    let links: Vec<LinkRow> = by_shard
        .into_iter()
        .map(|(shard, segments)| {
            let sent = counters
                .summaries_sent
                .get(usize::from(shard))
                .copied()
                .unwrap_or(0);
            link_row(shard, segments, sent, dead, after_heartbeat)
        })
        .collect();
    let r = counters.reconcile();
    CollectorRow {
        sender: id.sender,
        incarnation: id.incarnation,
        status: status.map(|s| status_name(&s)),
        dead,
        packets_read: counters.packets_read,
        packets_summarised: counters.packets_summarised,
        fragments_merged: counters.fragments_merged,
        drops: counters.drops.clone(),
        summaries: counters.summaries,
        kernel_dropped: counters.capture.kernel_dropped,
        if_dropped: counters.capture.if_dropped,
        packets_reconcile: r.packets_read == r.packets_accounted,
        summaries_reconcile: r.summaries == r.summaries_accounted,
        skew_max_ms: links.iter().map(|l| l.skew_max_ms).max().unwrap_or(0),
        links,
    }
}

/// One link (`sent` summaries by the collector, `dead`: the collector sent no end-of-stream)
/// from the segments its processor incarnations served; what was sent after a dead
/// incarnation's last heartbeat is added to `after_heartbeat`.
fn link_row(
    shard: u16,
    mut segments: Vec<Segment>,
    sent: u64,
    dead: bool,
    after_heartbeat: &mut AfterHeartbeat,
) -> LinkRow {
    segments.sort_by_key(|s| (s.first_seq, s.incarnation));
    let survivors = segments.iter().filter(|s| s.ended);
    let received: u64 = survivors.clone().map(|s| s.received).sum();
    let gaps: u64 = survivors.clone().map(|s| s.gaps).sum();
    let eos_seq = survivors.clone().filter_map(|s| s.eos_seq).max();
    let joined = survivors.clone().map(|s| s.first_seq).min().unwrap_or(0);
    for (i, s) in segments.iter().enumerate().filter(|(_, s)| !s.ended) {
        let next = segments.get(i + 1).map_or(sent, |n| n.first_seq);
        *after_heartbeat
            .entry(ProcessorId {
                processor: s.processor.clone(),
                incarnation: s.incarnation,
            })
            .or_default() += next.saturating_sub(s.end());
    }
    let mut row = LinkRow {
        shard,
        processor: segments.last().map(|s| s.processor.clone()),
        sent,
        eos_seq,
        received,
        gaps,
        misrouted: segments.iter().map(|s| s.misrouted).sum(),
        lost_with_dead_processor: 0,
        dead_processor_received: segments
            .iter()
            .filter(|s| !s.ended)
            .map(|s| s.received)
            .sum(),
        lost_with_collector_at_least: 0,
        reconciles: false,
        late: segments.iter().map(|s| s.late).sum(),
        skew_max_ms: segments.iter().map(|s| s.skew_max_ms).max().unwrap_or(0),
    };
    if dead {
        row.lost_with_collector_at_least =
            sent.saturating_sub(segments.iter().map(|s| s.received + s.gaps).sum::<u64>() + joined);
    } else {
        // What precedes the surviving incarnation's join went to an earlier one.
        row.lost_with_dead_processor = sent.saturating_sub(received + gaps);
        row.reconciles = eos_seq == Some(sent)
            && sent >= received + gaps
            && row.lost_with_dead_processor == joined;
    }
    row
}

/// One processor incarnation's row from its account and the records this aggregator got.
fn processor_row(a: &ProcessorAccount, upstream: &Upstream) -> ProcessorRow {
    let seq = upstream.records(&a.processor, a.incarnation);
    let handed = a.counters.records_sent + a.counters.records_unsent;
    ProcessorRow {
        processor: a.processor.clone(),
        incarnation: a.incarnation,
        claim: a.claim,
        malformed: a.malformed.clone(),
        misrouted_messages: a.misrouted_messages,
        summaries_wrong_shard: a.summaries_wrong_shard,
        counters: a.counters.clone(),
        records_handed: handed,
        records_received: seq.received,
        records_before_start: seq.first,
        records_gaps: seq.gaps,
        records_reconcile: handed == seq.first + seq.received + seq.gaps,
    }
}

/// A processor incarnation that sent no account, from its last heartbeat.
fn dead_processor_row(
    hb: &ProcessorHeartbeat,
    superseded: bool,
    after_heartbeat: &AfterHeartbeat,
) -> DeadProcessorRow {
    let after = after_heartbeat
        .get(&ProcessorId {
            processor: hb.processor.clone(),
            incarnation: hb.incarnation,
        })
        .copied()
        .unwrap_or(0);
    DeadProcessorRow {
        processor: hb.processor.clone(),
        incarnation: hb.incarnation,
        superseded,
        summaries_received: hb.links.iter().map(|l| l.summaries_received).sum(),
        gaps: hb.links.iter().map(|l| l.gaps).sum(),
        summaries_after_last_heartbeat: after,
        flows_open: hb.flows_open,
        sessions_lost_upper_bound: hb.flows_open + after,
    }
}

/// The report over its rows, with the verdicts that summarise them.
impl AccountingReport {
    /// Links to processors the aggregator removed from the set (`membership`) and never added
    /// back: their collectors gave them up at the switch without end-of-stream, so no
    /// incarnation ends them. Such a link, where no incarnation ended, reconciles with all it
    /// was sent counted lost with the dead processor (the run stays incomplete: the dead
    /// incarnation is listed in `dead_processors`).
    pub fn settle_removed(&mut self) {
        let Some(m) = &self.membership else {
            return;
        };
        let mut removed = BTreeMap::new();
        for d in &m.decisions {
            let gone = matches!(d.change, tapflow_proto::procset::Change::Remove(_));
            removed.insert(d.processor.as_str(), gone);
        }
        let links = self.collectors.iter_mut().filter(|c| !c.dead);
        for l in links.flat_map(|c| c.links.iter_mut()) {
            let gone = l
                .processor
                .as_deref()
                .is_some_and(|p| removed.get(p) == Some(&true));
            if gone && !l.reconciles && l.eos_seq.is_none() && l.received + l.gaps == 0 {
                l.lost_with_dead_processor = l.sent;
                l.reconciles = true;
            }
        }
        self.reconciled = reconciled(&self.collectors, &self.processors);
    }
}

/// Every live collector's packets, summaries and links, and every processor's records, add up.
fn reconciled(rows: &[CollectorRow], processors: &[ProcessorRow]) -> bool {
    rows.iter().filter(|c| !c.dead).all(|c| {
        c.packets_reconcile && c.summaries_reconcile && c.links.iter().all(|l| l.reconciles)
    }) && processors.iter().all(|p| p.records_reconcile)
}

fn report(
    rows: Vec<CollectorRow>,
    processors: Vec<ProcessorRow>,
    dead_processors: Vec<DeadProcessorRow>,
) -> AccountingReport {
    let reconciled = reconciled(&rows, &processors);
    let records_lost_with_previous_aggregator =
        processors.iter().map(|p| p.records_before_start).sum();
    let complete = rows.iter().all(|c| !c.dead)
        && dead_processors.is_empty()
        && processors
            .iter()
            .all(|p| p.records_before_start == 0 && p.records_gaps == 0);
    let routing_consistent = processors
        .iter()
        .all(|p| p.misrouted_messages == 0 && p.summaries_wrong_shard == 0)
        && rows
            .iter()
            .all(|c| c.links.iter().all(|l| l.misrouted == 0));
    AccountingReport {
        kind: "accounting",
        reconciled,
        complete,
        routing_consistent,
        collectors: rows,
        processors,
        dead_processors,
        records_lost_with_previous_aggregator,
        conns: None,
        detection: None,
        influx: None,
        auth_rejected: 0,
        names_refused: None,
        senders_refused: None,
        processor_set: None,
        membership: None,
        records_unwritten: BTreeMap::new(),
        durability: None,
    }
}

fn status_name(s: &EosStatus) -> String {
    match s {
        EosStatus::Complete => "complete".into(),
        EosStatus::Interrupted => "interrupted".into(),
        EosStatus::Damaged(m) => format!("damaged: {m}"),
        EosStatus::OpenFailed(m) => format!("open failed: {m}"),
        EosStatus::Failed(m) => format!("failed: {m}"),
    }
}

#[cfg(test)]
mod tests;

/// What durability did, in the accounting report.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DurabilityReport {
    /// Wall-clock start (ns since the Unix epoch) of each restart of this run.
    pub restarts: Vec<u64>,
    /// Data messages taken from the write-ahead log at the restarts.
    pub replayed: u64,
    /// Data messages written to the log, and its syncs (group commits).
    pub logged: u64,
    pub syncs: u64,
    /// Messages received again (already taken): dropped.
    pub duplicates: u64,
    /// Messages past a gap in their processor's sequence: dropped (they come again in order).
    pub out_of_order: u64,
    /// Heartbeats ahead of data not yet received: dropped.
    pub heartbeats_ahead: u64,
    /// Messages the log refused (full, a write error): not taken, not acknowledged.
    pub refused: u64,
    /// Bytes of a torn or damaged tail of the log cut off at restarts.
    pub damaged_bytes: u64,
    /// Sequence numbers a processor gave up (past its bound) before this aggregator had them.
    pub given_up: u64,
    /// Checkpoints that replaced the log (over the whole run, every incarnation), and the
    /// bytes of the logs they replaced.
    pub checkpoints: u64,
    pub trimmed_bytes: u64,
    /// Checkpoints put off: a resumed log not caught up yet, or the rewrite failed.
    pub checkpoints_postponed: u64,
    /// Restarts that found the checkpoint damaged and read the previous generation.
    pub checkpoint_fell_back: u64,
    /// Control frames (decisions, refusal counts, restarts) written into the log's reserve
    /// past `--wal-max-bytes` by this incarnation, which data messages cannot use.
    pub reserve_frames: u64,
    /// What each processor incarnation last said it held unacknowledged (in memory, in its
    /// spool) and had given up, as heard by this aggregator incarnation (heartbeats are not
    /// logged: an incarnation heard only by an earlier one is not here).
    pub unacked: Vec<UnackedHeard>,
}

/// A processor incarnation's last unacknowledged counts, heard at `at_ns` (wall clock).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct UnackedHeard {
    pub processor: String,
    pub incarnation: u64,
    pub at_ns: u64,
    #[serde(flatten)]
    pub unacked: tapflow_proto::upstream::Unacked,
    /// Its end-of-stream was taken (everything before it too): it holds nothing this
    /// aggregator lacks, whatever its last heartbeat said (its counts are then zero).
    pub ended: bool,
}
